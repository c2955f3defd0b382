"""The sink, scoring and registry tests again on a real PostgreSQL, plus concurrent writers.

On PostgreSQL the sink takes another path (row lock, TRUNCATE of a day/model leaf
table, COPY), so the behaviour tests of tests/unit/test_sinks.py, test_scoring.py and
test_registry.py are imported here and collected a second time: inside this module their
`engine` fixture is the one below, a migrated database of its own per test.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from batchpred import db, sinks  # noqa: E402
from tests.unit.test_registry import (  # noqa: E402, F401 - collected again, on PostgreSQL
    models,
    store,
    test_predictions_latest_keeps_each_entitys_newest_champion_prediction,
    test_promote_if_better,
    test_set_alias_moves_it_and_keeps_history,
)
from tests.unit.test_scoring import (  # noqa: E402, F401 - collected again, on PostgreSQL
    churn_model,
    deliveries_model,
    test_changed_input_is_rescored,
    test_duplicate_entity_ids_across_batches_are_rejected_as_unique,
    test_duplicate_entity_ids_are_rejected_as_unique,
    test_force_rescores_the_same_input,
    test_missing_feature_column_rejects_the_partition,
    test_out_of_range_value_fails_fast_when_no_rejects_allowed,
    test_regression_scores_with_null_labels,
    test_rejected_rows_are_recorded_and_the_rest_scored,
    test_rejects_above_the_threshold_fail_the_partition,
    test_scores_every_row_once_with_probabilities_and_labels,
    test_second_run_skips_and_writes_nothing_new,
)
from tests.unit.test_sinks import (  # noqa: E402, F401 - collected again, on PostgreSQL
    DAY,
    V1,
    batch,
    ids_of,
    key,
    predictions,
    test_empty_partition_is_recorded_as_done,
    test_error_before_finish_keeps_the_previous_rows,
    test_error_on_a_new_partition_writes_nothing,
    test_forced_rewrite_leaves_one_row_per_entity,
    test_model_versions_and_days_are_separate_partitions,
    test_new_fingerprint_replaces_the_partition,
    test_null_labels_are_stored_as_null,
    test_rejects_are_stored_and_replaced_on_rewrite,
    test_rows_land_with_scores_labels_and_ledger_counts,
    test_same_fingerprint_is_already_scored,
    write,
)
from tests.unit.test_training import (  # noqa: E402, F401 - collected again, on PostgreSQL
    test_outcomes_hold_each_rows_actual_label_and_agree_with_realised_metrics,
    trained,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def engine(pg_url: str) -> sa.Engine:
    eng = db.create_engine(pg_url)
    db.migrate(eng)
    yield eng
    eng.dispose()


def test_predictions_are_day_then_model_partitions_out_of_the_analysts_way(
    engine: sa.Engine,
) -> None:
    write_one(engine, "run-1", force=False, ids=["a", "b"])
    with engine.connect() as conn:
        leaf = conn.execute(
            sa.text(f"select count(*) from batchpred_partitions.predictions_20261001_{V1}")
        ).scalar()
        strategy = conn.execute(
            sa.text(
                "select partstrat from pg_partitioned_table "
                "where partrelid = 'batchpred_partitions.predictions_20261001'::regclass"
            )
        ).scalar()
        public = set(
            conn.execute(sa.text("select tablename from pg_tables where schemaname = 'public'"))
            .scalars()
            .all()
        )
        uncommented = (
            conn.execute(
                sa.text(
                    "select c.relname || '.' || a.attname from pg_class c "
                    "join pg_namespace n on n.oid = c.relnamespace "
                    "join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 "
                    "where n.nspname = 'public' and c.relkind in ('r', 'p') "
                    "and c.relname <> 'alembic_version' "
                    "and col_description(c.oid, a.attnum) is null and not a.attisdropped"
                )
            )
            .scalars()
            .all()
        )
    assert leaf == 2 and strategy == "l"
    assert public == {*db.TABLES, "alembic_version"}  # no partitions among them
    assert uncommented == []


def write_one(
    engine: sa.Engine,
    run_id: str,
    *,
    force: bool,
    ids: list[str],
    hold: threading.Barrier | None = None,
) -> None:
    """One writer of the partition; with `hold`, it meets the other writer between batches
    (a timeout there means the other writer is blocked behind this one, as it should be)."""
    started = datetime.now(UTC)
    with sinks.partition_writer(engine, key(), run_id, fingerprint="fp-1", force=force) as out:
        half = len(ids) // 2
        out.write(batch(ids[:half], seed=1))
        if hold is not None:
            with contextlib.suppress(threading.BrokenBarrierError):
                hold.wait(timeout=1.0)
        out.write(batch(ids[half:], seed=2))
        out.finish(sinks.LedgerEntry("fp-1", len(ids), 0, started))


@pytest.mark.parametrize("force", [True, False])
def test_concurrent_writers_of_one_partition_leave_n_rows(engine: sa.Engine, force: bool) -> None:
    ids = [f"e{i:04d}" for i in range(400)]
    start, hold = threading.Barrier(2), threading.Barrier(2)

    def run(run_id: str) -> str:
        start.wait(timeout=10)
        try:
            write_one(engine, run_id, force=force, ids=ids, hold=hold)
        except sinks.AlreadyScored:
            return "skipped"
        return "written"

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(run, ["run-a", "run-b"]))
    rows = predictions(engine, key())
    assert ids_of(rows) == ids  # N rows, each entity once: never 2N
    assert len({r["run_id"] for r in rows}) == 1  # all from one writer
    ledger = sinks.ledger_row(engine, DAY, V1)
    assert ledger["run_id"] == rows[0]["run_id"] and ledger["rows_scored"] == len(ids)
    # forced: both write, one after the other; not forced: the second sees the first's
    # ledger row once the lock is free, and skips
    assert outcomes == (["written", "written"] if force else ["skipped", "written"])


def _lookups_until(engine: sa.Engine, done: threading.Event, ids: list[str]) -> float:
    """Entity lookups (no partition key: every leaf is probed) until `done`; the worst wait."""
    worst, deadline = 0.0, time.monotonic() + 120
    with engine.connect() as conn:
        while not done.is_set() and time.monotonic() < deadline:
            t = time.perf_counter()
            conn.execute(
                sa.text("select score from predictions where entity_id = :e"),
                {"e": ids[int(t * 1e6) % len(ids)]},
            ).all()
            conn.commit()
            worst = max(worst, time.perf_counter() - t)
    return worst


def test_readers_never_wait_for_a_partition_being_rewritten(engine: sa.Engine) -> None:
    ids = [f"e{i:07d}" for i in range(200_000)]
    write(engine, key(), [batch(ids, seed=1)])
    done = threading.Event()

    def rewrite(seed: int) -> None:
        try:
            write(engine, key(), [batch(ids, seed=seed)], fingerprint=f"fp-{seed}", force=True)
        finally:
            done.set()

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(rewrite, 2)
        worst = _lookups_until(engine, done, ids)
        future.result(timeout=60)
    assert worst < 1.0, f"a lookup waited {worst:.2f} s for the writer"
    assert {r["score"] for r in predictions(engine, key())} == set(batch(ids, seed=2).scores)


def test_a_long_reader_delays_the_swap_which_retries_and_completes(engine: sa.Engine) -> None:
    ids = [f"e{i:05d}" for i in range(1000)]
    write(engine, key(), [batch(ids, seed=1)])
    analyst = engine.connect()
    analyst.begin()  # a long analyst transaction: holds its locks until it ends
    assert analyst.execute(sa.text("select count(*) from predictions")).scalar() == len(ids)
    done = threading.Event()

    def rewrite() -> None:
        try:
            write(engine, key(), [batch(ids, seed=2)], fingerprint="fp-2", force=True)
        finally:
            done.set()

    with ThreadPoolExecutor(2) as pool:
        future = pool.submit(rewrite)
        lookups = pool.submit(_lookups_until, engine, done, ids)
        assert not done.wait(3.0), "the swap did not wait for the reader"
        analyst.rollback()  # the reader ends: the swap's next attempt goes through
        analyst.close()
        future.result(timeout=60)
        worst = lookups.result(timeout=60)
    # other readers queued behind the waiting swap at most one lock_timeout per attempt
    assert worst < 1.0, f"a lookup waited {worst:.2f} s behind the waiting swap"
    assert {r["score"] for r in predictions(engine, key())} == set(batch(ids, seed=2).scores)


def test_the_read_only_role_cannot_stall_a_writer(
    engine: sa.Engine, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writers' mutexes are out of the read-only role's reach; the one lock it can hold
    (a read of predictions, in a transaction it never ends) makes the writer wait with one
    WARNING naming the session, then fail within its bound with one line, writing nothing."""
    write(engine, key(), [batch(["a", "b"], seed=1)])
    role = f"analyst_{engine.url.database}"
    db.grant_readonly(engine, role)
    analyst = engine.connect()
    try:
        analyst.exec_driver_sql(f"SET ROLE {role}")
        pid = analyst.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        for sql in (
            f"SELECT * FROM {db.WRITER_LOCKS} FOR UPDATE",
            f"LOCK TABLE {db.WRITER_LOCKS} IN ACCESS EXCLUSIVE MODE",
            "SELECT * FROM scoring_ledger FOR UPDATE",
        ):
            with (
                pytest.raises(sa.exc.ProgrammingError, match="permission denied"),
                analyst.begin_nested(),
            ):
                analyst.exec_driver_sql(sql)
        # Every lock a writer takes before the swap is free of it: a new partition lands.
        assert analyst.exec_driver_sql("SELECT count(*) FROM predictions").scalar() == 2
        other = sinks.PartitionKey("churn", DAY, "cd" * 8)
        write(engine, other, [batch(["a", "b"], seed=1)])
        # Re-scoring the partition it reads must detach the old leaf: that waits for the read.
        monkeypatch.setattr(sinks, "LOCK_ATTEMPTS", 4)
        started = time.monotonic()
        with (
            caplog.at_level("WARNING", logger="batchpred.sinks"),
            pytest.raises(sinks.LockTimeout) as err,
        ):
            write(engine, key(), [batch(["a", "b"], seed=2)], fingerprint="fp-2", force=True)
        assert time.monotonic() - started < 10
        message = str(err.value)
        assert "\n" not in message and f"session {pid} of " in message
        assert message.startswith(f"swap of partition {DAY} / {V1}: gave up after 4 tries")
        assert message.endswith("nothing of it was written")
        waits = [r.getMessage() for r in caplog.records if "waits for" in r.getMessage()]
        assert len(waits) == 1 and f"session {pid} of " in waits[0]
    finally:
        analyst.rollback()
        analyst.close()
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")
    assert {r["score"] for r in predictions(engine, key())} == set(batch(["a", "b"], seed=1).scores)
    write(engine, key(), [batch(["a", "b"], seed=2)], fingerprint="fp-2", force=True)
    assert {r["score"] for r in predictions(engine, key())} == set(batch(["a", "b"], seed=2).scores)


