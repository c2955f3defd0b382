"""The sink, scoring and registry tests again on a real PostgreSQL, plus concurrent writers.

On PostgreSQL the sink takes another path (advisory lock, TRUNCATE of a day/model leaf
table, COPY), so the behaviour tests of tests/unit/test_sinks.py, test_scoring.py and
test_registry.py are imported here and collected a second time: inside this module their
`engine` fixture is the one below, a migrated database of its own per test.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from batchpred import db, sinks  # noqa: E402
from tests.unit.test_registry import (  # noqa: E402, F401 - collected again, on PostgreSQL
    models,
    store,
    test_champion_predictions_view_shows_latest_champion_prediction,
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
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def engine(pg_url: str) -> sa.Engine:
    eng = db.create_engine(pg_url)
    db.migrate(eng)
    yield eng
    eng.dispose()


def test_predictions_are_list_partitioned_by_day_then_model(engine: sa.Engine) -> None:
    write_one(engine, "run-1", force=False, ids=["a", "b"])
    with engine.connect() as conn:
        leaf = conn.execute(sa.text("select count(*) from predictions_20261001_" + V1)).scalar()
        strategy = conn.execute(
            sa.text(
                "select partstrat from pg_partitioned_table "
                "where partrelid = 'predictions_20261001'::regclass"
            )
        ).scalar()
    assert leaf == 2 and strategy == "l"


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
