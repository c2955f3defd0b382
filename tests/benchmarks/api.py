"""Lookup API benchmark: p50/p99 latency and requests/s of `batchpred api` on PostgreSQL.

    .venv/bin/python -m tests.benchmarks.api [--rows 10000000] [--seconds 10]
        [--workers 1,2] [--clients 2] [--threads 4]        (make bench-api BENCH_API_ARGS=...)

Loads `--rows` entities into a fresh PostgreSQL database (bench_api_<random> on
$BATCHPRED_BENCH_PG_ADMIN_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/postgres,
dropped at the end): one champion model, one row per entity in `predictions_latest` and its
row in `predictions` (that day's month partition), generated with numpy/pyarrow and streamed
by COPY. Then starts `batchpred api` as a subprocess (uvicorn, `--workers N`, no access log,
no rate limit) and drives it from `--clients` processes of `--threads` threads, each with a
keep-alive httpx.Client asking for random existing entities, for `--seconds` after a warm-up.
Latency is measured by the client around each request (so it includes the client's own
HTTP work). Prints a markdown table and replaces the "API lookups" section of
docs/benchmarks.md (appended when missing). Figures only: no assertions.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## API lookups"
PG_ADMIN_URL = os.environ.get(
    "BATCHPRED_BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
DATASET, DAY = "churn", date(2026, 11, 4)
VERSION = "b0b0cafe12345678"
BASE_ID = 10_000_000  # ids are BASE_ID + i as text: one width, so text order = numeric order
KEY = "bench-" + uuid.uuid4().hex
CHUNK = 1_000_000
WARMUP_S = 2.0
_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", flush=True)


# --- data ---------------------------------------------------------------------------------------


def load(engine: Any, rows: int) -> dict[str, Any]:
    """A champion model and `rows` entities scored by it for one day, written through the
    real write path (sinks.partition_writer: COPY on PostgreSQL, and predictions_latest
    refreshed in the same transaction since the model is champion), fed by 1 M-row batches
    made with numpy/pyarrow. Returns seconds per step and the tables' sizes."""
    import pyarrow as pa
    import sqlalchemy as sa

    from batchpred import db, registry, sinks

    t = db.table(engine, "model_versions")
    with engine.begin() as conn:
        conn.execute(
            t.insert().values(
                version=VERSION,
                dataset=DATASET,
                sha256=VERSION * 4,
                uri="bench://",
                xgboost_version="3",
                features=[],
                params={},
                training_data_hash="-",
                metrics={},
                reference_stats={},
                created_at=datetime.now(UTC),
            )
        )
    registry.set_alias(engine, DATASET, "champion", VERSION, "bench", by="bench")
    took: dict[str, Any] = {"generate": 0.0}
    t0 = time.perf_counter()
    key = sinks.PartitionKey(DATASET, DAY, VERSION)
    with sinks.partition_writer(engine, key, "bench-run", fingerprint="bench") as out:
        for start in range(0, rows, CHUNK):
            g0 = time.perf_counter()
            stop = min(rows, start + CHUNK)
            score = np.random.default_rng(start).random(stop - start)
            ids = pa.array(np.arange(start, stop, dtype=np.int64) + BASE_ID).cast(pa.string())
            batch = sinks.PredictionBatch(ids, score, (score >= 0.5).astype(np.int8))
            took["generate"] += time.perf_counter() - g0
            out.write(batch)
        t1 = time.perf_counter()
        out.finish(sinks.LedgerEntry("bench", rows, 0, datetime.now(UTC)))
    took["write"], took["finish"] = t1 - t0, time.perf_counter() - t1
    log(
        f"{rows:,} rows through sinks.partition_writer: streamed {took['write']:.1f}s "
        f"(generation {took['generate']:.1f}s), finish (move, index, latest) "
        f"{took['finish']:.1f}s"
    )
    t0 = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM (ANALYZE) predictions")
        conn.exec_driver_sql("VACUUM (ANALYZE) predictions_latest")
        latest, preds, count = conn.execute(
            sa.text(
                "SELECT pg_size_pretty(pg_total_relation_size('predictions_latest')), "
                "pg_size_pretty((SELECT sum(pg_total_relation_size(relid)) "
                "FROM pg_partition_tree('predictions'))), "
                "(SELECT count(*) FROM predictions_latest)"
            )
        ).one()
    took["vacuum"] = time.perf_counter() - t0
    took["size_latest"], took["size_predictions"] = latest, preds
    if count != rows:
        raise RuntimeError(f"predictions_latest holds {count:,} rows, not {rows:,}")
    log(f"VACUUM ANALYZE {took['vacuum']:.1f}s; predictions_latest {latest}, predictions {preds}")
    return took


# --- client -------------------------------------------------------------------------------------


