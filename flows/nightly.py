"""Flow `nightly`: ingest -> validate -> train -> evaluate -> score the day."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import date
from typing import Any

import sqlalchemy as sa
from prefect import flow
from prefect.runtime import flow_run

from batchpred import config
from flows.ingest import InvalidPartitions, ingest
from flows.score import score
from flows.train import train
from tasks import reporting, scoring

EXAMPLE_SQL = (
    "SELECT entity_id, partition_date, score, label, model_version\n"
    "  FROM predictions WHERE partition_date = '{day}' ORDER BY score DESC LIMIT 5;"
)


def _run_name() -> str:
    return f"nightly-{flow_run.parameters.get('day') or 'latest'}"


@flow(name="nightly", flow_run_name=_run_name)
def nightly(
    day: date | None = None, config_files: list[str] | None = None, workspace: str = "."
) -> dict[str, Any]:
    """The whole pipeline for one day (default: the newest source day, which usually has no
    label yet). Training uses the newest labelled days; invalid partitions are left out of
    training and scoring; realised performance is computed for scored days whose labels have
    arrived. The run fails at the end if any partition is invalid."""
    # As of `day`: days after it are not pulled (a snapshot source is ingested as `day`).
    ingested = ingest(end=day, config_files=config_files, fail_on_invalid=False)
    target = day or max([date.fromisoformat(d) for d in ingested.failed] + ingested.passed)
    trained = train(config_files=config_files, workspace=workspace)
    if target not in ingested.passed:
        raise InvalidPartitions(
            ingested.failed.get(str(target), f"partition {target} is not valid")
        )
    settings = config.load_settings(config_files)
    scored = score(day=target, config_files=config_files)
    version = scored[0].model_version
    shadow = scoring.resolve_shadow(settings, version) if settings.scoring.shadow else None
    if shadow:
        scored += score(day=target, model=shadow, config_files=config_files)
    drift = scoring.measure_drift(settings, version, target)
    reporting.publish_drift(str(target), version, drift)
    realised = scoring.realised_performance(settings)
    reporting.publish_realised(settings.dataset.name, realised)
    if ingested.failed:
        raise InvalidPartitions("\n".join(ingested.failed.values()))
    return {
        "day": target,
        "model": trained,
        "scored": scored,
        "drift": drift,
        "realised": realised,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.nightly", description=__doc__)
    parser.add_argument("--day", type=date.fromisoformat)
    parser.add_argument("--config", action="append", help="YAML file to layer (repeatable)")
    parser.add_argument("--workspace", default=".", help="folder holding dvc.yaml")
    args = parser.parse_args(argv)
    out = nightly(day=args.day, config_files=args.config, workspace=args.workspace)
    model, url = out["model"], sa.engine.make_url(config.database_url())
    metrics = model["challenger_metrics"]
    print("\n=== batchpred nightly", out["day"], "===")
    for r in out["scored"]:
        print(
            f"  scored {r.partition_date}: {r.status}, {r.rows_scored:,} rows, "
            f"{r.rows_rejected:,} rejected, {r.rows_per_second:,.0f} rows/s"
            f" (model {r.model_version})"
        )
        if r.unknown_values:
            print(
                "    unknown category values, scored as missing: "
                + ", ".join(f"{k} {v:,}" for k, v in sorted(r.unknown_values.items()))
            )
    print(
        f"  model {model['version']} ({model['decision']}): "
        + ", ".join(
            f"{k}={v:.4f}"
            for k, v in metrics.items()
            if isinstance(v, float) and k != "primary_value"
        )
    )
    data = model.get("training_data") or {}
    if data:
        print(
            f"  trained on {data['days']}, {sum(data['rows'].values()):,} rows in "
            f"train/valid/holdout; left out:\n    {data['unlabelled_rows_left_out']:,} without "
            f"a label, "
            f"{data['rejected_rows_left_out']:,} breaking a rule, "
            f"{len(data['days_passed_over'])} day(s) passed over"
        )
    worst = max(out["drift"], key=lambda m: m["psi"])
    print(f"  drift vs training data: max PSI {worst['psi']:.3f} ({worst['feature']})")
    for r in out["realised"][:3]:
        shown = {k: v for k, v in r["metrics"].items() if k in ("auc", "logloss", "rmse", "mae")}
        print(
            f"  realised {r['partition_date']} by {r['model_version']}: {r['rows']:,} labelled, "
            + ", ".join(f"{k}={v:.4f}" for k, v in shown.items())
        )
    print(f"  database: {url.render_as_string(hide_password=True)}")
    print("  try:\n    " + EXAMPLE_SQL.format(day=out["day"]).replace("\n", "\n    "))


if __name__ == "__main__":
    main()
