"""Monitoring records analysts can query: drift per partition against the model's training
statistics, and realised performance once labels arrive."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from batchpred import db, schema
from batchpred.config import DatasetSpec, Settings

PSI_FLOOR = 1e-4  # empty bins would make PSI infinite


def population_stability(reference: list[float], current: list[float]) -> float:
    """PSI = sum (q - p) ln(q / p) over bins; < 0.1 stable, 0.1-0.25 moderate, > 0.25 major."""
    p = np.maximum(np.asarray(reference, dtype=np.float64), PSI_FLOOR)
    q = np.maximum(np.asarray(current, dtype=np.float64), PSI_FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def measure_drift(
    root: str,
    day: date,
    spec: DatasetSpec,
    contract: schema.Contract,
    reference: dict[str, dict[str, Any]],
    batch_rows: int,
) -> list[dict[str, Any]]:
    """Per model feature: PSI of the partition against the model's training distribution
    (the reference_stats stored with the model), and null rates; values the model never saw
    count as missing. Streams the partition."""
    from batchpred import scoring, training

    features = contract.features
    counts = {f.name: np.zeros(len(reference[f.name]["fractions"])) for f in features}
    nulls = dict.fromkeys(contract.feature_names, 0)
    rows = 0
    for _, batch in scoring.iter_input_batches(root, day, spec, batch_rows, contract.feature_names):
        matrix, _ = schema.feature_matrix(batch, contract)
        rows += batch.num_rows
        for j, feature in enumerate(features):
            column = matrix[:, j]
            nulls[feature.name] += int(np.isnan(column).sum())
            counts[feature.name] += training.bin_counts(column, reference[feature.name])
    out = []
    for feature in features:
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


def realised_performance(
    engine: sa.Engine, settings: Settings, *, recompute: bool = False
) -> list[dict[str, Any]]:
    """For every (day, model version) in the ledger whose labels have arrived: the model's
    realised metrics on that day (AUC/log loss or RMSE/MAE over the rows that have a label),
    stored in realised_metrics. A pair is computed again only when its labels changed.
    Returns the pairs computed by this call."""
    from batchpred import training

    spec = settings.dataset
    ledger, realised = db.table(engine, "scoring_ledger"), db.table(engine, "realised_metrics")
    with engine.connect() as conn:
        done = conn.execute(
            sa.select(ledger.c.partition_date, ledger.c.model_version).where(
                ledger.c.dataset == spec.name, ledger.c.status == "done"
            )
        ).all()
        known = {
            (r.partition_date, r.model_version): r.labels_hash
            for r in conn.execute(
                sa.select(
                    realised.c.partition_date, realised.c.model_version, realised.c.labels_hash
                ).where(realised.c.dataset == spec.name)
            )
        }
    out = []
    for day in sorted({d for d, _ in done}):
        labels = training.day_labels(settings, day)
        if labels is None:
            continue
        ids, y, labels_hash = labels
        for version in sorted(v for d, v in done if d == day):
            if not recompute and known.get((day, version)) == labels_hash:
                continue
            row = _realised_row(engine, settings, day, version, ids, y, labels_hash)
            if row is not None:
                out.append(row)
    return out


def _realised_row(
    engine: sa.Engine,
    settings: Settings,
    day: date,
    version: str,
    ids: Any,
    y: np.ndarray,
    labels_hash: str,
) -> dict[str, Any] | None:
    from batchpred import training

    preds = db.table(engine, "predictions")
    with engine.connect() as conn:
        scored = pd.DataFrame(
            conn.execute(
                sa.select(preds.c.entity_id, preds.c.score).where(
                    preds.c.partition_date == day, preds.c.model_version == version
                )
            ).all(),
            columns=["entity_id", "score"],
        )
    truth = pd.DataFrame({"entity_id": ids.to_pylist(), "y": y}).dropna()
    joined = scored.merge(truth, on="entity_id", how="inner")
    if joined.empty:
        return None
    spec = settings.dataset
    threshold = spec.target.threshold
    try:
        metrics = training.metrics_for(spec, joined["y"].to_numpy(), joined["score"], threshold)
    except ValueError as exc:  # e.g. AUC on a day whose labels are all one class
        metrics = {"rows": len(joined), "error": str(exc)}
    row = {
        "dataset": spec.name,
        "partition_date": day,
        "model_version": version,
        "rows": len(joined),
        "metrics": metrics,
        "labels_hash": labels_hash,
        "computed_at": datetime.now(UTC),
    }
    t = db.table(engine, "realised_metrics")
    with engine.begin() as conn:
        conn.execute(
            t.delete().where(
                t.c.dataset == spec.name, t.c.partition_date == day, t.c.model_version == version
            )
        )
        conn.execute(t.insert().values(**row))
    return row


def recent_realised(engine: sa.Engine, dataset: str, limit: int = 14) -> list[dict[str, Any]]:
    """The newest realised metrics of a dataset, newest day first."""
    t = db.table(engine, "realised_metrics")
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t)
            .where(t.c.dataset == dataset)
            .order_by(t.c.partition_date.desc(), t.c.model_version)
            .limit(limit)
        ).mappings()
        return [dict(r) for r in rows]
