"""The lookup API (batchpred.api) through FastAPI's TestClient, on a SQLite file and, marked
`postgres`, on a fresh PostgreSQL database: lookups, validation, auth, rate limit, docs,
health, and that its connections cannot write.

The data goes in through the real write path (sinks.partition_writer, which also keeps
predictions_latest) with champions set by registry.set_alias in between, so "the champion
when the day was scored" is what the registry's history says.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from batchpred import api, cli, db, registry, sinks

KEY, KEY2 = "k" * 20, "second-key-0123456789"
V1, V2, V3 = "1111111111111111", "2222222222222222", "3333333333333333"
V4 = "4444444444444444"  # the deliveries dataset's model
D1, D2, D3 = date(2026, 10, 1), date(2026, 10, 2), date(2026, 10, 3)


# --- the database -------------------------------------------------------------------------------


def register(engine: sa.Engine, version: str, dataset: str) -> None:
    """A model_versions row (the registry's own table) without training a model."""
    t = db.table(engine, "model_versions")
    with engine.begin() as conn:
        conn.execute(
            t.insert().values(
                version=version,
                dataset=dataset,
                sha256=version * 4,
                uri=f"mem://{version}",
                xgboost_version="3",
                features=[],
                params={},
                training_data_hash="-",
                metrics={},
                reference_stats={},
                created_at=datetime.now(UTC),
            )
        )


def score(engine: sa.Engine, dataset: str, day: date, version: str, scores: dict) -> None:
    """One partition written as scoring writes it."""
    key = sinks.PartitionKey(dataset, day, version)
    values = np.array(list(scores.values()), dtype=float)
    labels = np.array([1 if s >= 0.5 else 0 for s in values], dtype=np.int8)
    with sinks.partition_writer(engine, key, f"run-{day}-{version[:2]}", fingerprint="fp") as out:
        out.write(sinks.PredictionBatch(pa.array(list(scores), pa.string()), values, labels))
        out.finish(sinks.LedgerEntry("fp", len(scores), 0, datetime.now(UTC)))


def seed(engine: sa.Engine) -> None:
    """Migrate, then for churn:

    - V1 champion: scores D1 (a 0.1, b 0.2) and D2 (a 0.3); V3 shadows D2 (a 0.9)
    - V2 promoted, then scores D3 (a 0.5); afterwards V1 backfills D3 (a 0.7, not champion)

    and for deliveries (V4 champion) entity a on D1 at 42.0. The writer keeps
    predictions_latest: a -> V2's D3, b -> V1's D1 (a promotion removes nobody).
    """
    db.migrate(engine)
    for version, dataset in ((V1, "churn"), (V2, "churn"), (V3, "churn"), (V4, "deliveries")):
        register(engine, version, dataset)
    registry.set_alias(engine, "churn", "champion", V1, "first", by="test")
    registry.set_alias(engine, "deliveries", "champion", V4, "first", by="test")
    score(engine, "churn", D1, V1, {"a": 0.1, "b": 0.2})
    score(engine, "churn", D2, V1, {"a": 0.3})
    score(engine, "churn", D2, V3, {"a": 0.9})
    score(engine, "deliveries", D1, V4, {"a": 42.0})
    registry.set_alias(engine, "churn", "champion", V2, "better", by="test")
    score(engine, "churn", D3, V2, {"a": 0.5})
    score(engine, "churn", D3, V1, {"a": 0.7})


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def seeded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    """The seeded database on SQLite and on a fresh PostgreSQL database: for the tests whose
    SQL differs by dialect."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/api.db"
    else:
        url = request.getfixturevalue("pg_url")
    engine = db.create_engine(url)
    seed(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def sqlite_seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sa.Engine]:
    """The seeded database on SQLite, once for the module: for the tests that stop before
    any SQL (validation, auth, rate limit, docs). Nothing here writes to it."""
    engine = db.create_engine(f"sqlite:///{tmp_path_factory.mktemp('api')}/api.db")
    seed(engine)
    yield engine
    engine.dispose()


def make_client(engine: sa.Engine, **cfg: Any) -> TestClient:
    cfg = {"keys": (KEY, KEY2), "rate": 0.0, **cfg}
    return TestClient(api.create_app(engine, api_config=api.ApiConfig(**cfg)))


@pytest.fixture
def client(seeded: sa.Engine) -> Iterator[TestClient]:
    with make_client(seeded) as c:
        c.headers["X-API-Key"] = KEY
        yield c


@pytest.fixture
def sqlite_client(sqlite_seeded: sa.Engine) -> Iterator[TestClient]:
    with make_client(sqlite_seeded) as c:
        c.headers["X-API-Key"] = KEY
        yield c


def get(client: TestClient, path: str, **params: str) -> Any:
    r = client.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


# --- lookups ------------------------------------------------------------------------------------


def test_latest_is_the_current_champions_newest(client: TestClient) -> None:
    body = get(client, "/v1/predictions/churn/a")
    assert body["model_version"] == V2 and body["partition_date"] == "2026-10-03"
    assert body["score"] == pytest.approx(0.5) and body["label"] == 1
    assert body["dataset"] == "churn" and body["entity_id"] == "a"
    assert body["run_id"] == f"run-{D3}-22"
    assert datetime.fromisoformat(body["scored_at"]).tzinfo is not None
    # b was scored only by V1, champion then: its row stays after V2's promotion
    b = get(client, "/v1/predictions/churn/b")
    assert (b["model_version"], b["partition_date"], b["score"]) == (V1, "2026-10-01", 0.2)
    assert body["by_champion"] is True and b["by_champion"] is False  # an earlier champion's
    other = get(client, "/v1/predictions/deliveries/a")  # datasets are kept apart
    assert (other["model_version"], other["score"], other["label"]) == (V4, 42.0, 1)


def test_not_found_is_404_with_a_json_error(client: TestClient) -> None:
    r = client.get("/v1/predictions/churn/nobody")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    assert r.json()["detail"] == "no prediction of 'nobody' in 'churn'"
    # A dataset that does not exist is not an entity without a prediction.
    unknown = (
        "unknown dataset 'nodataset': no model is registered for it (datasets: churn, deliveries)"
    )
    r = client.get("/v1/predictions/nodataset/a")
    assert r.status_code == 404 and r.json()["detail"] == unknown
    r = client.post("/v1/predictions/nodataset:batch", json={"entity_ids": ["a"]})
    assert r.status_code == 404 and r.json()["detail"] == unknown
    r = client.get("/v1/predictions/churn/a", params={"date": "2026-09-30"})
    assert r.status_code == 404 and "in 'churn' on 2026-09-30" in r.json()["detail"]
    r = client.get("/v1/predictions/churn/a", params={"model": "abcdef0123456789"})
    assert r.status_code == 404 and "by abcdef0123456789" in r.json()["detail"]


def test_date_gives_that_days_prediction_ranked_as_the_current_one(client: TestClient) -> None:
    on = {d: get(client, "/v1/predictions/churn/a", date=d) for d in ("2026-10-01", "2026-10-02")}
    assert (on["2026-10-01"]["model_version"], on["2026-10-01"]["score"]) == (V1, 0.1)
    # D2: V1 was champion when it scored; V3's shadow prediction of the same day is not it
    assert (on["2026-10-02"]["model_version"], on["2026-10-02"]["score"]) == (V1, 0.3)
    # D3: V2 scored it as champion; V1's later backfill was not by the champion of its time
    d3 = get(client, "/v1/predictions/churn/a", date="2026-10-03")
    assert (d3["model_version"], d3["score"]) == (V2, 0.5)
    # b on D1 by V1, champion then (though not now)
    b = get(client, "/v1/predictions/churn/b", date="2026-10-01")
    assert (b["model_version"], b["score"]) == (V1, 0.2)


def test_model_gives_that_versions_newest_or_that_day(client: TestClient) -> None:
    newest_v1 = get(client, "/v1/predictions/churn/a", model=V1)
    assert (newest_v1["partition_date"], newest_v1["score"]) == ("2026-10-03", 0.7)
    shadow = get(client, "/v1/predictions/churn/a", model=V3.upper())  # hex, any case
    assert (shadow["model_version"], shadow["score"]) == (V3, 0.9)
    day = get(client, "/v1/predictions/churn/a", model=V1, date="2026-10-02")
    assert (day["partition_date"], day["score"]) == ("2026-10-02", 0.3)
    r = client.get("/v1/predictions/churn/a", params={"model": V3, "date": "2026-10-01"})
    assert r.status_code == 404
    # a model of another dataset finds nothing here
    assert client.get("/v1/predictions/churn/a", params={"model": V4}).status_code == 404


@pytest.mark.parametrize(
    ("path", "params", "where"),
    [
        ("/v1/predictions/churn/a", {"date": "20261003"}, "date"),
        ("/v1/predictions/churn/a", {"date": "2026-10-03T00:00"}, "date"),
        ("/v1/predictions/churn/a", {"date": "0"}, "date"),
        ("/v1/predictions/churn/a", {"date": "2026-02-30"}, "date"),
        ("/v1/predictions/churn/a", {"model": "champion"}, "model"),
        ("/v1/predictions/churn/a", {"model": "abc"}, "model"),
        ("/v1/predictions/churn/a", {"model": "1" * 65}, "model"),
        ("/v1/predictions/churn/" + "x" * 257, {}, "entity_id"),
        ("/v1/predictions/churn/a%00b", {}, "entity_id"),
        ("/v1/predictions/bad name/a", {}, "dataset"),
        ("/v1/predictions/" + "d" * 65 + "/a", {}, "dataset"),
    ],
)
def test_bad_input_is_422(sqlite_client: TestClient, path: str, params: dict, where: str):
    r = sqlite_client.get(path, params=params)
    assert r.status_code == 422, r.text
    assert where in {str(part) for e in r.json()["detail"] for part in e["loc"]}


# --- batch --------------------------------------------------------------------------------------


def test_batch_returns_found_and_missing_in_one_query(client: TestClient) -> None:
    store = client.app.state.store  # type: ignore[attr-defined]
    get(client, "/v1/predictions/churn/a")  # the pool's first connection and its setup
    statements: list[str] = []  # each Store._rows call executes exactly one statement
    run_one = store._rows
    store._rows = lambda name, params: statements.append(name) or run_one(name, params)
    r = client.post("/v1/predictions/churn:batch", json={"entity_ids": ["zz", "a", "b", "a"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [p["entity_id"] for p in body["predictions"]] == ["a", "b"]
    assert [p["model_version"] for p in body["predictions"]] == [V2, V1]
    assert body["missing"] == ["zz"]  # unique, in the order asked
    assert statements == ["batch"]
    ids = [f"id{i}" for i in range(api.MAX_BATCH - 1)] + ["a"]
    r = client.post("/v1/predictions/churn/batch", json={"entity_ids": ids})
    assert r.status_code == 200
    assert len(r.json()["missing"]) == api.MAX_BATCH - 1 and statements == ["batch", "batch"]


@pytest.mark.parametrize(
    "body",
    [
        {"entity_ids": []},
        {"entity_ids": [f"id{i}" for i in range(api.MAX_BATCH + 1)]},
        {"entity_ids": ["a"], "extra": 1},
        {"entity_ids": ["x" * 257]},
        {"entity_ids": "a"},
        {},
    ],
)
def test_bad_batch_is_422(sqlite_client: TestClient, body: dict) -> None:
    assert sqlite_client.post("/v1/predictions/churn:batch", json=body).status_code == 422


# --- auth and rate limit ------------------------------------------------------------------------


def test_no_key_or_a_wrong_key_is_401(sqlite_seeded: sa.Engine) -> None:
    with make_client(sqlite_seeded) as c:
        for headers in (
            {},
            {"X-API-Key": "wrong-key-000000000000"},
            {"Authorization": "Bearer wrong-key-000000000000"},
            {"Authorization": f"Basic {KEY}"},
            {"X-API-Key": KEY[:-1]},
        ):
            r = c.get("/v1/predictions/churn/a", headers=headers)
            assert r.status_code == 401, headers
            assert r.json() == {"detail": "missing or invalid API key"}
            assert r.headers["WWW-Authenticate"] == "Bearer"
            r = c.post("/v1/predictions/churn:batch", json={"entity_ids": ["a"]}, headers=headers)
            assert r.status_code == 401
        for headers in ({"X-API-Key": KEY2}, {"Authorization": f"Bearer {KEY}"}):
            assert c.get("/v1/predictions/churn/a", headers=headers).status_code == 200


def test_no_keys_refuses_to_start_unless_insecure(
    sqlite_seeded: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(api.API_KEYS_ENV, raising=False)
    with pytest.raises(api.ConfigError, match="no API keys"):
        api.create_app(sqlite_seeded)
    monkeypatch.setenv(api.API_KEYS_ENV, " , ")
    with pytest.raises(api.ConfigError, match="no API keys"):
        api.create_app(sqlite_seeded)
    monkeypatch.setenv(api.API_KEYS_ENV, f"{KEY},short")
    with pytest.raises(api.ConfigError, match="key #2 is shorter than 16"):
        api.create_app(sqlite_seeded)
    monkeypatch.setenv(api.API_KEYS_ENV, f" {KEY} ,{KEY2}")
    monkeypatch.setenv(api.API_RATE_ENV, "fast")
    with pytest.raises(api.ConfigError, match="is not a number"):
        api.create_app(sqlite_seeded)
    monkeypatch.setenv(api.API_RATE_ENV, "5")
    cfg = api.ApiConfig.from_env()
    assert (cfg.keys, cfg.rate, cfg.burst) == ((KEY, KEY2), 5.0, 10)
    monkeypatch.delenv(api.API_KEYS_ENV)
    with TestClient(api.create_app(sqlite_seeded, insecure_no_auth=True)) as c:
        assert c.get("/v1/predictions/churn/a").status_code == 200


def _asgi(app: Any, method: str, path: str, headers: dict[str, str], query: bytes = b""):
    """One request straight through the ASGI app; returns (status, body, whether the body
    was read): receive fails the test if the app asks for the body."""
    asked: list[bool] = []
    sent: list[dict] = []

    async def receive() -> dict:
        asked.append(True)
        return {"type": "http.request", "body": b'{"entity_ids": ["a"]}', "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": query, "client": ("10.0.0.7", 5000), "server": ("test", 80),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }  # fmt: skip
    import asyncio

    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body, bool(asked), scope


def test_a_wrong_key_is_refused_before_the_body_is_read(sqlite_seeded: sa.Engine) -> None:
    """200 MB with a wrong key used to be read whole before its 401."""
    app = api.create_app(sqlite_seeded, api_config=api.ApiConfig(keys=(KEY,), rate=0.0))
    big = {"X-API-Key": "wrong-key-000000000000", "content-length": str(200 * 2**20)}
    status, _, read, _ = _asgi(app, "POST", "/v1/predictions/churn:batch", big)
    assert (status, read) == (401, False)
    status, body, read, _ = _asgi(
        app, "POST", "/v1/predictions/churn:batch", {**big, "X-API-Key": KEY}
    )
    assert (status, read) == (413, False) and b"over 524288 bytes" in body
    ok = {"X-API-Key": KEY, "content-length": "20", "content-type": "application/json"}
    assert _asgi(app, "POST", "/v1/predictions/churn:batch", ok)[0] == 200


def test_a_key_in_the_query_string_is_refused_and_never_logged(sqlite_seeded: sa.Engine) -> None:
    app = api.create_app(sqlite_seeded, api_config=api.ApiConfig(keys=(KEY,), rate=0.0))
    status, _, _, scope = _asgi(
        app, "GET", "/v1/predictions/churn/a", {}, query=f"date=2026-10-01&api_key={KEY}".encode()
    )
    assert status == 401
    assert scope["query_string"] == b"date=2026-10-01&api_key=***"  # what uvicorn's log writes


def test_repeated_failed_keys_are_slowed(sqlite_seeded: sa.Engine) -> None:
    app = api.create_app(sqlite_seeded, api_config=api.ApiConfig(keys=(KEY,), rate=0.0))
    wrong = {"X-API-Key": "wrong-key-000000000000"}
    statuses = [_asgi(app, "GET", "/v1/predictions/churn/a", wrong)[0] for _ in range(12)]
    assert statuses[: api.FAILED_BURST] == [401] * api.FAILED_BURST
    assert statuses[api.FAILED_BURST :] == [429, 429]
    assert _asgi(app, "GET", "/v1/predictions/churn/a", {"X-API-Key": KEY})[0] == 200


def test_a_422_echoes_little_and_bad_unicode_is_422(sqlite_client: TestClient) -> None:
    r = sqlite_client.post("/v1/predictions/churn:batch", json={"entity_ids": ["x" * 300_000]})
    assert r.status_code == 422 and len(r.content) < 1000
    assert "(300,000 characters)" in r.text
    r = sqlite_client.post(
        "/v1/predictions/churn:batch",
        content=b'{"entity_ids": ["\\ud800"]}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422 and "unicode" in r.text and "\\\\ud800" in r.text


def test_past_the_rate_limit_is_429_with_retry_after(sqlite_seeded: sa.Engine) -> None:
    with make_client(sqlite_seeded, rate=0.5, burst=3) as c:
        codes = [
            c.get("/v1/predictions/churn/a", headers={"X-API-Key": KEY}).status_code
            for _ in range(4)
        ]
        assert codes == [200, 200, 200, 429]
        r = c.post(
            "/v1/predictions/churn:batch", json={"entity_ids": ["a"]}, headers={"X-API-Key": KEY}
        )
        assert r.status_code == 429 and r.headers["Retry-After"] == "2"
        assert "rate limit" in r.json()["detail"]
        # per key: the other key has its own bucket; health is never limited
        assert c.get("/v1/predictions/churn/a", headers={"X-API-Key": KEY2}).status_code == 200
        assert c.get("/healthz").status_code == 200


def test_token_bucket_refills_at_the_rate() -> None:
    now = [0.0]
    bucket = api.TokenBucket(rate=2.0, burst=2, clock=lambda: now[0])
    assert [bucket.take("k") for _ in range(2)] == [0.0, 0.0]
    assert bucket.take("k") == pytest.approx(0.5)
    now[0] = 0.5
    assert bucket.take("k") == 0.0 and bucket.take("k") > 0
    now[0] = 100.0  # saved tokens are capped at the burst
    assert [bucket.take("k") == 0.0 for _ in range(3)] == [True, True, False]
    assert api.TokenBucket(rate=0, burst=1).take("k") == 0.0  # 0: no limit


# --- docs, health, read-only --------------------------------------------------------------------


def test_openapi_and_docs_are_served_without_a_key(sqlite_seeded: sa.Engine) -> None:
    with make_client(sqlite_seeded) as c:
        spec = c.get("/openapi.json").json()
        assert set(spec["paths"]) == {
            "/v1/predictions/{dataset}/{entity_id}",
            "/v1/predictions/{dataset}:batch",
            "/healthz",
        }
        lookup = spec["paths"]["/v1/predictions/{dataset}/{entity_id}"]["get"]
        assert {"200", "401", "404", "422", "429"} <= set(lookup["responses"])
        assert {p["name"] for p in lookup["parameters"]} >= {"dataset", "entity_id", "date"}
        schemes = spec["components"]["securitySchemes"]
        assert {s["type"] for s in schemes.values()} == {"apiKey", "http"}
        docs = c.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_healthz_checks_the_database(seeded: sa.Engine, tmp_path: Path) -> None:
    with make_client(seeded) as c:
        r = c.get("/healthz")
        assert r.status_code == 200 and r.json() == {"status": "ok", "database": "ok"}
    missing = f"sqlite:///{tmp_path}/absent/none.db"
    with TestClient(api.create_app(missing, api_config=api.ApiConfig(keys=(KEY,)))) as c:
        r = c.get("/healthz")
        assert r.status_code == 503 and r.json() == {"status": "unavailable", "database": "error"}
        r = c.get("/v1/predictions/churn/a", headers={"X-API-Key": KEY})
        assert r.status_code == 503 and r.json() == {"detail": "database unavailable"}


def test_the_apis_connections_cannot_write(client: TestClient) -> None:
    engine = client.app.state.store.engine  # type: ignore[attr-defined]
    with pytest.raises(sa.exc.DBAPIError, match="(?i)read-?only"), engine.connect() as conn:
        conn.exec_driver_sql("DELETE FROM predictions_latest")
        conn.commit()
    assert get(client, "/v1/predictions/churn/a")["model_version"] == V2


def test_an_in_memory_database_is_refused() -> None:
    with pytest.raises(api.ConfigError, match="SQLite file"):
        api.readonly_engine("sqlite://")


# --- the command --------------------------------------------------------------------------------


def test_cli_api_refuses_to_start_without_keys(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import uvicorn

    monkeypatch.setenv("BATCHPRED_DATABASE_URL", f"sqlite:///{tmp_path}/none.db")
    monkeypatch.delenv(api.API_KEYS_ENV, raising=False)
    started: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.append({"app": app, **kw}))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["api"])
    assert "no API keys" in str(exit_.value) and "--insecure-no-auth" in str(exit_.value)
    assert started == []
    cli.main(["api", "--insecure-no-auth", "--host", "0.0.0.0", "--port", "8123"])
    assert started[0]["host"] == "0.0.0.0" and started[0]["port"] == 8123
    monkeypatch.setenv(api.API_KEYS_ENV, KEY)
    cli.main(["api", "--workers", "2"])
    assert started[1]["app"] == "batchpred.api:app_from_env" and started[1]["workers"] == 2
    assert {s["http"] for s in started} == {"batchpred.api:NoDelayHTTPProtocol"}


def test_the_http_protocol_sets_tcp_nodelay(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn --workers N leaves Nagle on (Kludex/uvicorn#3149): ours turns it off."""
    protocol = api.NoDelayHTTPProtocol
    monkeypatch.setattr(protocol.__mro__[1], "connection_made", lambda self, transport: None)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname()[:2])
        accepted, _ = listener.accept()
        with client, accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
            transport = SimpleNamespace(get_extra_info=lambda name: accepted)
            protocol.connection_made(object.__new__(protocol), transport)
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


@pytest.mark.postgres
def test_a_connection_the_server_dropped_is_replaced(pg_url: str) -> None:
    engine = db.create_engine(pg_url)
    seed(engine)
    with make_client(engine) as c:
        c.headers["X-API-Key"] = KEY
        assert get(c, "/v1/predictions/churn/a")["model_version"] == V2  # pools a connection
        with engine.connect() as conn:  # a restart, a failover: the server ends its sessions
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        assert get(c, "/v1/predictions/churn/a")["model_version"] == V2
    engine.dispose()
