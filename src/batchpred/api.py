"""A read-only HTTP API over the stored predictions, for applications that want a precomputed
prediction without SQL (`batchpred api`, `make api`).

    GET  /v1/predictions/{dataset}/{entity_id}    the current prediction (predictions_latest)
         ?date=YYYY-MM-DD                          that day's, ranked the same way
         ?model=<hex version>                      that version's newest (with date: that day's)
    POST /v1/predictions/{dataset}:batch          {"entity_ids": [...]} (up to 1000): latest
                                                  of each found id, and the ids not found
    GET  /healthz                                 the database answers (no key needed)
    GET  /docs, /openapi.json                     the OpenAPI description

Every /v1 request needs an API key from $BATCHPRED_API_KEYS (header `X-API-Key: KEY` or
`Authorization: Bearer KEY`), compared in constant time; with no key configured the app
refuses to start unless told `insecure_no_auth` (`--insecure-no-auth`). Each key has a token
bucket ($BATCHPRED_API_RATE requests per second, $BATCHPRED_API_BURST at once) kept in the
process: past it, 429 with Retry-After. Before the app reads a byte of a request body, a
guard (`_Guard`, plain ASGI) checks the key (401 at once for a wrong one, 429 once a client
address has failed too often: $BATCHPRED_API_FAILED_RATE failures per second after a burst of
10) and the body's size ($BATCHPRED_API_MAX_BODY bytes, default 512 KiB: 413); a key sent in
the query string is refused and blanked out of the request line before anything logs it.
A 422 echoes at most the first 64 characters of each bad input, as valid unicode (a lone
surrogate is shown escaped, never a 500).

The database is opened read-only whatever the URL says: SQLite through a `mode=ro` URI with
`query_only`, PostgreSQL with every session's transactions READ ONLY (and a statement
timeout), so no bug here can write. Lookups are SQLAlchemy Core statements built once, run on
a sync engine from FastAPI's threadpool (plain `def` endpoints), one statement per request;
on PostgreSQL in autocommit (one round trip, no BEGIN/ROLLBACK) and prepared by psycopg after
a few executions per connection.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from batchpred import config, predictions

log = logging.getLogger("batchpred.api")

API_KEYS_ENV = "BATCHPRED_API_KEYS"  # comma-separated keys; required unless insecure_no_auth
API_RATE_ENV = "BATCHPRED_API_RATE"  # requests per second per key (default 100; 0: no limit)
API_BURST_ENV = "BATCHPRED_API_BURST"  # requests a key may make at once (default 2 x rate)
API_POOL_ENV = "BATCHPRED_API_POOL"  # database connections kept per process (default 10)
API_MAX_BODY_ENV = "BATCHPRED_API_MAX_BODY"  # bytes a request body may have (default 512 KiB)
API_FAILED_RATE_ENV = "BATCHPRED_API_FAILED_RATE"  # failed keys/s per client (default 0.2)
# Set only by `batchpred api --insecure-no-auth --workers N` for its worker processes.
_INSECURE_ENV = "_BATCHPRED_API_INSECURE_NO_AUTH"
DEFAULT_RATE, MIN_KEY_LENGTH, MAX_BATCH = 100.0, 16, 1000
# 1000 ids of at most 256 characters, as JSON, fit well under this
DEFAULT_MAX_BODY = 512 * 1024
DEFAULT_FAILED_RATE, FAILED_BURST = 0.2, 10
ECHO_CHARS = 64  # of a bad input, in a 422
STATEMENT_TIMEOUT_MS = 5000

DATASET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ENTITY_PATTERN = r"^[^\x00-\x1f\x7f]+$"  # no control characters (PostgreSQL refuses NUL)
MAX_ENTITY_LENGTH = 256
MODEL_PATTERN = r"^[0-9a-fA-F]{8,64}$"
_DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class ConfigError(Exception):
    """The API cannot start as configured; the message is one line for the operator."""


# --- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiConfig:
    keys: tuple[str, ...] = ()
    rate: float = DEFAULT_RATE  # requests per second per key; 0: no limit
    burst: int = int(2 * DEFAULT_RATE)
    insecure_no_auth: bool = False
    pool_size: int = 10
    max_body: int = DEFAULT_MAX_BODY
    failed_rate: float = DEFAULT_FAILED_RATE

    def __post_init__(self) -> None:
        if not self.keys and not self.insecure_no_auth:
            raise ConfigError(
                f"no API keys: set ${API_KEYS_ENV} (comma-separated, {MIN_KEY_LENGTH}+ "
                "characters each), or start with --insecure-no-auth to serve without keys"
            )
        for i, key in enumerate(self.keys, 1):
            if len(key) < MIN_KEY_LENGTH:
                raise ConfigError(
                    f"${API_KEYS_ENV}: key #{i} is shorter than {MIN_KEY_LENGTH} characters"
                )
        if self.rate < 0 or (self.rate > 0 and self.burst < 1):
            raise ConfigError(f"${API_RATE_ENV} must be >= 0 and ${API_BURST_ENV} >= 1")

    @classmethod
    def from_env(cls, *, insecure_no_auth: bool = False) -> ApiConfig:
        keys = tuple(k.strip() for k in os.environ.get(API_KEYS_ENV, "").split(",") if k.strip())
        rate = _number(API_RATE_ENV, DEFAULT_RATE)
        burst = _number(API_BURST_ENV, max(1.0, 2 * rate))
        pool = _number(API_POOL_ENV, 10)
        max_body = _number(API_MAX_BODY_ENV, DEFAULT_MAX_BODY)
        failed = _number(API_FAILED_RATE_ENV, DEFAULT_FAILED_RATE)
        return cls(
            keys, rate, int(burst), insecure_no_auth, max(1, int(pool)), int(max_body), failed
        )


def _number(env: str, default: float) -> float:
    text = os.environ.get(env, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"${env}={text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"${env}={text!r} must be a finite number >= 0")
    return value


# --- the read-only database ---------------------------------------------------------------------


def readonly_engine(url: str | sa.URL, *, pool_size: int = 10) -> sa.Engine:
    """An engine that cannot write: SQLite opened `mode=ro` (plus `query_only`), PostgreSQL
    with READ ONLY session transactions, autocommit (one round trip a lookup) and a statement
    timeout."""
    url = sa.make_url(url)
    if url.get_backend_name() == "sqlite":
        path = url.database
        if not path or path == ":memory:" or path.startswith("file:"):
            raise ConfigError(f"the API needs an SQLite file path, not {str(url)!r}")
        uri = sa.URL.create(
            "sqlite", database=f"file:{quote(str(Path(path).resolve()))}", query={"mode": "ro"}
        ).update_query_dict({"uri": "true"})
        engine = sa.create_engine(uri, pool_size=pool_size, max_overflow=pool_size)

        @sa.event.listens_for(engine, "connect")
        def _sqlite_readonly(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            dbapi_conn.execute("PRAGMA query_only=ON")

        return engine
    if url.get_backend_name() != "postgresql":
        raise ConfigError(f"the API serves SQLite or PostgreSQL, not {url.get_backend_name()}")
    engine = sa.create_engine(
        url,
        isolation_level="AUTOCOMMIT",
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
    )

    @sa.event.listens_for(engine, "connect")
    def _pg_readonly(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        autocommit = dbapi_conn.autocommit
        dbapi_conn.autocommit = True  # a SET inside a transaction would be rolled back
        with dbapi_conn.cursor() as cur:
            cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            cur.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
        dbapi_conn.autocommit = autocommit

    return engine


def _value(row: dict[str, Any]) -> dict[str, Any]:
    """A row as the typed value every surface shares (predictions.Prediction)."""
    return dataclasses.asdict(predictions.Prediction.from_row(row))


_MODEL_DATASETS = sa.table("model_versions", sa.column("dataset"))


class Store:
    """The lookups: each one SQL statement, written with SQLAlchemy Core and compiled once for
    the engine's dialect, then run on a pooled DBAPI connection. Measured on PostgreSQL: 0.10
    ms of CPU a lookup this way against 0.27 ms through Connection.execute (the compiled
    cache still builds an execution context and a result object per call)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._dbapi_error: type[Exception] = engine.dialect.loaded_dbapi.Error
        self._sqlite = engine.dialect.name == "sqlite"
        # The statements of predictions.py: the one definition the CLI and the cache use.
        statements: dict[str, sa.Executable] = {
            **predictions.statements(),
            "batch": predictions.current_many_statement(engine.dialect.name),
            "ping": sa.select(sa.literal_column("1")).select_from(predictions.LATEST).limit(1),
            "datasets": sa.select(_MODEL_DATASETS.c.dataset).distinct().order_by("dataset"),
        }
        self._sql = {name: self._compile(stmt) for name, stmt in statements.items()}

    def _compile(self, stmt: sa.Executable) -> tuple[str, list[str] | None, dict[str, Any]]:
        """(SQL in the driver's paramstyle, parameter order if positional, constant params)."""
        compiled = stmt.compile(dialect=self.engine.dialect)  # type: ignore[attr-defined]
        order = list(compiled.positiontup) if compiled.positional else None
        return str(compiled), order, dict(compiled.params)

    def _rows(self, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        sql, order, constants = self._sql[name]
        values = {**constants, **params}
        args: Any = tuple(values[k] for k in order) if order is not None else values
        for attempt in (1, 2):
            try:
                conn = self.engine.raw_connection()  # the pool's; read-only by its connect hook
            except self._dbapi_error as err:  # cannot connect: no statement ran
                raise sa.exc.DBAPIError.instance(None, None, err, self._dbapi_error) from err
            try:
                cur = conn.cursor()
                cur.execute(sql, args)
                names = [d[0] for d in cur.description]
                rows = cur.fetchall()
                cur.close()
                return [dict(zip(names, row, strict=True)) for row in rows]
            except self._dbapi_error as err:
                dialect = self.engine.dialect
                lost = dialect.is_disconnect(err, conn.dbapi_connection, None)  # type: ignore[arg-type]
                if lost:
                    conn.invalidate(err)
                if not (lost and attempt == 1):  # a dropped pooled connection: once more
                    raise sa.exc.DBAPIError.instance(
                        sql, args, err, self._dbapi_error, connection_invalidated=lost
                    ) from err
            finally:
                conn.close()
        raise AssertionError("unreachable")

    def find(
        self, dataset: str, entity_id: str, *, day: date | None, model: str | None
    ) -> dict[str, Any] | None:
        """predictions.lookup, on the compiled statements (see predictions.statement_for)."""
        params: dict[str, Any] = {"dataset": dataset, "entity_id": entity_id}
        if day is not None:
            params["day"] = day.isoformat() if self._sqlite else day
        if model is not None:
            params["model"] = model
        rows = self._rows(predictions.statement_for(day, model), params)
        return _value(rows[0]) if rows else None

    def batch(self, dataset: str, entity_ids: list[str]) -> list[dict[str, Any]]:
        ids = predictions.ids_param(self.engine.dialect.name, entity_ids)
        return [_value(r) for r in self._rows("batch", {"dataset": dataset, "ids": ids})]

    def ping(self) -> None:
        self._rows("ping", {})

    def datasets(self) -> list[str]:
        """The datasets with a registered model: those a lookup can name."""
        return [r["dataset"] for r in self._rows("datasets", {})]

    def unknown_dataset(self, dataset: str) -> str | None:
        """Why `dataset` cannot be looked up (asked only once a lookup found nothing), or None
        when it can."""
        known = self.datasets()
        if dataset in known:
            return None
        return f"unknown dataset {dataset!r}: no model is registered for it " + (
            f"(datasets: {', '.join(known)})" if known else "(no dataset has a model yet)"
        )


# --- auth and rate limit ----------------------------------------------------------------------


class Keys:
    """The configured keys, as sha256 digests compared in constant time: every key is compared
    on every request (no early exit), over digests of one length."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys]

    def match(self, presented: str) -> int | None:
        """The index of the key presented, or None."""
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for i, known in enumerate(self._digests):
            if hmac.compare_digest(digest, known):
                found = i
        return found


class TokenBucket:
    """Per identity: `rate` tokens a second, at most `burst` saved; a request takes one."""

    MAX_IDENTITIES = 100_000  # anonymous mode keys by client address: bound the memory

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self._state: dict[str, tuple[float, float]] = {}  # identity -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, identity: str) -> float:
        """0.0 when the request may go ahead, else the seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            tokens, at = self._state.get(identity, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                if len(self._state) >= self.MAX_IDENTITIES and identity not in self._state:
                    self._state.clear()  # every bucket refills in burst / rate seconds anyway
                self._state[identity] = (tokens - 1.0, now)
                return 0.0
            self._state[identity] = (tokens, now)
            return (1.0 - tokens) / self.rate


_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key")
_bearer = HTTPBearer(auto_error=False, description="an API key as a bearer token")


# --- request and response models --------------------------------------------------------------


def _strict_day(value: object) -> object:
    """Only YYYY-MM-DD: pydantic alone would also take a timestamp or a datetime."""
    if isinstance(value, str) and not _DAY_RE.match(value):
        raise ValueError("must be a day, YYYY-MM-DD")
    return value


EntityId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ENTITY_LENGTH, pattern=ENTITY_PATTERN),
]
Day = Annotated[date, BeforeValidator(_strict_day)]


