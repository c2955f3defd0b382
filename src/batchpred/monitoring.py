"""Monitoring records analysts can query: drift per partition against the model's training
statistics (features and the score distribution) judged by monitoring's thresholds, and
realised performance once labels arrive."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from batchpred import db, evaluation, labels, registry, schema, scoring, stats
from batchpred.config import DatasetSpec, MonitoringConfig, Settings
from batchpred.model import LoadedModel, predict_table, trained_days

log = logging.getLogger(__name__)
PSI_FLOOR = 1e-4  # empty bins would make PSI infinite
SCORE = "(score)"  # the drift row of the model's score distribution (drift_metrics.feature)


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
    tally = _Tally(contract, reference)
    for _, batch in scoring.iter_input_batches(root, day, spec, batch_rows, contract.feature_names):
        tally.add(schema.feature_matrix(batch, contract)[0])
    return tally.metrics()


def measure_table_drift(
    table: pa.Table, contract: schema.Contract, reference: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """measure_drift for a table in memory (a holdout), read through the model's contract."""
    tally = _Tally(contract, reference)
    tally.add(schema.feature_matrix(table, contract)[0])
    return tally.metrics()


class _Tally:
    """Bin counts and nulls per feature, added up batch by batch."""

    def __init__(self, contract: schema.Contract, reference: dict[str, dict[str, Any]]) -> None:
        self.features, self.reference = contract.features, reference
        self.counts = {f.name: np.zeros(len(reference[f.name]["fractions"])) for f in self.features}
        self.nulls = dict.fromkeys(contract.feature_names, 0)
        self.rows = 0

    def add(self, matrix: np.ndarray) -> None:
        self.rows += matrix.shape[0]
        for j, feature in enumerate(self.features):
            column = matrix[:, j]
            self.nulls[feature.name] += int(np.isnan(column).sum())
            self.counts[feature.name] += stats.bin_counts(column, self.reference[feature.name])

    def metrics(self) -> list[dict[str, Any]]:
        return [
            _psi_row(
                feature.name,
                self.reference[feature.name],
                self.counts[feature.name],
                self.nulls[feature.name] / self.rows if self.rows else 0.0,
            )
            for feature in self.features
        ]


def _psi_row(
    name: str, ref: dict[str, Any], counts: np.ndarray, null_rate: float
) -> dict[str, Any]:
    total = counts.sum()
    current = (counts / total).tolist() if total else [0.0] * len(ref["fractions"])
    return {
        "feature": name,
        "psi": population_stability(ref["fractions"], current),
        "null_rate": null_rate,
        "reference_null_rate": ref["null_rate"],
    }


def score_drift(scores: np.ndarray, reference: dict[str, Any]) -> dict[str, Any]:
    """The drift row (feature SCORE) of a set of scores against the model's score_reference."""
    values = np.asarray(scores, dtype=np.float64)
    nulls = int((~np.isfinite(values)).sum())
    counts = stats.bin_counts(values, reference)
    return _psi_row(SCORE, reference, counts, nulls / values.size if values.size else 0.0)


def measure_score_drift(
    engine: sa.Engine, day: date, model_version: str, reference: dict[str, Any]
) -> dict[str, Any]:
    """The drift row (feature SCORE) of the scores the model wrote for a day, read back from
    the predictions table in chunks (on PostgreSQL one leaf)."""
    t = db.table(engine, "predictions")
    counts = np.zeros(len(reference["fractions"]))
    rows = nulls = 0
    query = sa.select(t.c.score).where(
        t.c.partition_date == day, t.c.model_version == model_version
    )
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=100_000).execute(query)
        for chunk in result.partitions():
            values = np.array([r[0] for r in chunk], dtype=np.float64)
            rows += values.size
            nulls += int((~np.isfinite(values)).sum())
            counts += stats.bin_counts(values, reference)
    return _psi_row(SCORE, reference, counts, nulls / rows if rows else 0.0)


# --- what drift means ---------------------------------------------------------------------


@dataclass(frozen=True)
class DriftAssessment:
    """Drift rows judged against the configured thresholds: each row gains its `level`
    (stable, moderate, major) and the `psi_major` it was held to; `drifted` lists the rows
    above it (worst first)."""

    rows: list[dict[str, Any]]
    drifted: list[dict[str, Any]]

    @property
    def is_drifted(self) -> bool:
        return bool(self.drifted)

    def describe(self) -> str:
        """One line naming the drifted features and their PSI, e.g. `tenure_months PSI 2.310
        > 0.25, score PSI 0.410 > 0.25`."""
        return ", ".join(
            f"{'score' if r['feature'] == SCORE else r['feature']} PSI {r['psi']:.3f} "
            f"> {r['psi_major']:g}"
            for r in self.drifted
        )


