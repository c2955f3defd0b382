"""How good a model is and what the quality gate makes of it: holdout metrics (the DVC stage
`evaluate`, realised metrics, the gate's comparison) and the gate's decision as a value.

The gate compares a challenger with the champion on one holdout, by the primary metric
(`primary_value`, always higher-is-better: AUC, or -RMSE). `judge` applies the metric bars
and returns a `GateDecision`; promotion adds what only the registry and monitoring know (a
pin, a version rolled back from, a drifted holdout) with `dataclasses.replace`. Text is made
from the value (`GateDecision.describe`) and never parsed back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xgboost as xgb

from batchpred import storage
from batchpred.config import DatasetSpec, GateConfig, Settings
from batchpred.schema import Contract, feature_matrix

MANIFEST_FILE = "manifest.json"  # beside model.ubj (training.MANIFEST_FILE)
SLACK = 1e-12  # float slack in the gate's comparisons: exactly on a bar counts as on it

Decision = Literal["promoted", "rejected", "unchanged", "pinned", "held-by-operator"]
PROMOTED: Decision = "promoted"  # the challenger is the champion now
REJECTED: Decision = "rejected"  # a metric bar, a drifted holdout, or a version rolled back from
UNCHANGED: Decision = "unchanged"  # the trained model already is the champion
PINNED: Decision = "pinned"  # the champion is pinned: nothing automatic replaces it
HELD: Decision = "held-by-operator"  # it did not beat an operator's champion by the margin


# --- metrics ----------------------------------------------------------------------------------


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties."""
    _, inverse, counts = np.unique(p, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    ranks = (upper - (counts - 1) / 2)[inverse]  # average 1-based rank per tie group
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        raise ValueError("AUC is undefined: the holdout has only one class")
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def metrics_for(
    spec: DatasetSpec, y_true: np.ndarray, y_pred: np.ndarray, threshold: float = 0.5
) -> dict[str, Any]:
    """Metrics for the spec's task (labels as 0/1 or values; rows without one are ignored);
    `primary_value` is always higher-is-better."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    labelled = ~np.isnan(y)
    y, p = y[labelled], p[labelled]
    if spec.target.task == "binary":
        q = np.clip(p, 1e-15, 1 - 1e-15)
        auc = _auc(y, p)
        return {
            "auc": auc,
            "logloss": float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))),
            "accuracy": float(np.mean((p >= threshold) == (y == 1))),
            "positive_rate": float(y.mean()),
            "predicted_positive_rate": float(np.mean(p >= threshold)),
            "rows": int(y.size),
            "primary": "auc",
            "primary_value": auc,
        }
    err = p - y
    rmse = float(np.sqrt(np.mean(err**2)))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {
        "rmse": rmse,
        "mae": float(np.mean(np.abs(err))),
        "r2": 1 - float(np.sum(err**2)) / ss_tot if ss_tot else 0.0,
        "rows": int(y.size),
        "primary": "neg_rmse",
        "primary_value": -rmse,
    }


def primary_metric(spec: DatasetSpec) -> str:
    """The gate's metric for the spec's task, as metrics_for names it: auc, or neg_rmse."""
    return "auc" if spec.target.task == "binary" else "neg_rmse"


def evaluate_model(
    settings: Settings, model_path: str | Path, holdout_path: str | Path
) -> dict[str, Any]:
    """DVC stage `evaluate`: the model's metrics on the holdout split, predicted a record
    batch at a time through the model's own contract (its manifest beside it)."""
    spec = settings.dataset
    booster = xgb.Booster(model_file=str(model_path))
    manifest = json.loads((Path(model_path).parent / MANIFEST_FILE).read_text())
    contract = Contract.from_dict(manifest["contract"])
    labels: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    for batch in storage.iter_file_batches(str(holdout_path), storage.ROW_GROUP_ROWS):
        target = batch.column(spec.target.name).to_numpy(zero_copy_only=False)
        labels.append(target.astype(np.float32))
        matrix, _ = feature_matrix(batch, contract)
        scores.append(np.asarray(booster.inplace_predict(matrix, validate_features=False)))
    y = np.concatenate(labels) if labels else np.zeros(0, dtype=np.float32)
    p = np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)
    return metrics_for(spec, y, p, contract.threshold)


