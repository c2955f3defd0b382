"""Great Expectations data contracts derived from a dataset spec: build, run, report, render."""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import fsspec
import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from great_expectations.core.expectation_validation_result import (
    ExpectationSuiteValidationResult,
    ExpectationValidationResult,
)
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import (
    DataContextConfig,
    FilesystemStoreBackendDefaults,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)
from great_expectations.data_context.types.resource_identifiers import (
    ExpectationSuiteIdentifier,
    ValidationResultIdentifier,
)
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import (
    ColumnMapExpectation,
    _format_map_output,
    _mostly_success,
)
from great_expectations.expectations.expectation_configuration import parse_result_format
from great_expectations.expectations.metrics.map_metric_provider import (
    ColumnMapMetricProvider,
    column_condition_partial,
)
from great_expectations.util import convert_to_json_serializable
from great_expectations.validator.validation_statistics import calc_validation_statistics

from batchpred import rules, storage, verdicts
from batchpred.config import DatasetSpec, ScoringConfig, ValidationConfig
from batchpred.verdicts import Failure, ValidationError, ValidationReport

__all__ = ["Failure", "ValidationError", "ValidationReport", "validate_frame", "validate_partition"]

_INTS = [f"{p}int{b}" for p in ("", "u") for b in (8, 16, 32, 64)]
_INTS += [f"{p}Int{b}Dtype" for p in ("", "U") for b in (8, 16, 32, 64)]
_FLOATS = ["float16", "float32", "float64", "Float32Dtype", "Float64Dtype"]
_DATES = ["date"] + [f"datetime64[{u}]" for u in ("s", "ms", "us", "ns")]
_BOOLS = ["bool", "BooleanDtype"]
# Column-level types, the pandas twin of rules.compatible: numbers are accepted for int and
# bool features because the row rules (integer, bool) then judge each value, as the scoring
# stream does; text in a numeric column fails the column.
_TYPES: dict[str, list[str]] = {
    "int": _INTS + _FLOATS,
    "float": _FLOATS + _INTS,
    "bool": _BOOLS + _INTS + _FLOATS,
    "category": ["str"],  # string columns are validated as object, value by value
    "string": ["str"] + _INTS,
    "date": _DATES,
}
_NOT_ARGS = {
    "column",
    "column_list",
    "ignore_row_if",
    "batch_id",
    "result_format",
    "include_config",
    "catch_exceptions",
    "rule_value",
}
_LOCK = threading.RLock()  # GX contexts and stores are not thread safe
_STATE: dict[str, Any] = {}
_SUITES: dict[tuple[str, str, bool, frozenset[str], date | None], gx.ExpectationSuite] = {}
_DOCS: dict[str, Any] = {}


def _num(value: float | None) -> float | int | None:
    return int(value) if value is not None and float(value).is_integer() else value


def expectation_class(type_: str) -> type[gxe.Expectation]:
    """The GX class for a snake_case expectation type; ValueError if there is none."""
    name = "".join(part.capitalize() for part in type_.split("_"))
    cls = getattr(gxe, name, None)
    if not (type_.startswith("expect_") and isinstance(cls, type)):
        raise ValueError(f"unknown Great Expectations expectation type {type_!r}")
    if not issubclass(cls, gxe.Expectation):
        raise ValueError(f"{type_!r} is not a Great Expectations expectation")
    return cls


class ColumnValuesFollowRule(ColumnMapMetricProvider):
    """GX metric evaluating a batchpred row rule with rules.bad_rows itself: the value-level
    rules that GX has no built-in for (integer, bool, finite, unique, label, partition_day)
    are computed by the very function the scoring stream uses."""

    condition_metric_name = "column_values.batchpred_rule"
    condition_value_keys = ("rule_kind", "rule_value")

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, rule_kind: str, rule_value: Any, **kwargs: Any) -> Any:
        value = tuple(rule_value) if isinstance(rule_value, list) else rule_value
        rule = rules.Rule(str(column.name), rule_kind, value)  # type: ignore[arg-type]
        bad = rules.bad_rows(rule, pa.array(column.to_numpy(), from_pandas=True))
        return pd.Series(~bad, index=column.index)


