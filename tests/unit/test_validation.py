"""Validation: the suite derived from the spec catches what a user must never train or score on."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from batchpred import demo, ingestion, rules, storage, validation, verdicts
from batchpred.config import DatasetSpec, ExtraExpectation, Settings, ValidationConfig
from batchpred.validation import (
    ValidationError,
    build_suite,
    validate_frame,
    validate_or_raise,
    validate_partition,
)
from tests.conftest import record_verdict

SUBJECT = "partition dt=2026-10-03 (data/raw/dt=2026-10-03/part-0.parquet)"


def valid_frame(spec: DatasetSpec, n: int = 400, seed: int = 0) -> pd.DataFrame:
    """A frame satisfying every rule of `spec`, with the dtypes a Parquet read gives."""
    rng = np.random.default_rng(seed)
    ids = np.arange(1, n + 1)
    cols: dict[str, object] = {
        spec.entity_id: ids if spec.entity_id_dtype == "int" else [f"id-{i}" for i in ids],
        spec.event_date: [date(2026, 10, 3)] * n,
    }
    for f in spec.features:
        lo, hi = f.min if f.min is not None else 0, f.max if f.max is not None else 100
        if f.dtype == "float":
            values = pd.Series(rng.uniform(lo, hi, n))
        elif f.dtype == "int":
            values = pd.Series(rng.integers(int(lo), int(hi) + 1, n))
        elif f.dtype == "bool":
            values = pd.Series(rng.random(n) < 0.5)
        else:
            values = pd.Series(rng.choice(list(f.categories or ()), n))
        cols[f.name] = values.where(rng.random(n) > 0.1) if f.nullable else values
    if spec.target.task == "binary":
        cols[spec.target.name] = rng.integers(0, 2, n).astype("int8")
    else:
        cols[spec.target.name] = rng.uniform(5, 90, n)
    return pd.DataFrame(cols)


def check(settings: Settings, df: pd.DataFrame, **kwargs: object):
    return validate_frame(
        df, settings.dataset, settings.validation, subject=SUBJECT, reports_url=None, **kwargs
    )


def with_feature(spec: DatasetSpec, name: str, **update: object) -> DatasetSpec:
    features = tuple(f.model_copy(update=update) if f.name == name else f for f in spec.features)
    return spec.model_copy(update={"features": features})


def policy(settings: Settings, **shares: float) -> ValidationConfig:
    reject = settings.validation.reject_up_to.model_copy(update=shares)
    return settings.validation.model_copy(update={"reject_up_to": reject})


def only(report, expectation: str):
    found = [f for f in report.failures if f.expectation == expectation]
    assert len(found) == 1, report.message()
    return found[0]


@pytest.mark.parametrize("name", ["churn", "deliveries"])
def test_valid_frame_passes(name, request):
    settings = request.getfixturevalue(name)
    report = check(settings, valid_frame(settings.dataset))
    assert report.success, report.message()
    assert report.failures == () and report.rows == 400 and report.evaluated > 20
    assert validate_or_raise(
        valid_frame(settings.dataset), settings.dataset, settings.validation,
        subject=SUBJECT, reports_url=None,
    ).success  # fmt: skip


def test_ints_may_arrive_as_float_or_Int64_but_fractional_values_break_the_integer_rule(churn):
    """Nulls make a Parquet int column float; the values are judged one by one, as the
    scoring stream judges them (rules.bad_rows)."""
    df = valid_frame(churn.dataset)
    df["tenure_months"] = df["tenure_months"].astype("Int64")
    df["support_calls"] = df["support_calls"].astype("float64")
    assert check(churn, df).success
    df.loc[3, "support_calls"] = 3.7
    failure = only(check(churn, df), "expect_column_values_to_follow_batchpred_rule")
    assert failure.column == "support_calls" and "rule_kind='integer'" in str(failure)
    assert "1 of 400 rows" in failure.detail and "3.7" in failure.detail

    spec = with_feature(churn.dataset, "support_calls", nullable=True)
    df.loc[3, "support_calls"] = np.nan
    report = validate_frame(df, spec, churn.validation, subject=SUBJECT, reports_url=None)
    assert report.success, report.message()
    failure = only(check(churn, df), "expect_column_values_to_not_be_null")  # not nullable
    assert failure.column == "support_calls"


def test_event_date_may_be_datetime64_but_not_text(churn):
    df = valid_frame(churn.dataset)
    df["event_date"] = pd.to_datetime(df["event_date"])
    assert check(churn, df).success
    df["event_date"] = df["event_date"].dt.strftime("%Y-%m-%d")
    failure = only(check(churn, df), "expect_column_values_to_be_in_type_list")
    assert failure.column == "event_date"


def test_missing_column_is_reported_once_without_crashing(churn):
    df = valid_frame(churn.dataset).drop(columns=["region"])
    df.loc[0, "tenure_months"] = 999  # other expectations still run
    report = check(churn, df)
    assert not report.success
    assert [(f.column, f.expectation) for f in report.failures] == [
        ("region", "expect_column_to_exist"),
        ("tenure_months", "expect_column_values_to_be_between"),
    ]
    assert "column 'region' failed expect_column_to_exist" in report.message()


def test_out_of_range_names_column_rule_count_and_examples(churn):
    df = valid_frame(churn.dataset)
    df.loc[:36, "tenure_months"] = 999
    df.loc[0, "tenure_months"] = -5
    with pytest.raises(ValidationError) as err:
        validate_or_raise(df, churn.dataset, churn.validation, subject=SUBJECT, reports_url=None)
    report = err.value.report
    assert str(err.value) == report.message()
    assert SUBJECT in str(err.value)
    assert (
        "column 'tenure_months' failed expect_column_values_to_be_between"
        "(min_value=0): 1 of 400 rows, e.g. [-5]"
    ) in str(err.value)
    assert (
        "column 'tenure_months' failed expect_column_values_to_be_between"
        "(max_value=120): 36 of 400 rows, e.g. [999]"
    ) in str(err.value)


def test_nulls_in_non_nullable_column_fail_but_nullable_columns_may_be_null(churn):
    df = valid_frame(churn.dataset)
    df.loc[[1, 2, 3], "monthly_charges"] = np.nan
    df["usage_gb"] = np.nan  # nullable: fine
    report = check(churn, df)
    failure = only(report, "expect_column_values_to_not_be_null")
    assert failure.column == "monthly_charges" and "3 of 400 rows" in failure.detail
    assert len(report.failures) == 1


def test_unknown_category_fails_only_where_the_spec_says_so(deliveries):
    """on_unknown missing (the default): scored as missing, not a validation failure;
    reject or fail: the value must be in the list, and the report names it."""
    df = valid_frame(deliveries.dataset, n=300)
    df.loc[5, "vehicle"] = "hovercraft"
    assert deliveries.dataset.feature("vehicle").on_unknown == "missing"
    assert check(deliveries, df).success
    for on_unknown in ("reject", "fail"):
        spec = with_feature(deliveries.dataset, "vehicle", on_unknown=on_unknown)
        report = validate_frame(df, spec, deliveries.validation, subject=SUBJECT, reports_url=None)
        failure = only(report, "expect_column_values_to_be_in_set")
        assert failure.column == "vehicle"
        assert "['bike', 'scooter', 'car']" in str(failure) and "hovercraft" in failure.detail


def test_duplicate_entity_ids_fail(deliveries):
    df = valid_frame(deliveries.dataset, n=300)
    df.loc[1, "order_ref"] = df.loc[0, "order_ref"]
    failure = only(check(deliveries, df), "expect_column_values_to_follow_batchpred_rule")
    assert failure.column == "order_ref" and "rule_kind='unique'" in str(failure)
    assert "1 of 300 rows" in failure.detail and "id-1" in failure.detail


def test_strings_in_float_column_fail_the_type_rule(churn):
    df = valid_frame(churn.dataset)
    df["monthly_charges"] = df["monthly_charges"].astype(str)
    report = check(churn, df)
    failure = only(report, "expect_column_values_to_be_in_type_list")
    assert failure.column == "monthly_charges" and "expected=float" in str(failure)


def test_zero_rows_fail_min_rows(churn):
    report = check(churn, valid_frame(churn.dataset).iloc[:0])
    failure = only(report, "expect_table_row_count_to_be_between")
    assert failure.column is None and "observed 0" in failure.detail
    assert "table failed expect_table_row_count_to_be_between(min_value=1)" in report.message()


def test_extra_expectation_from_config_is_applied(churn):
    extra = ExtraExpectation(
        type="expect_column_mean_to_be_between",
        kwargs={"column": "discount_rate", "min_value": 0.9, "max_value": 1.0},
    )
    cfg = churn.validation.model_copy(update={"extra_expectations": (extra,)})
    report = validate_frame(
        valid_frame(churn.dataset), churn.dataset, cfg, subject=SUBJECT, reports_url=None
    )
    failure = only(report, "expect_column_mean_to_be_between")
    assert failure.column == "discount_rate" and "observed" in failure.detail


def test_unknown_extra_expectation_type_is_a_value_error(churn):
    cfg = churn.validation.model_copy(
        update={"extra_expectations": (ExtraExpectation(type="expect_column_to_be_nice"),)}
    )
    with pytest.raises(ValueError, match="expect_column_to_be_nice"):
        build_suite(churn.dataset, cfg)


def test_label_is_optional_and_checked_where_present(churn):
    """Days to score arrive without labels: a frame without the target validates, and the
    suite for it has no label expectation; where present, every label must be a class."""
    df = valid_frame(churn.dataset).drop(columns=["churned"])
    assert check(churn, df).success
    suite = build_suite(churn.dataset, churn.validation, columns=list(df.columns))
    assert all(getattr(e, "column", None) != "churned" for e in suite.expectations)
    assert any(
        getattr(e, "column", None) == "churned"
        for e in build_suite(churn.dataset, churn.validation).expectations
    )
    df = valid_frame(churn.dataset)
    df["churned"] = df["churned"].astype("float64")
    df.loc[[1, 2], "churned"] = np.nan  # not labelled yet: fine
    assert check(churn, df).success
    df.loc[3, "churned"] = 2
    failure = only(check(churn, df), "expect_column_values_to_follow_batchpred_rule")
    assert failure.column == "churned" and "rule_kind='label'" in str(failure)
    assert "1 of 400 rows" in failure.detail


def test_text_classes_are_the_only_valid_labels(churn):
    target = churn.dataset.target.model_copy(update={"classes": {"yes": 1, "no": 0}})
    spec = churn.dataset.model_copy(update={"target": target})
    df = valid_frame(churn.dataset)
    df["churned"] = np.where(df["churned"] == 1, "yes", "no").astype(object)
    df.loc[0, "churned"] = None
    assert validate_frame(df, spec, churn.validation, subject=SUBJECT, reports_url=None).success
    df.loc[1, "churned"] = "maybe"
    report = validate_frame(df, spec, churn.validation, subject=SUBJECT, reports_url=None)
    failure = only(report, "expect_column_values_to_follow_batchpred_rule")
    assert failure.column == "churned" and "maybe" in failure.detail


def test_nan_is_null_infinity_is_out_of_range_and_bools_are_zero_or_one(churn):
    df = valid_frame(churn.dataset)
    df.loc[1, "total_charges"] = np.nan  # nullable: fine
    df["has_partner"] = df["has_partner"].astype("int64")  # 0/1 as numbers: fine
    assert check(churn, df).success
    df.loc[2, "monthly_charges"] = np.inf
    df.loc[3, "has_partner"] = 7
    report = check(churn, df)
    found = {(f.column, f.expectation, f.args) for f in report.failures}
    rule = "expect_column_values_to_follow_batchpred_rule"
    assert ("monthly_charges", rule, "rule_kind='finite'") in found
    assert ("has_partner", rule, "rule_kind='bool'") in found
    assert {f.column for f in report.failures} == {"monthly_charges", "has_partner"}


def test_reject_up_to_tolerates_that_share_of_rows_per_rule(churn):
    """mostly = 1 - reject_up_to: 4 of 400 rows (1%) pass with range 0.01, 5 do not."""
    df = valid_frame(churn.dataset)
    df.loc[:3, "satisfaction"] = 9.0
    cfg = policy(churn, range=0.01)
    assert not check(churn, df).success
    assert validate_frame(df, churn.dataset, cfg, subject=SUBJECT, reports_url=None).success
    df.loc[4, "satisfaction"] = 9.0
    report = validate_frame(df, churn.dataset, cfg, subject=SUBJECT, reports_url=None)
    failure = only(report, "expect_column_values_to_be_between")
    assert failure.column == "satisfaction" and "5 of 400 rows" in failure.detail
    df.loc[4, "satisfaction"] = np.nan  # another family: not covered by range
    report = validate_frame(df, churn.dataset, cfg, subject=SUBJECT, reports_url=None)
    assert only(report, "expect_column_values_to_not_be_null").column == "satisfaction"


def test_json_report_and_data_docs_are_written(churn):
    df = valid_frame(churn.dataset)
    df.loc[0, "region"] = None
    reports = churn.lake.reports
    report = validate_frame(
        df, churn.dataset, churn.validation, subject=SUBJECT, reports_url=reports
    )
    assert report.json_path and Path(report.json_path).parent == Path(reports) / "validation"
    written = json.loads(Path(report.json_path).read_text())
    assert written["success"] is False and written["subject"] == SUBJECT
    assert written["failures"][0]["column"] == "region"
    assert written["gx"]["results"]  # the full GX result is kept
    assert (Path(reports) / "data_docs" / "index.html").exists()
    assert report.docs_path and Path(report.docs_path).exists()


def test_no_data_docs_when_disabled(churn):
    cfg = churn.validation.model_copy(update={"data_docs": False})
    report = validate_frame(
        valid_frame(churn.dataset), churn.dataset, cfg, subject="x", reports_url=churn.lake.reports
    )
    assert report.docs_path is None and Path(report.json_path).exists()
    assert not (Path(churn.lake.reports) / "data_docs").exists()


def test_concurrent_validations_are_independent_and_fast(churn):
    good, bad = valid_frame(churn.dataset, 10_000), valid_frame(churn.dataset, 10_000, seed=1)
    bad.loc[0, "satisfaction"] = 9.0
    check(churn, good)  # warm up
    start = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda d: check(churn, d).success, [good, bad] * 2))
    assert results == [True, False, True, False]
    assert (time.perf_counter() - start) / 4 < 3


# --- partitions and their verdicts ------------------------------------------------------------


def _lake_day(settings: Settings, rows: int = 60) -> date:
    cfg = settings.demo.model_copy(update={"days": 1, "rows_per_day": rows})
    return demo.write_demo_source(settings.dataset, cfg, settings.lake.raw)[0]


def _status(engine: sa.Engine, spec: DatasetSpec, cfg: ValidationConfig, root: str, day: date):
    return verdicts.partition_status(engine, spec, cfg, root, day)


def test_validate_partition_records_the_verdict_for_this_content(churn, engine):
    spec, cfg, root = churn.dataset, churn.validation, churn.lake.raw
    day = _lake_day(churn)
    assert _status(engine, spec, cfg, root, day).status == "unvalidated"
    report = validate_partition(engine, spec, cfg, root, day, reports_url=None, run_id="r1")
    assert report.success and report.rows == 60
    verdict = _status(engine, spec, cfg, root, day)
    assert verdict.status == "valid"
    assert verdict.content_key == storage.fingerprint_partition(root, day)
    assert verdict.spec_hash == rules.spec_hash(spec, cfg)
    # new content: the old verdict does not apply
    table = storage.read_partition(root, day)
    i = table.schema.get_field_index("satisfaction")
    values = table.column(i).to_pylist()
    values[0] = 9.0
    storage.write_partition(root, day, table.set_column(i, "satisfaction", pa.array(values)))
    assert _status(engine, spec, cfg, root, day).status == "unvalidated"
    report = validate_partition(engine, spec, cfg, root, day, reports_url=None, run_id="r2")
    verdict = _status(engine, spec, cfg, root, day)
    assert (report.success, verdict.status) == (False, "invalid")
    assert "column 'satisfaction' failed" in verdict.message and f"dt={day}" in verdict.message


def test_spec_change_revalidates_the_partition(churn, engine):
    """A partition invalid under the old spec (a category value not in the list, on_unknown
    fail) is unvalidated under the new spec that adds the value, then valid once validated."""
    root, cfg = churn.lake.raw, churn.validation
    old = with_feature(churn.dataset, "contract", on_unknown="fail")
    new = with_feature(old, "contract", categories=("monthly", "annual", "biennial", "weekly"))
    day = _lake_day(churn)
    table = storage.read_partition(root, day)
    i = table.schema.get_field_index("contract")
    values = table.column(i).to_pylist()
    values[7] = "weekly"
    storage.write_partition(root, day, table.set_column(i, "contract", pa.array(values)))

    report = validate_partition(engine, old, cfg, root, day, reports_url=None, run_id="r1")
    assert not report.success
    failure = only(report, "expect_column_values_to_be_in_set")
    assert failure.column == "contract" and "weekly" in failure.detail
    assert _status(engine, old, cfg, root, day).status == "invalid"
    assert rules.spec_hash(new, cfg) != rules.spec_hash(old, cfg)
    assert _status(engine, new, cfg, root, day).status == "unvalidated"
    assert validate_partition(engine, new, cfg, root, day, reports_url=None, run_id="r2").success
    assert _status(engine, new, cfg, root, day).status == "valid"
    assert _status(engine, old, cfg, root, day).status == "invalid"  # still, under the old


def test_recorded_verdict_helper_matches_partition_status(churn, engine):
    """tests.conftest.record_verdict keys a verdict the way ingest does."""
    spec, cfg, root = churn.dataset, churn.validation, churn.lake.raw
    day = _lake_day(churn, rows=5)
    record_verdict(engine, spec, cfg, root, day, valid=False, message="boom")
    verdict = _status(engine, spec, cfg, root, day)
    assert verdict.status == "invalid" and "boom" in verdict.message
    record_verdict(engine, spec, cfg, root, day)  # the newest verdict wins
    assert _status(engine, spec, cfg, root, day).status == "valid"


def test_statuses_of_many_partitions_in_one_query(churn, engine):
    """Each day gets its own newest verdict for its own content; a day without one, or whose
    content changed since, is unvalidated."""
    spec, cfg, root = churn.dataset, churn.validation, churn.lake.raw
    cfg3 = churn.demo.model_copy(update={"days": 3, "rows_per_day": 5})
    first, second, third = demo.write_demo_source(spec, cfg3, root)
    record_verdict(engine, spec, cfg, root, first)
    record_verdict(engine, spec, cfg, root, second)
    record_verdict(engine, spec, cfg, root, second, valid=False, message="boom")
    record_verdict(engine, spec, cfg, root, third)
    storage.write_partition(root, third, storage.read_partition(root, third).slice(1))
    got = verdicts.partition_statuses(engine, spec, cfg, root, [first, second, third])
    assert {day: v.status for day, v in got.items()} == {
        first: "valid",
        second: "invalid",
        third: "unvalidated",
    }
    assert "boom" in got[second].message
    assert verdicts.partition_statuses(engine, spec, cfg, root, []) == {}


def test_a_long_vocabulary_is_summarised_in_the_message_never_listed_whole():
    from batchpred.config import load_settings
    from tests.conftest import ROOT

    values = [f"store-{i:03d}" for i in range(104)]
    feature = {"name": "store", "dtype": "category", "categories": values, "on_unknown": "fail"}
    settings = load_settings(
        [ROOT / "configs/base.yaml", ROOT / "configs/datasets/churn.yaml"],
        overrides={"dataset": {"features": [feature]}},
    )
    spec = settings.dataset
    frame = pd.DataFrame(
        {
            spec.entity_id: [1, 2],
            spec.event_date: [date(2026, 1, 1)] * 2,
            "store": ["store-001", "new"],
        }
    )
    report = validate_frame(frame, spec, settings.validation, subject="t", reports_url=None)
    message = report.message()
    assert (
        not report.success and "<104 values: 'store-000'" in message and "e.g. ['new']" in message
    )
    assert "store-103" not in message


# --- streamed partitions: row rules on every row, Great Expectations on a sample -----------------


def _write_day(settings: Settings, table: pa.Table, day: date = date(2026, 10, 3)) -> date:
    storage.write_partition(settings.lake.raw, day, table, row_group_size=128)
    return day


def _gx_results(report) -> list[str]:
    """Each GX result of the report's JSON, as text (NaN-safe), without run-specific fields."""
    written = json.loads(Path(report.json_path).read_text())
    return [
        json.dumps([r["success"], r["result"], r["expectation_config"], r["exception_info"]])
        for r in written["gx"]["results"]
    ]


