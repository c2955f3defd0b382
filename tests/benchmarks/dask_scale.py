"""Scale-out benchmark: a backfill scored by the `score` flow on Dask clusters of separate
worker processes (`dask scheduler` + `dask worker --nthreads T --no-nanny --preload
tasks.scoring`, one process per worker, started in an empty working directory with the
checkout on PYTHONPATH), with the lake and the model registry on S3 (a moto server on
loopback), against the same flow on its own thread pool in one process.

    .venv/bin/python -m tests.benchmarks.dask_scale [--days 6] [--rows 200000]
        [--db pg|sqlite] [--repeat 2] [--no-doc]

Shapes: `threads` (scoring.concurrency 2 in the flow's process) and Dask 1 worker x 1 thread,
2 workers x 1 thread, 1 worker x 2 threads, each cluster started once and kept up. Runs are
interleaved (every shape, then every shape again), each re-scoring every day (force) into one
database: the first run of a shape is `cold` (each worker fetches the model from S3 and checks
its sha256 and its manifest's before its first partition), the median of --repeat more is
`warm`. Per run: wall time of the flow call, rows/s, the workers' and the moto server's CPU
seconds (/proc, user + system); per worker, its RSS once joined and its peak (VmHWM). Every
run must leave the same predictions (a digest of entity id, day, score and label), or the
benchmark stops.

Writes its section of docs/benchmarks.md: the heading `## Scale-out (Dask)`, then the body
between `<!-- dask:start -->` and `<!-- dask:end -->`; every other part of the file is kept.
Figures, not assertions. PostgreSQL: a fresh database bench_dask_<random> on
$BATCHPRED_BENCH_PG_ADMIN_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/postgres),
dropped at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "benchmarks.md"
HEADING = "## Scale-out (Dask)"
BEGIN, END = "<!-- dask:start -->", "<!-- dask:end -->"
PG_ADMIN_URL = os.environ.get(
    "BATCHPRED_BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
TRAIN_DAYS, TRAIN_ROWS = 5, 20_000  # the model: churn demo days 3 train / 1 valid / 1 holdout
_T0 = time.perf_counter()

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", flush=True)


def loadavg() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- processes: CPU and memory from /proc ------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return 0


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextmanager
def moto_server(logfile: Path) -> Iterator[tuple[str, int]]:
    """A moto S3 server on loopback (as tests/conftest.py starts it); yields its endpoint and
    pid."""
    port = free_port()
    with open(logfile, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"moto did not start: {logfile.read_text()}") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        stop(proc)


class Cluster:
    """A scheduler and `n` workers of `threads` threads, no nanny (each worker is the process
    started here), all preloading tasks.scoring (the scheduler unpickles the tasks too),
    started in an empty working directory with the checkout on PYTHONPATH. `start` returns at
    once; `join` waits for the workers."""

    def __init__(self, work: Path, env: dict[str, str], n: int, threads: int) -> None:
        self.work, self.env, self.n, self.threads = work, env, n, threads
        self.shape = f"{n} x {threads}"
        self.scheduler_file = work / f"scheduler-{n}x{threads}.json"
        self.procs: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []
        self.client: Any = None
        self.rss_joined_kib: dict[int, int] = {}

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        cwd = self.work / "cwd"
        cwd.mkdir(exist_ok=True)
        with open(self.work / f"{name}-{self.n}x{self.threads}.log", "w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dask", *args],
                cwd=cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        common = ["--scheduler-file", str(self.scheduler_file), "--no-dashboard"]
        preload = ["--preload", "tasks.scoring"]
        self._spawn(
            "scheduler", "scheduler", "--host", "127.0.0.1", "--port", "0", *preload, *common
        )
        for i in range(self.n):
            self.workers.append(
                self._spawn(
                    f"worker-{i}",
                    "worker",
                    *common,
                    "--host",
                    "127.0.0.1",
                    "--nthreads",
                    str(self.threads),
                    "--no-nanny",
                    "--name",
                    f"worker-{i}",
                    *preload,
                )
            )

    def join(self, timeout: float = 300) -> None:
        import distributed

        deadline = time.monotonic() + timeout
        while not self.scheduler_file.exists():
            if time.monotonic() > deadline or self.procs[0].poll() is not None:
                raise RuntimeError(f"the Dask scheduler of {self.shape} did not start")
            time.sleep(0.2)
        # not the process's default client: prefect-dask's DaskTaskRunner would take the
        # default client's scheduler over scoring.dask_address, and every shape would run on
        # the last cluster connected
        self.client = distributed.Client(
            scheduler_file=str(self.scheduler_file), timeout=120, set_as_default=False
        )
        self.client.wait_for_workers(self.n, timeout=max(1.0, deadline - time.monotonic()))
        pids = set(self.client.run(os.getpid).values())
        if pids != {w.pid for w in self.workers}:
            raise RuntimeError(f"the cluster's workers are not the processes started: {pids}")
        self.rss_joined_kib = {w.pid: status_kib(w.pid, "VmRSS") for w in self.workers}

    @property
    def address(self) -> str:
        return str(self.client.scheduler_info()["address"])

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        for proc in reversed(self.procs):
            stop(proc)


@contextmanager
def clusters(
    work: Path, env: dict[str, str], shapes: list[tuple[int, int]]
) -> Iterator[list[Cluster]]:
    """Every shape's cluster, started together (their imports overlap) and kept up for the
    whole benchmark, so that runs of all shapes can be interleaved."""
    started = [Cluster(work, env, n, threads) for n, threads in shapes]
    try:
        for c in started:
            c.start()
        for c in started:
            c.join()
        yield started
    finally:
        for c in started:
            c.stop()


# --- data, model, database -----------------------------------------------------------------------


def configs(work: Path, bucket: str, rows: int, days: int, extra: dict[str, Any]) -> list[str]:
    import yaml

    from batchpred.config import deep_merge

    s3 = f"s3://{bucket}"
    layer = {
        "demo": {"days": days, "rows_per_day": rows, "seed": 99, "unlabelled_days": 0},
        "source": {"url": f"{s3}/source"},
        "lake": {"raw": f"{s3}/raw", "labels": f"{s3}/labels", "reports": f"{s3}/reports"},
        "training": {"registry": f"{s3}/models"},
        "validation": {"data_docs": False},
        "scoring": {"concurrency": 2, "nthread": 1},
    }
    name = "bench-" + hashlib.sha256(json.dumps(extra, sort_keys=True).encode()).hexdigest()[:8]
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(deep_merge(layer, extra), sort_keys=False))
    return [str(ROOT / "configs/base.yaml"), str(ROOT / "configs/datasets/churn.yaml"), str(path)]


def train(settings: Any, work: Path) -> Path:
    """The churn model as the DVC pipeline trains it (training.train_model, base.yaml's
    params: early stopping over up to 300 rounds) on TRAIN_DAYS local demo days."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from batchpred import demo, training

    spec = settings.dataset
    cfg = settings.demo.model_copy(
        update={"rows_per_day": TRAIN_ROWS, "seed": 7, "null_label_fraction": 0.0}
    )
    days = [cfg.start_date - timedelta(days=TRAIN_DAYS - i) for i in range(TRAIN_DAYS)]
    tables = [demo.generate_day(spec, cfg, d) for d in days]
    data = work / "train" / "data"
    data.mkdir(parents=True)
    for split, parts in {"train": tables[:3], "valid": tables[3:4], "holdout": tables[4:]}.items():
        pq.write_table(pa.concat_tables(parts), data / f"{split}.parquet")
    iso = [d.isoformat() for d in days]
    splits = {"train": iso[:3], "valid": iso[3:4], "holdout": iso[4:]}
    summary = {"days": iso, "splits": splits, "data_hash": "bench"}
    (data / training.PREPARE_FILE).write_text(json.dumps(summary))
    training.train_model(settings, data, work / "train" / "model")
    return work / "train" / "model"


