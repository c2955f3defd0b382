"""The quality gate as a value: evaluation.judge decides, GateDecision.describe says why in
words made from the figures (nothing is parsed back), and an operator's champion is only
replaced by a model that beats it by the margin."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from batchpred import evaluation
from batchpred.config import GateConfig
from batchpred.evaluation import GateDecision, OperatorChoice

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
