"""One rule source: the spec compiled into row rules, their semantics, and the acceptance test
of the issue: the same bad-value matrix gives the same verdict at ingest (Great Expectations)
and in the scoring stream."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import sqlalchemy as sa

from batchpred import demo, rules, storage, validation
from batchpred.config import DatasetSpec, Settings, ValidationConfig
from batchpred.registry import LoadedModel
from batchpred.scoring import PartitionRejected, score_partition
from tests.conftest import record_verdict
from tests.unit import test_scoring
from tests.unit.test_scoring import lenient, rejects, stored, with_feature

churn_model = test_scoring.churn_model  # the module-scoped trained model fixture

NAN, INF = float("nan"), float("inf")


def policy(settings: Settings, share: float = 0.0, **families: float) -> ValidationConfig:
    """reject_up_to at `share` (or as given); rows dated another day than their partition
    are rejected when some share is tolerated, else they fail it."""
    mismatch = "reject" if share else "fail"
    return lenient(settings, share, **families).model_copy(update={"event_date_mismatch": mismatch})


# --- compiling the spec -----------------------------------------------------------------------


def test_compile_rules_for_the_churn_spec(churn: Settings) -> None:
    spec = churn.dataset
    cfg = policy(churn, 0.0, range=0.1, type=0.2, not_null=0.3, unique=0.4, label=0.5)
    compiled = rules.compile_rules(spec, cfg)
    by_column: dict[str, list[rules.Rule]] = {}
    for rule in compiled:
        by_column.setdefault(rule.column, []).append(rule)
    names = {column: [r.name for r in rs] for column, rs in by_column.items()}
    assert names["customer_id"] == ["not_null", "integer", "unique"]
    assert names["tenure_months"] == ["not_null", "integer", "min=0", "max=120"]
    assert names["monthly_charges"] == ["not_null", "finite", "min=5", "max=250"]
    assert names["total_charges"] == ["finite", "min=0", "max=30000"]  # nullable
    assert names["has_partner"] == ["not_null", "bool"]
    assert names["contract"] == ["not_null"]  # on_unknown missing: no set rule
    assert names["churned"] == ["label"]
    thresholds = {r.family: r.threshold for r in compiled}
    assert thresholds == {
        "not_null": 0.3,
        "type": 0.2,
        "range": 0.1,
        "unique": 0.4,
        "label": 0.5,
    }
    assert all(r.column != "churned" for r in rules.compile_rules(spec, cfg, label=False))


def test_a_partitions_rules_check_its_event_dates_under_the_configured_policy(
    churn: Settings,
) -> None:
    spec, day = churn.dataset, date(2026, 11, 8)
    assert churn.validation.event_date_mismatch == "fail"  # the default: the partition fails
    assert not [r for r in rules.compile_rules(spec, churn.validation) if r.column == "event_date"]
    for mismatch, threshold in (("fail", 0.0), ("reject", 1.0)):
        cfg = churn.validation.model_copy(update={"event_date_mismatch": mismatch})
        (rule,) = [r for r in rules.compile_rules(spec, cfg, day=day) if r.column == "event_date"]
        assert (rule.kind, rule.family, rule.name) == (
            "partition_day",
            "event_date",
            "partition_day",
        )
        assert (rule.value, rule.threshold) == ("2026-11-08", threshold)
    rule = rules.Rule("event_date", "partition_day", "2026-11-08")
    on_the_day, before = date(2026, 11, 8), date(2026, 11, 6)
    columns = [
        pa.array([on_the_day, before, None], pa.date32()),
        pa.array([on_the_day, before, None], pa.date64()),
        pa.array(["2026-11-08", "2026-11-06", None]),
        pa.array(["2026-11-08T23:59:00", "2026-11-06T00:00:00", None]),
        pc.cast(
            pa.array([datetime(2026, 11, 8, 23, 30), datetime(2026, 11, 7, 1, 0), None]),
            pa.timestamp("us", tz="America/New_York"),
        ),  # its own zone's date: 11-08 18:30 and 11-06 20:00 in New York
    ]
    for column in columns:
        assert rules.bad_rows(rule, column).tolist() == [False, True, False], column.type
    assert not rules.bad_rows(rule, pa.array([20261106, None], pa.int64())).any()  # a type issue
    tally = rules.Tally(applied=3, broken=1, example=before)
    assert rules.describe(rule, tally) == (
        "column 'event_date' broke rule partition_day (dt=2026-11-08) in 1 of 3 rows "
        "(validation.event_date_mismatch = fail), e.g. 2026-11-06"
    )


def test_set_rules_follow_on_unknown_and_their_names_stay_short(churn: Settings) -> None:
    big = tuple(f"v{i:04d}" for i in range(5000))
    cfg = policy(churn, 0.0, category=0.25)
    for on_unknown, threshold in (("reject", 0.25), ("fail", 0.0)):
        spec = with_feature(churn.dataset, "region", categories=big, on_unknown=on_unknown)
        (rule,) = [r for r in rules.compile_rules(spec, cfg) if r.kind == "in_set"]
        assert (rule.column, rule.family, rule.threshold) == ("region", "category", threshold)
        assert rule.value == big and rule.name == "in_set(5000 values)"
    learned = with_feature(churn.dataset, "region", categories=None, on_unknown="reject")
    assert not [r for r in rules.compile_rules(learned, cfg) if r.kind == "in_set"]


def test_spec_hash_changes_with_the_rules_only(churn: Settings) -> None:
    spec, cfg = churn.dataset, churn.validation
    same = DatasetSpec.model_validate(spec.model_dump())
    assert rules.spec_hash(spec, cfg) == rules.spec_hash(same, cfg)
    changes = [
        (with_feature(spec, "contract", categories=("monthly", "annual")), cfg),
        (with_feature(spec, "contract", on_unknown="fail"), cfg),
        (with_feature(spec, "tenure_months", max=100), cfg),
        (spec, policy(churn, 0.0, range=0.1)),
        (spec, cfg.model_copy(update={"min_rows": 5})),
    ]
    hashes = {rules.spec_hash(s, c) for s, c in changes}
    assert len(hashes) == len(changes) and rules.spec_hash(spec, cfg) not in hashes
    # rendering Data Docs or not is no rule: it must not make every verdict stale
    docs = cfg.model_copy(update={"data_docs": not cfg.data_docs})
    assert rules.spec_hash(spec, docs) == rules.spec_hash(spec, cfg)


# --- what breaks a rule -----------------------------------------------------------------------


def _rule(kind: str, value: object = None) -> rules.Rule:
    return rules.Rule("c", kind, value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rule", "column", "bad"),
    [
        # missing (null or NaN) breaks only not_null
        (_rule("not_null"), pa.array([1.0, None, NAN, 0.0]), [0, 1, 1, 0]),
        (_rule("integer"), pa.array([1.0, None, NAN, 3.7, INF, -2.0]), [0, 0, 0, 1, 1, 0]),
        (_rule("integer"), pa.array([1, None, 3], pa.int64()), [0, 0, 0]),
        (_rule("bool"), pa.array([0, 1, 7, 300, None], pa.int64()), [0, 0, 1, 1, 0]),
        (_rule("bool"), pa.array([0, 1, 300], pa.int16()), [0, 0, 1]),  # no int8 overflow
        (_rule("bool"), pa.array([True, None, False]), [0, 0, 0]),
        (_rule("finite"), pa.array([1.0, INF, -INF, NAN, None]), [0, 1, 1, 0, 0]),
        (_rule("min", 5.0), pa.array([5.0, 4.9, -INF, NAN, None]), [0, 1, 1, 0, 0]),
        (_rule("max", 120.0), pa.array([120, 121, None], pa.int64()), [0, 1, 0]),
        (_rule("in_set", ("a", "b")), pa.array(["a", "z", None, "b"]), [0, 1, 0, 0]),
        (
            _rule("in_set", ("a", "b")),
            pa.array(["a", "z", None]).dictionary_encode(),
            [0, 1, 0],
        ),
        (_rule("unique"), pa.array([1, 2, 1, None, None, 1], pa.int64()), [0, 0, 1, 0, 0, 1]),
        (_rule("unique"), pa.array(["x", "y", "x"]), [0, 0, 1]),
        (
            _rule("label", ("0", "1", "true", "false")),
            pa.array([0, 1, 2, None], pa.int8()),
            [0, 0, 1, 0],
        ),
        (_rule("label", ("0", "1", "true", "false")), pa.array([0.0, NAN, 0.5]), [0, 0, 1]),
        (_rule("label", ("0", "1", "true", "false")), pa.array([True, False, None]), [0, 0, 0]),
        (_rule("label", ("yes", "no")), pa.array(["yes", "no", None, "maybe"]), [0, 0, 0, 1]),
        (_rule("label"), pa.array([1.5, INF, None, NAN]), [0, 1, 0, 0]),  # regression
    ],
)
def test_bad_rows(rule: rules.Rule, column: pa.Array, bad: list[int]) -> None:
    assert rules.bad_rows(rule, column).tolist() == [bool(b) for b in bad]
    chunked = pa.chunked_array([column.slice(0, 1), column.slice(1)])
    assert rules.bad_rows(rule, chunked).tolist() == [bool(b) for b in bad]


@pytest.mark.parametrize("dtype", [pa.int64(), pa.string()])
def test_seen_ids_flag_every_later_occurrence_across_batches(dtype: pa.DataType) -> None:
    """Against a Python set: the first occurrence of an id in the partition is fine, every later
    one repeats, within a batch or across batches (eleven, so the runs merge); nulls never."""
    rng = np.random.default_rng(7)
    seen, tracker = set(), rules.SeenIds()
    for size in (1, 50, 3, 200, 0, 97, 64, 5, 300, 2, 40):
        ids = rng.integers(0, 400, size)
        column = pa.array(
            [None if i % 37 == 0 else (int(i) if dtype == pa.int64() else f"id-{i}") for i in ids],
            dtype,
        )
        want = []
        for value in column.to_pylist():
            want.append(value is not None and value in seen)
            if value is not None:
                seen.add(value)
        assert tracker.repeats(column).tolist() == want


def test_label_codes(churn: Settings, deliveries: Settings) -> None:
    spec = churn.dataset
    codes = rules.label_codes(spec, pa.array([0, 1, 2, None], pa.int8()))
    np.testing.assert_array_equal(codes, [0.0, 1.0, NAN, NAN])
    codes = rules.label_codes(spec, pa.array(["1", "0", "true", "false", "x", None]))
    np.testing.assert_array_equal(codes, [1.0, 0.0, 1.0, 0.0, NAN, NAN])
    np.testing.assert_array_equal(
        rules.label_codes(spec, pa.array([True, False, None])), [1.0, 0.0, NAN]
    )
    target = spec.target.model_copy(update={"classes": {"late": 1, "on_time": 0}})
    classes = spec.model_copy(update={"target": target})
    codes = rules.label_codes(classes, pa.array(["on_time", "late", None, "1"]))
    np.testing.assert_array_equal(codes, [0.0, 1.0, NAN, NAN])
    regression = deliveries.dataset
    np.testing.assert_array_equal(
        rules.label_codes(regression, pa.array([12.5, INF, None])), [12.5, NAN, NAN]
    )
    np.testing.assert_array_equal(
        rules.label_codes(regression, pa.array(["12.5", None])), [12.5, NAN]
    )


def test_check_columns(churn: Settings, deliveries: Settings) -> None:
    spec = churn.dataset
    arrow = {"category": pa.string(), "bool": pa.bool_()}
    columns = [(f.name, arrow.get(f.dtype, pa.float64())) for f in spec.features]
    good = pa.schema([(spec.entity_id, pa.int64()), *columns])
    rules.check_columns(good, spec)  # ints may arrive as float: rows are judged one by one
    i = good.get_field_index("has_partner")
    rules.check_columns(good.set(i, pa.field("has_partner", pa.int64())), spec)
    i = good.get_field_index("region")
    rules.check_columns(
        good.set(i, pa.field("region", pa.dictionary(pa.int32(), pa.string()))), spec
    )
    cases = [
        (good.remove(good.get_field_index("usage_gb")), r"'usage_gb' is missing \[rule: exists\]"),
        (good.remove(0), r"'customer_id' \(entity id\) is missing"),
        (good.set(0, pa.field(spec.entity_id, pa.string())), r"'customer_id' .*spec says int"),
        (
            good.set(
                good.get_field_index("monthly_charges"), pa.field("monthly_charges", pa.string())
            ),
            r"'monthly_charges' has type string, spec says float \[rule: type\]",
        ),
        (
            good.set(i, pa.field("region", pa.int32())),
            r"'region' has type int32, spec says category",
        ),
    ]
    for schema, message in cases:
        with pytest.raises(rules.SchemaMismatch, match=message):
            rules.check_columns(schema, spec)
    rules.check_columns(good.remove(good.get_field_index("usage_gb")), spec, ["tenure_months"])
    ids = pa.schema([(deliveries.dataset.entity_id, pa.int64())])
    rules.check_columns(ids, deliveries.dataset, [])  # string ids may arrive as numbers


def test_evaluate_tallies_and_describes(churn: Settings) -> None:
    spec = churn.dataset
    cfg = policy(churn, 0.0, range=0.5)
    table = pa.table(
        {
            "tenure_months": pa.array([1, 500, None, 7], pa.int64()),
            "total_charges": pa.array([1.0, NAN, None, 2.0]),
        }
    )
    tallies: dict[rules.Rule, rules.Tally] = {}
    ok, broken = rules.evaluate(rules.compile_rules(spec, cfg), table, tallies)
    assert ok.tolist() == [True, False, False, True]
    assert {(r.name, tuple(rows)) for rows, r in broken} == {("max=120", (1,)), ("not_null", (2,))}
    by_name = {(r.column, r.name): t for r, t in tallies.items()}
    assert by_name[("tenure_months", "not_null")].applied == 4  # every row
    assert by_name[("tenure_months", "max=120")].applied == 3  # present values only
    assert by_name[("total_charges", "finite")].applied == 2  # NaN is missing
    assert by_name[("tenure_months", "max=120")].example == 500
    hit = rules.over_threshold(tallies)
    assert hit is not None and hit[0].name == "not_null"  # 1 of 4 > 0; max=120: 1 of 3 <= 0.5
    assert rules.describe(*hit) == (
        "column 'tenure_months' broke rule not_null in 1 of 4 rows "
        "(above validation.reject_up_to.not_null = 0), e.g. None"
    )


# --- the agreement matrix: Great Expectations at ingest vs the scoring stream -------------------

ROWS, BAD = 20, 5  # one bad row in 20: 5%, inside a 20% share
FIRST = object()  # as a value: the entity id of row 0 (a repeat)


@dataclass(frozen=True)
class Case:
    """One bad value: `value` at row BAD of `column` (the column cast to `type_`). `family`:
    the reject_up_to family that tolerates it; None: nothing is wrong; "partition": fails the
    partition whatever the shares. `names`: the rules its row breaks (rejected_rows.rule)."""

    id: str
    column: str
    value: object
    family: str | None
    names: frozenset[str] = frozenset()
    type_: pa.DataType | None = None
    feature: dict = field(default_factory=dict)  # spec change: {feature name: updates}

    @property
    def label(self) -> bool:  # the stream never reads labels: compared with rules.evaluate
        return self.column == "churned"

    def apply(self, table: pa.Table) -> pa.Table:
        values = table.column(self.column).to_pylist()
        values[BAD] = values[0] if self.value is FIRST else self.value
        wanted = self.type_ or table.schema.field(self.column).type
        if pa.types.is_integer(wanted):
            values = [int(v) if isinstance(v, bool) else v for v in values]
        elif pa.types.is_string(wanted):
            values = [None if v is None else str(v) for v in values]
        i = table.schema.get_field_index(self.column)
        return table.set_column(i, self.column, pa.array(values, wanted))


def case(
    id: str, column: str, value: object, family: str | None, *names: str, **kw: object
) -> Case:
    return Case(id, column, value, family, frozenset(names), **kw)  # type: ignore[arg-type]


CASES = [
    case("nan-in-nullable-float", "total_charges", NAN, None),
    case("nan-in-non-nullable-float", "monthly_charges", NAN, "not_null", "not_null"),
    case("null-in-non-nullable-int", "tenure_months", None, "not_null", "not_null"),
    case("3.7-in-int", "tenure_months", 3.7, "type", "integer", type_=pa.float64()),
    case("7-in-bool", "has_partner", 7, "type", "bool", type_=pa.int64()),
    case("300-in-bool", "has_partner", 300, "type", "bool", type_=pa.int64()),
    case("+inf-in-float", "monthly_charges", INF, "range", "finite", "max=250"),
    case("-inf-in-float", "satisfaction", -INF, "range", "finite", "min=1"),
    case("int-above-max", "support_calls", 99, "range", "max=40"),
    case("int-below-min", "tenure_months", -1, "range", "min=0"),
    case("unknown-category-missing", "contract", "weekly", None),
    case(
        "unknown-category-reject",
        "contract",
        "weekly",
        "category",
        "in_set(3 values)",
        feature={"contract": {"on_unknown": "reject"}},
    ),
    case(
        "unknown-category-fail",
        "contract",
        "weekly",
        "partition",
        feature={"contract": {"on_unknown": "fail"}},
    ),
    case("repeated-entity-id", "customer_id", FIRST, "unique", "unique"),
    case("fractional-entity-id", "customer_id", 100.5, "type", "integer", type_=pa.float64()),
    case("text-in-numeric-column", "monthly_charges", "lots", "partition", type_=pa.string()),
    case("label-not-a-class", "churned", 2, "label", "label"),
    case("label-missing", "churned", None, None),
    # a row dated another day than its dt= folder: rejected, or the partition fails (policy)
    case("event-date-another-day", "event_date", date(2026, 9, 1), "event_date", "partition_day"),
    case("event-date-missing", "event_date", None, None),
]


def _partition(settings: Settings, root: str, case: Case) -> tuple[date, pa.Table]:
    cfg = settings.demo.model_copy(update={"days": 1, "rows_per_day": ROWS, "seed": 99})
    day = cfg.start_date
    table = case.apply(demo.generate_day(settings.dataset, cfg, day))
    storage.write_partition(root, day, table)
    return day, table


def _spec(settings: Settings, case: Case) -> DatasetSpec:
    spec = settings.dataset
    for name, update in case.feature.items():
        spec = with_feature(spec, name, **update)
    return spec


@pytest.mark.parametrize("shares", ["none", "lenient"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_ingest_and_stream_give_the_same_verdict(
    case: Case,
    shares: str,
    engine: sa.Engine,
    churn_model: tuple[Settings, LoadedModel],
    tmp_path: Path,
) -> None:
    """With every reject_up_to share at 0, Great Expectations fails the partition exactly when
    the stream raises PartitionRejected; with shares of 0.2, GX passes exactly when the stream
    scores the partition with the bad row, and only it, in rejected_rows under short rule
    names. Label rules: GX against rules.evaluate (the stream does not read labels)."""
    settings, model = churn_model
    spec = _spec(settings, case)
    cfg = policy(settings, 0.2 if shares == "lenient" else 0.0)
    root = str(tmp_path / "lake")
    day, table = _partition(settings, root, case)
    tolerated = shares == "lenient" and case.family not in (None, "partition")
    expect_ok = case.family is None or tolerated

    # the stream, on its own: a valid verdict is recorded so it judges every row itself
    record_verdict(engine, spec, cfg, root, day)
    try:
        result = score_partition(engine, spec, cfg, settings.scoring, model, root, day, "r1")
    except PartitionRejected as exc:
        stream_ok, result, stream_error = False, None, str(exc)
    else:
        stream_ok, stream_error = True, ""

    # Great Expectations at ingest, on the same files under the same rules
    report = validation.validate_partition(
        engine, spec, cfg, root, day, reports_url=None, run_id="ingest"
    )
    assert report.success is expect_ok, report.message()

    if case.label:  # labels are judged where they are used: at ingest and in training
        tallies: dict[rules.Rule, rules.Tally] = {}
        ok, broken = rules.evaluate(rules.compile_rules(spec, cfg), table, tallies)
        assert (rules.over_threshold(tallies) is None) is report.success
        assert {r.name for _, r in broken} == set(case.names)
        assert np.flatnonzero(~ok).tolist() == ([BAD] if case.names else [])
        assert stream_ok, stream_error  # a bad label never stops scoring
        assert result is not None and result.rows_rejected == 0
        return

    assert stream_ok is report.success, stream_error or report.message()
    if not stream_ok:
        assert f"dt={day}" in stream_error and repr(case.column) in stream_error
        assert "failed validation" not in stream_error  # the stream's own verdict
        return
    assert result is not None
    found = rejects(engine, day, model.version)
    if tolerated:
        bad = table.column(spec.entity_id).cast(pa.string())[BAD].as_py()
        assert (result.rows_rejected, result.rows_scored) == (1, ROWS - 1)
        assert found == {(bad, case.column, name) for name in case.names}
        assert all(len(name) <= 20 for _, _, name in found)  # never a whole vocabulary
    else:
        assert found == set() and (result.rows_rejected, result.rows_scored) == (0, ROWS)
    if case.id == "unknown-category-missing":
        assert result.unknown_values == {"contract": 1}
    assert len(stored(engine, day, model.version)) == result.rows_scored


def test_the_matrix_covers_every_rule_family() -> None:
    families = {c.family for c in CASES}
    assert families == {
        None,
        "partition",
        "not_null",
        "type",
        "range",
        "category",
        "unique",
        "label",
        "event_date",
    }
