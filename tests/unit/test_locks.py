"""The partition lock before the work (SQLite and PostgreSQL): a duplicate concurrent run waits
naming the holder, then skips without reading the partition; a killed holder blocks nobody;
a wait ends with one line at its timeout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from batchpred import db, locks, sinks, storage, validation
from batchpred.config import Settings
from batchpred.registry import LoadedModel
from batchpred.scoring import PartitionResult
from tests.unit.test_scoring import loaded, make_lake, score, settings_for, stored

DAY, VERSION = date(2026, 10, 1), "ab" * 8
# Every function of the library that reads a partition's bytes.
READERS = [
    (storage, "iter_file_batches"),
    (storage, "iter_files"),
    (storage, "files_schema"),
    (storage, "read_files"),
    (storage, "read_partition"),
    (storage, "_content_digest"),
    (validation, "validate_partition"),
]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    url = (
        f"sqlite:///{tmp_path}/p.db"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    eng = db.create_engine(url)
    db.migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture(scope="module")
def churn_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, LoadedModel]:
    tmp = tmp_path_factory.mktemp("churn_model")
    settings = settings_for("churn", tmp)
    return settings, loaded(settings, tmp)


def key(dataset: str = "churn") -> sinks.PartitionKey:
    return sinks.PartitionKey(dataset, DAY, VERSION)


def ingested_lake(settings: Settings, root: str) -> date:
    """One demo partition with the manifest ingest writes (its files' sizes and hashes), so
    fingerprinting it reads no data, as on an ingested lake."""
    day = make_lake(settings, root, days=1, rows=3000)[0]
    files = storage.partition_files(root, day)
    storage.write_manifest(root, day, {"files": storage.file_stats(files)})
    return day


def count_reads(monkeypatch: pytest.MonkeyPatch, on_read: Callable[[], None]) -> Counter[str]:
    """Reads of partition data per thread name; `on_read` runs before each."""
    reads: Counter[str] = Counter()
    for module, name in READERS:
        original = getattr(module, name)

        def counted(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            reads[threading.current_thread().name] += 1
            on_read()
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
    return reads


def test_a_duplicate_concurrent_run_waits_then_skips_without_reading_the_partition(
    engine: sa.Engine,
    churn_model: tuple[Settings, LoadedModel],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings, model = churn_model
    root = str(tmp_path / "lake")
    day = ingested_lake(settings, root)
    winner_reading, loser_waiting = threading.Event(), threading.Event()

    def on_read() -> None:  # the winner keeps reading until the loser is seen waiting
        if threading.current_thread().name == "run-a" and not winner_reading.is_set():
            winner_reading.set()
            assert loser_waiting.wait(timeout=30), "the duplicate run never waited"

    reads = count_reads(monkeypatch, on_read)
    results: dict[str, PartitionResult] = {}
    waits: list[locks.LockWait] = []

    def run(run_id: str) -> None:
        def on_wait(wait: locks.LockWait) -> None:
            waits.append(wait)
            loser_waiting.set()

        results[run_id] = score(
            engine, settings, model, root, day, run_id, run_name=f"score-{run_id}", on_wait=on_wait
        )

    a = threading.Thread(target=run, args=("run-a",), name="run-a")
    b = threading.Thread(target=run, args=("run-b",), name="run-b")
    a.start()
    assert winner_reading.wait(timeout=120)
    b.start()
    a.join(timeout=120)
    b.join(timeout=120)

    assert results["run-a"].status == "scored" and results["run-a"].rows_scored == 3000
    assert results["run-b"].status == "skipped" and results["run-b"].scored_by == "run-a"
    assert reads["run-a"] > 0 and reads["run-b"] == 0  # the loser read no partition data
    [wait] = waits  # one line while it waited, naming the holder
    assert wait.holder is not None and wait.holder.run_id == "run-a"
    assert wait.message().startswith(
        f"waiting for run score-run-a (run-a) which is scoring {day} / {model.version} of churn "
        "since "
    )
    rows = stored(engine, day, model.version)
    assert len(rows) == 3000 and {r["run_id"] for r in rows.values()} == {"run-a"}
    assert locks.holder(engine, sinks.PartitionKey("churn", day, model.version)) is None


HOLDER = """
import sys, time
from datetime import date
from batchpred import db, locks, sinks
engine = db.create_engine(sys.argv[1])
key = sinks.PartitionKey("churn", date(2026, 10, 1), "ab" * 8)
with locks.partition_lock(engine, key, "killed-run", timeout_s=5, run_name="score-killed"):
    print("held", flush=True)
    time.sleep(300)
"""


def test_a_killed_holder_blocks_nobody(engine: sa.Engine) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, engine.url.render_as_string(hide_password=False)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        # another process holds it: a wait ends at its timeout, naming the holder in one line
        with (
            pytest.raises(locks.PartitionLocked) as err,
            locks.partition_lock(engine, key(), "r2", timeout_s=0.5),
        ):
            pass
        message = str(err.value)
        assert "\n" not in message
        assert message.startswith(
            f"partition {DAY} / {VERSION} of churn: still locked by run score-killed "
            "(killed-run) (since "
        )
        assert message.endswith("after 0.5 s; not scored (scoring.lock_timeout_s sets the wait)")
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    started = time.monotonic()
    with locks.partition_lock(engine, key(), "r3", timeout_s=30):
        assert time.monotonic() - started < 5  # released with the process, no stale wait
        holder = locks.holder(engine, key())
        assert holder is not None and holder.run_id == "r3"  # the dead run's row replaced
    assert locks.holder(engine, key()) is None


WAITER = """
import sys
from datetime import date
from batchpred import db, locks, sinks
engine = db.create_engine(sys.argv[1])
key = sinks.PartitionKey("churn", date(2026, 10, 1), "ab" * 8)
tell = lambda wait: print("waiting", flush=True)
with locks.partition_lock(engine, key, "waiter", timeout_s=120, on_wait=tell):
    print("got it", flush=True)
"""


def test_sigterm_ends_a_wait_at_once(engine: sa.Engine) -> None:
    """An operator stopping a run (or a worker cancelling it) is not ignored while the run
    waits for a partition's lock."""
    with locks.partition_lock(engine, key(), "holder", timeout_s=5, run_name="score-holder"):
        child = subprocess.Popen(
            [sys.executable, "-c", WAITER, engine.url.render_as_string(hide_password=False)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "waiting"
            sent = time.monotonic()
            child.send_signal(signal.SIGTERM)
            assert child.wait(timeout=10) == -signal.SIGTERM
            assert time.monotonic() - sent < 3
            assert child.stdout.read() == ""  # it never took the lock
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()


def test_the_lock_is_per_dataset_day_and_model(engine: sa.Engine) -> None:
    with locks.partition_lock(engine, key("churn"), "r1", timeout_s=5):
        for other in (
            key("deliveries"),
            sinks.PartitionKey("churn", date(2026, 10, 2), VERSION),
            sinks.PartitionKey("churn", DAY, "cd" * 8),
        ):
            with locks.partition_lock(engine, other, "r2", timeout_s=0.5):
                pass
        with (  # the same partition, in the same process
            pytest.raises(locks.PartitionLocked),
            locks.partition_lock(engine, key("churn"), "r2", timeout_s=0.3),
        ):
            pass


def test_an_error_in_the_block_releases_the_lock(engine: sa.Engine) -> None:
    with pytest.raises(RuntimeError), locks.partition_lock(engine, key(), "r1", timeout_s=5):
        raise RuntimeError("scoring failed")
    with locks.partition_lock(engine, key(), "r2", timeout_s=0.5):
        assert locks.holder(engine, key()).run_id == "r2"  # type: ignore[union-attr]
