"""Scale-out with nothing on local disk: the `score` flow fans a backfill out to a Dask cluster
of separate worker processes while the lake and the model registry are on S3 (a moto server
on loopback). The workers read the partitions and fetch the model from S3 themselves,
checking its sha256 and its manifest's before xgboost parses it, and write rows bit-identical
to a thread-pool run of the same flow into another database.

Also here: model_versions.uri is never a relative path (registry.store_url), which would
name another file to every worker started in another directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import sqlalchemy as sa
import yaml

from batchpred import config, db, demo, registry
from tests.conftest import ROOT, record_verdict, unavailable
from tests.unit.test_scoring import settings_for, train_small

DAYS = 3
WORKERS = 2
ROWS = 1_500  # per day, read in batches of BATCH rows
BATCH = 512
PREDICTIONS = (
    "select entity_id, partition_date, score, label, model_version from predictions"
    " order by partition_date, entity_id"
)


def _engine(url: str) -> sa.Engine:
    engine = db.create_engine(url)
    db.migrate(engine)
    return engine


def _rows(engine: sa.Engine, sql: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql))]


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[str]:
    """A Prefect test server of this module's own (tests/flows has its own harness)."""
    import prefect.settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(prefect.settings.PREFECT_API_URL.value())


@dataclass(frozen=True)
class Cluster:
    """`dask scheduler` and `dask worker` processes started as an operator would, in an empty
    working directory with the checkout on PYTHONPATH, and the environment they were given."""

    base: Path  # the test's own folder: databases, config layers, the empty working directory
    cwd: Path
    scheduler_file: Path
    database_url: str  # the workers' BATCHPRED_DATABASE_URL
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen]

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text()[-3000:]}"
            for log in sorted((self.base / "logs").glob("*.log"))
        )


@pytest.fixture(scope="module")
def cluster(s3_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A scheduler and WORKERS single-threaded workers (no nanny: each worker is the process
    started here). They start first and import tasks.scoring (--preload) while the Prefect
    server starts and the test prepares the lake, the model and the threaded run: importing
    prefect and xgboost is most of a cold worker's first task. They are given no Prefect API
    URL: the flow's settings travel with each task (prefect.context.serialize_context)."""
    try:
        import distributed  # noqa: F401
        import prefect_dask  # noqa: F401
    except ImportError as exc:  # runtime dependencies (requirements.lock): never a quiet skip
        unavailable(f"distributed / prefect-dask ({exc})")
    base = tmp_path_factory.mktemp("dask_s3")
    cwd, logs = base / "cwd", base / "logs"
    cwd.mkdir()
    logs.mkdir()
    scheduler_file = base / "scheduler.json"
    database_url = f"sqlite:///{base / 'dask.db'}"
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": s3_server,  # the same values as the s3_bucket fixture's
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "BATCHPRED_DATABASE_URL": database_url,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }

    env.pop("PREFECT_API_URL", None)

    def start(name: str, *args: str) -> subprocess.Popen:
        with open(logs / f"{name}.log", "w") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "dask", *args],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    common = ["--scheduler-file", str(scheduler_file), "--no-dashboard"]
    preload = ["--preload", "tasks.scoring"]
    # the scheduler unpickles the tasks it is given, importing prefect and tasks.scoring too
    scheduler = start(
        "scheduler", "scheduler", "--host", "127.0.0.1", "--port", "0", *preload, *common
    )
    workers = [
        start(
            f"worker-{i}",
            "worker",
            *common,
            "--host",
            "127.0.0.1",
            "--nthreads",
            "1",
            "--no-nanny",
            "--name",
            f"worker-{i}",
            *preload,
        )
        for i in range(WORKERS)
    ]
    yield Cluster(base, cwd, scheduler_file, database_url, scheduler, workers)
    for proc in [*workers, scheduler]:
        proc.terminate()
    for proc in [*workers, scheduler]:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _connect(cluster: Cluster, timeout: float = 180) -> Any:
    """A client of the cluster once its WORKERS workers have joined."""
    import distributed

    deadline = time.monotonic() + timeout
    while not cluster.scheduler_file.exists():
        assert cluster.scheduler.poll() is None, cluster.logs()
        assert time.monotonic() < deadline, f"no scheduler file\n{cluster.logs()}"
        time.sleep(0.2)
    # Not the process's default client: prefect-dask's DaskTaskRunner would take the default
    # client's scheduler over scoring.dask_address, and the config would not be tested.
    client = distributed.Client(
        scheduler_file=str(cluster.scheduler_file), timeout=60, set_as_default=False
    )
    try:
        client.wait_for_workers(WORKERS, timeout=max(1.0, deadline - time.monotonic()))
    except TimeoutError:
        client.close()
        pytest.fail(f"{WORKERS} Dask workers did not join\n{cluster.logs()}")
    return client


