"""The production shape on one machine: a real Prefect server, the `batchpred` process work
pool, the deployments registered from prefect.yaml and a worker that runs one of them, as
`make worker` does (pool if missing, `prefect --no-prompt deploy --all`, `prefect worker
start --pool batchpred`), with config and the database URL from the environment only."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from batchpred import config, demo, storage
from tests.conftest import VENV_PATH, _free_port, dvc_workspace

ROOT = Path(__file__).resolve().parents[2]
PREFECT = [sys.executable, "-m", "prefect"]
LAYERS = "configs/base.yaml,configs/datasets/churn.yaml,configs/test.yaml"  # in the workspace

pytestmark = pytest.mark.slow


def _api(url: str, body: dict[str, Any] | None = None) -> Any:
    """One call to the server's REST API. A 503 (the server's SQLite database briefly locked
    by its own services) or 429 is retried with backoff, as Prefect's own client does
    (PREFECT_CLIENT_MAX_RETRIES); anything else is raised."""
    data = None if body is None else json.dumps(body).encode()
    for attempt in range(6):
        request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            if error.code not in (429, 503) or attempt == 5:
                raise
            time.sleep(0.5 * 2**attempt)


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


class Production:
    """A real Prefect server, the `batchpred` process work pool, a worker started in another
    directory and the deployments registered from prefect.yaml in the workspace `ws`, as
    `make server` and `make worker` make them. `env` is the worker's environment (config and
    database URL) on top of the server's."""

    def __init__(self, tmp_path: Path, ws: Path, env: dict[str, str], services: bool) -> None:
        port = _free_port()
        self.api = f"http://127.0.0.1:{port}/api"
        self.ws, self.tmp_path = ws, tmp_path
        self.env = {
            **os.environ,
            "PREFECT_HOME": str(tmp_path / "prefect"),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}",
            "PREFECT_API_URL": self.api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "PATH": VENV_PATH,
            **env,
        }
        self.logs = {name: tmp_path / f"{name}.log" for name in ("server", "worker")}
        # The API is all a worker needs: no UI and, unless a schedule must fire, no services
        # (less CPU). With them, the scheduler looks for due schedules every 2 s, not 60.
        server = [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
        server += ["--no-ui"] if services else ["--no-ui", "--no-services"]
        server_env = {**self.env, "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2"}
        self.procs = [_start(server, self.logs["server"], env=server_env)]

    def tails(self) -> str:
        logs = self.logs.items()
        return "\n".join(f"--- {n}\n{p.read_text()[-3000:]}" for n, p in logs if p.exists())

    def prefect(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*PREFECT, *args],
            env=self.env,
            cwd=self.ws,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def start(self) -> dict[str, dict[str, Any]]:
        """Wait for the server, then `make worker`'s three lines; the deployments by name."""
        deadline = time.monotonic() + 90
        while True:
            try:
                _api(f"{self.api}/health")
                break
            except OSError:
                assert time.monotonic() < deadline, f"no Prefect server\n{self.tails()}"
                assert self.procs[0].poll() is None, f"the server exited\n{self.tails()}"
                time.sleep(0.5)
        # make worker, its first line: the pool if missing
        pool = subprocess.run(
            "prefect work-pool inspect batchpred >/dev/null 2>&1 || "
            "prefect work-pool create batchpred --type process",
            shell=True,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert pool.returncode == 0, pool.stdout + pool.stderr
        assert "Created work pool 'batchpred'" in pool.stdout
        # its last line, the worker, starts while the deployments register (time), and in
        # another directory: where a flow run starts is the deployment's pull step's business
        worker = [*PREFECT, "worker", "start", "--pool", "batchpred"]
        self.procs.append(_start(worker, self.logs["worker"], env=self.env, cwd=self.tmp_path))
        # its second line, in the workspace
        deploy = self.prefect(
            "--no-prompt", "deploy", "--all", "--prefect-file", str(ROOT / "prefect.yaml")
        )
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        return {d["name"]: d for d in _api(f"{self.api}/deployments/filter", {"limit": 20})}

    def run(self, deployment: dict[str, Any], **body: Any) -> str:
        return _api(f"{self.api}/deployments/{deployment['id']}/create_flow_run", body)["id"]

    def wait(self, run_id: str, seconds: float = 120) -> dict[str, Any]:
        """The flow run's final state."""
        deadline = time.monotonic() + seconds
        final = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
        while (state := _api(f"{self.api}/flow_runs/{run_id}")["state"])["type"] not in final:
            assert time.monotonic() < deadline, f"flow run still {state['name']}\n{self.tails()}"
            time.sleep(1)
        return state

    def logs_of(self, run_id: str) -> list[dict[str, Any]]:
        """The flow run's log entries, as the UI shows them."""
        body = {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}
        return _api(f"{self.api}/logs/filter", body)

    def stop(self) -> None:
        for proc in reversed(self.procs):  # the worker first, while its server still answers
            _stop(proc)


@contextlib.contextmanager
def production(
    tmp_path: Path, ws: Path, env: dict[str, str], services: bool = False
) -> Iterator[Production]:
    prod = Production(tmp_path, ws, env, services)
    try:
        yield prod
    finally:
        prod.stop()


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

    database = ws / "data" / "bp.db"
    env = {"BATCHPRED_CONFIG": LAYERS, "BATCHPRED_DATABASE_URL": f"sqlite:///{database}"}
    with production(tmp_path, ws, env) as prod:
        registered = prod.start()
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

        run = prod.run(registered["ingest"])
        state = prod.wait(run)
        assert state["type"] == "COMPLETED", f"{state['name']}: {state['message']}\n{prod.tails()}"
        # The worker's run logs its progress at INFO to the UI.
        levels = {entry["level"] for entry in prod.logs_of(run)}
        assert 20 in levels, levels

        # A known failure (nothing to score on that day) ends Failed with its one line: no
        # "unexpected exception", no traceback in the run's logs.
        failing = prod.run(registered["score"], parameters={"day": "2031-01-01"})
        state = prod.wait(failing)
        assert state["type"] == "FAILED", f"{state['name']}: {state['message']}\n{prod.tails()}"
        assert state["message"].startswith("nothing to score: no partition for 2031-01-01"), state[
            "message"
        ]
        deadline = time.monotonic() + 20  # the run's last logs reach the API as it exits
        while True:
            said = [entry["message"] for entry in prod.logs_of(failing)]
            if any(m.startswith("nothing to score: no partition for 2031-01-01") for m in said):
                break
            assert time.monotonic() < deadline, said
            time.sleep(1)
        assert not [m for m in said if "Traceback" in m or "unexpected exception" in m], said

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


def _table(url: str, name: str, columns: str, rows: list[dict[str, Any]]) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"create table if not exists {name} ({columns})"))
        if rows:
            names = list(rows[0])
            values = ", ".join(":" + c for c in names)
            conn.execute(
                sa.text(f"insert into {name} ({', '.join(names)}) values ({values})"), rows
            )
    engine.dispose()


