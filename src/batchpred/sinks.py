"""The predictions sink: one partition's rows and its ledger row land in one transaction.

Exactly-once comes from three things together: the partition's previous rows for the same
model version are replaced (never appended to), the ledger row is written in the same
transaction, and a per-partition lock serialises concurrent writers: `locks.partition_lock`,
taken by scoring before it reads the partition (a row lock in the writer's private schema on
PostgreSQL, which the read-only role cannot take; a `flock` on a file beside the database on
SQLite; see locks.py), so a duplicate run waits and then reads nothing; each commit also
re-checks the ledger under a lock of its own (`db.writer_lock` on PostgreSQL, `BEGIN
IMMEDIATE` on SQLite). The same transaction keeps
`predictions_latest` equal to its definition (predictions.after_partition_write). Bulk paths by
dialect: PostgreSQL streams CSV made by Arrow into ``COPY`` of a new (day, model) leaf built
aside while scoring, then swaps it in with a few milliseconds of DDL that never queues
readers for long; SQLite and other dialects spool the predictions to a local Arrow file
while scoring and insert them with ``executemany`` in one short transaction at the end, so
parallel scoring threads never hold SQLite's single write lock while they predict.
"""

from __future__ import annotations

import io
import logging
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import sqlalchemy as sa

from batchpred import db, predictions

PREDICTION_COLUMNS = (
    "partition_date",
    "entity_id",
    "score",
    "label",
    "model_version",
    "run_id",
    "scored_at",
)
log = logging.getLogger(__name__)
PARTITIONS = "batchpred_partitions"  # schema of the day and (day, model) tables (PostgreSQL)
_VERSION_RE = re.compile(r"^[0-9a-f]{8,64}$")
_sqlite_writer = threading.Lock()  # one SQLite writer per process; across processes BEGIN IMMEDIATE


@dataclass(frozen=True)
class PartitionKey:
    dataset: str
    partition_date: date
    model_version: str

    def __post_init__(self) -> None:
        # The version becomes part of a table name on PostgreSQL: only hex digests allowed.
        if not _VERSION_RE.match(self.model_version):
            raise ValueError(f"model version {self.model_version!r} is not a hex digest")

    @property
    def lock_name(self) -> str:
        """The name of the partition's writers' mutex (locks.partition_lock)."""
        return f"partition|{self.dataset}|{self.partition_date}|{self.model_version}"

    @property
    def commit_lock_name(self) -> str:
        """The mutex of the partition's commit: a name apart from the partition lock's, so
        the commit never waits for the run's own partition lock."""
        return f"commit|{self.dataset}|{self.partition_date}|{self.model_version}"


@dataclass
class PredictionBatch:
    """Scored rows of one record batch, and the rows rejected from it with their reasons."""

    entity_ids: pa.Array
    scores: np.ndarray
    labels: np.ndarray | None = None
    rejects: pa.Table | None = None  # columns: entity_id, column_name, rule


@dataclass
class LedgerEntry:
    input_fingerprint: str
    rows_in: int
    rows_rejected: int
    started_at: datetime
    rows_scored: int = 0
    finished_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    unknown_values: dict[str, int] = field(default_factory=dict)  # category values unseen

    @property
    def seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


class AlreadyScored(Exception):
    """The ledger shows this (partition, model version) done with the same input."""


def ledger_row(
    engine: sa.Engine, partition_date: date, model_version: str
) -> dict[str, Any] | None:
    t = db.table(engine, "scoring_ledger")
    with engine.connect() as conn:
        row = (
            conn.execute(
                sa.select(t).where(
                    t.c.partition_date == partition_date, t.c.model_version == model_version
                )
            )
            .mappings()
            .first()
        )
    return dict(row) if row else None


def is_done(engine: sa.Engine, key: PartitionKey, fingerprint: str) -> bool:
    row = ledger_row(engine, key.partition_date, key.model_version)
    return bool(row and row["status"] == "done" and row["input_fingerprint"] == fingerprint)


