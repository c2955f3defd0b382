"""Process-wide resources for tasks: the database engine, migrated once per process."""

from __future__ import annotations

import threading
from functools import cache

import sqlalchemy as sa

from batchpred import config, db

_lock = threading.Lock()


@cache
def _engine(url: str) -> sa.Engine:
    engine = db.create_engine(url)
    db.migrate(engine)
    return engine


def engine() -> sa.Engine:
    """The predictions database from $BATCHPRED_DATABASE_URL (never a flow parameter)."""
    with _lock:
        return _engine(config.database_url())


def run_id() -> str:
    """The current Prefect flow run id (the run that wrote a row)."""
    from prefect.runtime import flow_run

    return str(flow_run.id or "local")
