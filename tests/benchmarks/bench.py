"""Scoring benchmark: batchpred against the scripts people write instead, on the same data, the
same model and the same databases; every figure the median of --repeat runs (default 3, run
interleaved), all in this one process tree.

    .venv/bin/python -m tests.benchmarks.bench [--rows 2000000[,20000000]] [--partitions 16]
        [--features 30] [--repeat 3] [--repeat-large N] [--db pg,sqlite] [--python PY]
        [--no-small] [--no-doc]

Per size, each `--repeat` times:

  peers      naive: pandas.read_parquet -> Booster.predict(DMatrix) -> DataFrame.to_sql()
             (plain INSERT, pandas' defaults), into PostgreSQL and SQLite; competent: the same
             with to_sql(method=psql_insert_copy), the COPY callable of the pandas docs
             (PostgreSQL); arrow+COPY: pyarrow.parquet -> inplace_predict -> pyarrow CSV ->
             psycopg COPY (PostgreSQL). Each is launched as its user would
             (`python -m tests.benchmarks.peers SCRIPT JOB`, no batchpred imported) and timed
             as a whole process, launch to exit, as batchpred is; its own figure (model loaded
             to last commit) is reported beside it. Each loads the model once and appends to
             a table with no key or index. SQLite gets the pragmas of batchpred's engine
             (checked).
  batchpred  `python -m flows.score --start D1 --end Dn` as a user launches it (a child
             process, start-up included, Prefect's default INFO logging), with an ephemeral
             Prefect server (no PREFECT_API_URL) and against a running one (`prefect server
             start` on a free loopback port, started once, stopped at the end). From the run's
             own figures: the flow's wall time ("Beginning flow run" to "Finished in state"
             in its log), the time to the first partition (scoring_ledger.started_at), the
             ledger's per-partition seconds. Also the same scoring.score_partition calls
             without Prefect (scoring.concurrency threads, model loaded once).
  limits     read, predict and write each alone (one stream; write: batchpred's sink with
             and without the predictions_latest refresh, on PostgreSQL also beside another
             dataset's cached entities, and a plain COPY/INSERT), and the three overlapped
             (scoring.concurrency partitions at once) without exactly-once.

One untimed one-partition score run per Prefect mode comes first. A size after the first
(e.g. --rows 2000000,20000000) times only what its targets need: the competent and careful
scripts, the score process against the running server, and the stages overlapped without
exactly-once (what reading, predicting and copying the rows cost, the floor the targets are
read against). Then (unless --no-small) many small
partitions: 61 days of 1,000 rows into SQLite, `python -m flows.ingest` and
`python -m flows.score` as whole processes against a plain in-process loop (read, copy to
the lake, GX on the whole day, inplace_predict, INSERT).

Targets (issue 15), ratios of figures of the same run, reported MET / MISSED (never
asserted), and for a missed one the stage that holds it: the whole process against a running
server >= 1.5x the competent PostgreSQL script (>= 2x from 20 M rows) and >= 1.0x the careful
pyarrow + COPY one (the issue's at the first size; ours at every size); the score flow
within 1.3x the three stages overlapped without exactly-once; the sink with
predictions_latest kept within 1.3x a plain COPY; SQLite's whole process >= 1.5x the naive
script; 61 days of 1,000 rows ingested and validated in <= 30 s; Prefect start-up to the
first partition <= 4 s. The nightly's: tests/benchmarks/nightly.py.

Prints a markdown report and writes it to docs/benchmarks.md between this script's marker
comments (other sections of that file are kept), and every figure under a stable key to
docs/benchmarks.json. Figures and MET / MISSED verdicts, never
assertions. Uses a fresh PostgreSQL database (bench_<random>, dropped at the end) on
$BATCHPRED_BENCH_PG_ADMIN_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/postgres),
temporary lakes, SQLite files and Prefect homes (removed at the end).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from tests.benchmarks import peers

ROOT = Path(__file__).resolve().parents[2]
# The interpreter of the batchpred processes and of the peer scripts (--python): the
# Makefile passes a runtime-only environment (requirements.lock, what `make install` builds),
# as production runs; the dev environment adds scikit-learn, which xgboost imports if present.
PYTHON = sys.executable
DOC = ROOT / "docs" / "benchmarks.md"
PG_ADMIN_URL = os.environ.get(
    "BATCHPRED_BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
START = date(2026, 10, 1)
TRAIN_SAMPLE = 200_000
SQLITE_PRAGMAS = tuple(name for name, _ in peers.SQLITE_PRAGMAS)
_T0 = time.perf_counter()

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def loadavg() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


# --- shared with tests/benchmarks/nightly.py ------------------------------------------------


def verdict(ratio: float, target: float, higher_is_better: bool) -> str:
    ok = ratio >= target if higher_is_better else ratio <= target
    return "MET" if ok else "MISSED"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prefect_env(home: Path, api_url: str | None) -> dict[str, str]:
    """The environment of a child flow process: its own PREFECT_HOME (a fresh Prefect database,
    migrated up front), Prefect's default INFO logging, PREFECT_API_URL only for a running
    server. A longer ephemeral start-up timeout only stops a loaded machine from failing."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_LOGGING_LEVEL="INFO",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONPATH=f"{ROOT}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(ROOT),
        PATH=f"{Path(PYTHON).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def prefect_home(path: Path) -> Path:
    """A Prefect home with its database migrated (so no run pays for the migrations)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(Path(sys.executable).parent / "prefect"), "server", "database", "upgrade", "-y"],
        env=prefect_env(path, None),
        check=True,
        capture_output=True,
    )
    return path


@contextmanager
def prefect_server(home: Path, logfile: Path) -> Iterator[str]:
    """`prefect server start` on a free loopback port; yields its API URL; stops it after."""
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    fh = open(logfile, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "prefect"),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=prefect_env(home, None),
        stdout=fh,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped as a whole below
    )
    try:
        t = time.perf_counter()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited ({proc.returncode}): see {logfile}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - t > 180:
                raise RuntimeError(f"prefect server did not answer in 180 s: see {logfile}")
            time.sleep(0.5)
        log(f"Prefect server up at {url} in {time.perf_counter() - t:.1f}s")
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        fh.close()


def machine(pg_version: str | None = None) -> list[str]:
    import pandas
    import pyarrow
    import sqlalchemy
    import xgboost

    cpu = "unknown"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    try:
        import prefect

        prefect_v = prefect.__version__
    except Exception:  # noqa: BLE001
        prefect_v = "?"
    return [
        f"- {os.cpu_count()} CPU(s): {cpu}; RAM {mem}; {platform.platform()}",
        f"- Python {platform.python_version()}, xgboost {xgboost.__version__}, pyarrow "
        f"{pyarrow.__version__}, pandas {pandas.__version__}, SQLAlchemy {sqlalchemy.__version__}"
        f", Prefect {prefect_v}, SQLite {sqlite3.sqlite_version}"
        + (f", PostgreSQL {pg_version} (local, 127.0.0.1)" if pg_version else ""),
    ]


OLD_SECTIONS = {  # headings of the single-section report older versions of bench.py wrote
    "Machine",
    "Workload",
    "Timings",
    "Peak memory (VmHWM of the child process)",
    "Targets",
    "Why a target is missed",
}


def write_doc_section(
    tag: str, heading: str, body: str, *, first: bool = False, after: str | None = None
) -> None:
    """Put `heading` + `body` into docs/benchmarks.md between `<!-- begin TAG -->` and
    `<!-- end TAG -->` (the markers follow the heading, so a script that replaces its own
    `## ` section up to the next heading never eats them); everything else in the file is
    kept. A new section goes first (`first`), right after section `after` if that is there,
    or last. The body must use `###` headings."""
    begin, end = f"<!-- begin {tag}: generated, replaced on every run -->", f"<!-- end {tag} -->"
    block = f"{heading}\n{begin}\n\n{body.strip()}\n\n{end}\n"
    text = DOC.read_text() if DOC.exists() else ""
    if text.startswith("# Scoring benchmark") and "<!-- begin " not in text:
        # the old single-section report: drop its sections, keep any other's
        keep, skipping = [], True
        for part in re.split(r"(?m)^(?=## )", text):
            if part.startswith("## "):
                skipping = part[3:].splitlines()[0].strip() in OLD_SECTIONS
            if not skipping:
                keep.append(part)
        text = "".join(keep)
    if not text.startswith("# "):
        text = (
            "# Benchmarks\n\nFigures, not assertions: each section is written by the script it "
            "names, on the machine it describes.\n\n" + text.lstrip("\n")
        )
    at = text.find(begin.split(":")[0])
    if at >= 0 and text.find(end, at) >= 0:
        start = text.rfind("\n## ", 0, at) + 1  # the section's heading line
        stop = text.find(end, at) + len(end)
        text = text[:start] + block.rstrip("\n") + text[stop:]
    else:
        head = re.search(rf"(?m)^{re.escape(heading)}\n", text)
        if head:  # the heading without markers: replace up to the next `## ` or `# `
            nxt = re.search(r"(?m)^#{1,2} ", text[head.end() :])
            stop = head.end() + nxt.start() if nxt else len(text)
            text = text[: head.start()] + block + "\n" + text[stop:]
        elif first:
            nxt = re.search(r"(?m)^## ", text)
            at = nxt.start() if nxt else len(text)
            text = text[:at].rstrip("\n") + "\n\n" + block + "\n" + text[at:]
        elif after and f"<!-- end {after} -->" in text:
            at = text.find(f"<!-- end {after} -->") + len(f"<!-- end {after} -->")
            text = text[:at] + "\n\n" + block + text[at:]
        else:
            text = text.rstrip("\n") + "\n\n" + block
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(re.sub(r"\n{3,}", "\n\n", text).rstrip("\n") + "\n")
    log(f"wrote the {tag} section of {DOC}")


# --- dataset, configs, model ------------------------------------------------------------------


def dataset_yaml(n_features: int) -> dict[str, Any]:
    """30 features by default: mostly floats, 4 ints, 3 categories, one nullable float."""
    n_cat = 3 if n_features >= 10 else 1
    n_int = 4 if n_features >= 10 else 1
    n_float = n_features - n_cat - n_int
    features: list[dict[str, Any]] = []
    for i in range(n_float):
        f: dict[str, Any] = {"name": f"f{i:02d}", "dtype": "float", "min": 0, "max": 1000}
        if i == 2:
            f["nullable"] = True
        features.append(f)
    for i in range(n_int):
        features.append({"name": f"i{i:02d}", "dtype": "int", "min": 0, "max": 500})
    cats = [
        ["a", "b", "c"],
        ["north", "south", "east", "west", "central"],
        ["card", "bank", "paypal", "invoice"],
    ]
    for i in range(n_cat):
        features.append({"name": f"c{i:02d}", "dtype": "category", "categories": cats[i]})
    return {
        "dataset": {
            "name": "bench",
            "entity_id": "entity_id",
            "entity_id_dtype": "int",
            "event_date": "event_date",
            "target": {"name": "label", "task": "binary"},
            "features": features,
        }
    }


def write_configs(
    tmp: Path, tag: str, n_features: int, start: date, rows_per_day: int, days: int
) -> list[str]:
    import yaml

    (tmp / "dataset.yaml").write_text(yaml.safe_dump(dataset_yaml(n_features), sort_keys=False))
    override = {
        "demo": {
            "start_date": start.isoformat(),
            "days": days,
            "rows_per_day": rows_per_day,
            "unlabelled_days": 0,
            "null_label_fraction": 0.0,
        },
        "source": {"url": str(tmp / f"source-{tag}")},
        "lake": {
            "raw": str(tmp / f"lake-{tag}"),
            "labels": str(tmp / f"labels-{tag}"),
            "reports": str(tmp / f"reports-{tag}"),
        },
        "training": {"registry": str(tmp / "models")},
        "validation": {"data_docs": False},
    }
    (tmp / f"bench-{tag}.yaml").write_text(yaml.safe_dump(override, sort_keys=False))
    return [
        str(ROOT / "configs/base.yaml"),
        str(tmp / "dataset.yaml"),
        str(tmp / f"bench-{tag}.yaml"),
    ]


def train_and_save(settings: Any, lake: str, days: list[date], out: Path) -> Path:
    """300 rounds, depth 6, on a sample of the first partitions; saved like train_model does."""
    import pyarrow as pa
    import xgboost as xgb

    from batchpred import storage, training
    from batchpred.schema import arrow_schema, build_contract

    spec = settings.dataset
    schema = arrow_schema(spec)
    tables, n = [], 0
    for d in days:
        t = storage.read_partition(lake, d, columns=schema.names).select(schema.names).cast(schema)
        tables.append(t)
        n += t.num_rows
        if n >= TRAIN_SAMPLE:
            break
    train = pa.concat_tables(tables).slice(0, TRAIN_SAMPLE).combine_chunks()
    params = training.effective_params(settings)
    contract = build_contract(spec, train)
    booster = xgb.train(
        params,
        training._dmatrix(train, spec, contract),
        num_boost_round=settings.training.num_boost_round,
    )
    training.save_model(
        booster,
        settings,
        contract,
        train,
        out,
        best_iteration=settings.training.num_boost_round - 1,
        training_data_hash=storage.table_hash(train),
        days=[d.isoformat() for d in days[: len(tables)]],
    )
    return out


class Workload:
    """One size: its lake (ingested from a demo source, with manifests, as the ingest flow
    leaves it), its days, its configs, and the verdicts of its partitions."""

    def __init__(self, tmp: Path, tag: str, args: argparse.Namespace, start: date) -> None:
        from batchpred import config, demo, ingestion, rules, storage, validation

        self.tag = tag
        self.rows_per_day = args.rows_list[int(tag)] // args.partitions
        self.rows = self.rows_per_day * args.partitions
        self.config = write_configs(
            tmp, tag, args.features, start, self.rows_per_day, args.partitions
        )
        self.settings = config.load_settings(self.config)
        self.spec = self.settings.dataset
        self.lake = self.settings.lake.raw
        log(f"size {self.rows:,}: generating {args.partitions} partitions of {self.rows_per_day:,}")
        t = time.perf_counter()
        source_days = demo.write_demo_source(
            self.spec, self.settings.demo, self.settings.source.url
        )
        self.gen_s = time.perf_counter() - t
        t = time.perf_counter()
        for day in source_days:
            ingestion.ingest_partition(self.settings, day)
        self.days = storage.list_partitions(self.lake)
        self.ingest_s = time.perf_counter() - t
        shutil.rmtree(self.settings.source.url, ignore_errors=True)
        self.lake_mb = sum(p.stat().st_size for p in Path(self.lake).rglob("*.parquet")) / 2**20
        log(
            f"  generated in {self.gen_s:.1f}s, ingested in {self.ingest_s:.1f}s "
            f"({self.lake_mb:.0f} MiB)"
        )
        log("  validating every partition once, as ingest does (not timed)")
        verdicts_db = tmp / f"verdicts-{tag}.db"
        from batchpred import db

        engine = db.create_engine(f"sqlite:///{verdicts_db}")
        db.migrate(engine)
        spec, cfg = self.spec, self.settings.validation
        self.verdicts = []
        for day in self.days:
            report = validation.validate_partition(
                engine, spec, cfg, self.lake, day, reports_url=None, run_id="bench"
            )
            if not report.success:
                raise RuntimeError(f"bench partition {day} failed validation: {report.message()}")
            key = storage.fingerprint_partition(self.lake, day)
            self.verdicts.append((spec.name, day, key, rules.spec_hash(spec, cfg), report))
        engine.dispose()

    def seed(self, engine: Any) -> None:
        from batchpred import verdicts

        for dataset, day, key, spec_hash, report in self.verdicts:
            verdicts.record(engine, dataset, day, key, spec_hash, report, "bench")


# --- databases ---------------------------------------------------------------------------------


def reset_pg(engine: Any) -> None:
    """As before a first run: no day tables, nothing in the ledger or predictions_latest."""
    import sqlalchemy as sa

    from batchpred import sinks

    with engine.begin() as conn:
        names = conn.execute(
            sa.text(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = :s AND c.relname ~ '^predictions_[0-9]{8}$'"
            ),
            {"s": sinks.PARTITIONS},
        ).scalars()
        for name in list(names):
            conn.exec_driver_sql(f"DROP TABLE {sinks.PARTITIONS}.{name} CASCADE")
        conn.exec_driver_sql("TRUNCATE predictions_latest, scoring_ledger, rejected_rows")


def fresh_sqlite(template: Path, path: Path) -> str:
    """A copy of the template database (migrated, model registered, verdicts seeded)."""
    drop_sqlite(path)
    src, dst = sqlite3.connect(template), sqlite3.connect(path)
    with dst:
        src.backup(dst)
    src.close()
    dst.close()
    return f"sqlite:///{path}"


def drop_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def peer_sqlite_engine(path: Path) -> Any:
    """A fresh SQLite file and the engine a peer script makes for it."""
    drop_sqlite(path)
    return peers.engine(f"sqlite:///{path}")


def pragmas(engine: Any) -> dict[str, Any]:
    with engine.connect() as conn:
        return {p: conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in SQLITE_PRAGMAS}


PEER_DDL = (
    "CREATE TABLE {name} (partition_date DATE, entity_id TEXT, score DOUBLE PRECISION, "
    "label SMALLINT, model_version TEXT, scored_at TIMESTAMP WITH TIME ZONE)"
)


def fresh_peer_table(engine: Any, name: str = "peer_predictions") -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        conn.exec_driver_sql(PEER_DDL.format(name=name))


# --- the peer scripts ---------------------------------------------------------------------------


# --- many small partitions ----------------------------------------------------------------------

SMALL_DAYS, SMALL_ROWS = 61, 1_000


def flow_window(stdout: str, flow: str, launch: datetime) -> tuple[datetime, datetime]:
    """'Beginning flow run' and 'Finished in state' of the first run of `flow` in a log."""
    begin = end = None
    run_name = None
    for line in stdout.splitlines():
        m = LOG_LINE.match(line)
        if not m:
            continue
        clock, name, message = m.groups()
        if (
            begin is None
            and message.startswith("Beginning flow run")
            and f"for flow '{flow}'" in message
        ):
            begin, run_name = _log_time(clock, launch), name
        elif name == run_name and message.startswith("Finished in state"):
            end = _log_time(clock, launch)
    if begin is None or end is None:
        raise RuntimeError(f"no 'Beginning flow run' / 'Finished in state' of {flow} in the log")
    return begin, end


def ingest_process(config: list[str], home: Path, api_url: str, db_url: str) -> dict[str, float]:
    """`python -m flows.ingest` over every source day, as a user launches it."""
    cmd = [PYTHON, "-m", "flows.ingest"]
    for c in config:
        cmd += ["--config", c]
    env = {**prefect_env(home, api_url), "BATCHPRED_DATABASE_URL": db_url}
    launch = datetime.now(UTC)
    t = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    process_s = time.perf_counter() - t
    if proc.returncode or f"passed: {SMALL_DAYS} partition(s); failed: 0" not in proc.stdout:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    begin, end = flow_window(proc.stdout, "ingest", launch)
    return {"process_s": process_s, "flow_s": (end - begin).total_seconds()}


def small_peer(settings: Any, days: list[date], model_file: Path, contract: Any, db: Path) -> float:
    """The loop a good engineer writes for the same job, in-process (imports not counted):
    one GX context, then per day: read the source file with pyarrow, write it to the lake,
    validate it whole with GX against the same suite batchpred builds for that day, predict
    with inplace_predict, INSERT into SQLite (a table with no key) and commit."""
    import great_expectations as gx
    import pyarrow.parquet as pq
    import xgboost as xgb

    from batchpred import storage, validation

    spec, cfg, lake = settings.dataset, settings.validation, Path(settings.lake.raw)
    t = time.perf_counter()
    from great_expectations.data_context.types.base import InMemoryStoreBackendDefaults

    # quiet, as a careful engineer would run it: no progress bar per validation
    project = validation._config(store_backend_defaults=InMemoryStoreBackendDefaults())
    ctx = gx.get_context(mode="ephemeral", project_config=project)
    whole = ctx.data_sources.add_pandas("peer").add_dataframe_asset("day")
    definition = whole.add_batch_definition_whole_dataframe("whole")
    booster = xgb.Booster(model_file=str(model_file))
    booster.set_param({"nthread": 1})
    drop_sqlite(db)  # a fresh database each run
    conn = _plain_conn("sqlite", str(db))
    conn.execute(PEER_DDL.format(name="peer_predictions"))
    for day in days:
        (source,) = storage.partition_files(settings.source.url, day)
        table = pq.read_table(source)
        (lake / f"dt={day}").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, lake / f"dt={day}" / "part-0.parquet")
        frame = validation._for_gx(table.to_pandas())
        suite = validation.build_suite(spec, cfg, columns=list(frame.columns), day=day)
        result = definition.get_batch(batch_parameters={"dataframe": frame}).validate(suite)
        if not result.success:
            raise RuntimeError(f"peer: {day} failed validation")
        scores = booster.inplace_predict(peers.arrow_matrix(table, contract.features))
        _sqlite_insert(
            conn,
            peers.arrow_predictions(table, day, scores, contract.threshold, "peer", spec.entity_id),
        )
        conn.commit()
    conn.close()
    return time.perf_counter() - t


def small_partitions(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    """SMALL_DAYS days of SMALL_ROWS rows into SQLite, the embedded default: batchpred's
    `python -m flows.ingest` (pull and validate every day) then `python -m flows.score`, each
    a whole process against the running server, from an empty lake and database each time;
    against small_peer. Median of --repeat, interleaved."""
    from types import SimpleNamespace

    from batchpred import config, db, demo, registry

    tmp = ctx.tmp
    cfg = write_configs(tmp, "small", args.features, START, SMALL_ROWS, SMALL_DAYS)
    settings = config.load_settings(cfg)
    days = demo.write_demo_source(settings.dataset, settings.demo, settings.source.url)
    log(f"small partitions: {len(days)} days of {SMALL_ROWS:,} rows")
    runs = Runs()
    w = SimpleNamespace(config=cfg, rows_per_day=SMALL_ROWS)

    def empty_lake() -> None:
        for zone in (settings.lake.raw, settings.lake.labels, settings.lake.reports):
            shutil.rmtree(zone, ignore_errors=True)

    for rep in range(args.repeat):
        empty_lake()
        path = tmp / "small.db"
        drop_sqlite(path)
        engine = db.create_engine(f"sqlite:///{path}")
        db.migrate(engine)
        version = registry.register_model(engine, ctx.model_dir, settings.training.registry)
        registry.set_alias(
            engine, settings.dataset.name, registry.CHAMPION, version, "bench", by="bench"
        )
        engine.dispose()
        url = f"sqlite:///{path}"
        ingest = ingest_process(cfg, ctx.homes["srv"], ctx.api_url, url)
        runs.add("ingest", ingest)
        score = score_process(url, w, ctx.homes["srv"], ctx.api_url, tmp / "small.log", days)  # type: ignore[arg-type]
        runs.add("score", score)
        empty_lake()
        peer = small_peer(settings, days, ctx.model_file, ctx.model.contract, tmp / "peer-small.db")
        runs.add("peer", peer)
        log(
            f"  run {rep + 1}: ingest process {ingest['process_s']:.1f}s (flow "
            f"{ingest['flow_s']:.1f}s), score process {score['process_s']:.1f}s; peer loop "
            f"{peer:.1f}s"
        )
    empty_lake()
    return {
        "days": SMALL_DAYS,
        "rows_per_day": SMALL_ROWS,
        "figures": _figures(runs),
        "ingest": {k: runs.s("ingest", k) for k in ("process_s", "flow_s")},
        "score": {k: runs.s("score", k) for k in ("process_s", "flow_s", "ledger_mean_s")},
        "peer_s": runs.s("peer"),
        "spread": {
            "ingest": runs.spread("ingest", "process_s"),
            "score": runs.spread("score", "process_s"),
            "peer": runs.spread("peer"),
        },
    }


def small_report(small: dict[str, Any]) -> list[str]:
    i, sc, peer = small["ingest"], small["score"], small["peer_s"]
    sp = small["spread"]
    both = i["process_s"] + sc["process_s"]
    return [
        f"### Many small partitions: {small['days']} days of {small['rows_per_day']:,} rows",
        "",
        "Into SQLite (the embedded default), from an empty lake and database each run, "
        "against the running server. The peer: one in-process loop (imports not counted), "
        "per day pyarrow read, lake copy, Great Expectations on the whole day with the same "
        "suite, inplace_predict, INSERT, commit.",
        "",
        "| what | seconds | min-max |",
        "|---|---:|---:|",
        f"| batchpred `python -m flows.ingest` (pull + validate), whole process | "
        f"{i['process_s']:.2f} | {sp['ingest']} |",
        f"| its flow | {i['flow_s']:.2f} | |",
        f"| batchpred `python -m flows.score`, whole process | {sc['process_s']:.2f} | "
        f"{sp['score']} |",
        f"| its flow ({sc['ledger_mean_s']:.3f}s a partition in the ledger) | "
        f"{sc['flow_s']:.2f} | |",
        f"| **batchpred, ingest + score** | {both:.2f} | |",
        f"| peer loop: read, copy, validate, predict, insert | {peer:.2f} | {sp['peer']} |",
        "",
        f"batchpred ingest + score over the peer loop: {both / peer:.2f}x the time.",
    ]


# --- batchpred: the score process, and the same calls without Prefect ------------------------

LOG_LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3}) \| \w+\s*\| Flow run '([^']*)' - (.*)$")


def _log_time(clock: str, launch: datetime) -> datetime:
    """A console log time (local HH:MM:SS.mmm) as UTC, on the launch's day (or the next)."""
    local = launch.astimezone()
    t = datetime.strptime(clock, "%H:%M:%S.%f").time()
    at = datetime.combine(local.date(), t, tzinfo=local.tzinfo)
    if at < local - timedelta(minutes=5):
        at += timedelta(days=1)
    return at.astimezone(UTC)