def _whole_and_streamed(settings: Settings, spec: DatasetSpec, cfg: ValidationConfig, engine):
    """The old way (the whole partition in pandas through validate_frame) and the streamed
    validate_partition, in batches of 50 rows, on the same partition."""
    root, day = settings.lake.raw, date(2026, 10, 3)
    files = storage.partition_files(root, day)
    subject = f"partition dt={day} ({', '.join(files)})"
    whole = validate_frame(
        storage.read_partition(root, day).to_pandas(), spec, cfg,
        subject=subject, reports_url=str(Path(settings.lake.reports) / "whole"), day=day,
    )  # fmt: skip
    streamed = validate_partition(
        engine, spec, cfg, root, day,
        reports_url=str(Path(settings.lake.reports) / "streamed"), run_id="r", batch_rows=50,
    )  # fmt: skip
    return whole, streamed


def _set(table: pa.Table, name: str, rows: dict[int, object], type_: pa.DataType | None = None):
    values = table.column(name).to_pylist()
    for i, v in rows.items():
        values[i] = v
    i = table.schema.get_field_index(name)
    return table.set_column(i, name, pa.array(values, type_ or table.schema.field(name).type))


def _edits(spec: DatasetSpec) -> dict[str, object]:
    """Partitions breaking rules in different ways (400 rows, streamed in 8 batches)."""
    return {
        "valid": lambda t: t,
        "range and examples": lambda t: _set(
            t, "tenure_months", {0: -5, **{i: 999 for i in range(60, 97)}}
        ),
        "nulls make an int column float": lambda t: _set(
            _set(t, "support_calls", {5: None, 380: 3}), "tenure_months", {7: 999, 399: 130}
        ),
        "not null, inf, bool": lambda t: _set(
            _set(
                _set(t, "monthly_charges", {1: None, 2: float("nan"), 390: None}),
                "discount_rate",
                {3: float("inf")},
            ),
            "satisfaction",
            {4: 9.0},
        ),  # fmt: skip
        "duplicate ids across batches": lambda t: _set(
            t, spec.entity_id, {399: t.column(spec.entity_id)[0].as_py(), 250: None}
        ),
        "labels": lambda t: _set(t, "churned", {3: 2, 200: None}, pa.int8()),
        "unknown category": lambda t: _set(t, "contract", {5: "weekly", 301: "weekly"}),
        "text in a number": lambda t: t.set_column(
            t.schema.get_field_index("support_calls"),
            "support_calls",
            pc.cast(t.column("support_calls"), pa.string()),
        ),  # fmt: skip
        "booleans in a number": lambda t: t.set_column(
            t.schema.get_field_index("support_calls"),
            "support_calls",
            pc.greater(t.column("support_calls"), 2),
        ),  # fmt: skip
        "missing column": lambda t: _set(t.drop_columns(["region"]), "satisfaction", {399: 0.0}),
        "no rows": lambda t: t.slice(0, 0),
    }


