"""DVC stages prepare/train (drift reference bins: stats; metrics and the gate: evaluation;
the prior and linear baselines: baselines).

train writes one version's model directory: model.ubj, the deployed model, refit on every
labelled row of the window (train + valid + holdout) with the evaluated model's number of
rounds (training.refit; without it, the evaluated model itself); evaluated.ubj, the model the
gate judges, fit on train and early-stopped on valid (its params optionally searched,
training.tune); linear.ubj, the linear baseline; and manifest.json, which says which is
which and which days the evaluated model saw.

Memory is bounded by the partition and the batch, never the window: prepare streams each day
in record batches and writes the splits as it goes (a day is sorted through spill files on
disk, see _sorted_day); train feeds XGBoost a QuantileDMatrix from those batches for each fit,
one fit's matrices at a time (XGBoost keeps its own quantised copy, about one byte a value,
which training.max_rows caps), and the linear baseline at most baselines.LINEAR_MAX_ROWS
rows as plain matrices; the stage evaluate (evaluation.evaluate_model) predicts a batch at a
time."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa
import xgboost as xgb
import yaml

from batchpred import baselines, config, db, labels, rules, schema, stats, storage, verdicts
from batchpred.config import DatasetSpec, Settings
from batchpred.schema import Contract, encode_column, feature_matrix

# dvc.yaml's `vars`: the datasets its stages are made for, written from configs/datasets/ by
# write_dvc_datasets before every DVC command batchpred runs (and by `batchpred dataset list`)
DVC_DATASETS = Path("data/train/datasets.yaml")
SPLITS = ("train", "valid", "holdout")
MODEL_FILE = "model.ubj"  # the deployed model
EVALUATED_FILE = "evaluated.ubj"  # the model the gate judges, when the deployed one is a refit
LINEAR_FILE = "linear.ubj"  # the linear baseline
MANIFEST_FILE = "manifest.json"
PREPARE_FILE = "prepare.json"
# rows per record batch read, per sorted chunk of a day and per row group of a prepared split
BATCH_ROWS = storage.ROW_GROUP_ROWS
_RANK = "__rank"  # a prepared row's place in its day's sorted order, in spill files only
log = logging.getLogger(__name__)
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


def _target(table: pa.Table | pa.RecordBatch, spec: DatasetSpec) -> np.ndarray:
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


@dataclass(frozen=True)
class Window:
    """What training reads: the `window_days` calendar days `first`..`last`, where `last` is
    the newest partition that has labels (up to training.until). The window keeps its span:
    `days` are its valid, labelled partitions (oldest first), `missing` every other day of the
    span with the reason ("no partition" where the lake has none), trained without and never
    replaced by an older day. `excluded`: the listed partitions passed over (in the span, or
    after it while their labels have not arrived); `late_labels`: each day of the span whose
    late labels were checked against its rows (labels.check_late_labels)."""

    first: date
    last: date
    days: tuple[date, ...]
    missing: tuple[dict[str, str], ...]
    excluded: tuple[dict[str, str], ...]
    late_labels: tuple[labels.LateLabels, ...]

    @property
    def span_days(self) -> int:
        return (self.last - self.first).days + 1


def _passed_over(settings: Settings, engine: sa.Engine, day: date) -> str | None:
    """Why a listed partition is not trained on (None: it is valid and labelled)."""
    spec, root = settings.dataset, settings.lake.raw
    status = verdicts.partition_status(engine, spec, settings.validation, root, day).status
    reason = {"invalid": "validation failed", "unvalidated": "not validated"}.get(status)
    if reason is None and not labels.is_labelled(settings, day):
        reason = "no labels yet"
    return reason


def select_window(settings: Settings, engine: sa.Engine | None = None) -> Window:
    """The training window (see Window). Reads listings, manifests, validation verdicts and,
    for days with late labels, the entity id column of the labels and of the day's partition:
    a day whose late labels fail (labels.LateLabels) is missing, and logged in one line.
    TrainingDataError when the span holds too few days to split."""
    cfg, root = settings.training, settings.lake.raw
    engine = engine or db.create_engine(config.database_url())
    listed = [d for d in storage.list_partitions(root) if cfg.until is None or d <= cfg.until]
    waiting: list[dict[str, str]] = []  # after the window: labels not arrived yet
    last = None
    for day in reversed(listed):
        if labels.is_labelled(settings, day):
            last = day
            break
        waiting.insert(
            0, {"day": day.isoformat(), "reason": _passed_over(settings, engine, day) or ""}
        )
    days: list[date] = []
    missing: list[dict[str, str]] = []
    excluded: list[dict[str, str]] = []
    checked: list[labels.LateLabels] = []
    first = last - timedelta(days=cfg.window_days - 1) if last else date.min
    present = set(listed)
    for day in (first + timedelta(days=i) for i in range(cfg.window_days)) if last else ():
        reason = _passed_over(settings, engine, day) if day in present else "no partition"
        late = labels.check_late_labels(settings, day) if reason is None else None
        if late is not None:
            checked.append(late)
            if late.failed:
                reason = late.describe()
                log.warning("%s: the day is left out of training", reason)
        if reason is None:
            days.append(day)
            continue
        missing.append({"day": day.isoformat(), "reason": reason})
        if day in present:
            excluded.append(missing[-1])
    needed = 1 if cfg.split == "rows" else cfg.valid_days + cfg.holdout_days + 1
    if last is None or len(days) < needed:
        raise TrainingDataError(
            f"training needs at least {needed} valid, labelled partitions in {root}"
            + (f" up to {cfg.until}" if cfg.until else "")
            + f", found {len(days)}; passed over: {describe_missing([*missing, *waiting])}"
        )
    return Window(
        first, last, tuple(days), tuple(missing), tuple(excluded + waiting), tuple(checked)
    )


def describe_missing(entries: Sequence[Mapping[str, str]]) -> str:
    """`2026-11-03 (no partition), 2026-11-05..2026-11-07 (validation failed)`: days with their
    reason, oldest first, consecutive days with the same reason as one range; `none`."""
    runs: list[tuple[date, date, str]] = []
    for entry in sorted(entries, key=lambda e: e["day"]):
        day, reason = date.fromisoformat(entry["day"]), entry["reason"]
        if runs and runs[-1][2] == reason and runs[-1][1] + timedelta(days=1) == day:
            runs[-1] = (runs[-1][0], day, reason)
        else:
            runs.append((day, day, reason))
    return (
        ", ".join(f"{a}{'' if a == b else f'..{b}'} ({reason})" for a, b, reason in runs) or "none"
    )


def training_data(prepared: Mapping[str, Any], manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What a model was trained on, for the nightly summary and the model report, from
    prepare.json and the model's manifest: the days (of the window's span, with the missing
    ones), rows, rows and days left out, late labels matching no row, and any sample."""
    data: dict[str, Any] = {
        "days": describe_days(prepared["days"], prepared.get("missing_days")),
        "rows": prepared["rows"],
        "unlabelled_rows_left_out": prepared.get("unlabelled_rows", 0),
        "rejected_rows_left_out": prepared.get("rejected_rows", 0),
        "days_passed_over": prepared["excluded"],
        "late_labels_matching_no_row": describe_unmatched(prepared.get("late_labels", {})),
    }
    if sample := manifest.get("train_sample"):  # never a silent sample: say it with the rows
        said = f"{_describe_sample(sample)} (training.max_rows {sample['max_rows']:,})"
        data["trained_on_a_sample"] = said
    return data


