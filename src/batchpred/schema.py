"""Arrow schema and feature matrix derived from a dataset spec: columns by name, never by position."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchpred.config import DatasetSpec, Feature

_ARROW_TYPES = {"float": pa.float64(), "int": pa.int64(), "bool": pa.bool_(), "category": pa.string()}


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
