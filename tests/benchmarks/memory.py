"""Peak memory of the training path, stage by stage, at 1x and 4x rows.

    .venv/bin/python -m tests.benchmarks.memory [--rows 1000000] [--days 8] [--scales 1,4]
        [--dataset churn] [--rounds 20] [--max-rows N] [--keep DIR]

For each scale a fresh temporary lake holds `rows * scale` demo rows (src/batchpred/demo.py,
the churn spec by default) in `days` daily partitions, so a partition grows with the scale as
the window does: validation's unit is the partition, prepare's and train's the window. Then
each stage runs in its own process, as `dvc repro` and the ingest flow run them:

    generate  demo source + ingest into the raw zone (not a stage under test)
    validate  validation.validate_partition for every partition, one after the other
    prepare   training.prepare_training_set (the DVC stage `prepare`)
    train     training.train_model (the DVC stage `train`)
    evaluate  evaluation.evaluate_model (the DVC stage `evaluate`)

and its peak resident set size is read from the kernel's accounting of that one child
(os.wait4's ru_maxrss), next to the child's own peak right after its imports (the part no
data can shrink). Prints a table; figures only, no assertions. The training window is every
day (valid 1, holdout 1), with `--rounds` boosting rounds (memory does not depend on them).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
START = date(2026, 10, 1)
STAGES = ("generate", "validate", "prepare", "train", "evaluate")
_T0 = time.perf_counter()

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def vm_hwm_mb() -> float:
    """Peak resident set size of this process so far (VmHWM), MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_config(work: Path, args: argparse.Namespace, rows_per_day: int) -> list[str]:
    import yaml

    training: dict[str, Any] = {
        "window_days": args.days,
        "valid_days": 1,
        "holdout_days": 1,
        "num_boost_round": args.rounds,
        "early_stopping_rounds": 5,
        "registry": str(work / "models"),
    }
    if args.max_rows is not None:  # a key only newer code knows: passed only when asked
        training["max_rows"] = args.max_rows
    override = {
        "demo": {
            "start_date": START.isoformat(),
            "days": args.days,
            "rows_per_day": rows_per_day,
            "unlabelled_days": 0,
            "null_label_fraction": 0.01,
        },
        "source": {"url": str(work / "source")},
        "lake": {
            "raw": str(work / "raw"),
            "labels": str(work / "labels"),
            "reports": str(work / "reports"),
        },
        "training": training,
    }
    path = work / "override.yaml"
    path.write_text(yaml.safe_dump(override, sort_keys=False))
    return [
        str(ROOT / "configs/base.yaml"),
        str(ROOT / f"configs/datasets/{args.dataset}.yaml"),
        str(path),
    ]


# --- children -------------------------------------------------------------------------------


def child(stage: str, work: Path, config_files: list[str]) -> dict[str, Any]:
    """Run one stage in this process; returns what the parent prints."""
    from batchpred import config, db, storage

    settings = config.load_settings(config_files)
    engine = db.create_engine(f"sqlite:///{work}/batchpred.db")
    db.migrate(engine)
    # each stage imports what its command imports (the DVC stages never load Great Expectations)
    if stage == "validate":
        from batchpred import validation

        validation._batch_definition()  # GX's context, built on first use
    elif stage != "generate":
        from batchpred import evaluation, training
    base = vm_hwm_mb()
    out: dict[str, Any] = {}
    t = time.perf_counter()
    if stage == "generate":
        from batchpred import demo, ingestion

        days = demo.write_demo_source(settings.dataset, settings.demo, settings.source.url)
        for day in days:
            ingestion.ingest_partition(settings, day)
        out["partitions"] = len(days)
    elif stage == "validate":
        spec, cfg, root = settings.dataset, settings.validation, settings.lake.raw
        results = [
            validation.validate_partition(
                engine, spec, cfg, root, day, reports_url=settings.lake.reports, run_id="mem"
            )
            for day in storage.list_partitions(root)
        ]
        out["valid"] = sum(r.success for r in results)
        out["rows"] = sum(r.rows for r in results)
    elif stage == "prepare":
        summary = training.prepare_training_set(settings, work / "data", engine)
        out["rows"] = summary["rows"]
    elif stage == "train":
        manifest = training.train_model(settings, work / "data", work / "model")
        out["sha256"] = manifest["sha256"][:16]
        out["train_rows"] = manifest["train_rows"]
    elif stage == "evaluate":
        metrics = evaluation.evaluate_model(
            settings, work / "model/model.ubj", work / "data/holdout.parquet"
        )
        out["auc"] = round(metrics["auc"], 4)
    out["stage_s"] = round(time.perf_counter() - t, 1)
    out["after_imports_mb"] = round(base)
    out["vmhwm_mb"] = round(vm_hwm_mb())
    return out


