"""score_partition on a small seeded lake: exactly once, skips, verdicts, rejects, unknown
categories, batching, regression.

tests/integration/test_postgres.py and test_s3_scoring.py reuse `train_small` and collect
some of these tests again with `engine` on PostgreSQL.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from batchpred import db, demo, registry, sinks, storage, training, verdicts
from batchpred.config import DatasetSpec, Settings, ValidationConfig
from batchpred.registry import LoadedModel
from batchpred.scoring import PartitionRejected, PartitionResult, score_partition
from tests.conftest import record_verdict

FAST = {"num_boost_round": 40, "early_stopping_rounds": 10, "nthread": 2}
ROOT = Path(__file__).resolve().parents[2]


def settings_for(dataset: str, tmp: Path) -> Settings:
    """tests.conftest.settings_for (imported by package name: in a full run the bare name
    `conftest` may be tests/flows/conftest.py)."""
    from tests.conftest import settings_for as shared

    return shared(dataset, tmp)


def train_small(
    settings: Settings, workdir: Path, *, rows: int = 300, shuffle_labels: bool = False
) -> tuple[Path, Path]:
    """A small model trained by training.train_model on 3 demo days (valid: 1, holdout: 1).
    With `shuffle_labels` the train/valid labels are permuted: a model no better than chance.
    Returns (model dir, holdout file)."""
    spec = settings.dataset
    cfg = settings.demo.model_copy(update={"rows_per_day": rows})
    days = [cfg.start_date + timedelta(days=i) for i in range(5)]
    tables = [demo.generate_day(spec, cfg, d) for d in days]
    data = workdir / "data"
    data.mkdir(parents=True)
    rng = np.random.default_rng(11)
    for split, parts in {"train": tables[:3], "valid": tables[3:4], "holdout": tables[4:]}.items():
        table = pa.concat_tables(parts)
        if shuffle_labels and split != "holdout":
            i = table.schema.get_field_index(spec.target.name)
            shuffled = table.column(i).take(pa.array(rng.permutation(table.num_rows)))
            table = table.set_column(i, spec.target.name, shuffled)
        pq.write_table(table, data / f"{split}.parquet")
    summary = {
        "days": [d.isoformat() for d in days],
        "splits": {
            split: [d.isoformat() for d in part]
            for split, part in {"train": days[:3], "valid": days[3:4], "holdout": days[4:]}.items()
        },
        "data_hash": f"shuffled={shuffle_labels}",
    }
    (data / training.PREPARE_FILE).write_text(json.dumps(summary))
    fast = settings.model_copy(update={"training": settings.training.model_copy(update=FAST)})
    training.train_model(fast, data, workdir / "model")
    return workdir / "model", data / "holdout.parquet"


def loaded(settings: Settings, workdir: Path) -> LoadedModel:
    """train_small, registered in a throwaway SQLite registry and loaded back."""
    model_dir, _ = train_small(settings, workdir)
    engine = db.create_engine(f"sqlite:///{workdir}/registry.db")
    db.migrate(engine)
    version = registry.register_model(engine, model_dir, str(workdir / "models"))
    model = registry.load_model(engine, version)
    engine.dispose()
    return model


@pytest.fixture(scope="module")
def churn_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, LoadedModel]:
    tmp = tmp_path_factory.mktemp("churn_model")
    settings = settings_for("churn", tmp)
    return settings, loaded(settings, tmp)


@pytest.fixture(scope="module")
def deliveries_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, LoadedModel]:
    tmp = tmp_path_factory.mktemp("deliveries_model")
    settings = settings_for("deliveries", tmp)
    return settings, loaded(settings, tmp)


def make_lake(settings: Settings, root: str, *, days: int = 2, rows: int = 200) -> list[date]:
    """Seeded demo partitions root/dt=YYYY-MM-DD/part-0.parquet (a different seed from the
    training days, so these are unseen rows)."""
    cfg = settings.demo.model_copy(update={"days": days, "rows_per_day": rows, "seed": 99})
    return demo.write_demo_source(settings.dataset, cfg, root)


def edit(table: pa.Table, column: str, rows: dict[int, object]) -> pa.Table:
    """`table` with some cells of `column` replaced."""
    values = table.column(column).to_pylist()
    for i, v in rows.items():
        values[i] = v
    i = table.schema.get_field_index(column)
    return table.set_column(i, column, pa.array(values, table.schema.field(column).type))


def stored(engine: sa.Engine, day: date, version: str) -> dict[str, dict]:
    """The partition's predictions by entity id; fails on a duplicated entity."""
    t = db.table(engine, "predictions")
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t).where(t.c.partition_date == day, t.c.model_version == version)
        ).mappings()
        rows = [dict(r) for r in rows]
    out = {r["entity_id"]: r for r in rows}
    assert len(out) == len(rows), "an entity has more than one prediction"
    return out


