"""What drift means: monitoring's thresholds with per-feature overrides, the score
distribution stored with the model, and the promotion block on a drifted holdout."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from batchpred import db, demo, monitoring, registry, stats, training
from batchpred.config import MonitoringConfig, Settings
from tests.unit.test_scoring import settings_for, train_small


def _row(feature: str, psi: float) -> dict:
    return {"feature": feature, "psi": psi, "null_rate": 0.0, "reference_null_rate": 0.0}


def test_defaults_and_per_feature_overrides() -> None:
    cfg = MonitoringConfig.model_validate(
        {
            "psi_major": 0.3,
            "features": {
                "day_of_week": {"ignore": True},
                "hour": {"psi_major": 1.0},
                "distance": {"psi_moderate": 0.05},
            },
        }
    )
    assert cfg.thresholds("carrier") == (0.1, 0.3)
    assert cfg.thresholds("day_of_week") == (0.1, None)
    assert cfg.thresholds("hour") == (0.1, 1.0)
    assert cfg.thresholds("distance") == (0.05, 0.3)


@pytest.mark.parametrize(
    ("psi", "level"),
    [(0.0, "stable"), (0.1, "stable"), (0.11, "moderate"), (0.25, "moderate"), (0.26, "major")],
)
def test_levels_follow_the_thresholds(psi: float, level: str) -> None:
    (row,) = monitoring.assess_drift([_row("x", psi)], MonitoringConfig()).rows
    assert row["level"] == level and row["psi_major"] == 0.25


def test_drifted_rows_are_those_above_their_own_threshold_worst_first() -> None:
    cfg = MonitoringConfig.model_validate(
        {
            "score_psi_major": 0.5,
            "features": {"weekday": {"ignore": True}, "hour": {"psi_major": 3.0}},
        }
    )
    metrics = [
        _row("a", 0.3),
        _row("weekday", 8.0),  # shifts by construction: shown, never drifted
        _row("hour", 2.0),  # below its own threshold
        _row("b", 1.7),
        _row(monitoring.SCORE, 0.4),  # below score_psi_major
        _row("c", 0.05),
    ]
    assessment = monitoring.assess_drift(metrics, cfg)
    assert [r["feature"] for r in assessment.drifted] == ["b", "a"]
    assert [r["feature"] for r in assessment.rows][:2] == ["weekday", "hour"]  # by PSI
    levels = {r["feature"]: r["level"] for r in assessment.rows}
    assert levels == {
        "weekday": "moderate",
        "hour": "moderate",
        "b": "major",
        "a": "major",
        monitoring.SCORE: "moderate",
        "c": "stable",
    }
    assert assessment.is_drifted
    assert assessment.describe() == "b PSI 1.700 > 0.25, a PSI 0.300 > 0.25"


def test_score_drift_has_its_own_threshold_or_none() -> None:
    metrics = [_row("a", 0.01), _row(monitoring.SCORE, 0.6)]
    drifted = monitoring.assess_drift(metrics, MonitoringConfig())
    assert drifted.describe() == "score PSI 0.600 > 0.25"
    off = monitoring.assess_drift(metrics, MonitoringConfig(score_psi_major=None))
    assert not off.is_drifted and off.drifted == []


def test_overrides_must_name_features_of_the_dataset(tmp_path: Path) -> None:
    settings = settings_for("churn", tmp_path)
    ok = settings.model_dump()
    ok["monitoring"] = {"features": {settings.dataset.feature_names[0]: {"ignore": True}}}
    Settings.model_validate(ok)
    ok["monitoring"] = {"features": {"no_such_feature": {"ignore": True}}}
    with pytest.raises(ValidationError, match="no_such_feature"):
        Settings.model_validate(ok)


def test_score_statistics_and_score_drift() -> None:
    rng = np.random.default_rng(3)
    reference = stats.score_statistics(rng.beta(2, 5, 20_000))
    assert reference["kind"] == "numeric" and len(reference["edges"]) == 9
    assert sum(reference["fractions"]) == pytest.approx(1.0)
    same = monitoring.score_drift(rng.beta(2, 5, 5_000), reference)
    shifted = monitoring.score_drift(rng.beta(5, 2, 5_000), reference)
    assert same["feature"] == monitoring.SCORE and same["psi"] < 0.02
    assert shifted["psi"] > 1.0


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory):
    """A small registered churn model (train_small), its settings and its holdout."""
    tmp = tmp_path_factory.mktemp("champion")
    settings = settings_for("churn", tmp)
    model_dir, holdout = train_small(settings, tmp)
    engine = db.create_engine(f"sqlite:///{tmp}/registry.db")
    db.migrate(engine)
    version = registry.register_model(engine, model_dir, str(tmp / "models"))
    model = registry.load_model(engine, version)
    engine.dispose()
    return settings, model, model_dir, holdout


def test_the_model_is_saved_with_its_score_distribution(champion) -> None:
    _, model, model_dir, _ = champion
    manifest = json.loads((model_dir / training.MANIFEST_FILE).read_text())
    scores = manifest["score_reference"]
    assert scores["kind"] == "numeric" and scores["null_rate"] == 0.0
    assert 5 <= len(scores["edges"]) <= 9 and sum(scores["fractions"]) == pytest.approx(1.0)
    assert 0 < scores["mean"] < 1  # probabilities
    assert model.manifest["score_reference"] == scores


def _drifted_holdout(settings: Settings, path: Path) -> Path:
    """Another day of the same generator with its first two numeric features shifted."""
    cfg = settings.demo.model_copy(update={"rows_per_day": 300, "drift_strength": 2.0})
    day = cfg.start_date + timedelta(days=4)
    table = demo.generate_day(settings.dataset, cfg.model_copy(update={"drift_start": day}), day)
    pq.write_table(table, path)
    return path


def test_a_drifted_holdout_blocks_promotion_unless_configured_off(champion, tmp_path) -> None:
    settings, model, _, holdout = champion
    cfg = settings.monitoring
    assert monitoring.holdout_drift_block(cfg, model, holdout) is None  # same distribution
    drifted = _drifted_holdout(settings, tmp_path / "holdout.parquet")
    reason = monitoring.holdout_drift_block(cfg, model, drifted)
    numeric = [f.name for f in settings.dataset.features if f.dtype in ("float", "int")]
    assert reason is not None and f"champion {model.version}" in reason
    assert numeric[0] in reason and numeric[1] in reason and "PSI" in reason
    assert "block_promotion_on_drift" in reason
    off = cfg.model_copy(update={"block_promotion_on_drift": False})
    assert monitoring.holdout_drift_block(off, model, drifted) is None
    # the shifted features may be known to shift: ignored, nothing blocks
    ignore = {name: {"ignore": True} for name in numeric[:2]}
    lenient = MonitoringConfig.model_validate({"features": ignore, "score_psi_major": None})
    assert monitoring.holdout_drift_block(lenient, model, drifted) is None


def test_a_champion_saved_without_score_statistics_is_judged_on_features(
    champion, tmp_path
) -> None:
    settings, model, _, holdout = champion
    manifest = {k: v for k, v in model.manifest.items() if k != "score_reference"}
    old = registry.LoadedModel(model.version, model.booster, manifest, model.contract)
    assert monitoring.holdout_drift_block(settings.monitoring, old, holdout) is None
    drifted = _drifted_holdout(settings, tmp_path / "holdout.parquet")
    reason = monitoring.holdout_drift_block(settings.monitoring, old, drifted)
    assert reason is not None and "score PSI" not in reason