EDIT_CASES = (
    "valid",
    "range and examples",
    "nulls make an int column float",
    "not null, inf, bool",
    "duplicate ids across batches",
    "labels",
    "unknown category",
    "text in a number",
    "booleans in a number",
    "missing column",
    "no rows",
)


@pytest.mark.parametrize("case", EDIT_CASES)
def test_streamed_verdict_is_the_whole_partition_verdict_below_the_sample_size(
    churn, engine, case, monkeypatch
):
    """Below validation.sample_rows the sample is the partition: streaming it in batches gives
    exactly the verdict, failures, counts, examples and GX results of validating it whole.
    The reports' GX JSON is GX's own to_json_dict of the result, for both."""
    spec = with_feature(churn.dataset, "contract", on_unknown="reject")
    cfg = churn.validation.model_copy(update={"data_docs": False})
    table = pa.Table.from_pandas(valid_frame(spec), preserve_index=False)
    assert tuple(_edits(spec)) == EDIT_CASES
    _write_day(churn, _edits(spec)[case](table))
    ours, serialized = validation._result_json, []

    def as_gx_writes_it(result):
        written = ours(result)
        text = lambda d: json.dumps(d, sort_keys=True, default=str)  # noqa: E731 - NaN-safe
        assert text(written) == text(result.to_json_dict())
        serialized.append(written)
        return written

    monkeypatch.setattr(validation, "_result_json", as_gx_writes_it)
    whole, streamed = _whole_and_streamed(churn, spec, cfg, engine)
    assert len(serialized) == 2
    assert (streamed.success, streamed.rows, streamed.evaluated) == (
        whole.success, whole.rows, whole.evaluated,
    )  # fmt: skip
    assert streamed.failures == whole.failures, streamed.message()
    assert _gx_results(streamed) == _gx_results(whole)
    assert (case == "valid") == streamed.success