def record_verdicts(engine: Any, settings: Any, days: list[date]) -> None:
    """As ingest leaves them: each partition valid under the current spec (the benchmark
    times scoring, not Great Expectations)."""
    from batchpred import rules, storage, verdicts

    spec, cfg, root = settings.dataset, settings.validation, settings.lake.raw
    for day in days:
        report = verdicts.ValidationReport(f"dt={day} (bench)", True, (), 1, 0, None, None)
        key = storage.fingerprint_partition(root, day)
        verdicts.record(engine, spec.name, day, key, rules.spec_hash(spec, cfg), report, "bench")


@contextmanager
def database(kind: str, work: Path) -> Iterator[str]:
    import sqlalchemy as sa

    if kind == "sqlite":
        yield f"sqlite:///{work / 'bench.db'}"
        return
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"bench_dask_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'create database "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'drop database if exists "{name}" with (force)'))
        admin.dispose()


def digest(engine: Any, version: str) -> tuple[int, str]:
    """Rows and a digest of (entity id, day, score, label) of the model's predictions, in
    order (PostgreSQL: md5 computed by the server; its float text is exact)."""
    import sqlalchemy as sa

    from batchpred import db

    if engine.dialect.name == "postgresql":
        sql = (
            "select count(*), md5(string_agg(concat_ws(',', entity_id, partition_date, score,"
            " label), ';' order by partition_date, entity_id)) from predictions"
            " where model_version = :v"
        )
        with engine.connect() as conn:
            n, md5 = conn.execute(sa.text(sql), {"v": version}).one()
        return int(n), str(md5)
    t = db.table(engine, "predictions")
    h, n = hashlib.sha256(), 0
    query = (
        sa.select(t.c.entity_id, t.c.partition_date, t.c.score, t.c.label)
        .where(t.c.model_version == version)
        .order_by(t.c.partition_date, t.c.entity_id)
    )
    with engine.connect() as conn:
        for row in conn.execute(query):
            h.update(f"{row[0]}\0{row[1]}\0{float(row[2]).hex()}\0{row[3]}\n".encode())
            n += 1
    return n, h.hexdigest()