# Path and query parameters: defined here, not inside create_app, so that their annotations
# resolve (this module uses postponed annotations).
DatasetParam = Annotated[
    str, PathParam(pattern=DATASET_PATTERN, max_length=64, description="dataset name")
]
EntityParam = Annotated[
    str,
    PathParam(
        min_length=1,
        max_length=MAX_ENTITY_LENGTH,
        pattern=ENTITY_PATTERN,
        description="the entity id, as stored (text)",
    ),
]
DayQuery = Annotated[
    Day | None, Query(alias="date", description="the prediction for this day (YYYY-MM-DD)")
]
ModelQuery = Annotated[
    str | None, Query(pattern=MODEL_PATTERN, description="by this model version (hex digest)")
]


class Prediction(BaseModel):
    """One stored prediction."""

    dataset: str
    entity_id: str
    partition_date: date = Field(description="the day (partition) the prediction is for")
    score: float = Field(description="probability of the positive class, or the regression value")
    label: int | None = Field(
        description="binary models: the predicted class (score >= the model's threshold); "
        "regression: null"
    )
    model_version: str = Field(description="the model that made it (model_versions.version)")
    run_id: str
    scored_at: datetime
    by_champion: bool = Field(
        description="made by the dataset's current champion; false where only an earlier "
        "champion scored the entity (or, with `model`, another version made it)"
    )

    @field_validator("scored_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        """SQLite may hand back a timestamp without its offset: they are written in UTC."""
        return value if value.tzinfo else value.replace(tzinfo=UTC)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entity_ids: list[EntityId] = Field(min_length=1, max_length=MAX_BATCH)


class BatchResponse(BaseModel):
    dataset: str
    predictions: list[Prediction] = Field(description="the latest prediction of each found id")
    missing: list[str] = Field(description="the ids asked for without a prediction")


class ErrorBody(BaseModel):
    detail: str


class Health(BaseModel):
    status: str
    database: str


# --- the guard: before the body ---------------------------------------------------------------

OPEN_PATHS = frozenset({"/healthz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
_QUERY_KEYS = re.compile(
    rb"(^|&)((?:api[_-]?key|key|token|access[_-]?token|x-api-key)=)[^&]*", re.IGNORECASE
)


class _BodyTooLarge(Exception):
    pass


async def _reply(send: Callable[..., Any], status: int, detail: str, **headers: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    extra = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _Guard:
    """Plain ASGI, in front of the app: a key given in the query string is blanked out of the
    request (uvicorn's access log writes the scope's query string); then, before the app
    reads a byte of the body, the key is checked (401, or 429 once the client's address has
    failed too often) and the body's size capped (413)."""

    def __init__(self, app: Any, keys: Keys | None, max_body: int, failed: TokenBucket) -> None:
        self.app, self.keys, self.max_body, self.failed = app, keys, max_body, failed

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string") or b""
        if query:
            scope["query_string"] = _QUERY_KEYS.sub(rb"\1\2***", query)
        headers = dict(scope.get("headers") or [])
        if self.keys is not None and scope["path"] not in OPEN_PATHS:
            presented = headers.get(b"x-api-key", b"").decode("latin-1") or None
            auth = headers.get(b"authorization", b"").decode("latin-1")
            if presented is None and auth[:7].lower() == "bearer ":
                presented = auth[7:].strip() or None
            if presented is None or self.keys.match(presented) is None:
                client = (scope.get("client") or ("-", 0))[0]
                wait = self.failed.take(f"failed:{client}")
                if wait > 0:
                    log.warning("client %s: too many failed API keys", client)
                    await _reply(
                        send,
                        429,
                        "too many failed API keys from this address",
                        retry_after=str(max(1, math.ceil(wait))),
                    )
                else:
                    await _reply(send, 401, "missing or invalid API key", www_authenticate="Bearer")
                return
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _reply(send, 413, f"request body over {self.max_body} bytes")
            return
        seen = 0

        async def capped() -> dict[str, Any]:
            nonlocal seen
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, capped, send)
        except _BodyTooLarge:  # chunked, no length: read before any response was started
            await _reply(send, 413, f"request body over {self.max_body} bytes")