def test_streamed_verdict_matches_with_a_reject_share_and_several_files(churn, engine):
    """Shares against reject_up_to count every row; files are read in name order, a column
    missing from one file is null there (as storage.read_files concatenates them)."""
    cfg = policy(churn, range=0.05).model_copy(update={"data_docs": False})
    spec = churn.dataset
    first = pa.Table.from_pandas(valid_frame(spec, 200), preserve_index=False)
    second = pa.Table.from_pandas(valid_frame(spec, 200, seed=1), preserve_index=False)
    second = _set(second, spec.entity_id, {i: 1000 + i for i in range(200)})
    first = _set(first, "satisfaction", {i: 9.0 for i in range(0, 200, 20)})  # 10 of 400
    day = _write_day(churn, first)
    folder = Path(storage.partition_path(churn.lake.raw, day))
    pq.write_table(second.drop_columns(["usage_gb"]), folder / "part-1.parquet")
    whole, streamed = _whole_and_streamed(churn, spec, cfg, engine)
    assert whole.success and streamed.success and streamed.rows == 400
    assert _gx_results(streamed) == _gx_results(whole)
    pq.write_table(
        _set(second, "satisfaction", {199: 9.0, 198: 9.0}).drop_columns(["usage_gb"]),
        folder / "part-1.parquet",
    )  # 12 of 400 = 3%: still within 5%
    whole, streamed = _whole_and_streamed(churn, spec, cfg, engine)
    assert streamed.success and _gx_results(streamed) == _gx_results(whole)
    cfg = policy(churn, range=0.02).model_copy(update={"data_docs": False})
    whole, streamed = _whole_and_streamed(churn, spec, cfg, engine)
    assert not streamed.success and streamed.failures == whole.failures
    assert "12 of 400 rows" in only(streamed, "expect_column_values_to_be_between").detail