def _prediction_table(batch: PredictionBatch) -> pa.Table:
    """The per-row payload. Day, model version, run id and time are constant for a partition
    write, so they never travel per row (see the writers)."""
    n = len(batch.scores)
    labels = (
        pa.array(batch.labels, pa.int16()) if batch.labels is not None else pa.nulls(n, pa.int16())
    )
    return pa.table(
        {
            "entity_id": batch.entity_ids.cast(pa.string()),
            "score": pa.array(batch.scores, pa.float64()),
            "label": labels,
        }
    )


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class PartitionWriter:
    """Collects one partition's predictions; `finish` commits them with the ledger row."""

    def __init__(self, engine: sa.Engine, key: PartitionKey, run_id: str, force: bool) -> None:
        self.engine, self.key, self.run_id, self.force = engine, key, run_id, force
        db.tables(engine)  # reflect before any transaction holds locks
        self.scored_at = datetime.now(UTC)
        self.rows = 0
        self._rejects: list[pa.Table] = []

    def write(self, batch: PredictionBatch) -> None:
        self.rows += len(batch.scores)
        if batch.rejects is not None and batch.rejects.num_rows:
            self._rejects.append(batch.rejects)
        self._write(_prediction_table(batch))

    def _write(self, table: pa.Table) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def finish(self, ledger: LedgerEntry) -> None:  # pragma: no cover - overridden
        """Commit the partition's rows, its rejects and its ledger row together."""
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _constants(self) -> dict[str, Any]:
        """The columns constant over a partition write (never sent per row)."""
        k = self.key
        return {
            "dataset": k.dataset,
            "day": k.partition_date,
            "version": k.model_version,
            "run_id": self.run_id,
            "scored_at": self.scored_at,
        }

    def _delete_old(self, conn: sa.Connection) -> None:
        preds = db.table(self.engine, "predictions")
        conn.execute(
            preds.delete().where(
                preds.c.partition_date == self.key.partition_date,
                preds.c.model_version == self.key.model_version,
            )
        )

    def _refresh_latest(self, conn: sa.Connection, source: str = "predictions") -> None:
        """Keep `predictions_latest` equal to its definition (predictions.py), before the
        ledger row is replaced: an existing ledger row means the partition had rows."""
        k = self.key
        ledger = db.table(self.engine, "scoring_ledger")
        replaced = (
            conn.execute(
                sa.select(ledger.c.run_id).where(
                    ledger.c.partition_date == k.partition_date,
                    ledger.c.model_version == k.model_version,
                )
            ).first()
            is not None
        )
        predictions.after_partition_write(
            conn,
            dataset=k.dataset,
            day=k.partition_date,
            version=k.model_version,
            run_id=self.run_id,
            source=source,
            rows=self.rows,
            replaced=replaced,
        )

    def _replace_side_rows(self, conn: sa.Connection, ledger: LedgerEntry) -> None:
        """Rejected rows and the ledger row, replaced inside the partition's transaction."""
        k = self.key
        rejected = db.table(self.engine, "rejected_rows")
        conn.execute(
            rejected.delete().where(
                rejected.c.partition_date == k.partition_date,
                rejected.c.model_version == k.model_version,
            )
        )
        rejects = pa.concat_tables(self._rejects) if self._rejects else None
        if rejects is not None:
            conn.execute(
                rejected.insert(),
                [
                    {
                        **r,
                        "dataset": k.dataset,
                        "partition_date": k.partition_date,
                        "model_version": k.model_version,
                        "run_id": self.run_id,
                    }
                    for r in rejects.to_pylist()
                ],
            )
        ledger.rows_scored = self.rows
        ledger.finished_at = datetime.now(UTC)
        t = db.table(self.engine, "scoring_ledger")
        conn.execute(
            t.delete().where(
                t.c.partition_date == k.partition_date, t.c.model_version == k.model_version
            )
        )
        conn.execute(
            t.insert().values(
                partition_date=k.partition_date,
                model_version=k.model_version,
                dataset=k.dataset,
                input_fingerprint=ledger.input_fingerprint,
                status="done",
                rows_in=ledger.rows_in,
                rows_scored=ledger.rows_scored,
                rows_rejected=ledger.rows_rejected,
                run_id=self.run_id,
                started_at=ledger.started_at,
                finished_at=ledger.finished_at,
                seconds=ledger.seconds,
                unknown_values=ledger.unknown_values,
            )
        )

    def _check_not_done(self, conn: sa.Connection, fingerprint: str) -> None:
        if self.force:
            return
        t = db.table(self.engine, "scoring_ledger")
        row = conn.execute(
            sa.select(t.c.status, t.c.input_fingerprint).where(
                t.c.partition_date == self.key.partition_date,
                t.c.model_version == self.key.model_version,
            )
        ).first()
        if row and row.status == "done" and row.input_fingerprint == fingerprint:
            raise AlreadyScored(f"{self.key.partition_date} / {self.key.model_version}")


