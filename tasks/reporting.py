"""Tasks that publish run reports: artifacts in the Prefect UI, and the webhook notification."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from batchpred import monitoring, notifications
from batchpred.config import NotificationsConfig
from batchpred.scoring import PartitionResult


@task(name="report-partitions", cache_policy=NONE)
def publish_partitions(results: list[PartitionResult], failures: dict[str, str]) -> None:
    """Partitions table: rows, seconds, rows/s, rejected, status."""
    rows: list[dict[str, Any]] = [
        {
            "partition": str(r.partition_date),
            "model_version": r.model_version,
            "status": r.status,
            "rows_in": r.rows_in,
            "rows_scored": r.rows_scored,
            "rows_rejected": r.rows_rejected,
            "seconds": round(r.seconds, 2),
            "rows_per_s": round(r.rows_per_second),
        }
        for r in results
    ]
    rows += [
        {"partition": day, "status": "failed", "error": err[:500]} for day, err in failures.items()
    ]
    create_table_artifact(key="scoring-partitions", table=rows, description="Scored partitions")


@task(name="report-validation", cache_policy=NONE)
def publish_validation(outcomes: dict[str, str]) -> None:
    """Validation summary: each partition's outcome, with failures spelled out."""
    lines = ["| partition | outcome |", "|---|---|"]
    lines += [
        f"| {day} | {text.replace(chr(10), '<br>')} |" for day, text in sorted(outcomes.items())
    ]
    create_markdown_artifact(
        key="validation-summary",
        markdown="\n".join(lines),
        description="Great Expectations results per partition",
    )


@task(name="report-drift", cache_policy=NONE)
def publish_drift(day: str, version: str, drift: monitoring.DriftAssessment) -> None:
    """Drift table: PSI, level against its threshold and null rates per feature and for the
    score distribution, worst first; the description starts with DRIFT: when the day drifted."""
    rows = [
        {
            "feature": m["feature"],
            "psi": round(m["psi"], 4),
            "level": m["level"],
            "psi_major": m["psi_major"],
            "null_rate": round(m["null_rate"], 4),
            "reference_null_rate": round(m["reference_null_rate"], 4),
        }
        for m in drift.rows
    ]
    against = f"{day} against model {version}'s training data"
    create_table_artifact(
        key="drift",
        table=rows,
        description=f"DRIFT: {drift.describe()} ({against})"
        if drift.is_drifted
        else f"Drift of {against}: none above its threshold",
    )


@task(name="notify", cache_policy=NONE)
def notify(cfg: NotificationsConfig, payload: dict[str, Any]) -> None:
    """POST the run's summary to the configured webhook; a failure is a WARNING, never a
    change of the run's outcome."""
    problem = notifications.send(cfg, payload)
    if problem:
        get_run_logger().warning("%s", problem)


@task(name="report-model", cache_policy=NONE)
def publish_model_comparison(result: dict[str, Any]) -> None:
    """Challenger vs champion on the same holdout, the gate's decision, and what the model was
    trained on (rows, rows left out for a missing label or a broken rule, days passed over)."""
    challenger = result["challenger_metrics"]
    champion = result["champion_metrics"] or {}
    rows: list[dict[str, Any]] = [
        {"metric": k, "challenger": _round(challenger.get(k)), "champion": _round(champion.get(k))}
        for k in sorted(challenger)
        if k not in ("primary", "primary_value")
    ]
    data = result.get("training_data") or {}
    rows += [
        {"metric": f"training: {k}", "challenger": str(v), "champion": ""} for k, v in data.items()
    ]
    create_table_artifact(
        key="model-comparison",
        table=rows,
        description=f"{result['version']}: {result['decision']} — {result['reason']}",
    )


@task(name="report-realised", cache_policy=NONE)
def publish_realised(dataset: str, rows: list[dict[str, Any]]) -> None:
    """Realised performance: each scored day's metrics once its labels arrived, per model."""
    keys = ("auc", "logloss", "accuracy", "rmse", "mae", "error")
    table = [
        {
            "day": str(r["partition_date"]),
            "model_version": r["model_version"],
            "labelled_rows": r["rows"],
            **{k: _round(r["metrics"][k]) for k in keys if k in r["metrics"]},
        }
        for r in rows
    ]
    create_table_artifact(
        key=f"realised-{dataset}",
        table=table,
        description=f"{dataset}: realised performance on scored days whose labels arrived",
    )


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value
