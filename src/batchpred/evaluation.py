"""How good a model is and what the quality gate makes of it: holdout metrics (the DVC stage
`evaluate`, realised metrics, the gate's comparison) and the gate's decision as a value.

The gate compares a challenger with the champion on one holdout, by the primary metric
(`primary_value`, always higher-is-better: AUC, or -RMSE). `judge` applies the metric bars
and returns a `GateDecision`; promotion adds what only the registry and monitoring know (a
pin, a version rolled back from, a drifted holdout) with `dataclasses.replace`. Text is made
from the value (`GateDecision.describe`) and never parsed back.

A model is never judged on rows it was fit or early-stopped on. The deployed model of a
version is refit on its whole window (training.refit), holdout included, so the gate judges
its evaluated twin (the manifest's `evaluated`: fit without the holdout), and only on the
holdout rows that no compared model saw (`unseen_rows`, `fair_rows`): yesterday's champion
may have been fit on days that are today's holdout. Beside the model, two baselines on the
same rows: the prior (the training label mean, as a constant) and a linear model (gblinear
on the same features); the lift is the model's primary value minus the linear one's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xgboost as xgb

from batchpred import baselines, schema, storage
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


def baseline_metrics(
    spec: DatasetSpec,
    y: np.ndarray,
    threshold: float,
    *,
    prior: float | None,
    linear: np.ndarray | None,
) -> dict[str, dict[str, Any]]:
    """The baselines' metrics on the rows labelled `y`: the prior (a constant: its AUC is
    0.5) and the linear model's scores on the same rows; each only where it exists."""
    found: dict[str, dict[str, Any]] = {}
    if prior is not None:
        found["prior"] = metrics_for(spec, y, baselines.predict_prior(prior, len(y)), threshold)
    if linear is not None:
        found["linear"] = metrics_for(spec, y, linear, threshold)
    return found


def lift_over_linear(
    metrics: Mapping[str, Any], found: Mapping[str, Mapping[str, Any]]
) -> float | None:
    """The model's primary value minus the linear baseline's (higher: the model is better);
    None without a linear baseline."""
    linear = found.get("linear")
    if linear is None:
        return None
    return float(metrics["primary_value"]) - float(linear["primary_value"])


def evaluated_model(manifest: Mapping[str, Any]) -> str:
    """Which model a version's holdout metrics are of, and what the deployed one was fit on."""
    evaluated, refit = manifest.get("evaluated"), manifest.get("refit")
    if evaluated is None:
        return (
            f"the deployed model itself: fit on {manifest.get('train_rows', 0):,} rows without "
            f"the holdout (trained before refits)"
        )
    fit = (
        f"fit on {evaluated['train_rows']:,} rows without the holdout (early-stopped on "
        f"{evaluated['valid_rows']:,})"
    )
    if refit is None:
        return f"evaluated model = deployed model: {fit}; training.refit off"
    rounds = refit["num_boost_round"]
    return (
        f"evaluated model: {fit}; deployed model: refit on {refit['rows']:,} rows "
        f"({rounds} round{'' if rounds == 1 else 's'})"
    )


def evaluate_model(
    settings: Settings, model_path: str | Path, holdout_path: str | Path
) -> dict[str, Any]:
    """DVC stage `evaluate`: the metrics of the EVALUATED model (the manifest's
    `evaluated.file`, fit without the holdout; `model_path` itself when the manifest names
    none) on the holdout split, predicted a record batch at a time through the version's
    contract; with "baselines" (prior and linear metrics on the same rows),
    "lift_over_linear" and, in words, which model they are of ("evaluated")."""
    spec = settings.dataset
    model_dir = Path(model_path).parent
    manifest = json.loads((model_dir / MANIFEST_FILE).read_text())
    contract = Contract.from_dict(manifest["contract"])
    evaluated = manifest.get("evaluated") or {}
    booster = xgb.Booster(model_file=str(model_dir / evaluated.get("file", Path(model_path).name)))
    kept = manifest.get("baselines") or {}
    entry = kept.get("linear")
    linear = None if entry is None else xgb.Booster(model_file=str(model_dir / entry["file"]))
    labels: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    linear_scores: list[np.ndarray] = []
    for batch in storage.iter_file_batches(str(holdout_path), storage.ROW_GROUP_ROWS):
        target = batch.column(spec.target.name).to_numpy(zero_copy_only=False)
        labels.append(target.astype(np.float32))
        matrix, _ = feature_matrix(batch, contract)
        scores.append(np.asarray(booster.inplace_predict(matrix, validate_features=False)))
        if linear is not None and entry is not None:
            linear_scores.append(
                baselines.predict_linear(linear, entry["encoding"], batch, contract)
            )
    y = np.concatenate(labels) if labels else np.zeros(0, dtype=np.float32)
    p = np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)
    metrics = metrics_for(spec, y, p, contract.threshold)
    found = baseline_metrics(
        spec,
        y,
        contract.threshold,
        prior=kept["prior"]["value"] if "prior" in kept else None,
        linear=None if linear is None else np.concatenate(linear_scores or [np.zeros(0)]),
    )
    return {
        **metrics,
        "baselines": found,
        "lift_over_linear": lift_over_linear(metrics, found),
        "evaluated": evaluated_model(manifest),
    }