def _utc(ts: Any) -> datetime:
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def score_process(
    db_url: str, w: Workload, home: Path, api_url: str | None, logfile: Path, days: list[date]
) -> dict[str, Any]:
    """`python -m flows.score --start D1 --end Dn` (champion) as a user launches it; timed
    from launch to exit, the flow and its partitions from its log and its ledger rows."""
    import sqlalchemy as sa

    from batchpred import db

    cmd = [PYTHON, "-m", "flows.score", "--start", str(days[0]), "--end", str(days[-1])]
    for c in w.config:
        cmd += ["--config", c]
    env = {**prefect_env(home, api_url), "BATCHPRED_DATABASE_URL": db_url}
    launch = datetime.now(UTC)
    t = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    process_s = time.perf_counter() - t
    logfile.write_text(proc.stdout)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    begin, end = flow_window(proc.stdout, "score", launch)
    engine = db.create_engine(db_url)
    ledger = db.table(engine, "scoring_ledger")
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                ledger.c.started_at, ledger.c.finished_at, ledger.c.seconds, ledger.c.rows_scored
            )
        ).all()
    engine.dispose()
    if len(rows) != len(days) or sum(r.rows_scored for r in rows) != w.rows_per_day * len(days):
        raise RuntimeError(f"score process left {len(rows)} ledger rows, expected {len(days)}")
    first = min(_utc(r.started_at) for r in rows)
    last = max(_utc(r.finished_at) for r in rows)
    return {
        "process_s": process_s,
        "flow_s": (end - begin).total_seconds(),
        "to_flow_s": (begin - launch).total_seconds(),  # imports, API or ephemeral server
        "flow_setup_s": (first - begin).total_seconds(),  # flow begun -> first partition
        "to_first_s": (first - launch).total_seconds(),
        "partitions_s": (last - first).total_seconds(),
        "wrapup_s": (end - last).total_seconds(),  # last partition -> flow finished
        "exit_s": process_s - (end - launch).total_seconds(),
        "ledger_mean_s": statistics.mean(r.seconds for r in rows),
        "ledger_sum_s": sum(r.seconds for r in rows),
    }