class ExpectColumnValuesToFollowBatchpredRule(ColumnMapExpectation):
    """Expect column values to follow a batchpred row rule (integer, bool, finite, unique,
    label or partition_day), as the scoring stream evaluates it."""

    rule_kind: str
    rule_value: list[Any] | float | str | None = None

    map_metric = "column_values.batchpred_rule"
    args_keys = ("column", "rule_kind", "rule_value")
    success_keys = ("rule_kind", "rule_value", "mostly")


def _expectation(rule: rules.Rule) -> gxe.Expectation:
    """The GX expectation of one row rule; `mostly` is 1 - the family's reject share."""
    mostly = 1.0 - rule.threshold
    if rule.kind == "not_null":
        return gxe.ExpectColumnValuesToNotBeNull(column=rule.column, mostly=mostly)
    if rule.kind == "min":
        assert isinstance(rule.value, float)
        return gxe.ExpectColumnValuesToBeBetween(
            column=rule.column, min_value=_num(rule.value), mostly=mostly
        )
    if rule.kind == "max":
        assert isinstance(rule.value, float)
        return gxe.ExpectColumnValuesToBeBetween(
            column=rule.column, max_value=_num(rule.value), mostly=mostly
        )
    if rule.kind == "in_set":
        assert isinstance(rule.value, tuple)
        return gxe.ExpectColumnValuesToBeInSet(
            column=rule.column, value_set=list(rule.value), mostly=mostly
        )
    value = list(rule.value) if isinstance(rule.value, tuple) else rule.value
    return ExpectColumnValuesToFollowBatchpredRule(
        column=rule.column, rule_kind=rule.kind, rule_value=value, mostly=mostly
    )


def _build(
    spec: DatasetSpec,
    cfg: ValidationConfig,
    with_target: bool,
    present: frozenset[str],
    day: date | None = None,
) -> gx.ExpectationSuite:
    """The suite compiled from rules.compile_rules. `present`: the frame's columns; the label
    is optional (checked only where present), every other column must exist. `day`: the
    suite of that day's partition (its event dates must be the day)."""
    expectations: list[gxe.Expectation] = []
    add = expectations.append
    columns = [(spec.entity_id, spec.entity_id_dtype), (spec.event_date, "date")]
    columns += [(f.name, f.dtype) for f in spec.features]
    label_kind = "float" if spec.target.task == "regression" else None
    label_present = spec.target.name in present
    for name, kind in columns:
        add(gxe.ExpectColumnToExist(column=name))
        if name in present:
            add(
                gxe.ExpectColumnValuesToBeInTypeList(
                    column=name, type_list=_TYPES[kind], meta={"expected": kind}
                )
            )
    if with_target and label_present and label_kind:
        add(
            gxe.ExpectColumnValuesToBeInTypeList(
                column=spec.target.name, type_list=_TYPES[label_kind], meta={"expected": label_kind}
            )
        )
    for rule in rules.compile_rules(spec, cfg, label=with_target, day=day):
        if rule.column in present:
            add(_expectation(rule))
    add(gxe.ExpectTableRowCountToBeBetween(min_value=cfg.min_rows))
    for extra in cfg.extra_expectations:
        cls = expectation_class(extra.type)
        if extra.kwargs.get("column") not in (None, *present):
            continue
        try:
            add(cls(**extra.kwargs))
        except Exception as exc:  # pydantic errors for bad kwargs
            raise ValueError(f"expectation {extra.type!r} with {extra.kwargs}: {exc}") from exc
    return gx.ExpectationSuite(name=spec.name, expectations=expectations)


def build_suite(
    spec: DatasetSpec,
    cfg: ValidationConfig,
    *,
    columns: list[str] | None = None,
    day: date | None = None,
) -> gx.ExpectationSuite:
    """The expectation suite a frame with `columns` (default: all of the spec's, label
    included) must satisfy; with `day`, as the partition of that day."""
    if columns is None:
        columns = [spec.entity_id, spec.event_date, *spec.feature_names, spec.target.name]
    return _build(spec, cfg, True, frozenset(columns), day)


def _suite(
    spec: DatasetSpec,
    cfg: ValidationConfig,
    with_target: bool,
    present: frozenset[str],
    day: date | None,
) -> gx.ExpectationSuite:
    key = (spec.model_dump_json(), cfg.model_dump_json(), with_target, present, day)
    if key not in _SUITES:
        _SUITES[key] = _build(spec, cfg, with_target, present, day)
    return _SUITES[key]


def _config(**kwargs: Any) -> DataContextConfig:
    return DataContextConfig(
        analytics_enabled=False, progress_bars=ProgressBarsConfig(globally=False), **kwargs
    )


