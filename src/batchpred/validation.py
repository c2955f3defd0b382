"""Great Expectations data contracts derived from a dataset spec: build, run, report, render."""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import fsspec
import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
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

from batchpred.config import DatasetSpec, ValidationConfig

_INTS = [f"{p}int{b}" for p in ("", "u") for b in (8, 16, 32, 64)]
_INTS += [f"{p}Int{b}Dtype" for p in ("", "U") for b in (8, 16, 32, 64)]
_FLOATS = ["float16", "float32", "float64", "Float32Dtype", "Float64Dtype"]
_DATES = ["date"] + [f"datetime64[{u}]" for u in ("s", "ms", "us", "ns")]
# "float" also takes ints (lossless, and whole-number CSV columns read as int64); a nullable
# "int" may arrive as float64 because numpy ints cannot hold NaN.
_TYPES: dict[tuple[str, bool], list[str]] = {
    ("int", False): _INTS,
    ("int", True): _INTS + _FLOATS,
    ("float", False): _FLOATS + _INTS,
    ("float", True): _FLOATS + _INTS,
    ("bool", False): ["bool", "BooleanDtype"],
    ("bool", True): ["bool", "BooleanDtype"],  # with nulls: object column of bool/None
    ("category", False): ["str"],  # string columns are validated as object, value by value
    ("category", True): ["str"],
    ("string", False): ["str"],
    ("date", False): _DATES,
}
_NOT_ARGS = {
    "column",
    "column_list",
    "ignore_row_if",
    "batch_id",
    "result_format",
    "include_config",
    "catch_exceptions",
}
_LOCK = threading.RLock()  # GX contexts and stores are not thread safe
_STATE: dict[str, Any] = {}
_SUITES: dict[tuple[str, str, bool, frozenset[str]], gx.ExpectationSuite] = {}
_DOCS: dict[str, Any] = {}


@dataclass(frozen=True)
class Failure:
    column: str | None
    expectation: str  # snake_case GX type, e.g. expect_column_values_to_be_between
    detail: str  # what was found: count and examples, or the observed value
    args: str = ""  # the rule's arguments, e.g. "min_value=0, max_value=120"

    def __str__(self) -> str:
        where = f"column {self.column!r}" if self.column else "table"
        rule = f"{self.expectation}({self.args})" if self.args else self.expectation
        return f"{where} failed {rule}" + (f": {self.detail}" if self.detail else "")


@dataclass(frozen=True)
class ValidationReport:
    subject: str
    success: bool
    failures: tuple[Failure, ...]
    evaluated: int
    rows: int
    json_path: str | None
    docs_path: str | None

    def message(self) -> str:
        if self.success:
            return f"{self.subject}: valid ({self.evaluated} expectations, {self.rows} rows)"
        lines = [
            f"{self.subject}: validation failed, {len(self.failures)} of {self.evaluated} "
            f"expectations on {self.rows} rows:"
        ]
        lines += [f"  - {f}" for f in self.failures]
        lines += [f"  {k}: {v}" for k, v in (("report", self.json_path), ("docs", self.docs_path))]
        return "\n".join(line for line in lines if not line.endswith(": None"))


class ValidationError(Exception):
    def __init__(self, report: ValidationReport) -> None:
        super().__init__(report.message())
        self.report = report

    def __str__(self) -> str:
        return self.report.message()


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


