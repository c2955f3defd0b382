"""Flow `nightly`: ingest -> validate -> train -> evaluate -> score the day."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import date
from typing import Any

import sqlalchemy as sa
from prefect import flow, get_client, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State

from batchpred import config, monitoring, notifications, outcomes, preflight, reports
from batchpred.config import Day
from batchpred.evaluation import GateDecision
from batchpred.scoring import PartitionResult
from flows.ingest import InvalidPartitions, ingest
from flows.score import score
from flows.train import train
from tasks import reporting, scoring

EXAMPLE_SQL = (
    "SELECT entity_id, partition_date, score, label, model_version\n"
    "  FROM predictions WHERE partition_date = '{day}' ORDER BY score DESC LIMIT 5;"
)


def _run_name() -> str:
    p = flow_run.parameters
    dataset = config.load_settings(p.get("config_files")).dataset.name
    return f"nightly-{dataset}-{p.get('day') or 'latest'}"


def _name_by_day(dataset: str, day: date) -> None:
    """A run started without a day (every scheduled one) is renamed once it knows the day it
    resolved to, so the UI's list of runs reads as a list of days."""
    if flow_run.id is None:
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, name=_day_name(dataset, day))


def _day_name(dataset: str, day: date) -> str:
    """The run's name once its day is known (the UI's, and the notifications')."""
    return f"nightly-{dataset}-{day}"


@flow(name="nightly", flow_run_name=_run_name)
def nightly(
    day: Day | None = None, config_files: list[str] | None = None, workspace: str = "."
) -> dict[str, Any]:
    """The whole pipeline for one day (default: the newest source day, which usually has no
    label yet). Training uses the newest labelled days; invalid partitions are left out of
    training and scoring; realised performance is computed for scored days whose labels have
    arrived. Failed training does not stop the day being scored with the current champion.
    Ends Failed if training failed, any partition is invalid or the day has no partition;
    Blocked (a FAILED state) if the gate has been blocked by drift
    monitoring.drift_block_nights nights running (the champion is frozen); Drifted (a
    COMPLETED state) if the day drifted above monitoring's thresholds; the webhook in
    `notifications` is told of each."""
    settings = config.load_settings(config_files)
    with reporting.flow_body(settings.dataset.name):  # subflows: tagged at their call
        return _nightly(settings, day, config_files, workspace)


def _nightly(
    settings: config.Settings, day: date | None, config_files: list[str] | None, workspace: str
) -> dict[str, Any]:
    """The nightly flow's body."""
    target = day
    try:
        # As of `day`: days after it are not pulled (a snapshot source is ingested as `day`).
        with reporting.run_tags():
            ingested = ingest(end=day, config_files=config_files, fail_on_invalid=False)
        seen = ingested.failed_days() + ingested.passed
        if target is None and not seen:
            raise outcomes.nothing_to_score(settings.source.url, None, None)
        target = day or max(seen)
        if day is None:
            _name_by_day(settings.dataset.name, target)
        with reporting.run_tags():
            trained = train(config_files=config_files, workspace=workspace, return_state=True)
        training_error = None if trained.is_completed() else _failure(trained)
        scored: list[PartitionResult] = []
        drift: monitoring.DriftAssessment | None = None
        realised: list[dict[str, Any]] = []
        problem: BaseException | None = None
        if target in ingested.passed:
            with reporting.run_tags():
                done = score(day=target, config_files=config_files, return_state=True)
            if done.is_completed():
                scored = done.result()
                version = scored[0].model_version
                shadow = (
                    scoring.resolve_shadow(settings, version) if settings.scoring.shadow else None
                )
                if shadow:
                    with reporting.run_tags():
                        scored += score(day=target, model=shadow, config_files=config_files)
                rescored = any(r.status == "scored" for r in scored)
                drift = scoring.measure_drift(settings, version, target, rescored)
                reporting.publish_drift(settings.dataset.name, str(target), version, drift)
                realised = scoring.realised_performance(settings)
                reporting.publish_realised(settings.dataset.name, realised)
            else:
                problem = _failure(done)
        elif str(target) in ingested.failed:
            problem = InvalidPartitions(ingested.failed[str(target)])
        else:
            problem = outcomes.nothing_to_score(settings.source.url, target, target)
        if training_error is not None:
            raise outcomes.training_failed(
                training_error,
                target,
                scored[0].model_version if scored else None,
                scored[0].rows_scored if scored else 0,
                problem,
            )
        if problem is not None:
            raise problem
        if ingested.failed:
            raise InvalidPartitions("\n".join(ingested.failed.values()))
    except Exception as exc:
        reporting.notify(settings.notifications, _summary(settings, target, "Failed", exc))
        if isinstance(exc, (*outcomes.KNOWN_FAILURES, InvalidPartitions)):
            get_run_logger().error("%s", exc)  # known: its message, without a traceback
            # the state ends the run: a caller gets its data, or its error raised (Prefect's types
            # cannot say that a flow may return a state)
            return Failed(message=outcomes.one_line(exc), data=exc)  # type: ignore[return-value]
        raise
    if drift is None:  # every way past the scoring above without a drift raised a problem
        raise RuntimeError(f"nightly {target}: scored without measuring drift")
    model: dict[str, Any] = trained.result()
    out = {
        "day": target,
        "model": model,
        "scored": scored,
        "drift": drift.rows,
        "drifted": drift.drifted,
        "realised": realised,
    }
    gate: GateDecision = model["gate"]
    frozen = gate.frozen_by_drift(settings.monitoring.drift_block_nights)
    if frozen:  # the day was scored, but nothing automatic will move the champion
        if drift.is_drifted:
            frozen += f"; {target} drifted too: {drift.describe()}"
        get_run_logger().warning("%s", frozen)
        reporting.notify(
            settings.notifications, _summary(settings, target, outcomes.BLOCKED, frozen, drift)
        )
        reporting.tag_run("blocked")
        blocked = outcomes.GateBlocked(frozen)
        return Failed(name=outcomes.BLOCKED, message=frozen, data=blocked)  # type: ignore[return-value]
    if drift.is_drifted:
        reason = f"{target} drifted: {drift.describe()}"
        reporting.tag_run("drifted")
        reporting.notify(
            settings.notifications, _summary(settings, target, outcomes.DRIFTED, reason, drift)
        )
        # the state ends the run: a caller gets its data, or its error raised (Prefect's types
        # cannot say that a flow may return a state)
        return Completed(name=outcomes.DRIFTED, message=reason, data=out)  # type: ignore[return-value]
    return out


