"""Shared fixtures: dataset settings, a real PostgreSQL and a moto S3 server on loopback.

Under CI=true a missing PostgreSQL or moto is an error, never a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa

from batchpred import db, rules, storage, verdicts
from batchpred.config import DatasetSpec, Settings, ValidationConfig, deep_merge, load_settings

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_URL = os.environ.get(
    "BATCHPRED_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def unavailable(what: str) -> None:
    """Skip on a laptop without the service; fail in CI, where it must run."""
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true", pytrace=False)
    pytest.skip(f"{what} not available")


def settings_for(dataset: str, tmp: Path, **overrides: object) -> Settings:
    """Settings for a dataset config with every path under `tmp`, and demo data labelled on
    every row of every day unless a test asks otherwise (make run's demo leaves the newest
    day unlabelled)."""
    base = {
        "demo": {"unlabelled_days": 0, "null_label_fraction": 0.0},
        "source": {"url": str(tmp / "source")},
        "lake": {
            "raw": str(tmp / "raw"),
            "labels": str(tmp / "labels"),
            "reports": str(tmp / "reports"),
        },
        "training": {"registry": str(tmp / "models")},
    }
    files = [ROOT / "configs/base.yaml", ROOT / f"configs/datasets/{dataset}.yaml"]
    return load_settings(files, overrides=deep_merge(base, overrides))


def record_verdict(
    engine: sa.Engine,
    spec: DatasetSpec,
    cfg: ValidationConfig,
    root: str,
    day: date,
    *,
    valid: bool = True,
    message: str = "column 'x' failed expect_column_values_to_be_between: 1 of 1 rows",
    run_id: str = "test",
) -> verdicts.ValidationReport:
    """Record a verdict for the partition's current files under the spec's current rules, the
    way ingest does (verdicts.record keyed by storage.fingerprint_partition and
    rules.spec_hash), without running Great Expectations. `valid=False` stores a failed report
    whose one failure carries `message` as its detail."""
    failures = () if valid else (verdicts.Failure("x", "expect_test_rule", message),)
    report = verdicts.ValidationReport(
        subject=f"partition dt={day.isoformat()} (test verdict)",
        success=valid,
        failures=failures,
        evaluated=1,
        rows=0,
        json_path=None,
        docs_path=None,
    )
    key = storage.fingerprint_partition(root, day)
    verdicts.record(engine, spec.name, day, key, rules.spec_hash(spec, cfg), report, run_id)
    return report


@pytest.fixture
def churn(tmp_path: Path) -> Settings:
    return settings_for("churn", tmp_path, demo={"days": 6, "rows_per_day": 400})


@pytest.fixture
def deliveries(tmp_path: Path) -> Settings:
    return settings_for("deliveries", tmp_path, demo={"days": 6, "rows_per_day": 300})


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    """A migrated SQLite database of the test's own (integration tests override it with
    PostgreSQL)."""
    eng = db.create_engine(f"sqlite:///{tmp_path}/p.db")
    db.migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema-isolated database URL (a new database per test)."""
    try:
        admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:  # noqa: BLE001
        unavailable(f"PostgreSQL at {PG_URL} ({type(exc).__name__})")
    name = f"bp_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'create database "{name}"'))
    url = PG_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'drop database if exists "{name}" with (force)'))
        admin.dispose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A moto S3 server on loopback; yields its endpoint URL."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        unavailable("moto[server]")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        unavailable("moto server did not start")
    yield endpoint
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the moto server, with the AWS_* environment pointing at it."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"bp-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    return bucket


# the venv's bin first: `dvc` and `prefect` as the tests' own interpreter has them
VENV_PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"


def dvc_workspace(ws: Path) -> Path:
    """A copy of the project's pipeline definition (dvc.yaml, .dvcignore, configs/) in a fresh
    DVC repo at `ws`, with the library source linked in (a DVC dependency)."""
    ws.mkdir(parents=True)
    shutil.copy(ROOT / "dvc.yaml", ws / "dvc.yaml")
    shutil.copytree(ROOT / "configs", ws / "configs")
    (ws / "src").symlink_to(ROOT / "src")
    subprocess.run(
        [sys.executable, "-m", "dvc", "init", "--no-scm", "-q"],
        cwd=ws,
        check=True,
        env={**os.environ, "PATH": VENV_PATH},
    )
    project_config = (ROOT / ".dvc" / "config").read_text()
    no_scm = project_config.replace("[core]", "[core]\n    no_scm = True")
    (ws / ".dvc" / "config").write_text(no_scm)
    shutil.copy(ROOT / ".dvcignore", ws / ".dvcignore")  # after init, which writes its own
    return ws