def run_stage(stage: str, work: Path, config_files: list[str]) -> dict[str, Any]:
    """One stage in a fresh process; its peak RSS from the kernel (ru_maxrss of that child)."""
    cmd = [sys.executable, "-m", "tests.benchmarks.memory", "--child", stage, "--work", str(work)]
    for c in config_files:
        cmd += ["--config", c]
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"}
    logfile = work / f"{stage}.log"
    t = time.perf_counter()
    with open(logfile, "w") as err, open(work / f"{stage}.out", "w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - t
    lines = (work / f"{stage}.out").read_text().splitlines()
    line = next((x for x in lines if x.startswith("MEMORY-RESULT ")), None)
    if proc.returncode or line is None:
        raise RuntimeError(
            f"stage {stage} failed (rc={proc.returncode}):\n{logfile.read_text()[-3000:]}"
        )
    out: dict[str, Any] = json.loads(line.split(" ", 1)[1])
    out["peak_rss_mb"] = round(usage.ru_maxrss / 1024)  # Linux: KiB
    out["process_s"] = round(elapsed, 1)
    return out


# --- parent ---------------------------------------------------------------------------------


def measure(args: argparse.Namespace, scale: int, tmp: Path) -> dict[str, dict[str, Any]]:
    rows = args.rows * scale
    work = tmp / f"x{scale}"
    work.mkdir(parents=True)
    files = write_config(work, args, rows // args.days)
    results = {}
    for stage in STAGES:
        log(f"{scale}x ({rows:,} rows): {stage} ...")
        results[stage] = run_stage(stage, work, files)
        log(f"{scale}x {stage}: {results[stage]}")
    return results


def table(all_results: dict[int, dict[str, dict[str, Any]]], args: argparse.Namespace) -> str:
    scales = sorted(all_results)
    head = ["stage"] + [f"peak RSS {s}x (MiB)" for s in scales]
    head += [f"after imports {s}x" for s in scales]
    if len(scales) > 1:
        head.append(f"{scales[-1]}x / {scales[0]}x")
    head += [f"seconds {s}x" for s in scales]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for stage in STAGES[1:]:
        peaks = [all_results[s][stage]["peak_rss_mb"] for s in scales]
        cells = [stage] + [f"{p:,}" for p in peaks]
        cells += [f"{all_results[s][stage]['after_imports_mb']:,}" for s in scales]
        if len(scales) > 1:
            cells.append(f"{peaks[-1] / peaks[0]:.2f}")
        cells += [f"{all_results[s][stage]['stage_s']}" for s in scales]
        lines.append("| " + " | ".join(cells) + " |")
    rows = ", ".join(f"{s}x = {args.rows * s:,}" for s in scales)
    note = f"rows: {rows} in {args.days} partitions; dataset {args.dataset}"
    note += f"; {args.rounds} rounds; training.max_rows {args.max_rows}"
    return note + "\n\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.memory", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows at 1x, all days")
    parser.add_argument("--days", type=int, default=8, help="daily partitions (the window)")
    parser.add_argument("--scales", default="1,4", help="comma-separated multiples of --rows")
    parser.add_argument("--dataset", default="churn", help="configs/datasets/<name>.yaml")
    parser.add_argument("--rounds", type=int, default=20, help="boosting rounds")
    parser.add_argument("--max-rows", type=int, default=None, help="training.max_rows")
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temp dir)")
    parser.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--config", action="append", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = child(args.child, Path(args.work), args.config)
        print("MEMORY-RESULT " + json.dumps(result), flush=True)
        return
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bp-memory-"))
    try:
        results = {s: measure(args, s, tmp) for s in map(int, args.scales.split(","))}
        print(table(results, args))
        print(json.dumps(results))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
