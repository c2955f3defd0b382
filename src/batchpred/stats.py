"""Drift statistics: the reference bins a model is trained with and the counts scoring and
monitoring tally against them. Below training and monitoring, which both call it."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

from batchpred.schema import Contract, ContractFeature, encode_column

QUANTILES = np.linspace(0.1, 0.9, 9)  # decile cut points: up to 10 open-ended bins


def _fin(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def reference_statistics(table: pa.Table, contract: Contract) -> dict[str, dict[str, Any]]:
    """Per feature, on its encoded (float) values: numeric -> decile cut points `edges`
    (unique, finite; bins are open-ended) with the share of non-null rows per bin, mean, std;
    category/bool -> the share of non-null rows per code in `values`. Both carry null_rate."""
    return {
        f.name: feature_statistics(f, encode_column(f, table.column(f.name))[0])
        for f in contract.features
    }


def feature_statistics(feature: ContractFeature, encoded: np.ndarray) -> dict[str, Any]:
    """One feature's entry of reference_statistics, from its encoded values."""
    values = encoded.astype(np.float64)
    present = values[np.isfinite(values)]
    entry: dict[str, Any] = {"null_rate": 1 - present.size / max(values.size, 1)}
    if feature.dtype in ("category", "bool"):
        n_codes = len(feature.vocabulary or ()) if feature.dtype == "category" else 2
        entry["kind"] = "categorical"
        entry["values"] = list(range(n_codes))
    else:
        entry |= _deciles(present)
    entry["fractions"] = bin_fractions(values, entry)
    return entry


def _deciles(present: np.ndarray) -> dict[str, Any]:
    edges = np.unique(np.quantile(present, QUANTILES)) if present.size else np.empty(0)
    return {
        "kind": "numeric",
        "edges": [float(e) for e in edges],
        "mean": _fin(present.mean()) if present.size else None,
        "std": _fin(present.std()) if present.size else None,
    }


def score_statistics(scores: np.ndarray) -> dict[str, Any]:
    """The model's scores on its training split, binned like a numeric feature (deciles,
    fractions, mean, std): the reference for drift of the score distribution."""
    values = np.asarray(scores, dtype=np.float64)
    present = values[np.isfinite(values)]
    entry: dict[str, Any] = {"null_rate": 1 - present.size / max(values.size, 1)}
    entry |= _deciles(present)
    entry["fractions"] = bin_fractions(values, entry)
    return entry


def bin_counts(values: np.ndarray, feature_stats: dict[str, Any]) -> np.ndarray:
    """How many non-null `values` (encoded as by schema.encode_column) fall in each bin of
    `feature_stats` (one entry of reference_statistics), aligned with its `fractions`."""
    values = np.asarray(values, dtype=np.float64)
    present = values[np.isfinite(values)]
    if feature_stats["kind"] == "numeric":
        edges = np.asarray(feature_stats["edges"], dtype=np.float64)
        return np.bincount(np.searchsorted(edges, present, side="right"), minlength=edges.size + 1)
    codes = np.asarray(feature_stats["values"], dtype=np.float64)
    return np.array([(present == c).sum() for c in codes])


def bin_fractions(values: np.ndarray, feature_stats: dict[str, Any]) -> list[float]:
    """The share of non-null `values` in each bin of `feature_stats` (see bin_counts)."""
    counts = bin_counts(values, feature_stats)
    total = counts.sum()
    return [float(c / total) if total else 0.0 for c in counts]
