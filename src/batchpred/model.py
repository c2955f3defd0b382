"""A model loaded for prediction: its booster, manifest and contract, the integrity error a
mismatch raises, and predictions on an Arrow table through the model's own contract. Below
the registry (which loads models) and scoring and monitoring (which use them)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
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