def _failure(state: State[Any]) -> BaseException:
    """The exception a failed subflow's state holds (a message as RuntimeError, should its
    result be something else)."""
    error = state.result(raise_on_failure=False)
    if isinstance(error, BaseException):
        return error
    return RuntimeError(state.message or f"{state.name}: {error!r}")


def _summary(
    settings: config.Settings,
    day: date | None,
    state: str,
    reason: BaseException | str,
    drift: monitoring.DriftAssessment | None = None,
) -> dict[str, Any]:
    return notifications.run_summary(
        flow="nightly",
        run=_day_name(settings.dataset.name, day) if day else flow_run.name,
        url=reporting.run_url(),
        dataset=settings.dataset.name,
        day=day,
        state=state,
        reason=outcomes.one_line(reason),
        drifted=drift.drifted if drift else None,
    )


def main(argv: Sequence[str] | None = None, prog: str = "python -m flows.nightly") -> None:
    parser = outcomes.flow_parser(prog, __doc__)
    parser.add_argument(
        "--day",
        type=date.fromisoformat,
        help="the day to score, YYYY-MM-DD (default: the newest source day); later days "
        "are not pulled",
    )
    parser.add_argument(
        "--workspace", default=".", help="folder holding dvc.yaml (default: the current one)"
    )
    args = parser.parse_args(argv)
    with (
        outcomes.entry_point(prog.removeprefix("python -m flows."), args.debug),
        reporting.flow_entry(),
    ):
        preflight.check(args.config, source=True)
        state = nightly(
            day=args.day, config_files=args.config, workspace=args.workspace, return_state=True
        )
        if not state.is_completed():
            error = state.result(raise_on_failure=False)
            if isinstance(error, BaseException):
                raise error
            raise RuntimeError(f"nightly ended {state.name}: {state.message}")
    out = state.result()
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
            if isinstance(v, float) and k not in reports.HIDDEN_METRICS
        )
    )
    print(f"    why: {model['gate'].describe()}")
    if model.get("not_retrained"):
        print(f"    {model['not_retrained']}")
    if data := model.get("training_data"):
        print("\n".join(reports.training_lines(data)))
    worst = max(out["drift"], key=lambda m: m["psi"])
    print(f"  drift vs training data: max PSI {worst['psi']:.3f} ({worst['feature']})")
    for r in out["realised"][:3]:
        shown = {k: v for k, v in r["metrics"].items() if k in ("auc", "logloss", "rmse", "mae")}
        print(
            f"  realised {r['partition_date']} by {r['model_version']}: {r['rows']:,} labelled, "
            + ", ".join(f"{k}={v:.4f}" for k, v in shown.items())
            + (f"; {r['metrics']['error']}" if r["metrics"].get("error") else "")
            + (
                "; in-sample: the model was fit on this day"
                if r["metrics"].get("in_sample")
                else ""
            )
            + (
                f"; {r['metrics']['unmatched_labels']:,} late labels match no row"
                if r["metrics"].get("unmatched_labels") and not r["metrics"].get("error")
                else ""
            )
        )
    print(f"  database: {url.render_as_string(hide_password=True)}")
    print("  try:\n    " + EXAMPLE_SQL.format(day=out["day"]).replace("\n", "\n    "))
    if state.name == outcomes.DRIFTED:
        print(f"DRIFTED: {state.message}", file=sys.stderr)
        sys.exit(outcomes.EXIT_DRIFTED)


if __name__ == "__main__":
    main()
    outcomes.end_process()
