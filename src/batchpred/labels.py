"""Labels known for a day: in the raw partition itself, or arrived late in the labels zone
(lake.labels), where a late label wins for its entity. Training and monitoring both read them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchpred import rules, storage
from batchpred.config import Settings


def is_labelled(settings: Settings, day: date) -> bool:
    """Whether the day has labels: in its own partition, or in the late-labels zone."""
    manifest = storage.read_manifest(settings.lake.raw, day) or {}
    if manifest.get("label_rows", 0) > 0:
        return True
    return bool(storage.partition_files(settings.lake.labels, day))


def with_labels(settings: Settings, day: date, table: pa.Table) -> pa.Table:
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
    if not is_labelled(settings, day):
        return None
    hashes = [
        (storage.read_manifest(root, day) or {}).get("content_hash") or ""
        for root in (settings.lake.raw, settings.lake.labels)
    ]
    return ":".join(hashes)


def day_labels(settings: Settings, day: date) -> tuple[pa.Array, np.ndarray] | None:
    """The labels known for a day: entity ids as text and labels as float (binary classes as
    0/1, NaN where missing). None while the day has no labels at all."""
    if not is_labelled(settings, day):
        return None
    spec = settings.dataset
    raw = storage.read_partition(settings.lake.raw, day)
    keep = [c for c in (spec.entity_id, spec.target.name) if c in raw.column_names]
    table = with_labels(settings, day, raw.select(keep))
    if spec.target.name not in table.column_names:
        return None
    label = rules.label_codes(spec, table.column(spec.target.name))
    return table.column(spec.entity_id).cast(pa.string()), label


def late_labels(settings: Settings, day: date) -> tuple[pa.Array, pa.Array] | None:
    """The day's late labels (lake.labels): entity ids and labels as text; None if none."""
    spec, name = settings.dataset, settings.dataset.target.name
    if not storage.partition_files(settings.lake.labels, day):
        return None
    late = storage.read_partition(settings.lake.labels, day, columns=[spec.entity_id, name])
    labels = pc.cast(late.column(name), pa.string())
    return late.column(spec.entity_id).combine_chunks(), labels.combine_chunks()


@dataclass(frozen=True)
class LateLabels:
    """A day's late labels checked against the day's raw partition: `rows` labels, of which
    `unmatched` carry an entity id that matches no row of the day (ids compared as text).
    Above `max_fraction` of the rows the labels day fails: an upstream id-format change must
    not leave a whole day "unlabelled" with nothing but a count to show for it. Training
    (training.select_window) and realised metrics (monitoring.realised_performance) both
    leave a failed labels day out and name it with `describe()`."""

    day: date
    files: tuple[str, ...]
    rows: int
    unmatched: int
    max_fraction: float

    @property
    def failed(self) -> bool:
        return self.unmatched > self.max_fraction * self.rows

    def describe(self) -> str:
        """One line naming the day, the labels file(s) and the count."""
        return (
            f"late labels of {self.day} {'failed' if self.failed else 'passed'}: "
            f"{self.unmatched:,} of {self.rows:,} match no row of the day's partition "
            f"({', '.join(self.files)}; labels.max_unmatched_fraction {self.max_fraction})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "unmatched": self.unmatched,
            "failed": self.failed,
            "files": list(self.files),
        }


def check_late_labels(settings: Settings, day: date) -> LateLabels | None:
    """The day's late labels (lake.labels) checked against its raw partition, reading the
    entity id column of each; None where the labels zone has none for the day."""
    spec = settings.dataset
    files = storage.partition_files(settings.lake.labels, day)
    if not files:
        return None
    late = storage.read_partition(settings.lake.labels, day, columns=[spec.entity_id])
    raw = storage.read_partition(settings.lake.raw, day, columns=[spec.entity_id])
    ids = pc.cast(late.column(spec.entity_id), pa.string())
    known = pc.cast(raw.column(spec.entity_id), pa.string()).combine_chunks()
    matched = pc.sum(pc.is_in(ids, value_set=known)).as_py() or 0
    return LateLabels(
        day=day,
        files=tuple(files),
        rows=len(ids),
        unmatched=len(ids) - matched,
        max_fraction=settings.labels.max_unmatched_fraction,
    )