def test_a_rule_broken_only_beyond_the_sample_is_caught(churn, engine, monkeypatch):
    """3,000 rows, a sample of at most 100 (every 32nd row): rows the sample never holds break
    a range rule, the not-null rule and uniqueness; the verdict comes from every row."""
    cfg = churn.validation.model_copy(update={"sample_rows": 100})
    spec = churn.dataset
    table = pa.Table.from_pandas(valid_frame(spec, 3000), preserve_index=False)
    table = _set(table, "tenure_months", {2999: 999})
    table = _set(table, "monthly_charges", {1001: None})
    table = _set(table, spec.entity_id, {1500: table.column(spec.entity_id)[3].as_py()})
    day = _write_day(churn, table)
    monkeypatch.setattr(storage, "read_partition", None)  # never read whole
    monkeypatch.setattr(storage, "read_files", None)
    report = validate_partition(
        engine, spec, cfg, churn.lake.raw, day,
        reports_url=churn.lake.reports, run_id="r", batch_rows=256,
    )  # fmt: skip
    assert not report.success and report.rows == 3000
    written = json.loads(Path(report.json_path).read_text())
    assert written["rows"] == 3000 and 50 <= written["sample_rows"] <= 100
    found = {(f.column, f.expectation): f.detail for f in report.failures}
    assert found == {
        ("customer_id", "expect_column_values_to_follow_batchpred_rule"): (
            f"1 of 3000 rows, e.g. [{table.column(spec.entity_id)[3].as_py()}]"
        ),
        ("tenure_months", "expect_column_values_to_be_between"): "1 of 3000 rows, e.g. [999]",
        ("monthly_charges", "expect_column_values_to_not_be_null"): "1 of 3000 rows",
    }
    rows = [
        r["result"]["partial_unexpected_index_list"]
        for r in written["gx"]["results"]
        if not r["success"]
    ]
    assert sorted(rows) == [[1001], [1500], [2999]]  # row numbers in the partition
    assert all(i % 32 for i in (1001, 1500, 2999))  # none of them in the sample
    assert (Path(churn.lake.reports) / "data_docs" / "index.html").exists()
    verdict = _status(engine, spec, cfg, churn.lake.raw, day)
    assert verdict.status == "invalid" and "1 of 3000 rows, e.g. [999]" in verdict.message


