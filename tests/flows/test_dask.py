"""The `score` flow on a real Dask cluster (prefect-dask): same predictions as the thread pool."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from batchpred import config, demo
from flows.nightly import nightly
from flows.score import score

pytestmark = pytest.mark.slow

distributed = pytest.importorskip("distributed")
pytest.importorskip("prefect_dask")


def _rows(sql: str, **params: object) -> list[tuple]:
    engine = sa.create_engine(config.database_url())
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params)]
    finally:
        engine.dispose()


def test_score_on_dask_cluster_matches_thread_pool(workspace, monkeypatch):
    import prefect.settings

    files = workspace("churn")
    settings = config.load_settings(files)
    demo.write_demo_source(settings.dataset, settings.demo, settings.source.url)
    version = nightly(config_files=files)["model"]["version"]
    start = settings.demo.start_date
    end = start + timedelta(days=3)
    days = [start + timedelta(days=i) for i in range(4)]

    predictions = (
        "select entity_id, partition_date, score, label from predictions"
        " where model_version = :v and partition_date between :s and :e"
        " order by partition_date, entity_id"
    )
    ledger = (
        "select partition_date, run_id, status, rows_scored from scoring_ledger"
        " where model_version = :v and partition_date between :s and :e"
        " order by partition_date"
    )
    window = {"v": version, "s": start, "e": end}

    threaded = score(start=start, end=end, model=version, force=True, config_files=files)
    assert [r.status for r in threaded] == ["scored"] * 4
    threaded_rows = _rows(predictions, **window)
    threaded_ledger = _rows(ledger, **window)
    assert len(threaded_rows) == 4 * settings.demo.rows_per_day
    assert [str(row[0]) for row in threaded_ledger] == [str(d) for d in days]

    # Worker processes inherit this process's environment and working directory: the same
    # SQLite file (BATCHPRED_DATABASE_URL), the same relative lake/model paths, and the same
    # Prefect API (the harness only sets it in-process, so export it before spawning).
    monkeypatch.setenv("PREFECT_API_URL", prefect.settings.PREFECT_API_URL.value())
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        # not this process's default client: the flow must find the cluster by
        # scoring.dask_address alone (with no address, prefect-dask starts a cluster of its
        # own, and no partition would show in this cluster's task stream)
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        layer = Path("configs/dask.yaml").resolve()
        layer.write_text(yaml.safe_dump({"scoring": {"dask_address": cluster.scheduler_address}}))
        dask_files = [*files, str(layer)]
        assert config.load_settings(dask_files).scoring.dask_address == cluster.scheduler_address

        with distributed.get_task_stream(client) as stream:
            on_dask = score(
                start=start, end=end, model=version, force=True, config_files=dask_files
            )
        worker_pids = set(client.run(lambda: os.getpid()).values())
        workers = set(cluster.scheduler.workers)

    assert [r.status for r in on_dask] == ["scored"] * 4
    assert [r.partition_date for r in on_dask] == days
    assert {r.model_version for r in on_dask} == {version}

    # The partitions really ran on the cluster's worker processes, not in this process.
    ran = [t for t in stream.data if str(t["key"]).startswith("score_partition-")]
    assert len(ran) == 4, [t["key"] for t in stream.data]
    assert {t["worker"] for t in ran} <= workers
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids

    # Same rows and bit-identical scores; the ledger and the rows record the new run.
    dask_rows = _rows(predictions, **window)
    assert dask_rows == threaded_rows
    dask_ledger = _rows(ledger, **window)
    assert [str(row[0]) for row in dask_ledger] == [str(d) for d in days]
    assert [(row[2], row[3]) for row in dask_ledger] == [
        (row[2], row[3]) for row in threaded_ledger
    ]
    dask_run = {row[1] for row in dask_ledger}
    assert len(dask_run) == 1 and dask_run.isdisjoint({row[1] for row in threaded_ledger})
    assert {
        row[0]
        for row in _rows(
            "select distinct run_id from predictions where model_version = :v"
            " and partition_date between :s and :e",
            **window,
        )
    } == dask_run
