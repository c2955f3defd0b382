"""The baselines beside every model: the prior and the linear model (gblinear) on the model's
own features, standardised and one-hot."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from batchpred import baselines
from batchpred.schema import Contract, ContractFeature

CONTRACT = Contract(
    dataset="d",
    task="regression",
    target="y",
    features=(
        ContractFeature("distance", "float"),
        ContractFeature("items", "int"),
        ContractFeature("rain", "bool"),
        ContractFeature("vehicle", "category", ("bike", "car", "scooter")),
    ),
    threshold=0.5,
    spec_hash="h",
)
PARAMS = {"objective": "reg:squarederror", "eval_metric": ["rmse"], "seed": 0, "nthread": 2}


def linear_rows(n: int, seed: int) -> tuple[pa.Table, np.ndarray]:
    """Rows with missing values in every column and a noiseless linear target of them (a
    missing number counts as its mean, a missing vehicle as none)."""
    rng = np.random.default_rng(seed)
    distance = rng.normal(10, 3, n)
    items = rng.integers(1, 20, n)
    rain = rng.random(n) < 0.3
    vehicle = rng.choice(np.array(["bike", "car", "scooter", None], dtype=object), n)
    gone = {name: rng.random(n) < 0.1 for name in ("distance", "items", "rain")}
    table = pa.table(
        {
            "distance": pa.array(distance, mask=gone["distance"]),
            "items": pa.array(items, mask=gone["items"]),
            "rain": pa.array(rain, mask=gone["rain"]),
            "vehicle": pa.array(vehicle.tolist(), pa.string()),
        }
    )
    filled = {
        name: np.where(gone[name], values[~gone[name]].mean(), values)
        for name, values in [("distance", distance), ("items", items), ("rain", rain)]
    }
    y = 3.0 * filled["distance"] - 0.5 * filled["items"] + 4.0 * filled["rain"]
    y += np.select([vehicle == "bike", vehicle == "car", vehicle == "scooter"], [5.0, -7.0, 1.0])
    return table, y


def test_prior_is_the_label_mean() -> None:
    y = np.array([0.0, 1.0, 1.0, 0.0, 1.0], dtype=np.float32)
    assert baselines.prior_value(y) == pytest.approx(0.6)
    np.testing.assert_array_equal(baselines.predict_prior(0.6, 3), [0.6, 0.6, 0.6])


def test_encoding_standardises_numbers_and_one_hots_categories() -> None:
    table, _ = linear_rows(1_000, seed=1)
    # learned a batch at a time, it is the encoding of the whole table
    encoding = baselines.linear_encoding(table.to_batches(max_chunksize=97), CONTRACT)
    distance = table.column("distance").drop_null().to_numpy()
    assert encoding["features"][0] == {
        "name": "distance",
        "mean": pytest.approx(distance.mean()),
        "std": pytest.approx(distance.std()),
    }
    assert encoding["features"][3] == {"name": "vehicle", "codes": 3}
    x = baselines.linear_matrix(table, CONTRACT, encoding)
    assert x.shape == (1_000, 3 + 3) and x.dtype == np.float32
    present = ~np.isnan(table.column("distance").to_numpy(zero_copy_only=False))
    assert abs(x[present, 0].mean()) < 1e-5 and x[present, 0].std() == pytest.approx(1, rel=1e-4)
    assert (x[~present, 0] == 0).all()  # missing: the mean
    vehicle = table.column("vehicle").to_pylist()
    for row in range(20):
        expected = [float(vehicle[row] == v) for v in ("bike", "car", "scooter")]
        assert x[row, 3:].tolist() == expected  # missing: all zeros
    unknown = pa.table({**{c: table.column(c).slice(0, 1) for c in ("distance", "items", "rain")}})
    unknown = unknown.append_column("vehicle", pa.array(["tram"]))
    assert baselines.linear_matrix(unknown, CONTRACT, encoding)[0, 3:].tolist() == [0, 0, 0]


def test_a_constant_feature_keeps_a_unit_scale() -> None:
    table = pa.table(
        {
            "distance": pa.array([2.0, 2.0]),
            "items": pa.array([None, None], pa.int64()),
            "rain": pa.array([True, True]),
            "vehicle": pa.array(["car", "car"]),
        }
    )
    encoding = baselines.linear_encoding(table.to_batches(), CONTRACT)
    assert [f.get("std") for f in encoding["features"][:3]] == [1.0, 1.0, 1.0]
    assert np.isfinite(baselines.linear_matrix(table, CONTRACT, encoding)).all()


def test_linear_model_fits_a_linear_target(monkeypatch: pytest.MonkeyPatch) -> None:
    """Noiseless linear target with missing values: R2 above 0.99 on new rows; the same rows
    give the same bytes; predictions LINEAR_MAX_ROWS rows at a time are the same."""
    train, y_train = linear_rows(3_000, seed=2)
    valid, y_valid = linear_rows(800, seed=3)
    test, y_test = linear_rows(800, seed=4)
    encoding = baselines.linear_encoding(train.to_batches(), CONTRACT)

    def fit() -> bytes:
        booster = baselines.fit_linear(
            PARAMS,
            (baselines.linear_matrix(train, CONTRACT, encoding), y_train),
            (baselines.linear_matrix(valid, CONTRACT, encoding), y_valid),
            num_boost_round=200,
            early_stopping_rounds=10,
        )
        return bytes(booster.save_raw("ubj"))

    saved = fit()
    assert fit() == saved  # coordinate descent: deterministic
    booster = baselines.load_linear(saved)
    predicted = baselines.predict_linear(booster, encoding, test, CONTRACT)
    r2 = 1 - np.mean((predicted - y_test) ** 2) / np.var(y_test)
    assert r2 > 0.99
    monkeypatch.setattr(baselines, "LINEAR_MAX_ROWS", 300)
    chunked = baselines.predict_linear(booster, encoding, test, CONTRACT)
    np.testing.assert_allclose(chunked, predicted, rtol=1e-6)


def test_binary_linear_model_predicts_probabilities() -> None:
    train, score = linear_rows(2_000, seed=5)
    valid, valid_score = linear_rows(500, seed=6)
    encoding = baselines.linear_encoding(train.to_batches(), CONTRACT)
    params = {"objective": "binary:logistic", "eval_metric": ["auc", "logloss"], "seed": 0}
    booster = baselines.fit_linear(
        params,
        (baselines.linear_matrix(train, CONTRACT, encoding), score > np.median(score)),
        (baselines.linear_matrix(valid, CONTRACT, encoding), valid_score > np.median(score)),
        num_boost_round=100,
        early_stopping_rounds=10,
    )
    p = baselines.predict_linear(booster, encoding, valid, CONTRACT)
    assert ((p >= 0) & (p <= 1)).all()
    assert ((p > 0.5) == (valid_score > np.median(score))).mean() > 0.9