def _batch_definition() -> Any:
    if "batch" not in _STATE:
        ctx = gx.get_context(
            mode="ephemeral",
            project_config=_config(store_backend_defaults=InMemoryStoreBackendDefaults()),
        )
        asset = ctx.data_sources.add_pandas("batchpred").add_dataframe_asset("frame")
        _STATE["batch"] = asset.add_batch_definition_whole_dataframe("whole")
    return _STATE["batch"]


def prepare(reports_url: str | None, cfg: ValidationConfig) -> None:
    """Set up what every partition's validation shares (the Great Expectations contexts)
    once, before partitions are validated in parallel: else the first ones set it up in
    turn under the lock, while the other workers wait."""
    with _LOCK:
        _batch_definition()
        if reports_url and cfg.data_docs and _is_local(reports_url):
            _docs_context(_local_root(reports_url))


def _local_root(reports_url: str) -> str:
    return os.path.abspath(fsspec.utils.stringify_path(reports_url).removeprefix("file://"))


def _docs_context(root: str) -> Any:
    """An ephemeral context whose validation store and Data Docs site live under `root`."""
    if root not in _DOCS:
        site = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": os.path.join(root, "data_docs"),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
        stores = FilesystemStoreBackendDefaults(root_directory=os.path.join(root, "gx"))
        cfg = _config(store_backend_defaults=stores, data_docs_sites={"batchpred": site})
        _DOCS[root] = gx.get_context(mode="ephemeral", project_config=cfg)
    return _DOCS[root]


def slug(subject: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", subject).strip("_.")[:150] or "frame"


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _arg(name: str, value: Any) -> str:
    """One rule argument for a message; a long value set is summarised, never listed whole."""
    if isinstance(value, list) and len(value) > 8:
        return f"{name}=<{len(value)} values: {', '.join(map(repr, value[:3]))}, ...>"
    return f"{name}={_num(value) if isinstance(value, float) else value!r}"


def _failure(res: dict[str, Any]) -> Failure:
    conf = res["expectation_config"]
    kwargs = conf.get("kwargs", {})
    meta = conf.get("meta") or {}
    args = ", ".join(
        f"expected={meta['expected']}" if k == "type_list" and "expected" in meta else _arg(k, v)
        for k, v in kwargs.items()
        if k not in _NOT_ARGS and v is not None
    )
    out = res.get("result") or {}
    info = res.get("exception_info") or {}
    errors = [info] if "raised_exception" in info else list(info.values())
    messages = [e.get("exception_message") for e in errors if e.get("raised_exception")]
    if messages:
        detail = f"error: {messages[0]}"
    elif "unexpected_count" in out:
        detail = f"{out['unexpected_count']} of {out.get('element_count')} rows"
        examples = []
        for v in out.get("partial_unexpected_list") or []:
            # compound rules report each example as {column: value}; show the values
            v = _plain(tuple(v.values()) if isinstance(v, dict) else v)
            if v not in examples:
                examples.append(v)
        if any(v is not None for v in examples):
            detail += f", e.g. {examples[:3]}"
    elif "observed_value" in out:
        detail = f"observed {out['observed_value']!r}"
    else:
        detail = ""
    column = kwargs.get("column") or ", ".join(kwargs.get("column_list") or []) or None
    return Failure(column, conf["type"], detail, args)


def _for_gx(df: pd.DataFrame) -> pd.DataFrame:
    """Strings and categoricals as object, so GX checks them value by value (it cannot match
    pandas' str dtype against a type name)."""
    out = df.copy(deep=False)
    for name, dtype in df.dtypes.items():
        if isinstance(dtype, pd.StringDtype | pd.CategoricalDtype):
            out[name] = df[name].astype(object)
    return out


def _is_local(url: str) -> bool:
    return fsspec.utils.get_protocol(url) in ("file", "local")


def validate_frame(
    df: pd.DataFrame,
    spec: DatasetSpec,
    cfg: ValidationConfig,
    *,
    subject: str,
    reports_url: str | None,
    with_target: bool = True,
    stream: _RowStream | None = None,
    day: date | None = None,
    docs_index: bool = True,
) -> ValidationReport:
    """Validate `df` against the spec's suite; write JSON (and Data Docs) under reports_url.
    With `stream`, `df` is a sample of the rows `stream` saw, and the expectations of the
    row rules and min_rows are judged on all of them (_validate_with_stream). With `day`, `df`
    is that day's partition: its event dates must be the day (rules.compile_rules).
    `docs_index`: also rebuild the Data Docs index page (a run validating many partitions
    builds it once at the end instead: build_docs_index)."""
    frame = _for_gx(df)
    with _LOCK:
        suite = _suite(spec, cfg, with_target, frozenset(df.columns), day)
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame})
        if stream is None:
            result = batch.validate(suite, result_format="SUMMARY")
        else:
            result = _validate_with_stream(batch, frame, suite, stream, cfg)
    rows = len(df) if stream is None else stream.rows
    raw = _result_json(result)
    found = [_failure(r) for r in raw["results"] if not r["success"]]
    order = {name: i for i, name in enumerate(df.columns)}  # missing columns first
    found.sort(key=lambda f: (order.get(f.column, -1) if f.column else len(order), f.expectation))
    failures = tuple(found)
    json_path = docs_path = None
    if reports_url:
        name = slug(subject)
        if cfg.data_docs and _is_local(reports_url):
            root = _local_root(reports_url)
            run = RunIdentifier(run_name=name, run_time=datetime.now(UTC))
            key = ValidationResultIdentifier(ExpectationSuiteIdentifier(suite.name), run, name)
            with _LOCK:
                ctx = _docs_context(root)
                ctx.validation_results_store.set(key, result)
                ctx.build_data_docs(
                    site_names=["batchpred"], resource_identifiers=[key], build_index=docs_index
                )
            docs_path = os.path.join(root, "data_docs", "validations", *key.to_tuple()) + ".html"
        json_path = f"{reports_url.rstrip('/')}/validation/{name}.json"
        summary = {"subject": subject, "success": bool(result.success), "rows": rows}
        if stream is not None:  # how many rows the sample-judged expectations saw
            summary["sample_rows"] = len(df)
        summary |= {"failures": [asdict(f) for f in failures], "docs_path": docs_path, "gx": raw}
        fs, path = fsspec.core.url_to_fs(json_path)
        fs.makedirs(os.path.dirname(path), exist_ok=True)
        fs.pipe_file(path, json.dumps(summary, indent=2, default=str).encode())
    return ValidationReport(
        subject=subject,
        success=bool(result.success),
        failures=failures,
        evaluated=len(raw["results"]),
        rows=rows,
        json_path=json_path,
        docs_path=docs_path,
    )


