"""One answer to "entity E's current prediction" on every surface: the CLI (`predictions lookup
--json`), the API and the table `predictions_latest`, played through one scenario on SQLite and
PostgreSQL: score; re-score a day from an input whose entities changed; promote a second
model; the new champion scores the day; roll back. After each step the three agree for every
entity, the cache equals its definition, and no cache row points at a missing prediction."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa

from batchpred import cli, db, predictions, registry, sinks
from tests.unit.test_api import KEY, make_client, register, score

ROOT = Path(__file__).resolve().parents[2]
CHURN = ["--config", str(ROOT / "configs/base.yaml")]
CHURN += ["--config", str(ROOT / "configs/datasets/churn.yaml")]
V1, V2 = "a1a1a1a1a1a1a1a1", "b2b2b2b2b2b2b2b2"
D0, D1, D2 = date(2026, 9, 30), date(2026, 10, 1), date(2026, 10, 2)
ENTITIES = ["a", "b", "c", "d", "e", "f"]


def rescore(engine: sa.Engine, day: date, version: str, scores: dict) -> None:
    """The day written again from a changed input (a new fingerprint), as scoring does."""
    key = sinks.PartitionKey("churn", day, version)
    values = np.array(list(scores.values()), dtype=float)
    with sinks.partition_writer(engine, key, f"rerun-{day}", fingerprint="fp2") as out:
        out.write(sinks.PredictionBatch(pa.array(list(scores), pa.string()), values, None))
        out.finish(sinks.LedgerEntry("fp2", len(scores), 0, datetime.now(UTC)))


def _promote(engine: sa.Engine, version: str) -> None:
    registry.promote(engine, "churn", version, "test", by="test")


def _rollback(engine: sa.Engine, version: str) -> None:
    registry.rollback(engine, "churn", "bad", by="test")


# Each step and what entity -> (day, model) must be current after it (None: no prediction).
STEPS = [
    (
        "V1 scores D1 and D2",
        lambda e: (
            score(e, "churn", D1, V1, {"a": 0.1, "b": 0.2, "c": 0.3}),
            score(e, "churn", D2, V1, {"a": 0.4, "b": 0.5}),
        ),
        {"a": (D2, V1), "b": (D2, V1), "c": (D1, V1), "d": None, "e": None, "f": None},
    ),
    (
        "V1 scores D0, older than both (as a newest-first run does): only f is new",
        lambda e: score(e, "churn", D0, V1, {"a": 0.05, "c": 0.06, "f": 0.07}),
        {"a": (D2, V1), "b": (D2, V1), "c": (D1, V1), "d": None, "e": None, "f": (D0, V1)},
    ),
    (
        "D2 re-scored from a changed input: b gone, d new",
        lambda e: rescore(e, D2, V1, {"a": 0.45, "d": 0.6}),
        {"a": (D2, V1), "b": (D1, V1), "c": (D1, V1), "d": (D2, V1), "e": None, "f": (D0, V1)},
    ),
    (
        "V2 promoted, has scored nothing: V1's answers stand, by an earlier champion",
        lambda e: _promote(e, V2),
        {"a": (D2, V1), "b": (D1, V1), "c": (D1, V1), "d": (D2, V1), "e": None, "f": (D0, V1)},
    ),
    (
        "V2 scores D1 (older than V1's D2): the champion's own prediction wins",
        lambda e: score(e, "churn", D1, V2, {"a": 0.7, "e": 0.8}),
        {"a": (D1, V2), "b": (D1, V1), "c": (D1, V1), "d": (D2, V1), "e": (D1, V2), "f": (D0, V1)},
    ),
    (
        "rolled back to V1: V1's where it scored, V2's (an earlier champion now) elsewhere",
        lambda e: _rollback(e, V1),
        {"a": (D2, V1), "b": (D1, V1), "c": (D1, V1), "d": (D2, V1), "e": (D1, V2), "f": (D0, V1)},
    ),
]


# PostgreSQL refreshes the cache by one of two plans, chosen by the cache's size against the
# partition's (predictions.PROBE_ABOVE): each is played through every scenario here.
PLANS = {"scan": 10**12, "probe": -1}


@pytest.fixture(
    params=["sqlite", *(pytest.param(f"postgresql-{p}", marks=pytest.mark.postgres) for p in PLANS)]
)
def url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/truth.db"
    monkeypatch.setattr(predictions, "PROBE_ABOVE", PLANS[request.param.split("-")[1]])
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def engine(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[sa.Engine]:
    monkeypatch.setenv("BATCHPRED_DATABASE_URL", url)
    eng = db.create_engine(url)
    db.migrate(eng)
    register(eng, V1, "churn")
    register(eng, V2, "churn")
    registry.set_alias(eng, "churn", "champion", V1, "first", by="test")
    yield eng
    eng.dispose()


def cli_answer(entity: str, capsys: pytest.CaptureFixture[str]) -> dict | None:
    capsys.readouterr()
    try:
        cli.main(["predictions", "lookup", entity, "--json", *CHURN])
    except SystemExit as exit_:
        assert "no prediction" in str(exit_.code), exit_.code
        return None
    return json.loads(capsys.readouterr().out)


def table_answer(engine: sa.Engine, entity: str) -> dict | None:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT partition_date, model_version, score FROM predictions_latest "
                "WHERE dataset = 'churn' AND entity_id = :e"
            ),
            {"e": entity},
        ).first()
    if row is None:
        return None
    return {"partition_date": str(row[0]), "model_version": row[1], "score": row[2]}


def test_cli_api_and_table_tell_one_truth_at_every_step(
    engine: sa.Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    with make_client(engine) as client:
        client.headers["X-API-Key"] = KEY
        for name, step, expected in STEPS:
            step(engine)
            with engine.connect() as conn:
                assert predictions.latest_mismatches(conn, "churn") == [], name
                dangling = conn.execute(
                    sa.text(
                        "SELECT count(*) FROM predictions_latest l WHERE NOT EXISTS (SELECT 1 "
                        "FROM predictions p WHERE p.dataset = l.dataset AND p.entity_id = "
                        "l.entity_id AND p.partition_date = l.partition_date AND "
                        "p.model_version = l.model_version)"
                    )
                ).scalar()
            assert dangling == 0, name
            champion = registry.get_alias(engine, "churn", "champion")
            for entity in ENTITIES:
                want = expected[entity]
                from_cli = cli_answer(entity, capsys)
                response = client.get(f"/v1/predictions/churn/{entity}")
                from_table = table_answer(engine, entity)
                if want is None:
                    assert from_cli is None and from_table is None, (name, entity)
                    assert response.status_code == 404, (name, entity)
                    continue
                from_api = response.json()
                day, version = want
                for answer in (from_cli, from_api, from_table):
                    assert answer is not None, (name, entity)
                    assert (answer["partition_date"], answer["model_version"]) == (
                        str(day),
                        version,
                    ), (name, entity, answer)
                assert from_cli["score"] == from_api["score"] == from_table["score"]
                assert from_cli == {k: from_api[k] for k in from_cli}, (name, entity)
                assert from_cli["by_champion"] is (version == champion), (name, entity)
                # "on day D" is the same ranking: the CLI and the API agree on each day.
                for d in (D1, D2):
                    on_day = client.get(f"/v1/predictions/churn/{entity}", params={"date": str(d)})
                    capsys.readouterr()
                    try:
                        cli.main(
                            ["predictions", "lookup", entity, "--day", str(d), "--json", *CHURN]
                        )
                        cli_day = json.loads(capsys.readouterr().out)
                    except SystemExit:
                        cli_day = None
                    if cli_day is None:
                        assert on_day.status_code == 404, (name, entity, d)
                    else:
                        assert on_day.json()["model_version"] == cli_day["model_version"]
                        assert on_day.json()["score"] == cli_day["score"]


def test_datasets_sharing_entity_ids_keep_their_own_current_rows(engine: sa.Engine) -> None:
    """Two datasets score the same entity ids on overlapping days, one re-scored: each
    dataset's cache rows come from its own predictions and equal its definition. A refresh
    joins the cache rows of the dataset it writes, never another's (were `other`'s newer rows
    taken for churn's, churn's older day would lose and churn's entities go missing)."""
    v3 = "c3c3c3c3c3c3c3c3"
    register(engine, v3, "other")
    registry.set_alias(engine, "other", "champion", v3, "first", by="test")
    score(engine, "other", D2, v3, {"a": 0.9, "b": 0.8, "c": 0.7})
    score(engine, "churn", D1, V1, {"a": 0.1, "b": 0.2})  # older than other's D2
    rescore(engine, D1, V1, {"a": 0.15})  # churn's b gone; other's b stays
    score(engine, "other", D0, v3, {"a": 0.3, "d": 0.4})  # older: only d is new in other
    with engine.connect() as conn:
        for dataset in ("churn", "other"):
            assert predictions.latest_mismatches(conn, dataset) == [], dataset
        rows = conn.execute(
            sa.text(
                "SELECT dataset, entity_id, partition_date, model_version, score "
                "FROM predictions_latest ORDER BY dataset, entity_id"
            )
        ).all()
    assert [(d, e, str(day), v, s) for d, e, day, v, s in rows] == [
        ("churn", "a", str(D1), V1, 0.15),
        ("other", "a", str(D2), v3, 0.9),
        ("other", "b", str(D2), v3, 0.8),
        ("other", "c", str(D2), v3, 0.7),
        ("other", "d", str(D0), v3, 0.4),
    ]


