"""Database engine, versioned migrations (Alembic) and the reflected tables."""

from __future__ import annotations

import atexit
import re
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
_migrate_lock = threading.Lock()
_WRITE = "batchpred_sqlite_write"  # execution option: this connection's transaction writes


def _dispose(ref: weakref.ref[sa.Engine]) -> None:
    engine = ref()
    if engine is not None:
        engine.dispose()


def create_engine(url: str) -> sa.Engine:
    """An engine for a SQLAlchemy URL; SQLite gets WAL, a long busy timeout and foreign keys."""
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 300})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA cache_size=-131072")  # 128 MiB: index inserts stay in memory
            # Checkpoint the WAL into the database once it passes 1 GiB, not SQLite's 4 MiB:
            # each partition's commit touches most pages of the entity index, and checkpointing
            # after every commit copied the whole index back each time (2 M rows in 16
            # partitions, sink alone: 25.9-29.9 s -> 22.1-29.8 s, medians 27.5 -> 22.2 s, with
            # the final checkpoint at close). The file shrinks back to 64 MiB after each.
            cur.execute("PRAGMA wal_autocheckpoint=262144")
            cur.execute("PRAGMA journal_size_limit=67108864")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn):  # type: ignore[no-untyped-def]
            # engine.begin(), which every write goes through: IMMEDIATE takes the write lock
            # up front, so two writers queue instead of failing with "database is locked" on
            # lock upgrade. engine.connect() (a read): a deferred BEGIN reads its snapshot of
            # the WAL without waiting for a writer; with IMMEDIATE every ledger check, model
            # lookup and API read waited for the partition being inserted by another thread
            # or process (seen: scoring's two threads taking turns instead of overlapping).
            write = conn.get_execution_options().get(_WRITE, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        @contextmanager
        def begin() -> Iterator[sa.Connection]:
            with engine.connect() as conn:
                conn.execution_options(**{_WRITE: True})
                with conn.begin():
                    yield conn

        engine.begin = begin  # type: ignore[method-assign,assignment]
        # At exit, close the pooled connections: the last one to close checkpoints the WAL
        # into the database file and removes it, so after a run `batchpred.db` alone holds
        # everything (copied or backed up without its -wal file, it would otherwise lack up
        # to the 1 GiB checkpoint threshold of recent writes).
        atexit.register(_dispose, weakref.ref(engine))
        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def migrate(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the schema to the newest migration, or to `revision` (idempotent)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with _migrate_lock, engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    tables.cache_clear()


TABLES = (
    "predictions",
    "predictions_latest",
    "scoring_ledger",
    "rejected_rows",
    "model_versions",
    "model_aliases",
    "model_alias_history",
    "validation_results",
    "drift_metrics",
    "realised_metrics",
    "partition_locks",
    "outcomes",
)


@cache
def tables(engine: sa.Engine) -> dict[str, sa.Table]:
    """The schema as the migrations left it, reflected once per engine. Only our tables,
    never the partitions' leaves."""
    meta = sa.MetaData()
    meta.reflect(engine, only=TABLES)
    return dict(meta.tables)


def table(engine: sa.Engine, name: str) -> sa.Table:
    return tables(engine)[name]


WRITER_LOCKS = "batchpred_partitions.writer_locks"  # migration 0007


def writer_lock(conn: sa.Connection, name: str) -> None:
    """Hold the writers' mutex `name` until the caller's transaction ends, waiting for it.

    PostgreSQL: a row lock in the writer's private schema (migration 0007). Unlike an advisory
    lock, which any login can take, the read-only role cannot take it, so no analyst can stall
    a write. Elsewhere a no-op: SQLite's BEGIN IMMEDIATE already makes one writer at a time."""
    if conn.dialect.name != "postgresql":
        return
    conn.execute(
        sa.text(f"INSERT INTO {WRITER_LOCKS} (name) VALUES (:n) ON CONFLICT DO NOTHING"),
        {"n": name},
    )
    conn.execute(sa.text(f"SELECT 1 FROM {WRITER_LOCKS} WHERE name = :n FOR UPDATE"), {"n": name})


def try_writer_lock(conn: sa.Connection, name: str) -> bool:
    """PostgreSQL: take the mutex `name` in the open transaction if no one holds it, without
    waiting; False if someone does. The row is created first in a transaction of its own (an
    uncommitted new row would make the next taker wait instead of failing at once)."""
    conn.rollback()
    with conn.begin():
        conn.execute(
            sa.text(f"INSERT INTO {WRITER_LOCKS} (name) VALUES (:n) ON CONFLICT DO NOTHING"),
            {"n": name},
        )
    conn.begin()
    try:
        with conn.begin_nested():
            conn.execute(
                sa.text(f"SELECT 1 FROM {WRITER_LOCKS} WHERE name = :n FOR UPDATE NOWAIT"),
                {"n": name},
            )
    except sa.exc.OperationalError as err:
        if getattr(err.orig, "sqlstate", None) != "55P03":  # lock_not_available
            raise
        conn.rollback()
        return False
    return True


_ROLE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def grant_readonly(engine: sa.Engine, role: str) -> None:
    """Create (if missing) a NOLOGIN PostgreSQL role that can read every table of the
    analysts' schema, tables created by later migrations included, and write nothing. The
    partitions' leaves stay out of its reach (query `predictions`). Give it to people with
    `GRANT <role> TO alice`. Idempotent."""
    if engine.dialect.name != "postgresql":
        raise ValueError(
            f"read-only roles need PostgreSQL, not {engine.dialect.name}: "
            "give SQLite readers a copy or open the file with ?mode=ro"
        )
    if not _ROLE_RE.match(role):
        raise ValueError(f"role {role!r}: use lowercase letters, digits and _")
    with engine.begin() as conn:
        database = conn.exec_driver_sql("SELECT current_database()").scalar()
        conn.exec_driver_sql(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = "
            f"'{role}') THEN CREATE ROLE {role} NOLOGIN; END IF; END $$"
        )
        conn.exec_driver_sql(f'GRANT CONNECT ON DATABASE "{database}" TO {role}')
        conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA public TO {role}")
        conn.exec_driver_sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
        conn.exec_driver_sql(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {role}"
        )
