"""A scoring run killed with SIGKILL mid-partition, rerun with the same command, lands every
row exactly once, with predictions_latest equal to its definition throughout (SQLite and
PostgreSQL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from batchpred import db, predictions, registry, storage
from tests.unit.test_scoring import make_lake, settings_for, train_small

CHILD = """
import sys
from batchpred import db, registry, scoring, storage
from batchpred.config import Settings
settings = Settings.model_validate_json(open(sys.argv[1]).read())
engine = db.create_engine(sys.argv[2])
model = registry.load_model(engine, sys.argv[3])
root = settings.scoring_input
for day in storage.list_partitions(root):
    r = scoring.score_partition(
        engine, settings.dataset, settings.validation, settings.scoring, model, root, day,
        sys.argv[4],
    )
    print(day, r.status, flush=True)
"""
DAYS, ROWS = 4, 20_000


def _ledger(engine: sa.Engine) -> list[tuple]:
    with engine.connect() as conn:
        return conn.execute(
            sa.text("select partition_date, status, rows_scored, run_id from scoring_ledger")
        ).all()


def _counts(engine: sa.Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "select count(*), count(distinct partition_date || ':' || entity_id) "
                "from predictions"
            )
        ).one()


def _latest_mismatches(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return predictions.latest_mismatches(conn, "churn")


def _run(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_then_rerun(url: str, tmp: Path) -> None:
    settings = settings_for("churn", tmp)
    settings = settings.model_copy(
        update={"scoring": settings.scoring.model_copy(update={"batch_rows": 500})}
    )
    make_lake(settings, settings.lake.raw, days=DAYS, rows=ROWS)
    model_dir, _ = train_small(settings, tmp / "work")
    engine = db.create_engine(url)
    db.migrate(engine)
    version = registry.register_model(engine, model_dir, settings.training.registry)
    registry.set_alias(engine, "churn", "champion", version, "test", by="test")  # latest kept
    cfg = tmp / "settings.json"
    cfg.write_text(settings.model_dump_json())

    child = _run([str(cfg), url, version, "killed-run"])
    deadline = time.monotonic() + 120
    while not _ledger(engine) and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    done_at_kill = len(_ledger(engine))
    assert 1 <= done_at_kill < DAYS, "the kill must land after one partition, before the last"
    rows, distinct = _counts(engine)
    assert rows == distinct == done_at_kill * ROWS  # nothing partial is visible
    # predictions_latest is refreshed in the partition's own transaction: a kill anywhere
    # leaves it equal to its definition, never pointing at a prediction that is not there
    assert _latest_mismatches(engine) == []

    rerun = _run([str(cfg), url, version, "rerun"])
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert out.count(" skipped") == done_at_kill and out.count(" scored") == DAYS - done_at_kill
    assert _counts(engine) == (DAYS * ROWS, DAYS * ROWS)
    ledger = _ledger(engine)
    assert len(ledger) == DAYS and {r.status for r in ledger} == {"done"}
    assert all(r.rows_scored == ROWS for r in ledger)
    assert sorted(r.run_id for r in ledger).count("killed-run") == done_at_kill
    assert _latest_mismatches(engine) == []
    with engine.connect() as conn:
        latest = conn.execute(sa.text("select count(*) from predictions_latest")).scalar()
        entities = conn.execute(sa.text("select count(distinct entity_id) from predictions"))
        assert latest == entities.scalar() > 0

    again = _run([str(cfg), url, version, "third"])
    out, _ = again.communicate(timeout=300)
    assert out.count(" skipped") == DAYS
    assert _counts(engine) == (DAYS * ROWS, DAYS * ROWS)
    assert storage.list_partitions(settings.lake.raw)
    engine.dispose()


def test_kill_mid_partition_then_rerun_sqlite(tmp_path: Path):
    _kill_then_rerun(f"sqlite:///{tmp_path}/kill.db", tmp_path)


@pytest.mark.postgres
def test_kill_mid_partition_then_rerun_postgres(pg_url: str, tmp_path: Path):
    _kill_then_rerun(pg_url, tmp_path)