def plain_loop(db_url: str, w: Workload, version: str) -> float:
    """scoring.score_partition over every partition in scoring.concurrency threads, no Prefect;
    model loaded (and sha256-checked) once, as the flow's tasks share it; newest day first,
    as the score flow submits them."""
    from batchpred import db, registry, scoring

    s = w.settings
    engine = db.create_engine(db_url)
    db.tables(engine)
    run_id = f"plain-{uuid.uuid4().hex[:8]}"
    t = time.perf_counter()
    model = registry.load_model(engine, version)
    model.booster.set_param({"nthread": s.scoring.nthread})

    def one(day: date) -> Any:
        return scoring.score_partition(
            engine, s.dataset, s.validation, s.scoring, model, w.lake, day, run_id
        )

    with ThreadPoolExecutor(max_workers=s.scoring.concurrency) as pool:
        results = list(pool.map(one, sorted(w.days, reverse=True)))
    elapsed = time.perf_counter() - t
    engine.dispose()
    if sum(r.rows_scored for r in results) != w.rows:
        raise RuntimeError("plain loop scored a different number of rows")
    return elapsed


# --- the limits ---------------------------------------------------------------------------------


def read_alone(w: Workload, features: list[str]) -> tuple[float, dict[date, list[Any]]]:
    from batchpred import scoring

    batches: dict[date, list[Any]] = {}
    t = time.perf_counter()
    for day in w.days:
        batches[day] = [
            b
            for _, b in scoring.iter_input_batches(
                w.lake, day, w.spec, w.settings.scoring.batch_rows, features
            )
        ]
    return time.perf_counter() - t, batches


def predict_alone(
    model: Any, w: Workload, batches: dict[date, list[Any]]
) -> tuple[float, dict[date, list[Any]]]:
    import numpy as np

    from batchpred import schema

    model.booster.set_param({"nthread": os.cpu_count() or 1})
    out: dict[date, list[Any]] = {}
    t = time.perf_counter()
    for day, bs in batches.items():
        out[day] = []
        for b in bs:
            X, _ = schema.feature_matrix(b, model.contract)
            s = model.booster.inplace_predict(X, validate_features=False)
            out[day].append(
                (b.column(w.spec.entity_id), s, (s >= model.contract.threshold).astype(np.int8))
            )
    return time.perf_counter() - t, out