def _worker_probe(version: str) -> dict[str, Any]:
    """Run on each Dask worker: its pid and working directory, how many models its process
    loaded itself (tasks.resources caches one per version), and what a fresh load of
    `version` from the registry gives now (the error, if the store refuses it)."""
    from tasks import resources

    try:
        registry.load_model(resources.engine(), version)
        fresh = "ok"
    except Exception as exc:  # noqa: BLE001
        fresh = f"{type(exc).__name__}: {exc}"
    return {
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        "loaded": resources._model.cache_info().currsize,
        "fresh": fresh,
    }


@pytest.mark.s3
@pytest.mark.slow
def test_backfill_on_dask_workers_from_s3_matches_thread_pool(
    cluster: Cluster, prefect_api: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import distributed
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.score import score

    base = cluster.base
    s3 = f"s3://{s3_bucket}"
    layer = {
        "lake": {"raw": f"{s3}/raw", "labels": f"{s3}/labels", "reports": f"{s3}/reports"},
        "source": {"url": f"{s3}/source"},
        "training": {"registry": f"{s3}/models"},
        "validation": {"data_docs": False},
        "scoring": {"batch_rows": BATCH, "concurrency": 2},
    }
    conf = base / "conf"  # config is the only local input; no data folder anywhere
    conf.mkdir()
    (conf / "s3.yaml").write_text(yaml.safe_dump(layer))
    files = [
        str(ROOT / "configs/base.yaml"),
        str(ROOT / "configs/datasets/churn.yaml"),
        str(conf / "s3.yaml"),
    ]
    settings = config.load_settings(files)
    spec = settings.dataset

    # The lake: DAYS unseen demo partitions on S3.
    cfg = settings.demo.model_copy(update={"days": DAYS, "rows_per_day": ROWS, "seed": 99})
    days = demo.write_demo_source(spec, cfg, settings.lake.raw)
    assert len(days) == DAYS
    start, end = days[0], days[-1]

    # Training happens elsewhere (a DVC workspace); its output is registered into the S3
    # registry of both databases, then removed: scoring has no local copy to fall back on.
    trained, _ = train_small(settings_for("churn", base), base / "train")
    engines = {
        "threaded": _engine(f"sqlite:///{base / 'threaded.db'}"),
        "dask": _engine(cluster.database_url),
    }
    versions = {
        registry.register_model(e, trained, settings.training.registry) for e in engines.values()
    }
    assert len(versions) == 1
    version = versions.pop()
    shutil.rmtree(base / "train")
    for e in engines.values():  # validated at ingest (without Great Expectations, for speed)
        for d in days:
            record_verdict(e, spec, settings.validation, settings.lake.raw, d)
        uri = registry.get_version(e, version)["uri"]
        assert uri == f"{s3}/models/{version}/model.ubj"

    # The same empty working directory as the workers'.
    monkeypatch.chdir(cluster.cwd)
    monkeypatch.setenv("BATCHPRED_DATABASE_URL", str(engines["threaded"].url))
    threaded = score(start=start, end=end, model=version, config_files=files)
    assert [(r.partition_date, r.status, r.rows_scored) for r in threaded] == [
        (d, "scored", ROWS) for d in days
    ]

    monkeypatch.setenv("BATCHPRED_DATABASE_URL", cluster.database_url)  # for resolve-model
    with _connect(cluster) as client:
        dask_layer = conf / "dask.yaml"
        address = json.loads(cluster.scheduler_file.read_text())["address"]
        dask_layer.write_text(yaml.safe_dump({"scoring": {"dask_address": address}}))
        with pytest.raises(ValueError, match="No global client"):  # the config decides
            distributed.get_client()
        with distributed.get_task_stream(client) as stream:
            on_dask = score(
                start=start, end=end, model=version, config_files=[*files, str(dask_layer)]
            )
        workers = dict(client.run(_worker_probe, version))

        # The workers check what they fetch: a model or manifest changed in the store is
        # refused by a fresh load on every worker, before xgboost parses it.
        fs, path = _s3_fs(f"{s3}/models/{version}/model.ubj")
        good = fs.cat_file(path)
        fs.pipe_file(path, good[:-1] + bytes([good[-1] ^ 1]))
        tampered_model = client.run(_worker_probe, version)
        fs.pipe_file(path, good)
        manifest = path.rsplit("/", 1)[0] + "/manifest.json"
        fs.pipe_file(manifest, fs.cat_file(manifest) + b"\n")
        tampered_manifest = client.run(_worker_probe, version)

    assert [(r.partition_date, r.status, r.rows_scored) for r in on_dask] == [
        (d, "scored", ROWS) for d in days
    ]

    # The partitions ran in the worker processes started by the fixture (not this one), each
    # of which loaded the model itself, from S3, in the empty working directory.
    ran = [t for t in stream.data if str(t["key"]).startswith("score_partition-")]
    assert len(ran) == DAYS, [t["key"] for t in stream.data]
    assert {t["worker"] for t in ran} == set(workers)  # both took partitions (3 on 2 idle)
    assert {w["pid"] for w in workers.values()} == {p.pid for p in cluster.workers}
    assert {w["loaded"] for w in workers.values()} == {1}, workers
    assert {w["cwd"] for w in workers.values()} == {str(cluster.cwd)}
    assert {w["fresh"] for w in workers.values()} == {"ok"}
    for probe in tampered_model.values():
        assert probe["fresh"].startswith("ModelIntegrityError: ") and "sha256" in probe["fresh"]
        assert f"{s3}/models/{version}/model.ubj" in probe["fresh"]
    for probe in tampered_manifest.values():
        assert probe["fresh"].startswith("ModelIntegrityError: ")
        assert "manifest.json does not match its registered sha256" in probe["fresh"]

    # The workers reported their task runs to the flow's Prefect API, under its run.
    ledger_runs = {r[0] for r in _rows(engines["dask"], "select run_id from scoring_ledger")}
    assert len(ledger_runs) == 1
    with get_client(sync_client=True) as api:
        assert str(api.api_url).rstrip("/") == prefect_api.rstrip("/")
        task_runs = api.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(ledger_runs.pop())]))
        )
    assert {r.name: r.state_name for r in task_runs if r.name.startswith("score-")} == {
        f"score-{d}": "Completed" for d in days
    }

    # Same rows, bit-identical scores (SQLite REAL holds the float32 score exactly).
    threaded_rows = _rows(engines["threaded"], PREDICTIONS)
    dask_rows = _rows(engines["dask"], PREDICTIONS)
    assert len(dask_rows) == DAYS * ROWS
    assert dask_rows == threaded_rows
    for e in engines.values():
        assert _rows(e, "select uri from model_versions") == [(f"{s3}/models/{version}/model.ubj",)]
        e.dispose()

    # Nothing was written to local disk by the runs: no lake, no model copy, no data folder.
    assert list(cluster.cwd.iterdir()) == []
    left = {p.name for p in base.iterdir() if not p.name.startswith(("threaded.db", "dask.db"))}
    assert left == {"conf", "cwd", "logs", "scheduler.json"}