def test_a_share_within_reject_up_to_counts_every_row_not_the_sample(churn, engine):
    spec, root = churn.dataset, churn.lake.raw
    cfg = policy(churn, range=0.01).model_copy(update={"sample_rows": 100, "data_docs": False})
    table = pa.Table.from_pandas(valid_frame(spec, 3000), preserve_index=False)
    broken = {i: 9.0 for i in range(1, 3000, 100)}  # 30 of 3000 rows (1%), none sampled
    day = _write_day(churn, _set(table, "satisfaction", broken))
    args = {"reports_url": None, "run_id": "r", "batch_rows": 500}
    assert validate_partition(engine, spec, cfg, root, day, **args).success
    day = _write_day(churn, _set(table, "satisfaction", {**broken, 2: 9.0}))  # 31
    failure = only(
        validate_partition(engine, spec, cfg, root, day, **args),
        "expect_column_values_to_be_between",
    )
    assert failure.detail == "31 of 3000 rows, e.g. [9.0]"


def test_sample_rows_at_its_default_keeps_recorded_verdicts_current(churn):
    """The key is new: at its default it is not part of the spec hash, so verdicts recorded
    before it existed still apply; another value can change what extra expectations see."""
    cfg = churn.validation
    assert cfg.sample_rows == 100_000 and "sample_rows" not in cfg.model_dump()
    other = cfg.model_copy(update={"sample_rows": 5})
    assert rules.spec_hash(churn.dataset, other) != rules.spec_hash(churn.dataset, cfg)
    again = Settings.model_validate(churn.model_copy(update={"validation": other}).model_dump())
    assert again.validation.sample_rows == 5