def sink_alone(engine: Any, w: Workload, version: str, preds: dict[date, list[Any]]) -> float:
    """batchpred's sink with precomputed predictions, one partition after the other, newest
    first as the score flow submits them."""
    from batchpred import sinks, storage

    fingerprints = {d: storage.fingerprint_partition(w.lake, d) for d in preds}
    run_id = f"write-{uuid.uuid4().hex[:8]}"
    t = time.perf_counter()
    for day, parts in sorted(preds.items(), reverse=True):
        started = datetime.now(UTC)
        key = sinks.PartitionKey(w.spec.name, day, version)
        with sinks.partition_writer(engine, key, run_id, fingerprint=fingerprints[day]) as out:
            for ids, scores, labels in parts:
                out.write(sinks.PredictionBatch(ids, scores, labels))
            out.finish(
                sinks.LedgerEntry(fingerprints[day], sum(len(p[1]) for p in parts), 0, started)
            )
    return time.perf_counter() - t


def seed_other_dataset(engine: Any, entities: int) -> int:
    """`entities` rows of another dataset in predictions_latest, as a database serving
    several datasets holds them; returns how many. A refresh must not pay for them."""
    from batchpred import predictions

    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"INSERT INTO predictions_latest ({', '.join(predictions.COLUMNS)}) "
            "SELECT 'other_dataset', 'o-' || i, "
            "DATE '2026-01-01', 0.5, 1, 'ffffffffffffffff', 'seed', now() "
            f"FROM generate_series(1, {int(entities)}) AS i"
        )
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
            "VACUUM ANALYZE predictions_latest"
        )
    return entities


def _plain_rows(day: date, ids: Any, scores: Any, labels: Any, version: str) -> Any:
    import pyarrow as pa

    n = len(scores)
    return pa.table(
        {
            "partition_date": pa.repeat(pa.scalar(day, pa.date32()), n),
            "entity_id": ids.cast(pa.string()),
            "score": pa.array(scores, pa.float64()),
            "label": pa.array(labels, pa.int16()),
            "model_version": pa.repeat(version, n),
            "scored_at": pa.repeat(pa.scalar(datetime.now(UTC), pa.timestamp("us", "UTC")), n),
        }
    )


def _sqlite_insert(conn: Any, table: Any) -> None:
    cols = table.to_pydict()
    conn.executemany(
        "INSERT INTO peer_predictions VALUES (?, ?, ?, ?, ?, ?)",
        zip(
            (d.isoformat() for d in cols["partition_date"]),
            cols["entity_id"],
            cols["score"],
            cols["label"],
            cols["model_version"],
            (ts.isoformat(sep=" ") for ts in cols["scored_at"]),
            strict=True,
        ),
    )


def plain_write_alone(target: str, dsn: str, version: str, preds: dict[date, list[Any]]) -> float:
    """A plain bulk write of the same rows: COPY (PostgreSQL) or executemany (SQLite) into a
    table with no key, committed per partition."""
    conn = _plain_conn(target, dsn)
    t = time.perf_counter()
    for day, parts in preds.items():
        for ids, scores, labels in parts:
            table = _plain_rows(day, ids, scores, labels, version)
            if target == "pg":
                peers.copy_arrow(conn, table)
            else:
                _sqlite_insert(conn, table)
        conn.commit()
    elapsed = time.perf_counter() - t
    conn.close()
    return elapsed


PEER_LATEST = (
    'CREATE TABLE peer_latest (entity_id TEXT COLLATE "C" PRIMARY KEY, partition_date DATE, '
    "score DOUBLE PRECISION, label SMALLINT, model_version TEXT, scored_at TIMESTAMPTZ)"
)


def plain_latest_write_alone(dsn: str, version: str, preds: dict[date, list[Any]]) -> float:
    """What keeping a latest-per-entity table costs a careful script, PostgreSQL: each
    partition COPYed into a temporary table, appended to the peer table and upserted into
    `peer_latest` (`ON CONFLICT ... DO UPDATE` where the day is newer), committed per
    partition, newest first as batchpred writes. No ledger, no model ranking, no re-score."""
    conn = _plain_conn("pg", dsn)
    conn.execute("DROP TABLE IF EXISTS peer_latest")
    conn.execute(PEER_LATEST)
    conn.commit()
    cols = "entity_id, partition_date, score, label, model_version, scored_at"
    t = time.perf_counter()
    for day, parts in sorted(preds.items(), reverse=True):
        conn.execute("CREATE TEMP TABLE peer_day (LIKE peer_predictions) ON COMMIT DROP")
        for ids, scores, labels in parts:
            peers.copy_arrow(conn, _plain_rows(day, ids, scores, labels, version), "peer_day")
        conn.execute("INSERT INTO peer_predictions SELECT * FROM peer_day")
        conn.execute(
            f"INSERT INTO peer_latest ({cols}) SELECT {cols} FROM peer_day "
            "ON CONFLICT (entity_id) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in cols.split(", ")[1:])
            + " WHERE peer_latest.partition_date < excluded.partition_date"
        )
        conn.commit()
    elapsed = time.perf_counter() - t
    conn.execute("DROP TABLE peer_latest")
    conn.commit()
    conn.close()
    return elapsed


def _plain_conn(target: str, dsn: str) -> Any:
    if target == "pg":
        import psycopg

        return psycopg.connect(dsn)
    conn = sqlite3.connect(dsn, timeout=300, check_same_thread=False)
    for p, v in peers.SQLITE_PRAGMAS:
        conn.execute(f"PRAGMA {p}={v}")
    return conn


def overlapped(target: str, dsn: str, w: Workload, model: Any, version: str) -> float:
    """Read, predict and write overlapped: scoring.concurrency partitions at once, each
    streamed through batchpred's reader and matrix into a plain COPY/INSERT (no ledger, no
    key, no staging, no latest refresh): stages overlapped without exactly-once."""
    import threading

    import numpy as np

    from batchpred import schema, scoring

    s = w.settings
    model.booster.set_param({"nthread": s.scoring.nthread})
    sqlite_lock = threading.Lock()

    def one(day: date) -> int:
        conn = _plain_conn(target, dsn)
        n = 0
        for _, b in scoring.iter_input_batches(
            w.lake, day, w.spec, s.scoring.batch_rows, model.contract.feature_names
        ):
            X, _ = schema.feature_matrix(b, model.contract)
            scores = model.booster.inplace_predict(X, validate_features=False)
            labels = (scores >= model.contract.threshold).astype(np.int8)
            table = _plain_rows(day, b.column(w.spec.entity_id), scores, labels, version)
            if target == "pg":
                peers.copy_arrow(conn, table)
            else:
                with sqlite_lock:
                    _sqlite_insert(conn, table)
                    conn.commit()
            n += b.num_rows
        conn.commit()
        conn.close()
        return n

    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=s.scoring.concurrency) as pool:
        rows = sum(pool.map(one, w.days))
    elapsed = time.perf_counter() - t
    if rows != w.rows:
        raise RuntimeError("overlapped limit wrote a different number of rows")
    return elapsed


def row_checks(w: Workload, batches: dict[date, list[Any]]) -> tuple[float, float]:
    from batchpred import rules

    row_rules = rules.compile_rules(w.spec, w.settings.validation, label=False)
    t = time.perf_counter()
    for bs in batches.values():
        for b in bs:
            rules.evaluate(row_rules, b, {})
    checks = time.perf_counter() - t
    t = time.perf_counter()
    for bs in batches.values():
        tracker = rules.SeenIds()
        for b in bs:
            tracker.repeats(b.column(w.spec.entity_id))
    return checks, time.perf_counter() - t


# --- the benchmark ------------------------------------------------------------------------------


class Runs:
    """Every timing of every repeat, by name; figures are medians."""

    def __init__(self) -> None:
        self.values: dict[str, list[Any]] = {}

    def add(self, name: str, value: Any) -> None:
        self.values.setdefault(name, []).append(value)

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def s(self, name: str, key: str | None = None) -> float:
        vals = self.values.get(name, [])
        return median([v[key] if key else v for v in vals])

    def spread(self, name: str, key: str | None = None) -> str:
        vals = [v[key] if key else v for v in self.values.get(name, [])]
        return f"{min(vals):.2f}-{max(vals):.2f}" if len(vals) > 1 else ""