def client_process(
    base_url: str, kind: str, rows: int, threads: int, start_at: float, seconds: float, seed: int
) -> dict[str, Any]:
    """One client process: `threads` threads, each a keep-alive httpx.Client, from start_at
    (wall clock) for WARMUP_S + seconds. Latencies (ns) of requests begun after the warm-up."""
    import httpx

    measure_from, stop_at = start_at + WARMUP_S, start_at + WARMUP_S + seconds

    def one_thread(tid: int) -> tuple[list[int], dict[int, int], int]:
        rng = np.random.default_rng(seed * 1000 + tid)
        lat: list[int] = []
        statuses: dict[int, int] = {}
        items = 0
        headers = {"X-API-Key": KEY}
        with httpx.Client(base_url=base_url, headers=headers, timeout=30) as c:
            while time.time() < start_at:
                time.sleep(0.005)
            while True:
                now = time.time()
                if now >= stop_at:
                    break
                picks = rng.integers(rows, size=100) + BASE_ID
                t0 = time.perf_counter_ns()
                if kind == "batch100":
                    r = c.post(
                        f"/v1/predictions/{DATASET}:batch",
                        json={"entity_ids": [str(i) for i in picks]},
                    )
                    n = 100
                else:
                    params = {"date": DAY.isoformat()} if kind == "date" else {}
                    if kind == "model":
                        params = {"model": VERSION}
                    r = c.get(f"/v1/predictions/{DATASET}/{picks[0]}", params=params)
                    n = 1
                t1 = time.perf_counter_ns()
                if now >= measure_from:
                    lat.append(t1 - t0)
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    items += n if r.status_code == 200 else 0
        return lat, statuses, items

    cpu: list[float] = []

    def sample_cpu() -> None:
        time.sleep(max(0.0, measure_from - time.time()))
        cpu.append(time.process_time())

    sampler = threading.Thread(target=sample_cpu)
    sampler.start()
    with ThreadPoolExecutor(threads) as ex:
        results = list(ex.map(one_thread, range(threads)))
    sampler.join()
    statuses: dict[int, int] = {}
    for _, s, _ in results:
        for code, count in s.items():
            statuses[code] = statuses.get(code, 0) + count
    return {
        "lat": np.concatenate([np.array(r[0], dtype=np.int64) for r in results]),
        "statuses": statuses,
        "items": sum(r[2] for r in results),
        "end": time.time(),
        "cpu": time.process_time() - cpu[0],
    }