# --- the rows a model never saw -----------------------------------------------------------------


def _row_days(table: pa.Table, spec: DatasetSpec) -> np.ndarray:
    """Each row's event date as days since 1970-01-01 (int32)."""
    days = pc.cast(pc.cast(table.column(spec.event_date), pa.date32()), pa.int32())
    return np.asarray(days.to_numpy(zero_copy_only=False), dtype=np.int32)


_EPOCH = date(1970, 1, 1)


def _day_numbers(days: Sequence[str]) -> np.ndarray:
    return np.array([(date.fromisoformat(d) - _EPOCH).days for d in days], dtype=np.int32)


def unseen_rows(manifest: Mapping[str, Any], table: pa.Table, spec: DatasetSpec) -> np.ndarray:
    """Which rows of `table` the manifest's evaluated model was never fit or early-stopped on:
    rows of a day it did not see (`evaluated.seen.days`) and, split by rows, the rows of the
    holdout entities (schema.entity_unit below `seen.holdout_fraction`) on the days it saw.
    A manifest from before refits records no `evaluated`: every row of its created_from days
    counts as seen (its holdout rows included: it cannot say which they were)."""
    seen = (manifest.get("evaluated") or {}).get("seen")
    days = seen["days"] if seen else (manifest.get("created_from") or {}).get("days", [])
    unseen = ~np.isin(_row_days(table, spec), _day_numbers(days))
    fraction = seen.get("holdout_fraction") if seen and seen["split"] == "rows" else None
    if fraction is not None:
        unseen |= schema.entity_unit(table.column(spec.entity_id)) < fraction
    return unseen


@dataclass(frozen=True)
class Comparison:
    """The holdout rows the gate compares models on: those no compared model saw."""

    rows: np.ndarray  # one flag per holdout row
    holdout_rows: int
    compared_on: str  # in words: which days or rows, and why the others are left out

    @property
    def compared_rows(self) -> int:
        return int(self.rows.sum())


def fair_rows(
    table: pa.Table, spec: DatasetSpec, manifests: Mapping[str, Mapping[str, Any]]
) -> Comparison:
    """The rows of the holdout `table` that none of the models saw, by each one's manifest
    (`manifests`: who, in words, e.g. "the champion 5307aaaa5307aaaa's evaluated model" ->
    its manifest)."""
    unseen = {who: unseen_rows(m, table, spec) for who, m in manifests.items()}
    rows = np.ones(table.num_rows, dtype=bool)
    for mask in unseen.values():
        rows &= mask
    return Comparison(rows, table.num_rows, _compared_on(_row_days(table, spec), rows, unseen))


def _compared_on(day: np.ndarray, rows: np.ndarray, unseen: Mapping[str, np.ndarray]) -> str:
    """`all 3 holdout days (2026-11-03..2026-11-05, 30,000 rows)`; `2026-11-05 only (10,000
    of 30,000 rows): the champion ...'s evaluated model was trained on 2026-11-03..2026-11-04`;
    by rows, how many each model was trained on; none, which model saw them all."""
    n, k = rows.size, int(rows.sum())
    days = np.unique(day)
    if k == n:
        rows_text = f"{n:,} row" if n == 1 else f"{n:,} rows"
        if days.size == 1:
            return f"the one holdout day ({_days_text(days)}, {rows_text})"
        return f"all {days.size} holdout days ({_days_text(days)}, {rows_text})"
    saw = {who: ~mask for who, mask in unseen.items() if not mask.all()}
    if k == 0:
        return "no holdout row: " + "; ".join(
            f"{who} was trained on "
            + ("every holdout row" if seen.all() else f"{int(seen.sum()):,} of the {n:,}")
            + f" (days {_days_text(np.unique(day[seen]))})"
            for who, seen in saw.items()
        )
    kept = np.unique(day[rows])
    whole_days = all(rows[day == d].all() for d in kept)
    if whole_days:
        return f"{_days_text(kept)} only ({k:,} of {n:,} rows): " + "; ".join(
            f"{who} was trained on {_days_text(np.unique(day[seen]))}" for who, seen in saw.items()
        )
    return f"{k:,} of {n:,} holdout rows ({_days_text(days)}): " + "; ".join(
        f"{who} was trained on {int(seen.sum()):,} of them" for who, seen in saw.items()
    )