def bench(args: argparse.Namespace) -> None:
    import sqlalchemy as sa

    t_bench = time.perf_counter()
    load_before = loadavg()
    tmp = Path(tempfile.mkdtemp(prefix="batchpred-bench-"))
    targets = args.db
    pg_admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    pg_name = f"bench_{uuid.uuid4().hex[:10]}"
    pg_created = False
    info: dict[str, Any] = {}
    results: list[tuple[Workload, Runs]] = []
    try:
        with pg_admin.connect() as conn:
            info["pg_version"] = conn.execute(sa.text("SHOW server_version")).scalar()
            if "pg" in targets:
                conn.execute(sa.text(f'CREATE DATABASE "{pg_name}"'))
                pg_created = True
        pg_url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{pg_name}"
        pg_dsn = (
            sa.engine.make_url(pg_url)
            .set(drivername="postgresql")
            .render_as_string(hide_password=False)
        )
        log(f"temp dir {tmp}; PostgreSQL database {pg_name}; load average {load_before}")
        log("two Prefect homes, migrated: the ephemeral server's runs, the running server's")
        homes = {"eph": prefect_home(tmp / "prefect-ephemeral")}
        homes["srv"] = prefect_home(tmp / "prefect-server")
        with prefect_server(homes["srv"], tmp / "prefect-server.log") as api_url:
            ctx = Context(args, tmp, pg_url, pg_dsn, homes, api_url)
            for i in range(len(args.rows_list)):
                if i and "pg" not in targets:
                    log(f"size {args.rows_list[i]:,}: its targets are on PostgreSQL, skipped")
                    continue
                w = Workload(tmp, str(i), args, START + timedelta(days=200 * i))
                if i == 0:
                    log(f"training a 300-round depth-6 model on {TRAIN_SAMPLE:,} sampled rows")
                    t = time.perf_counter()
                    ctx.model_dir = train_and_save(w.settings, w.lake, w.days, tmp / "trained")
                    info["train_s"] = time.perf_counter() - t
                runs = Runs()
                results.append((w, runs))
                ctx.prepare(w, first=i == 0)
                if i == 0:
                    info["model"] = ctx.version
                    info["score_diff"] = check_peers(w, ctx.model, ctx.model_file)
                    if "sqlite" in targets:
                        peer = peer_sqlite_engine(tmp / "peer.db")
                        info["sqlite_pragmas"] = (pragmas(peer), pragmas_of_batchpred(tmp))
                        peer.dispose()
                    ctx.warm_up(w)
                repeat = args.repeat if i == 0 else args.repeat_large
                for rep in range(repeat):
                    log(f"--- {w.rows:,} rows, run {rep + 1} of {repeat} (load {loadavg()})")
                    ctx.one_run(w, runs, full=i == 0)
                ctx.close()
            if args.small and "sqlite" in targets:
                info["small"] = small_partitions(ctx, args)
    finally:
        if pg_created:
            with pg_admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))
        pg_admin.dispose()
        shutil.rmtree(tmp, ignore_errors=True)
    info["bench_s"] = time.perf_counter() - t_bench
    info["load"] = (load_before, loadavg())
    body = report(info, results, args)
    print("\n" + body, flush=True)
    if not args.no_doc:
        write_doc_section("bench.py", SECTION, body, first=True)
        JSON_PATH.write_text(json.dumps(as_json(info, results, args), indent=1) + "\n")
        log(f"wrote {JSON_PATH.relative_to(ROOT)}")


JSON_PATH = ROOT / "docs" / "benchmarks.json"


def _figure(values: list[float]) -> dict[str, Any]:
    return {"median": median(values), "min": min(values), "max": max(values), "runs": values}


def _figures(R: Runs) -> dict[str, Any]:
    """Every figure of a size: name -> {median, min, max, runs}, or name -> part -> that."""
    out: dict[str, Any] = {}
    for name, values in R.values.items():
        if isinstance(values[0], dict):
            out[name] = {k: _figure([v[k] for v in values]) for k in values[0]}
        else:
            out[name] = _figure(values)
    return out


def as_json(
    info: dict[str, Any], results: list[tuple[Workload, Runs]], args: argparse.Namespace
) -> dict[str, Any]:
    """docs/benchmarks.json: every figure of the run under stable keys, in seconds. Runs
    names: naive_/competent_/arrow_ (peer scripts, whole process; their work alone under
    the same name with _work after the database), proc_srv_/proc_eph_ (the score process,
    running or ephemeral server; parts as in the report), plain_ (score_partition without
    Prefect), read, predict, checks, dups, sink_, sink_crowded_ (beside another
    dataset's cached entities), sink_nolatest_, plainw_, plainw_latest_ (plain COPY and a
    latest table upserted by hand), overlap_; each
    suffixed _pg or _sqlite where it has a database."""
    small = info.get("small")
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "argv": [a for a in args.argv if a != "--python" and a != args.python],
        "repeat": args.repeat,
        "machine": machine(info.get("pg_version")),
        "bench_s": info["bench_s"],
        "load": list(info["load"]),
        "model": info.get("model"),
        "sizes": [
            {
                "rows": wx.rows,
                "partitions": len(wx.days),
                "rows_per_partition": wx.rows_per_day,
                "figures": _figures(Rx),
            }
            for wx, Rx in results
        ],
        "small_partitions": small,
        "targets": [
            {
                "key": t.key,
                "measure": t.measure,
                "value": t.value,
                "goal": t.goal,
                "higher_is_better": t.higher_is_better,
                "verdict": t.verdict,
            }
            for t in info.get("targets", [])
        ],
    }


SECTION = "## Scoring: batchpred and the scripts people write"


class Context:
    """What every run of a size uses: databases, model, Prefect homes and server."""

    def __init__(
        self,
        args: argparse.Namespace,
        tmp: Path,
        pg_url: str,
        pg_dsn: str,
        homes: dict[str, Path],
        api_url: str,
    ) -> None:
        self.args, self.tmp, self.pg_url, self.pg_dsn = args, tmp, pg_url, pg_dsn
        self.homes, self.api_url = homes, api_url
        self.targets = args.db
        self.model_dir: Path = tmp / "trained"
        self.pg: Any = None
        self.template: Path | None = None
        self.version = ""
        self.model: Any = None

    @property
    def model_file(self) -> Path:
        return self.model_dir / "model.ubj"

    def prepare(self, w: Workload, *, first: bool) -> None:
        """Migrate, register the model as champion and seed the verdicts: PostgreSQL (one
        database for every size), and a SQLite template copied before each SQLite run."""
        from batchpred import db, registry

        engines = {}
        if "pg" in self.targets:
            self.pg = engines["pg"] = db.create_engine(self.pg_url)
            db.migrate(self.pg)
        if "sqlite" in self.targets and first:
            self.template = self.tmp / "template.db"
            engines["sqlite"] = db.create_engine(f"sqlite:///{self.template}")
            db.migrate(engines["sqlite"])
        for engine in engines.values():
            self.version = registry.register_model(
                engine, self.model_dir, w.settings.training.registry
            )
            if registry.get_alias(engine, w.spec.name, registry.CHAMPION) != self.version:
                registry.set_alias(
                    engine, w.spec.name, registry.CHAMPION, self.version, "bench", by="bench"
                )
            w.seed(engine)
        self.model = registry.load_model(next(iter(engines.values())), self.version)
        if "sqlite" in engines:
            engines["sqlite"].dispose()

    def close(self) -> None:
        if self.pg is not None:
            self.pg.dispose()
            self.pg = None

    def sqlite_run_db(self) -> str:
        assert self.template is not None
        return fresh_sqlite(self.template, self.tmp / "run.db")

    def warm_up(self, w: Workload) -> None:
        """One untimed one-partition score run per Prefect mode (caches, first connections)."""
        for m, api in (("eph", None), ("srv", self.api_url)):
            if "pg" in self.targets:
                reset_pg(self.pg)
                url = self.pg_url
            else:
                url = self.sqlite_run_db()
            r = score_process(url, w, self.homes[m], api, self.tmp / "warm.log", w.days[:1])
            log(f"  warm-up, {'running' if api else 'ephemeral'} server: {r['process_s']:.1f}s")

    def one_run(self, w: Workload, runs: Runs, *, full: bool) -> None:
        """One run of every measure (`full`: the first size; else only the targets')."""
        pg, tmp, version = self.pg, self.tmp, self.version
        if "pg" in self.targets:
            if full:
                fresh_peer_table(pg)
                self.peer_run(runs, "naive_pg", "naive", w, self.pg_url)
            fresh_peer_table(pg)
            self.peer_run(runs, "competent_pg", "competent", w, self.pg_url)
            fresh_peer_table(pg)
            self.peer_run(runs, "arrow_pg", "careful", w, self.pg_dsn)
            for m, api in (("eph", None), ("srv", self.api_url)):
                if api is None and not full:
                    continue
                reset_pg(pg)
                runs.add(f"proc_{m}_pg", self.score_run(self.pg_url, w, m, api))
            if full:
                reset_pg(pg)
                runs.add(
                    "plain_pg",
                    timed(
                        "batchpred without Prefect -> PostgreSQL",
                        lambda: plain_loop(self.pg_url, w, version),
                    ),
                )
            else:  # the floor a larger size's targets are read against (limits() at the first)
                self.overlap_pg(w, runs)
        if "sqlite" in self.targets and full:
            peer = peer_sqlite_engine(tmp / "peer.db")
            fresh_peer_table(peer)
            peer.dispose()
            self.peer_run(runs, "naive_sqlite", "naive", w, f"sqlite:///{tmp / 'peer.db'}")
            drop_sqlite(tmp / "peer.db")
            for m, api in (("eph", None), ("srv", self.api_url)):
                runs.add(f"proc_{m}_sqlite", self.score_run(self.sqlite_run_db(), w, m, api))
            url = self.sqlite_run_db()
            runs.add(
                "plain_sqlite",
                timed("batchpred without Prefect -> SQLite", lambda: plain_loop(url, w, version)),
            )
            drop_sqlite(tmp / "run.db")
        if full:
            self.limits(w, runs)

    def peer_run(self, runs: Runs, name: str, script: str, w: Workload, target: str) -> None:
        """A peer script as its user launches it (peers.py): `name` gets the whole process,
        launch to exit; `name`_work its own figure, from loading the model to the last commit.
        `script`: naive, competent or careful; `target`: where it writes."""
        from batchpred import storage

        job = peers.job_file(
            self.tmp / "peer-job.json",
            {day: storage.partition_files(w.lake, day) for day in w.days},
            self.model.contract,
            self.version,
            self.model_file,
            w.spec.entity_id,
            target,
        )
        cmd = [PYTHON, "-m", "tests.benchmarks.peers", script, str(job)]
        t = time.perf_counter()
        proc = subprocess.run(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        process_s = time.perf_counter() - t
        if proc.returncode:
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}"
            )
        work_s = float(proc.stdout.split("work_s ")[-1].split()[0])
        written = self.pg if name.endswith("_pg") else peers.engine(target)
        with written.connect() as conn:
            rows = conn.exec_driver_sql(f"SELECT count(*) FROM {peers.TABLE}").scalar()
        if written is not self.pg:
            written.dispose()
        if rows != w.rows:  # a peer that wrote less did not do the job it is timed on
            raise RuntimeError(f"{' '.join(cmd)} wrote {rows:,} rows, expected {w.rows:,}")
        log(f"  {script} -> {name}: {process_s:.2f}s the whole process, {work_s:.2f}s its work")
        runs.add(name, process_s)
        runs.add(f"{name}_work", work_s)

    def score_run(self, db_url: str, w: Workload, m: str, api: str | None) -> dict[str, Any]:
        where = "PostgreSQL" if db_url.startswith("postgresql") else "SQLite"
        logfile = self.tmp / f"score-{uuid.uuid4().hex[:6]}.log"
        r = score_process(db_url, w, self.homes[m], api, logfile, w.days)
        log(
            f"  python -m flows.score -> {where}, {'running' if api else 'ephemeral'} server: "
            f"process {r['process_s']:.2f}s, flow {r['flow_s']:.2f}s, first partition at "
            f"{r['to_first_s']:.2f}s"
        )
        return r

    def overlap_pg(self, w: Workload, runs: Runs) -> None:
        """Read, predict and a plain COPY overlapped, without exactly-once: the floor."""
        fresh_peer_table(self.pg)
        runs.add(
            "overlap_pg",
            timed(
                "stages overlapped without exactly-once -> PostgreSQL",
                lambda: overlapped("pg", self.pg_dsn, w, self.model, self.version),
            ),
        )

    def limits(self, w: Workload, runs: Runs) -> None:
        from batchpred import db, registry

        pg, tmp, version, model = self.pg, self.tmp, self.version, self.model
        read_s, batches = read_alone(w, model.contract.feature_names)
        runs.add("read", read_s)
        checks_s, dups_s = row_checks(w, batches)
        runs.add("checks", checks_s)
        runs.add("dups", dups_s)
        predict_s, preds = predict_alone(model, w, batches)
        runs.add("predict", predict_s)
        del batches
        log(f"  read alone {read_s:.2f}s, predict alone {predict_s:.2f}s")
        if "pg" in self.targets:
            reset_pg(pg)
            runs.add(
                "sink_pg",
                timed(
                    "write alone, batchpred sink -> PostgreSQL",
                    lambda: sink_alone(pg, w, version, preds),
                ),
            )
            reset_pg(pg)
            crowd = seed_other_dataset(pg, w.rows)
            runs.add(
                "sink_crowded_pg",
                timed(
                    f"write alone, batchpred sink, beside {crowd:,} cached entities of another "
                    "dataset",
                    lambda: sink_alone(pg, w, version, preds),
                ),
            )
            reset_pg(pg)
            # Never champion (not now, not in the history): no predictions_latest refresh.
            with pg.begin() as conn:
                for name in ("model_aliases", "model_alias_history"):
                    t = db.table(pg, name)
                    conn.execute(
                        t.delete().where(t.c.dataset == w.spec.name, t.c.alias == registry.CHAMPION)
                    )
            runs.add(
                "sink_nolatest_pg",
                timed(
                    "write alone, batchpred sink, model not champion",
                    lambda: sink_alone(pg, w, version, preds),
                ),
            )
            registry.set_alias(pg, w.spec.name, registry.CHAMPION, version, "bench", by="bench")
            reset_pg(pg)
            fresh_peer_table(pg)
            runs.add(
                "plainw_pg",
                timed(
                    "write alone, plain COPY -> PostgreSQL",
                    lambda: plain_write_alone("pg", self.pg_dsn, version, preds),
                ),
            )
            fresh_peer_table(pg)
            runs.add(
                "plainw_latest_pg",
                timed(
                    "write alone, plain COPY + a latest table upserted by hand -> PostgreSQL",
                    lambda: plain_latest_write_alone(self.pg_dsn, version, preds),
                ),
            )
            self.overlap_pg(w, runs)
        if "sqlite" in self.targets:
            sq = db.create_engine(self.sqlite_run_db())
            runs.add(
                "sink_sqlite",
                timed(
                    "write alone, batchpred sink -> SQLite",
                    lambda: sink_alone(sq, w, version, preds),
                ),
            )
            sq.dispose()
            drop_sqlite(tmp / "run.db")
            peer_db = tmp / "peer.db"
            for name in ("plainw_sqlite", "overlap_sqlite"):
                peer = peer_sqlite_engine(peer_db)
                fresh_peer_table(peer)
                peer.dispose()
                if name == "plainw_sqlite":
                    runs.add(
                        name,
                        timed(
                            "write alone, plain INSERT -> SQLite",
                            lambda: plain_write_alone("sqlite", str(peer_db), version, preds),
                        ),
                    )
                else:
                    runs.add(
                        name,
                        timed(
                            "stages overlapped without exactly-once -> SQLite",
                            lambda: overlapped("sqlite", str(peer_db), w, model, version),
                        ),
                    )
            drop_sqlite(peer_db)