def _build(
    spec: DatasetSpec, cfg: ValidationConfig, with_target: bool, skip: frozenset[str]
) -> gx.ExpectationSuite:
    expectations: list[gxe.Expectation] = []
    add = expectations.append
    # (name, dtype, nullable, min, max, categories) for every required column
    cols: list[tuple[str, str, bool, Any, Any, Any]] = [
        (spec.entity_id, spec.entity_id_dtype, False, None, None, None),
        (spec.event_date, "date", False, None, None, None),
    ]
    cols += [(f.name, f.dtype, f.nullable, f.min, f.max, f.categories) for f in spec.features]
    if with_target:
        kind = "int" if spec.target.task == "binary" else "float"
        cols.append((spec.target.name, kind, False, None, None, None))
    for name, dtype, nullable, lo, hi, cats in cols:
        add(gxe.ExpectColumnToExist(column=name))
        if name in skip:
            continue
        binary_target = name == spec.target.name and spec.target.task == "binary"
        types = _TYPES[(dtype, nullable)] + (["bool"] if binary_target else [])
        expected = dtype + (" (nullable)" if nullable else "")
        add(
            gxe.ExpectColumnValuesToBeInTypeList(
                column=name, type_list=types, meta={"expected": expected}
            )
        )
        if not nullable:
            add(gxe.ExpectColumnValuesToNotBeNull(column=name))
        if lo is not None or hi is not None:
            add(
                gxe.ExpectColumnValuesToBeBetween(
                    column=name, min_value=_num(lo), max_value=_num(hi)
                )
            )
        if cats:
            add(gxe.ExpectColumnValuesToBeInSet(column=name, value_set=list(cats)))
    if with_target and spec.target.task == "binary" and spec.target.name not in skip:
        add(gxe.ExpectColumnValuesToBeInSet(column=spec.target.name, value_set=[0, 1]))
    if spec.entity_id not in skip and spec.event_date not in skip:
        # One row per entity and day: within a partition that is plain id uniqueness, and it
        # stays right for a training set spanning many days.
        add(
            gxe.ExpectCompoundColumnsToBeUnique(
                column_list=[spec.event_date, spec.entity_id], ignore_row_if="never"
            )
        )
    add(gxe.ExpectTableRowCountToBeBetween(min_value=cfg.min_rows))
    for extra in cfg.extra_expectations:
        cls = expectation_class(extra.type)
        if extra.kwargs.get("column") in skip:
            continue
        try:
            add(cls(**extra.kwargs))
        except Exception as exc:  # pydantic errors for bad kwargs
            raise ValueError(f"expectation {extra.type!r} with {extra.kwargs}: {exc}") from exc
    name = f"{spec.name}{'' if with_target else '.scoring'}"
    return gx.ExpectationSuite(name=name, expectations=expectations)


def build_suite(
    spec: DatasetSpec, cfg: ValidationConfig, *, with_target: bool
) -> gx.ExpectationSuite:
    """The expectation suite a frame of this dataset must satisfy."""
    return _build(spec, cfg, with_target, frozenset())


def _suite(
    spec: DatasetSpec, cfg: ValidationConfig, with_target: bool, skip: frozenset[str]
) -> gx.ExpectationSuite:
    key = (spec.model_dump_json(), cfg.model_dump_json(), with_target, skip)
    if key not in _SUITES:
        _SUITES[key] = _build(spec, cfg, with_target, skip)
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


def _failure(res: dict[str, Any]) -> Failure:
    conf = res["expectation_config"]
    kwargs = conf.get("kwargs", {})
    meta = conf.get("meta") or {}
    args = ", ".join(
        f"expected={meta['expected']}"
        if k == "type_list" and "expected" in meta
        else f"{k}={_num(v) if isinstance(v, float) else v!r}"
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
) -> ValidationReport:
    """Validate `df` against the spec's suite; write JSON (and Data Docs) under reports_url."""
    required = {spec.entity_id, spec.event_date, *spec.feature_names}
    required |= {spec.target.name} if with_target else set()
    skip = frozenset(required - set(df.columns))
    frame = _for_gx(df)
    with _LOCK:
        suite = _suite(spec, cfg, with_target, skip)
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(suite, result_format="SUMMARY")
    raw = result.to_json_dict()
    found = [_failure(r) for r in raw["results"] if not r["success"]]
    order = {name: i for i, name in enumerate(df.columns)}  # missing columns first
    found.sort(key=lambda f: (order.get(f.column, -1) if f.column else len(order), f.expectation))
    failures = tuple(found)
    json_path = docs_path = None
    if reports_url:
        name = slug(subject)
        if cfg.data_docs and _is_local(reports_url):
            root = os.path.abspath(fsspec.utils.stringify_path(reports_url).removeprefix("file://"))
            run = RunIdentifier(run_name=name, run_time=datetime.now(UTC))
            key = ValidationResultIdentifier(ExpectationSuiteIdentifier(suite.name), run, name)
            with _LOCK:
                ctx = _docs_context(root)
                ctx.validation_results_store.set(key, result)
                ctx.build_data_docs(site_names=["batchpred"], resource_identifiers=[key])
            docs_path = os.path.join(root, "data_docs", "validations", *key.to_tuple()) + ".html"
        json_path = f"{reports_url.rstrip('/')}/validation/{name}.json"
        summary = {"subject": subject, "success": bool(result.success), "rows": len(df)}
        summary |= {"failures": [asdict(f) for f in failures], "docs_path": docs_path, "gx": raw}
        fs, path = fsspec.core.url_to_fs(json_path)
        fs.makedirs(os.path.dirname(path), exist_ok=True)
        fs.pipe_file(path, json.dumps(summary, indent=2, default=str).encode())
    return ValidationReport(
        subject=subject,
        success=bool(result.success),
        failures=failures,
        evaluated=len(raw["results"]),
        rows=len(df),
        json_path=json_path,
        docs_path=docs_path,
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