def rejects(engine: sa.Engine, day: date, version: str) -> set[tuple]:
    t = db.table(engine, "rejected_rows")
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.entity_id, t.c.column_name, t.c.rule).where(
                t.c.partition_date == day, t.c.model_version == version
            )
        )
        return {tuple(r) for r in rows}


def expected_scores(model: LoadedModel, table: pa.Table, settings: Settings) -> dict[str, float]:
    """The model's scores for `table`, matrix built from the model's own contract."""
    spec = settings.dataset
    scores = registry.predict_table(model, table)
    ids = [str(i) for i in table.column(spec.entity_id).to_pylist()]
    return dict(zip(ids, scores.tolist(), strict=True))


def lenient(settings: Settings, share: float = 0.5, **families: float) -> ValidationConfig:
    """The validation policy with every reject_up_to family at `share` (or as given)."""
    policy = {name: share for name in ("not_null", "type", "range", "category", "unique")}
    policy |= {"label": share, **families}
    return settings.validation.model_copy(
        update={"reject_up_to": settings.validation.reject_up_to.model_copy(update=policy)}
    )


def with_feature(spec: DatasetSpec, name: str, **update: object) -> DatasetSpec:
    """`spec` with one feature changed."""
    features = tuple(f.model_copy(update=update) if f.name == name else f for f in spec.features)
    return spec.model_copy(update={"features": features})


def score(
    engine: sa.Engine,
    settings: Settings,
    model: LoadedModel,
    root: str,
    day: date,
    run_id: str = "r1",
    *,
    spec: DatasetSpec | None = None,
    rules_cfg: ValidationConfig | None = None,
    **kwargs: object,
) -> PartitionResult:
    """score_partition with the settings' spec, validation policy and scoring section unless
    given; `cfg=` replaces the scoring section."""
    cfg = kwargs.pop("cfg", settings.scoring)
    return score_partition(
        engine,
        spec or settings.dataset,
        rules_cfg or settings.validation,
        cfg,  # type: ignore[arg-type]
        model,
        root,
        day,
        run_id,
        **kwargs,  # type: ignore[arg-type]
    )


def validated_at_ingest(
    engine: sa.Engine,
    settings: Settings,
    root: str,
    day: date,
    *,
    spec: DatasetSpec | None = None,
    rules_cfg: ValidationConfig | None = None,
) -> None:
    """Record a VALID verdict for the partition's current files without Great Expectations,
    so scoring goes straight to the stream's own row checks (its defence in depth)."""
    record_verdict(engine, spec or settings.dataset, rules_cfg or settings.validation, root, day)


def assert_nothing_written(engine: sa.Engine, day: date, version: str) -> None:
    assert stored(engine, day, version) == {}
    assert rejects(engine, day, version) == set()
    assert sinks.ledger_row(engine, day, version) is None


# --- tests ------------------------------------------------------------------------------------