def _env_of(python: str) -> str:
    """Which environment `python` is, in words, for the report."""
    probe = "import importlib.util as u; print(u.find_spec('sklearn') is not None)"
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
    where = os.path.relpath(python, ROOT) if python.startswith(str(ROOT)) else python
    if out.stdout.strip() == "True":
        return f"`{where}` (scikit-learn installed: xgboost imports it, about 1 s of start-up)"
    return f"`{where}`, runtime dependencies only (requirements.lock, as `make install` builds)"


def timed(label: str, fn: Callable[[], float]) -> float:
    seconds = fn()
    log(f"  {label}: {seconds:.2f}s")
    return seconds


def pragmas_of_batchpred(tmp: Path) -> dict[str, Any]:
    from batchpred import db

    engine = db.create_engine(f"sqlite:///{tmp / 'pragmas.db'}")
    out = pragmas(engine)
    engine.dispose()
    drop_sqlite(tmp / "pragmas.db")
    return out


def check_peers(w: Workload, model: Any, model_file: Path) -> float:
    """Every script scores the same: the largest difference between the peers' scores of the
    first partition and batchpred's (not timed)."""
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq
    import xgboost as xgb

    from batchpred import schema, storage

    day = w.days[0]
    f = storage.partition_files(w.lake, day)[0]
    table = pq.read_table(f)
    X, _ = schema.feature_matrix(table, model.contract)
    ours = model.booster.inplace_predict(X, validate_features=False)
    booster = xgb.Booster(model_file=str(model_file))
    df = pd.read_parquet(f)
    naive = booster.predict(
        xgb.DMatrix(
            peers.pandas_matrix(df, model.contract.features), feature_types=booster.feature_types
        )
    )
    arrow = booster.inplace_predict(peers.arrow_matrix(table, model.contract.features))
    diff = float(max(np.abs(naive - ours).max(), np.abs(arrow - ours).max()))
    log(f"peers' scores vs batchpred's on {day}: max |difference| {diff:.2e}")
    return diff


# --- report --------------------------------------------------------------------------------------

PROC_PARTS = (  # key in score_process's result, label
    ("process_s", "whole process, launch to exit"),
    ("to_flow_s", "launch to 'Beginning flow run' (imports, Prefect client and server)"),
    ("flow_setup_s", "'Beginning flow run' to the first partition (ledger)"),
    ("partitions_s", "first partition started to last finished (ledger)"),
    ("wrapup_s", "last partition finished to 'Finished in state'"),
    ("exit_s", "'Finished in state' to process exit"),
    ("flow_s", "score flow: 'Beginning flow run' to 'Finished in state'"),
    ("to_first_s", "Prefect start-up: launch to the first partition"),
    ("ledger_mean_s", "ledger: seconds a partition (mean)"),
)