# --- the gate ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OperatorChoice:
    """A champion a person chose (promote, rollback or pin), as the alias history records it."""

    version: str
    action: str
    by: str | None
    at: datetime
    reason: str | None

    def describe(self) -> str:
        at = self.at.replace(tzinfo=UTC) if self.at.tzinfo is None else self.at.astimezone(UTC)
        why = f": {self.reason}" if self.reason else ""
        return f"{self.action} by {self.by or 'unknown'} on {at:%Y-%m-%d %H:%M} UTC{why}"


@dataclass(frozen=True)
class GateDecision:
    """What the nightly gate decided about a newly trained model, and every figure it used.

    `passed` is the metric gate alone: above `floor` (training.gate.min_metric) and, against a
    champion the gate itself chose, at most `max_regression` below it; against a champion an
    operator chose (`operator`), better than it by more than `margin`
    (training.gate.min_improvement_over_operator). `hold` (a pin, a version rolled back from)
    and `drift` (monitoring.block_promotion_on_drift) stop a model that passed;
    `drift_nights` counts the days in a row, this one included, that the gate was blocked by
    drift (0 when it was not)."""

    decision: Decision
    version: str
    champion_before: str | None
    metric: str  # the primary metric: "auc", or "neg_rmse" (higher is better)
    challenger_value: float
    champion_value: float | None
    max_regression: float
    floor: float | None
    passed: bool
    margin: float | None = None  # set when the champion is an operator's choice
    operator: OperatorChoice | None = None
    hold: str | None = None
    drift: str | None = None
    drift_nights: int = 0
    challenger_metrics: Mapping[str, Any] = field(default_factory=dict)
    champion_metrics: Mapping[str, Any] | None = None

    @property
    def promoted(self) -> bool:
        return self.decision == PROMOTED

    def frozen_by_drift(self, nights: int) -> str | None:
        """Why the run must not end green, once the drift block has held the gate `nights`
        nights running (monitoring.drift_block_nights): the champion is frozen."""
        if not self.drift or self.drift_nights < nights:
            return None
        return (
            f"gate blocked by drift {_nights(self.drift_nights)} running; the champion "
            f"{self.champion_before} is frozen (challenger {self.version}: "
            f"{self.metric_sentence()}); promote it by hand (`batchpred models promote "
            f"{self.version} --reason ...`) or turn monitoring.block_promotion_on_drift off"
        )

    def describe(self) -> str:
        """The decision's reasons as sentences: readable metric names, 4 decimals."""
        if self.decision == UNCHANGED:
            return "this model is already the champion"
        parts = [p for p in (self.hold, self._drift_sentence()) if p]
        metrics = self.metric_sentence()
        return "; ".join([*parts, f"the metrics: {metrics}"]) if parts else metrics

    def _drift_sentence(self) -> str | None:
        if not self.drift:
            return None
        if self.drift_nights > 1:
            return f"{self.drift} ({_nights(self.drift_nights)} running)"
        return self.drift

    def metric_sentence(self) -> str:
        label, v, higher = _plain_metric(self.metric, self.challenger_value)
        if self.floor is not None and self.challenger_value < self.floor - SLACK:
            floor = self.floor if higher else -self.floor
            side = "below the minimum" if higher else "above the maximum"
            return f"{label} {v:.4f} is {side} {floor:.4f} (training.gate.min_metric)"
        if self.champion_value is None:
            if self.floor is None:
                return f"{label} {v:.4f}, and no champion yet to compare with (no minimum set)"
            floor = self.floor if higher else -self.floor
            side = "minimum" if higher else "maximum"
            return (
                f"{label} {v:.4f} meets the {side} {floor:.4f}, and no champion yet to compare with"
            )
        c = self.champion_value if higher else -self.champion_value
        gain = self.challenger_value - self.champion_value  # higher is better, whatever the metric
        if gain > SLACK:
            compared = f"better by {gain:.4f}"
        elif gain < -SLACK:
            compared = f"worse by {-gain:.4f}"
        else:
            compared = "the same"
        head = f"{label} {v:.4f} against the champion's {c:.4f}: {compared}"
        if self.operator is not None and self.margin is not None:
            verdict = "it does" if self.passed else "it does not"
            return (
                f"{head}; the champion {self.operator.version} was chosen by an operator "
                f"({self.operator.describe()}), so a new model must beat it by more than "
                f"{self.margin:.4f} (training.gate.min_improvement_over_operator): {verdict}"
            )
        if gain >= -SLACK:
            return head
        verdict = "within" if self.passed else "more than"
        return (
            f"{head}, {verdict} the {self.max_regression:.4f} a new model may lose "
            f"(training.gate.max_regression)"
        )

    def as_dict(self) -> dict[str, Any]:
        """The decision as JSON-ready values, `reason` in words (flow results, logs)."""
        champion = None if self.champion_metrics is None else dict(self.champion_metrics)
        return {
            "version": self.version,
            "champion_before": self.champion_before,
            "decision": self.decision,
            "reason": self.describe(),
            "metric": self.metric,
            "challenger_value": self.challenger_value,
            "champion_value": self.champion_value,
            "max_regression": self.max_regression,
            "floor": self.floor,
            "margin": self.margin,
            "operator": None if self.operator is None else self.operator.describe(),
            "drift_nights": self.drift_nights,
            "challenger_metrics": dict(self.challenger_metrics),
            "champion_metrics": champion,
        }


