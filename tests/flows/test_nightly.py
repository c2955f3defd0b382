"""Whole flows under Prefect: nightly end to end, reruns, a second dataset, bad partitions."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from prefect import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterTags,
)
from prefect.client.schemas.sorting import FlowRunSort

from batchpred import config, demo, monitoring, outcomes, storage
from flows.ingest import InvalidPartitions, ingest
from flows.nightly import nightly
from flows.score import score
from tasks import reporting

pytestmark = pytest.mark.slow


def _count(sql: str, **params: object) -> int:
    engine = sa.create_engine(config.database_url())
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar_one()


def _write_source(files: list[str]) -> config.Settings:
    settings = config.load_settings(files)
    demo.write_demo_source(settings.dataset, settings.demo, settings.source.url)
    return settings


def test_nightly_twice_lands_each_row_once(workspace):
    files = workspace("churn")
    settings = _write_source(files)
    last = settings.demo.start_date + timedelta(days=settings.demo.days - 1)

    first = nightly(config_files=files)
    assert first["day"] == last
    with get_client(sync_client=True) as client:  # started without a day: named by its day
        (run,) = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["nightly"])),
            limit=1,
            sort=FlowRunSort.START_TIME_DESC,
        )
    assert run.name == f"nightly-churn-{last}"
    assert first["model"]["decision"] == "promoted"
    assert first["model"]["challenger_metrics"]["auc"] > 0.7
    (scored,) = first["scored"]
    assert scored.status == "scored" and scored.rows_scored == settings.demo.rows_per_day
    rows = _count("select count(*) from predictions")
    assert rows == settings.demo.rows_per_day
    # drift of the scored day (features and scores) against the statistics stored with the model
    measured = {m["feature"] for m in first["drift"]}
    assert measured == {*settings.dataset.feature_names, monitoring.SCORE}
    assert _count("select count(*) from drift_metrics") == len(settings.dataset.features) + 1

    began = datetime.now(UTC)
    with outcomes.entry_point("test"), reporting.flow_entry():  # as `python -m flows.nightly`
        second = nightly(config_files=files)
    # its flow runs (the nightly and its subflows) carry the host and process tags, for the
    # sweep; none of their task runs does (a concurrency-slot round trip per tag and task run)
    ours = {outcomes.host_tag(), outcomes.process_tag()}
    with get_client(sync_client=True) as client:
        runs = [
            r
            for r in client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=sorted(ours)))
            )
            if r.created is not None and r.created >= began
        ]
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[r.id for r in runs]))
        )
    assert len(runs) == 4  # nightly, ingest, train, score
    made = {t.name.rsplit("-", 1)[0] for t in tasks}  # named <task>-<3 hex>
    assert made >= {"plan-partitions", "report-partitions", "report-model", "report-drift"}
    subflow_calls = {r.parent_task_run_id for r in runs}  # a subflow's placeholder task run
    assert [t.name for t in tasks if ours & set(t.tags) and t.id not in subflow_calls] == []
    assert second["model"]["decision"] == "unchanged"
    assert second["scored"][0].status == "skipped"
    assert _count("select count(*) from predictions") == rows
    assert _count("select count(distinct entity_id) from predictions_latest") == rows
    assert _count("select count(*) from scoring_ledger") == 1
    # DVC tracked the run: metrics readable, model hash recorded with the version
    metrics = json.loads(Path("data/train/churn/metrics.json").read_text())
    assert metrics["auc"] == first["model"]["challenger_metrics"]["auc"]
    assert _count("select count(*) from model_versions where dvc_md5 is not null") == 1


def test_second_dataset_runs_from_config_alone(workspace):
    files = workspace("deliveries", training={"max_rows": 150})
    settings = _write_source(files)
    out = nightly(config_files=files)
    assert out["model"]["challenger_metrics"]["primary"] == "neg_rmse"
    # a capped training set is said where the model is reported, never silent
    sampled = out["model"]["training_data"]["trained_on_a_sample"]
    assert "early-stopping rows and " in sampled, sampled  # the refit's three splits
    assert sampled.endswith("holdout rows (training.max_rows 150)"), sampled
    assert out["scored"][0].rows_scored == settings.demo.rows_per_day
    assert (
        _count("select count(*) from predictions where label is null") == settings.demo.rows_per_day
    )
    assert _count("select count(*) from predictions where entity_id like 'del-%'") > 0


def test_bad_partitions_are_rejected_with_reasons_and_never_scored(workspace):
    files = workspace("churn")
    settings = _write_source(files)
    spec, src = settings.dataset, settings.source.url
    days = storage.list_partitions(src)
    missing_day, range_day = days[-1], days[-2]
    dropped = spec.features[-1].name
    for day, change in (
        (missing_day, lambda t: t.drop_columns([dropped])),
        (
            range_day,
            lambda t: t.set_column(
                t.schema.get_field_index(spec.features[0].name),
                spec.features[0].name,
                pc.add(t.column(spec.features[0].name), 10_000),
            ),
        ),
    ):
        path = storage.partition_files(src, day)[0]
        pq.write_table(change(pq.read_table(path)), path)

    with pytest.raises(InvalidPartitions) as err:
        ingest(config_files=files)
    message = str(err.value)
    assert f"dt={missing_day}" in message and repr(dropped) in message
    assert "expect_column_to_exist" in message
    assert f"dt={range_day}" in message and repr(spec.features[0].name) in message
    assert "expect_column_values_to_be_between" in message

    with pytest.raises(InvalidPartitions):
        nightly(config_files=files)  # the newest day is the bad one: trained, not scored
    assert _count("select count(*) from predictions") == 0
    prepared = json.loads(Path("data/train/churn/data/prepare.json").read_text())
    assert {str(missing_day), str(range_day)} <= {e["day"] for e in prepared["excluded"]}
    # the window keeps its span: the two bad days are named missing, not replaced
    assert prepared["missing_days"] == [
        {"day": str(range_day), "reason": "validation failed"},
        {"day": str(missing_day), "reason": "validation failed"},
    ]
    assert len(prepared["days"]) == prepared["window"]["days"] - 2

    # Scoring a bad partition directly is refused too, naming partition, column and rule.
    for day, column, rule in (
        (missing_day, dropped, "expect_column_to_exist"),
        (range_day, spec.features[0].name, "expect_column_values_to_be_between"),
    ):
        with pytest.raises(Exception, match=rf"(?s)dt={day}.*{column}.*{rule}"):
            score(day=day, config_files=files)
    assert _count("select count(*) from predictions") == 0
    assert _count("select count(*) from validation_results where not success") >= 2


def test_backfill_pins_one_model_and_reruns_are_noops(workspace):
    files = workspace("churn")
    settings = _write_source(files)
    trained = nightly(config_files=files)["model"]["version"]
    start, end = settings.demo.start_date, settings.demo.start_date + timedelta(days=3)
    results = score(start=start, end=end, model=trained, config_files=files)
    assert [r.partition_date for r in results] == [start + timedelta(days=i) for i in range(4)]
    assert {r.model_version for r in results} == {trained}
    total = _count("select count(*) from predictions")
    assert total == 5 * settings.demo.rows_per_day  # 4 backfilled + the nightly day
    again = score(start=start, end=end, model=trained, config_files=files)
    assert {r.status for r in again} == {"skipped"}
    assert _count("select count(*) from predictions") == total
    forced = score(day=start, model=trained, force=True, config_files=files)
    assert forced[0].status == "scored"
    assert _count("select count(*) from predictions") == total
    assert isinstance(start, date)
