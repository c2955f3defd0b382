"""Arrow types from a dataset spec, and the model contract: the exact features, order, dtypes,
category vocabularies, encoding and threshold a model version was trained with. Scoring builds
its matrix from the contract, never from today's YAML (which is checked against it)."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from batchpred.config import DatasetSpec, Feature

_ARROW_TYPES = {
    "float": pa.float64(),
    "int": pa.int64(),
    "bool": pa.bool_(),
    "category": pa.string(),
}
ENCODING = "xgboost-native-categorical-v1"  # codes = index in the vocabulary, unknown = missing


def feature_type(feature: Feature) -> pa.DataType:
    return _ARROW_TYPES[feature.dtype]


def entity_id_type(spec: DatasetSpec) -> pa.DataType:
    return pa.int64() if spec.entity_id_dtype == "int" else pa.string()


def entity_unit(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Each entity id's place in [0, 1): a stable hash of its text (pandas' hash_array over
    2**64), the same for the same id in any batch, run or machine. Split rows puts an
    entity below training.holdout_fraction in the holdout, and the gate reads it back."""
    text = pc.cast(ids, pa.string()).to_numpy(zero_copy_only=False).astype(object)
    return pd.util.hash_array(text).astype(np.float64) / 2.0**64


def target_type(spec: DatasetSpec) -> pa.DataType:
    if spec.target.task == "regression":
        return pa.float64()
    return pa.string() if spec.target.classes else pa.int8()


def arrow_schema(spec: DatasetSpec, *, with_target: bool = True) -> pa.Schema:
    """The canonical schema of a raw partition (the partition column itself is in the path)."""
    fields = [pa.field(spec.entity_id, entity_id_type(spec), nullable=False)]
    fields.append(pa.field(spec.event_date, pa.date32(), nullable=False))
    fields += [pa.field(f.name, feature_type(f), nullable=f.nullable) for f in spec.features]
    if with_target:
        fields.append(pa.field(spec.target.name, target_type(spec)))
    return pa.schema(fields)


class ContractMismatch(ValueError):
    """Today's dataset spec cannot feed a model: a feature it needs is gone or changed type."""


@dataclass(frozen=True)
class ContractFeature:
    name: str
    dtype: str  # float | int | bool | category
    vocabulary: tuple[str, ...] | None = None  # category: code i = vocabulary[i]


@dataclass(frozen=True)
class Contract:
    """What a model version needs and how its inputs are encoded; saved with the model."""

    dataset: str
    task: str
    target: str
    features: tuple[ContractFeature, ...]
    threshold: float
    spec_hash: str
    encoding: str = ENCODING

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def feature_types(self) -> list[str]:
        """XGBoost feature types: native categorical splits for categories."""
        return ["c" if f.dtype == "category" else "q" for f in self.features]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Contract:
        features = tuple(
            ContractFeature(
                f["name"], f["dtype"], tuple(f["vocabulary"]) if f.get("vocabulary") else None
            )
            for f in data["features"]
        )
        return cls(**{**data, "features": features})


def spec_fingerprint(spec: DatasetSpec) -> str:
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:16]


def build_contract(spec: DatasetSpec, train: pa.Table | None = None) -> Contract:
    """Freeze the spec into a contract. A category's vocabulary is the spec's list, or else
    the sorted values present in `train` (the training split)."""
    features = []
    for f in spec.features:
        vocabulary = None
        if f.dtype == "category":
            if f.categories:
                vocabulary = tuple(f.categories)
            elif train is not None:
                values = pc.unique(pc.drop_null(pc.cast(train.column(f.name), pa.string())))
                vocabulary = tuple(sorted(values.to_pylist()))
            else:
                raise ValueError(f"feature {f.name!r} lists no categories and no data was given")
        features.append(ContractFeature(f.name, f.dtype, vocabulary))
    return Contract(
        dataset=spec.name,
        task=spec.target.task,
        target=spec.target.name,
        features=tuple(features),
        threshold=spec.target.threshold,
        spec_hash=spec_fingerprint(spec),
    )


def check_compatible(contract: Contract, spec: DatasetSpec, version: str) -> None:
    """Refuse a spec that cannot feed the model: every feature the model needs must still be in
    the spec with the same dtype, for the same dataset and task. Order, new features, ranges
    and category lists may differ: the matrix is built from the contract."""
    problems = []
    if spec.name != contract.dataset:
        problems.append(f"dataset is {spec.name!r}, the model is for {contract.dataset!r}")
    if spec.target.task != contract.task:
        problems.append(f"task is {spec.target.task}, the model's is {contract.task}")
    current = {f.name: f for f in spec.features}
    for f in contract.features:
        now = current.get(f.name)
        if now is None:
            problems.append(f"feature {f.name!r} ({f.dtype}) is not in the spec any more")
        elif now.dtype != f.dtype:
            problems.append(
                f"feature {f.name!r} is {now.dtype} in the spec, {f.dtype} in the model"
            )
    if problems:
        raise ContractMismatch(
            f"model {version} cannot score with the current spec of {spec.name!r}: "
            + "; ".join(problems)
        )


def encode_column(
    feature: ContractFeature, column: pa.Array | pa.ChunkedArray
) -> tuple[np.ndarray, np.ndarray | None]:
    """One feature as float32 (nulls and NaN missing) and, for a category, the mask of
    present values outside the vocabulary (encoded as missing)."""
    if pa.types.is_dictionary(column.type):
        column = pc.cast(column, column.type.value_type)
    if feature.dtype == "category":
        assert feature.vocabulary is not None
        codes = pc.index_in(column, value_set=pa.array(feature.vocabulary, pa.string()))
        unknown = pc.and_(pc.is_null(codes), pc.is_valid(column))
        values = codes.to_numpy(zero_copy_only=False).astype(np.float32)
        return values, unknown.to_numpy(zero_copy_only=False)
    if pa.types.is_boolean(column.type):
        column = pc.cast(column, pa.int8())
    values = pc.cast(column, pa.float32(), safe=False)
    return values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False), None


def feature_matrix(
    data: pa.Table | pa.RecordBatch, contract: Contract
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The model's input, shape (rows, features), float32, columns in the contract's order,
    and per category feature the mask of values unknown to the model (scored as missing).

    Raises KeyError naming a missing feature column.
    """
    names = data.schema.names
    out = np.empty((data.num_rows, len(contract.features)), dtype=np.float32)
    unknown: dict[str, np.ndarray] = {}
    for j, feature in enumerate(contract.features):
        if feature.name not in names:
            raise KeyError(f"feature column {feature.name!r} is missing")
        out[:, j], mask = encode_column(feature, data.column(feature.name))
        if mask is not None and mask.any():
            unknown[feature.name] = mask
    return out, unknown
