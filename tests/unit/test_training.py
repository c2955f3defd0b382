"""Training stages on a small synthetic lake: window, determinism, metrics, gate, drift."""

from __future__ import annotations

import hashlib
import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchpred import storage, training
from batchpred.config import DatasetSpec, GateConfig, Settings
from batchpred.schema import arrow_schema, encode_column

START = date(2026, 10, 1)
FAST = {"num_boost_round": 60, "early_stopping_rounds": 10, "nthread": 2}


def fast(settings: Settings, **training_overrides: object) -> Settings:
    """Short windows and few rounds, so the suite stays quick; no Data Docs HTML."""
    cfg = {"window_days": 6, "valid_days": 1, "holdout_days": 1, **FAST, **training_overrides}
    return settings.model_copy(
        update={
            "training": settings.training.model_copy(update=cfg),
            "validation": settings.validation.model_copy(update={"data_docs": False}),
        }
    )


def synthetic_day(
    spec: DatasetSpec, day: date, rows: int, seed: int, shift: float = 0.0
) -> pa.Table:
    """One partition drawn from the spec alone; the target depends on the first two numeric
    features, so it is learnable."""
    rng = np.random.default_rng(seed)
    cols: dict[str, pa.Array] = {}
    ids = np.arange(rows)[::-1] + seed * 10_000  # reversed: prepare must sort
    cols[spec.entity_id] = pa.array(
        ids if spec.entity_id_dtype == "int" else [f"e{i}" for i in ids]
    )
    cols[spec.event_date] = pa.array([day] * rows, pa.date32())
    signal = []
    for f in spec.features:
        if f.dtype == "category":
            assert f.categories
            values = pa.array(rng.choice(f.categories, rows).tolist(), pa.string())
        elif f.dtype == "bool":
            values = pa.array(rng.random(rows) < 0.4)
        else:
            lo, hi = f.min or 0.0, f.max if f.max is not None else 100.0
            u = np.clip(rng.beta(2, 2, rows) + shift, 0, 1)
            signal.append(u - 0.5)
            x = lo + u * (hi - lo)
            values = pa.array(np.round(x).astype(np.int64) if f.dtype == "int" else x)
        if f.nullable:
            values = pa.array(values.to_pylist(), values.type, mask=rng.random(rows) < 0.05)
        cols[f.name] = values
    score = 4 * signal[0] - 3 * signal[1] + rng.normal(0, 0.3, rows)
    if spec.target.task == "binary":
        cols[spec.target.name] = pa.array((score > 0).astype(np.int8))
    else:
        cols[spec.target.name] = pa.array(30 + 10 * score)
    return pa.table(cols).cast(arrow_schema(spec))


