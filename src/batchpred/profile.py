"""Draft a dataset spec from a sample of its data (`batchpred dataset init`): each column's
dtype, range, vocabulary and nulls, and the candidates for the id, the date and the target,
written as a commented YAML for a person to review before it is trusted.

The draft is a starting point, not a verdict: ranges are the sample's (widen them to what is
possible, or real data will be rejected the first day it is wider), a vocabulary seen in a
sample may be incomplete, and the choice of id, date and target is a guess the comments
explain. It is checked to load as a spec before it is written.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from batchpred import config, storage

SAMPLE_ROWS = 200_000  # rows profiled at most (the first ones)
MAX_CATEGORIES = 50  # a text column with more distinct values is not a category
_ID_NAME = re.compile(r"(^|_)(id|key|uuid|code)$|^id_", re.IGNORECASE)
_DATE_NAME = re.compile(r"(^|_)(date|day|dt|ds)$", re.IGNORECASE)
_TARGET_NAME = re.compile(
    r"^(target|label|y|outcome|class|churn(ed)?|default|fraud|is_.+|progression|.+_status)$",
    re.IGNORECASE,
)


@dataclass
class Column:
    """What the sample says about one column."""

    name: str
    arrow: str
    rows: int
    nulls: int
    distinct: int
    low: Any = None
    high: Any = None
    values: list[str] = field(default_factory=list)  # the distinct values, when few

    @property
    def numeric(self) -> bool:
        return self.low is not None and isinstance(self.low, int | float)


def _profile(table: pa.Table) -> list[Column]:
    columns = []
    for name in table.column_names:
        data = table.column(name)
        if pa.types.is_dictionary(data.type):
            data = data.cast(data.type.value_type)
        kind = data.type
        unique = pc.unique(data.drop_null())
        column = Column(name, str(kind), len(data), data.null_count, len(unique))
        if pa.types.is_integer(kind) or pa.types.is_floating(kind):
            low, high = pc.min_max(data).values()
            column.low, column.high = low.as_py(), high.as_py()
        elif pa.types.is_date(kind) or pa.types.is_timestamp(kind):
            low, high = pc.min_max(data).values()
            column.low, column.high = str(low.as_py()), str(high.as_py())
        if column.distinct <= MAX_CATEGORIES:
            column.values = sorted(str(v) for v in unique.to_pylist())
        columns.append(column)
    return columns


def _is_date(c: Column) -> bool:
    return c.arrow.startswith(("date", "timestamp")) or (
        bool(_DATE_NAME.search(c.name)) and c.arrow in ("string", "large_string")
    )


def _dtype(c: Column) -> str:
    if c.arrow == "bool":
        return "bool"
    if c.arrow.startswith(("int", "uint")):
        return "int"
    if c.arrow.startswith(("float", "double", "halffloat", "decimal")):
        return "float"
    return "category"


def _round_out(value: float, up: bool) -> float | int:
    """A bound a little outside the sample's: one significant step beyond, rounded."""
    if value == 0:
        return 0
    step = 10 ** math.floor(math.log10(abs(value)))
    bound = math.ceil(value / step) * step if up else math.floor(value / step) * step
    return int(bound) if float(bound).is_integer() else float(bound)


@dataclass
class Draft:
    """The drafted spec and what was guessed."""

    name: str
    entity_id: str | None
    event_date: str | None
    target: str | None
    text: str  # the YAML with its comments


