"""Typed, layered configuration: YAML files validated into frozen pydantic models, by one
loader (load_settings) whose every error is one line naming the file and the key."""

from __future__ import annotations

import difflib
import os
import re
import typing
from collections.abc import Iterable, Mapping
from contextlib import suppress
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    WithJsonSchema,
    model_serializer,
    model_validator,
)

DEFAULT_CONFIG_FILES = ("configs/base.yaml", "configs/datasets/churn.yaml")
CONFIG_ENV = "BATCHPRED_CONFIG"  # comma-separated list of YAML files, applied in order
DATABASE_URL_ENV = "BATCHPRED_DATABASE_URL"
DEBUG_ENV = "BATCHPRED_DEBUG"  # 1: tracebacks for known failures too (like --debug)


# A day as a flow parameter. Prefect's server checks a deployment run's parameters against
# the flow's JSON schema before it creates the run, but without format checks ("format":
# "date" is an annotation there): the pattern is what makes it refuse `day=2026-13-01` with
# 409 at `prefect deployment run`, instead of creating a run that fails later.
DAY_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"
Day = Annotated[date, WithJsonSchema({"type": "string", "format": "date", "pattern": DAY_PATTERN})]


class SetupError(Exception):
    """The run cannot start: a config file missing or invalid, the database unreachable or its
    URL wrong, an unknown model, a missing source. The message is one line naming the fix."""


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
    # category: the known values. Listed: a closed set, checked by the rules. Omitted: the
    # vocabulary is learned from the training window and frozen into the model's contract.
    categories: tuple[str, ...] | None = None
    # category: a value the model has not seen (or outside `categories`) is scored as
    # missing and counted ("missing"), rejects its row ("reject"), or fails the partition.
    on_unknown: Literal["missing", "reject", "fail"] = "missing"

    @model_validator(mode="after")
    def _check(self) -> Feature:
        if self.dtype != "category" and self.categories:
            raise ValueError(f"feature {self.name!r}: 'categories' only applies to dtype category")
        if self.dtype == "category" and (self.min is not None or self.max is not None):
            raise ValueError(f"feature {self.name!r}: min/max do not apply to dtype category")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"feature {self.name!r}: min > max")
        return self


class Target(Frozen):
    """The label column. It is optional in every partition: days to score arrive without it."""

    name: str
    task: Literal["binary", "regression"]
    # binary labels given as text, e.g. {late: 1, on_time: 0}; default: 0/1 or true/false
    classes: dict[str, Literal[0, 1]] | None = None
    threshold: float = Field(0.5, gt=0, lt=1)  # binary: score >= threshold -> label 1

    @model_validator(mode="after")
    def _check(self) -> Target:
        if self.classes is not None:
            if self.task != "binary":
                raise ValueError(f"target {self.name!r}: 'classes' only applies to task binary")
            if set(self.classes.values()) != {0, 1}:
                raise ValueError(f"target {self.name!r}: 'classes' must map to both 0 and 1")
        return self


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
    null_label_fraction: float = Field(0.0, ge=0, lt=1)  # rows whose outcome is unknown
    unlabelled_days: int = Field(0, ge=0)  # the newest days are written without the label
    drift_start: date | None = None
    drift_strength: float = 1.0
    seed: int = 7


class SourceConfig(Frozen):
    """Where fresh data is pulled from: files under an fsspec URL, or a SQL query."""

    kind: Literal["files", "sql"] = "files"
    url: str = "data/source/{dataset}"  # files: root holding dt=YYYY-MM-DD/ folders
    format: Literal["parquet", "csv"] = "parquet"
    # partitioned: one dt=YYYY-MM-DD/ folder per day. snapshot: `url` is one table without
    # dates (a file or a folder of files), ingested as the day you name (default: today).
    layout: Literal["partitioned", "snapshot"] = "partitioned"
    # snapshot without an id column: the name of a column to add holding each row's position
    # in the snapshot (0, 1, ...), to name as dataset.entity_id; stable while the export
    # keeps its row order (a source that can reorder rows needs an id of its own)
    row_id: str | None = None
    # sql: a query with a :dt bound parameter; the connection URL comes from the environment
    query: str | None = None
    # sql: a query listing the days the source holds, one row per day: the day, and optionally
    # a second column that changes when the day's rows change (count(*), max(updated_at)):
    # a day whose marker is unchanged since it was ingested is not read again
    days_query: str | None = None
    url_env: str = "BATCHPRED_SOURCE_DATABASE_URL"

    @model_validator(mode="after")
    def _check(self) -> SourceConfig:
        if self.kind == "sql" and not self.query:
            raise ValueError("source.kind 'sql' needs source.query (with a :dt parameter)")
        if self.row_id and self.layout != "snapshot":
            raise ValueError("source.row_id applies to layout snapshot only")
        return self