def _nights(n: int) -> str:
    return f"{n} night" if n == 1 else f"{n} nights"


def _plain_metric(name: str, value: float) -> tuple[str, float, bool]:
    """(readable name, value, higher is better): `neg_rmse` -58.2 is RMSE 58.2, lower better."""
    if name.startswith("neg_"):
        base = name[4:]
        return _LABELS.get(base, base.replace("_", " ")), -value, False
    return _LABELS.get(name, name.replace("_", " ")), value, True


_LABELS = {"auc": "AUC", "rmse": "RMSE", "mae": "MAE", "r2": "R2", "logloss": "log loss"}


def metric_label(metric: str) -> str:
    """The primary metric's readable name: AUC, RMSE."""
    return _plain_metric(metric, 0.0)[0]


def judge(
    gate: GateConfig,
    version: str,
    challenger: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    *,
    champion_version: str | None = None,
    operator: OperatorChoice | None = None,
) -> GateDecision:
    """The metric gate: promote only above the absolute floor and, against a champion, not
    more than max_regression below it; against an operator's champion (`operator`), only
    better than it by more than min_improvement_over_operator. `champion_version` equal to
    `version`: unchanged."""
    name, value = str(challenger["primary"]), float(challenger["primary_value"])
    champ = None if champion is None else float(champion["primary_value"])
    common: dict[str, Any] = {
        "version": version,
        "champion_before": champion_version,
        "metric": name,
        "challenger_value": value,
        "champion_value": champ,
        "max_regression": gate.max_regression,
        "floor": gate.min_metric,
        "challenger_metrics": dict(challenger),
        "champion_metrics": None if champion is None else dict(champion),
    }
    if champion_version is not None and champion_version == version:
        return GateDecision(decision=UNCHANGED, passed=True, **common)
    if gate.min_metric is not None and value < gate.min_metric - SLACK:
        return GateDecision(decision=REJECTED, passed=False, **common)
    if champ is None:
        return GateDecision(decision=PROMOTED, passed=True, **common)
    if operator is not None:
        margin = gate.min_improvement_over_operator
        ok = value - champ > margin + SLACK  # strictly more than the margin
        return GateDecision(
            decision=PROMOTED if ok else HELD,
            passed=ok,
            margin=margin,
            operator=operator,
            **common,
        )
    ok = value >= champ - gate.max_regression - SLACK  # exactly max_regression worse passes
    return GateDecision(decision=PROMOTED if ok else REJECTED, passed=ok, **common)