def test_scores_every_row_once_with_probabilities_and_labels(
    engine: sa.Engine, churn_model: tuple[Settings, LoadedModel], tmp_path: Path
) -> None:
    settings, model = churn_model
    root = str(tmp_path / "lake")
    day = make_lake(settings, root)[0]
    result = score(engine, settings, model, root, day, "r1")
    assert (result.status, result.partition_date, result.model_version) == (
        "scored",
        day,
        model.version,
    )
    assert (result.rows_in, result.rows_scored, result.rows_rejected) == (200, 200, 0)
    assert result.unknown_values == {}
    # never validated: validated on the way in, and the verdict kept for the next reader
    status = verdicts.partition_status(engine, settings.dataset, settings.validation, root, day)
    assert status.status == "valid"
    table = storage.read_partition(root, day)
    expected = expected_scores(model, table, settings)
    rows = stored(engine, day, model.version)
    assert rows.keys() == expected.keys()
    scores = np.array([rows[i]["score"] for i in expected])
    assert np.all((scores >= 0) & (scores <= 1))
    assert scores == pytest.approx(list(expected.values()), abs=1e-6)
    assert all(r["label"] == int(r["score"] >= 0.5) for r in rows.values())
    assert {r["run_id"] for r in rows.values()} == {"r1"}
    ledger = sinks.ledger_row(engine, day, model.version)
    assert ledger["input_fingerprint"] == storage.fingerprint_partition(root, day)
    assert (ledger["rows_in"], ledger["rows_scored"], ledger["rows_rejected"]) == (200, 200, 0)


def test_second_run_skips_and_writes_nothing_new(
    engine: sa.Engine, churn_model: tuple[Settings, LoadedModel], tmp_path: Path
) -> None:
    settings, model = churn_model
    root = str(tmp_path / "lake")
    day = make_lake(settings, root)[0]
    score(engine, settings, model, root, day, "r1")
    before = stored(engine, day, model.version)
    again = score(engine, settings, model, root, day, "r2")
    assert again.status == "skipped" and again.rows_scored == 0
    assert stored(engine, day, model.version) == before
    assert sinks.ledger_row(engine, day, model.version)["run_id"] == "r1"


def test_changed_input_is_rescored(
    engine: sa.Engine, churn_model: tuple[Settings, LoadedModel], tmp_path: Path
) -> None:
    settings, model = churn_model
    root = str(tmp_path / "lake")
    day = make_lake(settings, root)[0]
    score(engine, settings, model, root, day, "r1")
    other = settings.demo.model_copy(update={"rows_per_day": 150, "seed": 5})
    new = demo.generate_day(settings.dataset, other, day)
    storage.write_partition(root, day, new)
    result = score(engine, settings, model, root, day, "r2")
    assert result.status == "scored" and result.rows_scored == 150
    rows = stored(engine, day, model.version)
    assert rows.keys() == expected_scores(model, new, settings).keys()
    assert {r["run_id"] for r in rows.values()} == {"r2"}
    ledger = sinks.ledger_row(engine, day, model.version)
    assert ledger["input_fingerprint"] == storage.fingerprint_partition(root, day)
    assert ledger["rows_in"] == 150


def test_force_rescores_the_same_input(
    engine: sa.Engine, churn_model: tuple[Settings, LoadedModel], tmp_path: Path
) -> None:
    settings, model = churn_model
    root = str(tmp_path / "lake")
    day = make_lake(settings, root)[0]
    score(engine, settings, model, root, day, "r1")
    before = stored(engine, day, model.version)
    result = score(engine, settings, model, root, day, "r2", force=True)
    assert result.status == "scored" and result.rows_scored == 200
    after = stored(engine, day, model.version)
    assert after.keys() == before.keys()
    assert {r["run_id"] for r in after.values()} == {"r2"}
    assert [after[i]["score"] for i in before] == [r["score"] for r in before.values()]


def test_missing_feature_column_rejects_the_partition(
    engine: sa.Engine, churn_model: tuple[Settings, LoadedModel], tmp_path: Path
) -> None:
    settings, model = churn_model
    root = str(tmp_path / "lake")
    day = make_lake(settings, root)[0]
    table = storage.read_partition(root, day).drop_columns(["usage_gb"])
    url = storage.write_partition(root, day, table)
    # validated on the way in: Great Expectations names the missing column
    with pytest.raises(PartitionRejected) as err:
        score(engine, settings, model, root, day, "r1")
    message = str(err.value)
    assert f"dt={day.isoformat()}" in message and "failed validation" in message
    assert "column 'usage_gb' failed expect_column_to_exist" in message
    assert_nothing_written(engine, day, model.version)
    # the stream checks each file's columns itself, whatever the verdict says
    validated_at_ingest(engine, settings, root, day)
    with pytest.raises(PartitionRejected) as err:
        score(engine, settings, model, root, day, "r1")
    message = str(err.value)
    assert f"dt={day.isoformat()}" in message
    assert url in message and "'usage_gb'" in message and "missing" in message
    assert_nothing_written(engine, day, model.version)