def _echo(value: Any) -> Any:
    """A bad input as a 422 shows it: at most ECHO_CHARS characters, valid unicode."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > ECHO_CHARS:
        return f"{text[:ECHO_CHARS]}... ({len(text):,} characters)"
    return value if isinstance(value, str) and text == value else text


# --- the app ------------------------------------------------------------------------------------


def create_app(
    source: config.Settings | sa.Engine | str | None = None,
    *,
    api_config: ApiConfig | None = None,
    insecure_no_auth: bool = False,
) -> FastAPI:
    """The lookup API over a database: an engine (its URL is reopened read-only), a URL, or
    settings / None ($BATCHPRED_DATABASE_URL). `api_config` defaults to the environment.
    Raises ConfigError when no API key is configured and `insecure_no_auth` is not given."""
    cfg = api_config or ApiConfig.from_env(insecure_no_auth=insecure_no_auth)
    if isinstance(source, sa.Engine):
        url: str | sa.URL = source.url
    elif isinstance(source, str):
        url = source
    else:
        url = config.database_url()
    store = Store(readonly_engine(url, pool_size=cfg.pool_size))
    keys, bucket = Keys(cfg.keys), TokenBucket(cfg.rate, cfg.burst)
    if cfg.insecure_no_auth and not cfg.keys:
        log.warning("serving WITHOUT authentication (--insecure-no-auth)")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        store.engine.dispose()

    async def authorize(
        request: Request,
        api_key: Annotated[str | None, Depends(_api_key_header)],
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        # async: runs on the event loop, no threadpool hop before the lookup's own.
        presented = api_key or (bearer.credentials if bearer else None)
        if cfg.keys:
            index = keys.match(presented) if presented else None
            if index is None:
                raise HTTPException(
                    401, "missing or invalid API key", headers={"WWW-Authenticate": "Bearer"}
                )
            identity = f"key:{index}"
        else:
            identity = f"addr:{request.client.host if request.client else '-'}"
        wait = bucket.take(identity)
        if wait > 0:
            raise HTTPException(
                429,
                f"rate limit of {cfg.rate:g} requests/s (burst {cfg.burst}) exceeded",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )

    app = FastAPI(
        title="batchpred lookup API",
        version="1",
        summary="Precomputed predictions, read-only.",
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.api_config = cfg
    failed = TokenBucket(cfg.failed_rate, FAILED_BURST)
    app.add_middleware(
        _Guard,  # type: ignore[arg-type]
        keys=keys if cfg.keys else None,
        max_body=cfg.max_body,
        failed=failed,
    )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, err: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes every bad input whole (a 20 MB id comes back whole)
        detail = []
        for e in err.errors():
            out = {k: e[k] for k in ("type", "loc", "msg") if k in e}
            if "input" in e:
                out["input"] = _echo(e["input"])
            detail.append(out)
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(sa.exc.DBAPIError)
    async def _db_error(_request: Request, err: sa.exc.DBAPIError) -> JSONResponse:
        # Unreachable, restarting, timed out: 503 (retry later). Anything else (a schema
        # that is not migrated, say): 500. Neither tells the client more than that.
        down = isinstance(err, sa.exc.OperationalError | sa.exc.InterfaceError)
        first_line = str(err.orig).splitlines()[0] if str(err.orig) else type(err.orig).__name__
        log.error("database error (%s): %s", type(err.orig).__name__, first_line)
        if down:
            return JSONResponse({"detail": "database unavailable"}, status_code=503)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    errors: dict[int | str, dict[str, Any]] = {
        401: {"model": ErrorBody, "description": "no valid API key"},
        404: {"model": ErrorBody, "description": "no such prediction, or no such dataset"},
        429: {"model": ErrorBody, "description": "rate limit exceeded (see Retry-After)"},
    }

    @app.get(
        "/v1/predictions/{dataset}/{entity_id}",
        response_model=Prediction,
        responses=errors,
        dependencies=[Depends(authorize)],
        tags=["predictions"],
    )
    def get_prediction(
        dataset: DatasetParam,
        entity_id: EntityParam,
        day: DayQuery = None,
        model: ModelQuery = None,
    ) -> dict[str, Any]:
        """The entity's current prediction: its dataset's champion's newest, or where the
        champion never scored it an earlier champion's (`by_champion` false). With `date`:
        the same ranking among that day's predictions. With `model`: that version's newest
        prediction (with `date` too: that day's). The CLI's `predictions lookup` and the
        table predictions_latest give the same answer (batchpred.predictions)."""
        version = model.lower() if model else None
        row = store.find(dataset, entity_id, day=day, model=version)
        if row is None:
            if unknown := store.unknown_dataset(dataset):
                raise HTTPException(404, unknown)
            by = f" by {version}" if version else ""
            on = f" on {day}" if day else ""
            raise HTTPException(404, f"no prediction of {entity_id!r} in {dataset!r}{by}{on}")
        return row

    def batch(dataset: str, body: BatchRequest) -> dict[str, Any]:
        wanted = list(dict.fromkeys(body.entity_ids))  # unique, in the order asked
        rows = {r["entity_id"]: r for r in store.batch(dataset, wanted)}
        if not rows and (unknown := store.unknown_dataset(dataset)):
            raise HTTPException(404, unknown)
        return {
            "dataset": dataset,
            "predictions": [rows[e] for e in wanted if e in rows],
            "missing": [e for e in wanted if e not in rows],
        }

    @app.post(
        "/v1/predictions/{dataset}:batch",
        response_model=BatchResponse,
        responses=errors,
        dependencies=[Depends(authorize)],
        tags=["predictions"],
    )
    def post_batch(dataset: DatasetParam, body: BatchRequest) -> dict[str, Any]:
        """The champion's latest prediction of up to 1000 entities, in one query; ids without
        one are listed in `missing`."""
        return batch(dataset, body)

    @app.post(
        "/v1/predictions/{dataset}/batch",
        response_model=BatchResponse,
        responses=errors,
        dependencies=[Depends(authorize)],
        include_in_schema=False,
    )
    def post_batch_alias(dataset: DatasetParam, body: BatchRequest) -> dict[str, Any]:
        return batch(dataset, body)

    @app.get(
        "/healthz",
        response_model=Health,
        responses={503: {"model": Health}},
        tags=["health"],
    )
    def healthz() -> Any:
        """The database answers and has the predictions_latest table. No key needed."""
        try:
            store.ping()
        except sa.exc.SQLAlchemyError as err:
            log.warning("healthz: database check failed: %s", type(err).__name__)
            return JSONResponse({"status": "unavailable", "database": "error"}, 503)
        return {"status": "ok", "database": "ok"}

    return app


def _nodelay_protocol() -> type:
    """uvicorn's HTTP protocol (httptools when installed, else h11) with TCP_NODELAY set on
    every connection. With --workers N uvicorn binds the listening socket itself with proto 0,
    so asyncio never sets TCP_NODELAY on accepted sockets and every keep-alive response after
    the first waits ~40 ms for the client's delayed ACK (Kludex/uvicorn#3149): measured here
    as 47 ms a sequential lookup with 2 workers against 1.4 ms with 1."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base  # type: ignore[assignment]

    class NoDelayHTTPProtocol(Base):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: Any) -> None:
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().connection_made(transport)

    return NoDelayHTTPProtocol


def __getattr__(name: str) -> Any:
    # `http="batchpred.api:NoDelayHTTPProtocol"` for uvicorn, built on first use
    if name == "NoDelayHTTPProtocol":
        globals()[name] = cls = _nodelay_protocol()
        return cls
    raise AttributeError(name)


def app_from_env() -> FastAPI:
    """The app for `uvicorn --factory batchpred.api:app_from_env` (and `--workers N`)."""
    return create_app(None, insecure_no_auth=os.environ.get(_INSECURE_ENV) == "1")


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    workers: int = 1,
    insecure_no_auth: bool = False,
    access_log: bool = True,
) -> None:
    """Run the API under uvicorn (`batchpred api`). Checks the configuration before binding."""
    import uvicorn

    app = create_app(None, insecure_no_auth=insecure_no_auth)  # raises ConfigError early
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "access_log": access_log,
        "server_header": False,
        "http": "batchpred.api:NoDelayHTTPProtocol",
    }
    if workers <= 1:
        uvicorn.run(app, **common)
        return
    app.state.store.engine.dispose()
    if insecure_no_auth:
        os.environ[_INSECURE_ENV] = "1"
    uvicorn.run("batchpred.api:app_from_env", factory=True, workers=workers, **common)
