"""Configuration: layering, validation, and the dataset spec as the only home of column names."""

from pathlib import Path

import pydantic
import pytest

from batchpred.config import load_settings

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
    with pytest.raises(pydantic.ValidationError, match="batch_row"):
        load_settings([ROOT / "configs/base.yaml", ROOT / "configs/datasets/churn.yaml", bad])


def test_settings_are_frozen():
    s = load_settings([ROOT / "configs/base.yaml", ROOT / "configs/datasets/churn.yaml"])
    with pytest.raises(pydantic.ValidationError):
        s.scoring.concurrency = 8  # type: ignore[misc]


def test_category_feature_needs_categories(tmp_path):
    bad = tmp_path / "ds.yaml"
    bad.write_text(
        "dataset:\n  name: x\n  entity_id: id\n  event_date: d\n"
        "  target: {name: y, task: binary}\n  features:\n    - {name: c, dtype: category}\n"
    )
    with pytest.raises(pydantic.ValidationError, match="needs 'categories'"):
        load_settings([ROOT / "configs/base.yaml", bad])


def test_config_files_from_environment(monkeypatch):
    monkeypatch.setenv(
        "BATCHPRED_CONFIG",
        f"{ROOT / 'configs/base.yaml'},{ROOT / 'configs/datasets/deliveries.yaml'}",
    )
    assert load_settings().dataset.name == "deliveries"