def lake_mib(root: str, days: list[date]) -> float:
    from batchpred import storage

    total = 0
    for day in days:
        for url in storage.partition_files(root, day):
            fs, path = storage.url_to_fs(url)
            total += int(fs.info(path)["size"])
    return total / 2**20


# --- runs ---------------------------------------------------------------------------------------


@dataclass
class Run:
    runner: str  # threads | dask
    shape: str  # "1 x 2" (processes x threads)
    kind: str  # cold | warm
    seconds: float
    rows: int
    worker_cpu: float | None = None
    moto_cpu: float | None = None

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


def timed_score(
    files: list[str], days: list[date], version: str, pids: list[int], moto: int
) -> tuple[float, float, float]:
    """Seconds of one flow call scoring every day (force), and the CPU seconds `pids` and
    the moto server spent meanwhile."""
    from flows.score import score

    cpu0, moto0 = sum(cpu_seconds(p) for p in pids), cpu_seconds(moto)
    t = time.perf_counter()
    results = score(start=days[0], end=days[-1], model=version, force=True, config_files=files)
    seconds = time.perf_counter() - t
    if [r.status for r in results] != ["scored"] * len(days):
        raise RuntimeError(f"not every partition was scored: {results}")
    return seconds, sum(cpu_seconds(p) for p in pids) - cpu0, cpu_seconds(moto) - moto0


def _worker_facts(dask_worker: Any) -> dict[str, int]:
    """Run on a worker: its pid and how many tasks (partitions) it ran."""
    return {"pid": os.getpid(), "executed": int(dask_worker.state.executed_count)}


