"""One rule source: the dataset spec compiled into row rules that Great Expectations (at ingest,
through `validation`) and the scoring stream (per record batch) both evaluate with
`bad_rows`, so the two can never disagree on a value.

Semantics every caller shares:
- null and NaN are the same thing, "missing": only `not_null` looks at them;
- each rule applies to the rows where its column is present (GX's `mostly` denominator);
  `not_null` applies to every row;
- a rule's family (`not_null`, `type`, `range`, `category`, `unique`, `label`) picks its
  threshold in `validation.reject_up_to`: each rule (one check on one column) may be broken
  by up to that share of the rows it applies to, which are rejected; above it the partition
  fails. This is GX's `mostly`, per expectation;
- a partition's rules (compiled with its `day`) add `partition_day` on the event-date column:
  a row dated another day breaks it. `validation.event_date_mismatch` is its policy: `fail`
  (threshold 0: one such row fails the partition) or `reject` (threshold 1: those rows are
  rejected, the others kept).

Column-level problems (a missing column, text in a numeric column) are not row rules: they
fail the partition at once (`check_columns`).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from datetime import date
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from batchpred.config import DatasetSpec, Feature, RejectPolicy, ValidationConfig

Family = Literal["not_null", "type", "range", "category", "unique", "label", "event_date"]
Kind = Literal[
    "not_null",
    "integer",
    "bool",
    "finite",
    "min",
    "max",
    "in_set",
    "unique",
    "label",
    "partition_day",
]
FAMILY: dict[str, Family] = {
    "not_null": "not_null",
    "integer": "type",
    "bool": "type",
    "finite": "range",
    "min": "range",
    "max": "range",
    "in_set": "category",
    "unique": "unique",
    "label": "label",
    "partition_day": "event_date",
}
BOOL_TEXT = ("true", "false")


@dataclass(frozen=True)
class Rule:
    """One check on one column. `value`: the bound (min/max), the allowed values, or the
    partition's day as YYYY-MM-DD (partition_day)."""

    column: str
    kind: Kind
    value: float | tuple[str, ...] | str | None = None
    threshold: float = 0.0  # share of applicable rows that may break it (0: none)

    @property
    def family(self) -> Family:
        return FAMILY[self.kind]

    @property
    def name(self) -> str:
        """Short, stable text for messages and rejected_rows.rule: never a whole vocabulary."""
        if self.kind in ("min", "max"):
            assert isinstance(self.value, float | int)
            return f"{self.kind}={self.value:g}"
        if self.kind == "in_set":
            assert isinstance(self.value, tuple)
            # () is the model's vocabulary at scoring time (on_unknown reject/fail)
            return f"in_set({len(self.value)} values)" if self.value else "unknown_category"
        return self.kind


class SchemaMismatch(ValueError):
    """A column is missing or has a type the dataset spec cannot accept."""


# --- compiling the spec ---------------------------------------------------------------------


def _feature_rules(f: Feature, policy: RejectPolicy) -> list[Rule]:
    out: list[Rule] = []
    if not f.nullable:
        out.append(Rule(f.name, "not_null", threshold=policy.not_null))
    if f.dtype == "int":
        out.append(Rule(f.name, "integer", threshold=policy.type))
    elif f.dtype == "bool":
        out.append(Rule(f.name, "bool", threshold=policy.type))
    elif f.dtype == "float":
        out.append(Rule(f.name, "finite", threshold=policy.range))
    if f.min is not None:
        out.append(Rule(f.name, "min", float(f.min), policy.range))
    if f.max is not None:
        out.append(Rule(f.name, "max", float(f.max), policy.range))
    if f.dtype == "category" and f.categories and f.on_unknown != "missing":
        limit = policy.category if f.on_unknown == "reject" else 0.0
        out.append(Rule(f.name, "in_set", tuple(f.categories), limit))
    return out


def label_values(spec: DatasetSpec) -> tuple[str, ...]:
    """The values a binary label may take, as text (the spec's classes, or 0/1/true/false)."""
    if spec.target.classes:
        return tuple(spec.target.classes)
    return ("0", "1", *BOOL_TEXT)


