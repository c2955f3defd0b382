"""The nightly on data shaped like real data: the day to score has no label yet, some outcomes
are never known, labels arrive a few days later in their own source, a challenger scores in
shadow, and realised performance is measured once labels are in."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from batchpred import config, demo, ingestion, storage
from flows.ingest import ingest
from flows.nightly import nightly

pytestmark = pytest.mark.slow


def _rows(sql: str, **params: object) -> list[sa.Row]:
    engine = sa.create_engine(config.database_url())
    with engine.connect() as conn:
        return list(conn.execute(sa.text(sql), params))


def _write_late_labels(settings: config.Settings, days: list, url: str) -> None:
    """What the upstream system sends a few days later: the outcome of each entity."""
    spec = settings.dataset
    labelled = settings.demo.model_copy(update={"unlabelled_days": 0})
    for day in days:
        table = demo.generate_day(spec, labelled, day)
        storage.write_partition(url, day, table.select([spec.entity_id, spec.target.name]))


def test_unlabelled_days_are_scored_null_labels_excluded_and_late_labels_measured(workspace):
    overrides = {
        "demo": {"days": 9, "rows_per_day": 400, "unlabelled_days": 2, "null_label_fraction": 0.05}
    }
    files = workspace("churn", **overrides)
    settings = config.load_settings(files)
    demo.write_demo_source(settings.dataset, settings.demo, settings.source.url)
    last = settings.demo.start_date + timedelta(days=settings.demo.days - 1)
    unlabelled = [last - timedelta(days=1), last]

    first = nightly(config_files=files)

    # The newest day has no label column: it is ingested, validated and scored.
    assert first["day"] == last
    (scored,) = first["scored"]
    assert scored.status == "scored" and scored.rows_scored == 400
    # Training took the newest labelled days, never the two unlabelled ones, and left the
    # null-label rows out with a count.
    prepared = json.loads(Path("data/train/churn/data/prepare.json").read_text())
    assert not {d.isoformat() for d in unlabelled} & set(prepared["days"])
    assert len(prepared["days"]) == settings.training.window_days
    assert {e["reason"] for e in prepared["excluded"]} == {"no labels yet"}
    assert 0 < prepared["unlabelled_rows"] < 0.1 * 400 * len(prepared["days"])
    assert sum(prepared["rows"].values()) + prepared["unlabelled_rows"] == 400 * len(
        prepared["days"]
    )
    # Nothing to measure yet: the scored day's outcome is unknown.
    assert first["realised"] == []

    # A week later the labels of the two unlabelled days arrive in their own source.
    labels_url = str(Path("data/labels-source/churn").resolve())
    _write_late_labels(settings, unlabelled, labels_url)
    files = workspace("churn", **overrides, labels={"url": labels_url})
    # Realised metrics and outcomes come where labels land: an ingest alone measures them.
    ingest(config_files=files)
    late = storage.read_partition(labels_url, last).column(settings.dataset.target.name)
    known = len(late) - late.null_count  # outcomes that are never known stay out
    assert 0 < late.null_count < 40
    assert [tuple(r) for r in _rows("select model_version, rows from realised_metrics")] == [
        (scored.model_version, known)
    ]
    outcome_rows = _rows("select partition_date, count(*) as n from outcomes group by 1")
    assert [(str(r.partition_date), r.n) for r in outcome_rows] == [(str(last), known)]
    second = nightly(day=last, config_files=files)

    # The days with late labels now count as labelled: the window moved forward, and the
    # retrained champion scored the day too (its own rows).
    prepared = json.loads(Path("data/train/churn/data/prepare.json").read_text())
    assert {d.isoformat() for d in unlabelled} <= set(prepared["days"])
    new = second["model"]["version"]
    assert second["scored"][0].model_version == new != scored.model_version
    # Every model that scored the day is measured on its real outcomes.
    realised = {(r["partition_date"], r["model_version"]): r for r in second["realised"]}
    assert set(realised) == {(last, scored.model_version), (last, new)}
    for measured in realised.values():
        assert measured["rows"] == measured["metrics"]["rows"] == known
        assert 0.6 < measured["metrics"]["auc"] <= 1.0
    stored = _rows("select partition_date, rows from realised_metrics")
    assert len(stored) == 2 and {r.rows for r in stored} == {known}

    # Nothing new: realised metrics are not computed again.
    before = _rows("select model_version, computed_at from realised_metrics order by 1")
    third = nightly(day=last, config_files=files)
    assert third["model"]["decision"] == "unchanged"
    assert _rows("select model_version, computed_at from realised_metrics order by 1") == before


def test_shadow_challenger_scores_the_same_day_in_its_own_rows(workspace):
    files = workspace("churn", demo={"days": 8, "rows_per_day": 400, "unlabelled_days": 1})
    settings = config.load_settings(files)
    demo.write_demo_source(settings.dataset, settings.demo, settings.source.url)
    first = nightly(config_files=files)
    champion = first["model"]["version"]

    # A retrained model that cannot pass the gate stays challenger; in shadow it scores too.
    files = workspace(
        "churn",
        demo={"days": 8, "rows_per_day": 400, "unlabelled_days": 1},
        training={"seed": 1, "gate": {"min_metric": 0.999}},
        scoring={"shadow": True},
    )
    second = nightly(config_files=files)
    challenger = second["model"]["version"]
    assert second["model"]["decision"] == "rejected" and challenger != champion
    versions = {r.model_version: r for r in second["scored"]}
    assert set(versions) == {champion, challenger}
    counts = dict(_rows("select model_version, count(*) from predictions group by model_version"))
    assert counts == {champion: 400, challenger: 400}
    # Analysts' champion view shows only the champion's rows.
    (only,) = _rows("select distinct model_version from predictions_latest")
    assert only[0] == champion


def test_a_night_with_nothing_new_reads_no_lake_data(workspace, monkeypatch):
    """Ingest, verdicts, the training window, the ledger, drift and realised performance all
    answer from listings, manifests and the database when nothing changed."""
    files = workspace("churn", demo={"days": 8, "rows_per_day": 400, "unlabelled_days": 1})
    settings = config.load_settings(files)
    demo.write_demo_source(settings.dataset, settings.demo, settings.source.url)
    nightly(config_files=files)

    reads: list[str] = []
    read_files, iter_file_batches = storage.read_files, storage.iter_file_batches

    def counting_read(urls, *args, **kwargs):
        reads.extend(urls)
        return read_files(urls, *args, **kwargs)

    def counting_iter(url, *args, **kwargs):
        reads.append(url)
        return iter_file_batches(url, *args, **kwargs)

    pulls: list[object] = []  # one task run per pulled day: none when nothing changed
    monkeypatch.setattr(storage, "read_files", counting_read)
    monkeypatch.setattr(storage, "iter_file_batches", counting_iter)
    monkeypatch.setattr(ingestion, "ingest_partition", lambda s, day: pulls.append(day))
    again = nightly(config_files=files)
    assert again["model"]["decision"] == "unchanged"
    assert [r.status for r in again["scored"]] == ["skipped"]
    assert reads == [] and pulls == []


def _sql_table(url: str, name: str, rows: list[dict]) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        columns = list(rows[0])
        conn.execute(sa.text(f"create table if not exists {name} ({', '.join(columns)})"))
        conn.execute(
            sa.text(f"insert into {name} values ({', '.join(':' + c for c in columns)})"), rows
        )
    engine.dispose()


def test_a_sql_source_runs_nightly_with_its_labels_arriving_later_by_query(workspace, monkeypatch):
    """A dataset served from a SQL database: the nightly lists its days by source.days_query,
    the newest days arrive without labels, which come later through labels.query; the next
    night trains on them and measures the scored day (realised metrics and outcomes)."""
    files = workspace("churn", demo={"days": 9, "rows_per_day": 300})
    settings = config.load_settings(files)
    spec, target = settings.dataset, settings.dataset.target.name
    url = f"sqlite:///{Path('data/source.db').resolve()}"
    Path("data").mkdir(exist_ok=True)
    monkeypatch.setenv("TEST_SOURCE_DB", url)
    days = [settings.demo.start_date + timedelta(days=i) for i in range(9)]
    unlabelled, last = days[-2:], days[-1]
    truth: dict = {}
    for day in days:
        rows = demo.generate_day(spec, settings.demo, day).to_pylist()
        if day in unlabelled:  # the outcome is not known yet: the column is null
            truth[day] = [{"id": r[spec.entity_id], "outcome": r[target], "dt": day} for r in rows]
            rows = [{**r, target: None} for r in rows]
        _sql_table(url, "events", rows)
    source = {
        "kind": "sql",
        "url_env": "TEST_SOURCE_DB",
        "query": f"select * from events where {spec.event_date} = :dt",
        "days_query": f"select {spec.event_date}, count(*) from events group by 1",
    }
    files = workspace("churn", demo={"days": 9, "rows_per_day": 300}, source=source)

    first = nightly(config_files=files)
    assert first["day"] == last and first["scored"][0].rows_scored == 300
    prepared = json.loads(Path("data/train/churn/data/prepare.json").read_text())
    assert not {str(d) for d in unlabelled} & set(prepared["days"])
    assert first["realised"] == []

    # The outcomes arrive in a table of their own.
    _sql_table(url, "outcomes", [r for day in unlabelled for r in truth[day]])
    labels = {
        "url_env": "TEST_SOURCE_DB",
        "query": f"select id as {spec.entity_id}, outcome as {target} from outcomes where dt = :dt",
        "days_query": "select dt, count(*) from outcomes group by dt",
    }
    files = workspace("churn", demo={"days": 9, "rows_per_day": 300}, source=source, labels=labels)
    second = nightly(day=last, config_files=files)
    prepared = json.loads(Path("data/train/churn/data/prepare.json").read_text())
    assert {str(d) for d in unlabelled} <= set(prepared["days"])  # trained on them now
    champion = first["scored"][0].model_version
    measured = {(r["partition_date"], r["model_version"]): r for r in second["realised"]}
    assert measured[(last, champion)]["rows"] == 300
    assert 0.6 < measured[(last, champion)]["metrics"]["auc"] <= 1.0
    (n,) = _rows("select count(*) from outcomes where partition_date = :d", d=str(last))[0]
    assert n == 300
    # Nothing changed upstream: the third night reads no SQL day again.
    plan = ingestion.plan(config.load_settings(files), days, unlabelled)
    assert plan.to_pull == [] and plan.labels_to_pull == []