class SpoolWriter(PartitionWriter):
    """SQLite and other dialects: spool to a local Arrow file, insert in one transaction."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the writer
        self._sink: ipc.RecordBatchStreamWriter | None = None

    def _write(self, table: pa.Table) -> None:
        # Sorted runs keep SQLite's b-tree inserts local: measured 1.9x faster than random order.
        table = table.take(pc.sort_indices(table, [("entity_id", "ascending")]))
        if self._sink is None:
            self._sink = ipc.new_stream(self._file, table.schema)
        self._sink.write_table(table)

    def finish(self, ledger: LedgerEntry) -> None:
        if self._sink is not None:
            self._sink.close()
        self._file.seek(0)
        batches = ipc.open_stream(self._file) if self._sink is not None else []
        k = self.key
        with _sqlite_writer, self.engine.begin() as conn:
            self._check_not_done(conn, ledger.input_fingerprint)
            self._delete_old(conn)
            if conn.dialect.name == "sqlite":
                # Constants inlined as literals (our own names, date, hex digest, run id,
                # timestamp): three parameters per row instead of eight.
                cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
                day, ts = k.partition_date.isoformat(), self.scored_at.isoformat(sep=" ")
                sql = (
                    f"INSERT INTO predictions (dataset, {', '.join(PREDICTION_COLUMNS)}) "
                    f"VALUES ({_literal(k.dataset)}, {_literal(day)}, ?, ?, ?, "
                    f"{_literal(k.model_version)}, {_literal(self.run_id)}, {_literal(ts)})"
                )
                for batch in batches:
                    cols = batch.to_pydict()
                    cur.executemany(
                        sql, zip(cols["entity_id"], cols["score"], cols["label"], strict=True)
                    )
                cur.close()
            else:
                preds = db.table(self.engine, "predictions")
                c = self._constants()
                constants = {
                    "dataset": c["dataset"],
                    "partition_date": c["day"],
                    "model_version": c["version"],
                    "run_id": c["run_id"],
                    "scored_at": c["scored_at"],
                }
                for batch in batches:
                    conn.execute(preds.insert(), [{**r, **constants} for r in batch.to_pylist()])
            self._refresh_latest(conn)
            self._replace_side_rows(conn, ledger)
        self._file.close()

    def close(self) -> None:
        self._file.close()


class PostgresWriter(PartitionWriter):
    """PostgreSQL: build the (day, model) leaf aside, then swap it in.

    While the partition is scored, rows stream by COPY into a new staging table that only
    this transaction can see (its constant columns are column defaults, so COPY carries
    three). `finish` builds its unique index on entity_id (= the key: day and model are fixed
    in a leaf) and a CHECK matching the partition bounds (so ATTACH skips its scan), refreshes
    `predictions_latest` and the ledger, then swaps: DETACH and DROP the old leaf if there is
    one, RENAME, ATTACH. Only the DETACH of a re-scored leaf takes a lock readers conflict
    with, for milliseconds; it runs under `lock_timeout` in a savepoint and is retried, so a
    long analyst query delays the swap instead of queueing every later reader behind it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        k = self.key
        self._day_table = f"{PARTITIONS}.predictions_{k.partition_date:%Y%m%d}"
        self._leaf = f"predictions_{k.partition_date:%Y%m%d}_{k.model_version}"
        self._staging = f"{self._leaf[:-8]}_{uuid.uuid4().hex[:8]}"
        ensure_day(self.engine, k.partition_date)
        self._conn = self.engine.connect()
        self._tx = self._conn.begin()
        defaults = {
            "dataset": _literal(k.dataset),
            "partition_date": _literal(k.partition_date.isoformat()),
            "model_version": _literal(k.model_version),
            "run_id": _literal(self.run_id),
            "scored_at": _literal(self.scored_at.isoformat()),
        }
        try:
            self._conn.exec_driver_sql(
                f"CREATE TABLE {PARTITIONS}.{self._staging} (LIKE predictions)"
            )
            self._conn.exec_driver_sql(
                f"ALTER TABLE {PARTITIONS}.{self._staging} "
                + ", ".join(f"ALTER COLUMN {c} SET DEFAULT {v}" for c, v in defaults.items())
            )
        except BaseException:
            self.close()
            raise

    def _write(self, table: pa.Table) -> None:
        buf = io.BytesIO()
        pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False))
        cur = self._conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cur.copy(
            f"COPY {PARTITIONS}.{self._staging} (entity_id, score, label) FROM STDIN (FORMAT csv)"
        ) as copy:
            copy.write(buf.getbuffer())

    def finish(self, ledger: LedgerEntry) -> None:
        k, conn, staging = self.key, self._conn, f"{PARTITIONS}.{self._staging}"
        predictions.analyze_if_stale(self.engine, self.rows)  # the plan reads them
        # Fails (and rolls everything back) if an entity id slipped in twice.
        conn.exec_driver_sql(f"CREATE UNIQUE INDEX ON {staging} (entity_id)")
        conn.exec_driver_sql(
            f"ALTER TABLE {staging} ADD CONSTRAINT {self._staging}_bounds CHECK "
            f"(partition_date = {_literal(k.partition_date.isoformat())} "
            f"AND model_version = {_literal(k.model_version)})"
        )
        # Commits of one partition one at a time, then the ledger check sees the other's row
        # (a writer opened without locks.partition_lock, or one whose lock session dropped).
        db.writer_lock(conn, k.commit_lock_name)
        self._check_not_done(conn, ledger.input_fingerprint)
        self._refresh_latest(conn, source=staging)
        self._replace_side_rows(conn, ledger)
        _with_lock_timeout(
            conn, self._swap, f"swap of partition {k.partition_date} / {k.model_version}"
        )
        self._tx.commit()
        self._conn.close()

    def _swap(self, conn: sa.Connection) -> None:
        old = f"{PARTITIONS}.{self._leaf}"
        exists = conn.execute(sa.text("SELECT to_regclass(:n) IS NOT NULL"), {"n": old}).scalar()
        if exists:
            conn.exec_driver_sql(f"ALTER TABLE {self._day_table} DETACH PARTITION {old}")
            conn.exec_driver_sql(f"DROP TABLE {old}")
        conn.exec_driver_sql(f"ALTER TABLE {PARTITIONS}.{self._staging} RENAME TO {self._leaf}")
        conn.exec_driver_sql(
            f"ALTER TABLE {self._day_table} ATTACH PARTITION {old} "
            f"FOR VALUES IN ({_literal(self.key.model_version)})"
        )

    def close(self) -> None:
        if self._tx.is_active:
            self._tx.rollback()
        self._conn.close()


