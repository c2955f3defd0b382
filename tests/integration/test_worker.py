"""The production shape on one machine: a real Prefect server, the `batchpred` process work
pool, the deployments registered from prefect.yaml and a worker that runs one of them, as
`make worker` does (pool if missing, `prefect --no-prompt deploy --all`, `prefect worker
start --pool batchpred`), with config and the database URL from the environment only."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from batchpred import config, demo, storage
from tests.conftest import _free_port

ROOT = Path(__file__).resolve().parents[2]
PREFECT = [sys.executable, "-m", "prefect"]
LAYERS = "configs/base.yaml,configs/datasets/churn.yaml,configs/test.yaml"  # in the workspace

pytestmark = pytest.mark.slow


def _api(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _start(args: list[str], log: Path, **kwargs: Any) -> subprocess.Popen:
    # a session of its own: stopping it stops the flow-run processes a worker started too
    with open(log, "w") as out:
        return subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
        )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _wait(api: str, run_id: str, tails: Any) -> dict[str, Any]:
    """The flow run's final state (2 minutes at most)."""
    deadline = time.monotonic() + 120
    final = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
    while (state := _api(f"{api}/flow_runs/{run_id}")["state"])["type"] not in final:
        assert time.monotonic() < deadline, f"flow run still {state['name']}\n{tails()}"
        time.sleep(1)
    return state


def _logs(api: str, run_id: str) -> list[dict[str, Any]]:
    """The flow run's log entries, as the UI shows them."""
    return _api(f"{api}/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})


def test_a_worker_runs_a_deployment_registered_from_prefect_yaml(tmp_path, monkeypatch):
    ws = tmp_path / "ws"  # the workspace: the checkout's code and configs/, its own data/
    shutil.copytree(ROOT / "configs", ws / "configs")
    for code in ("flows", "tasks"):  # imported from the workspace, never installed
        (ws / code).symlink_to(ROOT / code)
    (ws / "configs/test.yaml").write_text(
        yaml.safe_dump(
            {
                "demo": {"days": 3, "rows_per_day": 200, "unlabelled_days": 0},
                "validation": {"data_docs": False},
                "schedule": {"cron": "30 4 * * *", "timezone": "Europe/Amsterdam"},
            }
        )
    )
    monkeypatch.chdir(ws)
    settings = config.load_settings(LAYERS.split(","))
    demo.write_demo_source(settings.dataset, settings.demo, settings.source.url)
    days = storage.list_partitions(settings.source.url)
    assert len(days) == 3

    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    database = ws / "data" / "bp.db"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}",
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "BATCHPRED_CONFIG": LAYERS,
        "BATCHPRED_DATABASE_URL": f"sqlite:///{database}",
    }
    logs = {name: tmp_path / f"{name}.log" for name in ("server", "worker")}
    started, timings = time.monotonic(), {}
    # the API is all a worker needs: no UI, no scheduler or other services (less CPU)
    server = [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    procs = [_start([*server, "--no-ui", "--no-services"], logs["server"], env=env)]

    def tails() -> str:
        return "\n".join(f"--- {n}\n{p.read_text()[-3000:]}" for n, p in logs.items() if p.exists())

    def prefect(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*PREFECT, *args], env=env, cwd=ws, capture_output=True, text=True, timeout=120
        )

    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                _api(f"{api}/health")
                break
            except OSError:
                assert time.monotonic() < deadline, f"no Prefect server\n{tails()}"
                assert procs[0].poll() is None, f"the server exited\n{tails()}"
                time.sleep(0.5)

        timings["server"] = time.monotonic() - started
        # make worker, its first line: the pool if missing
        pool = subprocess.run(
            "prefect work-pool inspect batchpred >/dev/null 2>&1 || "
            "prefect work-pool create batchpred --type process",
            shell=True,
            env={**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert pool.returncode == 0, pool.stdout + pool.stderr
        assert "Created work pool 'batchpred'" in pool.stdout
        timings["pool"] = time.monotonic() - started
        # its last line, the worker, starts while the deployments register (time), and in
        # another directory: where a flow run starts is the deployment's pull step's business
        worker = [*PREFECT, "worker", "start", "--pool", "batchpred"]
        procs.append(_start(worker, logs["worker"], env=env, cwd=tmp_path))
        # its second line, in the workspace
        deploy = prefect(
            "--no-prompt", "deploy", "--all", "--prefect-file", str(ROOT / "prefect.yaml")
        )
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        timings["deploy"] = time.monotonic() - started

        registered = {d["name"]: d for d in _api(f"{api}/deployments/filter", {"limit": 20})}
        assert sorted(registered) == ["backfill", "ingest", "nightly", "score", "train"]
        assert {d["work_pool_name"] for d in registered.values()} == {"batchpred"}
        workspace = [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(ws.resolve())}}
        ]
        assert all(d["pull_steps"] == workspace for d in registered.values())
        (schedule,) = registered["nightly"]["schedules"]
        assert (schedule["schedule"]["cron"], schedule["schedule"]["timezone"]) == (
            "30 4 * * *",
            "Europe/Amsterdam",
        )

        run = _api(f"{api}/deployments/{registered['ingest']['id']}/create_flow_run", {})
        state = _wait(api, run["id"], tails)
        assert state["type"] == "COMPLETED", f"{state['name']}: {state['message']}\n{tails()}"
        timings["run"] = time.monotonic() - started
        # The worker's run logs its progress at INFO to the UI.
        levels = {entry["level"] for entry in _logs(api, run["id"])}
        assert 20 in levels, levels

        # A known failure (nothing to score on that day) ends Failed with its one line: no
        # "unexpected exception", no traceback in the run's logs.
        failing = _api(
            f"{api}/deployments/{registered['score']['id']}/create_flow_run",
            {"parameters": {"day": "2031-01-01"}},
        )
        state = _wait(api, failing["id"], tails)
        assert state["type"] == "FAILED", f"{state['name']}: {state['message']}\n{tails()}"
        assert state["message"].startswith("nothing to score: no partition for 2031-01-01"), state[
            "message"
        ]
        deadline = time.monotonic() + 20  # the run's last logs reach the API as it exits
        while True:
            said = [entry["message"] for entry in _logs(api, failing["id"])]
            if any(m.startswith("nothing to score: no partition for 2031-01-01") for m in said):
                break
            assert time.monotonic() < deadline, said
            time.sleep(1)
        assert not [m for m in said if "Traceback" in m or "unexpected exception" in m], said
        timings["failed run"] = time.monotonic() - started
    finally:
        for proc in reversed(procs):  # the worker first, while its server still answers
            _stop(proc)
    print("seconds from the start:", {k: round(v) for k, v in timings.items()})

    # it ran in the workspace (the lake's relative paths), not in the worker's directory, with
    # config and the database from the worker's environment
    assert storage.list_partitions(settings.lake.raw) == days
    assert not (tmp_path / "data").exists()
    engine = sa.create_engine(f"sqlite:///{database}")
    with engine.connect() as conn:
        verdicts = conn.execute(
            sa.text(
                "select partition_date, success from validation_results order by partition_date"
            )
        ).all()
    engine.dispose()
    assert [(str(d), bool(ok)) for d, ok in verdicts] == [(str(d), True) for d in days]