def report(
    info: dict[str, Any], results: list[tuple[Workload, Runs]], args: argparse.Namespace
) -> str:
    w, R = results[0]
    n = w.rows
    given = list(args.argv)
    if "--python" in given:  # the Makefile's, not the user's BENCH_ARGS
        at = given.index("--python")
        del given[at : at + 2]
    cmd = "make bench" if not given else 'make bench BENCH_ARGS="' + " ".join(given) + '"'
    conc = w.settings.scoring.concurrency
    large = (
        f" ({args.repeat_large} for the sizes after the first)"
        if args.repeat_large != args.repeat and len(results) > 1
        else ""
    )
    lines = [
        f"Generated by `{cmd}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC in "
        f"{info['bench_s'] / 60:.1f} min. Every figure is the median of {args.repeat} run(s)"
        f"{large}, min-max beside it; the runs interleaved, in one process tree. Load average "
        f"(1/5/15 min) before {info['load'][0]}, after {info['load'][1]}: on a busy machine "
        "the figures are noisy.",
        "",
        "### Machine",
        "",
        *machine(info.get("pg_version")),
        "",
        "### Workload",
        "",
        f"- {n:,} rows in {len(w.days)} daily Parquet partitions ({w.rows_per_day:,} rows and "
        f"{w.lake_mb / len(w.days):.1f} MiB each), {len(w.spec.features)} features (floats, "
        "4 ints, 3 categories, one nullable), binary target; generated by "
        "`demo.write_demo_source` and ingested by `ingestion.ingest_partition` (with partition "
        "manifests, as the ingest flow leaves the lake); every partition validated beforehand, "
        "as ingest does (not timed)",
        f"- model {info['model']}: 300 trees, depth 6, trained on up to {TRAIN_SAMPLE:,} rows "
        f"({info.get('train_s', 0):.0f}s); the dataset's champion, so batchpred also refreshes "
        "`predictions_latest`. Before each batchpred run the database is as before a first "
        "run: no day tables, empty ledger and `predictions_latest`",
        "- peers: `python -m tests.benchmarks.peers SCRIPT JOB` (tests/benchmarks/peers.py, "
        "no batchpred imported), timed as a whole process from launch to exit, as batchpred "
        "is; beside it, its own figure from loading the model to the last commit "
        "(interpreter start, imports and exit left out). Each appends to a table with no key "
        "or index, created before each run",
        f"- every script scores the same: the peers' scores differ from batchpred's by at most "
        f"{info['score_diff']:.1e} on {w.days[0]}",
        f"- batchpred: scoring.concurrency={conc} partitions at once, nthread="
        f"{w.settings.scoring.nthread} each (configs/base.yaml); the peers score one partition "
        "after the other, xgboost on all cores",
        "- interpreter of the batchpred processes and of the peers: " + _env_of(PYTHON),
    ]
    if "sqlite_pragmas" in info:
        peer, ours = info["sqlite_pragmas"]
        same = "the same" if peer == ours else "DIFFERENT"
        lines.append(f"- SQLite pragmas, peers {peer}, batchpred's engine {ours}: {same}")

    def row(label: str, name: str, key: str | None = None, note: str = "", Rx: Runs = R) -> str:
        s = Rx.s(name, key)
        return f"| {label} | {s:.2f} | {Rx.spread(name, key)} | {n / s:,.0f} | {note} |"

    head = ["| what | seconds | min-max | rows/s | note |", "|---|---:|---:|---:|---|"]
    lines += ["", "### End to end", "", *head]
    proc_rows = []
    for db_name, key in (("PostgreSQL", "pg"), ("SQLite", "sqlite")):
        for label, name in (
            ("naive: pandas + to_sql (INSERT)", f"naive_{key}"),
            ("competent: pandas + to_sql(method=psql_insert_copy)", f"competent_{key}"),
            ("pyarrow + inplace_predict + COPY of pyarrow CSV", f"arrow_{key}"),
        ):
            if name in R:
                work = f"the whole process; its work {R.s(f'{name}_work'):.2f}s"
                lines.append(row(f"{label} -> {db_name}", name, note=work))
        for mode, m in (("running Prefect server", "srv"), ("ephemeral Prefect server", "eph")):
            name = f"proc_{m}_{key}"
            if name in R:
                lines.append(
                    row(
                        f"**batchpred: `python -m flows.score` -> {db_name}, {mode}**",
                        name,
                        "process_s",
                        "the whole process, start-up included",
                    )
                )
                proc_rows.append((f"{db_name}, {mode}", name))
    if proc_rows:
        lines += [
            "",
            "### Inside the batchpred runs",
            "",
            "From each run's own figures: its log's 'Beginning flow run' and 'Finished in state' "
            "lines and its `scoring_ledger` rows (started_at, finished_at, seconds). Seconds; "
            "min-max in brackets.",
            "",
            "| | " + " | ".join(label for label, _ in proc_rows) + " |",
            "|---|" + "---:|" * len(proc_rows),
        ]
        for key, label in PROC_PARTS:
            cells = []
            for _, name in proc_rows:
                spread = R.spread(name, key)
                cells.append(f"{R.s(name, key):.2f}" + (f" ({spread})" if spread else ""))
            bold = "**" if key in ("flow_s", "process_s", "to_first_s") else ""
            lines.append(f"| {bold}{label}{bold} | " + " | ".join(cells) + " |")
        for db_name, key in (("PostgreSQL", "pg"), ("SQLite", "sqlite")):
            if f"plain_{key}" in R:
                lines.append(
                    f"| the same score_partition calls without Prefect ({conc} threads), "
                    f"{db_name} | {R.s(f'plain_{key}'):.2f} ({R.spread(f'plain_{key}')}) |"
                    + " |"
                    * (len(proc_rows) - 1)
                )
    if "read" in R:
        lines += [
            "",
            "### Limits",
            "",
            "Each stage alone, then all three overlapped without exactly-once, on the same data.",
            "",
            *head,
        ]
        for label, name, note in (
            ("read alone (batchpred's reader, the needed columns)", "read", "1 stream"),
            (
                "predict alone (feature_matrix + inplace_predict)",
                "predict",
                f"1 stream, nthread={os.cpu_count()}",
            ),
            (
                "write alone: batchpred sink -> PostgreSQL",
                "sink_pg",
                "COPY to a staging leaf, unique index, predictions_latest upsert, ledger, swap",
            ),
            (
                "write alone: the same sink, beside another dataset's cached entities",
                "sink_crowded_pg",
                f"{w.rows:,} rows of another dataset in predictions_latest (a database "
                "serving several)",
            ),
            (
                "write alone: the same sink, model not champion",
                "sink_nolatest_pg",
                "no predictions_latest upsert",
            ),
            ("write alone: plain COPY -> PostgreSQL", "plainw_pg", "no key, no index"),
            (
                "write alone: plain COPY + a latest table upserted by hand -> PostgreSQL",
                "plainw_latest_pg",
                "temporary table, INSERT, ON CONFLICT upsert (newer day wins), newest first",
            ),
            (
                "write alone: batchpred sink -> SQLite",
                "sink_sqlite",
                "spool, keyed INSERT, predictions_latest upsert, ledger",
            ),
            ("write alone: plain INSERT -> SQLite", "plainw_sqlite", "executemany, no key"),
            (
                "**read, predict, write overlapped without exactly-once -> PostgreSQL**",
                "overlap_pg",
                f"{conc} partitions at once, plain COPY",
            ),
            (
                "**read, predict, write overlapped without exactly-once -> SQLite**",
                "overlap_sqlite",
                f"{conc} partitions at once, plain INSERT",
            ),
            (
                "row checks alone (rules.evaluate; part of read/predict in a run)",
                "checks",
                f"and duplicate ids {R.s('dups'):.2f}s" if "dups" in R else "",
            ),
        ):
            if name in R:
                lines.append(row(label, name, note=note))
    for wx, Rx in results[1:]:
        lines += [
            "",
            f"### At {wx.rows:,} rows",
            "",
            f"{len(wx.days)} partitions of {wx.rows_per_day:,} rows; only what its targets need.",
            "",
            *head,
        ]
        for label, name, part in (
            (
                "competent: pandas + to_sql(method=psql_insert_copy) -> PostgreSQL",
                "competent_pg",
                None,
            ),
            (
                "careful: pyarrow + inplace_predict + COPY of pyarrow CSV -> PostgreSQL",
                "arrow_pg",
                None,
            ),
            (
                "**batchpred: `python -m flows.score`, running server: whole process**",
                "proc_srv_pg",
                "process_s",
            ),
            ("batchpred score flow", "proc_srv_pg", "flow_s"),
            (
                "read, predict, write overlapped without exactly-once -> PostgreSQL",
                "overlap_pg",
                None,
            ),
        ):
            if name in Rx:
                s = Rx.s(name, part)
                work = f"its work {Rx.s(f'{name}_work'):.2f}s" if f"{name}_work" in Rx else ""
                lines.append(
                    f"| {label} | {s:.2f} | {Rx.spread(name, part)} | {wx.rows / s:,.0f} | {work} |"
                )
    small = info.get("small")
    if small:
        lines += ["", *small_report(small)]
    tg, why = targets(R, results, w, small)
    info["targets"] = tg
    lines += [
        "",
        "### Targets",
        "",
        "Ratios of figures measured in this run (the nightly's: `make bench-nightly`); every "
        "figure, under a stable key, also in docs/benchmarks.json.",
        "",
        "| measure | value | target | verdict |",
        "|---|---:|---|---|",
        *[f"| {t.measure} | {t.shown} | {t.target} | **{t.verdict}** |" for t in tg],
    ]
    if not any(wx.rows >= 20_000_000 for wx, _ in results):
        lines += [
            "",
            "Not measured in this run: the whole process at 20,000,000 rows (target >= 2x the "
            'competent script): `make bench BENCH_ARGS="--rows 2000000,20000000"`.',
        ]
    if why:
        lines += ["", "### Where a missed target is held", "", *why]
    other = comparisons(R)
    if other:
        lines += ["", "### Other ratios (no target)", "", *other]
    return "\n".join(lines)


class Target(NamedTuple):
    key: str  # stable, for docs/benchmarks.json
    measure: str
    value: float  # the ratio (or seconds) compared with the goal
    shown: str
    goal: float
    higher_is_better: bool

    @property
    def target(self) -> str:
        unit = "x" if self.key.endswith("_x") else " s"
        return f"{'>=' if self.higher_is_better else '<='} {self.goal:g}{unit}"

    @property
    def verdict(self) -> str:
        return verdict(self.value, self.goal, self.higher_is_better)


def targets(
    R: Runs, results: list[tuple[Workload, Runs]], w: Workload, small: dict[str, Any] | None
) -> tuple[list[Target], list[str]]:
    """The targets of issue 15, each a ratio of figures of this run (or seconds)."""
    tg: list[Target] = []
    why: list[str] = []

    def add(t: Target, explain: Callable[[], str] | None = None) -> None:
        tg.append(t)
        if t.verdict == "MISSED" and explain is not None:
            why.append(explain())

    for wx, Rx in results:
        if "proc_srv_pg" in Rx and "competent_pg" in Rx:
            c, proc = Rx.s("competent_pg"), Rx.s("proc_srv_pg", "process_s")
            goal = 2.0 if wx.rows >= 20_000_000 else 1.5
            add(
                Target(
                    f"process_vs_competent_pg_{wx.rows}_x",
                    f"whole `python -m flows.score` process (running server) vs the competent "
                    f"script, PostgreSQL, {wx.rows:,} rows",
                    c / proc,
                    f"{c / proc:.2f}x ({c:.1f}s / {proc:.1f}s)",
                    goal,
                    True,
                ),
                functools.partial(why_process, Rx, c / goal, wx, "competent"),
            )
    for wx, Rx in results:  # the is at the first size; the larger ones are ours
        if "arrow_pg" in Rx and "proc_srv_pg" in Rx:
            a, proc = Rx.s("arrow_pg"), Rx.s("proc_srv_pg", "process_s")
            add(
                Target(
                    f"process_vs_careful_pg_{wx.rows}_x",
                    "whole process (running server) vs the careful pyarrow + inplace_predict + "
                    f"COPY script, PostgreSQL, {wx.rows:,} rows",
                    a / proc,
                    f"{a / proc:.2f}x ({a:.1f}s / {proc:.1f}s)",
                    1.0,
                    True,
                ),
                functools.partial(why_process, Rx, a, wx, "careful"),
            )
    if "overlap_pg" in R and "proc_srv_pg" in R:
        flow, floor = R.s("proc_srv_pg", "flow_s"), R.s("overlap_pg")
        add(
            Target(
                "flow_vs_overlapped_pg_x",
                "score flow (running server) over the overlapped stages without exactly-once, "
                "PostgreSQL",
                flow / floor,
                f"{flow / floor:.2f}x ({flow:.1f}s / {floor:.1f}s)",
                1.3,
                False,
            ),
            lambda: why_flow(R, "proc_srv_pg", 1.3 * floor, w, "running server"),
        )
    if "sink_pg" in R and "plainw_pg" in R:
        sink, plain = R.s("sink_pg"), R.s("plainw_pg")
        add(
            Target(
                "sink_vs_plain_copy_pg_x",
                "sink with predictions_latest kept over a plain COPY of the same rows",
                sink / plain,
                f"{sink / plain:.2f}x ({sink:.1f}s / {plain:.1f}s)",
                1.3,
                False,
            ),
            lambda: why_sink(R, sink, plain),
        )
    if "naive_sqlite" in R and "proc_srv_sqlite" in R:
        naive, proc = R.s("naive_sqlite"), R.s("proc_srv_sqlite", "process_s")
        add(
            Target(
                "process_vs_naive_sqlite_x",
                f"SQLite: whole process (running server) vs the naive script, {w.rows:,} rows",
                naive / proc,
                f"{naive / proc:.2f}x ({naive:.1f}s / {proc:.1f}s)",
                1.5,
                True,
            )
        )
    if small:
        ingest = small["ingest"]["process_s"]
        add(
            Target(
                "small_ingest_s",
                f"{small['days']} days of {small['rows_per_day']:,} rows ingested and validated "
                "(`python -m flows.ingest`, whole process, running server)",
                ingest,
                f"{ingest:.1f}s",
                30.0,
                False,
            )
        )
    if "proc_srv_pg" in R:
        first = R.s("proc_srv_pg", "to_first_s")
        add(
            Target(
                "startup_to_first_partition_s",
                "Prefect start-up to the first partition, running server",
                first,
                f"{first:.2f}s",
                4.0,
                False,
            ),
            lambda: why_startup(R, "proc_srv_pg"),
        )
    return tg, why