def assess_drift(metrics: list[dict[str, Any]], cfg: MonitoringConfig) -> DriftAssessment:
    """Judge drift rows (features and SCORE) by monitoring's thresholds, per-feature
    overrides applied: above `psi_major` the row is major and the day drifted."""
    rows = []
    for m in sorted(metrics, key=lambda m: -m["psi"]):
        if m["feature"] == SCORE:
            moderate, major = cfg.psi_moderate, cfg.score_psi_major
        else:
            moderate, major = cfg.thresholds(m["feature"])
        level = (
            "major"
            if major is not None and m["psi"] > major
            else "moderate"
            if m["psi"] > moderate
            else "stable"
        )
        rows.append({**m, "level": level, "psi_major": major})
    return DriftAssessment(rows, [r for r in rows if r["level"] == "major"])


def holdout_drift_block(
    cfg: MonitoringConfig, champion: LoadedModel, holdout_path: str | Path
) -> str | None:
    """Why a challenger must not be promoted automatically, or None: its holdout drifted
    against the champion's training data (features, and the champion's own scores when its
    manifest holds a score reference), with monitoring.block_promotion_on_drift on."""
    if not cfg.block_promotion_on_drift:
        return None
    table = pq.read_table(holdout_path)
    manifest = champion.manifest
    metrics = measure_table_drift(table, champion.contract, manifest["reference_stats"])
    if manifest.get("score_reference"):
        scores = predict_table(champion, table)
        metrics.append(score_drift(scores, manifest["score_reference"]))
    assessment = assess_drift(metrics, cfg)
    if not assessment.is_drifted:
        return None
    return (
        f"not promoted: the holdout drifted against champion {champion.version}'s training "
        f"data ({assessment.describe()}); monitoring.block_promotion_on_drift is on"
    )


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


def stored_drift(
    engine: sa.Engine, dataset: str, day: date, model_version: str
) -> list[dict[str, Any]]:
    """The drift rows recorded for a (day, model version), as measure_drift returns them."""
    t = db.table(engine, "drift_metrics")
    columns = (t.c.feature, t.c.psi, t.c.null_rate, t.c.reference_null_rate)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(*columns)
            .where(
                t.c.dataset == dataset,
                t.c.partition_date == day,
                t.c.model_version == model_version,
            )
            .order_by(t.c.id)
        ).mappings()
        return [dict(r) for r in rows]


def realised_performance(
    engine: sa.Engine, settings: Settings, *, recompute: bool = False
) -> list[dict[str, Any]]:
    """For every (day, model version) in the ledger whose labels have arrived: the model's
    realised metrics on that day (AUC/log loss or RMSE/MAE over the rows that have a label),
    stored in realised_metrics, with `unmatched_labels`: the day's late labels whose entity
    id matches no row, and `in_sample` true where the model was fit on the day's rows
    (model.trained_days: a refit trains on the newest labelled day, which the nightly also
    scores): such a day says how well the model fits, not how well it predicts. A day whose
    late labels fail that check (labels.LateLabels) is not measured: each pair gets a row of
    0 rows whose metrics carry the failure's one line as `error` (and a WARNING says it). A
    pair is computed again only when its labels changed. The same pass keeps the day's rows of
    `outcomes` equal to its labels (store_outcomes). Returns the pairs computed by this call."""
    spec = settings.dataset
    ledger, realised = db.table(engine, "scoring_ledger"), db.table(engine, "realised_metrics")
    outcome = db.table(engine, "outcomes")
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
        with_outcomes = set(
            conn.execute(
                sa.select(outcome.c.partition_date).where(outcome.c.dataset == spec.name).distinct()
            ).scalars()
        )
    out = []
    fitted: dict[str, frozenset[date]] = {}  # version -> the days its deployed model was fit on
    for day in sorted({d for d, _ in done}):
        labels_hash = labels.labels_hash(settings, day)  # manifests only: cheap
        versions = [
            v
            for d, v in sorted(done)
            if d == day and (recompute or known.get((day, v)) != labels_hash)
        ]
        if labels_hash is None and day in with_outcomes:  # its labels were taken back
            store_outcomes(engine, spec.name, day, None)
        if labels_hash is None or not (versions or day not in with_outcomes):
            continue
        late = labels.check_late_labels(settings, day)
        if late is not None and late.failed:
            log.warning("%s: no realised metrics for the day", late.describe())
            store_outcomes(engine, spec.name, day, None)  # no outcome from labels refused
            failed = {"error": late.describe(), "unmatched_labels": late.unmatched}
            for version in versions:
                out.append(_store_realised(engine, spec.name, day, version, 0, failed, labels_hash))
            continue
        known_labels = labels.day_labels(settings, day)
        if known_labels is None:
            continue
        ids, y = known_labels
        store_outcomes(engine, spec.name, day, known_labels)
        unmatched = None if late is None else late.unmatched
        for version in versions:
            if version not in fitted:
                fitted[version] = _trained_days(engine, version)
            row = _realised_row(
                engine, settings, day, version, ids, y, labels_hash, unmatched,
                in_sample=day in fitted[version],
            )  # fmt: skip
            if row is not None:
                out.append(row)
    return out


