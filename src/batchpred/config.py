"""Typed, layered configuration: YAML files validated into frozen pydantic models."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_CONFIG_FILES = ("configs/base.yaml", "configs/datasets/churn.yaml")
CONFIG_ENV = "BATCHPRED_CONFIG"  # comma-separated list of YAML files, applied in order
DATABASE_URL_ENV = "BATCHPRED_DATABASE_URL"


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- dataset spec -------------------------------------------------------------------------


class Feature(Frozen):
    """One model input column and the rules every row must satisfy."""

    name: str
    dtype: Literal["float", "int", "bool", "category"]
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _check(self) -> Feature:
        if self.dtype == "category" and not self.categories:
            raise ValueError(f"feature {self.name!r}: dtype 'category' needs 'categories'")
        if self.dtype != "category" and self.categories:
            raise ValueError(f"feature {self.name!r}: 'categories' only applies to dtype category")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"feature {self.name!r}: min > max")
        return self


class Target(Frozen):
    name: str
    task: Literal["binary", "regression"]


class DatasetSpec(Frozen):
    """What a dataset looks like: identity, time, features and target. The only place that
    knows column names."""

    name: str
    entity_id: str
    entity_id_dtype: Literal["int", "string"] = "int"
    event_date: str
    features: tuple[Feature, ...] = Field(min_length=1)
    target: Target

    @model_validator(mode="after")
    def _unique_names(self) -> DatasetSpec:
        names = [self.entity_id, self.event_date, self.target.name, *self.feature_names]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"dataset {self.name!r}: column names used twice: {sorted(dupes)}")
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def feature(self, name: str) -> Feature:
        return next(f for f in self.features if f.name == name)


# --- pipeline sections --------------------------------------------------------------------


class DemoConfig(Frozen):
    """The seeded generator that stands in for a real upstream source."""

    start_date: date = date(2026, 10, 1)
    days: int = Field(35, ge=1)
    rows_per_day: int = Field(10_000, ge=1)
    label_noise: float = Field(0.05, ge=0, le=0.5)
    drift_start: date | None = None
    drift_strength: float = 1.0
    seed: int = 7


class SourceConfig(Frozen):
    """Where fresh data is pulled from: files under an fsspec URL, or a SQL query."""

    kind: Literal["files", "sql"] = "files"
    url: str = "data/source"  # files: root holding dt=YYYY-MM-DD/ folders
    format: Literal["parquet", "csv"] = "parquet"
    # sql: a query with a :dt bound parameter; the connection URL comes from the environment
    query: str | None = None
    url_env: str = "BATCHPRED_SOURCE_DATABASE_URL"

    @model_validator(mode="after")
    def _check(self) -> SourceConfig:
        if self.kind == "sql" and not self.query:
            raise ValueError("source.kind 'sql' needs source.query (with a :dt parameter)")
        return self


class LakeConfig(Frozen):
    """The lake's zones, as fsspec URLs (a local folder or s3://)."""

    raw: str = "data/raw"
    reports: str = "data/reports"


class ExtraExpectation(Frozen):
    """A Great Expectations expectation by its snake_case type, e.g.
    expect_column_mean_to_be_between, with its keyword arguments."""

    type: str
    kwargs: dict[str, Any] = Field(default_factory=dict)


class ValidationConfig(Frozen):
    min_rows: int = Field(1, ge=1)
    extra_expectations: tuple[ExtraExpectation, ...] = ()
    data_docs: bool = True


class GateConfig(Frozen):
    """A challenger is promoted only if it clears both bars on the shared holdout."""

    min_metric: float | None = None  # absolute floor on the primary metric (AUC / -RMSE)
    max_regression: float = 0.005  # how much worse than the champion it may be


class TrainingConfig(Frozen):
    window_days: int = Field(28, ge=3)
    valid_days: int = Field(3, ge=1)  # early-stopping split, just before the holdout
    holdout_days: int = Field(3, ge=1)  # evaluation split: the newest days of the window
    num_boost_round: int = Field(300, ge=1)
    early_stopping_rounds: int = Field(20, ge=1)
    seed: int = 0
    nthread: int = Field(2, ge=1)
    params: dict[str, Any] = Field(default_factory=dict)
    gate: GateConfig = GateConfig()
    registry: str = "data/models"  # content-addressed model store

    @model_validator(mode="after")
    def _check(self) -> TrainingConfig:
        if self.valid_days + self.holdout_days >= self.window_days:
            raise ValueError("training: valid_days + holdout_days must be < window_days")
        return self


class ScoringConfig(Frozen):
    input: str | None = None  # partitioned Parquet root to score; default: the lake's raw zone
    batch_rows: int = Field(131_072, ge=1)
    concurrency: int = Field(2, ge=1)
    nthread: int = Field(1, ge=1)  # xgboost threads per partition task
    max_reject_fraction: float = Field(0.0, ge=0, le=1)  # above this the partition fails
    dask_address: str | None = None  # run partition tasks on this Dask scheduler (prefect-dask)


class Settings(Frozen):
    dataset: DatasetSpec
    demo: DemoConfig = DemoConfig()
    source: SourceConfig = SourceConfig()
    lake: LakeConfig = LakeConfig()
    validation: ValidationConfig = ValidationConfig()
    training: TrainingConfig = TrainingConfig()
    scoring: ScoringConfig = ScoringConfig()

    @property
    def scoring_input(self) -> str:
        return self.scoring.input or self.lake.raw


# --- loading ------------------------------------------------------------------------------


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def config_files(paths: Iterable[str | Path] | None = None) -> list[Path]:
    """The YAML files to layer: explicit paths, else $BATCHPRED_CONFIG, else the defaults."""
    if paths:
        return [Path(p) for p in paths]
    env = os.environ.get(CONFIG_ENV)
    if env:
        return [Path(p.strip()) for p in env.split(",") if p.strip()]
    return [Path(p) for p in DEFAULT_CONFIG_FILES]


def load_settings(
    paths: Iterable[str | Path] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Deep-merge the YAML files in order (later wins), then `overrides`, and validate."""
    merged: dict[str, Any] = {}
    for path in config_files(paths):
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: top level must be a mapping")
        merged = deep_merge(merged, data)
    if overrides:
        merged = deep_merge(merged, overrides)
    return Settings.model_validate(merged)


def database_url() -> str:
    """The predictions database; only ever from the environment (it may hold a password)."""
    return os.environ.get(DATABASE_URL_ENV, "sqlite:///data/batchpred.db")