def _result_json(result: ExpectationSuiteValidationResult) -> dict[str, Any]:
    """`result.to_json_dict()`, equal to it, at half its cost: GX's suite-level dump deep-copies
    every result, then serializes each one twice (once by itself, once nested in the suite's
    schema); here each result is serialized once by its own to_json_dict, and the suite's few
    fields as ExpectationSuiteValidationResultSchema writes them. A small partition's 180
    results: 0.067-0.093 s -> 0.033-0.047 s."""
    return {
        "success": result.success,
        "results": [res.to_json_dict() for res in result.results],
        "suite_name": result.suite_name,
        "suite_parameters": convert_to_json_serializable(result.suite_parameters),
        "statistics": convert_to_json_serializable(result.statistics),
        "meta": convert_to_json_serializable(result.meta),
        "id": None if result.id is None else str(result.id),
    }


def build_docs_index(reports_url: str, cfg: ValidationConfig) -> None:
    """Rebuild the Data Docs index page under `reports_url` (every stored validation result):
    once per run, after validate_partition(..., docs_index=False) calls."""
    if not (cfg.data_docs and _is_local(reports_url)):
        return
    root = _local_root(reports_url)
    with _LOCK:
        # GX rebuilds the pages of the identifiers given (all when none): one that names no
        # stored result makes it build the index page alone
        nothing = ExpectationSuiteIdentifier("batchpred-index-only")
        _docs_context(root).build_data_docs(
            site_names=["batchpred"], resource_identifiers=[nothing]
        )


def validate_or_raise(
    df: pd.DataFrame,
    spec: DatasetSpec,
    cfg: ValidationConfig,
    *,
    subject: str,
    reports_url: str | None,
    with_target: bool = True,
) -> ValidationReport:
    """validate_frame, raising ValidationError (its message names every failure) if invalid."""
    report = validate_frame(
        df, spec, cfg, subject=subject, reports_url=reports_url, with_target=with_target
    )
    if not report.success:
        raise ValidationError(report)
    return report