def test_a_file_that_cannot_be_read_fails_naming_it(churn, engine):
    day = _write_day(churn, pa.Table.from_pandas(valid_frame(churn.dataset), preserve_index=False))
    (url,) = storage.partition_files(churn.lake.raw, day)
    Path(url).write_bytes(Path(url).read_bytes()[:200])  # truncated upload
    with pytest.raises(storage.DataError, match=rf"file {url}: cannot be read as data"):
        validate_partition(
            engine, churn.dataset, churn.validation, churn.lake.raw, day,
            reports_url=None, run_id="r",
        )  # fmt: skip


def test_rows_dated_another_day_than_their_partition_fail_it_or_are_rejected(churn, engine):
    """A file under dt=2026-10-05 whose rows are dated 2026-10-03 is not that day's data:
    by default (event_date_mismatch: fail) the partition fails naming the column and rule;
    with reject, the partition is valid and its rows are rejected where they are used."""
    spec, root = churn.dataset, churn.lake.raw
    table = pa.Table.from_pandas(valid_frame(spec), preserve_index=False)  # dated 2026-10-03
    assert _write_day(churn, table) == date(2026, 10, 3)
    on_its_day = validate_partition(
        engine, spec, churn.validation, root, date(2026, 10, 3), reports_url=None, run_id="r"
    )
    assert on_its_day.success, on_its_day.message()
    wrong = _write_day(churn, table, date(2026, 10, 5))
    report = validate_partition(
        engine, spec, churn.validation, root, wrong, reports_url=None, run_id="r"
    )
    assert not report.success
    (failure,) = report.failures
    assert failure.column == spec.event_date and "partition_day" in failure.args
    assert failure.detail.startswith("400 of 400 rows")
    verdict = _status(engine, spec, churn.validation, root, wrong)
    assert verdict.status == "invalid" and "'event_date'" in verdict.message
    reject = churn.validation.model_copy(update={"event_date_mismatch": "reject"})
    assert validate_partition(
        engine, spec, reject, root, wrong, reports_url=None, run_id="r"
    ).success