def test_read_only_role_reads_everything_and_writes_nothing(engine: sa.Engine) -> None:
    write(engine, key(), [batch(["a", "b"], seed=1)])
    role = f"analyst_{engine.url.database}"
    db.grant_readonly(engine, role)
    db.grant_readonly(engine, role)  # idempotent
    try:
        _check_read_only(engine, role)
    finally:
        with engine.begin() as conn:  # roles are cluster-wide: leave none behind
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")


def _check_read_only(engine: sa.Engine, role: str) -> None:
    with engine.connect() as conn:
        conn.exec_driver_sql(f"SET ROLE {role}")
        for table in db.TABLES:
            conn.exec_driver_sql(f"SELECT * FROM {table} LIMIT 1").all()
        assert conn.exec_driver_sql("SELECT count(*) FROM predictions").scalar() == 2
        for sql in (
            "DELETE FROM predictions",
            "UPDATE scoring_ledger SET status = 'x'",
            "INSERT INTO model_aliases VALUES ('x', 'y', 'z', now())",
            "CREATE TABLE public.mine (x int)",
            f"SELECT * FROM batchpred_partitions.predictions_20261001_{V1}",
        ):
            with (
                pytest.raises(sa.exc.ProgrammingError, match="permission denied"),
                conn.begin_nested(),
            ):
                conn.exec_driver_sql(sql)