class LabelsConfig(Frozen):
    """Labels that arrive after the day was scored, in their own dt=YYYY-MM-DD/ partitions
    holding the entity id and the target column; joined on (entity id, day)."""

    url: str | None = None  # fsspec URL of the labels source; null: labels come in the data
    # or from SQL: `query` (entity id and target of the day :dt) and `days_query` (the days
    # that have labels, optionally with a change marker, as source.days_query), on the
    # database named by $`url_env`
    query: str | None = None
    days_query: str | None = None
    url_env: str = "BATCHPRED_SOURCE_DATABASE_URL"
    # A day's late labels whose entity ids match no row of the day's partition (an upstream
    # id-format change): above this share of the day's late labels, that labels day fails
    # (training and realised metrics leave it out and name it); at or below, they are counted.
    max_unmatched_fraction: float = Field(0.01, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> LabelsConfig:
        if self.url and self.query:
            raise ValueError("labels: set url (files) or query (SQL), not both")
        if bool(self.query) != bool(self.days_query):
            raise ValueError("labels.query and labels.days_query go together")
        return self

    @property
    def late(self) -> bool:
        """Whether labels arrive late, from a source of their own."""
        return bool(self.url or self.query)


class LakeConfig(Frozen):
    """The lake's zones, as fsspec URLs (a local folder or s3://). `{dataset}` is replaced
    by the dataset's name, so datasets sharing a workspace never share a zone."""

    raw: str = "data/raw/{dataset}"
    labels: str = "data/labels/{dataset}"
    reports: str = "data/reports/{dataset}"


class ExtraExpectation(Frozen):
    """A Great Expectations expectation by its snake_case type, e.g.
    expect_column_mean_to_be_between, with its keyword arguments."""

    type: str
    kwargs: dict[str, Any] = Field(default_factory=dict)


class RejectPolicy(Frozen):
    """Per rule family, the share of a partition's rows that may break each rule of the family
    (one check on one column, like GX's `mostly`). Those rows are rejected (kept in
    rejected_rows when scoring, left out of training); above the share, the whole partition
    fails. 0 = any broken row fails the partition."""

    not_null: float = Field(0.0, ge=0, le=1)  # a null in a non-nullable column
    type: float = Field(0.0, ge=0, le=1)  # 3.7 in an int, 7 in a bool, text in a number
    range: float = Field(0.0, ge=0, le=1)  # outside min/max, or +/-inf
    category: float = Field(0.0, ge=0, le=1)  # unknown value where on_unknown is reject
    unique: float = Field(0.0, ge=0, le=1)  # an entity id repeated within the day
    label: float = Field(0.0, ge=0, le=1)  # a label that is not a class (binary)


SAMPLE_ROWS = 100_000  # validation.sample_rows by default


class ValidationConfig(Frozen):
    min_rows: int = Field(1, ge=1)
    reject_up_to: RejectPolicy = RejectPolicy()
    # Rows whose event date is not their partition's day (a file under the wrong dt=):
    # fail the partition (default), or reject those rows with the reason and keep the rest.
    event_date_mismatch: Literal["reject", "fail"] = "fail"
    extra_expectations: tuple[ExtraExpectation, ...] = ()
    data_docs: bool = True
    # Great Expectations runs on at most this many rows of a partition (every k-th row): the
    # column checks, extra_expectations and Data Docs. The row rules and min_rows are judged
    # on every row whatever it is (validation.validate_partition).
    sample_rows: int = Field(SAMPLE_ROWS, ge=1)

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """sample_rows is left out at its default: verdicts (rules.spec_hash) and training
        windows recorded before it existed stay current. Another value may change what
        extra_expectations see, so it revalidates."""
        data: dict[str, Any] = handler(self)
        if data.get("sample_rows") == SAMPLE_ROWS:
            del data["sample_rows"]
        return data


class GateConfig(Frozen):
    """A challenger is promoted only if it clears both bars on the shared holdout."""

    min_metric: float | None = None  # absolute floor on the primary metric (AUC / -RMSE)
    max_regression: float = 0.005  # how much worse than the champion it may be
    # against a champion an operator chose (promote, rollback, pin): how much better than it
    # a challenger must be (strictly more than this), instead of max_regression
    min_improvement_over_operator: float = Field(0.0, ge=0)
    # the challenger's primary metric must beat the linear baseline's (gblinear on the same
    # matrix, same splits) by at least this much, on the same holdout rows; null: reported only
    min_lift_over_baseline: float | None = None


class TuneConfig(Frozen):
    """A small random search over XGBoost's parameters on the time-ordered validation split
    (training.tune; off by default). Seeded: the same settings draw the same candidates in
    the same order; `budget_s` may stop the search early, and the report says how many ran."""

    enabled: bool = False
    trials: int = Field(20, ge=1)  # candidates drawn (the configured params are trial 0)
    budget_s: float = Field(300.0, gt=0)  # wall-clock budget for the whole search
    # parameter: [low, high]; ints when both bounds are ints, eta and min_child_weight drawn
    # on a log scale
    space: dict[str, tuple[int | float, int | float]] = Field(
        default_factory=lambda: {
            "max_depth": (3, 8),
            "eta": (0.02, 0.3),
            "min_child_weight": (1, 20),
            "subsample": (0.6, 1.0),
            "colsample_bytree": (0.6, 1.0),
        }
    )

    @model_validator(mode="after")
    def _check(self) -> TuneConfig:
        for name, (low, high) in self.space.items():
            if low > high:
                raise ValueError(f"training.tune.space.{name}: low {low} is above high {high}")
        return self


class TrainingConfig(Frozen):
    # The calendar days ending at the newest labelled partition (up to `until`): the window
    # keeps its span, so a day without a valid, labelled partition is missing from it (named
    # in prepare.json, the model manifest and reports), never replaced by an older day.
    window_days: int = Field(28, ge=1)
    missing_days: Literal["warn", "fail"] = "warn"  # fail: prepare refuses a window with gaps
    until: date | None = None  # train on labelled days up to this date (default: the newest)
    # days: valid and holdout are the newest days of the window (time-ordered data).
    # rows: a stable hash of the entity id splits the rows (snapshot data without dates).
    split: Literal["days", "rows"] = "days"
    valid_days: int = Field(3, ge=1)  # split days: early-stopping split, before the holdout
    holdout_days: int = Field(3, ge=1)  # split days: evaluation split, the newest days
    valid_fraction: float = Field(0.15, gt=0, lt=0.5)  # split rows
    holdout_fraction: float = Field(0.15, gt=0, lt=0.5)  # split rows
    num_boost_round: int = Field(300, ge=1)
    early_stopping_rounds: int = Field(20, ge=1)
    seed: int = 0
    nthread: int = Field(2, ge=1)
    params: dict[str, Any] = Field(default_factory=dict)
    gate: GateConfig = GateConfig()
    registry: str = "data/models"  # content-addressed model store
    # XGBoost holds at most this many rows (training + early-stopping splits together): a
    # deterministic sample of each split in proportion (the rows with the smallest hashes of
    # entity id and day), logged, reported and recorded in the manifest; null: every row.
    # Training's peak memory follows it, not the window (docs/design.md, "Memory").
    max_rows: int | None = Field(2_000_000, ge=1)
    # Refit before deploying: the gate judges a model trained without its holdout (the
    # "evaluated" model); the model registered and deployed is then refit on every labelled
    # row of the window (train + valid + holdout) with the evaluated model's number of rounds.
    # false: the evaluated model is the deployed one (the newest valid + holdout days unlearned).
    refit: bool = True
    tune: TuneConfig = TuneConfig()

    @model_validator(mode="after")
    def _check(self) -> TrainingConfig:
        if self.split == "days" and self.valid_days + self.holdout_days >= self.window_days:
            raise ValueError("training: valid_days + holdout_days must be < window_days")
        return self


class ScoringConfig(Frozen):
    input: str | None = None  # partitioned Parquet root to score; default: the lake's raw zone
    batch_rows: int = Field(131_072, ge=1)
    concurrency: int = Field(2, ge=1)
    nthread: int = Field(1, ge=1)  # xgboost threads per partition task
    dask_address: str | None = None  # run partition tasks on this Dask scheduler (prefect-dask)
    # an input with no verdict under the current spec: validate it first, or refuse it
    unvalidated: Literal["validate", "refuse"] = "validate"
    shadow: bool = False  # the nightly also scores the day with the challenger
    # a partition another run is scoring: wait this long for its lock, then fail the partition
    lock_timeout_s: float = Field(600.0, gt=0)


class FeatureDrift(Frozen):
    """One feature's own drift thresholds (null: the section's value). `ignore` keeps it
    measured and shown but never makes a day drifted: for a feature that shifts by
    construction, like the weekday of a one-day partition against a four-week window."""

    psi_moderate: float | None = Field(None, gt=0)
    psi_major: float | None = Field(None, gt=0)
    ignore: bool = False


class MonitoringConfig(Frozen):
    """Drift of each scored day against the model's training data (PSI over the deciles or
    categories stored with the model), and what it does to the run."""

    psi_moderate: float = Field(0.1, gt=0)  # level "moderate" in the drift table; no effect
    psi_major: float = Field(0.25, gt=0)  # a feature above it: the day is drifted
    score_psi_major: float | None = Field(0.25, gt=0)  # the model's scores; null: not checked
    features: dict[str, FeatureDrift] = Field(default_factory=dict)  # per-feature overrides
    # a challenger whose holdout is drifted against the champion's training data is not
    # promoted automatically (it stays challenger, the gate's reason says why)
    block_promotion_on_drift: bool = True
    # that many nights in a row with the gate blocked by drift: the nightly ends Blocked (the
    # champion is frozen) and notifies, instead of rejecting the challenger in silence
    drift_block_nights: int = Field(3, ge=1)

    def thresholds(self, feature: str) -> tuple[float, float | None]:
        """(moderate, major) PSI for a feature, its overrides applied; major None: the
        feature never makes a day drifted."""
        own = self.features.get(feature, FeatureDrift())
        moderate = own.psi_moderate or self.psi_moderate
        return moderate, None if own.ignore else own.psi_major or self.psi_major


class NotificationsConfig(Frozen):
    """A JSON summary POSTed to a webhook when a nightly (or a score run of its own) ends in one
    of the `on` states.
    The URL comes from the environment (it often holds a token) and is never logged."""

    webhook_url_env: str = "BATCHPRED_WEBHOOK_URL"  # unset or empty variable: no notification
    on: tuple[Literal["failed", "drifted", "blocked"], ...] = ("failed", "drifted", "blocked")
    timeout_seconds: float = Field(5.0, gt=0)


class ScheduleConfig(Frozen):
    """When the nightly deployment runs (make serve, prefect.yaml): a cron expression read in
    an IANA timezone. A run the schedule created, with no `day`, is named by the date of its
    scheduled start in that timezone."""

    cron: str = "0 2 * * *"
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _check(self) -> ScheduleConfig:
        try:
            ZoneInfo(self.timezone)
        except (ValueError, ZoneInfoNotFoundError):
            msg = f"schedule.timezone {self.timezone!r} is not an IANA timezone"
            raise ValueError(msg) from None
        return self


class Settings(Frozen):
    dataset: DatasetSpec
    demo: DemoConfig = DemoConfig()
    source: SourceConfig = SourceConfig()
    labels: LabelsConfig = LabelsConfig()
    lake: LakeConfig = LakeConfig()
    validation: ValidationConfig = ValidationConfig()
    training: TrainingConfig = TrainingConfig()
    scoring: ScoringConfig = ScoringConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    notifications: NotificationsConfig = NotificationsConfig()
    schedule: ScheduleConfig = ScheduleConfig()

    @model_validator(mode="after")
    def _known_drift_features(self) -> Settings:
        unknown = set(self.monitoring.features) - set(self.dataset.feature_names)
        if unknown:
            raise ValueError(
                f"monitoring.features names no feature of dataset {self.dataset.name!r}: "
                f"{sorted(unknown)}"
            )
        return self

    @property
    def scoring_input(self) -> str:
        return self.scoring.input or self.lake.raw


# --- loading ------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 also reads yes, no, on, off as booleans,
    which turns a category or class named `no` into False."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


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
    """Deep-merge the YAML files in order (later wins), then `overrides`, and validate. The
    one loader of configuration: a missing file, bad YAML or a setting the models refuse is a
    SetupError, one line naming the file and the key (and the close match of a typo)."""
    given = list(paths) if paths else None
    files = config_files(given)
    try:
        merged: dict[str, Any] = {}
        for path in files:
            with open(path) as fh:
                data = yaml.load(fh, Loader=_Loader) or {}
            if not isinstance(data, dict):
                raise SetupError(f"config {path}: top level must be a mapping")
            merged = deep_merge(merged, data)
        if overrides:
            merged = deep_merge(merged, overrides)
        settings = Settings.model_validate(merged)
        # Defaults hold `{dataset}` too: expand the validated whole, then validate again.
        return Settings.model_validate(_expand(settings.model_dump(), settings.dataset.name))
    except FileNotFoundError as exc:
        raise SetupError(
            f"config file {exc.filename or exc} does not exist{_config_origin(given)} "
            f"(working directory {Path.cwd()})"
        ) from None
    except IsADirectoryError as exc:
        raise SetupError(f"config file {exc.filename} is a folder, not a YAML file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = (
            f"{mark.name} line {mark.line + 1}" if mark is not None else ", ".join(map(str, files))
        )
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SetupError(f"config {where}: not valid YAML: {problem}") from None
    except ValidationError as exc:
        errors = exc.errors()
        line = _config_error(dict(errors[0]), files, given)
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise SetupError(line + more) from exc


def _config_origin(given: list[str | Path] | None) -> str:
    if given:
        return ""
    if os.environ.get(CONFIG_ENV):
        return f" (from ${CONFIG_ENV})"
    return f" (the default; set --config or ${CONFIG_ENV})"


def _yaml_of(path: Path) -> Any:
    """A config file as load_settings reads it; None when it cannot be read."""
    with suppress(OSError, yaml.YAMLError), open(path) as fh:
        return yaml.load(fh, Loader=_Loader)
    return None


def _has(data: Any, loc: tuple[Any, ...]) -> bool:
    for part in loc:
        in_dict = isinstance(data, dict) and part in data
        in_list = isinstance(data, list) and isinstance(part, int) and part < len(data)
        if not (in_dict or in_list):
            return False
        data = data[part]
    return True


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the settings model accepts at `loc` (a path of keys and list indices)."""
    model: type[BaseModel] = Settings
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        candidates = [field.annotation, *typing.get_args(field.annotation)]
        nested = [
            c
            for a in candidates
            for c in [a, *typing.get_args(a)]
            if isinstance(c, type) and issubclass(c, BaseModel)
        ]
        if not nested:
            return []
        model = nested[0]
    return sorted(model.model_fields)


def _config_error(err: dict[str, Any], paths: list[Path], given: list[str | Path] | None) -> str:
    """One pydantic error of the merged config as a line naming the file and the key."""
    loc = tuple(err.get("loc") or ())
    key = ".".join(str(p) for p in loc) or "(top level)"
    # Which file: the last layer that sets the key (or, for a key missing everywhere, all).
    owner = next((p for p in reversed(paths) if loc and _has(_yaml_of(p), loc)), None)
    where = str(owner) if owner else ", ".join(map(str, paths)) + _config_origin(given)
    kind, msg = err.get("type", ""), str(err.get("msg", "")).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        under = ".".join(str(p) for p in loc[:-1]) or "the top level"
        known = f" (known under {under}: {', '.join(allowed)})" if allowed else ""
        return f"config {where}: unknown key {key!r}{hint}{known}"
    if kind == "missing":
        return f"config {where}: {key} is required and not set"
    got = err.get("input")
    shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
    return f"config {where}: {key}: {msg}{shown}"


def _expand(value: Any, dataset: str) -> Any:
    """Replace `{dataset}` in every string setting (paths and URLs) by the dataset's name."""
    if isinstance(value, str):
        return value.replace("{dataset}", dataset)
    if isinstance(value, dict):
        return {k: v if k == "dataset" else _expand(v, dataset) for k, v in value.items()}
    return value


def database_url() -> str:
    """The predictions database; only ever from the environment (it may hold a password)."""
    return os.environ.get(DATABASE_URL_ENV, "sqlite:///data/batchpred.db")