@pytest.mark.postgres
def test_postgresql_probes_a_dataset_cache_far_larger_than_the_partition(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refresh scans a dataset's cache while it is small against the partition (its first
    runs, even beside another dataset's many rows) and looks each new row up by key once the
    statistics say it holds more than PROBE_ABOVE rows per new row; either way the cache
    ends equal to its definition. The statistics
    come from the writes themselves (analyze_if_stale): nothing else analyses the cache here
    (autovacuum is off on the development machine's PostgreSQL, and lags where it runs)."""
    eng = db.create_engine(pg_url)
    db.migrate(eng)
    register(eng, V1, "churn")
    registry.set_alias(eng, "churn", "champion", V1, "first", by="test")
    plans: list[str] = []
    planner = predictions._planner

    def recorded(conn: sa.Connection, **settings: str):  # type: ignore[no-untyped-def]
        plans.append("probe" if settings == predictions._PROBE else "scan")
        return planner(conn, **settings)

    monkeypatch.setattr(predictions, "_planner", recorded)
    assert predictions.analyze_if_stale(eng, 10_000) is False  # empty: nothing to analyse

    def analyze() -> None:
        with eng.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                "ANALYZE predictions_latest"
            )

    with eng.begin() as conn:  # another dataset's 5,000 cached entities
        conn.exec_driver_sql(
            f"INSERT INTO predictions_latest ({', '.join(predictions.COLUMNS)}) "
            "SELECT 'other', 'o' || i, DATE '2026-01-01', 0.5, 1, 'ffffffffffffffff', 's', now() "
            "FROM generate_series(1, 5000) AS i"
        )
    analyze()
    score(eng, "churn", D0, V1, {f"e{i}": i / 4000 for i in range(2000)})
    # A backend reports its writes to the statistics system within a second of going idle;
    # once reported, the next partition's write finds the cache changed and analyses it.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with eng.connect() as conn:
            changed = conn.exec_driver_sql(
                "SELECT n_mod_since_analyze FROM pg_stat_user_tables "
                "WHERE relid = 'predictions_latest'::regclass"
            ).scalar()
        if changed and changed >= 2000:
            break
        time.sleep(0.2)
    score(eng, "churn", D1, V1, {f"e{i}": 0.5 for i in range(0, 300, 2)})  # 150 rows, 2,000 cached
    score(eng, "churn", D2, V1, {f"e{i}": 0.6 for i in range(1000)})  # 1,000 rows: 2x, scans
    assert plans == ["scan", "probe", "scan"]
    with eng.connect() as conn:
        assert predictions.latest_mismatches(conn, "churn") == []
        current = dict(
            conn.execute(
                sa.text(
                    "SELECT partition_date, count(*) FROM predictions_latest "
                    "WHERE dataset = 'churn' GROUP BY 1"
                )
            ).all()
        )
    assert current == {D2: 1000, D0: 1000}
    eng.dispose()


@pytest.mark.postgres
def test_postgresql_refresh_work_mem_follows_the_partition(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partition's refresh runs with work_mem sized to its rows (predictions._work_mem:
    a 1,250,000-row partition's hash spilled with the 125,000-row size), within
    WORK_MEM_MB, for its transaction only. The bytes a row are raised here so that small
    partitions reach the sizes large ones get."""
    eng = db.create_engine(pg_url)
    db.migrate(eng)
    register(eng, V1, "churn")
    registry.set_alias(eng, "churn", "champion", V1, "first", by="test")
    monkeypatch.setattr(predictions, "WORK_MEM_PER_ROW", 2**18)  # 4 rows a megabyte
    seen: list[str] = []
    planner = predictions._planner

    def recorded(conn: sa.Connection, **settings: str):  # type: ignore[no-untyped-def]
        seen.append(conn.exec_driver_sql("SHOW work_mem").scalar())
        return planner(conn, **settings)

    monkeypatch.setattr(predictions, "_planner", recorded)
    score(eng, "churn", D0, V1, {f"e{i}": 0.1 for i in range(10)})  # 3 MB: the floor
    score(eng, "churn", D1, V1, {f"e{i}": 0.2 for i in range(200)})  # 50 MB
    score(eng, "churn", D2, V1, {f"e{i}": 0.3 for i in range(2000)})  # 500 MB: the cap
    assert seen == ["32MB", "50MB", "256MB"]
    with eng.connect() as conn:
        assert conn.exec_driver_sql("SHOW work_mem").scalar() not in seen  # SET LOCAL only
        assert predictions.latest_mismatches(conn, "churn") == []
    eng.dispose()