LOCK_TIMEOUT = "100ms"  # how long a swap may make readers queue behind it, per attempt
LOCK_ATTEMPTS = 40  # with the backoff, about 5 minutes before LockTimeout


class LockTimeout(RuntimeError):
    """Readers held a lock the writer's DDL needs for longer than it waits (about 5 minutes)."""


def _with_lock_timeout(
    conn: sa.Connection, step: Callable[[sa.Connection], None], what: str
) -> None:
    """Run DDL `step` in a savepoint under `lock_timeout`, retrying with backoff while a
    reader holds a conflicting lock: one WARNING names the sessions holding it, and after
    about 5 minutes in all LockTimeout says who still does."""
    conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    attempts = LOCK_ATTEMPTS
    for attempt in range(attempts):
        try:
            with conn.begin_nested():
                step(conn)
        except sa.exc.OperationalError as err:
            if getattr(err.orig, "sqlstate", None) != "55P03":  # 55P03: lock_not_available
                raise
            if attempt == attempts - 1:
                raise LockTimeout(
                    f"{what}: gave up after {attempts} tries (about 5 min) waiting for "
                    f"{_lock_holders(conn)}; nothing of it was written"
                ) from None
            if attempt == 0:
                log.warning("%s waits for %s; retrying for up to 5 min", what, _lock_holders(conn))
            time.sleep(min(0.1 * 2**attempt, 10.0))
        else:
            break
    conn.exec_driver_sql("SET LOCAL lock_timeout = 0")


