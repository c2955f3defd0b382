"""Partition locks: a run takes a (dataset, day, model version) lock before it reads or
predicts, so a duplicate concurrent run waits, then finds the partition done and reads nothing.

Exclusion by dialect. PostgreSQL: the writers' mutex named by the partition
(`db.try_writer_lock`, a row lock the read-only role cannot take) held in a transaction on a
connection of its own while the partition is scored; the server releases it when that
connection ends, so a killed holder never blocks anyone. SQLite: an exclusive `flock` on a
file per partition in `<database>-locks/` beside the database file; the kernel releases it
when the holding process dies, however it dies, with no stale-holder guess (a PID check cannot
judge a PID of another container sharing the file), and threads of one process exclude each
other too (each lock opens its own file description). An in-memory database, or another
dialect, gets a lock per key within the process only.

Who holds each lock and since when is recorded so that a waiting run can name it: information,
not the exclusion (a record left by a killed holder is replaced by the next holder). PostgreSQL
(and the in-process locks) keep it in the table `partition_locks`; SQLite in the lock file
itself, as one JSON line: a row written to the database would wait for SQLite's one writer,
and a partition that had just finished would not release its lock (nor the next one start)
until the other thread's partition had committed, so the two partitions of
scoring.concurrency=2 took turns instead of overlapping. Every wait has a timeout
(`scoring.lock_timeout_s`) and tells `on_wait` who it waits for.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa

from batchpred import db
from batchpred.sinks import PartitionKey

POLL_S = 0.25  # how often a waiting run tries the lock again
_UNNAMED_AFTER_S = 1.0  # a holder not recorded by then is reported as unnamed


@dataclass(frozen=True)
class Holder:
    """The run holding a partition's lock, as `partition_locks` records it."""

    run_id: str
    run_name: str | None
    since: datetime

    def name(self) -> str:
        return f"{self.run_name} ({self.run_id})" if self.run_name else self.run_id

    def since_text(self) -> str:
        """HH:MM, local time (SQLite hands back naive UTC)."""
        since = self.since if self.since.tzinfo else self.since.replace(tzinfo=UTC)
        return f"{since.astimezone():%H:%M}"


@dataclass(frozen=True)
class LockWait:
    """A run waiting for a partition's lock: which partition, held by whom (None: a holder
    that has not recorded itself yet), and how long the run will wait."""

    key: PartitionKey
    holder: Holder | None
    timeout_s: float

    def partition(self) -> str:
        k = self.key
        return f"{k.partition_date} / {k.model_version} of {k.dataset}"

    def message(self) -> str:
        """Logged once per holder while waiting."""
        h, what = self.holder, self.partition()
        who = (
            f"run {h.name()} which is scoring {what} since {h.since_text()}"
            if h
            else f"another run (not yet named) which is scoring {what}"
        )
        return f"waiting for {who}; giving up after {self.timeout_s:g} s"

    def timeout_message(self) -> str:
        h = self.holder
        who = f"run {h.name()} (since {h.since_text()})" if h else "another run"
        return (
            f"partition {self.partition()}: still locked by {who} after {self.timeout_s:g} s; "
            "not scored (scoring.lock_timeout_s sets the wait)"
        )


class PartitionLocked(Exception):
    """Another run held the partition's lock past the timeout; nothing of it was read."""


class _Exclusion(Protocol):
    def try_acquire(self) -> bool: ...

    def release(self) -> None: ...


class _RowLock:
    """PostgreSQL: the writers' mutex of the partition (db.try_writer_lock), held in a
    transaction left open on a connection kept for it alone; the server ends the transaction,
    and the lock, when that connection ends however its process died."""

    def __init__(self, engine: sa.Engine, key: PartitionKey) -> None:
        self._name = key.lock_name
        self._conn = engine.connect()

    def try_acquire(self) -> bool:
        return db.try_writer_lock(self._conn, self._name)

    def release(self) -> None:
        try:
            self._conn.rollback()
        except sa.exc.DBAPIError:
            self._conn.invalidate()  # a closed session holds nothing
        finally:
            self._conn.close()