def describe_unmatched(late_labels: Mapping[str, Mapping[str, Any]]) -> str:
    """`2026-11-05 9,800 of 10,000 (failed: left out), 2026-11-06 3 of 10,000`: the days of
    prepare.json's `late_labels` with late labels whose entity id matches no row; `none`."""
    return (
        ", ".join(
            f"{day} {c['unmatched']:,} of {c['rows']:,}"
            + (" (failed: left out)" if c["failed"] else "")
            for day, c in sorted(late_labels.items())
            if c["unmatched"]
        )
        or "none"
    )


def describe_days(days: Sequence[str], missing: Sequence[Mapping[str, str]] | None) -> str:
    """Which days a model trained on, from prepare.json or a manifest's `created_from`:
    `27 of 28 days, 2026-10-07..2026-11-03; missing 2026-11-03 (no partition)`. `missing`
    None (a manifest from before missing days were recorded): `28 day(s), first..last`."""
    if not days:
        return "no days"
    if missing is None:
        return f"{len(days)} day(s), {min(days)}..{max(days)}"
    span = sorted([*days, *(m["day"] for m in missing)])
    text = f"{len(days)} of {len(span)} days, {span[0]}..{span[-1]}"
    return f"{text}; missing {describe_missing(missing)}" if missing else text


def _day_batches(settings: Settings, day: date, batch_rows: int) -> Iterator[pa.Table]:
    """The day's raw rows in file order, a record batch at a time, with their label: the late
    label where lake.labels has one for the entity, else the partition's own (as
    labels.with_labels, the first late label of an entity if it has several)."""
    spec, name = settings.dataset, settings.dataset.target.name
    late = labels.late_labels(settings, day)
    urls = storage.partition_files(settings.lake.raw, day)
    if not urls:
        raise FileNotFoundError(
            f"no data files in partition {storage.partition_path(settings.lake.raw, day)}"
        )
    for batch in storage.iter_files(urls, batch_rows, storage.files_schema(urls)):
        table = pa.Table.from_batches([batch])
        if late is None:
            yield table
            continue
        ids = table.column(spec.entity_id)
        at = pc.index_in(ids, value_set=late[0].cast(ids.type))
        label = late[1].take(at)
        if name in table.column_names:  # as text, so classes, numbers and bools coalesce alike
            label = pc.coalesce(label, pc.cast(table.column(name), pa.string()))
            table = table.drop_columns([name])
        yield table.append_column(name, label)


@dataclass
class _DayPlan:
    """What the first pass over a day decided: the rows kept (valid and labelled), their
    labels, and each kept row's place in the day sorted by (event date, entity id)."""

    keep: np.ndarray  # per raw row
    labels: np.ndarray  # per raw row, float64 (NaN: none)
    rank: np.ndarray  # per raw row: place among the kept rows sorted, -1 if not kept
    counts: dict[str, int]