def test_wrong_column_type_rejects_the_partition(
    engine: sa.Engine, churn_model: tuple[Settings, LoadedModel], tmp_path: Path
) -> None:
    settings, model = churn_model
    root = str(tmp_path / "lake")
    day = make_lake(settings, root)[0]
    table = storage.read_partition(root, day)
    i = table.schema.get_field_index("contract")
    table = table.set_column(i, "contract", pc.index_in(table.column(i), pa.array(["monthly"])))
    storage.write_partition(root, day, table)
    with pytest.raises(
        PartitionRejected, match=r"(?s)dt=2026-10-01 .*failed validation.*'contract'"
    ):
        score(engine, settings, model, root, day, "r1")
    assert_nothing_written(engine, day, model.version)
    validated_at_ingest(engine, settings, root, day)
    with pytest.raises(PartitionRejected, match=r"dt=2026-10-01 .*'contract'.*\[rule: type\]"):
        score(engine, settings, model, root, day, "r1")
    assert_nothing_written(engine, day, model.version)


def test_out_of_range_value_fails_fast_when_no_rejects_allowed(
    engine: sa.Engine, churn_model: tuple[Settings, LoadedModel], tmp_path: Path
) -> None:
    settings, model = churn_model
    assert settings.validation.reject_up_to.range == 0
    root = str(tmp_path / "lake")
    day = make_lake(settings, root)[0]
    table = edit(storage.read_partition(root, day), "tenure_months", {170: 500})
    storage.write_partition(root, day, table)
    with pytest.raises(PartitionRejected) as err:
        score(engine, settings, model, root, day, "r1")
    message = str(err.value)
    assert f"dt={day.isoformat()}" in message and "failed validation" in message
    assert "column 'tenure_months' failed expect_column_values_to_be_between" in message
    assert_nothing_written(engine, day, model.version)
    # the stream, on its own, stops at the first broken row
    validated_at_ingest(engine, settings, root, day)
    with pytest.raises(PartitionRejected) as err:
        score(engine, settings, model, root, day, "r1")
    message = str(err.value)
    assert f"dt={day.isoformat()}" in message
    assert "column 'tenure_months' broke rule max=120 in 1 of" in message
    assert "reject_up_to.range = 0" in message and "e.g. 500" in message
    assert "nothing was written" in message
    assert_nothing_written(engine, day, model.version)


def test_rejected_rows_are_recorded_and_the_rest_scored(
    engine: sa.Engine, churn_model: tuple[Settings, LoadedModel], tmp_path: Path
) -> None:
    settings, model = churn_model
    spec = settings.dataset
    root = str(tmp_path / "lake")
    day = make_lake(settings, root)[0]
    table = storage.read_partition(root, day)
    table = edit(table, "tenure_months", {3: 500})
    table = edit(table, "monthly_charges", {10: 1.0})
    table = edit(table, "contract", {20: "weekly"})  # on_unknown missing: scored, counted
    table = edit(table, "satisfaction", {30: float("nan")})  # NaN is null: not_null
    storage.write_partition(root, day, table)
    ids = [str(i) for i in table.column(spec.entity_id).to_pylist()]
    result = score(engine, settings, model, root, day, "r1", rules_cfg=lenient(settings))
    assert (result.status, result.rows_in, result.rows_scored, result.rows_rejected) == (
        "scored",
        200,
        197,
        3,
    )
    assert result.unknown_values == {"contract": 1}
    assert rejects(engine, day, model.version) == {
        (ids[3], "tenure_months", "max=120"),
        (ids[10], "monthly_charges", "min=5"),
        (ids[30], "satisfaction", "not_null"),
    }
    good = [i for n, i in enumerate(ids) if n not in (3, 10, 30)]
    assert sorted(stored(engine, day, model.version)) == sorted(good)
    ledger = sinks.ledger_row(engine, day, model.version)
    assert (ledger["rows_in"], ledger["rows_scored"], ledger["rows_rejected"]) == (200, 197, 3)
    assert ledger["unknown_values"] == {"contract": 1}


