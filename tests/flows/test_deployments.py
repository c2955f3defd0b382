"""The deployments: what `make serve` serves and prefect.yaml registers are the same, the
nightly's schedule comes from config, and the
supported backfill (`prefect deployment run 'score/backfill'` against served deployments)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from prefect.utilities.importtools import import_object

from batchpred import config, demo
from flows import deployments
from flows.nightly import nightly

ROOT = Path(__file__).resolve().parents[2]
PREFECT_RUN = [sys.executable, "-m", "prefect", "deployment", "run"]


def _config(tmp_path: Path, **overrides: object) -> list[str]:
    path = tmp_path / "override.yaml"
    path.write_text(yaml.safe_dump(overrides))
    return [str(ROOT / "configs/base.yaml"), str(ROOT / "configs/datasets/churn.yaml"), str(path)]


def test_prefect_yaml_declares_the_served_deployments_on_the_work_pool():
    declared = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    defaults = [str(ROOT / "configs/base.yaml"), str(ROOT / "configs/datasets/churn.yaml")]
    served = {d.name: d for d in deployments.deployments(defaults)}
    assert [d["name"] for d in declared["deployments"]] == list(served)
    for spec in declared["deployments"]:
        d, flow = served[spec["name"]], import_object(spec["entrypoint"])
        module, func = spec["entrypoint"].rsplit(".", 1)  # served: path (from cwd) and name
        path, name = d.entrypoint.rsplit(":", 1)
        assert (Path(path).resolve(), name) == (ROOT / f"{module.replace('.', '/')}.py", func)
        assert d.flow_name == flow.name
        assert d.description == spec.get("description", flow.description), spec["name"]
        assert d.concurrency_limit == spec.get("concurrency_limit"), spec["name"]
        assert bool(d.schedules) == ("schedules" in spec), spec["name"]
        assert spec["work_pool"] == {"name": "batchpred"}
    # the schedule and the workspace come from the build step, which reads config
    (step,) = declared["build"]
    assert step == {"flows.deployments.schedule_step": {"id": "settings"}}
    (nightly_spec,) = [d for d in declared["deployments"] if "schedules" in d]
    assert nightly_spec["schedules"] == [
        {"cron": "{{ settings.cron }}", "timezone": "{{ settings.timezone }}"}
    ]
    assert declared["pull"] == [
        {
            "prefect.deployments.steps.set_working_directory": {
                "directory": "{{ settings.workspace }}"
            }
        }
    ]


def test_the_nightly_schedule_comes_from_config(tmp_path, monkeypatch):
    files = _config(tmp_path, schedule={"cron": "30 4 * * 1-5", "timezone": "Europe/Amsterdam"})
    (nightly_deployment,) = [d for d in deployments.deployments(files) if d.schedules]
    (schedule,) = nightly_deployment.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == (
        "30 4 * * 1-5",
        "Europe/Amsterdam",
    )
    monkeypatch.chdir(tmp_path)
    assert deployments.schedule_step(files) == {
        "cron": "30 4 * * 1-5",
        "timezone": "Europe/Amsterdam",
        "workspace": str(tmp_path.resolve()),
    }
    with pytest.raises(config.SetupError, match="'Mars/Olympus' is not an IANA timezone"):
        deployments.deployments(_config(tmp_path, schedule={"timezone": "Mars/Olympus"}))


@pytest.mark.slow
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
        # flows/ and tasks/ are imported from the checkout (not installed), as a worker does
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
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
                    *PREFECT_RUN,
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
        # A day that does not exist is refused by the server before a run is created.
        bad = {**params, "end": "2026-13-01"}
        refused = subprocess.run(
            [*PREFECT_RUN, "score/backfill", "--params", json.dumps(bad)],
            env=env,
            capture_output=True,
            text=True,
        )
        assert refused.returncode != 0
        said = refused.stdout + refused.stderr
        assert "Validation failed for field 'end'" in said and "2026-13-01" in said, said
        assert "Created flow run" not in said
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
