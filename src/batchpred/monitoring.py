"""Monitoring records analysts can query: validation results and drift per partition."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa

from batchpred import db, schema
from batchpred.config import DatasetSpec
from batchpred.validation import ValidationReport


def record_validation(
    engine: sa.Engine, dataset: str, report: ValidationReport, day: date | None, run_id: str
) -> None:
    """Append one validation outcome to validation_results."""
    t = db.table(engine, "validation_results")
    with engine.begin() as conn:
        conn.execute(
            t.insert().values(
                dataset=dataset,
                subject=report.subject,
                partition_date=day,
                run_id=run_id,
                success=report.success,
                rows=report.rows,
                evaluated=report.evaluated,
                failures=[
                    {"column": f.column, "expectation": f.expectation, "detail": f.detail}
                    for f in report.failures
                ],
                report_uri=report.json_path,
                validated_at=datetime.now(UTC),
            )
        )


PSI_FLOOR = 1e-4  # empty bins would make PSI infinite


def population_stability(reference: list[float], current: list[float]) -> float:
    """PSI = sum (q - p) ln(q / p) over bins; < 0.1 stable, 0.1-0.25 moderate, > 0.25 major."""
    p = np.maximum(np.asarray(reference, dtype=np.float64), PSI_FLOOR)
    q = np.maximum(np.asarray(current, dtype=np.float64), PSI_FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def measure_drift(
    root: str, day: date, spec: DatasetSpec, reference: dict[str, dict[str, Any]], batch_rows: int
) -> list[dict[str, Any]]:
    """Per feature: PSI of the partition against the model's training distribution (the
    reference_stats stored with the model), and null rates. Streams the partition."""
    from batchpred import scoring, training

    counts = {f.name: np.zeros(len(reference[f.name]["fractions"])) for f in spec.features}
    nulls = dict.fromkeys(spec.feature_names, 0)
    rows = 0
    for _, batch in scoring.iter_input_batches(root, day, spec, batch_rows):
        matrix = schema.feature_matrix(batch, spec)
        rows += batch.num_rows
        for j, feature in enumerate(spec.features):
            column = matrix[:, j]
            nulls[feature.name] += int(np.isnan(column).sum())
            counts[feature.name] += training.bin_counts(column, reference[feature.name])
    out = []
    for feature in spec.features:
        ref, total = reference[feature.name], counts[feature.name].sum()
        current = (
            (counts[feature.name] / total).tolist() if total else [0.0] * len(ref["fractions"])
        )
        out.append(
            {
                "feature": feature.name,
                "psi": population_stability(ref["fractions"], current),
                "null_rate": nulls[feature.name] / rows if rows else 0.0,
                "reference_null_rate": ref["null_rate"],
            }
        )
    return out


def record_drift(
    engine: sa.Engine,
    dataset: str,
    day: date,
    model_version: str,
    run_id: str,
    metrics: list[dict[str, Any]],
) -> None:
    """Replace the partition's drift rows for this model in drift_metrics."""
    t = db.table(engine, "drift_metrics")
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            t.delete().where(
                t.c.dataset == dataset,
                t.c.partition_date == day,
                t.c.model_version == model_version,
            )
        )
        conn.execute(
            t.insert(),
            [
                {
                    **m,
                    "dataset": dataset,
                    "partition_date": day,
                    "model_version": model_version,
                    "run_id": run_id,
                    "computed_at": now,
                }
                for m in metrics
            ],
        )