def _plan_day(settings: Settings, day: date, batch_rows: int) -> _DayPlan:
    """Rows breaking a rule (the few a reject share allows) and rows without a label are left
    out and counted. Holds a few bytes a row (ids, dates, masks), never the rows."""
    spec = settings.dataset
    checks = rules.compile_rules(spec, settings.validation, day=day)
    unique = next(r for r in checks if r.kind == "unique")
    oks, labels, ids, dates = [], [], [], []
    for table in _day_batches(settings, day, batch_rows):
        ok, _ = rules.evaluate(checks, table, {})  # every rule but unique, which spans batches
        oks.append(ok)
        if spec.target.name in table.column_names:
            labels.append(rules.label_codes(spec, table.column(spec.target.name)))
        else:
            labels.append(np.full(table.num_rows, np.nan))
        ids += table.column(spec.entity_id).chunks
        dates += table.column(spec.event_date).chunks
    ok = np.concatenate(oks) if oks else np.zeros(0, dtype=bool)
    label = np.concatenate(labels) if labels else np.zeros(0)
    if ids:
        ok &= ~rules.bad_rows(unique, pa.chunked_array(ids))
    labelled = ~np.isnan(label)
    keep = ok & labelled
    counts = {
        "rows": int(ok.size),
        "rejected": int((~ok).sum()),
        "unlabelled": int((ok & ~labelled).sum()),
    }
    rank = np.full(ok.size, -1, dtype=np.int64)
    if keep.any():
        mask = pa.array(keep)
        keys = pa.table(
            {
                "date": pa.chunked_array(dates).filter(mask).cast(pa.date32()),
                "id": pa.chunked_array(ids).filter(mask).cast(schema.entity_id_type(spec)),
            }
        )
        order = pc.sort_indices(keys, sort_keys=[("date", "ascending"), ("id", "ascending")])
        ranks = np.empty(len(keys), dtype=np.int64)
        ranks[order.to_numpy()] = np.arange(len(keys))
        rank[keep] = ranks
    return _DayPlan(keep, label, rank, counts)


def _split_schema(spec: DatasetSpec) -> pa.Schema:
    """A prepared split: the spec's columns in their types, the label as float."""
    return schema.arrow_schema(spec, with_target=False).append(
        pa.field(spec.target.name, pa.float64())
    )