SHAPES = [(1, 1), (2, 1), (1, 2)]  # Dask processes x threads


def bench(args: argparse.Namespace) -> None:
    import boto3
    from prefect.testing.utilities import prefect_test_harness

    from batchpred import config, db, demo, registry

    work = Path(tempfile.mkdtemp(prefix="bp-dask-bench-"))
    runs: list[Run] = []
    memory: list[tuple[str, int, int, int, int]] = []  # shape, worker, RSS, VmHWM, tasks
    info: dict[str, Any] = {"load_start": loadavg()}
    try:
        with moto_server(work / "moto.log") as (endpoint, moto):
            os.environ.update(
                AWS_ENDPOINT_URL=endpoint,
                AWS_ACCESS_KEY_ID="bench",
                AWS_SECRET_ACCESS_KEY="bench",
                AWS_DEFAULT_REGION="us-east-1",
            )
            bucket = f"bp-bench-{uuid.uuid4().hex[:8]}"
            boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
                Bucket=bucket
            )
            files = configs(work, bucket, args.rows, args.days, {})
            settings = config.load_settings(files)
            spec = settings.dataset
            log(f"writing {args.days} demo partitions of {args.rows:,} rows to {settings.lake.raw}")
            t = time.perf_counter()
            days = demo.write_demo_source(spec, settings.demo, settings.lake.raw)
            info["generate_s"] = time.perf_counter() - t
            info["lake_mib"] = lake_mib(settings.lake.raw, days)
            log(f"  {info['generate_s']:.1f}s, {info['lake_mib']:.0f} MiB of Parquet on S3")
            log("training the churn model (base.yaml's params) and registering it on S3")
            model_dir = train(settings, work)
            with database(args.db, work) as url:
                engine = db.create_engine(url)
                db.migrate(engine)
                version = registry.register_model(engine, model_dir, settings.training.registry)
                shutil.rmtree(work / "train")  # the workers have only the S3 registry
                row = registry.get_version(engine, version)
                model = registry.load_model(engine, version)
                info["model"] = (
                    f"{version}, {model.booster.num_boosted_rounds()} trees of depth <= 6, "
                    f"{len(model.contract.feature_names)} features, at {row['uri']}"
                )
                info["db"] = _db_name(engine)
                record_verdicts(engine, settings, days)
                os.environ["BATCHPRED_DATABASE_URL"] = url
                # no PREFECT_API_URL for the workers: the flow's settings travel with each task
                env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
                env["PYTHONPATH"] = os.pathsep.join(
                    filter(None, [str(ROOT), env.get("PYTHONPATH")])
                )
                expected: tuple[int, str] | None = None

                def check() -> None:
                    nonlocal expected
                    got = digest(engine, version)
                    if got[0] != args.days * args.rows:
                        raise RuntimeError(f"{got[0]} predictions, not {args.days * args.rows}")
                    expected = expected or got
                    if got != expected:
                        raise RuntimeError("a run left other predictions than the first")

                log(f"starting the Prefect test server and {len(SHAPES)} Dask clusters")
                with (
                    prefect_test_harness(server_startup_timeout=300),
                    clusters(work, env, SHAPES) as up,
                ):
                    targets: list[tuple[str, str, list[str], list[int]]] = [
                        ("threads", "1 x 2", files, [])
                    ]
                    for c in up:
                        layer = {"scoring": {"dask_address": c.address}}
                        dask_files = configs(work, bucket, args.rows, args.days, layer)
                        targets.append(("dask", c.shape, dask_files, [w.pid for w in c.workers]))
                    for i in range(args.repeat + 1):  # interleaved: load drift hits every shape
                        kind = "cold" if i == 0 else "warm"
                        for runner, shape, run_files, pids in targets:
                            seconds, cpu, moto_cpu = timed_score(
                                run_files, days, version, pids, moto
                            )
                            check()
                            run = Run(
                                runner,
                                shape,
                                kind,
                                seconds,
                                len(days) * args.rows,
                                cpu if pids else None,
                                moto_cpu,
                            )
                            runs.append(run)
                            log(
                                f"{runner} {shape} {kind}: {seconds:.1f}s, "
                                f"{run.rows_per_s:,.0f} rows/s, workers' CPU {cpu:.1f}s, "
                                f"moto {moto_cpu:.1f}s (load {loadavg()})"
                            )
                    for c in up:
                        executed = c.client.run(_worker_facts)
                        by_pid = {f["pid"]: f for f in executed.values()}
                        for n, w in enumerate(c.workers):
                            peak = status_kib(w.pid, "VmHWM")
                            facts = by_pid[w.pid]
                            memory.append(
                                (c.shape, n, c.rss_joined_kib[w.pid], peak, facts["executed"])
                            )
                engine.dispose()
        info["load_end"] = loadavg()
        text = report(args, runs, memory, info)
        print("\n" + text, flush=True)
        if not args.no_doc:
            write_section(text)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _db_name(engine: Any) -> str:
    import sqlalchemy as sa

    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            version = conn.execute(sa.text("show server_version")).scalar()
            return f"PostgreSQL {str(version).split()[0]} (local, 127.0.0.1)"
        return f"SQLite {conn.execute(sa.text('select sqlite_version()')).scalar()}"