def store_outcomes(
    engine: sa.Engine, dataset: str, day: date, known: tuple[pa.Array, np.ndarray] | None
) -> int:
    """Make the day's rows of `outcomes` equal to its known labels (labels.day_labels: ids and
    labels as the metrics read them, NaN where none); None: the day has none to trust. New and
    changed labels are written with `arrived_at` now, labels gone are removed, unchanged rows
    keep theirs. One transaction; returns the day's outcome rows."""
    t = db.table(engine, "outcomes")
    new: dict[str, float] = {}
    if known is not None:
        ids, y = known
        has = ~np.isnan(y)
        new = dict(
            zip(np.asarray(ids.to_pylist(), dtype=object)[has], y[has].tolist(), strict=True)
        )
    where = (t.c.dataset == dataset, t.c.partition_date == day)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        old = dict(conn.execute(sa.select(t.c.entity_id, t.c.label).where(*where)).all())
        stale = [e for e, v in old.items() if new.get(e) != v]
        for start in range(0, len(stale), 5000):
            conn.execute(t.delete().where(*where, t.c.entity_id.in_(stale[start : start + 5000])))
        rows = [
            {
                "dataset": dataset,
                "partition_date": day,
                "entity_id": e,
                "label": v,
                "arrived_at": now,
            }
            for e, v in new.items()
            if old.get(e) != v
        ]
        if rows:
            conn.execute(t.insert(), rows)
    return len(new)


def _trained_days(engine: sa.Engine, version: str) -> frozenset[date]:
    """model.trained_days of a registered version, from its stored manifest (an unregistered
    version raises registry.UnknownModelError: whether its metrics are in-sample is unknown)."""
    return trained_days(registry.read_manifest(registry.get_version(engine, version)["uri"]))


def _realised_row(
    engine: sa.Engine,
    settings: Settings,
    day: date,
    version: str,
    ids: Any,
    y: np.ndarray,
    labels_hash: str,
    unmatched: int | None = None,
    in_sample: bool = False,
) -> dict[str, Any] | None:
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
        metrics = evaluation.metrics_for(spec, joined["y"].to_numpy(), joined["score"], threshold)
    except ValueError as exc:  # e.g. AUC on a day whose labels are all one class
        metrics = {"rows": len(joined), "error": str(exc)}
    if unmatched is not None:
        metrics["unmatched_labels"] = unmatched
    if in_sample:
        metrics["in_sample"] = True
    return _store_realised(engine, spec.name, day, version, len(joined), metrics, labels_hash)


def _store_realised(
    engine: sa.Engine,
    dataset: str,
    day: date,
    version: str,
    rows: int,
    metrics: dict[str, Any],
    labels_hash: str,
) -> dict[str, Any]:
    """Replace the (day, version) row of realised_metrics."""
    row = {
        "dataset": dataset,
        "partition_date": day,
        "model_version": version,
        "rows": rows,
        "metrics": metrics,
        "labels_hash": labels_hash,
        "computed_at": datetime.now(UTC),
    }
    t = db.table(engine, "realised_metrics")
    with engine.begin() as conn:
        conn.execute(
            t.delete().where(
                t.c.dataset == dataset, t.c.partition_date == day, t.c.model_version == version
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
