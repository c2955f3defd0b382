"""DVC stages prepare/train/evaluate, drift reference statistics, metrics and the promotion gate."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa
import xgboost as xgb

from batchpred import config, db, rules, schema, storage, verdicts
from batchpred.config import DatasetSpec, GateConfig, Settings
from batchpred.schema import Contract, encode_column, feature_matrix

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
    """The lake holds too few valid, labelled partitions to build a training set."""


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


def _dmatrix(table: pa.Table, spec: DatasetSpec, contract: Contract) -> xgb.DMatrix:
    matrix, _ = feature_matrix(table, contract)
    return xgb.DMatrix(
        matrix,
        label=_target(table, spec),
        feature_names=contract.feature_names,
        feature_types=contract.feature_types,
        enable_categorical=True,
    )


# --- prepare ----------------------------------------------------------------------------------


def _labelled(settings: Settings, day: date) -> bool:
    """Whether the day has labels: in its own partition, or in the late-labels zone."""
    manifest = storage.read_manifest(settings.lake.raw, day) or {}
    if manifest.get("label_rows", 0) > 0:
        return True
    return bool(storage.partition_files(settings.lake.labels, day))


def select_days(
    settings: Settings, engine: sa.Engine | None = None
) -> tuple[list[date], list[dict[str, str]]]:
    """The newest `window_days` valid raw partitions that have labels, up to training.until
    (oldest first), and the partitions passed over on the way with the reason."""
    cfg, root, spec = settings.training, settings.lake.raw, settings.dataset
    engine = engine or db.create_engine(config.database_url())
    days: list[date] = []
    excluded: list[dict[str, str]] = []
    for day in reversed(storage.list_partitions(root)):
        if len(days) == cfg.window_days:
            break
        if cfg.until is not None and day > cfg.until:
            continue
        status = verdicts.partition_status(engine, spec, settings.validation, root, day).status
        reason = {"invalid": "validation failed", "unvalidated": "not validated"}.get(status)
        if reason is None and not _labelled(settings, day):
            reason = "no labels yet"
        if reason:
            excluded.append({"day": day.isoformat(), "reason": reason})
        else:
            days.append(day)
    needed = 1 if cfg.split == "rows" else cfg.valid_days + cfg.holdout_days + 1
    if len(days) < needed:
        raise TrainingDataError(
            f"training needs at least {needed} valid, labelled partitions in {root}"
            + (f" up to {cfg.until}" if cfg.until else "")
            + f", found {len(days)}; passed over: {excluded or 'none'}"
        )
    return days[::-1], excluded[::-1]


def _with_labels(settings: Settings, day: date, table: pa.Table) -> pa.Table:
    """The day's rows with their label: from the late-labels zone where it has one for the
    entity, else from the partition itself."""
    spec, name = settings.dataset, settings.dataset.target.name
    if not storage.partition_files(settings.lake.labels, day):
        return table
    late = storage.read_partition(settings.lake.labels, day, columns=[spec.entity_id, name])
    late = late.rename_columns([spec.entity_id, "__late_label"])
    joined = table.join(late, spec.entity_id, join_type="left outer", use_threads=False)
    label = pc.cast(joined.column("__late_label"), pa.string())
    if name in table.column_names:  # as text, so classes, numbers and bools coalesce alike
        label = pc.coalesce(label, pc.cast(joined.column(name), pa.string()))
        joined = joined.drop_columns([name])
    return joined.drop_columns(["__late_label"]).append_column(name, label)


def labels_hash(settings: Settings, day: date) -> str | None:
    """Identifies the labels known for a day, from manifests only (nothing is read): the raw
    partition's and the late labels' content hashes. None while the day has no labels."""
    if not _labelled(settings, day):
        return None
    hashes = [
        (storage.read_manifest(root, day) or {}).get("content_hash") or ""
        for root in (settings.lake.raw, settings.lake.labels)
    ]
    return ":".join(hashes)


def day_labels(settings: Settings, day: date) -> tuple[pa.Array, np.ndarray] | None:
    """The labels known for a day: entity ids as text and labels as float (binary classes as
    0/1, NaN where missing). None while the day has no labels at all."""
    if not _labelled(settings, day):
        return None
    spec = settings.dataset
    raw = storage.read_partition(settings.lake.raw, day)
    keep = [c for c in (spec.entity_id, spec.target.name) if c in raw.column_names]
    table = _with_labels(settings, day, raw.select(keep))
    if spec.target.name not in table.column_names:
        return None
    label = rules.label_codes(spec, table.column(spec.target.name))
    return table.column(spec.entity_id).cast(pa.string()), label


def _read_day(settings: Settings, day: date) -> tuple[pa.Table, dict[str, int]]:
    """One valid partition as training rows: rows breaking a rule (the few a reject share
    allows) and rows without a label are left out and counted; features cast to their spec
    types, the label as float (binary classes mapped to 0/1)."""
    spec = settings.dataset
    table = _with_labels(settings, day, storage.read_partition(settings.lake.raw, day))
    ok, _ = rules.evaluate(rules.compile_rules(spec, settings.validation), table, {})
    rows = table.num_rows
    if spec.target.name in table.column_names:
        label = rules.label_codes(spec, table.column(spec.target.name))
    else:
        label = np.full(rows, np.nan)
    unique = next(r for r in rules.compile_rules(spec, settings.validation) if r.kind == "unique")
    ok &= ~rules.bad_rows(unique, table.column(spec.entity_id))
    labelled = ~np.isnan(label)
    keep = ok & labelled
    counts = {"rows": rows, "rejected": int((~ok).sum()), "unlabelled": int((ok & ~labelled).sum())}
    table = table.filter(pa.array(keep))
    target = schema.arrow_schema(spec, with_target=False)
    out = (
        table.select(target.names)
        .cast(target)
        .append_column(
            pa.field(spec.target.name, pa.float64()), pa.array(label[keep], pa.float64())
        )
    )
    return out.sort_by([(spec.event_date, "ascending"), (spec.entity_id, "ascending")]), counts


def _row_split(table: pa.Table, spec: DatasetSpec, settings: Settings) -> dict[str, pa.Table]:
    """A stable split by a hash of the entity id: the same entity lands in the same split."""
    cfg = settings.training
    ids = table.column(spec.entity_id).cast(pa.string()).to_numpy(zero_copy_only=False)
    u = pd.util.hash_array(ids.astype(object)).astype(np.float64) / 2.0**64
    holdout = u < cfg.holdout_fraction
    valid = ~holdout & (u < cfg.holdout_fraction + cfg.valid_fraction)
    return {
        "train": table.filter(pa.array(~holdout & ~valid)),
        "valid": table.filter(pa.array(valid)),
        "holdout": table.filter(pa.array(holdout)),
    }


def prepare_training_set(
    settings: Settings, out_dir: str | Path, engine: sa.Engine | None = None
) -> dict[str, Any]:
    """DVC stage `prepare`: window of valid, labelled partitions -> train/valid/holdout
    Parquet (split by day, or by entity for snapshots), with row counts per day."""
    cfg, spec = settings.training, settings.dataset
    days, excluded = select_days(settings, engine)
    tables, counts = {}, {}
    for day in days:
        tables[day], counts[day.isoformat()] = _read_day(settings, day)
    if cfg.split == "rows":
        groups = {"train": days, "valid": days, "holdout": days}
        splits = _row_split(pa.concat_tables(tables.values()), spec, settings)
    else:
        n_fit = len(days) - cfg.valid_days - cfg.holdout_days
        groups = {
            "train": days[:n_fit],
            "valid": days[n_fit : n_fit + cfg.valid_days],
            "holdout": days[n_fit + cfg.valid_days :],
        }
        splits = {k: pa.concat_tables([tables[d] for d in v]) for k, v in groups.items()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    rows = {}
    for split in SPLITS:
        table = splits[split].combine_chunks()
        if table.num_rows == 0:
            raise TrainingDataError(f"training split {split!r} has no labelled rows: {counts}")
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
        "rows_by_day": counts,
        "unlabelled_rows": sum(c["unlabelled"] for c in counts.values()),
        "rejected_rows": sum(c["rejected"] for c in counts.values()),
        "data_hash": digest.hexdigest(),
    }
    _write_json(out / PREPARE_FILE, summary)
    return summary


# --- reference statistics for drift -----------------------------------------------------------


def reference_statistics(table: pa.Table, contract: Contract) -> dict[str, dict[str, Any]]:
    """Per feature, on its encoded (float) values: numeric -> decile cut points `edges`
    (unique, finite; bins are open-ended) with the share of non-null rows per bin, mean, std;
    category/bool -> the share of non-null rows per code in `values`. Both carry null_rate."""
    stats: dict[str, dict[str, Any]] = {}
    for feature in contract.features:
        values = encode_column(feature, table.column(feature.name))[0].astype(np.float64)
        present = values[np.isfinite(values)]
        entry: dict[str, Any] = {"null_rate": 1 - present.size / max(values.size, 1)}
        if feature.dtype in ("category", "bool"):
            n_codes = len(feature.vocabulary or ()) if feature.dtype == "category" else 2
            entry["kind"] = "categorical"
            entry["values"] = list(range(n_codes))
        else:
            entry |= _deciles(present)
        entry["fractions"] = bin_fractions(values, entry)
        stats[feature.name] = entry
    return stats


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
    contract = schema.build_contract(spec, train)
    booster = xgb.train(
        params,
        _dmatrix(train, spec, contract),
        num_boost_round=cfg.num_boost_round,
        evals=[(_dmatrix(valid, spec, contract), "valid")],
        early_stopping_rounds=cfg.early_stopping_rounds,
        verbose_eval=False,
    )
    best = booster.best_iteration
    booster = booster[: best + 1]  # keep only the best model's trees
    return save_model(
        booster,
        settings,
        contract,
        train,
        out,
        best_iteration=best,
        training_data_hash=prepared["data_hash"],
        days=prepared["days"],
    )


def save_model(
    booster: xgb.Booster,
    settings: Settings,
    contract: Contract,
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
        "features": contract.feature_names,
        "feature_dtypes": {f.name: f.dtype for f in contract.features},
        "contract": contract.to_dict(),
        "xgboost_version": xgb.__version__,
        "params": effective_params(settings),
        "num_boost_round": settings.training.num_boost_round,
        "best_iteration": best_iteration,
        "training_data_hash": training_data_hash,
        "train_rows": train.num_rows,
        "reference_stats": reference_statistics(train, contract),
        # the score distribution on the training split (manifests before it lack the key:
        # drift is then measured on the features only)
        "score_reference": score_statistics(
            booster.inplace_predict(feature_matrix(train, contract)[0], validate_features=False)
        ),
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


def metrics_for(
    spec: DatasetSpec, y_true: np.ndarray, y_pred: np.ndarray, threshold: float = 0.5
) -> dict[str, Any]:
    """Metrics for the spec's task (labels as 0/1 or values; rows without one are ignored);
    `primary_value` is always higher-is-better."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    labelled = ~np.isnan(y)
    y, p = y[labelled], p[labelled]
    if spec.target.task == "binary":
        q = np.clip(p, 1e-15, 1 - 1e-15)
        auc = _auc(y, p)
        return {
            "auc": auc,
            "logloss": float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))),
            "accuracy": float(np.mean((p >= threshold) == (y == 1))),
            "positive_rate": float(y.mean()),
            "predicted_positive_rate": float(np.mean(p >= threshold)),
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
    manifest = json.loads((Path(model_path).parent / MANIFEST_FILE).read_text())
    contract = Contract.from_dict(manifest["contract"])
    holdout = pq.read_table(holdout_path)
    matrix, _ = feature_matrix(holdout, contract)
    predictions = booster.inplace_predict(matrix, validate_features=False)
    return metrics_for(spec, _target(holdout, spec), predictions, contract.threshold)


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