def _sorted_day(
    settings: Settings, day: date, spill: Path, batch_rows: int
) -> tuple[Iterator[pa.Table], dict[str, int]]:
    """The day's training rows sorted by (event date, entity id), in tables of `batch_rows`
    rows, features cast to their spec types, the label as float (binary classes as 0/1); and
    the day's counts. A second pass over the day writes each kept row to the spill file of
    its chunk of the sorted order (rank // batch_rows); each chunk is then read back and
    sorted alone: a batch and a chunk in memory, the day once more on disk."""
    spec = settings.dataset
    plan = _plan_day(settings, day, batch_rows)
    kept = int(plan.keep.sum())
    target = schema.arrow_schema(spec, with_target=False)
    label_field = pa.field(spec.target.name, pa.float64())
    paths = [spill / f"{day.isoformat()}-{i}.arrow" for i in range(-(-kept // batch_rows))]
    writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
    try:
        offset = 0
        for table in _day_batches(settings, day, batch_rows):
            rows = slice(offset, offset + table.num_rows)
            offset += table.num_rows
            keep = plan.keep[rows]
            if not keep.any():
                continue
            rank = plan.rank[rows][keep]
            out = (
                table.filter(pa.array(keep))
                .select(target.names)
                .cast(target)
                .append_column(label_field, pa.array(plan.labels[rows][keep], pa.float64()))
                .append_column(_RANK, pa.array(rank))
            )
            chunk = rank // batch_rows
            for i in np.unique(chunk):
                part = out.filter(pa.array(chunk == i))
                if i not in writers:
                    writers[i] = pa.ipc.new_stream(str(paths[i]), part.schema)
                writers[i].write_table(part)
    finally:
        for writer in writers.values():
            writer.close()

    def chunks() -> Iterator[pa.Table]:
        for path in paths:
            with pa.OSFile(str(path)) as source:
                part = pa.ipc.open_stream(source).read_all()
            order = pc.sort_indices(part.column(_RANK))
            yield part.take(order).drop_columns([_RANK])
            path.unlink()

    return chunks(), plan.counts


class _SplitWriter:
    """One prepared split, written as its rows arrive, in row groups of exactly BATCH_ROWS
    rows (the last one shorter) with fixed codec and settings and no pandas or time metadata:
    byte-identical for the same rows, however they were batched."""

    def __init__(self, path: Path, spec: DatasetSpec) -> None:
        self.path = path
        self.schema = _split_schema(spec)
        self.writer = pq.ParquetWriter(
            path,
            self.schema,
            compression="zstd",
            compression_level=3,
            use_dictionary=True,
            write_statistics=True,
        )
        self.pending: list[pa.Table] = []
        self.held = 0
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self.pending.append(table)
            self.held += table.num_rows
        while self.held >= BATCH_ROWS:
            self._flush(BATCH_ROWS)

    def _flush(self, n: int) -> None:
        table = pa.concat_tables(self.pending)
        group = table.slice(0, n).combine_chunks().cast(self.schema)
        self.writer.write_table(group, row_group_size=n)
        rest = table.slice(n)
        self.pending, self.held = ([rest] if rest.num_rows else []), rest.num_rows
        self.rows += n

    def close(self) -> None:
        if self.held:
            self._flush(self.held)
        self.writer.close()


def _row_split(table: pa.Table, spec: DatasetSpec, settings: Settings) -> dict[str, pa.Table]:
    """A stable split by a hash of the entity id (schema.entity_unit): the same entity lands
    in the same split."""
    cfg = settings.training
    u = schema.entity_unit(table.column(spec.entity_id))
    holdout = u < cfg.holdout_fraction
    valid = ~holdout & (u < cfg.holdout_fraction + cfg.valid_fraction)
    return {
        "train": table.filter(pa.array(~holdout & ~valid)),
        "valid": table.filter(pa.array(valid)),
        "holdout": table.filter(pa.array(holdout)),
    }


def prepare_training_set(
    settings: Settings,
    out_dir: str | Path,
    engine: sa.Engine | None = None,
    *,
    batch_rows: int = BATCH_ROWS,
) -> dict[str, Any]:
    """DVC stage `prepare`: window of valid, labelled partitions -> train/valid/holdout
    Parquet (split by day, or by entity for snapshots), with row counts per day, the window's
    missing days and each day's late labels matching no row. Missing days are a WARNING
    (training.missing_days warn) or refused in one line naming them (fail). Streamed: one day
    at a time, in batches of `batch_rows` rows (see _sorted_day); the files do not depend on
    `batch_rows`."""
    cfg, spec = settings.training, settings.dataset
    window = select_window(settings, engine)
    days, excluded = list(window.days), list(window.excluded)
    if window.missing:
        gap = (
            f"training window {window.first}..{window.last} of {spec.name} misses "
            f"{len(window.missing)} of {window.span_days} days: {describe_missing(window.missing)}"
        )
        if cfg.missing_days == "fail":
            raise TrainingDataError(f"{gap} (training.missing_days: fail)")
        log.warning("%s; training on the other %d (training.missing_days: warn)", gap, len(days))
    if cfg.split == "rows":
        groups = {"train": days, "valid": days, "holdout": days}
    else:
        n_fit = len(days) - cfg.valid_days - cfg.holdout_days
        groups = {
            "train": days[:n_fit],
            "valid": days[n_fit : n_fit + cfg.valid_days],
            "holdout": days[n_fit + cfg.valid_days :],
        }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    writers = {split: _SplitWriter(out / f"{split}.parquet", spec) for split in SPLITS}
    counts = {}
    try:
        with tempfile.TemporaryDirectory(dir=out, prefix=".prepare-") as spill:
            for day in days:
                chunks, counts[day.isoformat()] = _sorted_day(
                    settings, day, Path(spill), batch_rows
                )
                for chunk in chunks:
                    if cfg.split == "rows":
                        for split, part in _row_split(chunk, spec, settings).items():
                            writers[split].write(part)
                    else:
                        split = next(k for k, v in groups.items() if day in v)
                        writers[split].write(chunk)
    finally:
        for writer in writers.values():
            writer.close()
    digest = hashlib.sha256()
    rows = {}
    for split in SPLITS:
        if writers[split].rows == 0:
            raise TrainingDataError(f"training split {split!r} has no labelled rows: {counts}")
        with open(writers[split].path, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
        rows[split] = writers[split].rows
    summary = {
        "dataset": spec.name,
        "days": [d.isoformat() for d in days],
        "splits": {k: [d.isoformat() for d in v] for k, v in groups.items()},
        "excluded": excluded,
        "window": {
            "first": window.first.isoformat(),
            "last": window.last.isoformat(),
            "days": window.span_days,
        },
        "missing_days": list(window.missing),
        "late_labels": {late.day.isoformat(): late.to_dict() for late in window.late_labels},
        "rows": rows,
        "rows_by_day": counts,
        "unlabelled_rows": sum(c["unlabelled"] for c in counts.values()),
        "rejected_rows": sum(c["rejected"] for c in counts.values()),
        "data_hash": digest.hexdigest(),
    }
    _write_json(out / PREPARE_FILE, summary)
    return summary


# --- train ------------------------------------------------------------------------------------


def effective_params(settings: Settings) -> dict[str, Any]:
    """Task defaults, overridden by training.params, then seed and nthread from the config."""
    cfg = settings.training
    params = {**_DEFAULTS[settings.dataset.target.task], **cfg.params}
    return {**params, "seed": cfg.seed, "nthread": cfg.nthread}


@dataclass(frozen=True)
class _Rows:
    """The rows of a prepared split, read a record batch at a time: a Parquet file or a table,
    optionally only the rows a `keep` mask (one flag a row) selects."""

    source: Path | pa.Table
    keep: np.ndarray | None = None

    @property
    def num_rows(self) -> int:
        if self.keep is not None:
            return int(self.keep.sum())
        if isinstance(self.source, pa.Table):
            return self.source.num_rows
        return int(pq.ParquetFile(self.source).metadata.num_rows)

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        if isinstance(self.source, pa.Table):
            table = self.source.select(columns) if columns else self.source
            batches: Iterator[pa.RecordBatch] = iter(table.to_batches(max_chunksize=BATCH_ROWS))
        else:
            batches = storage.iter_file_batches(str(self.source), BATCH_ROWS, columns)
        offset = 0
        for batch in batches:
            n = batch.num_rows
            if self.keep is not None:
                batch = batch.filter(pa.array(self.keep[offset : offset + n]))
            offset += n
            if batch.num_rows:
                yield batch


@dataclass(frozen=True)
class _Chain:
    """Several splits' rows read one after another (the refit's train, valid and holdout)."""

    parts: tuple[_Rows, ...]

    @property
    def num_rows(self) -> int:
        return sum(part.num_rows for part in self.parts)

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        for part in self.parts:
            yield from part.batches(columns)


_Source = _Rows | _Chain


class _Batches(xgb.DataIter):
    """A split's feature matrix and label for XGBoost, a record batch at a time (the matrix is
    built from the contract as scoring builds it)."""

    def __init__(self, rows: _Source, spec: DatasetSpec, contract: Contract) -> None:
        self.rows, self.spec, self.contract = rows, spec, contract
        self.it: Iterator[pa.RecordBatch] | None = None
        super().__init__(release_data=True)

    def reset(self) -> None:
        self.it = None

    def next(self, input_data: Callable[..., None]) -> bool:
        if self.it is None:
            self.it = self.rows.batches()
        batch = next(self.it, None)
        if batch is None:
            return False
        matrix, _ = feature_matrix(batch, self.contract)
        input_data(
            data=matrix,
            label=_target(batch, self.spec),
            feature_names=self.contract.feature_names,
            feature_types=self.contract.feature_types,
        )
        return True


def _quantile_dmatrix(
    rows: _Source, settings: Settings, contract: Contract, ref: xgb.QuantileDMatrix | None = None
) -> xgb.QuantileDMatrix:
    """XGBoost's quantised matrix, built from record batches (never one frame of the split);
    `ref`: the training matrix whose bins the valid split reuses."""
    return xgb.QuantileDMatrix(
        _Batches(rows, settings.dataset, contract),
        ref=ref,
        max_bin=effective_params(settings).get("max_bin"),
        nthread=settings.training.nthread,
        enable_categorical=True,
    )


def _row_hashes(batch: pa.RecordBatch, spec: DatasetSpec) -> np.ndarray:
    """A 64-bit hash of each row's (entity id, event date): the order of the sample."""
    ids = batch.column(spec.entity_id)
    if not pa.types.is_integer(ids.type):
        ids = pc.cast(ids, pa.string())
    days = pc.cast(pc.cast(batch.column(spec.event_date), pa.date32()), pa.int32())
    h_ids = pd.util.hash_array(ids.to_numpy(zero_copy_only=False))
    h_days = pd.util.hash_array(days.to_numpy(zero_copy_only=False))
    return h_ids ^ (h_days * np.uint64(0x9E3779B97F4A7C15))


def _sample(rows: _Rows, spec: DatasetSpec, max_rows: int) -> _Rows:
    """The `max_rows` rows with the smallest hashes of (entity id, event date): the same rows
    for the same data, spread over every day of the split. Holds 8 bytes a row to pick them."""
    parts = [_row_hashes(b, spec) for b in rows.batches([spec.entity_id, spec.event_date])]
    hashes = np.concatenate(parts)
    keep = np.zeros(hashes.size, dtype=bool)
    keep[np.argpartition(hashes, max_rows - 1)[:max_rows]] = True
    return _Rows(rows.source, keep)


_SPLIT_WORDS = {"train": "training", "valid": "early-stopping", "holdout": "holdout"}


def _words(parts: Sequence[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    return f"{', '.join(parts[:-1])} and {parts[-1]}" if len(parts) > 1 else "".join(parts)


def _sampled(
    splits: Mapping[str, _Rows], max_rows: int | None, spec: DatasetSpec
) -> tuple[dict[str, _Rows], dict[str, int] | None]:
    """The splits (whole, never sampled before) cut to at most `max_rows` rows together, each
    in proportion to its size (at least a row; the first split takes what the others leave)
    by _sample; and how: {max_rows, split_rows (the first split's rows), <split>_kept, and
    <split>_rows of the others}, None when they fit."""
    held = sum(rows.num_rows for rows in splits.values())
    if max_rows is None or held <= max_rows:
        return dict(splits), None
    first, *rest = splits
    kept = {
        name: min(splits[name].num_rows, max(1, round(max_rows * splits[name].num_rows / held)))
        for name in rest
    }
    kept[first] = max(1, max_rows - sum(kept.values()))
    sample = {"max_rows": max_rows, "split_rows": splits[first].num_rows}
    for name, rows in splits.items():
        sample[f"{name}_kept"] = kept[name]
        if name != first:
            sample[f"{name}_rows"] = rows.num_rows
    sampled = {
        name: _sample(rows, spec, kept[name]) if kept[name] < rows.num_rows else rows
        for name, rows in splits.items()
    }
    return sampled, sample


def _describe_sample(sample: Mapping[str, int]) -> str:
    """`500 of 1,200 training rows and 80 of 300 early-stopping rows`, every split sampled."""
    parts = [f"{sample.get('train_kept', sample['max_rows']):,} of {sample['split_rows']:,}"]
    parts[0] += " training rows"
    parts += [
        f"{sample[f'{split}_kept']:,} of {sample[f'{split}_rows']:,} {_SPLIT_WORDS[split]} rows"
        for split in ("valid", "holdout")
        if f"{split}_kept" in sample  # older manifests sampled the training split alone
    ]
    return _words(parts)


def _contract(spec: DatasetSpec, rows: _Source) -> Contract:
    """schema.build_contract over the rows, reading only the category columns that learn
    their vocabulary from the data."""
    learned = [f.name for f in spec.features if f.dtype == "category" and not f.categories]
    if not learned:
        return schema.build_contract(spec)
    seen: dict[str, set[str]] = {name: set() for name in learned}
    for batch in rows.batches(learned):
        for name in learned:
            values = pc.unique(pc.drop_null(pc.cast(batch.column(name), pa.string())))
            seen[name].update(values.to_pylist())
    width = max(len(v) for v in seen.values())
    vocabulary = pa.table(
        {
            name: pa.array(sorted(v) + [None] * (width - len(v)), pa.string())
            for name, v in seen.items()
        }
    )
    return schema.build_contract(spec, vocabulary)


# --- the evaluated model and its search -------------------------------------------------------

_LOG_SCALE = frozenset({"eta", "min_child_weight"})
_HIGHER_IS_BETTER = frozenset({"auc", "aucpr", "map", "ndcg", "pre"})


@dataclass(frozen=True)
class _Search:
    """The evaluated model's params and its early-stopped booster (not yet cut to its best
    iteration); `record`: the manifest's `tuning` (None: training.tune is off)."""

    params: dict[str, Any]
    booster: xgb.Booster
    record: dict[str, Any] | None


def _fit_stopped(
    params: dict[str, Any],
    dtrain: xgb.QuantileDMatrix,
    dvalid: xgb.QuantileDMatrix,
    settings: Settings,
) -> tuple[xgb.Booster, dict[str, list[float]]]:
    """Fit on `dtrain`, early-stopped on `dvalid` (on the last of its eval metrics, as XGBoost
    does); and each metric's value on `dvalid`, a round at a time."""
    cfg = settings.training
    history: dict[str, dict[str, list[float]]] = {}
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=cfg.num_boost_round,
        evals=[(dvalid, "valid")],
        early_stopping_rounds=cfg.early_stopping_rounds,
        evals_result=history,
        verbose_eval=False,
    )
    return booster, history["valid"]


def _draw(
    rng: np.random.Generator, space: Mapping[str, tuple[int | float, int | float]]
) -> dict[str, Any]:
    """One candidate of training.tune.space: each parameter uniform in [low, high] (eta and
    min_child_weight on a log scale), an int where both bounds are ints, else a float to 4
    significant digits; the parameters drawn in the space's order."""
    drawn: dict[str, Any] = {}
    for name, (low, high) in space.items():
        whole = isinstance(low, int) and isinstance(high, int)
        if name in _LOG_SCALE and low > 0:
            value = float(np.exp(rng.uniform(np.log(low), np.log(high))))
            drawn[name] = round(value) if whole else float(f"{value:.4g}")
        elif isinstance(low, int) and isinstance(high, int):
            drawn[name] = int(rng.integers(low, high + 1))
        else:
            drawn[name] = float(f"{rng.uniform(low, high):.4g}")
    return drawn


def _search(
    settings: Settings, dtrain: xgb.QuantileDMatrix, dvalid: xgb.QuantileDMatrix
) -> _Search:
    """The configured params and their early-stopped model, or with training.tune.enabled the
    best of a seeded random search: trial 0 is the configured params, each later trial
    overrides them with a candidate drawn by a Generator seeded with training.seed (so the
    same settings try the same candidates in the same order); every trial fits on the same
    matrices, early-stopped on the validation split, and is scored by the task's first eval
    metric on it at its best iteration (XGBoost's best_score is the last metric's: logloss,
    not AUC). The first best trial wins. No new trial starts once tune.budget_s is spent."""
    tune = settings.training.tune
    configured = effective_params(settings)
    if not tune.enabled:
        booster, _ = _fit_stopped(configured, dtrain, dvalid, settings)
        return _Search(configured, booster, None)
    metrics = configured["eval_metric"]
    metric = metrics if isinstance(metrics, str) else metrics[0]
    higher = metric.split("@")[0] in _HIGHER_IS_BETTER
    rng = np.random.default_rng(settings.training.seed)
    start, stopped = time.monotonic(), False
    trials: list[dict[str, Any]] = []
    best: tuple[float, int, dict[str, Any], xgb.Booster] | None = None
    for i in range(tune.trials):
        if i and time.monotonic() - start >= tune.budget_s:
            stopped = True
            break
        if i:
            drawn = _draw(rng, tune.space)
        else:
            drawn = {name: configured[name] for name in tune.space if name in configured}
        params = {**configured, **drawn}
        began = time.monotonic()
        booster, history = _fit_stopped(params, dtrain, dvalid, settings)
        value = float(history[metric][booster.best_iteration])
        trials.append(
            {
                "params": drawn,
                "valid_value": value,
                "best_iteration": booster.best_iteration,
                "seconds": round(time.monotonic() - began, 3),
            }
        )
        if best is None or (value > best[0] if higher else value < best[0]):
            best = (value, i, params, booster)
    assert best is not None  # trial 0 always runs
    value, chosen, params, booster = best
    log.info(
        "tuning %s: %d of %d trials%s; trial %d chosen, valid %s %.5g",
        settings.dataset.name, len(trials), tune.trials,
        " (stopped by training.tune.budget_s)" if stopped else "", chosen, metric, value,
    )  # fmt: skip
    record = {
        "metric": metric,
        "budget_s": tune.budget_s,
        "trials_planned": tune.trials,
        "ran": len(trials),
        "stopped_by_budget": stopped,
        "chosen": chosen,
        "trials": trials,
    }
    return _Search(params, booster, record)


def _seen(settings: Settings, prepared: Mapping[str, Any]) -> dict[str, Any]:
    """The rows the evaluated model was fit or early-stopped on, as the gate reads them
    (evaluation.unseen_rows): split days, every row of the train and valid days; split rows,
    every row of the window's days but those whose schema.entity_unit is below
    holdout_fraction (the holdout entities)."""
    cfg = settings.training
    if cfg.split == "rows":
        return {"split": "rows", "days": prepared["days"], "holdout_fraction": cfg.holdout_fraction}
    splits = prepared["splits"]
    return {"split": "days", "days": [*splits["train"], *splits["valid"]], "holdout_fraction": None}


# --- baselines --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Baselines:
    """The predictors every model is shown beside (module baselines): the prior, the label
    mean of the linear model's training rows (the train split, sampled if above
    baselines.LINEAR_MAX_ROWS), and the linear model with its rows and encoding."""

    prior: float
    linear: xgb.Booster
    linear_rows: int
    encoding: dict[str, Any]


def _linear_data(
    rows: _Rows, spec: DatasetSpec, contract: Contract, encoding: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    batches = list(rows.batches())
    matrix = np.vstack([baselines.linear_matrix(b, contract, encoding) for b in batches])
    return matrix, np.concatenate([_target(b, spec) for b in batches])


def _fit_baselines(
    splits: Mapping[str, _Rows], settings: Settings, contract: Contract, params: dict[str, Any]
) -> Baselines:
    """The prior and the linear model, fit on the train split and early-stopped on the valid
    one, the two sampled to baselines.LINEAR_MAX_ROWS rows together (as _sampled does for
    training.max_rows): plain matrices in memory, a few MB."""
    spec, cfg = settings.dataset, settings.training
    pair = {"train": splits["train"], "valid": splits["valid"]}
    rows, _ = _sampled(pair, baselines.LINEAR_MAX_ROWS, spec)
    encoding = baselines.linear_encoding(rows["train"].batches(), contract)
    train = _linear_data(rows["train"], spec, contract, encoding)
    valid = _linear_data(rows["valid"], spec, contract, encoding)
    linear = baselines.fit_linear(
        params, train, valid, cfg.num_boost_round, cfg.early_stopping_rounds
    )
    return Baselines(baselines.prior_value(train[1]), linear, rows["train"].num_rows, encoding)


# --- train_model ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Companions:
    """What train_model writes beside the deployed model, and the manifest keys that say so:
    the evaluated model the gate judges (`evaluated` None: the deployed model is that model,
    training.refit false) with the rows it was fit and early-stopped on and the days it saw,
    the refit (None: none), the baselines and the tuning record (None: no search)."""

    evaluated: xgb.Booster | None
    train_rows: int
    valid_rows: int
    seen: dict[str, Any]
    refit: dict[str, Any] | None
    baselines: Baselines
    tuning: dict[str, Any] | None


def train_model(settings: Settings, data_dir: str | Path, model_dir: str | Path) -> dict[str, Any]:
    """DVC stage `train`: the model directory of one version (UBJSON, never pickle).

    One contract, learned from all three prepared splits. The evaluated model (the one the
    gate judges) fits on the train split, early-stopped on valid and cut to its best
    iteration, with the configured params or those training.tune chose (_search). With
    training.refit (the default) the deployed model.ubj is refit on train + valid + holdout
    for exactly best_iteration + 1 rounds, same params and seed, no early stopping, and the
    evaluated model is saved as evaluated.ubj; without it model.ubj is the evaluated model.
    Beside them: linear.ubj and the prior (_fit_baselines) and the manifest (save_model),
    whose statistics describe the deployed model's rows. Every split reaches XGBoost as a
    QuantileDMatrix built a record batch at a time; with training.max_rows, the splits a fit
    holds (train and valid; all three for the refit) are sampled to at most that many rows
    together, each in proportion to its size (_sampled)."""
    cfg, spec = settings.training, settings.dataset
    data, out = Path(data_dir), Path(model_dir)
    prepared = json.loads((data / PREPARE_FILE).read_text())
    splits = {split: _Rows(data / f"{split}.parquet") for split in SPLITS}
    contract = _contract(spec, _Chain(tuple(splits.values())))
    fit, fit_sample = _sampled({s: splits[s] for s in ("train", "valid")}, cfg.max_rows, spec)
    if fit_sample is not None:
        _log_sample(spec, "the evaluated model", fit_sample)
    dtrain = _quantile_dmatrix(fit["train"], settings, contract)
    dvalid = _quantile_dmatrix(fit["valid"], settings, contract, ref=dtrain)
    search = _search(settings, dtrain, dvalid)
    del dtrain, dvalid  # XGBoost's copies of the data, before the refit and statistics
    best = search.booster.best_iteration
    evaluated = search.booster[: best + 1]  # keep only the best model's trees
    fitted_baselines = _fit_baselines(splits, settings, contract, search.params)
    deployed, sample = evaluated, fit_sample
    deployed_rows: _Source = fit["train"]
    refit: dict[str, Any] | None = None
    if cfg.refit:
        every, sample = _sampled(splits, cfg.max_rows, spec)
        if sample is not None:
            _log_sample(spec, "the refit", sample)
        deployed_rows = _Chain(tuple(every.values()))
        dall = _quantile_dmatrix(deployed_rows, settings, contract)
        deployed = xgb.train(search.params, dall, num_boost_round=best + 1)
        del dall
        rounds, days = best + 1, prepared["days"]
        refit = {"rows": deployed_rows.num_rows, "num_boost_round": rounds, "days": days}
    return save_model(
        deployed,
        settings,
        contract,
        deployed_rows,
        out,
        best_iteration=best,
        training_data_hash=prepared["data_hash"],
        days=prepared["days"],
        missing_days=prepared.get("missing_days", []),
        sample=sample,
        params=search.params,
        companions=Companions(
            evaluated=evaluated if cfg.refit else None,
            train_rows=fit["train"].num_rows,
            valid_rows=fit["valid"].num_rows,
            seen=_seen(settings, prepared),
            refit=refit,
            baselines=fitted_baselines,
            tuning=search.record,
        ),
    )


def _log_sample(spec: DatasetSpec, fit: str, sample: Mapping[str, int]) -> None:
    held = sample["split_rows"] + sum(sample.get(f"{s}_rows", 0) for s in ("valid", "holdout"))
    log.warning(
        "%s of %s: the splits it is fit on hold %d rows, above training.max_rows: XGBoost gets "
        "a sample of %s (the smallest hashes of entity id and event date)",
        fit, spec.name, held, _describe_sample(sample),
    )  # fmt: skip


def _reference_statistics(rows: _Source, contract: Contract) -> dict[str, dict[str, Any]]:
    """reference_statistics over the rows, read one feature column at a time: the values of
    one feature in memory at once, never the table."""
    reference = {}
    for f in contract.features:
        parts = [encode_column(f, b.column(f.name))[0] for b in rows.batches([f.name])]
        encoded = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        reference[f.name] = stats.feature_statistics(f, encoded)
    return reference


def _predict(booster: xgb.Booster, rows: _Source, contract: Contract) -> np.ndarray:
    parts = [
        booster.inplace_predict(feature_matrix(b, contract)[0], validate_features=False)
        for b in rows.batches()
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def _save_companions(
    companions: Companions, out: Path, best_iteration: int, model_sha256: str
) -> dict[str, Any]:
    """Write evaluated.ubj (refit only; else any left by an earlier run goes) and linear.ubj;
    the manifest keys `refit`, `evaluated`, `baselines` and `tuning`."""
    evaluated_path = out / EVALUATED_FILE
    if companions.evaluated is None:
        evaluated_path.unlink(missing_ok=True)
        evaluated = {"file": MODEL_FILE, "sha256": model_sha256}
    else:
        companions.evaluated.save_model(evaluated_path)
        evaluated = {"file": EVALUATED_FILE, "sha256": file_sha256(evaluated_path)}
    fitted = companions.baselines
    fitted.linear.save_model(out / LINEAR_FILE)
    return {
        "refit": companions.refit,
        "evaluated": {
            **evaluated,
            "best_iteration": best_iteration,
            "train_rows": companions.train_rows,
            "valid_rows": companions.valid_rows,
            "seen": companions.seen,
        },
        "baselines": {
            "prior": {"value": fitted.prior},
            "linear": {
                "file": LINEAR_FILE,
                "sha256": file_sha256(out / LINEAR_FILE),
                "rows": fitted.linear_rows,
                "encoding": fitted.encoding,
            },
        },
        "tuning": companions.tuning,
    }


def save_model(
    booster: xgb.Booster,
    settings: Settings,
    contract: Contract,
    train: pa.Table | _Rows | _Chain,
    out: Path,
    *,
    best_iteration: int,
    training_data_hash: str,
    days: list[str],
    sample: dict[str, int] | None = None,
    missing_days: Sequence[Mapping[str, str]] = (),
    params: dict[str, Any] | None = None,
    companions: Companions | None = None,
) -> dict[str, Any]:
    """Write model.ubj (UBJSON, never pickle), the deployed model, and the manifest the
    registry checks it by. `train`: the rows the model was fit on (a table, or prepared
    splits read in batches); `sample`: how they were sampled from the splits
    (training.max_rows), if so; `days`, `missing_days`: the window's days and those it went
    without; `params`: the effective params (effective_params when None); `companions`: the
    evaluated model, refit, baselines and tuning train_model adds (None: a manifest without
    those keys, read as the evaluated model itself, having seen every row of its days)."""
    spec = settings.dataset
    rows = _Rows(train) if isinstance(train, pa.Table) else train
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / MODEL_FILE
    booster.save_model(model_path)
    sha256 = file_sha256(model_path)
    manifest = {
        "sha256": sha256,
        "dataset": spec.name,
        "task": spec.target.task,
        "target": spec.target.name,
        "features": contract.feature_names,
        "feature_dtypes": {f.name: f.dtype for f in contract.features},
        "contract": contract.to_dict(),
        "xgboost_version": xgb.__version__,
        "params": effective_params(settings) if params is None else params,
        "num_boost_round": settings.training.num_boost_round,
        # the evaluated model's (the refit ran exactly one more round than it)
        "best_iteration": best_iteration,
        "training_data_hash": training_data_hash,
        "train_rows": rows.num_rows,
        # the splits fit on held more than training.max_rows: {max_rows, split_rows,
        # train_kept, valid_rows, valid_kept, and with a refit holdout_rows, holdout_kept}
        "train_sample": sample,
        "reference_stats": _reference_statistics(rows, contract),
        # the score distribution on the rows fit on (manifests before it lack the key: drift
        # is then measured on the features only)
        "score_reference": stats.score_statistics(_predict(booster, rows, contract)),
        # the window's days, and its days without a valid, labelled partition (with the
        # reason): the registry's manifest hash covers both
        "created_from": {"days": days, "missing_days": [dict(m) for m in missing_days]},
    }
    if companions is not None:
        manifest |= _save_companions(companions, out, best_iteration, sha256)
    _write_json(out / MANIFEST_FILE, manifest)
    return manifest


def configured_datasets(workspace: Path = Path(".")) -> list[str]:
    """The datasets configured under `workspace`/configs/datasets/ (each file's dataset name)."""
    names = set()
    for path in sorted((workspace / "configs" / "datasets").glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        names.add(str((data.get("dataset") or {}).get("name") or path.stem))
    return sorted(names)


def write_dvc_datasets(workspace: Path = Path("."), also: Iterable[str] = ()) -> list[str]:
    """Write DVC_DATASETS, the list dvc.yaml's stages are made from: every configured dataset
    and `also` (a dataset layered from elsewhere). Adding a dataset is its YAML alone: no
    edit of dvc.yaml. Rewritten only when it changes, atomically."""
    names = sorted({*configured_datasets(workspace), *also})
    path = workspace / DVC_DATASETS
    text = "# written by batchpred from configs/datasets/: do not edit\n" + yaml.safe_dump(
        {"datasets": names}
    )
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return names