def test_rejects_above_the_threshold_fail_the_partition(
    engine: sa.Engine, churn_model: tuple[Settings, LoadedModel], tmp_path: Path
) -> None:
    settings, model = churn_model
    rules_cfg = lenient(settings, 0.0, range=0.01)
    root = str(tmp_path / "lake")
    day = make_lake(settings, root)[0]
    table = edit(storage.read_partition(root, day), "support_calls", {1: 99, 2: 99, 3: 99})
    storage.write_partition(root, day, table)  # 3 of 200 rows: 1.5% > 1%
    with pytest.raises(PartitionRejected, match=r"(?s)failed validation.*'support_calls'"):
        score(engine, settings, model, root, day, "r1", rules_cfg=rules_cfg)
    assert_nothing_written(engine, day, model.version)
    validated_at_ingest(engine, settings, root, day, rules_cfg=rules_cfg)
    with pytest.raises(
        PartitionRejected,
        match=r"dt=2026-10-01 .*'support_calls' broke rule max=40 in 3 of 200 rows "
        r"\(above validation.reject_up_to.range = 0.01\)",
    ):
        score(engine, settings, model, root, day, "r1", rules_cfg=rules_cfg)
    assert_nothing_written(engine, day, model.version)


def test_duplicate_entity_ids_are_rejected_as_unique(
    engine: sa.Engine, churn_model: tuple[Settings, LoadedModel], tmp_path: Path
) -> None:
    settings, model = churn_model
    spec = settings.dataset
    root = str(tmp_path / "lake")
    day = make_lake(settings, root)[0]
    table = storage.read_partition(root, day)
    first = table.column(spec.entity_id)[0].as_py()
    storage.write_partition(root, day, edit(table, spec.entity_id, {7: first}))
    result = score(engine, settings, model, root, day, "r1", rules_cfg=lenient(settings))
    assert (result.rows_scored, result.rows_rejected) == (199, 1)
    assert rejects(engine, day, model.version) == {(str(first), spec.entity_id, "unique")}
    assert len(stored(engine, day, model.version)) == 199


def test_duplicate_entity_ids_across_batches_are_rejected_as_unique(
    engine: sa.Engine, churn_model: tuple[Settings, LoadedModel], tmp_path: Path
) -> None:
    settings, model = churn_model
    spec = settings.dataset
    cfg = settings.scoring.model_copy(update={"batch_rows": 50})
    root = str(tmp_path / "lake")
    day = make_lake(settings, root)[0]
    table = storage.read_partition(root, day)
    first = table.column(spec.entity_id)[0].as_py()
    storage.write_partition(root, day, edit(table, spec.entity_id, {120: first}))
    result = score(engine, settings, model, root, day, "r1", rules_cfg=lenient(settings), cfg=cfg)
    assert (result.rows_scored, result.rows_rejected) == (199, 1)
    assert rejects(engine, day, model.version) == {(str(first), spec.entity_id, "unique")}


def test_small_batches_give_the_same_predictions_as_one_batch(
    churn_model: tuple[Settings, LoadedModel], tmp_path: Path
) -> None:
    settings, model = churn_model
    root = str(tmp_path / "lake")
    day = make_lake(settings, root, rows=300)[0]
    storage.write_partition(root, day, storage.read_partition(root, day), row_group_size=64)
    results = {}
    for batch_rows in (37, 1_000):
        engine = db.create_engine(f"sqlite:///{tmp_path}/b{batch_rows}.db")
        db.migrate(engine)
        cfg = settings.scoring.model_copy(update={"batch_rows": batch_rows})
        result = score(engine, settings, model, root, day, "r1", cfg=cfg)
        assert result.rows_scored == 300
        results[batch_rows] = {
            i: (r["score"], r["label"]) for i, r in stored(engine, day, model.version).items()
        }
        engine.dispose()
    assert len(results[37]) == 300
    assert results[37] == results[1_000]


def test_regression_scores_with_null_labels(
    engine: sa.Engine, deliveries_model: tuple[Settings, LoadedModel], tmp_path: Path
) -> None:
    settings, model = deliveries_model
    root = str(tmp_path / "lake")
    day = make_lake(settings, root, rows=120)[0]
    result = score(engine, settings, model, root, day, "r1")
    assert result.status == "scored" and result.rows_scored == 120
    rows = stored(engine, day, model.version)
    expected = expected_scores(model, storage.read_partition(root, day), settings)
    assert rows.keys() == expected.keys()
    assert all(i.startswith("del-") for i in rows)  # string order ids kept as is
    assert all(r["label"] is None for r in rows.values())
    assert [rows[i]["score"] for i in expected] == pytest.approx(list(expected.values()), abs=1e-4)
    assert max(r["score"] for r in rows.values()) > 1  # minutes, not a probability


