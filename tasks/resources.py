"""Process-wide resources for tasks: the database engine, migrated once per process."""

from __future__ import annotations

import threading
from functools import cache

import sqlalchemy as sa

from batchpred import config, db, registry

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


@cache
def _model(url: str, version: str, nthread: int) -> registry.LoadedModel:
    model = registry.load_model(_engine(url), version)
    model.booster.set_param({"nthread": nthread})
    return model


def model(version: str, nthread: int) -> registry.LoadedModel:
    """A registered model, fetched and sha256-checked once per process and version
    (partition tasks share it; xgboost prediction is thread-safe)."""
    with _lock:
        return _model(config.database_url(), version, nthread)


def run_id() -> str:
    """The current Prefect flow run id (the run that wrote a row)."""
    from prefect.runtime import flow_run

    return str(flow_run.id or "local")


def transient(exc: BaseException) -> bool:
    """Whether a failure may heal on a retry: a dropped or refused connection, a timeout, a
    database that is briefly locked or restarting, an object store's network error. Bad data
    (storage.DataError), a bad model or an incompatible spec never heal: they fail at once."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        return bool(exc.connection_invalidated)
    return type(exc).__module__.split(".")[0] in ("botocore", "aiobotocore", "aiohttp", "urllib3")


def retry_transient(task, task_run, state) -> bool:  # type: ignore[no-untyped-def]
    """Prefect retry condition: retry only what `transient` says may heal."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001
        return transient(exc)
    return False
