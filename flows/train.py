"""Flow `train`: run the dataset's DVC pipeline (window -> prepare -> train -> evaluate), then
register and gate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from batchpred import config, outcomes, preflight, reports
from batchpred.evaluation import GateDecision
from tasks import model, reporting


def _run_name() -> str:
    return f"train-{reporting.dataset_of(flow_run.parameters.get('config_files'))}"


@flow(name="train", flow_run_name=_run_name)
def train(config_files: list[str] | None = None, workspace: str = ".") -> dict[str, Any]:
    """Retrain on the rolling window via `dvc repro evaluate@<dataset>` (a no-op when the
    window's labelled days, the settings and the code are unchanged: the result's `retrained`
    is then False and `not_retrained` says why); promote only past the quality gate."""
    settings = config.load_settings(config_files)
    dataset = settings.dataset.name
    doing = f"dvc repro evaluate@{dataset}"
    with (
        reporting.flow_body(dataset),
        reporting.Progress("train", dataset, 1, unit="model", doing=doing) as progress,
    ):
        retrained = model.reproduce_pipeline(workspace, config_files, dataset)
        result = model.register_and_gate(settings, workspace)
        result["retrained"] = retrained
        if not retrained:
            passed = result["training_data"]["days_passed_over"]
            result["not_retrained"] = reports.not_retrained(result["version"], passed)
        model.push_artifacts(workspace, config_files, dataset)
        reporting.publish_model_comparison(dataset, result)
        progress.step(result["decision"])
        done = f"model {result['version']} {result['decision']}"
        progress.finish(done if retrained else f"{done} (not retrained: nothing it reads changed)")
    return result


def summary_lines(result: dict[str, Any]) -> list[str]:
    """What a training run decided, for the terminal: the model, its evaluated model's holdout
    metrics under readable names (4 decimals) and the rows they were taken on, its baselines'
    on the same rows with the lift over the linear one, and the gate's reasons in words (from
    its GateDecision)."""
    decision: GateDecision = result["gate"]
    lines = [
        f"model {decision.version}: {decision.decision}",
        f"  holdout: {reports.format_metrics(dict(decision.challenger_metrics))}",
    ]
    if decision.compared_on and not decision.incomparable:
        lines.append(f"    on {decision.compared_on}")
    if decision.baselines:
        recorded = {
            "primary": decision.metric,
            "baselines": decision.baselines,
            "lift_over_linear": decision.lift,
        }
        lines.append(f"  baselines: {reports.baselines_text(recorded)}")
    lines.append(f"  why: {decision.describe()}")
    if result.get("not_retrained"):
        lines.append(f"  {result['not_retrained']}")
    return lines


def main(argv: Sequence[str] | None = None, prog: str = "python -m flows.train") -> None:
    parser = outcomes.flow_parser(prog, __doc__)
    parser.add_argument(
        "--workspace", default=".", help="folder holding dvc.yaml (default: the current one)"
    )
    args = parser.parse_args(argv)
    with (
        outcomes.entry_point(prog.removeprefix("python -m flows."), args.debug),
        reporting.flow_entry(),
    ):
        preflight.check(args.config)
        result = train(config_files=args.config, workspace=args.workspace)
    print("\n".join(summary_lines(result)))


if __name__ == "__main__":
    main()
    outcomes.end_process()
