"""The predictions sink on SQLite: replace-not-append, the ledger, rejects, rollback.

tests/integration/test_postgres.py collects these same tests again with `engine` on
PostgreSQL (COPY into a day/model leaf, row lock), so every test here takes `engine`
and uses only the public sink API.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa

from batchpred import db, sinks

DAY = date(2026, 10, 1)
V1, V2 = "0123456789abcdef", "fedcba9876543210"


def key(version: str = V1, day: date = DAY) -> sinks.PartitionKey:
    return sinks.PartitionKey("churn", day, version)


def batch(ids: list[str], seed: int = 0, rejects: list[tuple[str, str, str]] | None = None):
    """A scored batch with seeded scores, labels from the 0.5 threshold, optional rejects."""
    scores = np.random.default_rng(seed).random(len(ids))
    table = None
    if rejects:
        entity, column, rule = zip(*rejects, strict=True)
        table = pa.table(
            {
                "entity_id": pa.array(entity, pa.string()),
                "column_name": pa.array(column, pa.string()),
                "rule": pa.array(rule, pa.string()),
            }
        )
    return sinks.PredictionBatch(
        pa.array(ids, pa.string()), scores, (scores >= 0.5).astype(np.int8), table
    )


def write(
    engine: sa.Engine,
    k: sinks.PartitionKey,
    batches: list[sinks.PredictionBatch],
    *,
    fingerprint: str = "fp-1",
    run_id: str = "run-1",
    force: bool = False,
) -> None:
    """One complete partition write, as scoring does it."""
    started = datetime.now(UTC)
    with sinks.partition_writer(engine, k, run_id, fingerprint=fingerprint, force=force) as out:
        for b in batches:
            out.write(b)
        rows = sum(len(b.scores) for b in batches)
        rejected = sum(b.rejects.num_rows for b in batches if b.rejects is not None)
        out.finish(sinks.LedgerEntry(fingerprint, rows + rejected, rejected, started))


def predictions(engine: sa.Engine, k: sinks.PartitionKey) -> list[dict]:
    t = db.table(engine, "predictions")
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.entity_id, t.c.score, t.c.label, t.c.run_id)
            .where(
                t.c.dataset == k.dataset,  # every table holding several datasets' rows says whose
                t.c.partition_date == k.partition_date,
                t.c.model_version == k.model_version,
            )
            .order_by(t.c.entity_id)
        ).mappings()
        return [dict(r) for r in rows]


def rejected(engine: sa.Engine, k: sinks.PartitionKey) -> list[tuple]:
    t = db.table(engine, "rejected_rows")
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.entity_id, t.c.column_name, t.c.rule, t.c.run_id)
            .where(
                t.c.dataset == k.dataset,  # every table holding several datasets' rows says whose
                t.c.partition_date == k.partition_date,
                t.c.model_version == k.model_version,
            )
            .order_by(t.c.entity_id)
        )
        return [tuple(r) for r in rows]


def ids_of(rows: list[dict]) -> list[str]:
    return [r["entity_id"] for r in rows]


def test_rows_land_with_scores_labels_and_ledger_counts(engine: sa.Engine) -> None:
    b1, b2 = batch(["a", "b", "c"], seed=1), batch(["d", "e"], seed=2, rejects=[("x", "c1", "r")])
    write(engine, key(), [b1, b2], run_id="run-7")
    rows = predictions(engine, key())
    assert ids_of(rows) == ["a", "b", "c", "d", "e"]
    expected = np.concatenate([b1.scores, b2.scores])
    assert [r["score"] for r in rows] == pytest.approx(expected.tolist())
    assert [r["label"] for r in rows] == [int(s >= 0.5) for s in expected]
    assert {r["run_id"] for r in rows} == {"run-7"}
    ledger = sinks.ledger_row(engine, DAY, V1)
    assert ledger is not None
    assert ledger["status"] == "done" and ledger["input_fingerprint"] == "fp-1"
    assert (ledger["rows_in"], ledger["rows_scored"], ledger["rows_rejected"]) == (6, 5, 1)
    assert ledger["dataset"] == "churn" and ledger["run_id"] == "run-7"
    assert ledger["seconds"] >= 0
    assert sinks.ledger_row(engine, DAY, V2) is None


def test_same_fingerprint_is_already_scored(engine: sa.Engine) -> None:
    write(engine, key(), [batch(["a", "b"])])
    with pytest.raises(sinks.AlreadyScored):
        write(engine, key(), [batch(["a", "b", "c"], seed=3)], run_id="run-2")
    assert ids_of(predictions(engine, key())) == ["a", "b"]
    assert sinks.ledger_row(engine, DAY, V1)["run_id"] == "run-1"


def test_new_fingerprint_replaces_the_partition(engine: sa.Engine) -> None:
    write(engine, key(), [batch(["a", "b", "c"])])
    new = batch(["b", "c", "d"], seed=5)
    write(engine, key(), [new], fingerprint="fp-2", run_id="run-2")
    rows = predictions(engine, key())
    assert ids_of(rows) == ["b", "c", "d"]  # "a" is gone: replaced, not merged
    assert [r["score"] for r in rows] == pytest.approx(new.scores.tolist())
    assert sinks.ledger_row(engine, DAY, V1)["input_fingerprint"] == "fp-2"


def test_forced_rewrite_leaves_one_row_per_entity(engine: sa.Engine) -> None:
    ids = [f"e{i:03d}" for i in range(50)]
    write(engine, key(), [batch(ids[:30]), batch(ids[30:], seed=1)])
    again = [batch(ids[:25], seed=2), batch(ids[25:], seed=3)]
    write(engine, key(), again, run_id="run-2", force=True)
    rows = predictions(engine, key())
    assert ids_of(rows) == ids  # exactly once each
    expected = np.concatenate([b.scores for b in again])
    assert [r["score"] for r in rows] == pytest.approx(expected.tolist())
    assert {r["run_id"] for r in rows} == {"run-2"}
    assert sinks.ledger_row(engine, DAY, V1)["run_id"] == "run-2"


def test_error_before_finish_keeps_the_previous_rows(engine: sa.Engine) -> None:
    first = batch(["a", "b", "c"], rejects=[("z", "col", "min=0")])
    write(engine, key(), [first])
    with (
        pytest.raises(RuntimeError, match="boom"),
        sinks.partition_writer(engine, key(), "run-2", fingerprint="fp-2", force=True) as out,
    ):
        out.write(batch(["c", "d", "e", "f"], seed=9, rejects=[("y", "col", "max=1")]))
        raise RuntimeError("boom")
    rows = predictions(engine, key())
    assert ids_of(rows) == ["a", "b", "c"]
    assert [r["score"] for r in rows] == pytest.approx(first.scores.tolist())
    assert {r["run_id"] for r in rows} == {"run-1"}
    assert rejected(engine, key()) == [("z", "col", "min=0", "run-1")]
    ledger = sinks.ledger_row(engine, DAY, V1)
    assert ledger["run_id"] == "run-1" and ledger["input_fingerprint"] == "fp-1"


def test_error_on_a_new_partition_writes_nothing(engine: sa.Engine) -> None:
    with (
        pytest.raises(RuntimeError),
        sinks.partition_writer(engine, key(), "run-1", fingerprint="fp-1") as out,
    ):
        out.write(batch(["a", "b"]))
        raise RuntimeError("boom")
    assert predictions(engine, key()) == []
    assert sinks.ledger_row(engine, DAY, V1) is None
    write(engine, key(), [batch(["a", "b"])])  # and it is not marked done: a retry works
    assert ids_of(predictions(engine, key())) == ["a", "b"]


def test_rejects_are_stored_and_replaced_on_rewrite(engine: sa.Engine) -> None:
    bad = [("a", "tenure_months", "max=120"), ("b", "contract", "in_set['x']")]
    write(engine, key(), [batch(["c", "d"], rejects=bad)])
    assert rejected(engine, key()) == [
        ("a", "tenure_months", "max=120", "run-1"),
        ("b", "contract", "in_set['x']", "run-1"),
    ]
    again = batch(["a", "c", "d"], rejects=[("b", "usage_gb", "finite")])
    write(engine, key(), [again], fingerprint="fp-2", run_id="run-2")
    assert rejected(engine, key()) == [("b", "usage_gb", "finite", "run-2")]
    write(engine, key(), [batch(["a", "b", "c", "d"])], run_id="run-3", force=True)
    assert rejected(engine, key()) == []
    assert sinks.ledger_row(engine, DAY, V1)["rows_rejected"] == 0


def test_model_versions_and_days_are_separate_partitions(engine: sa.Engine) -> None:
    other_day = date(2026, 10, 2)
    write(engine, key(V1), [batch(["a", "b"], rejects=[("r", "c", "x")])])
    write(engine, key(V2), [batch(["a", "b", "c"], seed=1)])
    write(engine, key(V1, other_day), [batch(["z"], seed=2)])
    write(engine, key(V1), [batch(["q"], seed=3)], run_id="run-2", force=True)
    assert ids_of(predictions(engine, key(V1))) == ["q"]
    assert ids_of(predictions(engine, key(V2))) == ["a", "b", "c"]
    assert ids_of(predictions(engine, key(V1, other_day))) == ["z"]
    assert rejected(engine, key(V1)) == []
    assert sinks.ledger_row(engine, DAY, V2)["rows_scored"] == 3
    assert sinks.ledger_row(engine, other_day, V1)["rows_scored"] == 1


def test_empty_partition_is_recorded_as_done(engine: sa.Engine) -> None:
    write(engine, key(), [])
    assert predictions(engine, key()) == []
    ledger = sinks.ledger_row(engine, DAY, V1)
    assert ledger["status"] == "done" and ledger["rows_scored"] == 0
    with pytest.raises(sinks.AlreadyScored):
        write(engine, key(), [])


def test_null_labels_are_stored_as_null(engine: sa.Engine) -> None:
    scored = sinks.PredictionBatch(pa.array(["a", "b"]), np.array([41.5, 12.25]))
    write(engine, key(), [scored])
    rows = predictions(engine, key())
    assert [(r["score"], r["label"]) for r in rows] == [(41.5, None), (12.25, None)]


@pytest.mark.parametrize("version", ["not-hex", "ABCDEF0123", "abc", "00'; drop table x; --"])
def test_model_version_must_be_a_hex_digest(version: str) -> None:
    # On PostgreSQL the version becomes part of a table name.
    with pytest.raises(ValueError, match="not a hex digest"):
        sinks.PartitionKey("churn", DAY, version)


def test_a_sqlite_read_does_not_wait_for_a_partition_being_written(engine: sa.Engine) -> None:
    """Every write begins IMMEDIATE (writers queue), but a read (engine.connect(): a ledger
    check, a model lookup, the API) reads its snapshot at once while another connection holds
    the write lock, instead of waiting the whole partition's insert (or the busy timeout)."""
    import threading

    key = sinks.PartitionKey("churn", DAY, "ab" * 8)
    row = sinks.ledger_row  # a reader, as scoring calls it before it takes a partition
    seen: list[object] = []
    with engine.begin() as writing:
        writing.exec_driver_sql("CREATE TABLE held (x)")  # the write lock is held from here
        reader = threading.Thread(target=lambda: seen.append(row(engine, DAY, key.model_version)))
        reader.start()
        reader.join(timeout=5)
        assert not reader.is_alive(), "the read waited for the writer"
    assert seen == [None]
    with engine.connect() as conn:  # the write committed
        assert conn.exec_driver_sql("SELECT count(*) FROM held").scalar() == 0