def test_a_sql_dataset_runs_nightly_on_its_schedule_through_a_worker(tmp_path):
    """The README's "A dataset in a SQL database": the nightly deployment's schedule fires on
    a real server, a worker runs it in a DVC workspace with config from its environment; the
    source's days are listed by source.days_query, its newest days have no label yet, and the
    labels arrive later in a table of their own, read by labels.query: the next nightly trains
    on them and computes realised metrics and outcomes for the day the first one scored."""
    ws = dvc_workspace(tmp_path / "ws")
    for code in ("flows", "tasks"):
        (ws / code).symlink_to(ROOT / code)
    layers = "configs/base.yaml,configs/datasets/churn.yaml,configs/test.yaml"
    small: dict[str, Any] = {
        "demo": {"days": 9, "rows_per_day": 300, "unlabelled_days": 0, "null_label_fraction": 0},
        "training": {"window_days": 6, "valid_days": 1, "holdout_days": 1, "num_boost_round": 40},
        "validation": {"data_docs": False},
    }
    settings = config.load_settings([ws / "configs/base.yaml", ws / "configs/datasets/churn.yaml"])
    spec, target = settings.dataset, settings.dataset.target.name
    source_db = f"sqlite:///{ws / 'upstream.db'}"
    demo_config = settings.demo.model_copy(update={"rows_per_day": 300, "null_label_fraction": 0.0})
    days = [demo_config.start_date + timedelta(days=i) for i in range(9)]
    unlabelled, last = days[-2:], days[-1]
    truth: list[dict[str, Any]] = []
    for day in days:
        rows = demo.generate_day(spec, demo_config, day).to_pylist()
        if day in unlabelled:  # the outcome is not known yet: the column is null
            truth += [{"id": r[spec.entity_id], "outcome": r[target], "dt": day} for r in rows]
            rows = [{**r, target: None} for r in rows]
        _table(source_db, "events", ", ".join(rows[0]), rows)
    _table(source_db, "outcomes", "id, outcome, dt", [])  # upstream's table, empty for now
    date_column = spec.event_date
    small["source"] = {
        "kind": "sql",
        "url_env": "UPSTREAM_DB",
        "query": f"select * from events where {date_column} = :dt",
        "days_query": f"select {date_column}, count(*) from events group by 1",
    }
    small["labels"] = {
        "url_env": "UPSTREAM_DB",
        "query": f"select id as {spec.entity_id}, outcome as {target} from outcomes where dt = :dt",
        "days_query": "select dt, count(*) from outcomes group by dt",
    }
    # The schedule: the next whole minute at least 40 s away (deploy, then the scheduler).
    fires = (datetime.now(UTC) + timedelta(seconds=100)).replace(second=0, microsecond=0)
    small["schedule"] = {"cron": f"{fires.minute} {fires.hour} * * *", "timezone": "UTC"}
    (ws / "configs/test.yaml").write_text(yaml.safe_dump(small))

    database = f"sqlite:///{ws / 'data' / 'bp.db'}"
    env = {
        "BATCHPRED_CONFIG": layers,
        "BATCHPRED_DATABASE_URL": database,
        "UPSTREAM_DB": source_db,
    }
    with production(tmp_path, ws, env, services=True) as prod:
        registered = prod.start()
        nightly = registered["nightly"]
        # night 1: the run the schedule made (no day: the newest day the days query lists)
        deadline = time.monotonic() + 240
        while not (runs := _api(f"{prod.api}/flow_runs/filter", _of(nightly))):
            assert time.monotonic() < deadline, f"the schedule made no run\n{prod.tails()}"
            time.sleep(2)
        first = runs[0]
        assert first["auto_scheduled"] and first["parameters"] == {}, first
        assert abs(datetime.fromisoformat(first["expected_start_time"]) - fires).total_seconds() < 1
        state = prod.wait(first["id"], seconds=fires.timestamp() - time.time() + 300)
        assert state["type"] == "COMPLETED", f"{state['name']}: {state['message']}\n{prod.tails()}"
        named = _api(f"{prod.api}/flow_runs/{first['id']}")["name"]
        assert named == f"nightly-churn-{last}", named
        ((champion, scored),) = _rows(
            database,
            "select model_version, rows_scored from scoring_ledger where partition_date = :d",
            last,
        )
        assert scored == 300
        assert _rows(database, "select count(*) from outcomes") == [(0,)]

        # "A week later" the outcomes of the two newest days land upstream; an operator runs
        # the nightly for the day already scored (prefect deployment run nightly/nightly).
        _table(source_db, "outcomes", "id, outcome, dt", truth)
        second = prod.run(nightly, parameters={"day": str(last)})
        state = prod.wait(second, seconds=300)
        assert state["type"] == "COMPLETED", f"{state['name']}: {state['message']}\n{prod.tails()}"

    prepared = json.loads((ws / "data/train/churn/data/prepare.json").read_text())
    assert {str(d) for d in unlabelled} <= set(prepared["days"])  # trained on the late labels
    outcome_rows = _rows(database, "select count(*) from outcomes where partition_date = :d", last)
    assert outcome_rows == [(300,)]
    ((rows, auc),) = _rows(
        database,
        "select rows, auc from realised_performance where partition_date = :d"
        f" and model_version = '{champion}'",
        last,
    )
    assert rows == 300 and 0.6 < auc <= 1.0


def _of(deployment: dict[str, Any]) -> dict[str, Any]:
    return {"deployments": {"id": {"any_": [deployment["id"]]}}, "sort": "EXPECTED_START_TIME_ASC"}


def _rows(url: str, query: str, day: date | None = None) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = conn.execute(sa.text(query), {"d": str(day)} if day else {}).all()
    engine.dispose()
    return [tuple(r) for r in found]
