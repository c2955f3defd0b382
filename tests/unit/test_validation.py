"""Validation: the suite derived from the spec catches what a user must never train or score on."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from batchpred.config import DatasetSpec, ExtraExpectation, Settings
from batchpred.validation import (
    ValidationError,
    build_suite,
    validate_frame,
    validate_or_raise,
)

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


def test_nullable_int_may_arrive_as_float_or_Int64_but_required_int_may_not(churn):
    df = valid_frame(churn.dataset)
    df["tenure_months"] = df["tenure_months"].astype("Int64")
    df["support_calls"] = df["support_calls"].astype("float64")
    failure = only(check(churn, df), "expect_column_values_to_be_in_type_list")
    assert failure.column == "support_calls" and "expected=int" in str(failure)

    features = tuple(
        f.model_copy(update={"nullable": True}) if f.name == "support_calls" else f
        for f in churn.dataset.features
    )
    spec = churn.dataset.model_copy(update={"features": features})
    df.loc[3, "support_calls"] = np.nan
    report = validate_frame(df, spec, churn.validation, subject=SUBJECT, reports_url=None)
    assert report.success, report.message()


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
        "(min_value=0, max_value=120): 37 of 400 rows, e.g. [-5, 999]"
    ) in str(err.value)


def test_nulls_in_non_nullable_column_fail_but_nullable_columns_may_be_null(churn):
    df = valid_frame(churn.dataset)
    df.loc[[1, 2, 3], "monthly_charges"] = np.nan
    df["usage_gb"] = np.nan  # nullable: fine
    report = check(churn, df)
    failure = only(report, "expect_column_values_to_not_be_null")
    assert failure.column == "monthly_charges" and "3 of 400 rows" in failure.detail
    assert len(report.failures) == 1


def test_unknown_category_fails_with_allowed_set_and_example(deliveries):
    df = valid_frame(deliveries.dataset, n=300)
    df.loc[5, "vehicle"] = "hovercraft"
    failure = only(check(deliveries, df), "expect_column_values_to_be_in_set")
    assert failure.column == "vehicle"
    assert "['bike', 'scooter', 'car']" in str(failure) and "hovercraft" in failure.detail


def test_duplicate_entity_ids_fail(deliveries):
    df = valid_frame(deliveries.dataset, n=300)
    df.loc[1, "order_ref"] = df.loc[0, "order_ref"]
    failure = only(check(deliveries, df), "expect_compound_columns_to_be_unique")
    assert failure.column == "order_day, order_ref" and "id-1" in failure.detail


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
        build_suite(churn.dataset, cfg, with_target=True)


def test_without_target_the_target_is_not_required(churn):
    df = valid_frame(churn.dataset).drop(columns=["churned"])
    assert not check(churn, df).success
    assert check(churn, df, with_target=False).success
    suite = build_suite(churn.dataset, churn.validation, with_target=False)
    assert all(getattr(e, "column", None) != "churned" for e in suite.expectations)


def test_json_report_and_data_docs_are_written(churn):
    df = valid_frame(churn.dataset)
    df.loc[0, "region"] = "atlantis"
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