# --- report -------------------------------------------------------------------------------------


def _median(runs: list[Run], runner: str, shape: str, kind: str) -> Run | None:
    chosen = [r for r in runs if (r.runner, r.shape, r.kind) == (runner, shape, kind)]
    if not chosen:
        return None
    cpu = [r.worker_cpu for r in chosen if r.worker_cpu is not None]
    moto = [r.moto_cpu for r in chosen if r.moto_cpu is not None]
    return Run(
        runner,
        shape,
        kind,
        statistics.median(r.seconds for r in chosen),
        chosen[0].rows,
        statistics.median(cpu) if cpu else None,
        statistics.median(moto) if moto else None,
    )


ORDER = [("threads", "1 x 2"), *[("dask", f"{n} x {t}") for n, t in SHAPES]]


def report(
    args: argparse.Namespace,
    runs: list[Run],
    memory: list[tuple[str, int, int, int, int]],
    info: dict[str, Any],
) -> str:
    import distributed
    import prefect
    import prefect_dask
    import xgboost

    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python -m tests.benchmarks.dask_scale"
    if (args.days, args.rows, args.db, args.repeat) != (6, 200_000, "pg", 2):
        cmd += f" --days {args.days} --rows {args.rows} --db {args.db} --repeat {args.repeat}"
    rows = args.days * args.rows
    base = _median(runs, "dask", "1 x 1", "warm")
    lines = [
        f"Generated by `{cmd}` on {now}. Figures, not assertions.",
        "",
        f"- {os.cpu_count()} CPU(s), {platform.platform()}; Python {platform.python_version()}, "
        f"xgboost {xgboost.__version__}, Prefect {prefect.__version__}, prefect-dask "
        f"{prefect_dask.__version__}, distributed {distributed.__version__}; {info['db']}",
        f"- **Shared machine**: load average {info['load_start']} at the start and "
        f"{info['load_end']} at the end (1 / 5 / 15 min), from other work on the same cores. "
        "Read rows/s as a floor; rows per worker CPU-second depends far less on the load.",
        f"- backfill: {args.days} days x {args.rows:,} rows ({rows:,} rows, "
        f"{info['lake_mib']:.0f} MiB of Parquet) of the churn demo on S3, served by a moto "
        f"server on loopback (the same cores); model {info['model']}; predictions into "
        f"{info['db']}; scoring.batch_rows 131,072, scoring.nthread 1",
        "- runners: `threads` is the flow's own thread pool (scoring.concurrency 2, one "
        "process); `dask P x T` is P `dask worker --nthreads T --no-nanny --preload "
        "tasks.scoring` processes and a `dask scheduler` (scoring.dask_address), each shape its "
        "own cluster, started in an empty directory, all up for the whole benchmark. Runs are "
        f"interleaved (every shape once, then again): `cold` is each shape's first run (each "
        "worker fetches the model from S3 and checks both sha256 before its first partition), "
        f"`warm` the median of {args.repeat} more. Every run re-scores every day (force) and "
        "leaves identical predictions (checked by digest).",
        "",
        "| runner | processes x threads | run | seconds | rows/s | vs dask 1 x 1 warm | "
        "workers' CPU s | worker cores busy | rows per worker CPU-second | moto CPU s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for runner, shape in ORDER:
        for kind in ("cold", "warm"):
            r = _median(runs, runner, shape, kind)
            if r is None:
                continue
            ratio = f"{r.rows_per_s / base.rows_per_s:.2f}x" if base else ""
            if r.worker_cpu:
                cpu, busy = f"{r.worker_cpu:.1f}", f"{r.worker_cpu / r.seconds:.2f}"
                per_cpu = f"{r.rows / r.worker_cpu:,.0f}"
            else:
                cpu, busy, per_cpu = "(the flow's process)", "", ""
            moto = f"{r.moto_cpu:.1f}" if r.moto_cpu is not None else ""
            lines.append(
                f"| {runner} | {shape} | {kind} | {r.seconds:.1f} | {r.rows_per_s:,.0f} | "
                f"{ratio} | {cpu} | {busy} | {per_cpu} | {moto} |"
            )
    lines += [
        "",
        "Worker memory (RSS once joined, after importing tasks.scoring, and the peak over every "
        "run):",
        "",
        "| processes x threads | worker | partitions run | RSS joined MiB | peak RSS MiB | "
        "peak - joined MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for shape, n, joined, peak, executed in memory:
        mib = [joined / 1024, peak / 1024, (peak - joined) / 1024]
        lines.append(
            f"| {shape} | {n} | {executed} | " + " | ".join(f"{m:.0f}" for m in mib) + " |"
        )
    two = _median(runs, "dask", "2 x 1", "warm")
    if base and two and base.worker_cpu and two.worker_cpu:
        lines += [
            "",
            f"2 workers / 1 worker (warm): {two.rows_per_s / base.rows_per_s:.2f}x rows/s; the "
            f"workers kept {base.worker_cpu / base.seconds:.2f} and "
            f"{two.worker_cpu / two.seconds:.2f} cores busy of {os.cpu_count()}, which the "
            "flow, the Prefect server, moto, PostgreSQL and other work share with them.",
        ]
    return "\n".join(lines)


def write_section(body: str) -> None:
    """Replace this script's section of docs/benchmarks.md (the heading, then the markers), or
    append it; everything else in the file is kept."""
    block = f"{HEADING}\n{BEGIN}\n\n{body.strip()}\n\n{END}\n"
    text = DOC.read_text() if DOC.exists() else ""
    start, stop = text.find(BEGIN), text.find(END)
    if start >= 0 and stop > start:
        if text[:start].endswith(f"{HEADING}\n"):
            start -= len(HEADING) + 1
        text = text[:start] + block.rstrip("\n") + text[stop + len(END) :]
    else:
        text = text.rstrip("\n") + ("\n\n" if text.strip() else "") + block
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(text.rstrip("\n") + "\n")
    log(f"wrote the scale-out section of {DOC}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.dask_scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--days", type=int, default=6)
    p.add_argument("--rows", type=int, default=200_000, help="rows per day")
    p.add_argument("--db", choices=["pg", "sqlite"], default="pg")
    p.add_argument("--repeat", type=int, default=2, help="warm runs per shape (after the cold one)")
    p.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md")
    bench(p.parse_args(argv))


if __name__ == "__main__":
    main()