def why_flow(R: Runs, name: str, goal: float, w: Workload, mode: str) -> str:
    flow = R.s(name, "flow_s")
    setup, parts, wrap = R.s(name, "flow_setup_s"), R.s(name, "partitions_s"), R.s(name, "wrapup_s")
    phases = {
        "the flow's setup before the first partition": setup,
        "scoring the partitions": parts,
        "the flow's wrap-up after the last partition": wrap,
    }
    holder = max(phases, key=phases.__getitem__)
    text = (
        f"- **score flow ({mode}) vs the overlapped stages**: the flow took {flow:.1f}s, the "
        "target needs "
        f"<= {goal:.1f}s. Its log and ledger: {setup:.2f}s from 'Beginning flow run' to the "
        f"first partition, {parts:.2f}s from the first partition's start to the last one's end "
        f"({R.s(name, 'ledger_mean_s'):.2f}s a partition in the ledger, {len(w.days)} "
        f"partitions, {w.settings.scoring.concurrency} at once), {wrap:.2f}s after the last "
        f"one: **{holder}** holds it."
    )
    if "overlap_pg" in R:
        floor = R.s("overlap_pg")
        text += (
            f" The same stages overlapped without exactly-once take {floor:.2f}s; "
            f"{setup + wrap:.2f}s of the flow is its setup and wrap-up."
        )
    if "sink_pg" in R and "plainw_pg" in R:
        sink, plain = R.s("sink_pg"), R.s("plainw_pg")
        nolatest = R.s("sink_nolatest_pg") if "sink_nolatest_pg" in R else float("nan")
        text += (
            f" Alone, prediction takes {R.s('predict'):.2f}s on all cores, reading "
            f"{R.s('read'):.2f}s, and writing {sink:.2f}s through the sink (exactly-once: "
            f"staging leaf, unique index, ledger, swap, predictions_latest refresh; "
            f"{nolatest:.2f}s for a model that is not champion, without the refresh) against "
            f"{plain:.2f}s for a plain COPY."
        )
    if "plain_pg" in R:
        text += f" Without Prefect the same calls take {R.s('plain_pg'):.2f}s."
    if "predict" in R and R.s("predict") > goal:
        text += (
            f" The model's own prediction alone, on all cores and nothing else, takes "
            f"{R.s('predict'):.2f}s, above the {goal:.1f}s the target allows: no pipeline "
            "scoring with this model on this machine can meet it."
        )
    return text


def why_process(R: Runs, goal: float, w: Workload, peer: str) -> str:
    name = "proc_srv_pg"
    proc = R.s(name, "process_s")
    parts = {
        "start-up to 'Beginning flow run' (imports, Prefect client, flow run)": R.s(
            name, "to_flow_s"
        ),
        "the flow": R.s(name, "flow_s"),
        "exit after 'Finished in state'": R.s(name, "exit_s"),
    }
    holder = max(parts, key=parts.__getitem__)
    text = (
        f"- **whole process vs {peer}, {w.rows:,} rows**: the process took {proc:.1f}s, the "
        f"target needs <= {goal:.1f}s ({proc - goal:.1f}s over): "
        + ", ".join(f"{k} {v:.2f}s" for k, v in parts.items())
        + f"; **{holder}** holds it"
        + (" (the flow's breakdown above)." if holder == "the flow" else ".")
    )
    if "overlap_pg" in R:
        floor = R.s("overlap_pg")
        text += (
            f" The same reads, predictions and COPYs overlapped without exactly-once (no "
            f"ledger, no key, no staging, no predictions_latest; no process start-up) take "
            f"{floor:.1f}s, "
            + (
                f"{floor - goal:.1f}s over the target too: it asks for more than reading, "
                "predicting and copying these rows costs on this machine."
                if floor > goal
                else f"{goal - floor:.1f}s under the target: the process spends "
                f"{proc - floor:.1f}s beyond them (start-up, exactly-once, predictions_latest)."
            )
        )
    return text


def why_sink(R: Runs, sink: float, plain: float) -> str:
    text = f"- **sink vs plain COPY**: the sink took {sink:.2f}s, a plain COPY {plain:.2f}s"
    if "sink_nolatest_pg" in R:
        bare = R.s("sink_nolatest_pg")
        holder = "keeping predictions_latest" if sink - bare > bare else "the partition write"
        text += (
            f"; without predictions_latest (a model that is not champion) the same sink takes "
            f"{bare:.2f}s, so keeping predictions_latest costs {sink - bare:.2f}s: "
            f"**{holder}** holds it"
        )
    if "plainw_latest_pg" in R:
        by_hand = R.s("plainw_latest_pg")
        text += (
            f"; a careful script keeping a latest table by hand (COPY, then an upsert) takes "
            f"{by_hand:.2f}s, the sink {sink / by_hand:.2f}x that"
        )
    return text + "."


def why_startup(R: Runs, name: str) -> str:
    to_flow, setup = R.s(name, "to_flow_s"), R.s(name, "flow_setup_s")
    holder = (
        "launch to 'Beginning flow run' (interpreter, imports, Prefect client, creating the "
        "flow run)"
        if to_flow >= setup
        else "the flow's own setup before the first partition (run tags and crashed-run "
        "sweep, planning, model check, resolve-model)"
    )
    return (
        f"- **start-up to the first partition**: {to_flow:.2f}s from launch to 'Beginning "
        f"flow run' in the log, then {setup:.2f}s to the first partition's started_at in the "
        f"ledger: **{holder}** holds it."
    )


def comparisons(R: Runs) -> list[str]:
    out = []
    srv = "proc_srv_pg"
    if "naive_pg" in R and srv in R:
        proc = R.s(srv, "process_s")
        out.append(
            f"- whole batchpred process (running server) vs naive, PostgreSQL: "
            f"{R.s('naive_pg') / proc:.2f}x; vs pyarrow + COPY: {R.s('arrow_pg') / proc:.2f}x"
        )
    if "naive_sqlite" in R and "proc_srv_sqlite" in R:
        naive = R.s("naive_sqlite")
        out.append(
            f"- SQLite, vs naive: whole batchpred process (running server) "
            f"{naive / R.s('proc_srv_sqlite', 'process_s'):.2f}x, score flow "
            f"{naive / R.s('proc_srv_sqlite', 'flow_s'):.2f}x"
        )
    if "sink_crowded_pg" in R and "sink_pg" in R:
        out.append(
            "- other datasets' share, PostgreSQL: the sink beside another dataset's cached "
            f"entities {R.s('sink_crowded_pg'):.2f}s against {R.s('sink_pg'):.2f}s alone "
            f"({R.s('sink_crowded_pg') / R.s('sink_pg'):.2f}x)"
        )
    for db_name, key in (("PostgreSQL", "pg"), ("SQLite", "sqlite")):
        plain = f"plain_{key}"
        if plain in R and f"proc_srv_{key}" in R:
            out.append(
                f"- Prefect's share, {db_name}: score flow {R.s(f'proc_srv_{key}', 'flow_s'):.2f}s "
                f"(running server) against {R.s(plain):.2f}s for the same calls without Prefect"
            )
        if plain in R and f"overlap_{key}" in R:
            out.append(
                f"- exactly-once's share, {db_name}: batchpred without Prefect "
                f"{R.s(plain):.2f}s against {R.s(f'overlap_{key}'):.2f}s for the stages "
                "overlapped without exactly-once"
            )
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--rows", default="2000000", help="rows, or comma-separated sizes (default 2000000)"
    )
    p.add_argument("--partitions", type=int, default=16)
    p.add_argument("--features", type=int, default=30)
    p.add_argument(
        "--repeat", type=int, default=3, help="runs of each measure; figures are medians"
    )
    p.add_argument(
        "--repeat-large",
        type=int,
        help="runs of each measure for the sizes after the first (default: --repeat)",
    )
    p.add_argument("--db", default="pg,sqlite", help="pg, sqlite or both (default)")
    p.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter of the batchpred processes (default: this one; make bench: a "
        "runtime-only environment)",
    )
    p.add_argument(
        "--no-doc",
        action="store_true",
        help="print the report, do not write docs/benchmarks.md and docs/benchmarks.json",
    )
    p.add_argument(
        "--no-small",
        dest="small",
        action="store_false",
        help=f"skip the small-partition case ({SMALL_DAYS} days of {SMALL_ROWS:,} rows)",
    )
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.rows_list = [int(x) for x in args.rows.split(",")]
    global PYTHON
    PYTHON = args.python
    args.repeat_large = args.repeat_large or args.repeat
    args.db = [x.strip() for x in args.db.split(",") if x.strip()]
    if not set(args.db) <= {"pg", "sqlite"} or not args.db:
        p.error("--db: pg, sqlite or pg,sqlite")
    bench(args)


if __name__ == "__main__":
    main()
