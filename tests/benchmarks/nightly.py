"""The whole nightly, measured as a user runs it: `python -m flows.nightly` in a child process,
against a running Prefect server (`prefect server start` on a free loopback port, started once,
stopped at the end), each run in a throwaway workspace (a copy of dvc.yaml, configs and src/
taken at the start, a fresh DVC repo, its own lake and database), like the `workspace`
fixture of tests/flows.

    .venv/bin/python -m tests.benchmarks.nightly [--rows 10000000] [--days 35]
        [--history 35,140] [--history-rows-per-day 10000] [--repeat 3] [--db pg|sqlite]
        [--skip-rows] [--skip-history] [--no-doc]

1. The whole nightly at --rows rows (--days days of the demo data: the newest day without its
   label, 1% null labels; the default settings: a 28-day window, 300 rounds) and at a quarter
   of them. Stage walls from the run's own figures: its flow and task runs as the Prefect API
   recorded them (ingest, train and score subflows; the drift and realised-performance
   tasks), plus start-up (launch to the nightly's start) and exit. Peak memory: the process
   tree's resident set (the nightly and every process under it: DVC, its stages), summed and
   sampled every 0.1 s, per stage window; and the kernel's peak of the largest single process
   (wait4's ru_maxrss).
2. A nightly with nothing new after 35 and after 140 days of history: per history a workspace
   whose first nightly does everything (ingest, train, score), then --repeat nightlies with
   nothing new, interleaved between the histories; the median nightly flow wall of each.

Targets (reported MET / MISSED, never asserted): nightly peak RSS at 4x the rows <= 1.3x;
no-op nightly after 140 days <= 1.3x the one after 35. A missed target names the stage that
holds it, from the same figures. Prints a markdown report and writes it to
docs/benchmarks.md between this script's marker comments (other sections are kept).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.benchmarks.bench import (
    PG_ADMIN_URL,
    ROOT,
    loadavg,
    log,
    machine,
    median,
    prefect_env,
    prefect_home,
    prefect_server,
    verdict,
    write_doc_section,
)

START = date(2026, 10, 1)
SECTION = "## Nightly: the whole pipeline"
STAGES = (
    "start-up",
    "ingest",
    "train",
    "score",
    "drift",
    "realised",
    "rest of the nightly",
    "exit",
)
EXIT_DRIFTED = 4


# --- workspaces ---------------------------------------------------------------------------------


class Workspace:
    """dvc.yaml, configs and a copy of src/ in a fresh DVC repo, a demo source of `days` days,
    a database of its own (PostgreSQL: a new database, dropped by `drop`)."""

    def __init__(self, base: Path, name: str, days: int, rows_per_day: int, db_kind: str) -> None:
        import yaml

        self.name, self.days, self.rows_per_day = name, days, rows_per_day
        self.path = ws = base / name
        ws.mkdir(parents=True)
        shutil.copy(ROOT / "dvc.yaml", ws / "dvc.yaml")
        shutil.copytree(ROOT / "configs", ws / "configs")
        # a copy, not a link: src/batchpred is a DVC dependency, and a checkout edited while
        # the benchmark runs must not make a nightly with nothing new retrain
        shutil.copytree(
            ROOT / "src", ws / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        subprocess.run(
            [sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=ws, check=True, env=env
        )
        project = (ROOT / ".dvc" / "config").read_text()
        (ws / ".dvc" / "config").write_text(project.replace("[core]", "[core]\n    no_scm = True"))
        shutil.copy(ROOT / ".dvcignore", ws / ".dvcignore")
        override = {
            "demo": {"start_date": START.isoformat(), "days": days, "rows_per_day": rows_per_day}
        }
        (ws / "configs" / "bench.yaml").write_text(yaml.safe_dump(override, sort_keys=False))
        self.config = [
            str(ws / "configs/base.yaml"),
            str(ws / "configs/datasets/churn.yaml"),
            str(ws / "configs/bench.yaml"),
        ]
        self.pg_name = None
        if db_kind == "pg":
            import sqlalchemy as sa

            self.pg_name = f"bench_nightly_{uuid.uuid4().hex[:8]}"
            admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{self.pg_name}"')
            admin.dispose()
            self.db_url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{self.pg_name}"
        else:
            self.db_url = f"sqlite:///{ws / 'data' / 'batchpred.db'}"
        log(f"{name}: generating the demo source, {days} days of {rows_per_day:,} rows")
        t = time.perf_counter()
        subprocess.run(
            [str(Path(sys.executable).parent / "batchpred"), "demo"],
            cwd=ws,
            env={
                **env,
                "BATCHPRED_CONFIG": ",".join(self.config),
                "BATCHPRED_DATABASE_URL": self.db_url,
            },
            check=True,
            capture_output=True,
        )
        log(f"  generated in {time.perf_counter() - t:.1f}s")

    def drop(self) -> None:
        if self.pg_name:
            import sqlalchemy as sa

            admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')
            admin.dispose()
        shutil.rmtree(self.path, ignore_errors=True)


# --- one nightly --------------------------------------------------------------------------------


def _tree_rss(pid: int, samples: list[tuple[float, float]], stop: threading.Event) -> None:
    """Every 0.1 s: the summed RSS (MiB) of `pid` and every process under it."""
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    while not stop.is_set():
        total = 0
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for p in procs:
            with contextlib.suppress(psutil.Error):  # gone since the listing
                total += p.memory_info().rss
        samples.append((time.time(), total / 2**20))
        stop.wait(0.1)


def _f(value: float, spec: str = ".1f") -> str:
    """A figure, or a dash where there is none (a stage too short for an RSS sample)."""
    return "-" if value != value else format(value, spec)


def _ts(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _post_all(client: Any, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        page = client.post(path, json={**body, "limit": 200, "offset": len(out)})
        page.raise_for_status()
        rows = page.json()
        out += rows
        if len(rows) < 200:
            return out


def run_figures(api_url: str, since: datetime) -> dict[str, Any]:
    """The nightly's own figures from the Prefect API: its flow run, its subflows (ingest,
    train, score) and its tasks (drift, realised), with start, end and task-run counts."""
    import httpx

    with httpx.Client(base_url=api_url, timeout=60) as client:
        flows = _post_all(
            client,
            "/flow_runs/filter",
            {"flow_runs": {"start_time": {"after_": since.isoformat()}}, "sort": "START_TIME_ASC"},
        )
        ids = [f["id"] for f in flows]
        tasks = _post_all(client, "/task_runs/filter", {"flow_runs": {"id": {"any_": ids}}})
    stages: dict[str, dict[str, Any]] = {}
    nightly = None
    for f in flows:
        kind = f["name"].split("-", 1)[0]
        entry = {
            "start": _ts(f["start_time"]),
            "end": _ts(f["end_time"]),
            "state": f.get("state_name") or f.get("state_type"),
            "tasks": sum(1 for t in tasks if t["flow_run_id"] == f["id"]),
        }
        if kind == "nightly":
            nightly, entry["id"] = entry, f["id"]
        elif kind in ("ingest", "train", "score"):
            if kind in stages:  # a second score subflow (shadow): one stage from first to last
                stages[kind]["end"] = entry["end"]
                stages[kind]["tasks"] += entry["tasks"]
            else:
                stages[kind] = entry
    if nightly is None:
        raise RuntimeError("the Prefect API has no nightly flow run for this launch")
    for t in tasks:
        if t["flow_run_id"] != nightly["id"]:
            continue
        kind = (
            "drift"
            if t["name"].startswith("drift-")
            else ("realised" if t["name"].startswith("realised-performance") else None)
        )
        if kind and t["start_time"]:
            s = stages.setdefault(
                kind, {"start": _ts(t["start_time"]), "end": _ts(t["end_time"]), "tasks": 0}
            )
            s["start"] = min(s["start"], _ts(t["start_time"]))
            s["end"] = max(s["end"], _ts(t["end_time"]))
            s["tasks"] += 1
    return {"nightly": nightly, "stages": stages, "task_runs": len(tasks), "flow_runs": len(flows)}


def _model_stamp(ws: Workspace) -> int | None:
    """When the train stage last wrote the model (DVC rewrites a stage's outputs when it runs)."""
    path = ws.path / "data" / "train" / "churn" / "model" / "model.ubj"
    return path.stat().st_mtime_ns if path.exists() else None


def run_nightly(ws: Workspace, home: Path, api_url: str, label: str) -> dict[str, Any]:
    """One `python -m flows.nightly` in `ws`: walls per stage, peak RSS per stage and overall."""
    env = {
        **prefect_env(home, api_url),
        "BATCHPRED_CONFIG": ",".join(ws.config),
        "BATCHPRED_DATABASE_URL": ws.db_url,
    }
    logfile = ws.path / f"nightly-{uuid.uuid4().hex[:6]}.log"
    model_before = _model_stamp(ws)
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    launch = datetime.now(UTC)
    t = time.perf_counter()
    with open(logfile, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.nightly"],
            cwd=ws.path,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
        sampler = threading.Thread(target=_tree_rss, args=(proc.pid, samples, stop), daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    process_s = time.perf_counter() - t
    stop.set()
    sampler.join()
    out_text = logfile.read_text()
    if proc.returncode not in (0, EXIT_DRIFTED):
        raise RuntimeError(f"nightly in {ws.path} failed ({proc.returncode}):\n{out_text[-4000:]}")
    figures = run_figures(api_url, launch - timedelta(seconds=1))
    nightly = figures["nightly"]
    exit_at = launch + timedelta(seconds=process_s)
    windows: dict[str, tuple[datetime, datetime]] = {"start-up": (launch, nightly["start"])}
    for name in ("ingest", "train", "score", "drift", "realised"):
        s = figures["stages"].get(name)
        if s and s["start"] and s["end"]:
            windows[name] = (s["start"], s["end"])
    windows["exit"] = (nightly["end"], exit_at)
    walls = {k: (b - a).total_seconds() for k, (a, b) in windows.items()}
    inner = sum(v for k, v in walls.items() if k not in ("start-up", "exit"))
    flow_s = (nightly["end"] - nightly["start"]).total_seconds()
    walls["rest of the nightly"] = flow_s - inner
    rss = {
        k: max(
            (m for ts, m in samples if a.timestamp() <= ts <= b.timestamp()), default=float("nan")
        )
        for k, (a, b) in windows.items()
    }
    result = {
        "label": label,
        "process_s": process_s,
        "flow_s": flow_s,
        "walls": walls,
        "tasks": {k: v.get("tasks", 0) for k, v in figures["stages"].items()},
        "task_runs": figures["task_runs"],
        "rss": rss,
        "peak_tree_mb": max((m for _, m in samples), default=float("nan")),
        "peak_process_mb": usage.ru_maxrss / 1024,  # KiB on Linux
        "exit_code": proc.returncode,
        "skipped": " skipped, " in out_text,
        "retrained": _model_stamp(ws) != model_before,  # DVC re-ran train@churn
        "model_line": next(  # the summary's "model V (decision): metrics", not DVC's output
            (
                x.strip()
                for x in out_text.splitlines()
                if x.strip().startswith("model ") and "): " in x
            ),
            "",
        ),
        "sample_line": next(
            (x.strip() for x in out_text.splitlines() if "trained on a sample:" in x), ""
        ),
        "scored_line": next(
            (x.strip() for x in out_text.splitlines() if x.strip().startswith("scored ")), ""
        ),
    }
    log(
        f"  {label}: process {process_s:.1f}s, nightly flow {flow_s:.1f}s ("
        + ", ".join(f"{k} {v:.1f}s" for k, v in walls.items())
        + f"); peak RSS: tree {result['peak_tree_mb']:.0f} MiB, largest process "
        f"{result['peak_process_mb']:.0f} MiB"
    )
    return result


# --- the benchmark -------------------------------------------------------------------------------


def bench(args: argparse.Namespace) -> None:
    t_bench = time.perf_counter()
    load_before = loadavg()
    tmp = Path(tempfile.mkdtemp(prefix="batchpred-bench-nightly-"))
    info: dict[str, Any] = {"load": [load_before]}
    workspaces: list[Workspace] = []
    try:
        home = prefect_home(tmp / "prefect-server")
        with prefect_server(home, tmp / "prefect-server.log") as api_url:
            if not args.skip_rows:
                sizes = {"1x": args.rows // 4, "4x": args.rows}
                for tag, rows in sizes.items():
                    ws = Workspace(tmp, f"rows-{tag}", args.days, rows // args.days, args.db)
                    workspaces.append(ws)
                    info[f"rows_{tag}"] = run_nightly(
                        ws, home, api_url, f"whole nightly, {ws.days * ws.rows_per_day:,} rows"
                    )
                    info[f"rows_{tag}"]["rows"] = ws.days * ws.rows_per_day
                    ws.drop()
            if not args.skip_history:
                hist: dict[int, Workspace] = {}
                for days in args.history_list:
                    ws = Workspace(tmp, f"history-{days}", days, args.history_rows_per_day, args.db)
                    workspaces.append(ws)
                    hist[days] = ws
                    info[f"first_{days}"] = run_nightly(
                        ws, home, api_url, f"first nightly, {days} days"
                    )
                info["noop"] = {d: [] for d in hist}
                for rep in range(args.repeat):
                    for days, ws in hist.items():
                        r = run_nightly(
                            ws, home, api_url, f"nothing new after {days} days, run {rep + 1}"
                        )
                        if not r["skipped"]:
                            log(f"  WARNING: the no-op nightly scored again: {r['scored_line']}")
                        if r["retrained"]:
                            log("  WARNING: the no-op nightly retrained (DVC ran train@)")
                        info["noop"][days].append(r)
    finally:
        for ws in workspaces:
            ws.drop()
        shutil.rmtree(tmp, ignore_errors=True)
    info["bench_s"] = time.perf_counter() - t_bench
    info["load"].append(loadavg())
    body = report(info, args)
    print("\n" + body, flush=True)
    if not args.no_doc:
        write_doc_section("nightly.py", SECTION, body, after="bench.py")


# --- report --------------------------------------------------------------------------------------


def report(info: dict[str, Any], args: argparse.Namespace) -> str:
    default = (
        args.rows == 10_000_000
        and args.days == 35
        and args.history == "35,140"
        and args.history_rows_per_day == 10_000
        and args.repeat == 3
        and args.db == "pg"
        and not args.skip_rows
        and not args.skip_history
    )
    cmd = (
        "make bench-nightly"
        if default
        else 'make bench-nightly BENCH_NIGHTLY_ARGS="' + " ".join(args.argv) + '"'
    )
    where = "PostgreSQL" if args.db == "pg" else "SQLite"
    lines = [
        f"Generated by `{cmd}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC in "
        f"{info['bench_s'] / 60:.1f} min. `python -m flows.nightly` in a child process, in a "
        f"throwaway workspace (fresh DVC repo, lake and {where} database), against a running "
        "Prefect server; stage walls are the run's own flow and task runs as the Prefect API "
        "recorded them. Load average (1/5/15 min) before "
        f"{info['load'][0]}, after {info['load'][1]}.",
        "",
        "### Machine",
        "",
        *machine(),
        "",
    ]
    targets: list[tuple[str, str, str, str]] = []
    why: list[str] = []
    if "rows_4x" in info:
        a, b = info["rows_1x"], info["rows_4x"]
        lines += [
            f"### The whole nightly at {b['rows']:,} rows, and at a quarter of them",
            "",
            f"{args.days} daily partitions (the newest without its label, 1% null labels), "
            "configs/base.yaml's settings (28-day window, 300 rounds, early stopping, "
            "training.max_rows 2 M). Peak RSS: "
            "the nightly's process tree (it and DVC's stage processes), summed, sampled every "
            "0.1 s in each stage's window.",
            "",
            f"| stage | wall s, {a['rows']:,} rows | wall s, {b['rows']:,} rows | peak RSS MiB, "
            f"{a['rows']:,} | peak RSS MiB, {b['rows']:,} | RSS ratio |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for st in STAGES:
            if st not in a["walls"] and st not in b["walls"]:
                continue
            ra, rb = a["rss"].get(st, float("nan")), b["rss"].get(st, float("nan"))
            wa, wb = a["walls"].get(st, float("nan")), b["walls"].get(st, float("nan"))
            times = _f(rb / ra, ".2f") + ("x" if rb == rb and ra == ra else "")
            lines.append(
                f"| {st} | {_f(wa)} | {_f(wb)} | {_f(ra, '.0f')} | {_f(rb, '.0f')} | {times} |"
            )
        lines += [
            f"| **whole process** | **{a['process_s']:.1f}** | **{b['process_s']:.1f}** | "
            f"**{a['peak_tree_mb']:.0f}** | **{b['peak_tree_mb']:.0f}** | "
            f"**{b['peak_tree_mb'] / a['peak_tree_mb']:.2f}x** |",
            f"| largest single process (kernel's peak) | | | {a['peak_process_mb']:.0f} | "
            f"{b['peak_process_mb']:.0f} | {b['peak_process_mb'] / a['peak_process_mb']:.2f}x |",
            "",
            f"Scored: {b['scored_line'] or '?'} (exit code {b['exit_code']}).",
            "",
            "Trained (training.max_rows caps the rows XGBoost holds): "
            + "; ".join(
                f"{r['rows']:,} rows: {r['model_line'] or '?'}, "
                + (r["sample_line"] or "every row, no sample")
                for r in (a, b)
            )
            + ".",
            "",
        ]
        ratio = b["peak_tree_mb"] / a["peak_tree_mb"]
        v = verdict(ratio, 1.3, False)
        targets.append(
            (
                f"nightly peak RSS (process tree) at {b['rows']:,} vs {a['rows']:,} rows",
                f"{ratio:.2f}x ({b['peak_tree_mb']:.0f} / {a['peak_tree_mb']:.0f} MiB)",
                "<= 1.3x",
                v,
            )
        )
        if v == "MISSED":
            grows = {
                st: (b["rss"][st], a["rss"][st])
                for st in b["rss"]
                if st in a["rss"] and a["rss"][st] == a["rss"][st] and b["rss"][st] == b["rss"][st]
            }
            peak_stage = max(grows, key=lambda s: grows[s][0])
            top, bottom = grows[peak_stage]
            why.append(
                f"- **peak RSS at 4x the rows**: the peak is in **{peak_stage}** ({top:.0f} MiB at "
                f"{b['rows']:,} rows against {bottom:.0f} MiB at {a['rows']:,}: "
                f"{top / bottom:.2f}x); by stage: "
                + ", ".join(f"{s} {t / u:.2f}x" for s, (t, u) in grows.items())
                + f". The largest single process went from {a['peak_process_mb']:.0f} to "
                f"{b['peak_process_mb']:.0f} MiB."
            )
    if "noop" in info:
        days = sorted(info["noop"])
        lo, hi = days[0], days[-1]
        runs = info["noop"]
        lines += [
            f"### A nightly with nothing new, after {lo} and after {hi} days of history",
            "",
            f"{args.history_rows_per_day:,} rows a day. Each history's first nightly ingests, "
            f"validates, trains and scores everything; then {args.repeat} nightly run(s) with "
            "nothing new each (interleaved between the histories): medians, seconds.",
            "",
            "| stage | "
            + " | ".join(f"{d} days" for d in days)
            + " | task runs, "
            + " / ".join(f"{d}" for d in days)
            + " |",
            "|---|" + "---:|" * len(days) + "---:|",
        ]
        med = {
            d: {st: median([r["walls"].get(st, float("nan")) for r in runs[d]]) for st in STAGES}
            for d in days
        }
        for st in STAGES:
            tasks = " / ".join(str(runs[d][0]["tasks"].get(st, "-")) for d in days)
            lines.append(
                f"| {st} | " + " | ".join(f"{med[d][st]:.2f}" for d in days) + f" | {tasks} |"
            )
        flow = {d: median([r["flow_s"] for r in runs[d]]) for d in days}
        proc = {d: median([r["process_s"] for r in runs[d]]) for d in days}
        lines += [
            "| **nightly flow** | "
            + " | ".join(f"**{flow[d]:.2f}**" for d in days)
            + " | "
            + " / ".join(str(runs[d][0]["task_runs"]) for d in days)
            + " |",
            "| whole process | " + " | ".join(f"{proc[d]:.2f}" for d in days) + " | |",
            "",
            "First nightlies (everything to do): "
            + "; ".join(
                f"{d} days: process {info[f'first_{d}']['process_s']:.1f}s "
                f"(ingest {info[f'first_{d}']['walls'].get('ingest', float('nan')):.1f}s, "
                f"train {info[f'first_{d}']['walls'].get('train', float('nan')):.1f}s)"
                for d in days
            )
            + ". No-op runs that scored again: "
            + str(sum(not r["skipped"] for d in days for r in runs[d]))
            + ", that retrained: "
            + str(sum(r["retrained"] for d in days for r in runs[d]))
            + ".",
            "",
        ]
        ratio = flow[hi] / flow[lo]
        v = verdict(ratio, 1.3, False)
        targets.append(
            (
                f"no-op nightly flow after {hi} vs {lo} days of history",
                f"{ratio:.2f}x ({flow[hi]:.1f}s / {flow[lo]:.1f}s)",
                "<= 1.3x",
                v,
            )
        )
        if v == "MISSED":
            growth = {
                st: med[hi][st] - med[lo][st] for st in STAGES if st not in ("start-up", "exit")
            }
            top = max(growth, key=growth.__getitem__)
            t_lo, t_hi = runs[lo][0]["tasks"].get(top, 0), runs[hi][0]["tasks"].get(top, 0)
            why.append(
                f"- **no-op nightly after {hi} days**: {flow[hi] - flow[lo]:+.1f}s over the one "
                f"after {lo} days, of which **{top}** {growth[top]:+.1f}s ({med[lo][top]:.2f}s -> "
                f"{med[hi][top]:.2f}s, {t_lo} -> {t_hi} task runs); the others: "
                + ", ".join(f"{s} {g:+.2f}s" for s, g in growth.items() if s != top)
                + "."
            )
    lines += ["### Targets", "", "| measure | value | target | verdict |", "|---|---:|---|---|"]
    lines += [f"| {a} | {b} | {c} | **{d}** |" for a, b, c, d in targets]
    if why:
        lines += ["", "### Where a missed target is held", "", *why]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.nightly",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rows", type=int, default=10_000_000, help="rows of the big nightly (4x)")
    p.add_argument("--days", type=int, default=35, help="days of the big nightly's source")
    p.add_argument("--history", default="35,140", help="days of history of the no-op nightlies")
    p.add_argument("--history-rows-per-day", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=3, help="no-op nightlies per history")
    p.add_argument("--db", choices=("pg", "sqlite"), default="pg")
    p.add_argument("--skip-rows", action="store_true", help="no whole nightly at 1x / 4x rows")
    p.add_argument("--skip-history", action="store_true", help="no no-op nightlies")
    p.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.history_list = [int(x) for x in args.history.split(",")]
    bench(args)


if __name__ == "__main__":
    main()
