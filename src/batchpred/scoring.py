"""Score one partition: stream record batches, check rows, predict, hand them to the sink."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from batchpred import schema, sinks, storage
from batchpred.config import DatasetSpec, ScoringConfig
from batchpred.registry import LoadedModel


class PartitionRejected(Exception):
    """The partition broke a rule badly enough to stop it; nothing of it was written."""


@dataclass(frozen=True)
class PartitionResult:
    partition_date: date
    model_version: str
    status: Literal["scored", "skipped"]
    rows_in: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows_scored / self.seconds if self.seconds else 0.0


def iter_input_batches(
    root: str, day: date, spec: DatasetSpec, batch_rows: int
) -> Iterator[tuple[str, pa.RecordBatch]]:
    """(file, batch) over every Parquet file and row group of a partition, reading only the
    entity id and feature columns. Raises PartitionRejected naming the file and column when
    a file lacks a column or has the wrong type."""
    columns = [spec.entity_id, *spec.feature_names]
    files = storage.partition_files(root, day)
    if not files:
        raise PartitionRejected(f"partition dt={day} under {root}: no data files")
    for url in files:

        def check(file_schema: pa.Schema, url: str = url) -> None:
            try:
                schema.check_columns(file_schema, spec)
            except schema.SchemaMismatch as exc:
                raise PartitionRejected(f"partition dt={day} file {url}: {exc}") from exc

        for batch in storage.iter_file_batches(url, batch_rows, columns, check):
            yield url, batch


class _DuplicateTracker:
    """Entity ids seen so far in the partition, as sorted 64-bit hashes (8 bytes a row,
    about a tenth of a Python set); later repeats are rejected. A false repeat needs a 64-bit
    hash collision: odds about n^2 / 2^65, under 1e-5 for a billion-row partition."""

    def __init__(self) -> None:
        self.seen = np.empty(0, dtype=np.uint64)

    def repeats(self, ids: pa.Array) -> np.ndarray:
        hashes = pd.util.hash_array(ids.to_numpy(zero_copy_only=False))
        out = np.ones(len(hashes), dtype=bool)
        out[np.unique(hashes, return_index=True)[1]] = False  # repeats within the batch
        if len(self.seen):
            at = np.minimum(np.searchsorted(self.seen, hashes), len(self.seen) - 1)
            out |= self.seen[at] == hashes  # seen in an earlier batch
        self.seen = np.union1d(self.seen, hashes)
        return out


def refuse_invalid(root: str, day: date) -> None:
    """Fail closed: a partition whose current content failed validation at ingest is never
    scored (inputs without a manifest rely on the row checks in the stream)."""
    manifest = storage.read_manifest(root, day) or {}
    verdict = manifest.get("validation") or {}
    current = verdict.get("content_hash") == manifest.get("content_hash")
    if verdict and current and not verdict["success"]:
        raise PartitionRejected(
            f"partition dt={day} under {root} failed validation at ingest; not scored:\n"
            f"{verdict.get('message') or verdict.get('report')}"
        )


def score_partition(
    engine: sa.Engine,
    spec: DatasetSpec,
    cfg: ScoringConfig,
    model: LoadedModel,
    root: str,
    day: date,
    run_id: str,
    *,
    force: bool = False,
) -> PartitionResult:
    """Score one partition into the predictions table, exactly once per (partition, model).

    Skips (status "skipped") when the ledger shows it done with the same input fingerprint,
    unless `force`. Rows breaking the spec's rules are rejected with their reasons; above
    `cfg.max_reject_fraction` the whole partition fails with PartitionRejected and nothing
    is written.
    """
    t0, started = time.perf_counter(), datetime.now(UTC)
    refuse_invalid(root, day)
    fingerprint = storage.fingerprint_partition(root, day)
    key = sinks.PartitionKey(spec.name, day, model.version)
    binary = spec.target.task == "binary"
    rows_in = rejected = 0
    duplicates = _DuplicateTracker()
    try:
        with sinks.partition_writer(
            engine, key, run_id, fingerprint=fingerprint, force=force
        ) as out:
            for url, batch in iter_input_batches(root, day, spec, cfg.batch_rows):
                ok, broken = schema.check_rows(batch, spec)
                ids = batch.column(spec.entity_id)
                repeat = duplicates.repeats(ids)
                if repeat.any():
                    broken += [(int(i), spec.entity_id, "unique") for i in np.flatnonzero(repeat)]
                    ok &= ~repeat
                rows_in += batch.num_rows
                rejects = None
                if broken:
                    bad = int((~ok).sum())
                    rejected += bad
                    if cfg.max_reject_fraction == 0:  # fail fast: nothing may be rejected
                        raise PartitionRejected(_reject_message(day, url, broken, bad))
                    rejects = pa.table(
                        {
                            "entity_id": pa.array(
                                [
                                    None if ids[i].as_py() is None else str(ids[i].as_py())
                                    for i, _, _ in broken
                                ],
                                pa.string(),
                            ),
                            "column_name": [c for _, c, _ in broken],
                            "rule": [r for _, _, r in broken],
                        }
                    )
                    batch = batch.filter(pa.array(ok))
                scores = model.booster.inplace_predict(
                    schema.feature_matrix(batch, spec), validate_features=False
                )
                labels = (scores >= 0.5).astype(np.int8) if binary else None
                out.write(
                    sinks.PredictionBatch(batch.column(spec.entity_id), scores, labels, rejects)
                )
            if rows_in and rejected > cfg.max_reject_fraction * rows_in:
                raise PartitionRejected(
                    f"partition dt={day} under {root}: {rejected} of {rows_in} rows rejected, "
                    f"above max_reject_fraction={cfg.max_reject_fraction} [rule: reject threshold]"
                )
            out.finish(sinks.LedgerEntry(fingerprint, rows_in, rejected, started))
    except sinks.AlreadyScored:
        return PartitionResult(day, model.version, "skipped", seconds=time.perf_counter() - t0)
    return PartitionResult(
        day,
        model.version,
        "scored",
        rows_in,
        rows_in - rejected,
        rejected,
        time.perf_counter() - t0,
    )


def _reject_message(day: date, url: str, broken: list[tuple[int, str, str]], bad: int) -> str:
    column, rule = broken[0][1], broken[0][2]
    return (
        f"partition dt={day} file {url}: {bad} row(s) break the spec, first: column {column!r} "
        f"[rule: {rule}] (scoring.max_reject_fraction is 0; nothing was written)"
    )
