"""Seeded generator of realistic labelled tabular data for any dataset spec."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from batchpred import storage
from batchpred.config import DatasetSpec, DemoConfig, Feature
from batchpred.schema import arrow_schema

NULL_FRACTION = 0.02
SIGNAL_STD = 2.0  # spread of the hidden score: sets how learnable the label is
BINARY_BIAS = -1.2  # about a quarter positives
REGRESSION_BASE = 45.0
REGRESSION_SCALE = 7.0


@dataclass(frozen=True)
class _Shape:
    """How one feature is drawn and how it moves the hidden score; fixed by the seed."""

    a: float = 1.0  # numeric: Beta(a, b) over [min, max]
    b: float = 1.0
    p: np.ndarray | None = None  # bool: [P(true)]; category: probabilities
    weight: float = 0.0
    effects: np.ndarray | None = None  # category: per-category effect


def _bounds(feature: Feature) -> tuple[float, float]:
    lo = feature.min if feature.min is not None else 0.0
    hi = feature.max if feature.max is not None else lo + 100.0
    return lo, hi


def _beta_moments(shape: _Shape) -> tuple[float, float]:
    a, b = shape.a, shape.b
    return a / (a + b), float(np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1))))


def _numeric(spec: DatasetSpec) -> list[int]:
    return [j for j, f in enumerate(spec.features) if f.dtype in ("float", "int")]


def _draw_shapes(spec: DatasetSpec, seed: int) -> tuple[list[_Shape], float]:
    """Per-feature distributions and score weights, plus the interaction weight; they depend
    on the seed only, so the feature-label relationship is the same every day."""
    rng = np.random.default_rng([seed, 0xBA7C4])
    shapes = []
    for feature in spec.features:
        weight = float(rng.normal())
        if feature.dtype == "category":
            k = len(feature.categories or ("",))
            effects = rng.normal(size=k)
            shapes.append(
                _Shape(p=rng.dirichlet(np.full(k, 3.0)), effects=effects - effects.mean())
            )
        elif feature.dtype == "bool":
            shapes.append(_Shape(p=np.array([rng.uniform(0.2, 0.8)]), weight=weight))
        else:
            a, b = rng.uniform(1.2, 4.0), rng.uniform(1.2, 8.0)
            shapes.append(_Shape(a=a, b=b, weight=weight))
    return shapes, float(rng.normal())


def _hidden_score(
    spec: DatasetSpec, shapes: list[_Shape], interaction: float, z: list[np.ndarray]
) -> np.ndarray:
    """Linear in the standardised features, plus one interaction, scaled to SIGNAL_STD."""
    score = np.zeros(len(z[0]))
    variance = 0.0
    for feature, shape, zj in zip(spec.features, shapes, z, strict=True):
        if feature.dtype == "category":
            assert shape.effects is not None and shape.p is not None
            score += shape.effects[zj.astype(int)]
            variance += float(np.sum(shape.p * shape.effects**2))
        else:
            score += shape.weight * zj
            variance += shape.weight**2
    numeric = _numeric(spec)
    if len(numeric) >= 2:
        score += interaction * z[numeric[0]] * z[numeric[1]]
        variance += interaction**2
    return score * SIGNAL_STD / np.sqrt(max(variance, 1e-9))


def generate_day(spec: DatasetSpec, demo: DemoConfig, day: date) -> pa.Table:
    """One day of labelled rows in the spec's canonical schema, deterministic for
    (demo.seed, day)."""
    rng = np.random.default_rng([demo.seed, day.toordinal()])
    shapes, interaction = _draw_shapes(spec, demo.seed)
    n = demo.rows_per_day
    drifted = set(_numeric(spec)[:2]) if demo.drift_start and day >= demo.drift_start else set()

    ids = rng.choice(n * 5, size=n, replace=False)
    columns: dict[str, pa.Array] = {}
    if spec.entity_id_dtype == "int":
        columns[spec.entity_id] = pa.array(ids + 100_000, pa.int64())
    else:
        columns[spec.entity_id] = pa.array([f"{spec.name[:3]}-{i:07d}" for i in ids], pa.string())
    columns[spec.event_date] = pa.array([day] * n, pa.date32())

    z: list[np.ndarray] = []
    for j, (feature, shape) in enumerate(zip(spec.features, shapes, strict=True)):
        nulls = rng.random(n) < NULL_FRACTION if feature.nullable else None
        if feature.dtype == "category":
            assert shape.p is not None
            assert feature.categories, f"the demo generator needs categories for {feature.name!r}"
            codes = rng.choice(len(feature.categories), size=n, p=shape.p)
            z.append(codes)
            values = pa.array(
                np.asarray(feature.categories, dtype=object)[codes], pa.string(), mask=nulls
            )
        elif feature.dtype == "bool":
            assert shape.p is not None
            p = float(shape.p[0])
            flags = rng.random(n) < p
            z.append((flags - p) / np.sqrt(p * (1 - p)))
            values = pa.array(flags, pa.bool_(), mask=nulls)
        else:
            mean, std = _beta_moments(shape)
            u = rng.beta(shape.a, shape.b, size=n)
            if j in drifted:
                u = np.clip(u + demo.drift_strength * std, 0.0, 1.0)
            lo, hi = _bounds(feature)
            x = lo + u * (hi - lo)
            if feature.dtype == "int":
                x = np.clip(np.rint(x), np.ceil(lo), np.floor(hi)).astype(np.int64)
                values = pa.array(x, pa.int64(), mask=nulls)
            else:
                values = pa.array(np.round(x, 4), pa.float64(), mask=nulls)
            z.append((u - mean) / std)
        columns[feature.name] = values

    score = _hidden_score(spec, shapes, interaction, z)
    unknown = rng.random(n) < demo.null_label_fraction  # outcome not known (yet)
    if spec.target.task == "binary":
        label = rng.random(n) < 1.0 / (1.0 + np.exp(-(BINARY_BIAS + score)))
        flip = rng.random(n) < demo.label_noise
        codes = (label ^ flip).astype(np.int8)
        if spec.target.classes:
            names = {code: name for name, code in spec.target.classes.items()}
            text = np.asarray([names[0], names[1]], dtype=object)[codes]
            columns[spec.target.name] = pa.array(text, pa.string(), mask=unknown)
        else:
            columns[spec.target.name] = pa.array(codes, pa.int8(), mask=unknown)
    else:
        noise = rng.normal(0.0, REGRESSION_SCALE * 10 * demo.label_noise, size=n)
        target = np.round(np.maximum(REGRESSION_BASE + REGRESSION_SCALE * score + noise, 1.0), 2)
        columns[spec.target.name] = pa.array(target, pa.float64(), mask=unknown)
    table = pa.Table.from_pydict(columns, schema=arrow_schema(spec))
    last = demo.start_date + timedelta(days=demo.days - 1)
    if (last - day).days < demo.unlabelled_days:  # the newest days: outcome not known yet
        table = table.drop_columns([spec.target.name])
    return table


def write_demo_source(
    spec: DatasetSpec,
    demo: DemoConfig,
    url: str,
    fmt: Literal["parquet", "csv"] = "parquet",
) -> list[date]:
    """Write demo.days daily partitions url/dt=YYYY-MM-DD/part-0.<fmt>, skipping days that
    already have data; returns the days written."""
    written = []
    for offset in range(demo.days):
        day = demo.start_date + timedelta(days=offset)
        if storage.partition_files(url, day):
            continue
        table = generate_day(spec, demo, day)
        if fmt == "parquet":
            storage.write_partition(url, day, table)
        else:
            fs, path = storage.url_to_fs(storage.partition_path(url, day))
            fs.makedirs(path, exist_ok=True)
            with fs.open(f"{path}/part-0.csv", "wb") as fh:
                pacsv.write_csv(table, fh)
        written.append(day)
    return written