def test_missing_partition_is_rejected(
    engine: sa.Engine, churn_model: tuple[Settings, LoadedModel], tmp_path: Path
) -> None:
    settings, model = churn_model
    root = str(tmp_path / "lake")
    make_lake(settings, root, days=1)
    day = date(2026, 12, 24)
    with pytest.raises(PartitionRejected, match="dt=2026-12-24 .*no data files"):
        score(engine, settings, model, root, day, "r1")
    assert_nothing_written(engine, day, model.version)


def test_partition_that_failed_validation_at_ingest_is_never_scored(
    engine: sa.Engine, churn_model: tuple[Settings, LoadedModel], tmp_path: Path
) -> None:
    settings, model = churn_model
    spec = settings.dataset
    root = str(tmp_path / "lake")
    day = make_lake(settings, root)[0]
    record_verdict(
        engine, spec, settings.validation, root, day, valid=False, message="rule y broken"
    )
    with pytest.raises(PartitionRejected, match=rf"(?s)dt={day}.*failed validation.*'x'.*rule y"):
        score(engine, settings, model, root, day, "r1")
    assert_nothing_written(engine, day, model.version)
    # a verdict about older content does not apply: the new content is validated and scored
    other = settings.demo.model_copy(update={"rows_per_day": 150, "seed": 5})
    storage.write_partition(root, day, demo.generate_day(spec, other, day))
    result = score(engine, settings, model, root, day, "r1")
    assert (result.status, result.rows_scored) == ("scored", 150)
    assert verdicts.partition_status(engine, spec, settings.validation, root, day).status == "valid"


def test_never_validated_partition_is_refused_when_configured(
    engine: sa.Engine, churn_model: tuple[Settings, LoadedModel], tmp_path: Path
) -> None:
    settings, model = churn_model
    root = str(tmp_path / "lake")
    day = make_lake(settings, root)[0]
    cfg = settings.scoring.model_copy(update={"unvalidated": "refuse"})
    with pytest.raises(PartitionRejected, match=rf"dt={day} .*never validated.*refuse"):
        score(engine, settings, model, root, day, "r1", cfg=cfg)
    assert_nothing_written(engine, day, model.version)
    status = verdicts.partition_status(engine, settings.dataset, settings.validation, root, day)
    assert status.status == "unvalidated"  # refusing validates nothing
    validated_at_ingest(engine, settings, root, day)
    assert score(engine, settings, model, root, day, "r1", cfg=cfg).rows_scored == 200


def test_verdict_under_another_policy_does_not_apply(
    engine: sa.Engine, churn_model: tuple[Settings, LoadedModel], tmp_path: Path
) -> None:
    """A verdict belongs to the rules it was reached under: after a policy change the
    partition is validated again before it is scored."""
    settings, model = churn_model
    spec = settings.dataset
    root = str(tmp_path / "lake")
    day = make_lake(settings, root)[0]
    storage.write_partition(
        root, day, edit(storage.read_partition(root, day), "support_calls", {5: 99})
    )
    validated_at_ingest(engine, settings, root, day, rules_cfg=lenient(settings))
    with pytest.raises(PartitionRejected, match="failed validation"):
        score(engine, settings, model, root, day, "r1")  # strict policy: validated again
    assert verdicts.partition_status(engine, spec, settings.validation, root, day).status == (
        "invalid"
    )
    assert verdicts.partition_status(engine, spec, lenient(settings), root, day).status == "valid"
    assert_nothing_written(engine, day, model.version)


