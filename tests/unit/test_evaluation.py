"""The quality gate as a value: evaluation.judge decides, GateDecision.describe says why in
words made from the figures (nothing is parsed back), and an operator's champion is only
replaced by a model that beats it by the margin; the lift over the linear baseline and the
rows a model never saw (evaluation.unseen_rows, fair_rows); the DVC stage evaluate."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xgboost as xgb

from batchpred import baselines, db, evaluation, promotion, registry, reports, schema
from batchpred.config import DatasetSpec, GateConfig
from batchpred.evaluation import GateDecision, OperatorChoice
from tests.unit.test_scoring import settings_for, train_small

ALICE = OperatorChoice(
    version="5307aaaa5307aaaa",
    action="promote",
    by="alice",
    at=datetime(2026, 11, 30, 5, 8, tzinfo=UTC),
    reason="back",
)


def metric(value: float, name: str = "auc") -> dict[str, object]:
    return {"primary": name, "primary_value": value, name.removeprefix("neg_"): abs(value)}


def judged(
    challenger: float,
    champion: float | None,
    gate: GateConfig | None = None,
    *,
    name: str = "auc",
    operator: OperatorChoice | None = None,
) -> GateDecision:
    return evaluation.judge(
        gate or GateConfig(max_regression=0.005),
        "c0ffee00c0ffee00",
        metric(challenger, name),
        None if champion is None else metric(champion, name),
        champion_version=None if champion is None else "5307aaaa5307aaaa",
        operator=operator,
    )


@pytest.mark.parametrize(
    ("challenger", "champion", "decision"),
    [
        (0.80, None, "promoted"),
        (0.82, 0.80, "promoted"),
        (0.797, 0.80, "promoted"),
        (0.795, 0.80, "promoted"),  # exactly max_regression worse
        (0.75, 0.80, "rejected"),
        (0.55, None, "rejected"),  # below the floor
        (0.55, 0.50, "rejected"),  # better than the champion, still below the floor
    ],
)
def test_the_metric_gate(challenger: float, champion: float | None, decision: str) -> None:
    gate = GateConfig(min_metric=0.6, max_regression=0.005)
    got = judged(challenger, champion, gate)
    assert got.decision == decision and got.passed is (decision == "promoted")
    assert (got.challenger_value, got.champion_value) == (challenger, champion)
    assert (got.floor, got.max_regression) == (0.6, 0.005)


def test_the_gate_on_negative_rmse() -> None:
    gate = GateConfig(min_metric=-10.0, max_regression=0.1)
    assert judged(-5.05, -5.0, gate, name="neg_rmse").promoted
    assert not judged(-6.0, -5.0, gate, name="neg_rmse").promoted


@pytest.mark.parametrize(
    ("challenger", "champion", "gate", "name", "reads"),
    [
        (
            0.764433,
            0.803201,
            GateConfig(max_regression=0.005),
            "auc",
            "AUC 0.7644 against the champion's 0.8032: worse by 0.0388, more than the 0.0050 "
            "a new model may lose (training.gate.max_regression)",
        ),
        (
            0.801,
            0.803201,
            GateConfig(max_regression=0.005),
            "auc",
            "AUC 0.8010 against the champion's 0.8032: worse by 0.0022, within the 0.0050 a "
            "new model may lose (training.gate.max_regression)",
        ),
        (
            0.814412,
            0.803201,
            GateConfig(max_regression=0.005),
            "auc",
            "AUC 0.8144 against the champion's 0.8032: better by 0.0112",
        ),
        (
            -58.2341,
            -57.1,
            GateConfig(max_regression=0.5),
            "neg_rmse",
            "RMSE 58.2341 against the champion's 57.1000: worse by 1.1341, more than the 0.5000 "
            "a new model may lose (training.gate.max_regression)",
        ),
        (
            0.612,
            None,
            GateConfig(min_metric=0.7),
            "auc",
            "AUC 0.6120 is below the minimum 0.7000 (training.gate.min_metric)",
        ),
        (
            -12.0,
            None,
            GateConfig(min_metric=-10.0),
            "neg_rmse",
            "RMSE 12.0000 is above the maximum 10.0000 (training.gate.min_metric)",
        ),
        (
            0.814412,
            None,
            GateConfig(),
            "auc",
            "AUC 0.8144, and no champion yet to compare with (no minimum set)",
        ),
        (
            0.814412,
            None,
            GateConfig(min_metric=0.7),
            "auc",
            "AUC 0.8144 meets the minimum 0.7000, and no champion yet to compare with",
        ),
    ],
)
def test_a_decision_reads_as_sentences_made_from_its_figures(
    challenger: float, champion: float | None, gate: GateConfig, name: str, reads: str
) -> None:
    assert judged(challenger, champion, gate, name=name).describe() == reads


def test_a_hold_and_a_drift_come_first_and_the_metrics_follow() -> None:
    passed = judged(0.814412, 0.803201)
    hold = "champion pinned (by carol: realised AUC fell)"
    pinned = replace(passed, decision="pinned", hold=hold)
    assert pinned.describe() == (
        "champion pinned (by carol: realised AUC fell); the metrics: AUC 0.8144 against the "
        "champion's 0.8032: better by 0.0112"
    )
    drift = "not promoted: the holdout drifted against champion 5307's training data (x PSI 0.4)"
    blocked = replace(passed, decision="rejected", drift=drift, drift_nights=2)
    assert blocked.describe().startswith(f"{drift} (2 nights running); the metrics: AUC 0.8144")
    unchanged = evaluation.judge(
        GateConfig(), "v", metric(0.8), None, champion_version="v", operator=ALICE
    )
    assert unchanged.decision == "unchanged"
    assert unchanged.describe() == "this model is already the champion"


def test_an_operators_champion_is_replaced_only_by_a_model_that_beats_it_by_the_margin() -> None:
    # Within max_regression of it, or equal to it: the old gate promoted this; now it holds.
    for challenger in (0.801, 0.803201):
        held = judged(challenger, 0.803201, operator=ALICE)
        assert held.decision == "held-by-operator" and not held.passed
        assert held.margin == 0.0 and held.operator == ALICE
        text = held.describe()
        assert "chosen by an operator (promote by alice on 2026-11-30 05:08 UTC: back)" in text
        assert "must beat it by more than 0.0000" in text and text.endswith(": it does not")
    assert judged(0.8033, 0.803201, operator=ALICE).promoted
    # A margin: beating it by less than the margin is not enough.
    gate = GateConfig(max_regression=0.005, min_improvement_over_operator=0.01)
    assert judged(0.81, 0.803201, gate, operator=ALICE).decision == "held-by-operator"
    beat = judged(0.8133, 0.803201, gate, operator=ALICE)
    assert beat.promoted and beat.describe().endswith(": it does")
    # RMSE: lower is better, the margin counts the same way.
    rmse = GateConfig(min_improvement_over_operator=0.5)
    held = judged(-56.8, -57.1, rmse, name="neg_rmse", operator=ALICE)
    assert held.decision == "held-by-operator"
    assert judged(-56.5, -57.1, rmse, name="neg_rmse", operator=ALICE).promoted


def test_as_dict_is_json_and_carries_the_reason_in_words() -> None:
    held = judged(0.801, 0.803201, operator=ALICE)
    data = json.loads(json.dumps(held.as_dict()))
    assert data["decision"] == "held-by-operator" and data["version"] == "c0ffee00c0ffee00"
    assert data["reason"] == held.describe() and data["champion_before"] == "5307aaaa5307aaaa"
    assert data["challenger_metrics"]["auc"] == 0.801 and data["margin"] == 0.0


def test_frozen_by_drift_only_after_the_configured_nights() -> None:
    drift = "not promoted: the holdout drifted against champion 5307's training data"
    blocked = replace(judged(0.81, 0.80), decision="rejected", drift=drift, drift_nights=2)
    assert blocked.frozen_by_drift(3) is None
    third = replace(blocked, drift_nights=3)
    text = third.frozen_by_drift(3)
    assert text is not None
    assert text.startswith("gate blocked by drift 3 nights running; the champion 5307aaaa")
    assert "is frozen" in text and "c0ffee00c0ffee00" in text
    assert judged(0.81, 0.80).frozen_by_drift(1) is None  # not blocked: never frozen


# --- baselines and lift in the decision -------------------------------------------------------


def with_baselines(
    challenger: float, linear: float, min_lift: float | None, *, name: str = "auc"
) -> GateDecision:
    gate = GateConfig(max_regression=0.005, min_lift_over_baseline=min_lift)
    found = {"linear": metric(linear, name), "prior": metric(0.5 if name == "auc" else -9.0, name)}
    return evaluation.judge(
        gate, "c0ffee00c0ffee00", metric(challenger, name), None, baselines=found
    )


def test_min_lift_refuses_a_model_that_does_not_beat_the_linear_baseline() -> None:
    refused = with_baselines(0.81, 0.805, min_lift=0.01)
    assert refused.decision == "rejected" and not refused.passed
    assert refused.lift == pytest.approx(0.005) and refused.min_lift == 0.01
    assert refused.describe() == (
        "AUC 0.8100, and no champion yet to compare with (no minimum set); lift over the "
        "linear baseline +0.0050 AUC, below the 0.0100 required "
        "(training.gate.min_lift_over_baseline)"
    )
    beats = with_baselines(0.83, 0.805, min_lift=0.01)
    assert beats.promoted and beats.describe().endswith(
        "lift over the linear baseline +0.0250 AUC, at least the 0.0100 required"
    )
    # Without a bar the lift is reported, never judged: worse than linear still passes.
    worse = with_baselines(0.79, 0.805, min_lift=None)
    assert worse.promoted and worse.describe().endswith("lift over the linear baseline -0.0150 AUC")
    # RMSE: lower is better, the lift is the baseline's RMSE minus the model's.
    rmse = with_baselines(-5.0, -6.5, min_lift=1.0, name="neg_rmse")
    assert rmse.promoted and rmse.lift == pytest.approx(1.5)
    assert "lift over the linear baseline +1.5000 RMSE (its RMSE 6.5000)" in rmse.describe()
    assert with_baselines(-6.0, -6.5, min_lift=1.0, name="neg_rmse").decision == "rejected"


def test_no_linear_baseline_no_lift_and_the_bar_says_so() -> None:
    gate = GateConfig(min_lift_over_baseline=0.01)
    legacy = evaluation.judge(gate, "v", metric(0.8), None)
    assert legacy.promoted and legacy.lift is None and legacy.baselines == {}
    assert legacy.describe().endswith(
        "no linear baseline to measure the lift against "
        "(training.gate.min_lift_over_baseline not applied)"
    )


# --- the rows a model never saw ---------------------------------------------------------------

D1, D2, D3, D4, D5 = (f"2026-11-0{i}" for i in range(1, 6))
SPEC = DatasetSpec.model_validate(
    {
        "name": "t",
        "entity_id": "id",
        "entity_id_dtype": "int",
        "event_date": "day",
        "target": {"name": "y", "task": "binary"},
        "features": [{"name": "x", "dtype": "float"}],
    }
)


def seen(days: list[str], fraction: float | None = None) -> dict[str, object]:
    """A manifest whose evaluated model saw `days` (split rows: but for the entities below
    `fraction`)."""
    split = "days" if fraction is None else "rows"
    return {"evaluated": {"seen": {"split": split, "days": days, "holdout_fraction": fraction}}}


def holdout(days: list[str], ids: list[int]) -> pa.Table:
    return pa.table(
        {"id": pa.array(ids, pa.int64()), "day": pa.array([date.fromisoformat(d) for d in days])}
    )


def test_unseen_rows_split_by_days() -> None:
    table = holdout([D3, D4, D5, D5], [1, 2, 3, 4])
    assert evaluation.unseen_rows(seen([D1, D2]), table, SPEC).tolist() == [True] * 4
    assert evaluation.unseen_rows(seen([D1, D2, D3, D4]), table, SPEC).tolist() == [
        False,
        False,
        True,
        True,
    ]
    # A manifest from before refits: every day it was created from counts as seen.
    legacy = {"created_from": {"days": [D1, D2, D3], "missing_days": []}}
    assert evaluation.unseen_rows(legacy, table, SPEC).tolist() == [False, True, True, True]


def test_unseen_rows_split_by_rows() -> None:
    ids = list(range(200))
    table = holdout([D1] * 200, ids)
    unit = schema.entity_unit(table.column("id"))
    # It saw every day; of those days, only the entities below its holdout fraction are unseen.
    got = evaluation.unseen_rows(seen([D1], fraction=0.3), table, SPEC)
    assert got.tolist() == (unit < 0.3).tolist() and 0 < got.sum() < 200
    # A day it never saw is unseen whatever the entity.
    assert evaluation.unseen_rows(seen([D2], fraction=0.3), table, SPEC).all()


def test_fair_rows_say_which_rows_and_why() -> None:
    table = holdout([D3, D4, D5], [1, 2, 3])
    challenger = {"the challenger c's evaluated model": seen([D1, D2])}
    everything = evaluation.fair_rows(table, SPEC, challenger)
    assert everything.rows.all() and everything.compared_rows == everything.holdout_rows == 3
    assert everything.compared_on == "all 3 holdout days (2026-11-03..2026-11-05, 3 rows)"
    one_day = evaluation.fair_rows(table.slice(2), SPEC, challenger)
    assert one_day.compared_on == "the one holdout day (2026-11-05, 1 row)"
    both = {**challenger, "the champion v": seen([D3, D4, D5])}
    none = evaluation.fair_rows(table, SPEC, both)
    assert none.compared_rows == 0 and not none.rows.any()
    assert none.compared_on == (
        "no holdout row: the champion v was trained on every holdout row "
        "(days 2026-11-03..2026-11-05)"
    )
    gaps = evaluation.fair_rows(table, SPEC, {**challenger, "the champion v": seen([D2, D4])})
    assert gaps.rows.tolist() == [True, False, True]
    assert gaps.compared_on == (
        "2026-11-03, 2026-11-05 only (2 of 3 rows): the champion v was trained on 2026-11-04"
    )
    rows = holdout([D3] * 100, list(range(100)))
    by_rows = evaluation.fair_rows(rows, SPEC, {"the champion v": seen([D3], fraction=0.5)})
    left = by_rows.compared_rows
    assert 0 < left < 100 and by_rows.compared_on == (
        f"{left} of 100 holdout rows (2026-11-03): the champion v was trained on "
        f"{100 - left} of them"
    )


def test_as_dict_carries_the_baselines_lift_and_compared_rows() -> None:
    table = pa.table({"id": [1, 2, 3, 4], "day": [D3, D4, D5, D5]})
    compared = evaluation.fair_rows(table, SPEC, {"the champion v's evaluated model": seen([D3])})
    decision = evaluation.judge(
        GateConfig(min_lift_over_baseline=0.0),
        "c0ffee00c0ffee00",
        metric(0.82),
        metric(0.80),
        champion_version="5307aaaa5307aaaa",
        baselines={"linear": metric(0.79), "prior": metric(0.5)},
        compared=compared,
    )
    data = json.loads(json.dumps(decision.as_dict()))
    assert data["lift"] == pytest.approx(0.03) and data["min_lift"] == 0.0
    assert data["baselines"]["linear"]["auc"] == 0.79 and data["baselines"]["prior"]["auc"] == 0.5
    assert (data["compared_rows"], data["holdout_rows"]) == (3, 4)
    assert data["compared_on"] == (
        "2026-11-04..2026-11-05 only (3 of 4 rows): the champion v's evaluated model was "
        "trained on 2026-11-03"
    )
    assert data["reason"] == decision.describe()
    assert decision.describe() == (
        "AUC 0.8200 against the champion's 0.8000: better by 0.0200; lift over the linear "
        "baseline +0.0300 AUC, at least the 0.0000 required; compared on " + data["compared_on"]
    )


# --- the DVC stage evaluate -------------------------------------------------------------------


def test_evaluate_model_reports_the_evaluated_model_its_baselines_and_lift(
    tmp_path: Path,
) -> None:
    settings = settings_for("churn", tmp_path)
    model_dir, holdout_path = train_small(settings, tmp_path / "m")
    spec, manifest = settings.dataset, json.loads((model_dir / "manifest.json").read_text())
    got = json.loads(
        json.dumps(evaluation.evaluate_model(settings, model_dir / "model.ubj", holdout_path))
    )
    table = pq.read_table(holdout_path)
    contract = schema.Contract.from_dict(manifest["contract"])
    y = table.column(spec.target.name).to_numpy()
    x, _ = schema.feature_matrix(table, contract)

    def scores(name: str) -> np.ndarray:
        booster = xgb.Booster(model_file=str(model_dir / name))
        return booster.inplace_predict(x, validate_features=False)

    # the metrics are the evaluated model's (fit without the holdout), not the refit's
    twin = evaluation.metrics_for(spec, y, scores("evaluated.ubj"), contract.threshold)
    assert {k: got[k] for k in twin} == pytest.approx(twin)
    assert got["auc"] != evaluation.metrics_for(spec, y, scores("model.ubj"))["auc"]
    encoding = manifest["baselines"]["linear"]["encoding"]
    linear = baselines.predict_linear(
        xgb.Booster(model_file=str(model_dir / "linear.ubj")), encoding, table, contract
    )
    assert got["baselines"]["linear"] == pytest.approx(evaluation.metrics_for(spec, y, linear))
    assert got["baselines"]["prior"]["auc"] == 0.5 and got["baselines"]["prior"]["rows"] == 300
    assert got["lift_over_linear"] == pytest.approx(got["auc"] - got["baselines"]["linear"]["auc"])
    assert got["evaluated"] == (
        "evaluated model: fit on 900 rows without the holdout (early-stopped on 300); "
        f"deployed model: refit on 1,500 rows ({manifest['refit']['num_boost_round']} rounds)"
    )


def test_metrics_json_the_registry_and_models_show_give_the_same_holdout_figures(
    tmp_path: Path,
) -> None:
    """One model, one holdout: the DVC stage's metrics.json, the metrics the gate records in
    the registry and what `models show` prints are the same figures (the evaluated model's on
    the whole holdout, its baselines and lift)."""
    settings = settings_for("churn", tmp_path)
    model_dir, holdout_path = train_small(settings, tmp_path / "m")
    stage = json.loads(
        json.dumps(evaluation.evaluate_model(settings, model_dir / "model.ubj", holdout_path))
    )
    engine = db.create_engine(f"sqlite:///{tmp_path}/registry.db")
    db.migrate(engine)
    decision = promotion.promote_if_better(engine, settings, model_dir, holdout_path)
    recorded = registry.get_version(engine, decision.version)["metrics"]
    assert recorded.keys() == stage.keys() and recorded["evaluated"] == stage["evaluated"]
    for key in stage.keys() - {"baselines", "evaluated", "primary"}:
        assert recorded[key] == pytest.approx(stage[key]), key
    assert recorded["baselines"].keys() == stage["baselines"].keys() == {"linear", "prior"}
    for name, figures in stage["baselines"].items():
        for key in figures.keys() - {"primary"}:
            assert recorded["baselines"][name][key] == pytest.approx(figures[key]), (name, key)
    shown = reports.model_show(engine, "churn", decision.version)
    assert f"holdout metrics  {reports.format_metrics(stage)}" in shown
    assert f"baselines        {reports.baselines_text(stage)}" in shown
    engine.dispose()