def test_a_day_ingest_could_not_land_is_that_days_validation_failure(churn, engine):
    spec, cfg, root = churn.dataset, churn.validation, churn.lake.raw
    day, landed = date(2026, 10, 3), date(2026, 10, 4)
    problem = ingestion.DayRefused(day, ["src/dt=2026-10-03/part-0.parquet"], "no rows", "0 rows")
    report = verdicts.record_refused(engine, spec, cfg, root, day, problem, "r")
    assert not report.success and report.rows == 0
    verdict = _status(engine, spec, cfg, root, day)
    assert verdict.status == "invalid"
    assert "dt=2026-10-03 (src/dt=2026-10-03/part-0.parquet)" in verdict.message
    assert "table failed no rows: 0 rows" in verdict.message
    # a copy landed earlier keeps its own verdict: the source's breakage is recorded beside it
    _write_day(churn, pa.Table.from_pandas(valid_frame(spec), preserve_index=False), landed)
    record_verdict(engine, spec, cfg, root, landed)
    broken = ingestion.DayRefused(landed, ["src/x.parquet"], "readable", "cannot be read")
    verdicts.record_refused(engine, spec, cfg, root, landed, broken, "r")
    assert _status(engine, spec, cfg, root, landed).status == "valid"
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("select success, message from validation_results where partition_date = :d"),
            {"d": landed},
        ).all()
    assert [r.success for r in rows].count(False) == 1
    assert any(not r.success and "table failed readable: cannot be read" in r.message for r in rows)


def test_gx_runs_only_the_expectations_the_stream_does_not_judge(churn, engine, monkeypatch):
    """The row rules and min_rows are judged on every row by the stream, a column's existence
    and the type of a column of a non-object dtype from the sample's columns and dtypes;
    asking GX for them too (on the sample, to replace its answer) was most of a small
    partition's cost. The report still holds every expectation of the suite."""
    cfg = churn.validation.model_copy(update={"data_docs": False})
    _write_day(churn, pa.Table.from_pandas(valid_frame(churn.dataset), preserve_index=False))
    asked: list[str] = []
    definition = validation._batch_definition()

    class Spy:
        def get_batch(self, **kwargs):
            batch = definition.get_batch(**kwargs)
            validate = batch.validate

            def spy(suite, **kw):
                asked.extend(e.expectation_type for e in suite.expectations)
                return validate(suite, **kw)

            batch.validate = spy
            return batch

    monkeypatch.setattr(validation, "_batch_definition", Spy)
    report = validate_partition(
        engine, churn.dataset, cfg, churn.lake.raw, date(2026, 10, 3),
        reports_url=churn.lake.reports, run_id="r",
    )  # fmt: skip
    assert report.success
    suite = validation.build_suite(churn.dataset, cfg, day=date(2026, 10, 3))
    assert report.evaluated == len(suite.expectations)
    row_rules = {"expect_column_values_to_not_be_null", "expect_column_values_to_be_between"}
    assert asked and not row_rules & set(asked), asked
    assert "expect_table_row_count_to_be_between" not in asked
    assert set(asked) == {"expect_column_values_to_be_in_type_list"}  # object columns' types


def test_data_docs_index_built_once_lists_every_partition_of_the_run(churn, engine):
    """A run validating many partitions builds each page without the index, then the index
    once (validation.build_docs_index): it lists every one of them."""
    days = [date(2026, 10, 3), date(2026, 10, 4)]
    for day in days:
        frame = valid_frame(churn.dataset).assign(event_date=pd.Timestamp(day).date())
        _write_day(churn, pa.Table.from_pandas(frame, preserve_index=False), day)
        validate_partition(
            engine, churn.dataset, churn.validation, churn.lake.raw, day,
            reports_url=churn.lake.reports, run_id="r", docs_index=False,
        )  # fmt: skip
    index = Path(churn.lake.reports) / "data_docs" / "index.html"
    assert not index.exists()
    validation.build_docs_index(churn.lake.reports, churn.validation)
    listed = index.read_text()
    assert all(f"partition_dt={day}" in listed for day in days)
