"""DVC stages prepare/train/evaluate, drift reference statistics, metrics and the promotion gate."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xgboost as xgb

from batchpred import storage, validation
from batchpred.config import DatasetSpec, GateConfig, Settings
from batchpred.schema import arrow_schema, encode_column, feature_matrix

SPLITS = ("train", "valid", "holdout")
MODEL_FILE = "model.ubj"
MANIFEST_FILE = "manifest.json"
PREPARE_FILE = "prepare.json"
QUANTILES = np.linspace(0.1, 0.9, 9)  # decile cut points: up to 10 open-ended bins
_DEFAULTS: dict[str, dict[str, Any]] = {
    "binary": {"objective": "binary:logistic", "eval_metric": ["auc", "logloss"]},
    "regression": {"objective": "reg:squarederror", "eval_metric": ["rmse"]},
}


class TrainingDataError(ValueError):
    """The lake holds too few validated partitions to build a training set."""


# --- small helpers ----------------------------------------------------------------------------


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _write_parquet(table: pa.Table, path: Path) -> None:
    """Byte-deterministic Parquet: fixed codec and settings, no pandas or time metadata."""
    pq.write_table(
        table.replace_schema_metadata(None),
        path,
        compression="zstd",
        compression_level=3,
        row_group_size=1 << 20,
        use_dictionary=True,
        write_statistics=True,
    )


def _fin(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _target(table: pa.Table, spec: DatasetSpec) -> np.ndarray:
    return table.column(spec.target.name).to_numpy(zero_copy_only=False).astype(np.float32)


def _dmatrix(table: pa.Table, spec: DatasetSpec, *, with_label: bool = True) -> xgb.DMatrix:
    label = _target(table, spec) if with_label else None
    return xgb.DMatrix(feature_matrix(table, spec), label=label, feature_names=spec.feature_names)


# --- prepare ----------------------------------------------------------------------------------


def _exclusion_reason(manifest: dict[str, Any] | None) -> str | None:
    if manifest is None:
        return "no manifest"
    result = manifest.get("validation")
    if result is None:
        return "not validated"
    if result.get("success") is not True:
        return "validation failed"
    return None


def select_days(settings: Settings) -> tuple[list[date], list[dict[str, str]]]:
    """The newest `window_days` validated raw partitions (oldest first), and the partitions
    skipped on the way with the reason."""
    cfg, root = settings.training, settings.lake.raw
    days: list[date] = []
    excluded: list[dict[str, str]] = []
    for day in reversed(storage.list_partitions(root)):
        if len(days) == cfg.window_days:
            break
        reason = _exclusion_reason(storage.read_manifest(root, day))
        if reason:
            excluded.append({"day": day.isoformat(), "reason": reason})
        else:
            days.append(day)
    needed = cfg.valid_days + cfg.holdout_days + 1
    if len(days) < needed:
        raise TrainingDataError(
            f"training needs at least {needed} validated partitions (valid_days "
            f"{cfg.valid_days} + holdout_days {cfg.holdout_days} + 1) in {root}, found "
            f"{len(days)}; excluded: {excluded or 'none'}"
        )
    return days[::-1], excluded[::-1]


def _read_day(settings: Settings, day: date) -> pa.Table:
    spec, schema = settings.dataset, arrow_schema(settings.dataset)
    table = storage.read_partition(settings.lake.raw, day, columns=schema.names)
    table = table.select(schema.names).cast(schema)
    return table.sort_by([(spec.event_date, "ascending"), (spec.entity_id, "ascending")])


def prepare_training_set(settings: Settings, out_dir: str | Path) -> dict[str, Any]:
    """DVC stage `prepare`: window of validated partitions -> train/valid/holdout Parquet."""
    cfg, spec = settings.training, settings.dataset
    days, excluded = select_days(settings)
    tables = {day: _read_day(settings, day) for day in days}
    first, last = days[0].isoformat(), days[-1].isoformat()
    full = pa.concat_tables(tables.values())
    validation.validate_or_raise(
        full.to_pandas(),
        spec,
        settings.validation,
        subject=f"training set {first}..{last}",
        reports_url=settings.lake.reports,
    )
    n_fit = len(days) - cfg.valid_days - cfg.holdout_days
    groups = {
        "train": days[:n_fit],
        "valid": days[n_fit : n_fit + cfg.valid_days],
        "holdout": days[n_fit + cfg.valid_days :],
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    rows = {}
    for split in SPLITS:
        table = pa.concat_tables([tables[d] for d in groups[split]]).combine_chunks()
        path = out / f"{split}.parquet"
        _write_parquet(table, path)
        digest.update(path.read_bytes())
        rows[split] = table.num_rows
    summary = {
        "dataset": spec.name,
        "days": [d.isoformat() for d in days],
        "splits": {k: [d.isoformat() for d in v] for k, v in groups.items()},
        "excluded": excluded,
        "rows": rows,
        "data_hash": digest.hexdigest(),
    }
    _write_json(out / PREPARE_FILE, summary)
    return summary


# --- reference statistics for drift -----------------------------------------------------------


def reference_statistics(table: pa.Table, spec: DatasetSpec) -> dict[str, dict[str, Any]]:
    """Per feature, on its encoded (float) values: numeric -> decile cut points `edges`
    (unique, finite; bins are open-ended) with the share of non-null rows per bin, mean, std;
    category/bool -> the share of non-null rows per code in `values`. Both carry null_rate."""
    stats: dict[str, dict[str, Any]] = {}
    for feature in spec.features:
        values = encode_column(feature, table.column(feature.name)).astype(np.float64)
        present = values[np.isfinite(values)]
        entry: dict[str, Any] = {"null_rate": 1 - present.size / max(values.size, 1)}
        if feature.dtype in ("category", "bool"):
            n_codes = len(feature.categories or ()) if feature.dtype == "category" else 2
            entry["kind"] = "categorical"
            entry["values"] = list(range(n_codes))
        else:
            edges = np.unique(np.quantile(present, QUANTILES)) if present.size else np.empty(0)
            entry["kind"] = "numeric"
            entry["edges"] = [float(e) for e in edges]
            entry["mean"] = _fin(present.mean()) if present.size else None
            entry["std"] = _fin(present.std()) if present.size else None
        entry["fractions"] = bin_fractions(values, entry)
        stats[feature.name] = entry
    return stats


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


# --- train ------------------------------------------------------------------------------------


def effective_params(settings: Settings) -> dict[str, Any]:
    """Task defaults, overridden by training.params, then seed and nthread from the config."""
    cfg = settings.training
    params = {**_DEFAULTS[settings.dataset.target.task], **cfg.params}
    return {**params, "seed": cfg.seed, "nthread": cfg.nthread}


def train_model(settings: Settings, data_dir: str | Path, model_dir: str | Path) -> dict[str, Any]:
    """DVC stage `train`: early-stopped xgboost model, saved as UBJSON with its manifest."""
    cfg, spec = settings.training, settings.dataset
    data, out = Path(data_dir), Path(model_dir)
    prepared = json.loads((data / PREPARE_FILE).read_text())
    train = pq.read_table(data / "train.parquet")
    valid = pq.read_table(data / "valid.parquet")
    params = effective_params(settings)
    booster = xgb.train(
        params,
        _dmatrix(train, spec),
        num_boost_round=cfg.num_boost_round,
        evals=[(_dmatrix(valid, spec), "valid")],
        early_stopping_rounds=cfg.early_stopping_rounds,
        verbose_eval=False,
    )
    best = booster.best_iteration
    booster = booster[: best + 1]  # keep only the best model's trees
    return save_model(
        booster,
        settings,
        train,
        out,
        best_iteration=best,
        training_data_hash=prepared["data_hash"],
        days=prepared["days"],
    )


def save_model(
    booster: xgb.Booster,
    settings: Settings,
    train: pa.Table,
    out: Path,
    *,
    best_iteration: int,
    training_data_hash: str,
    days: list[str],
) -> dict[str, Any]:
    """Write model.ubj (UBJSON, never pickle) and the manifest the registry checks it by."""
    spec = settings.dataset
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / MODEL_FILE
    booster.save_model(model_path)
    manifest = {
        "sha256": file_sha256(model_path),
        "dataset": spec.name,
        "task": spec.target.task,
        "target": spec.target.name,
        "features": spec.feature_names,
        "feature_dtypes": {f.name: f.dtype for f in spec.features},
        "xgboost_version": xgb.__version__,
        "params": effective_params(settings),
        "num_boost_round": settings.training.num_boost_round,
        "best_iteration": best_iteration,
        "training_data_hash": training_data_hash,
        "train_rows": train.num_rows,
        "reference_stats": reference_statistics(train, spec),
        "created_from": {"days": days},
    }
    _write_json(out / MANIFEST_FILE, manifest)
    return manifest


# --- evaluate ---------------------------------------------------------------------------------


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties."""
    _, inverse, counts = np.unique(p, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    ranks = (upper - (counts - 1) / 2)[inverse]  # average 1-based rank per tie group
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        raise ValueError("AUC is undefined: the holdout has only one class")
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def metrics_for(spec: DatasetSpec, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """Holdout metrics for the spec's task; `primary_value` is always higher-is-better."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if spec.target.task == "binary":
        q = np.clip(p, 1e-15, 1 - 1e-15)
        auc = _auc(y, p)
        return {
            "auc": auc,
            "logloss": float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))),
            "accuracy": float(np.mean((p >= 0.5) == (y == 1))),
            "positive_rate": float(y.mean()),
            "predicted_positive_rate": float(np.mean(p >= 0.5)),
            "rows": int(y.size),
            "primary": "auc",
            "primary_value": auc,
        }
    err = p - y
    rmse = float(np.sqrt(np.mean(err**2)))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {
        "rmse": rmse,
        "mae": float(np.mean(np.abs(err))),
        "r2": 1 - float(np.sum(err**2)) / ss_tot if ss_tot else 0.0,
        "rows": int(y.size),
        "primary": "neg_rmse",
        "primary_value": -rmse,
    }


def evaluate_model(
    settings: Settings, model_path: str | Path, holdout_path: str | Path
) -> dict[str, Any]:
    """DVC stage `evaluate`: the model's metrics on the holdout split."""
    spec = settings.dataset
    booster = xgb.Booster(model_file=str(model_path))
    holdout = pq.read_table(holdout_path)
    predictions = booster.predict(_dmatrix(holdout, spec, with_label=False))
    return metrics_for(spec, _target(holdout, spec), predictions)


def passes_gate(
    gate: GateConfig, challenger: dict[str, Any], champion: dict[str, Any] | None
) -> tuple[bool, str]:
    """Promote only above the absolute floor and not more than max_regression below the champion."""
    name, value = challenger["primary"], challenger["primary_value"]
    if gate.min_metric is not None and value < gate.min_metric:
        return False, f"{name} {value:.6f} is below the floor {gate.min_metric:.6f}"
    if champion is None:
        floor = "no floor" if gate.min_metric is None else f"the floor {gate.min_metric:.6f}"
        return True, f"{name} {value:.6f} clears {floor}; no champion"
    bar = champion["primary_value"] - gate.max_regression
    ok = value >= bar - 1e-12  # float slack: exactly max_regression worse still passes
    champ, verdict = champion["primary_value"], "clears" if ok else "misses"
    return ok, (
        f"{name} {value:.6f} {verdict} champion {champ:.6f} "
        f"- max_regression {gate.max_regression:.6f} = {bar:.6f}"
    )
