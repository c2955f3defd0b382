"""The supported backfill: `prefect deployment run 'score/backfill'` against served deployments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from batchpred import config, demo
from flows.nightly import nightly

pytestmark = pytest.mark.slow


def test_backfill_through_prefect_deployment_run(workspace):
    from prefect.settings import PREFECT_API_URL

    files = workspace("churn")
    settings = config.load_settings(files)
    demo.write_demo_source(settings.dataset, settings.demo, settings.source.url)
    version = nightly(config_files=files)["model"]["version"]

    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    served = subprocess.Popen(
        [sys.executable, "-m", "flows.deployments"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        start = settings.demo.start_date
        end = start + timedelta(days=2)
        params = {"start": str(start), "end": str(end), "model": version, "config_files": files}
        deadline = time.monotonic() + 90
        while True:  # the deployment exists once `serve` has registered it
            run = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "prefect",
                    "deployment",
                    "run",
                    "score/backfill",
                    "--params",
                    json.dumps(params),
                    "--watch",
                    "--watch-timeout",
                    "300",
                ],
                env=env,
                capture_output=True,
                text=True,
            )
            if run.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "Completed" in run.stdout
    finally:
        served.terminate()
        served.wait(30)

    engine = sa.create_engine(config.database_url())
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "select partition_date, count(*), count(distinct run_id) from predictions "
                "where model_version = :v and partition_date between :a and :b "
                "group by partition_date order by partition_date"
            ),
            {"v": version, "a": str(start), "b": str(end)},
        ).all()
    assert [r[1] for r in rows] == [settings.demo.rows_per_day] * 3
    assert all(r[2] == 1 for r in rows)
