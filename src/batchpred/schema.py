"""Arrow schema, row rules and feature matrix from a dataset spec: columns by name, not position."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchpred.config import DatasetSpec, Feature

_ARROW_TYPES = {
    "float": pa.float64(),
    "int": pa.int64(),
    "bool": pa.bool_(),
    "category": pa.string(),
}


def feature_type(feature: Feature) -> pa.DataType:
    return _ARROW_TYPES[feature.dtype]


def entity_id_type(spec: DatasetSpec) -> pa.DataType:
    return pa.int64() if spec.entity_id_dtype == "int" else pa.string()


def target_type(spec: DatasetSpec) -> pa.DataType:
    return pa.int8() if spec.target.task == "binary" else pa.float64()


def arrow_schema(spec: DatasetSpec, *, with_target: bool = True) -> pa.Schema:
    """The canonical schema of a raw partition (the partition column itself is in the path)."""
    fields = [pa.field(spec.entity_id, entity_id_type(spec), nullable=False)]
    fields.append(pa.field(spec.event_date, pa.date32(), nullable=False))
    fields += [pa.field(f.name, feature_type(f), nullable=f.nullable) for f in spec.features]
    if with_target:
        fields.append(pa.field(spec.target.name, target_type(spec)))
    return pa.schema(fields)


def encode_column(feature: Feature, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """One feature as float32: categories become their index in the spec (unknown -> NaN),
    bools 0/1, nulls NaN. The same encoding is used in training and scoring."""
    if feature.dtype == "category":
        assert feature.categories is not None
        codes = pc.index_in(column, value_set=pa.array(feature.categories, pa.string()))
        return codes.to_numpy(zero_copy_only=False).astype(np.float32)
    if feature.dtype == "bool":
        column = pc.cast(column, pa.int8())
    values = pc.cast(column, pa.float32(), safe=False)
    return values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)


def feature_matrix(data: pa.Table | pa.RecordBatch, spec: DatasetSpec) -> np.ndarray:
    """The model's input, shape (rows, features), float32, columns in spec order.

    Raises KeyError naming the missing feature column.
    """
    names = data.schema.names
    out = np.empty((data.num_rows, len(spec.features)), dtype=np.float32)
    for j, feature in enumerate(spec.features):
        if feature.name not in names:
            raise KeyError(f"feature column {feature.name!r} is missing")
        out[:, j] = encode_column(feature, data.column(feature.name))
    return out


class SchemaMismatch(ValueError):
    """A column is missing or has a type the dataset spec cannot accept."""


def _compatible(feature: Feature, dtype: pa.DataType) -> bool:
    if feature.dtype == "category":
        return (
            pa.types.is_string(dtype)
            or pa.types.is_large_string(dtype)
            or pa.types.is_dictionary(dtype)
        )
    if feature.dtype == "bool":
        return pa.types.is_boolean(dtype) or pa.types.is_integer(dtype)
    return pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_null(dtype)


def check_columns(schema: pa.Schema, spec: DatasetSpec) -> None:
    """Raise SchemaMismatch naming the first missing or mistyped input column."""
    names = set(schema.names)
    if spec.entity_id not in names:
        raise SchemaMismatch(
            f"column {spec.entity_id!r} (entity id) is missing [rule: column exists]"
        )
    for feature in spec.features:
        if feature.name not in names:
            raise SchemaMismatch(f"column {feature.name!r} is missing [rule: column exists]")
        dtype = schema.field(feature.name).type
        if not _compatible(feature, dtype):
            raise SchemaMismatch(
                f"column {feature.name!r} has type {dtype}, spec says {feature.dtype} [rule: type]"
            )


def check_rows(
    batch: pa.RecordBatch, spec: DatasetSpec
) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
    """Vectorised row rules from the spec. Returns a boolean mask of valid rows and, for each
    broken rule, (row index, column, rule) triples."""
    bad_rows: list[tuple[np.ndarray, str, str]] = []

    def flag(mask: pa.Array | pa.ChunkedArray, column: str, rule: str) -> None:
        values = pc.fill_null(mask, False).to_numpy(zero_copy_only=False)
        if values.any():
            bad_rows.append((np.flatnonzero(values), column, rule))

    ids = batch.column(spec.entity_id)
    if ids.null_count:
        flag(pc.is_null(ids), spec.entity_id, "not_null")
    for f in spec.features:
        col = batch.column(f.name)
        if not f.nullable and col.null_count:
            flag(pc.is_null(col), f.name, "not_null")
        if f.dtype == "category":
            assert f.categories is not None
            unknown = pc.invert(pc.is_in(col, value_set=pa.array(f.categories)))
            flag(pc.and_(unknown, pc.is_valid(col)), f.name, f"in_set{list(f.categories)}")
            continue
        if pa.types.is_floating(col.type):
            flag(pc.invert(pc.is_finite(col)), f.name, "finite")
        if f.min is not None:
            flag(pc.less(col, f.min), f.name, f"min={f.min:g}")
        if f.max is not None:
            flag(pc.greater(col, f.max), f.name, f"max={f.max:g}")
    ok = np.ones(batch.num_rows, dtype=bool)
    triples: list[tuple[int, str, str]] = []
    for rows, column, rule in bad_rows:
        ok[rows] = False
        triples.extend((int(r), column, rule) for r in rows)
    return ok, triples