def build_lake(
    settings: Settings, days: int = 8, rows: int = 300, failed: tuple[int, ...] = ()
) -> list[date]:
    """`days` partitions with manifests; indices in `failed` fail validation."""
    out = []
    for i in range(days):
        day = START + timedelta(days=i)
        storage.write_partition(
            settings.lake.raw, day, synthetic_day(settings.dataset, day, rows, i)
        )
        success = i not in failed
        storage.write_manifest(settings.lake.raw, day, {"validation": {"success": success}})
        out.append(day)
    return out


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One churn lake, prepared and trained once, shared by the read-only tests."""
    from tests.conftest import settings_for

    tmp = tmp_path_factory.mktemp("trained")
    settings = fast(settings_for("churn", tmp))
    build_lake(settings)
    data, model = tmp / "data", tmp / "model"
    summary = training.prepare_training_set(settings, data)
    manifest = training.train_model(settings, data, model)
    return {
        "settings": settings,
        "data": data,
        "model": model,
        "summary": summary,
        "manifest": manifest,
    }


# --- prepare ----------------------------------------------------------------------------------


def test_prepare_picks_newest_validated_window(churn: Settings, tmp_path: Path) -> None:
    settings = fast(churn, window_days=4)
    days = build_lake(settings, days=8, rows=50, failed=(5,))
    (Path(settings.lake.raw) / f"dt={days[6].isoformat()}" / "_manifest.json").unlink()
    storage.write_manifest(settings.lake.raw, days[3], {"validation": None})
    summary = training.prepare_training_set(settings, tmp_path / "out")
    assert summary["days"] == [d.isoformat() for d in (days[1], days[2], days[4], days[7])]
    assert summary["excluded"] == [
        {"day": days[3].isoformat(), "reason": "not validated"},
        {"day": days[5].isoformat(), "reason": "validation failed"},
        {"day": days[6].isoformat(), "reason": "no manifest"},
    ]
    assert summary["rows"] == {"train": 100, "valid": 50, "holdout": 50}
    spec = settings.dataset
    holdout = pq.read_table(tmp_path / "out/holdout.parquet")
    train = pq.read_table(tmp_path / "out/train.parquet")
    assert holdout.column_names == arrow_schema(spec).names
    assert set(holdout.column(spec.event_date).to_pylist()) == {days[7]}
    dates, ids = (train.column(c).to_pylist() for c in (spec.event_date, spec.entity_id))
    keys = list(zip(dates, ids, strict=True))
    assert keys == sorted(keys)
    assert json.loads((tmp_path / "out/prepare.json").read_text()) == summary


def test_too_few_validated_days_is_a_clear_error(churn: Settings, tmp_path: Path) -> None:
    settings = fast(churn, valid_days=2, holdout_days=2)
    build_lake(settings, days=6, rows=20, failed=(0, 3))
    with pytest.raises(training.TrainingDataError, match=r"at least 5 validated .* found 4"):
        training.prepare_training_set(settings, tmp_path / "out")


def test_prepared_files_are_byte_identical_across_runs(trained: dict, tmp_path: Path) -> None:
    again = training.prepare_training_set(trained["settings"], tmp_path)
    assert again["data_hash"] == trained["summary"]["data_hash"]
    for split in training.SPLITS:
        assert sha(tmp_path / f"{split}.parquet") == sha(trained["data"] / f"{split}.parquet")


def test_invalid_training_set_is_rejected(churn: Settings, tmp_path: Path) -> None:
    from batchpred import validation

    settings = fast(churn)
    days = build_lake(settings, rows=30)
    bad = storage.read_partition(settings.lake.raw, days[-1])
    feature = settings.dataset.features[0]
    column = pa.array(
        [(feature.max or 0) + 1e6] * bad.num_rows, bad.schema.field(feature.name).type
    )
    bad = bad.set_column(bad.schema.get_field_index(feature.name), feature.name, column)
    storage.write_partition(settings.lake.raw, days[-1], bad)
    with pytest.raises(validation.ValidationError):
        training.prepare_training_set(settings, tmp_path / "out")


# --- train / evaluate -------------------------------------------------------------------------


def test_train_and_evaluate_binary(trained: dict) -> None:
    settings, manifest = trained["settings"], trained["manifest"]
    metrics = training.evaluate_model(
        settings, trained["model"] / "model.ubj", trained["data"] / "holdout.parquet"
    )
    assert metrics["auc"] > 0.7 and metrics["primary"] == "auc"
    assert metrics["primary_value"] == metrics["auc"]
    assert metrics["rows"] == 300 and 0 <= metrics["accuracy"] <= 1 and metrics["logloss"] > 0
    assert manifest["params"]["objective"] == "binary:logistic"
    assert manifest["params"]["seed"] == 0 and manifest["params"]["nthread"] == 2


def test_manifest_describes_the_saved_model(trained: dict) -> None:
    import xgboost as xgb

    settings, manifest, model = trained["settings"], trained["manifest"], trained["model"]
    spec = settings.dataset
    assert json.loads((model / "manifest.json").read_text()) == manifest
    assert manifest["sha256"] == sha(model / "model.ubj")
    assert manifest["features"] == spec.feature_names
    assert list(manifest["feature_dtypes"]) == spec.feature_names
    assert manifest["training_data_hash"] == trained["summary"]["data_hash"]
    assert manifest["created_from"]["days"] == trained["summary"]["days"]
    assert manifest["train_rows"] == trained["summary"]["rows"]["train"]
    assert set(manifest["reference_stats"]) == set(spec.feature_names)
    booster = xgb.Booster(model_file=str(model / "model.ubj"))
    assert booster.feature_names == spec.feature_names
    assert booster.num_boosted_rounds() == manifest["best_iteration"] + 1  # truncated to best


def test_same_data_seed_nthread_give_identical_model(trained: dict, tmp_path: Path) -> None:
    again = training.train_model(trained["settings"], trained["data"], tmp_path)
    assert again["sha256"] == trained["manifest"]["sha256"] == sha(tmp_path / "model.ubj")


def test_regression_trains_and_evaluates(deliveries: Settings, tmp_path: Path) -> None:
    settings = fast(deliveries)
    build_lake(settings, rows=200)
    training.prepare_training_set(settings, tmp_path / "data")
    manifest = training.train_model(settings, tmp_path / "data", tmp_path / "model")
    assert manifest["task"] == "regression" and manifest["params"]["eval_metric"] == ["rmse"]
    assert manifest["params"]["max_depth"] == 5  # dataset params win over defaults
    metrics = training.evaluate_model(
        settings, tmp_path / "model/model.ubj", tmp_path / "data/holdout.parquet"
    )
    assert metrics["primary"] == "neg_rmse" and metrics["primary_value"] == -metrics["rmse"]
    assert metrics["rmse"] < 8 and metrics["r2"] > 0.5 and metrics["mae"] > 0


# --- metrics and gate -------------------------------------------------------------------------


def test_auc_handles_ties(churn: Settings) -> None:
    spec = churn.dataset
    y = np.array([0, 0, 1, 1])
    assert training.metrics_for(spec, y, np.array([0.1, 0.4, 0.35, 0.8]))["auc"] == 0.75
    assert training.metrics_for(spec, y, np.full(4, 0.5))["auc"] == 0.5
    assert training.metrics_for(spec, y, np.array([0.2, 0.5, 0.5, 0.9]))["auc"] == 0.875
    with pytest.raises(ValueError, match="one class"):
        training.metrics_for(spec, np.ones(3), np.full(3, 0.5))


@pytest.mark.parametrize(
    ("challenger", "champion", "ok", "words"),
    [
        (0.80, None, True, "no champion"),
        (0.82, 0.80, True, "clears champion"),
        (0.797, 0.80, True, "clears champion"),
        (0.795, 0.80, True, "clears champion"),  # exactly max_regression worse
        (0.75, 0.80, False, "misses champion"),
        (0.55, None, False, "below the floor"),
        (0.55, 0.50, False, "below the floor"),
    ],
)
def test_passes_gate(challenger: float, champion: float | None, ok: bool, words: str) -> None:
    gate = GateConfig(min_metric=0.6, max_regression=0.005)
    champ = None if champion is None else {"primary": "auc", "primary_value": champion}
    passed, reason = training.passes_gate(
        gate, {"primary": "auc", "primary_value": challenger}, champ
    )
    assert passed is ok and words in reason and f"{challenger:.6f}" in reason


def test_gate_on_negative_rmse() -> None:
    gate = GateConfig(min_metric=-10.0, max_regression=0.1)
    champ = {"primary": "neg_rmse", "primary_value": -5.0}
    assert training.passes_gate(gate, {"primary": "neg_rmse", "primary_value": -5.05}, champ)[0]
    assert not training.passes_gate(gate, {"primary": "neg_rmse", "primary_value": -6.0}, champ)[0]


# --- drift reference --------------------------------------------------------------------------


def psi(expected: list[float], actual: list[float]) -> float:
    e, a = np.clip(expected, 1e-4, None), np.clip(actual, 1e-4, None)
    return float(np.sum((a - e) * np.log(a / e)))


def test_reference_statistics_and_bin_fractions(churn: Settings) -> None:
    spec = churn.dataset
    base = synthetic_day(spec, START, 3000, seed=1)
    stats = training.reference_statistics(base, spec)
    json.dumps(stats, allow_nan=False)  # JSON-safe
    same = synthetic_day(spec, START, 3000, seed=2)
    shifted = synthetic_day(spec, START, 3000, seed=3, shift=0.3)
    for f in spec.features:
        s = stats[f.name]
        assert sum(s["fractions"]) == pytest.approx(1.0)
        assert 0 <= s["null_rate"] <= 1 and (s["null_rate"] > 0) == f.nullable
        own = training.bin_fractions(encode_column(f, base.column(f.name)), s)
        assert own == s["fractions"]
        assert (
            psi(s["fractions"], training.bin_fractions(encode_column(f, same.column(f.name)), s))
            < 0.02
        )
        if s["kind"] == "numeric":
            assert len(s["edges"]) <= 9 and s["edges"] == sorted(set(s["edges"]))
            assert s["mean"] is not None and s["std"] > 0
            moved = training.bin_fractions(encode_column(f, shifted.column(f.name)), s)
            assert psi(s["fractions"], moved) > 0.2
        else:
            assert len(s["fractions"]) == (len(f.categories or ()) if f.dtype == "category" else 2)