def test_partition_without_labels_validates_and_is_scored(
    engine: sa.Engine, churn_model: tuple[Settings, LoadedModel], tmp_path: Path
) -> None:
    """Days to score arrive before their labels: the label column is optional."""
    settings, model = churn_model
    spec = settings.dataset
    root = str(tmp_path / "lake")
    day = make_lake(settings, root)[0]
    table = storage.read_partition(root, day).drop_columns([spec.target.name])
    storage.write_partition(root, day, table)
    result = score(engine, settings, model, root, day, "r1")
    assert (result.status, result.rows_scored, result.rows_rejected) == ("scored", 200, 0)
    assert verdicts.partition_status(engine, spec, settings.validation, root, day).status == (
        "valid"
    )
    expected = expected_scores(model, table, settings)
    rows = stored(engine, day, model.version)
    assert [rows[i]["score"] for i in expected] == pytest.approx(list(expected.values()), abs=1e-6)


# --- category values the model never saw --------------------------------------------------


def _unseen_contract_value(settings: Settings, root: str, rows: dict[int, str]) -> date:
    """A lake day whose `contract` column holds values at `rows` the model never saw."""
    day = make_lake(settings, root)[0]
    storage.write_partition(root, day, edit(storage.read_partition(root, day), "contract", rows))
    return day


def test_unknown_category_is_scored_as_missing_and_counted_by_default(
    engine: sa.Engine, churn_model: tuple[Settings, LoadedModel], tmp_path: Path
) -> None:
    settings, model = churn_model
    spec = settings.dataset
    assert spec.feature("contract").on_unknown == "missing"
    root = str(tmp_path / "lake")
    day = _unseen_contract_value(settings, root, {4: "weekly", 9: "weekly", 11: "daily"})
    result = score(engine, settings, model, root, day, "r1")
    assert (result.status, result.rows_scored, result.rows_rejected) == ("scored", 200, 0)
    assert result.unknown_values == {"contract": 3}
    assert sinks.ledger_row(engine, day, model.version)["unknown_values"] == {"contract": 3}
    assert rejects(engine, day, model.version) == set()
    table = storage.read_partition(root, day)
    as_missing = edit(table, "contract", {4: None, 9: None, 11: None})
    expected = expected_scores(model, as_missing, settings)
    rows = stored(engine, day, model.version)
    assert [rows[i]["score"] for i in expected] == pytest.approx(list(expected.values()), abs=1e-6)


def test_unknown_category_rejects_its_row_with_on_unknown_reject(
    engine: sa.Engine, churn_model: tuple[Settings, LoadedModel], tmp_path: Path
) -> None:
    """`weekly` is in today's spec (so the partition is valid) but not in the model's
    vocabulary: with on_unknown reject the row lands in rejected_rows as unknown_category."""
    settings, model = churn_model
    spec = with_feature(
        settings.dataset,
        "contract",
        categories=("monthly", "annual", "biennial", "weekly"),
        on_unknown="reject",
    )
    rules_cfg = lenient(settings, 0.0, category=0.05)
    root = str(tmp_path / "lake")
    day = _unseen_contract_value(settings, root, {4: "weekly"})
    ids = [str(i) for i in storage.read_partition(root, day).column(spec.entity_id).to_pylist()]
    result = score(engine, settings, model, root, day, "r1", spec=spec, rules_cfg=rules_cfg)
    assert (result.status, result.rows_scored, result.rows_rejected) == ("scored", 199, 1)
    assert result.unknown_values == {"contract": 1}
    assert rejects(engine, day, model.version) == {(ids[4], "contract", "unknown_category")}
    assert ids[4] not in stored(engine, day, model.version)


def test_unknown_category_fails_the_partition_with_on_unknown_fail(
    engine: sa.Engine, churn_model: tuple[Settings, LoadedModel], tmp_path: Path
) -> None:
    settings, model = churn_model
    spec = with_feature(
        settings.dataset,
        "contract",
        categories=("monthly", "annual", "biennial", "weekly"),
        on_unknown="fail",
    )
    rules_cfg = lenient(settings)  # fail never tolerates a value, whatever the shares
    root = str(tmp_path / "lake")
    day = _unseen_contract_value(settings, root, {4: "weekly"})
    with pytest.raises(PartitionRejected) as err:
        score(engine, settings, model, root, day, "r1", spec=spec, rules_cfg=rules_cfg)
    message = str(err.value)
    assert f"dt={day}" in message and "'contract'" in message and "'weekly'" in message
    assert model.version in message and "nothing was written" in message
    assert_nothing_written(engine, day, model.version)
