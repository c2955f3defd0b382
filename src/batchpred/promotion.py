"""The nightly gate at work: register a trained model, evaluate it and the champion on the
same holdout, and move the aliases as the decision says; and what the next nightly gate may
do to the champion, for the lifecycle commands to print when they are made.

Above registry (aliases, pins, history), monitoring (the drift block) and evaluation (metrics
and the `GateDecision`): none of them imports this module. Operators' decisions are read back
from the alias history (model_alias_history): a champion set by `promote`, `rollback` or `pin`
is an operator's, and the gate replaces it only with a model that beats it by
training.gate.min_improvement_over_operator, not one that ties it within max_regression. A
challenger the drift block held back is recorded with action `drift-block`, so the run of
nights the gate has been blocked is counted from the same history.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import sqlalchemy as sa

from batchpred import db, evaluation, monitoring, registry
from batchpred.config import DatasetSpec, GateConfig, MonitoringConfig, Settings
from batchpred.evaluation import GateDecision, OperatorChoice
from batchpred.model import LoadedModel, predict_table

# How a champion an operator chose got there (model_alias_history.action).
OPERATOR_ACTIONS = (registry.PROMOTE, registry.ROLLBACK, registry.PIN)


def evaluate_on(model: LoadedModel, spec: DatasetSpec, holdout_path: str | Path) -> dict[str, Any]:
    """Metrics of a registered model on a holdout file (the challenger's holdout): each model
    reads the holdout through its own contract."""
    table = pq.read_table(holdout_path)
    y = table.column(spec.target.name).to_numpy(zero_copy_only=False)
    return evaluation.metrics_for(spec, y, predict_table(model, table), model.contract.threshold)


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
    """Register the trained model, evaluate it and the champion on the same holdout, and
    promote it to champion if it passes the gate (else it becomes the challenger). The
    metric gate is evaluation.judge (stricter against an operator's champion); a holdout
    drifted against the champion's training data blocks promotion (monitoring); a pinned
    champion stays (decision "pinned"), and so does a version rolled back from
    (registry.gate_hold). The decision's reasons, in words, go into the alias history."""
    spec = settings.dataset
    version = registry.register_model(
        engine, model_dir, settings.training.registry, dvc_hash=dvc_hash
    )
    challenger = evaluate_on(registry.load_model(engine, version), spec, holdout_path)
    registry.update_metrics(engine, version, challenger)
    champion_version = registry.get_alias(engine, spec.name, registry.CHAMPION)
    champion_model = None
    champion = None
    if champion_version and champion_version != version:
        champion_model = registry.load_model(engine, champion_version)
        champion = evaluate_on(champion_model, spec, holdout_path)
    decision = evaluation.judge(
        settings.training.gate,
        version,
        challenger,
        champion,
        champion_version=champion_version,
        operator=operator_choice(engine, spec.name, champion_version) if champion else None,
    )
    if decision.decision == evaluation.UNCHANGED:
        return decision
    if decision.promoted and champion_model is not None:
        drifted = monitoring.holdout_drift_block(settings.monitoring, champion_model, holdout_path)
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