# --- partitions: row rules on every row, Great Expectations on a sample ------------------------

BATCH_ROWS: int = ScoringConfig.model_fields["batch_rows"].default  # rows per record batch
_SUMMARY = parse_result_format("SUMMARY")  # GX keeps the first 20 unexpected values a rule


def _streamed(rule: rules.Rule, dtype: pa.DataType) -> bool:
    """Whether the rule's GX expectation is judged on every row for a column of this type. The
    built-in between and in_set expectations cannot judge a column of the wrong type (text in
    a number): those columns fail their type expectation anyway, and keep GX's result on the
    sample for all their expectations. The batchpred rules evaluate rules.bad_rows in GX too."""
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    if rule.kind in ("min", "max"):
        return pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_null(dtype)
    if rule.kind == "in_set":
        return pa.types.is_string(dtype) or pa.types.is_large_string(dtype)
    return True


@dataclass
class _Seen:
    """One rule over all rows so far: rows it applies to (GX's nonnull count; every row for
    not_null), rows breaking it, and the first unexpected values with their row numbers."""

    applied: int = 0
    broken: int = 0
    examples: list[pa.Array] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)


class _RowStream:
    """A partition's record batches, in order: every row rule evaluated on every row, and a
    sample of at most `sample_rows` rows for Great Expectations: every k-th row, k = 1, 2, 4,
    ... (doubled, dropping every other sampled row, whenever more than `sample_rows` are
    held). Deterministic, spread over the whole partition, and all of it when the partition
    has at most `sample_rows` rows. Memory: a batch, the sample, 8 bytes a row of id hashes."""

    def __init__(
        self,
        spec: DatasetSpec,
        cfg: ValidationConfig,
        schema: pa.Schema,
        sample_rows: int,
        day: date | None = None,
    ) -> None:
        self.schema = schema
        self.rules = [
            rule
            for rule in rules.compile_rules(spec, cfg, day=day)
            if rule.column in schema.names and _streamed(rule, schema.field(rule.column).type)
        ]
        self.seen = {rule: _Seen() for rule in self.rules}
        self.nulls = dict.fromkeys(schema.names, 0)
        self.ids = rules.SeenIds()
        self.rows = 0
        self.sample_rows, self.step = sample_rows, 1
        self.sample: list[tuple[np.ndarray, pa.RecordBatch]] = []  # (row numbers, rows)
        self.sampled = 0

    def add(self, batch: pa.RecordBatch) -> None:
        start = self.rows
        cells = rules.BatchCells(batch)
        for rule in self.rules:
            column = batch.column(rule.column)
            bad = (
                self.ids.repeats(column)
                if rule.kind == "unique"
                else rules.bad_rows(rule, cells[rule.column])
            )
            seen = self.seen[rule]
            seen.applied += (
                batch.num_rows if rule.kind == "not_null" else cells[rule.column].applied
            )
            broken = np.flatnonzero(bad)
            seen.broken += broken.size
            room = _SUMMARY["partial_unexpected_count"] - len(seen.rows)
            if room > 0 and broken.size:
                seen.examples.append(column.take(pa.array(broken[:room])))
                seen.rows += (start + broken[:room]).tolist()
        for name in batch.schema.names:
            self.nulls[name] += batch.column(name).null_count
        self.rows += batch.num_rows
        numbers = np.arange(start, self.rows)
        keep = numbers % self.step == 0
        self._hold(numbers[keep], batch.filter(pa.array(keep)))

    def _hold(self, numbers: np.ndarray, rows: pa.RecordBatch) -> None:
        self.sample.append((numbers, rows))
        self.sampled += len(numbers)
        while self.sampled > self.sample_rows:
            self.step *= 2
            thinned = []
            for numbers, rows in self.sample:
                keep = numbers % self.step == 0
                thinned.append((numbers[keep], rows.filter(pa.array(keep))))
            self.sample = thinned
            self.sampled = sum(len(n) for n, _ in thinned)

    def frame(self) -> pd.DataFrame:
        """The sample as pandas, converted as a whole partition read would be; once thinned,
        indexed by row number in the partition (GX reports unexpected rows by index)."""
        batches = [rows for _, rows in self.sample if rows.num_rows]
        table = pa.Table.from_batches(batches) if batches else self.schema.empty_table()
        df = table.replace_schema_metadata(self.schema.metadata).to_pandas()
        if self.step > 1:
            df.index = pd.Index(np.concatenate([numbers for numbers, _ in self.sample]))
        return df

    def unexpected_values(self, rule: rules.Rule) -> list[Any]:
        """The first unexpected values as GX lists them from the whole partition in pandas:
        an int column holding nulls is float there."""
        seen = self.seen[rule]
        if not seen.examples:
            return []
        values = pa.concat_arrays(seen.examples)
        if pa.types.is_integer(values.type) and self.nulls[rule.column]:
            values = values.cast(pa.float64())
        return list(_for_gx(pa.table({rule.column: values}).to_pandas())[rule.column])

    def outcome(self, rule: rules.Rule) -> dict[str, Any]:
        """GX's SUMMARY result of the rule's expectation, judged on every row."""
        seen, total, mostly = self.seen[rule], self.rows, 1.0 - rule.threshold
        nonnull: int | None
        if rule.kind == "not_null":  # as ExpectColumnValuesToNotBeNull: every row counts
            nonnull = None
            success = total == 0 or (total - seen.broken) / total >= mostly
        else:
            nonnull = seen.applied
            success = total == 0 or nonnull == 0 or _mostly_success(nonnull, seen.broken, mostly)
        return _format_map_output(
            result_format=_SUMMARY,
            success=success,
            element_count=total,
            nonnull_count=nonnull,
            unexpected_count=seen.broken,
            unexpected_list=self.unexpected_values(rule),
            unexpected_index_list=list(seen.rows),
        )


