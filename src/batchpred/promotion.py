"""The nightly gate at work: register a trained model, evaluate it and the champion on the
same holdout rows, and move the aliases as the decision says; and what the next nightly gate
may do to the champion, for the lifecycle commands to print when they are made.

The gate judges evaluated models (fit without the holdout; registry.load_evaluated), never a
deployed model refit on the holdout, and only on the holdout rows neither the challenger's
nor the champion's evaluated model saw (evaluation.fair_rows): a champion trained on some of
today's holdout days is compared on the others. When none is left (or one class, for AUC)
the gate cannot compare them and the challenger is not promoted; a person may promote it.

Above registry (aliases, pins, history), monitoring (the drift block) and evaluation (metrics
and the `GateDecision`): none of them imports this module. Operators' decisions are read back
from the alias history (model_alias_history): a champion set by `promote`, `rollback` or `pin`
is an operator's, and the gate replaces it only with a model that beats it by
training.gate.min_improvement_over_operator, not one that ties it within max_regression. A
challenger the drift block held back is recorded with action `drift-block`, so the run of
nights the gate has been blocked is counted from the same history.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from batchpred import baselines, db, evaluation, monitoring, registry
from batchpred.config import DatasetSpec, GateConfig, MonitoringConfig, Settings
from batchpred.evaluation import GateDecision, OperatorChoice
from batchpred.model import LoadedModel, predict_table

# How a champion an operator chose got there (model_alias_history.action).
OPERATOR_ACTIONS = (registry.PROMOTE, registry.ROLLBACK, registry.PIN)


@dataclass(frozen=True)
class _Scored:
    """The holdout's labels and every compared predictor's scores, one per row, each model
    with its own contract's threshold (the baselines take the challenger's)."""

    y: np.ndarray
    scores: dict[str, np.ndarray]  # challenger, champion, linear (the challenger's baseline)
    thresholds: dict[str, float]  # challenger, champion
    prior: float | None

    def metrics(self, spec: DatasetSpec, who: str, rows: np.ndarray) -> dict[str, Any]:
        y, p = self.y[rows], self.scores[who][rows]
        return evaluation.metrics_for(spec, y, p, self.thresholds[who])

    def baselines(self, spec: DatasetSpec, rows: np.ndarray) -> dict[str, dict[str, Any]]:
        linear = self.scores.get("linear")
        return evaluation.baseline_metrics(
            spec,
            self.y[rows],
            self.thresholds["challenger"],
            prior=self.prior,
            linear=None if linear is None else linear[rows],
        )


def _score(
    table: pa.Table,
    spec: DatasetSpec,
    models: Mapping[str, LoadedModel],
    linear: registry.LinearBaseline | None,
) -> _Scored:
    """Every model's and the linear baseline's scores on the holdout, each through its own
    contract."""
    scores = {who: predict_table(model, table) for who, model in models.items()}
    if linear is not None:
        scores["linear"] = baselines.predict_linear(
            linear.booster, linear.encoding, table, linear.contract
        )
    y = table.column(spec.target.name).to_numpy(zero_copy_only=False).astype(np.float64)
    thresholds = {who: model.contract.threshold for who, model in models.items()}
    return _Scored(y, scores, thresholds, None if linear is None else linear.prior)


def _evaluated_by(version: str, manifest: Mapping[str, Any], role: str) -> str:
    """Who a compared model is, in words: "the champion V's evaluated model", or the champion
    itself when its manifest is from before refits."""
    if manifest.get("evaluated") is None:
        return f"the {role} {version} (trained before refits)"
    return f"the {role} {version}'s evaluated model"


def operator_choice(engine: sa.Engine, dataset: str, champion: str | None) -> OperatorChoice | None:
    """The operator's decision behind the champion, if a person chose it: the newest promote,
    rollback or pin of it since it last became champion (a pin of the gate's champion makes
    it an operator's too). None when the gate put it there and nobody endorsed it since."""
    if champion is None:
        return None
    for row in registry.alias_history(engine, dataset, version=champion):
        if row["version"] != champion or row["alias"] not in (registry.CHAMPION, registry.PINNED):
            continue  # the alias left it, or a challenger write
        if row["action"] in OPERATOR_ACTIONS:
            return OperatorChoice(
                version=champion,
                action=str(row["action"]),
                by=row["set_by"],
                at=registry.utc(row["set_at"]),
                reason=row["reason"],
            )
        if row["alias"] == registry.CHAMPION:
            return None  # it became champion automatically, and no one chose it since
    return None


def drift_blocked_days(engine: sa.Engine, dataset: str) -> set[date]:
    """The days (UTC) of the gate's current run of drift-blocked decisions: every gate write
    since the last one that was not blocked by drift (or the last change of champion)."""
    t = db.table(engine, "model_alias_history")
    query = (
        sa.select(t.c.alias, t.c.action, t.c.set_at)
        .where(
            t.c.dataset == dataset,
            sa.or_(
                t.c.alias == registry.CHAMPION,
                sa.and_(
                    t.c.alias == registry.CHALLENGER,
                    t.c.action.in_([registry.GATE, registry.DRIFT_BLOCK]),
                ),
            ),
        )
        .order_by(t.c.id.desc())
    )
    days: set[date] = set()
    with engine.connect() as conn:
        for row in conn.execute(query):
            if row.action != registry.DRIFT_BLOCK:
                break
            days.add(registry.utc(row.set_at).date())
    return days


def promote_if_better(
    engine: sa.Engine,
    settings: Settings,
    model_dir: str | Path,
    holdout_path: str | Path,
    *,
    dvc_hash: str | None = None,
) -> GateDecision:
    """Register the trained model, evaluate its evaluated model and the champion's on the
    holdout rows neither saw, with the challenger's baselines on the same rows, and promote
    it to champion if it passes the gate (else it becomes the challenger). The registry
    records the challenger's metrics on its whole holdout (of its evaluated model, which
    never saw it), with baselines and lift. The metric gate is evaluation.judge (stricter
    against an operator's champion; rejected when it cannot compare the two); a holdout
    drifted against the champion's training data blocks promotion (monitoring); a pinned
    champion stays (decision "pinned"), and so does a version rolled back from
    (registry.gate_hold). The decision's reasons, in words, go into the alias history."""
    spec = settings.dataset
    version = registry.register_model(
        engine, model_dir, settings.training.registry, dvc_hash=dvc_hash
    )
    table = pq.read_table(holdout_path)
    challenger_model = registry.load_evaluated(engine, version)
    champion_version = registry.get_alias(engine, spec.name, registry.CHAMPION)
    champion_model = None
    if champion_version is not None and champion_version != version:
        champion_model = registry.load_evaluated(engine, champion_version)
    models = {"challenger": challenger_model}
    if champion_model is not None:
        models["champion"] = champion_model
    scored = _score(table, spec, models, registry.load_linear(engine, version))
    everything = np.ones(table.num_rows, dtype=bool)
    whole = scored.metrics(spec, "challenger", everything)
    whole_baselines = scored.baselines(spec, everything)
    registry.update_metrics(
        engine,
        version,
        {
            **whole,
            "baselines": whole_baselines,
            "lift_over_linear": evaluation.lift_over_linear(whole, whole_baselines),
            "evaluated": evaluation.evaluated_model(challenger_model.manifest),
        },
    )
    compared = _compare(table, spec, scored, models, (whole, whole_baselines))
    decision = evaluation.judge(
        settings.training.gate,
        version,
        compared.challenger,
        compared.champion,
        champion_version=champion_version,
        operator=operator_choice(engine, spec.name, champion_version)
        if compared.champion
        else None,
        baselines=compared.baselines,
        compared=compared.comparison,
        incomparable=compared.incomparable,
    )
    if decision.decision == evaluation.UNCHANGED:
        return decision
    if decision.promoted and champion_version is not None and champion_model is not None:
        deployed = registry.load_model(engine, champion_version)  # its reference is the refit's
        drifted = monitoring.holdout_drift_block(settings.monitoring, deployed, holdout_path)
        if drifted:  # monitoring.block_promotion_on_drift: the holdout drifted
            decision = replace(decision, decision=evaluation.REJECTED, drift=drifted)
    hold = registry.gate_hold(engine, spec.name, version, would_promote=decision.promoted)
    if hold is not None:
        decision = replace(decision, decision=hold[0], hold=hold[1])  # type: ignore[arg-type]
    action = registry.GATE
    if decision.drift and hold is None:  # held back by drift alone: count the nights
        action = registry.DRIFT_BLOCK
        days = drift_blocked_days(engine, spec.name) | {datetime.now(UTC).date()}
        decision = replace(decision, drift_nights=len(days))
    alias = registry.CHAMPION if decision.promoted else registry.CHALLENGER
    registry.set_alias(engine, spec.name, alias, version, decision.describe(), action=action)
    return decision


@dataclass(frozen=True)
class _Compared:
    """What the gate compares: the challenger's and the champion's metrics and the
    challenger's baselines', on the rows neither model saw (`comparison`); or, when they
    cannot be compared there (`incomparable` says why), the challenger's and its baselines'
    on its whole holdout."""

    challenger: dict[str, Any]
    champion: dict[str, Any] | None
    baselines: dict[str, dict[str, Any]]
    comparison: evaluation.Comparison
    incomparable: str | None


def _compare(
    table: pa.Table,
    spec: DatasetSpec,
    scored: _Scored,
    models: Mapping[str, LoadedModel],
    whole: tuple[dict[str, Any], dict[str, dict[str, Any]]],
) -> _Compared:
    """The models' metrics on the holdout rows none of them saw (evaluation.fair_rows). No
    such row, or one class among them: not comparable when there is a champion; alone, the
    challenger is judged on its whole holdout (`whole`: its metrics and its baselines')."""
    manifests = {_evaluated_by(m.version, m.manifest, who): m.manifest for who, m in models.items()}
    compared = evaluation.fair_rows(table, spec, manifests)
    problem = "no row is left"
    if compared.compared_rows:
        try:
            metrics = {who: scored.metrics(spec, who, compared.rows) for who in models}
            found = scored.baselines(spec, compared.rows)
            return _Compared(metrics["challenger"], metrics.get("champion"), found, compared, None)
        except ValueError as exc:  # one class left: AUC is undefined
            problem = str(exc)
    version = models["challenger"].version
    incomparable = _incomparable(compared, version, problem) if "champion" in models else None
    return _Compared(whole[0], None, whole[1], compared, incomparable)


def _incomparable(compared: evaluation.Comparison, version: str, problem: str) -> str:
    """Why the gate cannot compare the challenger with the champion, and what a person can do."""
    by_hand = f"`batchpred models promote {version} --reason ...` to choose by hand"
    if compared.compared_rows == 0:
        what = compared.compared_on.removeprefix("no holdout row: ")
        return f"{what}: the gate cannot compare them; {by_hand}"
    return (
        f"the {compared.compared_rows:,} holdout rows neither model saw ({compared.compared_on}) "
        f"cannot compare them ({problem}); {by_hand}"
    )


# --- what the next nightly may do ----------------------------------------------------------


@dataclass(frozen=True)
class Outlook:
    """What the next nightly gate may do to a dataset's champion, as things stand now."""

    dataset: str
    champion: str | None
    pinned: registry.AliasState | None
    operator: OperatorChoice | None
    metric: str  # the primary metric: auc, or neg_rmse
    max_regression: float
    margin: float  # training.gate.min_improvement_over_operator
    drift_block: bool  # monitoring.block_promotion_on_drift


def outlook(
    engine: sa.Engine,
    spec: DatasetSpec,
    gate: GateConfig,
    monitoring_cfg: MonitoringConfig,
) -> Outlook:
    """The rule the next nightly gate applies to the champion: none while it is pinned; a
    margin to beat when an operator chose it; max_regression otherwise."""
    aliases = registry.get_aliases(engine, spec.name)
    champion = aliases.get(registry.CHAMPION)
    version = champion.version if champion else None
    return Outlook(
        dataset=spec.name,
        champion=version,
        pinned=aliases.get(registry.PINNED),
        operator=operator_choice(engine, spec.name, version),
        metric=evaluation.primary_metric(spec),
        max_regression=gate.max_regression,
        margin=gate.min_improvement_over_operator,
        drift_block=monitoring_cfg.block_promotion_on_drift,
    )