class _FileLock:
    """SQLite: `flock` on a file per partition, removed by its holder on release."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def record(self, holder: Holder) -> None:
        """The holder, in the file while it holds it (release removes the file)."""
        assert self._fd is not None
        line = {"run_id": holder.run_id, "run_name": holder.run_name}
        line["since"] = holder.since.isoformat()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (json.dumps(line) + "\n").encode(), 0)

    def try_acquire(self) -> bool:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            # The holder before us removes the file on release: a lock on the file it removed
            # excludes nobody, so take the one now at the path.
            try:
                current = os.stat(self._path)
            except FileNotFoundError:
                current = None
            mine = os.fstat(fd)
            if current and (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
                self._fd = fd
                return True
            os.close(fd)

    def release(self) -> None:
        if self._fd is None:
            return
        with suppress(FileNotFoundError):
            self._path.unlink()
        os.close(self._fd)  # releases the flock
        self._fd = None


_process_locks: dict[tuple[str, PartitionKey], threading.Lock] = {}
_process_locks_guard = threading.Lock()


class _ProcessLock:
    """An in-memory database or another dialect: a lock per key within this process."""

    def __init__(self, engine: sa.Engine, key: PartitionKey) -> None:
        with _process_locks_guard:
            self._lock = _process_locks.setdefault((str(engine.url), key), threading.Lock())
        self._held = False

    def try_acquire(self) -> bool:
        self._held = self._lock.acquire(blocking=False)
        return self._held

    def release(self) -> None:
        if self._held:
            self._lock.release()


def lock_file(database: str, key: PartitionKey) -> Path:
    """The SQLite lock file of a partition, in `<database>-locks/` beside the database."""
    dataset = re.sub(r"[^A-Za-z0-9_.-]", "_", key.dataset)
    name = f"{dataset}_{key.partition_date}_{key.model_version}.lock"
    return Path(f"{database}-locks") / name


def _exclusion(engine: sa.Engine, key: PartitionKey) -> _Exclusion:
    if engine.dialect.name == "postgresql":
        return _RowLock(engine, key)
    path = _lock_path(engine, key)
    return _ProcessLock(engine, key) if path is None else _FileLock(path)


def _where(t: sa.Table, key: PartitionKey) -> list[sa.ColumnElement[bool]]:
    return [
        t.c.dataset == key.dataset,
        t.c.partition_date == key.partition_date,
        t.c.model_version == key.model_version,
    ]


def _lock_path(engine: sa.Engine, key: PartitionKey) -> Path | None:
    """The partition's lock file on a SQLite file database, else None."""
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        return lock_file(database, key)
    return None


def holder(engine: sa.Engine, key: PartitionKey) -> Holder | None:
    """The run recorded as holding the partition's lock, if any."""
    path = _lock_path(engine, key)
    if path is not None:
        try:
            line = json.loads(path.read_text() or "null")
        except (FileNotFoundError, ValueError):  # released, or not yet written
            return None
        if not line:
            return None
        return Holder(line["run_id"], line["run_name"], datetime.fromisoformat(line["since"]))
    t = db.table(engine, "partition_locks")
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(t.c.run_id, t.c.run_name, t.c.acquired_at).where(*_where(t, key))
        ).first()
    return Holder(row.run_id, row.run_name, row.acquired_at) if row else None


def _record(engine: sa.Engine, key: PartitionKey, run_id: str, run_name: str | None) -> None:
    t = db.table(engine, "partition_locks")
    with engine.begin() as conn:
        conn.execute(t.delete().where(*_where(t, key)))  # a killed holder's row, if any
        conn.execute(
            t.insert().values(
                dataset=key.dataset,
                partition_date=key.partition_date,
                model_version=key.model_version,
                run_id=run_id,
                run_name=run_name,
                acquired_at=datetime.now(UTC),
            )
        )


def _clear(engine: sa.Engine, key: PartitionKey, run_id: str) -> None:
    t = db.table(engine, "partition_locks")
    with engine.begin() as conn:
        conn.execute(t.delete().where(*_where(t, key), t.c.run_id == run_id))


@contextmanager
def partition_lock(
    engine: sa.Engine,
    key: PartitionKey,
    run_id: str,
    *,
    timeout_s: float,
    run_name: str | None = None,
    on_wait: Callable[[LockWait], None] | None = None,
) -> Iterator[None]:
    """Hold the partition's lock for the block. While another run holds it, wait: `on_wait`
    hears who holds it (once per holder), and after `timeout_s` PartitionLocked is raised
    with one line naming the holder. Released on exit, whatever happens in the block."""
    exclusion = _exclusion(engine, key)
    db.tables(engine)  # reflect before any lock is held
    acquired = False
    try:
        first_try, told = time.monotonic(), set[Holder | None]()
        while not exclusion.try_acquire():
            now, seen = time.monotonic(), holder(engine, key)
            wait = LockWait(key, seen, timeout_s)
            if now - first_try >= timeout_s:
                raise PartitionLocked(wait.timeout_message())
            if seen not in told and (seen is not None or now - first_try >= _UNNAMED_AFTER_S):
                told.add(seen)
                if on_wait is not None:
                    on_wait(wait)
            time.sleep(min(POLL_S, max(0.0, first_try + timeout_s - now)))
        acquired = True
        if isinstance(exclusion, _FileLock):
            exclusion.record(Holder(run_id, run_name, datetime.now(UTC)))
        else:
            _record(engine, key, run_id, run_name)
        yield
    finally:
        if acquired and not isinstance(exclusion, _FileLock):  # release removes the file
            with suppress(sa.exc.SQLAlchemyError):  # a stale row is replaced by the next holder
                _clear(engine, key, run_id)
        exclusion.release()