def test_upgrade_from_day_model_leaves_keeps_every_row(pg_url: str) -> None:
    """A database written by 0004's layout (a leaf per (day, model) in public) moves to the
    monthly layout with its rows, their dataset, and predictions_latest seeded."""
    engine = db.create_engine(pg_url)
    db.migrate(engine, revision="0004")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO model_versions (version, dataset, sha256, uri, xgboost_version, "
            "features, params, training_data_hash, metrics, reference_stats, created_at) "
            f"VALUES ('{V1}', 'churn', 'x', 'u', '3', '[]', '{{}}', 'h', '{{}}', '{{}}', now())"
        )
        conn.exec_driver_sql(
            f"INSERT INTO model_aliases VALUES ('churn', 'champion', '{V1}', now())"
        )
        for day in ("20261001", "20261102"):
            d = f"{day[:4]}-{day[4:6]}-{day[6:]}"
            conn.exec_driver_sql(
                f"CREATE TABLE predictions_{day} PARTITION OF predictions "
                f"FOR VALUES IN ('{d}') PARTITION BY LIST (model_version)"
            )
            conn.exec_driver_sql(
                f"CREATE TABLE predictions_{day}_{V1} PARTITION OF predictions_{day} "
                f"FOR VALUES IN ('{V1}')"
            )
            conn.exec_driver_sql(
                "INSERT INTO predictions VALUES "
                f"('{d}', 'a', 0.5, NULL, '{V1}', 'r', now()), "
                f"('{d}', 'b', 0.25, 1, '{V1}', 'r', now())"
            )
    db.migrate(engine)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT dataset, partition_date::text, entity_id FROM predictions ORDER BY 2, 3"
        ).all()
        latest = conn.exec_driver_sql(
            "SELECT entity_id, partition_date::text FROM predictions_latest ORDER BY 1"
        ).all()
        leaves = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'predictions_2%%'"
            " AND schemaname = 'public'"
        ).scalar()
    engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("churn", "2026-10-01", "a"),
        ("churn", "2026-10-01", "b"),
        ("churn", "2026-11-02", "a"),
        ("churn", "2026-11-02", "b"),
    ]
    assert [tuple(r) for r in latest] == [("a", "2026-11-02"), ("b", "2026-11-02")]
    assert leaves == 0