def cpu_seconds(match: Any) -> float:
    """user + system CPU seconds of the processes for which match(pid, ppid, cmdline)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if match(int(entry.name), int(stat[1]), cmdline):
            total += (int(stat[11]) + int(stat[12])) / tick
    return total


def drive(
    base_url: str,
    kind: str,
    rows: int,
    clients: int,
    threads: int,
    seconds: float,
    server_pid: int,
    database: str,
) -> dict[str, Any]:
    start_at = time.time() + 3.0  # every process imported and connected before the start

    def server_and_pg() -> tuple[float, float]:
        # the API: the uvicorn process and its workers; PostgreSQL: the backends serving our
        # database (their process title names it)
        api = cpu_seconds(lambda pid, ppid, _: server_pid in (pid, ppid))
        pg = cpu_seconds(
            lambda _p, _pp, cmd: cmd.startswith("postgres: ") and f" {database} " in cmd
        )
        return api, pg

    with ProcessPoolExecutor(clients) as ex:
        futures = [
            ex.submit(client_process, base_url, kind, rows, threads, start_at, seconds, i)
            for i in range(clients)
        ]
        time.sleep(max(0.0, start_at + WARMUP_S - time.time()))
        before = server_and_pg()
        parts = [f.result() for f in futures]
        after = server_and_pg()
    lat = np.concatenate([p["lat"] for p in parts]) / 1e6
    statuses: dict[int, int] = {}
    for p in parts:
        for code, count in p["statuses"].items():
            statuses[code] = statuses.get(code, 0) + count
    elapsed = max(p["end"] for p in parts) - (start_at + WARMUP_S)
    ok = statuses.get(200, 0)
    return {
        "kind": kind,
        "concurrency": clients * threads,
        "requests": int(lat.size),
        "rps": ok / elapsed,
        "items_per_s": sum(p["items"] for p in parts) / elapsed,
        "p50": float(np.percentile(lat, 50)),
        "p90": float(np.percentile(lat, 90)),
        "p99": float(np.percentile(lat, 99)),
        "max": float(lat.max()),
        "errors": int(lat.size - ok),
        "statuses": statuses,
        # CPU milliseconds per request, by who spent them
        "cpu_api": 1000 * (after[0] - before[0]) / max(1, lat.size),
        "cpu_pg": 1000 * (after[1] - before[1]) / max(1, lat.size),
        "cpu_client": 1000 * sum(p["cpu"] for p in parts) / max(1, lat.size),
    }


# --- server -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(url: str, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = free_port()
    env = {
        **os.environ,
        "BATCHPRED_DATABASE_URL": url,
        "BATCHPRED_API_KEYS": KEY,
        "BATCHPRED_API_RATE": "0",
    }
    cmd = [sys.executable, "-m", "batchpred.cli", "api", "--port", str(port)]
    cmd += ["--workers", str(workers), "--no-access-log"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"batchpred api exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise RuntimeError("batchpred api did not become healthy in 60 s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def in_process_sql(url: str, rows: int, n: int = 3000) -> dict[str, float]:
    """The lookup's SQL alone, through the API's own Store (read-only engine), one thread: the
    floor under the HTTP figures."""
    from batchpred import api

    store = api.Store(api.readonly_engine(url))
    rng = np.random.default_rng(1)
    ids = [str(i) for i in rng.integers(rows, size=n + 200) + BASE_ID]
    for i in ids[:200]:
        store.find(DATASET, i, day=None, model=None)
    lat = []
    for i in ids[200:]:
        t0 = time.perf_counter_ns()
        store.find(DATASET, i, day=None, model=None)
        lat.append(time.perf_counter_ns() - t0)
    store.engine.dispose()
    ms = np.array(lat) / 1e6
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}


# --- report -------------------------------------------------------------------------------------


def machine(engine: Any) -> str:
    import fastapi
    import sqlalchemy as sa
    import uvicorn

    cpu = "unknown"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with engine.connect() as conn:
        pg = conn.execute(sa.text("SHOW server_version")).scalar()
        shared = conn.execute(sa.text("SHOW shared_buffers")).scalar()
    return (
        f"{os.cpu_count()} CPU(s): {cpu}; {platform.platform()}; Python "
        f"{platform.python_version()}, FastAPI {fastapi.__version__}, uvicorn "
        f"{uvicorn.__version__} (h11, asyncio loop), SQLAlchemy {sa.__version__}, PostgreSQL "
        f"{pg} (local, shared_buffers {shared})"
    )


LABELS = {
    "latest": "`GET /v1/predictions/churn/{id}` (predictions_latest)",
    "date": "`GET ...?date=2026-11-04` (predictions, champion of the time)",
    "model": "`GET ...?model=<version>` (predictions, newest of the model)",
    "batch100": "`POST /v1/predictions/churn:batch`, 100 ids",
}


def report(args: argparse.Namespace, info: dict[str, Any]) -> str:
    lines = [
        SECTION,
        "",
        f"Generated by `make bench-api` (`python -m tests.benchmarks.api --rows {args.rows}`) on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Figures, not assertions.",
        "",
        f"- {info['machine']}",
        f"- **Shared machine**: client, server and PostgreSQL on the same {os.cpu_count()} "
        f"cores, which other work was also using (load average {info['load_before']} before the "
        f"run, {info['load_after']} after). Read the figures as a floor, not as capacity.",
        f"- data: {args.rows:,} entities of one champion model in `predictions_latest` "
        f"({info['load']['size_latest']}) and their day in `predictions` "
        f"({info['load']['size_predictions']}); batches made with numpy/pyarrow "
        f"({info['load']['generate']:.0f} s) written by `sinks.partition_writer` (the scoring "
        f"write path: COPY, then predictions_latest refreshed in the same transaction) in "
        f"{info['load']['write']:.0f} s + {info['load']['finish']:.0f} s to commit, VACUUM "
        f"ANALYZE {info['load']['vacuum']:.0f} s",
        "- server: `batchpred api --workers N --no-access-log` (rate limit off), sync "
        "SQLAlchemy Core in FastAPI's threadpool, read-only autocommit connections",
        f"- client: {args.clients} processes x {args.threads} threads (concurrency "
        f"{args.clients * args.threads}; 1 for the unloaded row), each a keep-alive "
        f"`httpx.Client` asking for random existing ids, {args.seconds:g} s after "
        f"{WARMUP_S:g} s of warm-up; latency measured in the client, around each request",
        f"- the SQL alone (the API's `Store.latest`, in-process, one thread): p50 "
        f"{info['sql']['p50']:.2f} ms, p99 {info['sql']['p99']:.2f} ms",
        "",
        "| lookup | workers | concurrency | requests | requests/s | p50 ms | p90 ms | p99 ms "
        "| errors | CPU ms/request: API / PostgreSQL / client |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in info["runs"]:
        rps = f"{r['rps']:,.0f}"
        if r["kind"] == "batch100":
            rps += f" ({r['items_per_s']:,.0f} ids/s)"
        lines.append(
            f"| {LABELS[r['kind']]} | {r['workers']} | {r['concurrency']} | {r['requests']:,} | "
            f"{rps} | {r['p50']:.2f} | {r['p90']:.2f} | {r['p99']:.2f} | {r['errors']} | "
            f"{r['cpu_api']:.2f} / {r['cpu_pg']:.2f} / {r['cpu_client']:.2f} |"
        )
    lines += ["", *info["notes"], ""]
    return "\n".join(lines)


def write_section(text: str) -> None:
    """Replace the section in docs/benchmarks.md (up to the next `## ` or `# ` heading), or
    append it."""
    DOC.parent.mkdir(exist_ok=True)
    old = DOC.read_text() if DOC.exists() else ""
    start = old.find(SECTION + "\n")
    if start < 0:
        new = old.rstrip("\n") + ("\n\n" if old.strip() else "") + text
    else:
        rest = old[start + len(SECTION) :]
        ends = [i for i in (rest.find("\n## "), rest.find("\n# ")) if i >= 0]
        tail = rest[min(ends) + 1 :] if ends else ""
        new = old[:start] + text + ("\n" + tail if tail else "")
    DOC.write_text(new.rstrip("\n") + "\n")


# --- main ---------------------------------------------------------------------------------------


def bench(args: argparse.Namespace) -> None:
    import sqlalchemy as sa

    from batchpred import db

    load_before = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"bench_api_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    engine = db.create_engine(url)
    info: dict[str, Any] = {"load_before": load_before, "runs": [], "notes": []}
    try:
        db.migrate(engine)
        info["machine"] = machine(engine)
        log(f"database {name}: loading {args.rows:,} rows")
        info["load"] = load(engine, args.rows)
        info["sql"] = in_process_sql(url, args.rows)
        log(f"SQL alone: p50 {info['sql']['p50']:.2f} ms, p99 {info['sql']['p99']:.2f} ms")
        workers = [int(w) for w in args.workers.split(",")]
        plan: list[tuple[str, int, int, int]] = []  # kind, workers, clients, threads
        for w in workers:
            if w == workers[0]:
                plan.append(("latest", w, 1, 1))  # unloaded latency
            plan.append(("latest", w, args.clients, args.threads))
        for kind in ("date", "model", "batch100"):
            plan.append((kind, workers[-1], args.clients, args.threads))
        for w in workers:
            proc, base = start_server(url, w)
            try:
                for kind, pw, clients, threads in plan:
                    if pw != w:
                        continue
                    r = drive(base, kind, args.rows, clients, threads, args.seconds, proc.pid, name)
                    r["workers"] = w
                    info["runs"].append(r)
                    log(
                        f"{kind:8} workers={w} concurrency={r['concurrency']}: "
                        f"{r['rps']:,.0f} req/s, p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, "
                        f"statuses {r['statuses']}"
                    )
            finally:
                stop_server(proc)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    info["load_after"] = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    best = max((r for r in info["runs"] if r["kind"] == "latest"), key=lambda r: r["rps"])
    loaded = [r for r in info["runs"] if r["kind"] == "latest" and r["concurrency"] > 1]
    server_ms = float(np.median([r["cpu_api"] + r["cpu_pg"] for r in loaded]))
    info["notes"] = [
        f"- Best point-lookup throughput here: {best['rps']:,.0f} requests/s "
        f"({best['workers']} worker(s)), with the client on the same cores.",
        f"- CPU is the better measure on a shared machine: a point lookup costs {server_ms:.2f} "
        f"ms of CPU in the API and PostgreSQL together (median of the loaded runs), so one "
        f"dedicated core of this CPU serves about {1000 / server_ms:,.0f} lookups/s, and "
        "`--workers N` scales that with the cores given to it.",
        f"- The unloaded p50 ({info['runs'][0]['p50']:.2f} ms) against the SQL alone "
        f"({info['sql']['p50']:.2f} ms): the rest is HTTP (h11, pure Python: uvloop and "
        "httptools are not in the lock), FastAPI's parameter validation and serialisation, "
        "the threadpool hop and the Python client, all on the same cores.",
        "- `batchpred api` sets TCP_NODELAY on every connection itself: with `--workers N` "
        "uvicorn 0.54 leaves Nagle on (Kludex/uvicorn#3149) and each keep-alive request then "
        "waited ~40 ms for a delayed ACK (measured: 47 ms a sequential lookup with 2 workers "
        "against 1.6 ms once fixed).",
    ]
    text = report(args, info)
    print("\n" + text, flush=True)
    write_section(text)
    log(f"wrote the {SECTION!r} section of {DOC}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.api",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    p.add_argument("--workers", default="1,2", help="uvicorn worker counts to try")
    p.add_argument("--clients", type=int, default=2, help="client processes")
    p.add_argument("--threads", type=int, default=4, help="threads per client process")
    bench(p.parse_args(argv))


if __name__ == "__main__":
    main()