def _lock_holders(conn: sa.Connection) -> str:
    """The other sessions holding a lock on a predictions table, as one phrase."""
    rows = conn.exec_driver_sql(
        "SELECT DISTINCT a.pid, a.usename, a.xact_start FROM pg_locks l "
        "JOIN pg_stat_activity a ON a.pid = l.pid "
        "JOIN pg_class c ON c.oid = l.relation "
        "WHERE l.granted AND starts_with(c.relname, 'predictions') AND a.pid <> pg_backend_pid() "
        "ORDER BY a.xact_start NULLS LAST LIMIT 5"
    ).all()
    if not rows:
        return "a session holding a lock on predictions"
    return "sessions holding a lock on predictions: " + ", ".join(
        f"session {r.pid} of {r.usename}"
        + (f" in a transaction since {r.xact_start:%H:%M:%S}" if r.xact_start else "")
        for r in rows
    )


def ensure_day(engine: sa.Engine, day: date) -> None:
    """Create and attach the day's table (partitioned by model version) if missing.

    CREATE TABLE ... PARTITION OF would wait for every open reader of `predictions`, and
    queue every later reader behind it; a table created apart and then ATTACHed takes only
    SHARE UPDATE EXCLUSIVE on `predictions`, which readers and writers do not conflict with."""
    name = f"{PARTITIONS}.predictions_{day:%Y%m%d}"
    # A plain query, not to_regclass: after waiting on the writers' lock it must see a
    # table another writer just committed (the catalog cache may not have caught up).
    exists = sa.text(
        "SELECT EXISTS (SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname || '.' || c.relname = :name)"
    )
    with engine.connect() as conn:
        if conn.execute(exists, {"name": name}).scalar():
            return
    with engine.begin() as conn:
        db.writer_lock(conn, "ensure_day")
        if conn.execute(exists, {"name": name}).scalar():
            return

        def create(c: sa.Connection) -> None:
            c.exec_driver_sql(
                f"CREATE TABLE {name} (LIKE predictions) PARTITION BY LIST (model_version)"
            )
            c.exec_driver_sql(
                f"ALTER TABLE predictions ATTACH PARTITION {name} "
                f"FOR VALUES IN ({_literal(day.isoformat())})"
            )

        _with_lock_timeout(conn, create, f"creation of the predictions table of {day}")


@contextmanager
def partition_writer(
    engine: sa.Engine, key: PartitionKey, run_id: str, *, fingerprint: str, force: bool = False
) -> Iterator[PartitionWriter]:
    """Open the partition for writing. Raises AlreadyScored (unless `force`) when the ledger
    shows it done with this fingerprint. Nothing is visible until `finish(ledger)`; an
    exception rolls everything back."""
    if not force and is_done(engine, key, fingerprint):
        raise AlreadyScored(f"{key.partition_date} / {key.model_version}")
    kind = PostgresWriter if engine.dialect.name == "postgresql" else SpoolWriter
    writer = kind(engine, key, run_id, force)
    try:
        yield writer
    finally:
        writer.close()