def draft(name: str, table: pa.Table, target: str | None = None, source: str = "") -> Draft:
    """A commented spec YAML for dataset `name` from a sample `table`."""
    table = table.slice(0, SAMPLE_ROWS)
    columns = _profile(table)
    by_name = {c.name: c for c in columns}
    if target is not None and target not in by_name:
        raise ValueError(f"--target {target!r}: no such column ({', '.join(by_name)})")
    dates = [c for c in columns if _is_date(c) and c.nulls == 0]
    day = dates[0] if dates else None

    def unique_per_day(c: Column) -> bool:
        if c.nulls or _dtype(c) == "float" or c is day:
            return False
        if day is None:
            return c.distinct == c.rows
        pairs = table.select([day.name, c.name]).group_by([day.name, c.name]).aggregate([])
        return pairs.num_rows == c.rows  # an entity appears once a day

    ids = [c for c in columns if unique_per_day(c)]
    ids.sort(key=lambda c: (not _ID_NAME.search(c.name), columns.index(c)))
    entity = ids[0] if ids else None
    if target is None:
        named = [c for c in columns if _TARGET_NAME.match(c.name) and c not in (entity, day)]
        target = named[0].name if named else None
    goal = by_name.get(target) if target else None
    taken = {c.name for c in (entity, day, goal) if c is not None}
    features = [c for c in columns if c.name not in taken and not _is_date(c)]

    lines = [
        f"# Drafted by `batchpred dataset init` from {source or 'a sample'}: {columns[0].rows:,}"
        " rows profiled.",
        "# REVIEW BEFORE USE: ranges are the sample's, rounded outward (widen them to what is",
        "# possible, or the first wider day is rejected); category vocabularies seen in a",
        "# sample are listed in comments and learned from the training window, not enforced.",
        "dataset:",
        f"  name: {name}",
    ]
    if entity is not None:
        dtype = "int" if _dtype(entity) == "int" else "string"
        lines += [
            f"  entity_id: {entity.name}          # never null, unique"
            + (" within each day" if day else "")
            + " in the sample",
            f"  entity_id_dtype: {dtype}",
        ]
    elif day is None:
        lines += [
            "  entity_id: row_id            # no column is unique and never null: each row's",
            "  entity_id_dtype: int         # position in the snapshot (source.row_id below)",
        ]
    else:
        lines += [
            "  entity_id: TODO              # no column is never null and unique within each",
            "                               # day: name the id, or add one upstream",
        ]
    if day is not None:
        lines.append(
            f"  event_date: {day.name}        # the partition date ({day.low}..{day.high})"
        )
    else:
        lines.append(
            "  event_date: snapshot_date     # no date column: a snapshot, ingested as the day"
            " named with --day"
        )
    if goal is None:
        lines.append("  target: {name: TODO, task: binary}   # TODO: the column to predict")
    else:
        binary = goal.distinct == 2
        task = "binary" if binary else "regression"
        extra = ""
        if binary and goal.values and set(goal.values) - {"0", "1", "True", "False"}:
            first, second = goal.values
            # quoted: YAML reads a bare No/Yes/on/off as a boolean
            extra = f", classes: {{{json.dumps(first)}: 0, {json.dumps(second)}: 1}}"
        seen = f"values {', '.join(goal.values)}" if binary else f"{goal.low}..{goal.high}"
        nulls = f"; {goal.nulls:,} null (unknown outcome)" if goal.nulls else ""
        lines.append(
            f"  target: {{name: {goal.name}, task: {task}{extra}}}   # {seen}{nulls}"
            + ("  CHECK which class is 1" if extra else "")
        )
    lines.append("  features:")
    for c in features:
        kind = _dtype(c)
        spec: dict[str, Any] = {"name": c.name, "dtype": kind}
        if c.nulls:
            spec["nullable"] = True
        note = f"{c.nulls / c.rows:.1%} null" if c.nulls else "never null"
        if kind in ("int", "float") and c.numeric:
            spec["min"], spec["max"] = _round_out(c.low, False), _round_out(c.high, True)
            note = f"seen {c.low}..{c.high}, {note}"
        elif kind == "category":
            if c.values:
                note = (
                    f"{c.distinct} values: {', '.join(c.values[:12])}"
                    + (", ..." if c.distinct > 12 else "")
                    + f"; {note}"
                )
            else:
                note = f"{c.distinct:,} distinct: an id or free text? drop it if so; {note}"
        flow = json.dumps(spec).replace('"', "")
        lines.append(f"    - {flow}   # {note}")
    if day is None:
        lines += [
            "",
            "source:",
            "  layout: snapshot            # one table without dates",
            *(
                []
                if entity
                else ["  row_id: row_id              # stable while the export keeps its row order"]
            ),
            "",
            "training:",
            "  window_days: 1              # the newest snapshot only",
            "  split: rows                 # no dates: a stable hash of the id splits the rows",
        ]
    text = "\n".join(lines) + "\n"
    settings = yaml.safe_load(text)
    identity = entity.name if entity else None if day else "row_id"
    if goal is not None and identity is not None:
        config.DatasetSpec.model_validate(settings["dataset"])  # the draft loads as a spec
    return Draft(name, identity, day.name if day else None, target, text)


def draft_from(path: str, name: str, target: str | None = None) -> Draft:
    """Profile the Parquet or CSV file(s) at `path` (a file, or a folder of them: read in
    order until SAMPLE_ROWS rows)."""
    files = (
        [str(p) for p in sorted(Path(path).rglob("*")) if p.suffix in (".parquet", ".csv")]
        if Path(path).is_dir()
        else [path]
    )
    if not files:
        raise ValueError(f"{path}: no .parquet or .csv file to profile")
    tables, rows = [], 0
    for file in files:
        tables.append(storage.read_files([file]))
        rows += tables[-1].num_rows
        if rows >= SAMPLE_ROWS:
            break
    sample = pa.concat_tables(tables, promote_options="permissive")
    return draft(name, sample, target, source=path)
