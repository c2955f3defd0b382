"""The `batchpred` command: DVC stage commands, one-off operations, and flow launchers."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from batchpred import config

FLOWS = ("ingest", "train", "score", "nightly")


def _write_json(path: str | Path, payload: object) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def cmd_demo(args: argparse.Namespace, settings: config.Settings) -> None:
    from batchpred import demo

    days = demo.write_demo_source(
        settings.dataset, settings.demo, settings.source.url, settings.source.format
    )
    print(f"demo source: {len(days)} new day(s) under {settings.source.url}")


def cmd_prepare(args: argparse.Namespace, settings: config.Settings) -> None:
    from batchpred import training

    summary = training.prepare_training_set(settings, args.out)
    print(json.dumps(summary["rows"]))


def cmd_train(args: argparse.Namespace, settings: config.Settings) -> None:
    from batchpred import training

    manifest = training.train_model(settings, args.data, args.out)
    print(f"model sha256 {manifest['sha256']} best_iteration {manifest['best_iteration']}")


def cmd_evaluate(args: argparse.Namespace, settings: config.Settings) -> None:
    from batchpred import training

    metrics = training.evaluate_model(
        settings, Path(args.model) / "model.ubj", Path(args.data) / "holdout.parquet"
    )
    _write_json(args.metrics, metrics)
    print(json.dumps(metrics))


def cmd_migrate(args: argparse.Namespace, settings: config.Settings) -> None:
    from batchpred import db

    db.migrate(db.create_engine(config.database_url()))
    print("schema is at the newest migration")


def cmd_flow(args: argparse.Namespace, extra: Sequence[str]) -> None:
    # Flows live outside the library (they import prefect); load them only when asked.
    module = importlib.import_module(f"flows.{args.flow}")
    module.main(list(extra))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batchpred", description=__doc__)
    parser.add_argument(
        "--config",
        action="append",
        help="YAML file to layer (repeatable); default $BATCHPRED_CONFIG",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="generate the seeded demo source data (missing days only)")
    p = sub.add_parser("prepare", help="DVC stage: assemble the training window")
    p.add_argument("--out", required=True)
    p = sub.add_parser("train", help="DVC stage: train and save model.ubj + manifest.json")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("evaluate", help="DVC stage: metrics of the model on the holdout")
    p.add_argument("--data", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--metrics", required=True)
    sub.add_parser("migrate", help="create or upgrade the database schema")
    p = sub.add_parser("run", help=f"run a flow: one of {', '.join(FLOWS)} (args go to the flow)")
    p.add_argument("flow", choices=FLOWS)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "run":
        cmd_flow(args, extra)
        return
    if extra:
        parser.error(f"unrecognised arguments: {' '.join(extra)}")
    settings = config.load_settings(args.config)
    handlers = {
        "demo": cmd_demo,
        "prepare": cmd_prepare,
        "train": cmd_train,
        "evaluate": cmd_evaluate,
        "migrate": cmd_migrate,
    }
    handlers[args.command](args, settings)


if __name__ == "__main__":
    main()