def compile_rules(
    spec: DatasetSpec, cfg: ValidationConfig, *, label: bool = True, day: date | None = None
) -> list[Rule]:
    """Every row rule of the spec, in column order. `label`: include the target's rule (the
    label is optional in a partition; its rule applies only where the column is present).
    `day`: the rules of that day's partition, whose event dates must be that day
    (partition_day, under validation.event_date_mismatch)."""
    policy = cfg.reject_up_to
    rules = [Rule(spec.entity_id, "not_null", threshold=policy.not_null)]
    if spec.entity_id_dtype == "int":
        rules.append(Rule(spec.entity_id, "integer", threshold=policy.type))
    rules.append(Rule(spec.entity_id, "unique", threshold=policy.unique))
    if day is not None:
        share = 1.0 if cfg.event_date_mismatch == "reject" else 0.0
        rules.append(Rule(spec.event_date, "partition_day", day.isoformat(), share))
    for feature in spec.features:
        rules += _feature_rules(feature, policy)
    if label:
        values = label_values(spec) if spec.target.task == "binary" else None
        rules.append(Rule(spec.target.name, "label", values, policy.label))
    return rules


def spec_hash(spec: DatasetSpec, cfg: ValidationConfig) -> str:
    """Identifies the rules a verdict was reached under: a spec or policy change revalidates
    (whether Data Docs are rendered is not a rule, and does not)."""
    body = spec.model_dump_json() + "\n" + cfg.model_dump_json(exclude={"data_docs"})
    return hashlib.sha256(body.encode()).hexdigest()[:16]


# --- evaluating a rule on a column ---------------------------------------------------------


def _floats(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)


def _is_text(dtype: pa.DataType) -> bool:
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype)


def present(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Rows where the value is neither null nor NaN."""
    return ~pc.is_null(column, nan_is_null=True).to_numpy(zero_copy_only=False)


class Cells:
    """A batch's column and what its rules read of it, each computed once: the values
    (dictionaries decoded), where they are present, and as float64. A column with not_null,
    min, max and finite rules was masked and cast once for each rule."""

    def __init__(self, column: pa.Array | pa.ChunkedArray) -> None:
        self.raw = column
        if pa.types.is_dictionary(column.type):
            column = pc.cast(column, column.type.value_type)
        self.column, self.dtype = column, column.type

    @functools.cached_property
    def present(self) -> np.ndarray:
        return present(self.column)

    @functools.cached_property
    def applied(self) -> int:
        """Rows a rule other than not_null applies to: present in the column as given."""
        return int((self.present if self.column is self.raw else present(self.raw)).sum())

    @functools.cached_property
    def floats(self) -> np.ndarray:
        return _floats(self.column)


class BatchCells(dict[str, Cells]):
    """The Cells of a batch's columns, each made on first use: `cells[name]`."""

    def __init__(self, batch: pa.RecordBatch | pa.Table) -> None:
        super().__init__()
        self.batch = batch

    def __missing__(self, name: str) -> Cells:
        made = self[name] = Cells(self.batch.column(name))
        return made


def bad_rows(rule: Rule, column: pa.Array | pa.ChunkedArray | Cells) -> np.ndarray:
    """Boolean mask of the rows that break `rule`. Missing values break only not_null."""
    c = column if isinstance(column, Cells) else Cells(column)
    n = len(c.column)
    if rule.kind == "not_null":
        return ~c.present
    if rule.kind == "unique":
        hashes = pd.util.hash_array(c.column.to_numpy(zero_copy_only=False))
        out = np.ones(n, dtype=bool)
        out[np.unique(hashes, return_index=True)[1]] = False  # first occurrences are fine
        return out & c.present
    if rule.kind == "in_set":
        assert isinstance(rule.value, tuple)
        known = pc.is_in(c.column, value_set=pa.array(rule.value, pa.string()))
        return c.present & ~pc.fill_null(known, True).to_numpy(zero_copy_only=False)
    if rule.kind == "label":
        return _bad_labels(rule, c)
    if rule.kind == "partition_day":
        return _off_day(rule, c)
    if not (pa.types.is_integer(c.dtype) or pa.types.is_floating(c.dtype)):
        return np.zeros(n, dtype=bool)  # bools and nulls: nothing numeric to break
    v = c.floats
    with np.errstate(invalid="ignore"):
        if rule.kind == "integer":
            return np.isinf(v) | (np.isfinite(v) & (v != np.floor(v)))
        if rule.kind == "bool":
            return ~np.isnan(v) & (v != 0) & (v != 1)
        if rule.kind == "finite":
            return np.isinf(v)
        assert isinstance(rule.value, float)
        return v < rule.value if rule.kind == "min" else v > rule.value


def _off_day(rule: Rule, c: Cells) -> np.ndarray:
    """Rows whose event date is not the partition's day: dates and timestamps by their date
    (a zoned timestamp in its own zone), text by its first 10 characters (ISO). A column of
    another type fails its type expectation instead."""
    assert isinstance(rule.value, str)
    column, dtype = c.column, c.dtype
    if _is_text(dtype):
        same = pc.equal(pc.utf8_slice_codeunits(column, 0, 10), rule.value)
    elif pa.types.is_date(dtype) or pa.types.is_timestamp(dtype):
        days = pc.cast(column, pa.date32(), safe=False)
        same = pc.equal(days, pa.scalar(date.fromisoformat(rule.value), pa.date32()))
    else:
        return np.zeros(len(column), dtype=bool)
    return c.present & ~pc.fill_null(same, True).to_numpy(zero_copy_only=False)


def _bad_labels(rule: Rule, c: Cells) -> np.ndarray:
    column, dtype = c.column, c.dtype
    if rule.value is None:  # regression: any finite number
        if pa.types.is_integer(dtype) or pa.types.is_floating(dtype):
            return np.isinf(c.floats)
        return c.present
    assert isinstance(rule.value, tuple)
    if pa.types.is_boolean(dtype):
        return np.zeros(len(column), dtype=bool)
    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype):
        v = c.floats
        allowed = {float(x) for x in rule.value if x in ("0", "1")}
        return ~np.isnan(v) & ~np.isin(v, list(allowed))
    text = pc.cast(column, pa.string())
    known = pc.is_in(text, value_set=pa.array(rule.value, pa.string()))
    return c.present & ~pc.fill_null(known, True).to_numpy(zero_copy_only=False)


