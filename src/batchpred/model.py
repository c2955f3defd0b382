"""A model loaded for prediction: its booster, manifest and contract, the integrity error a
mismatch raises, and predictions on an Arrow table through the model's own contract. Below
the registry (which loads models) and scoring and monitoring (which use them)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa
import xgboost as xgb

from batchpred import schema


class ModelIntegrityError(Exception):
    """The model bytes do not match the registered sha256 (tampered or truncated)."""


@dataclass(frozen=True)
class LoadedModel:
    version: str
    booster: xgb.Booster
    manifest: dict[str, Any]
    contract: schema.Contract


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def predict_table(model: LoadedModel, table: pa.Table) -> np.ndarray:
    """Scores for every row of an Arrow table, matrix built from the model's own contract."""
    matrix, _ = schema.feature_matrix(table, model.contract)
    return np.asarray(model.booster.inplace_predict(matrix, validate_features=False))


def trained_days(manifest: Mapping[str, Any]) -> frozenset[date]:
    """The days whose rows the deployed model (model.ubj) was fit on: the refit's days; the
    evaluated model's `seen` days when it is the deployed one (training.refit off); for a
    manifest from before refits, every day of its window (conservative: its holdout days,
    which it was not fit on, are among them). A realised metric on such a day is in-sample."""
    if manifest.get("refit"):
        days = manifest["refit"].get("days") or []
    elif manifest.get("evaluated"):
        days = manifest["evaluated"]["seen"]["days"]
    else:
        days = (manifest.get("created_from") or {}).get("days") or []
    return frozenset(date.fromisoformat(d) for d in days)