def _s3_fs(url: str) -> tuple[Any, str]:
    from batchpred import storage

    fs, path = storage.url_to_fs(url)
    fs.invalidate_cache()
    return fs, path


def test_registered_uri_is_never_a_relative_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative registry (the default, data/models) is recorded as an absolute path, so a
    worker started in another directory loads the same file; a row from before (a relative
    uri) fails with a clear line there, and registering the model again heals it."""
    trained, _ = train_small(settings_for("churn", tmp_path / "t"), tmp_path / "train")
    engine = _engine(f"sqlite:///{tmp_path / 'p.db'}")
    workspace, elsewhere = tmp_path / "ws", tmp_path / "elsewhere"
    workspace.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(workspace)
    version = registry.register_model(engine, trained, "data/models/")
    uri = registry.get_version(engine, version)["uri"]
    assert uri == f"{workspace}/data/models/{version}/model.ubj"
    assert Path(uri).is_file() and registry.is_portable_uri(uri)
    monkeypatch.chdir(elsewhere)
    assert registry.load_model(engine, version).version == version

    t = db.table(engine, "model_versions")
    with engine.begin() as conn:  # as registered before uris were made absolute
        relative = f"data/models/{version}/model.ubj"
        conn.execute(t.update().where(t.c.version == version).values(uri=relative))
    assert not registry.is_portable_uri(relative)
    with pytest.raises(FileNotFoundError, match="relative path data/models/.*register it again"):
        registry.load_model(engine, version)
    monkeypatch.chdir(workspace)
    assert registry.register_model(engine, trained, "data/models") == version
    assert registry.get_version(engine, version)["uri"] == uri
    monkeypatch.chdir(elsewhere)
    assert registry.load_model(engine, version).version == version

    assert registry.store_url("file://rel/models") == f"{elsewhere}/rel/models"
    assert registry.store_url("~/models") == os.path.expanduser("~/models")
    assert registry.store_url("s3://bucket/models/") == "s3://bucket/models"
    assert registry.store_url("/srv/models/") == "/srv/models"
    assert registry.is_portable_uri("s3://bucket/models/x/model.ubj")
    assert registry.is_portable_uri("file:///srv/models/x/model.ubj")
    assert not registry.is_portable_uri("file://models/x/model.ubj")
    engine.dispose()
