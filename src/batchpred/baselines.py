"""The baselines every model is shown beside: the prior (the training label mean: a binary
task's positive rate) and a linear model, XGBoost's `gblinear` on the model's own features,
numeric ones standardised and categories one-hot. Training fits it on at most
LINEAR_MAX_ROWS rows (train and valid together) held as plain matrices, and it predicts
LINEAR_MAX_ROWS rows at a time: no plain DMatrix holds more (gblinear takes no
QuantileDMatrix)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import xgboost as xgb

from batchpred import schema
from batchpred.schema import Contract

LINEAR_MAX_ROWS = 200_000
ENCODING = "standardised-one-hot-v1"
# what the linear model takes from the task's params; the rest (depth, eta, ...) are trees'
_TASK_PARAMS = ("objective", "eval_metric", "seed")


def prior_value(y: np.ndarray) -> float:
    """The trivial predictor's one value: the label mean (a binary task's positive rate)."""
    return float(np.mean(y, dtype=np.float64))


def predict_prior(value: float, n: int) -> np.ndarray:
    return np.full(n, value, dtype=np.float64)


def linear_encoding(batches: Iterable[pa.RecordBatch], contract: Contract) -> dict[str, Any]:
    """How linear_matrix encodes each feature, learned from the rows: a numeric (or bool)
    feature's mean and std over its present values (std 1 when it has none or one value), a
    category's number of codes (its vocabulary in the contract). JSON-ready, in the
    contract's feature order, which is the matrix's column order."""
    numeric = [f for f in contract.features if f.dtype != "category"]
    n = dict.fromkeys((f.name for f in numeric), 0)
    mean = dict.fromkeys(n, 0.0)
    m2 = dict.fromkeys(n, 0.0)  # sum of squared deviations, merged batch by batch (Chan et al.)
    for batch in batches:
        for f in numeric:
            values = schema.encode_column(f, batch.column(f.name))[0].astype(np.float64)
            values = values[~np.isnan(values)]
            if not values.size:
                continue
            count, batch_mean = values.size, float(values.mean())
            total = n[f.name] + count
            delta = batch_mean - mean[f.name]
            m2[f.name] += float(((values - batch_mean) ** 2).sum())
            m2[f.name] += delta**2 * n[f.name] * count / total
            mean[f.name] += delta * count / total
            n[f.name] = total
    features: list[dict[str, Any]] = []
    for f in contract.features:
        if f.dtype == "category":
            features.append({"name": f.name, "codes": len(f.vocabulary or ())})
            continue
        std = float(np.sqrt(m2[f.name] / n[f.name])) if n[f.name] else 0.0
        features.append({"name": f.name, "mean": mean[f.name], "std": std if std > 0 else 1.0})
    return {"kind": ENCODING, "features": features}


def linear_matrix(
    data: pa.Table | pa.RecordBatch, contract: Contract, encoding: dict[str, Any]
) -> np.ndarray:
    """The linear model's input, float32: per feature of the encoding, in its order, the
    standardised value (missing: 0, the mean) or one column per category code (missing or
    unknown to the contract: all zeros)."""
    features = {f.name: f for f in contract.features}
    blocks = []
    for entry in encoding["features"]:
        values, _ = schema.encode_column(features[entry["name"]], data.column(entry["name"]))
        if "codes" in entry:
            block = np.zeros((data.num_rows, entry["codes"]), dtype=np.float32)
            rows = np.flatnonzero(~np.isnan(values))
            block[rows, values[rows].astype(np.int64)] = 1.0
        else:
            scaled = (values - np.float32(entry["mean"])) / np.float32(entry["std"])
            block = np.nan_to_num(scaled, nan=0.0)[:, None]
        blocks.append(block)
    if not blocks:
        return np.zeros((data.num_rows, 0), dtype=np.float32)
    return np.hstack(blocks).astype(np.float32, copy=False)


def fit_linear(
    params: dict[str, Any],
    train: tuple[np.ndarray, np.ndarray],
    valid: tuple[np.ndarray, np.ndarray],
    num_boost_round: int,
    early_stopping_rounds: int,
) -> xgb.Booster:
    """gblinear with the task's objective, metrics and seed, early-stopped on `valid`
    (matrix, label), then fit again on `train` for the best number of rounds (a linear
    booster cannot be cut to its best iteration). Coordinate descent, cyclic, one thread:
    the same rows give the same weights (the default `shotgun` updater races between
    threads), and threads only slow it: it syncs them at every coordinate (200,000 rows of
    50 columns, 100 rounds: 7 s on one thread, 100 s on two, on a 2-core machine)."""
    linear = {k: params[k] for k in _TASK_PARAMS if k in params}
    linear |= {
        "booster": "gblinear",
        "updater": "coord_descent",
        "feature_selector": "cyclic",
        "nthread": 1,
    }
    dtrain = xgb.DMatrix(train[0], label=train[1], nthread=1)
    dvalid = xgb.DMatrix(valid[0], label=valid[1], nthread=1)
    stopped = xgb.train(
        linear,
        dtrain,
        num_boost_round=num_boost_round,
        evals=[(dvalid, "valid")],
        early_stopping_rounds=early_stopping_rounds,
        verbose_eval=False,
    )
    return xgb.train(linear, dtrain, num_boost_round=stopped.best_iteration + 1)


def predict_linear(
    booster: xgb.Booster,
    encoding: dict[str, Any],
    table: pa.Table | pa.RecordBatch,
    contract: Contract,
) -> np.ndarray:
    """The linear model's predictions for every row, LINEAR_MAX_ROWS rows at a time."""
    parts = [
        booster.predict(
            xgb.DMatrix(linear_matrix(table.slice(start, LINEAR_MAX_ROWS), contract, encoding))
        )
        for start in range(0, table.num_rows, LINEAR_MAX_ROWS)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def load_linear(data: bytes) -> xgb.Booster:
    """A linear model saved as UBJSON (linear.ubj), from its bytes."""
    booster = xgb.Booster()
    booster.load_model(bytearray(data))
    return booster