def label_codes(spec: DatasetSpec, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The label as float64: 0/1 for binary (classes mapped), the value for regression; NaN
    where missing or not a valid label."""
    if spec.target.task == "regression":
        if _is_text(column.type):  # late labels joined as text
            column = pc.cast(column, pa.float64())
        v = _floats(column)
        return np.where(np.isinf(v), np.nan, v)
    mapping = {"1": 1.0, "0": 0.0, "true": 1.0, "false": 0.0}
    if spec.target.classes:
        mapping = {k: float(v) for k, v in spec.target.classes.items()}
    if not _is_text(column.type):
        v = _floats(column)
        return np.where(np.isin(v, [0.0, 1.0]), v, np.nan)
    keys = list(mapping)
    index = pc.index_in(pc.cast(column, pa.string()), value_set=pa.array(keys, pa.string()))
    codes = index.to_numpy(zero_copy_only=False).astype(np.float64)
    lookup = np.array([mapping[k] for k in keys] + [np.nan])
    return lookup[np.where(np.isnan(codes), len(keys), codes).astype(int)]


# --- column-level checks -------------------------------------------------------------------


def _numeric(dtype: pa.DataType) -> bool:
    return pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_null(dtype)


def compatible(kind: str, dtype: pa.DataType) -> bool:
    """Whether a column of Arrow type `dtype` can hold values of spec dtype `kind` (row rules
    then judge each value: 3.7 in an int column is a row problem, text is a column one)."""
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    if kind in ("category", "string"):
        return _is_text(dtype) or pa.types.is_null(dtype)
    if kind == "bool":
        return pa.types.is_boolean(dtype) or _numeric(dtype)
    return _numeric(dtype)


def check_columns(schema: pa.Schema, spec: DatasetSpec, features: list[str] | None = None) -> None:
    """Raise SchemaMismatch naming the first missing or mistyped column among the entity id
    and `features` (default: the spec's). An entity id of dtype string may arrive as numbers."""
    names = set(schema.names)
    if spec.entity_id not in names:
        raise SchemaMismatch(f"column {spec.entity_id!r} (entity id) is missing [rule: exists]")
    id_type = schema.field(spec.entity_id).type
    if spec.entity_id_dtype == "int" and not compatible("int", id_type):
        raise SchemaMismatch(
            f"column {spec.entity_id!r} (entity id) has type {id_type}, spec says int [rule: type]"
        )
    for name in features if features is not None else spec.feature_names:
        feature = spec.feature(name)
        if name not in names:
            raise SchemaMismatch(f"column {name!r} is missing [rule: exists]")
        dtype = schema.field(name).type
        if not compatible(feature.dtype, dtype):
            raise SchemaMismatch(
                f"column {name!r} has type {dtype}, spec says {feature.dtype} [rule: type]"
            )


# --- evaluating all rules on a batch -------------------------------------------------------


@dataclass
class Tally:
    """Per rule: rows it applied to, rows that broke it, and one example value."""

    applied: int = 0
    broken: int = 0
    example: object = None

    def fraction(self) -> float:
        return self.broken / self.applied if self.applied else 0.0


def evaluate(
    rules: list[Rule], batch: pa.RecordBatch | pa.Table, tallies: dict[Rule, Tally]
) -> tuple[np.ndarray, list[tuple[np.ndarray, Rule]]]:
    """Apply `rules` (except unique, which spans batches: see scoring) to the columns of
    `batch` that are present; add to `tallies`. Returns the mask of rows breaking no rule and
    the (rows, rule) pairs that broke."""
    ok = np.ones(batch.num_rows, dtype=bool)
    broken: list[tuple[np.ndarray, Rule]] = []
    names = set(batch.schema.names)
    cells = BatchCells(batch)
    for rule in rules:
        if rule.kind == "unique" or rule.column not in names:
            continue
        c = cells[rule.column]
        bad = bad_rows(rule, c)
        tally = tallies.setdefault(rule, Tally())
        tally.applied += batch.num_rows if rule.kind == "not_null" else c.applied
        if bad.any():
            rows = np.flatnonzero(bad)
            tally.broken += rows.size
            if tally.example is None:
                tally.example = c.raw[int(rows[0])].as_py()
            ok[rows] = False
            broken.append((rows, rule))
    return ok, broken


def over_threshold(tallies: dict[Rule, Tally]) -> tuple[Rule, Tally] | None:
    """The first rule broken by more than its family's share of rows, if any."""
    for rule, tally in tallies.items():
        if tally.broken and tally.fraction() > rule.threshold + 1e-12:
            return rule, tally
    return None


def describe(rule: Rule, tally: Tally) -> str:
    """`column 'x' broke rule max=120 in 3 of 400 rows (above reject_up_to.range 0), e.g. 130`"""
    if rule.kind == "partition_day":
        policy = f"validation.event_date_mismatch = {'reject' if rule.threshold else 'fail'}"
        found = f"{rule.name} (dt={rule.value})"
    else:
        policy = f"above validation.reject_up_to.{rule.family} = {rule.threshold:g}"
        found = rule.name
    example = tally.example
    shown = str(example) if isinstance(example, date) else repr(example)
    return (
        f"column {rule.column!r} broke rule {found} in {tally.broken} of {tally.applied} "
        f"rows ({policy}), e.g. {shown}"
    )


class SeenIds:
    """Entity ids seen so far in the partition, as 64-bit hashes (8 bytes a row, about a
    tenth of a Python set): the first occurrence of an id is fine, later ones break
    `unique`, as in `bad_rows`; nulls never repeat (they break not_null). Scoring and
    validation both use it. A false repeat needs a 64-bit hash collision: odds about
    n^2 / 2^65, under 1e-5 for a billion-row partition.

    The hashes are kept in sorted runs merged like a binary counter (a run is merged into
    the one before it while that one is no bigger): each hash is merged O(log n) times and
    each lookup searches O(log n) runs, O(n log n) for the partition. Re-merging all that
    was seen at every batch was O(n^2 / batch)."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []

    def repeats(self, column: pa.Array) -> np.ndarray:
        seen = present(column)
        out = np.zeros(len(column), dtype=bool)
        if not seen.any():
            return out
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        values = column.filter(pa.array(seen)).to_numpy(zero_copy_only=False)
        hashes = pd.util.hash_array(values)
        # One stable sort gives both the batch's distinct hashes and each one's first row
        # (np.unique with return_index, then without, sorted twice)
        order = np.argsort(hashes, kind="stable")
        ordered = hashes[order]
        first = np.ones(len(ordered), dtype=bool)
        first[1:] = ordered[1:] != ordered[:-1]
        repeat = np.ones(len(hashes), dtype=bool)
        repeat[order[first]] = False  # repeats within the batch
        for run in self.runs:  # seen in an earlier batch
            at = np.minimum(np.searchsorted(run, hashes), len(run) - 1)
            repeat |= run[at] == hashes
        self.runs.append(ordered[first])
        while len(self.runs) > 1 and len(self.runs[-2]) <= len(self.runs[-1]):
            newest, older = self.runs.pop(), self.runs.pop()
            self.runs.append(np.union1d(older, newest))
        out[seen] = repeat
        return out