def _days_text(days: np.ndarray) -> str:
    """Day numbers as dates, consecutive ones as a range: `2026-11-01, 2026-11-03..2026-11-05`."""
    runs: list[list[int]] = []
    for d in sorted(int(x) for x in days):
        if runs and runs[-1][1] + 1 == d:
            runs[-1][1] = d
        else:
            runs.append([d, d])

    def text(d: int) -> str:
        return (_EPOCH + timedelta(days=d)).isoformat()

    return ", ".join(text(a) if a == b else f"{text(a)}..{text(b)}" for a, b in runs)


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

    `passed` is the metric gate alone: above `floor` (training.gate.min_metric), at least
    `min_lift` (training.gate.min_lift_over_baseline) better than the linear baseline and,
    against a champion the gate itself chose, at most `max_regression` below it; against a
    champion an operator chose (`operator`), better than it by more than `margin`
    (training.gate.min_improvement_over_operator). `hold` (a pin, a version rolled back from)
    and `drift` (monitoring.block_promotion_on_drift) stop a model that passed;
    `drift_nights` counts the days in a row, this one included, that the gate was blocked by
    drift (0 when it was not).

    Every figure is of the evaluated models (fit without the holdout) on the same
    `compared_rows` of the `holdout_rows`: those no compared model saw (`compared_on` says
    which). `baselines`: the challenger's baselines' metrics on those rows; `lift`: the
    challenger's primary value minus the linear baseline's (None without one).
    `incomparable`: why the gate could not compare challenger and champion at all (no row
    unseen by both, or one class left): the challenger is not promoted."""

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
    baselines: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    lift: float | None = None
    min_lift: float | None = None
    compared_rows: int | None = None
    holdout_rows: int | None = None
    compared_on: str | None = None
    incomparable: str | None = None

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
        parts = [p for p in (self.incomparable, self.hold, self._drift_sentence()) if p]
        metrics = self.metric_sentence()
        if self.compared_on and not self.incomparable and self.compared_rows != self.holdout_rows:
            metrics += f"; compared on {self.compared_on}"
        return "; ".join([*parts, f"the metrics: {metrics}"]) if parts else metrics

    def _drift_sentence(self) -> str | None:
        if not self.drift:
            return None
        if self.drift_nights > 1:
            return f"{self.drift} ({_nights(self.drift_nights)} running)"
        return self.drift

    def metric_sentence(self) -> str:
        """The metric bars in words, then the lift over the linear baseline."""
        return self._bars_sentence() + self._lift_sentence()

    def _lift_sentence(self) -> str:
        label, _, higher = _plain_metric(self.metric, self.challenger_value)
        if self.lift is None:
            if self.min_lift is None:
                return ""
            return (
                "; no linear baseline to measure the lift against "
                "(training.gate.min_lift_over_baseline not applied)"
            )
        text = f"; lift over the linear baseline {self.lift:+.4f} {label}"
        linear = self.baselines.get("linear")
        if not higher and linear is not None:
            text += f" (its {label} {-float(linear['primary_value']):.4f})"
        if self.min_lift is None:
            return text
        if self.lift < self.min_lift - SLACK:
            bar = "training.gate.min_lift_over_baseline"
            return f"{text}, below the {self.min_lift:.4f} required ({bar})"
        return f"{text}, at least the {self.min_lift:.4f} required"

    def _bars_sentence(self) -> str:
        label, v, higher = _plain_metric(self.metric, self.challenger_value)
        if self.floor is not None and self.challenger_value < self.floor - SLACK:
            floor = self.floor if higher else -self.floor
            side = "below the minimum" if higher else "above the maximum"
            return f"{label} {v:.4f} is {side} {floor:.4f} (training.gate.min_metric)"
        if self.incomparable:
            return f"{label} {v:.4f} on the challenger's whole holdout, not compared"
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
            "baselines": {name: dict(m) for name, m in self.baselines.items()},
            "lift": self.lift,
            "min_lift": self.min_lift,
            "compared_rows": self.compared_rows,
            "holdout_rows": self.holdout_rows,
            "compared_on": self.compared_on,
            "incomparable": self.incomparable,
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
    baselines: Mapping[str, Mapping[str, Any]] | None = None,
    compared: Comparison | None = None,
    incomparable: str | None = None,
) -> GateDecision:
    """The metric gate: promote only above the absolute floor, at least
    min_lift_over_baseline better than the linear baseline (when both are there) and, against
    a champion, not more than max_regression below it; against an operator's champion
    (`operator`), only better than it by more than min_improvement_over_operator.
    `champion_version` equal to `version`: unchanged. `incomparable`: the gate could not
    compare the two models (the reason): rejected. `baselines` and the challenger's and
    champion's metrics are on the same rows (`compared`, when some were left out)."""
    name, value = str(challenger["primary"]), float(challenger["primary_value"])
    champ = None if champion is None else float(champion["primary_value"])
    found = {k: dict(v) for k, v in (baselines or {}).items()}
    lift = lift_over_linear(challenger, found)
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
        "baselines": found,
        "lift": lift,
        "min_lift": gate.min_lift_over_baseline,
        "compared_rows": None if compared is None else compared.compared_rows,
        "holdout_rows": None if compared is None else compared.holdout_rows,
        "compared_on": None if compared is None else compared.compared_on,
        "incomparable": incomparable,
    }
    if champion_version is not None and champion_version == version:
        return GateDecision(decision=UNCHANGED, passed=True, **common)
    if incomparable is not None:
        return GateDecision(decision=REJECTED, passed=False, **common)
    if gate.min_metric is not None and value < gate.min_metric - SLACK:
        return GateDecision(decision=REJECTED, passed=False, **common)
    min_lift = gate.min_lift_over_baseline
    if min_lift is not None and lift is not None and lift < min_lift - SLACK:
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