def _kwargs(config: Any) -> dict[str, Any]:
    return {k: v for k, v in config.kwargs.items() if k != "batch_id"}


def _stream_outcome(
    config: Any,
    rule_configs: list[tuple[rules.Rule, Any]],
    stream: _RowStream,
    cfg: ValidationConfig,
    dtypes: dict[str, Any],
) -> dict[str, Any] | None:
    """The SUMMARY outcome (success, result) of expectation `config` judged on every row the
    stream saw, when it is one of the row rules' expectations or min_rows, or a column's
    existence or type, which GX would judge from the sample's columns and dtypes alone
    (`dtypes`, the frame's); else None."""
    if config.type == "expect_table_row_count_to_be_between" and _kwargs(config) == {
        "min_value": cfg.min_rows
    }:
        return {"success": stream.rows >= cfg.min_rows, "result": {"observed_value": stream.rows}}
    if config.type == "expect_column_to_exist" and set(_kwargs(config)) == {"column"}:
        # GX's own test (ExpectColumnToExist._validate): the name among the frame's columns;
        # through GX, one metric graph per column.
        return {"success": config.kwargs["column"] in dtypes, "result": {}}
    if config.type == "expect_column_values_to_be_in_type_list":
        # GX's own aggregate check, as it runs it for any dtype but object (an object column
        # is judged value by value, by GX on the sample). GX resolves the frame's column
        # types anew for each such expectation: most of a small partition's validation.
        dtype = dtypes.get(config.kwargs["column"])
        if dtype is not None and dtype.type.__name__ != "object_":
            check = gxe.ExpectColumnValuesToBeInTypeList(**_kwargs(config))
            return check._validate_pandas(dtype, config.kwargs["type_list"])
    for rule, expected in rule_configs:
        if config.type == expected.type and _kwargs(config) == _kwargs(expected):
            return stream.outcome(rule)
    return None


def _raised(res: ExpectationValidationResult) -> bool:
    info = res.exception_info or {}
    errors = [info] if "raised_exception" in info else list(info.values())
    return any(isinstance(e, dict) and e.get("raised_exception") for e in errors)


def _column_group(config: Any) -> str:
    column = config.kwargs.get("column")
    return column if isinstance(column, str) else "\0table"


