"""Configuration: layering, validation, and the dataset spec as the only home of column names."""

from pathlib import Path

import pydantic
import pytest

from batchpred.config import SetupError, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_layers_apply_in_order_and_dataset_params_override_base():
    s = load_settings([ROOT / "configs/base.yaml", ROOT / "configs/datasets/deliveries.yaml"])
    assert s.dataset.entity_id == "order_ref"
    assert s.dataset.target.task == "regression"
    assert s.training.params["objective"] == "reg:squarederror"
    assert s.training.params["max_depth"] == 5
    assert s.training.params["tree_method"] == "hist"  # inherited from base


def test_unknown_key_is_an_error(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("scoring:\n  batch_row: 10\n")
    with pytest.raises(SetupError, match="batch_row"):
        load_settings([ROOT / "configs/base.yaml", ROOT / "configs/datasets/churn.yaml", bad])


def test_settings_are_frozen():
    s = load_settings([ROOT / "configs/base.yaml", ROOT / "configs/datasets/churn.yaml"])
    with pytest.raises(pydantic.ValidationError):
        s.scoring.concurrency = 8  # type: ignore[misc]


def _dataset_file(tmp_path, features: str, target: str = "{name: y, task: binary}"):
    path = tmp_path / "ds.yaml"
    path.write_text(
        "dataset:\n  name: x\n  entity_id: id\n  event_date: d\n"
        f"  target: {target}\n  features:\n{features}"
    )
    return [ROOT / "configs/base.yaml", path]


def test_category_feature_may_omit_categories_and_learns_them(tmp_path):
    """A category without a list is allowed: its vocabulary is learned from training data
    (schema.build_contract); an unknown value is scored as missing by default."""
    s = load_settings(_dataset_file(tmp_path, "    - {name: c, dtype: category}\n"))
    feature = s.dataset.feature("c")
    assert feature.categories is None and feature.on_unknown == "missing"


def test_feature_rules_are_checked(tmp_path):
    cases = {
        "    - {name: c, dtype: float, categories: [a]}\n": "only applies to dtype category",
        "    - {name: c, dtype: category, min: 1}\n": "do not apply to dtype category",
        "    - {name: c, dtype: int, min: 5, max: 1}\n": "min > max",
        "    - {name: c, dtype: category, on_unknown: ignore}\n": "on_unknown",
    }
    for features, words in cases.items():
        with pytest.raises(SetupError, match=words):
            load_settings(_dataset_file(tmp_path, features))


def test_target_classes_map_text_labels_to_both_classes(tmp_path):
    feature = "    - {name: f, dtype: float}\n"
    # quoted: YAML 1.1 reads bare yes/no as booleans
    ok = "{name: y, task: binary, classes: {'yes': 1, 'no': 0}, threshold: 0.3}"
    target = load_settings(_dataset_file(tmp_path, feature, ok)).dataset.target
    assert target.classes == {"yes": 1, "no": 0} and target.threshold == 0.3
    with pytest.raises(SetupError, match="both 0 and 1"):
        load_settings(_dataset_file(tmp_path, feature, "{name: y, task: binary, classes: {a: 1}}"))
    with pytest.raises(SetupError, match="only applies to task binary"):
        load_settings(
            _dataset_file(tmp_path, feature, "{name: y, task: regression, classes: {a: 1, b: 0}}")
        )


def test_reject_up_to_replaces_max_reject_fraction(tmp_path):
    base = [ROOT / "configs/base.yaml", ROOT / "configs/datasets/churn.yaml"]
    s = load_settings(base, overrides={"validation": {"reject_up_to": {"range": 0.1}}})
    policy = s.validation.reject_up_to
    assert (policy.range, policy.not_null, policy.category, policy.label) == (0.1, 0, 0, 0)
    with pytest.raises(SetupError, match="max_reject_fraction"):
        load_settings(base, overrides={"scoring": {"max_reject_fraction": 0.1}})
    with pytest.raises(SetupError, match="less than or equal to 1"):
        load_settings(base, overrides={"validation": {"reject_up_to": {"type": 1.5}}})


def test_dataset_placeholder_separates_the_lake_zones_of_each_dataset(tmp_path):
    churn = load_settings([ROOT / "configs/base.yaml", ROOT / "configs/datasets/churn.yaml"])
    deliveries = load_settings(
        [ROOT / "configs/base.yaml", ROOT / "configs/datasets/deliveries.yaml"],
        overrides={"lake": {"raw": str(tmp_path / "{dataset}" / "raw")}},
    )
    assert (churn.lake.raw, churn.lake.labels) == ("data/raw/churn", "data/labels/churn")
    assert churn.source.url == "data/source/churn"
    assert deliveries.lake.raw == str(tmp_path / "deliveries" / "raw")
    assert deliveries.lake.reports == "data/reports/deliveries"


def test_split_days_needs_room_for_training_days():
    base = [ROOT / "configs/base.yaml", ROOT / "configs/datasets/churn.yaml"]
    days = {"window_days": 4, "valid_days": 2, "holdout_days": 2}
    with pytest.raises(SetupError, match="valid_days \\+ holdout_days"):
        load_settings(base, overrides={"training": days})
    rows = load_settings(base, overrides={"training": {**days, "window_days": 1, "split": "rows"}})
    assert rows.training.split == "rows" and rows.training.window_days == 1


def test_missing_days_and_unmatched_labels_policies():
    """training.missing_days and labels.max_unmatched_fraction: documented in base.yaml with
    their defaults, and only meaningful values load."""
    base = [ROOT / "configs/base.yaml", ROOT / "configs/datasets/churn.yaml"]
    s = load_settings(base)
    assert s.training.missing_days == "warn" and s.labels.max_unmatched_fraction == 0.01
    text = (ROOT / "configs/base.yaml").read_text()
    assert "  missing_days: warn " in text and "  max_unmatched_fraction: 0.01 " in text
    strict = load_settings(base, overrides={"training": {"missing_days": "fail"}})
    assert strict.training.missing_days == "fail"
    with pytest.raises(SetupError, match="missing_days"):
        load_settings(base, overrides={"training": {"missing_days": "ignore"}})
    with pytest.raises(SetupError, match="max_unmatched_fraction"):
        load_settings(base, overrides={"labels": {"max_unmatched_fraction": 1.5}})


def test_config_files_from_environment(monkeypatch):
    monkeypatch.setenv(
        "BATCHPRED_CONFIG",
        f"{ROOT / 'configs/base.yaml'},{ROOT / 'configs/datasets/deliveries.yaml'}",
    )
    assert load_settings().dataset.name == "deliveries"