def _validate_with_stream(
    batch: Any,
    frame: pd.DataFrame,
    suite: gx.ExpectationSuite,
    stream: _RowStream,
    cfg: ValidationConfig,
) -> ExpectationSuiteValidationResult:
    """The suite's result with the row rules' expectations and min_rows judged on every row
    the stream saw, the types of columns of a non-object dtype judged as GX judges them from
    the sample `frame` (the batch's data), and only the rest (column existence, the types of
    object columns, extra_expectations, rules the stream cannot judge for a column's type)
    run by GX on the sample: GX never computes a result that would be replaced, which was
    most of a small partition's validation time. The results keep the suite's order, as GX
    gives them."""
    rule_configs = [(rule, _expectation(rule).configuration) for rule in stream.rules]
    configs = [e.configuration for e in suite.expectations]
    dtypes = dict(frame.dtypes)
    placed: dict[int, ExpectationValidationResult] = {}
    rest: list[int] = []
    for i, config in enumerate(configs):
        outcome = _stream_outcome(config, rule_configs, stream, cfg, dtypes)
        if outcome is None:
            rest.append(i)
        else:
            placed[i] = ExpectationValidationResult(
                success=outcome["success"], expectation_config=config, result=outcome["result"]
            )
    sample_suite = gx.ExpectationSuite(
        name=suite.name,
        expectations=[suite.expectations[i].copy(update={"id": None}) for i in rest],
    )
    result = batch.validate(sample_suite, result_format="SUMMARY")
    waiting = list(rest)  # GX's results back to their place in the suite
    for res in result.results:
        got = res.expectation_config
        i = next(
            i
            for i in waiting
            if configs[i].type == got.type and _kwargs(configs[i]) == _kwargs(got)
        )
        waiting.remove(i)
        placed[i] = res
        batch_id = got.kwargs.get("batch_id")
    for res in placed.values():  # as GX writes every config: with the batch it judged
        mine = res.expectation_config
        if mine is not None and "batch_id" not in mine.kwargs:
            mine.kwargs = {"batch_id": batch_id, **mine.kwargs}
    # GX's order: the results of expectations that raised first, as GX gave them, then the
    # rest grouped by column in order of first appearance (table-level ones as one group)
    raised = [res for res in result.results if _raised(res)]
    groups: dict[str, int] = {}
    for config in configs:
        groups.setdefault(_column_group(config), len(groups))
    order = sorted(placed, key=lambda i: (groups[_column_group(configs[i])], i))
    result.results = raised + [placed[i] for i in order if not _raised(placed[i])]
    stats = calc_validation_statistics(result.results)
    result.success = stats.success
    result.statistics = {
        "evaluated_expectations": stats.evaluated_expectations,
        "successful_expectations": stats.successful_expectations,
        "unsuccessful_expectations": stats.unsuccessful_expectations,
        "success_percent": stats.success_percent,
    }
    return result


def validate_partition(
    engine: sa.Engine,
    spec: DatasetSpec,
    cfg: ValidationConfig,
    root: str,
    day: date,
    *,
    reports_url: str | None,
    run_id: str,
    batch_rows: int = BATCH_ROWS,
    docs_index: bool = True,
) -> ValidationReport:
    """Validate one partition's current files and store the verdict under their content key
    and the spec hash (see verdicts.partition_status). A file whose columns the spec cannot
    accept (text in a number) fails here too, named with the column.

    Memory does not grow with the partition (but for 8 bytes a row of entity id hashes): its
    files are streamed in record batches of `batch_rows` rows. The expectations of the row
    rules (rules.compile_rules) and min_rows are judged on every row, as the scoring stream
    judges them: counts, shares against reject_up_to and the first unexpected values. Great
    Expectations itself runs on a sample of at most validation.sample_rows rows spread evenly
    over the partition (see _RowStream), which judges the columns (existence, types) and
    extra_expectations and is what Data Docs show, with the row rules' results replaced by
    those on every row. A partition of at most sample_rows rows is all sample: the verdict
    is validate_frame's on the whole partition. Rows dated another day than `day` break
    the partition_day rule (validation.event_date_mismatch: fail, or reject those rows)."""
    files = storage.partition_files(root, day)
    subject = f"partition dt={day} ({', '.join(files)})"
    key = storage.fingerprint_partition(root, day)
    if not files:
        raise FileNotFoundError(f"no data files in partition {storage.partition_path(root, day)}")
    schema = storage.files_schema(files)
    stream = _RowStream(spec, cfg, schema, cfg.sample_rows, day)
    for batch in storage.iter_files(files, batch_rows, schema):
        stream.add(batch)
    report = validate_frame(
        stream.frame(),
        spec,
        cfg,
        subject=subject,
        reports_url=reports_url,
        stream=stream,
        day=day,
        docs_index=docs_index,
    )
    verdicts.record(engine, spec.name, day, key, rules.spec_hash(spec, cfg), report, run_id)
    return report
