"""Training stages on a small synthetic lake: window, labels, determinism, metrics, gate,
drift."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
import xgboost as xgb

from batchpred import (
    baselines,
    config,
    db,
    evaluation,
    ingestion,
    labels,
    model,
    monitoring,
    registry,
    reports,
    schema,
    sinks,
    stats,
    storage,
    training,
    validation,
    window,
)
from batchpred.config import DatasetSpec, Settings
from batchpred.schema import arrow_schema, encode_column
from tasks import reporting
from tests.conftest import record_verdict, settings_for

START = date(2026, 10, 1)
FAST = {"num_boost_round": 60, "early_stopping_rounds": 10, "nthread": 2}


def fast(settings: Settings, **training_overrides: object) -> Settings:
    """Short windows and few rounds, so the suite stays quick; no Data Docs HTML."""
    cfg = {"window_days": 6, "valid_days": 1, "holdout_days": 1, **FAST, **training_overrides}
    return settings.model_copy(
        update={
            "training": settings.training.model_copy(update=cfg),
            "validation": settings.validation.model_copy(update={"data_docs": False}),
        }
    )


def synthetic_day(
    spec: DatasetSpec, day: date, rows: int, seed: int, shift: float = 0.0
) -> pa.Table:
    """One partition drawn from the spec alone; the target depends on the first two numeric
    features, so it is learnable."""
    rng = np.random.default_rng(seed)
    cols: dict[str, pa.Array] = {}
    ids = np.arange(rows)[::-1] + seed * 10_000  # reversed: prepare must sort
    cols[spec.entity_id] = pa.array(
        ids if spec.entity_id_dtype == "int" else [f"e{i}" for i in ids]
    )
    cols[spec.event_date] = pa.array([day] * rows, pa.date32())
    signal = []
    for f in spec.features:
        if f.dtype == "category":
            assert f.categories
            values = pa.array(rng.choice(f.categories, rows).tolist(), pa.string())
        elif f.dtype == "bool":
            values = pa.array(rng.random(rows) < 0.4)
        else:
            lo, hi = f.min or 0.0, f.max if f.max is not None else 100.0
            u = np.clip(rng.beta(2, 2, rows) + shift, 0, 1)
            signal.append(u - 0.5)
            x = lo + u * (hi - lo)
            values = pa.array(np.round(x).astype(np.int64) if f.dtype == "int" else x)
        if f.nullable:
            values = pa.array(values.to_pylist(), values.type, mask=rng.random(rows) < 0.05)
        cols[f.name] = values
    score = 4 * signal[0] - 3 * signal[1] + rng.normal(0, 0.3, rows)
    if spec.target.classes:  # text labels: the class names mapped to 1 and 0
        names = {code: name for name, code in spec.target.classes.items()}
        cols[spec.target.name] = pa.array(np.where(score > 0, names[1], names[0]).tolist())
    elif spec.target.task == "binary":
        cols[spec.target.name] = pa.array((score > 0).astype(np.int8))
    else:
        cols[spec.target.name] = pa.array(30 + 10 * score)
    return pa.table(cols).cast(arrow_schema(spec))


def write_day(settings: Settings, day: date, table: pa.Table) -> None:
    """A raw partition with the manifest ingest writes (label_rows: how many rows have one)."""
    storage.write_partition(settings.lake.raw, day, table)
    name = settings.dataset.target.name
    labels = table.num_rows - table.column(name).null_count if name in table.column_names else 0
    manifest = {"partition": day.isoformat(), "rows": table.num_rows, "label_rows": labels}
    storage.write_manifest(settings.lake.raw, day, manifest)


def build_lake(
    settings: Settings,
    engine: sa.Engine,
    days: int = 8,
    rows: int = 300,
    *,
    failed: tuple[int, ...] = (),
    unvalidated: tuple[int, ...] = (),
    unlabelled: tuple[int, ...] = (),
    edit: Callable[[int, pa.Table], pa.Table] | None = None,
) -> list[date]:
    """`days` partitions with manifests and verdicts recorded as ingest does: indices in
    `failed` are invalid, in `unvalidated` have no verdict, in `unlabelled` have no label
    column. `edit(i, table)` may change a day before it is written."""
    out = []
    spec = settings.dataset
    for i in range(days):
        day = START + timedelta(days=i)
        table = synthetic_day(spec, day, rows, i)
        if i in unlabelled:
            table = table.drop_columns([spec.target.name])
        if edit is not None:
            table = edit(i, table)
        write_day(settings, day, table)
        if i not in unvalidated:
            valid = i not in failed
            record_verdict(engine, spec, settings.validation, settings.lake.raw, day, valid=valid)
        out.append(day)
    return out


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One churn lake, prepared and trained once, shared by the read-only tests."""
    tmp = tmp_path_factory.mktemp("trained")
    settings = fast(settings_for("churn", tmp))
    engine = db.create_engine(f"sqlite:///{tmp}/verdicts.db")
    db.migrate(engine)
    build_lake(settings, engine)
    data, model = tmp / "data", tmp / "model"
    summary = training.prepare_training_set(settings, data, engine)
    manifest = training.train_model(settings, data, model)
    yield {
        "settings": settings,
        "engine": engine,
        "data": data,
        "model": model,
        "summary": summary,
        "manifest": manifest,
    }
    engine.dispose()


# --- prepare ----------------------------------------------------------------------------------


def test_prepare_picks_newest_validated_labelled_window(
    churn: Settings, engine: sa.Engine, tmp_path: Path
) -> None:
    """The window is the window_days calendar days ending at the newest labelled day: days in
    it that cannot be trained on are missing (named with their reason), never replaced by
    older days."""
    settings = fast(churn, window_days=6)
    days = build_lake(
        settings, engine, days=8, rows=50, unvalidated=(3,), failed=(5,), unlabelled=(6,)
    )
    summary = training.prepare_training_set(settings, tmp_path / "out", engine)
    assert summary["days"] == [d.isoformat() for d in (days[2], days[4], days[7])]
    assert summary["excluded"] == [
        {"day": days[3].isoformat(), "reason": "not validated"},
        {"day": days[5].isoformat(), "reason": "validation failed"},
        {"day": days[6].isoformat(), "reason": "no labels yet"},
    ]
    assert summary["missing_days"] == summary["excluded"]  # every gap here is a partition
    assert summary["window"] == {
        "first": days[2].isoformat(),
        "last": days[7].isoformat(),
        "days": 6,
    }
    assert summary["splits"] == {
        "train": [days[2].isoformat()],
        "valid": [days[4].isoformat()],
        "holdout": [days[7].isoformat()],
    }
    assert summary["rows"] == {"train": 50, "valid": 50, "holdout": 50}
    assert summary["unlabelled_rows"] == summary["rejected_rows"] == 0
    assert summary["rows_by_day"][days[2].isoformat()] == {
        "rows": 50,
        "rejected": 0,
        "unlabelled": 0,
    }
    spec = settings.dataset
    holdout = pq.read_table(tmp_path / "out/holdout.parquet")
    train = pq.read_table(tmp_path / "out/train.parquet")
    assert holdout.column_names == arrow_schema(spec).names
    assert holdout.schema.field(spec.target.name).type == pa.float64()  # label as float
    assert set(holdout.column(spec.event_date).to_pylist()) == {days[7]}
    dates, ids = (train.column(c).to_pylist() for c in (spec.event_date, spec.entity_id))
    keys = list(zip(dates, ids, strict=True))
    assert keys == sorted(keys)
    assert json.loads((tmp_path / "out/prepare.json").read_text()) == summary


def test_too_few_validated_days_is_a_clear_error(
    churn: Settings, engine: sa.Engine, tmp_path: Path
) -> None:
    settings = fast(churn, valid_days=2, holdout_days=2)
    build_lake(settings, engine, days=6, rows=20, failed=(0, 3))
    with pytest.raises(
        training.TrainingDataError, match=r"at least 5 valid, labelled partitions .* found 4"
    ) as err:
        training.prepare_training_set(settings, tmp_path / "out", engine)
    assert "validation failed" in str(err.value)  # says what it passed over


def test_until_limits_the_window(churn: Settings, engine: sa.Engine, tmp_path: Path) -> None:
    settings = fast(churn, window_days=3, until=START + timedelta(days=4))
    days = build_lake(settings, engine, days=8, rows=20, unlabelled=(4,))
    window = training.select_window(settings, engine)
    assert window.days == tuple(days[1:4])  # the newest labelled days up to `until`
    assert window.excluded == ({"day": days[4].isoformat(), "reason": "no labels yet"},)
    assert window.missing == ()  # after the window: waiting for labels, not missing
    early = fast(churn, window_days=3, until=START + timedelta(days=1))
    with pytest.raises(training.TrainingDataError, match=r"up to 2026-10-02, found 2"):
        training.select_window(early, engine)


def test_prepared_files_are_byte_identical_across_runs(trained: dict, tmp_path: Path) -> None:
    again = training.prepare_training_set(trained["settings"], tmp_path, trained["engine"])
    assert again["data_hash"] == trained["summary"]["data_hash"]
    for split in training.SPLITS:
        assert sha(tmp_path / f"{split}.parquet") == sha(trained["data"] / f"{split}.parquet")


def test_rows_breaking_a_rule_are_never_trained_on(
    churn: Settings, engine: sa.Engine, tmp_path: Path
) -> None:
    """The training set is not validated again as a whole: each day has its verdict (Great
    Expectations, under the same rules), and the few rows a reject share lets through are
    dropped and counted; a day above the share is passed over."""
    base = fast(churn)
    reject = base.validation.reject_up_to.model_copy(update={"range": 0.1})
    settings = base.model_copy(
        update={"validation": base.validation.model_copy(update={"reject_up_to": reject})}
    )
    spec, root = settings.dataset, settings.lake.raw
    bad_ids: list[int] = []

    def out_of_range(i: int, table: pa.Table) -> pa.Table:
        broken = {6: 2, 7: 25}.get(i, 0)  # of 30 rows: 2 within the 10% share, 25 above
        values = table.column("satisfaction").to_pylist()
        for row in range(broken):
            values[row] = 9.0
        if i == 6:
            bad_ids.extend(table.column(spec.entity_id).to_pylist()[:broken])
        return table.set_column(
            table.schema.get_field_index("satisfaction"), "satisfaction", pa.array(values)
        )

    days = build_lake(settings, engine, rows=30, unvalidated=tuple(range(8)), edit=out_of_range)
    for day in days:
        validation.validate_partition(
            engine, spec, settings.validation, root, day, reports_url=None, run_id="ingest"
        )
    summary = training.prepare_training_set(settings, tmp_path / "out", engine)
    assert summary["excluded"] == [{"day": days[7].isoformat(), "reason": "validation failed"}]
    assert days[6].isoformat() in summary["days"]
    assert summary["rejected_rows"] == 2
    assert summary["rows_by_day"][days[6].isoformat()] == {
        "rows": 30,
        "rejected": 2,
        "unlabelled": 0,
    }
    ids = set()
    for split in training.SPLITS:
        table = pq.read_table(tmp_path / "out" / f"{split}.parquet")
        ids |= set(table.column(spec.entity_id).to_pylist())
        assert max(table.column("satisfaction").to_pylist()) <= 5
    assert len(ids) == sum(summary["rows"].values()) and not ids & set(bad_ids)


def test_rows_without_labels_are_left_out_and_counted(
    churn: Settings, engine: sa.Engine, tmp_path: Path
) -> None:
    settings = fast(churn)
    spec = settings.dataset

    def unlabel(i: int, table: pa.Table) -> pa.Table:
        if i != 2:
            return table
        column = table.schema.get_field_index(spec.target.name)
        labels = table.column(column).to_pylist()
        labels[:10] = [None] * 10
        return table.set_column(column, spec.target.name, pa.array(labels, pa.int8()))

    days = build_lake(settings, engine, rows=30, edit=unlabel)
    summary = training.prepare_training_set(settings, tmp_path / "out", engine)
    assert summary["unlabelled_rows"] == 10 and summary["rejected_rows"] == 0
    assert summary["rows_by_day"][days[2].isoformat()] == {
        "rows": 30,
        "rejected": 0,
        "unlabelled": 10,
    }
    train = pq.read_table(tmp_path / "out/train.parquet")
    assert train.column(spec.target.name).null_count == 0
    assert summary["rows"]["train"] == 4 * 30 - 10


def test_text_classes_train(churn: Settings, engine: sa.Engine, tmp_path: Path) -> None:
    """Labels given as text (`classes: {yes: 1, no: 0}`) are mapped to 0/1 for training."""
    settings = fast(churn)
    target = settings.dataset.target.model_copy(update={"classes": {"yes": 1, "no": 0}})
    settings = settings.model_copy(
        update={"dataset": settings.dataset.model_copy(update={"target": target})}
    )
    days = build_lake(settings, engine, rows=200)
    raw = storage.read_partition(settings.lake.raw, days[0]).column("churned")
    assert set(raw.to_pylist()) == {"yes", "no"}
    training.prepare_training_set(settings, tmp_path / "data", engine)
    holdout = pq.read_table(tmp_path / "data/holdout.parquet")
    assert set(holdout.column("churned").to_pylist()) == {0.0, 1.0}
    training.train_model(settings, tmp_path / "data", tmp_path / "model")
    metrics = evaluation.evaluate_model(
        settings, tmp_path / "model/model.ubj", tmp_path / "data/holdout.parquet"
    )
    assert metrics["auc"] > 0.7 and metrics["rows"] == 200


def test_late_labels_are_joined_for_training(
    churn: Settings, engine: sa.Engine, tmp_path: Path
) -> None:
    """Days arrive without labels; labels come later from labels.url (dt= partitions of id
    and label), are ingested into lake.labels and joined to the rows on the entity id."""
    source = str(tmp_path / "late")
    settings = fast(churn)
    settings = settings.model_copy(
        update={"labels": settings.labels.model_copy(update={"url": source})}
    )
    spec = settings.dataset
    days = build_lake(settings, engine, rows=40, unlabelled=tuple(range(8)))
    with pytest.raises(training.TrainingDataError, match="no labels yet"):
        training.select_window(settings, engine)
    truth: dict[int, int] = {}
    for i, day in enumerate(days[:7]):  # the newest day's labels have not arrived yet
        full = synthetic_day(spec, day, 40, i)
        labels = full.select([spec.entity_id, spec.target.name])
        labels = labels.take(pa.array(np.arange(40)[::-1]))  # any order: joined by id
        ids, ys = (labels.column(c).to_pylist() for c in labels.column_names)
        truth.update(zip(ids, ys, strict=True))
        storage.write_partition(source, day, labels)
        assert ingestion.ingest_labels(settings, day).status == "new"
    summary = training.prepare_training_set(settings, tmp_path / "out", engine)
    assert summary["excluded"] == [{"day": days[7].isoformat(), "reason": "no labels yet"}]
    assert summary["days"] == [d.isoformat() for d in days[1:7]]
    assert summary["unlabelled_rows"] == 0
    small = training.prepare_training_set(settings, tmp_path / "small", engine, batch_rows=7)
    assert small == summary  # labels looked up batch by batch: the same files
    for split in training.SPLITS:
        table = pq.read_table(tmp_path / "out" / f"{split}.parquet")
        ids = table.column(spec.entity_id).to_pylist()
        labels = table.column(spec.target.name).to_pylist()
        assert labels == [float(truth[i]) for i in ids]


def test_snapshot_trains_on_one_day_split_by_rows(churn: Settings, engine: sa.Engine) -> None:
    """A snapshot (one table, no dates) ingested as a day, validated, and trained on with
    training.split rows: a stable hash of the entity id picks each row's split."""
    spec = churn.dataset
    snapshot = Path(churn.source.url) / "snapshot.parquet"
    snapshot.parent.mkdir(parents=True)
    pq.write_table(synthetic_day(spec, START, 900, 1).drop_columns([spec.event_date]), snapshot)
    settings = fast(churn, window_days=1, split="rows")
    settings = settings.model_copy(
        update={
            "source": settings.source.model_copy(
                update={"url": str(snapshot), "layout": "snapshot"}
            )
        }
    )
    day = date(2027, 3, 1)
    ingestion.ingest_partition(settings, day)
    report = validation.validate_partition(
        engine, spec, settings.validation, settings.lake.raw, day, reports_url=None, run_id="i"
    )
    assert report.success, report.message()
    out = Path(settings.lake.raw).parent / "train"
    summary = training.prepare_training_set(settings, out / "data", engine)
    assert summary["days"] == [day.isoformat()]
    assert summary["splits"] == {split: [day.isoformat()] for split in training.SPLITS}
    rows = summary["rows"]
    assert sum(rows.values()) == 900
    assert 0.08 < rows["valid"] / 900 < 0.22 and 0.08 < rows["holdout"] / 900 < 0.22
    ids = [
        set(pq.read_table(out / "data" / f"{s}.parquet").column(spec.entity_id).to_pylist())
        for s in training.SPLITS
    ]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    again = training.prepare_training_set(settings, out / "again", engine, batch_rows=64)
    assert again["data_hash"] == summary["data_hash"]  # the same rows land in the same split
    # the split is schema.entity_unit's: what the gate reads back to find the holdout rows
    units = [
        schema.entity_unit(pq.read_table(out / "data" / f"{s}.parquet").column(spec.entity_id))
        for s in training.SPLITS
    ]
    cfg = settings.training
    assert units[2].max() < cfg.holdout_fraction <= units[1].min()
    assert units[1].max() < cfg.holdout_fraction + cfg.valid_fraction <= units[0].min()
    manifest = training.train_model(settings, out / "data", out / "model")
    assert manifest["evaluated"]["seen"] == {
        "split": "rows",
        "days": [day.isoformat()],
        "holdout_fraction": cfg.holdout_fraction,
    }
    metrics = evaluation.evaluate_model(
        settings, out / "model/model.ubj", out / "data/holdout.parquet"
    )
    assert metrics["auc"] > 0.7


# --- missing days and late labels matching no row ----------------------------------------------


def test_a_missing_day_is_named_never_replaced_by_an_older_one(
    churn: Settings, engine: sa.Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A day absent from the lake inside the window: the window keeps its span (6 calendar
    days), trains on the 5 present and names the gap in prepare.json, the log, the model
    manifest (covered by the registered manifest hash), the nightly summary and `status`;
    with training.missing_days fail, prepare refuses in one line naming the day."""
    settings = fast(churn)
    days = build_lake(settings, engine, rows=40)
    shutil.rmtree(storage.partition_path(settings.lake.raw, days[5]))
    gap = [{"day": "2026-10-06", "reason": "no partition"}]
    with caplog.at_level(logging.WARNING, logger="batchpred.training"):
        summary = training.prepare_training_set(settings, tmp_path / "data", engine)
    assert summary["days"] == [d.isoformat() for d in (*days[2:5], *days[6:])]  # not days[1]
    assert summary["missing_days"] == gap and summary["excluded"] == []
    assert summary["window"] == {"first": "2026-10-03", "last": "2026-10-08", "days": 6}
    assert "misses 1 of 6 days: 2026-10-06 (no partition)" in caplog.text
    manifest = training.train_model(settings, tmp_path / "data", tmp_path / "model")
    assert manifest["created_from"] == {"days": summary["days"], "missing_days": gap}

    said = "5 of 6 days, 2026-10-03..2026-10-08; missing 2026-10-06 (no partition)"
    data = training.training_data(summary, manifest)
    assert data["days"] == said  # the model report artifact's row and the nightly summary's
    assert reports.training_lines(data)[0] == f"  trained on {said}"
    version = registry.register_model(
        engine, tmp_path / "model", settings.training.registry, dataset="churn"
    )
    registry.set_alias(engine, "churn", registry.CHAMPION, version, "test")
    assert reports.status(engine, "churn").splitlines()[1] == f"champion trained on {said}"
    stored = Path(registry.get_version(engine, version)["uri"]).parent / "manifest.json"
    edited = json.loads(stored.read_text())
    edited["created_from"]["missing_days"] = []  # hiding the gap breaks the registered hash
    stored.write_text(json.dumps(edited))
    with pytest.raises(registry.ModelIntegrityError):
        registry.load_model(engine, version)

    strict = fast(churn, missing_days="fail")
    with pytest.raises(training.TrainingDataError) as err:
        training.prepare_training_set(strict, tmp_path / "strict", engine)
    assert str(err.value) == (
        "training window 2026-10-03..2026-10-08 of churn misses 1 of 6 days: 2026-10-06 "
        "(no partition) (training.missing_days: fail)"
    )


def test_every_gap_in_the_window_is_named_with_its_reason() -> None:
    """Consecutive days with one reason read as a range; a manifest from before missing days
    were recorded says only what it knows."""
    missing = [
        {"day": "2026-10-05", "reason": "validation failed"},
        {"day": "2026-10-02", "reason": "no partition"},
        {"day": "2026-10-03", "reason": "no partition"},
    ]
    days = ["2026-10-01", "2026-10-04", "2026-10-06"]
    assert training.describe_days(days, missing) == (
        "3 of 6 days, 2026-10-01..2026-10-06; missing 2026-10-02..2026-10-03 (no partition), "
        "2026-10-05 (validation failed)"
    )
    assert training.describe_days(days, []) == "3 of 3 days, 2026-10-01..2026-10-06"
    assert training.describe_days(days, None) == "3 day(s), 2026-10-01..2026-10-06"


def _late_labels(settings: Settings, day: date, i: int, rows: int, unmatched: int) -> pa.Table:
    """The day's true labels from labels.url, ingested into lake.labels; the first
    `unmatched` ids in another format (an upstream change), so they match no row."""
    spec = settings.dataset
    labels = synthetic_day(spec, day, rows, i).select([spec.entity_id, spec.target.name])
    ids = labels.column(spec.entity_id).to_numpy().copy()
    ids[:unmatched] += 10_000_000
    labels = labels.set_column(0, spec.entity_id, pa.array(ids))
    assert settings.labels.url is not None
    storage.write_partition(settings.labels.url, day, labels)
    assert ingestion.ingest_labels(settings, day).status == "new"
    return labels


def test_late_labels_matching_no_row_are_counted_and_fail_their_day_above_the_share(
    churn: Settings, engine: sa.Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Late labels whose ids match no row of their day: counted per day (prepare.json and the
    nightly summary); above labels.max_unmatched_fraction (1%) the labels day fails in one line
    naming the day, the labels file and the count, and is not trained on (a missing day)."""
    settings = fast(churn)
    settings = settings.model_copy(
        update={"labels": settings.labels.model_copy(update={"url": str(tmp_path / "late")})}
    )
    days = build_lake(settings, engine, rows=200, unlabelled=tuple(range(8)))
    for i, day in enumerate(days):
        _late_labels(settings, day, i, 200, {4: 2, 5: 200}.get(i, 0))  # 1%: passes; all: fails
    files = storage.partition_files(settings.lake.labels, days[5])
    line = (
        f"late labels of 2026-10-06 failed: 200 of 200 match no row of the day's partition "
        f"({files[0]}; labels.max_unmatched_fraction 0.01)"
    )
    with caplog.at_level(logging.WARNING, logger="batchpred.training"):
        summary = training.prepare_training_set(settings, tmp_path / "data", engine)
    assert line in caplog.text
    assert days[5].isoformat() not in summary["days"] and days[4].isoformat() in summary["days"]
    assert summary["missing_days"] == [{"day": "2026-10-06", "reason": line}]
    late = summary["late_labels"]
    assert set(late) == {d.isoformat() for d in days[2:]}
    assert late["2026-10-05"] == {"rows": 200, "unmatched": 2, "failed": False, "files": ANY}
    assert late["2026-10-06"] == {"rows": 200, "unmatched": 200, "failed": True, "files": files}
    assert late["2026-10-07"]["unmatched"] == 0
    assert summary["unlabelled_rows"] == 2  # the rows whose label went to another id
    data = training.training_data(summary, {})
    assert data["late_labels_matching_no_row"] == (
        "2026-10-05 2 of 200, 2026-10-06 200 of 200 (failed: left out)"
    )
    assert "    late labels matching no row: 2026-10-05 2 of 200" in "\n".join(
        reports.training_lines(data)
    )
    assert data["days"].endswith(f"missing 2026-10-06 ({line})")


def _scored_late_labelled_days(
    churn: Settings, engine: sa.Engine, tmp_path: Path, trained: dict, wrong_every: int = 0
) -> tuple[Settings, list[date], str]:
    """Two scored days whose labels arrive late, 3 and 2 of 200 matching no row (the first
    day fails its check); scores follow the truth, inverted every `wrong_every`-th row."""
    settings = churn.model_copy(
        update={"labels": churn.labels.model_copy(update={"url": str(tmp_path / "late")})}
    )
    days = build_lake(settings, engine, days=2, rows=200, unlabelled=(0, 1))
    version = registry.register_model(engine, trained["model"], str(tmp_path / "models"))
    for i, day in enumerate(days):
        truth = _late_labels(settings, day, i, 200, (3, 2)[i])
        ids = [str(x) for x in synthetic_day(settings.dataset, day, 200, i)[0].to_pylist()]
        scores = np.clip(np.nan_to_num(truth.column(1).to_numpy(zero_copy_only=False)), 0.1, 0.9)
        if wrong_every:
            scores = np.where(np.arange(200) % wrong_every == 0, 1 - scores, scores)
        prediction = sinks.PredictionBatch(
            pa.array(ids, pa.string()), scores.astype(float), (scores >= 0.5).astype(np.int8), None
        )
        key = sinks.PartitionKey("churn", day, version)
        with sinks.partition_writer(engine, key, "run", fingerprint="fp") as out:
            out.write(prediction)
            out.finish(sinks.LedgerEntry("fp", 200, 0, datetime.now(UTC)))
    return settings, days, version


def test_realised_metrics_apply_the_same_rule_to_late_labels(
    churn: Settings, engine: sa.Engine, tmp_path: Path, trained: dict
) -> None:
    """Realised performance joins the same late labels to the predictions: a failed labels
    day gets no metrics but a row saying why (0 rows, the same one line), which `status`
    shows; a passing day's metrics carry its count of unmatched labels."""
    settings, days, version = _scored_late_labelled_days(churn, engine, tmp_path, trained)
    rows = {r["partition_date"]: r for r in monitoring.realised_performance(engine, settings)}
    failed, passed = rows[days[0]], rows[days[1]]
    files = storage.partition_files(settings.lake.labels, days[0])
    line = (
        f"late labels of 2026-10-01 failed: 3 of 200 match no row of the day's partition "
        f"({files[0]}; labels.max_unmatched_fraction 0.01)"
    )
    assert failed["rows"] == 0 and failed["metrics"] == {"error": line, "unmatched_labels": 3}
    assert passed["rows"] == 198 and passed["metrics"]["unmatched_labels"] == 2
    assert "auc" in passed["metrics"]
    status = reports.status(engine, "churn")
    assert line in status.splitlines() and status.count("labels failed") == 1  # its cell
    assert "2026-10-02 late labels: 2 match no row of the day's partition" in status


def test_outcomes_hold_each_rows_actual_label_and_agree_with_realised_metrics(
    churn: Settings, engine: sa.Engine, tmp_path: Path, trained: dict
) -> None:
    """Where labels land, `outcomes` gets one row per labelled entity of a scored day, which
    joins predictions row by row: the accuracy an analyst computes from the join is the one
    realised metrics report, and the realised_performance view shows the metrics as columns.
    A labels day that failed its check has no outcomes (and the view says why)."""
    settings, days, version = _scored_late_labelled_days(
        churn, engine, tmp_path, trained, wrong_every=7
    )
    computed = {r["partition_date"]: r for r in monitoring.realised_performance(engine, settings)}
    ids, y = labels.day_labels(settings, days[1])
    expected = {e: v for e, v in zip(ids.to_pylist(), y.tolist(), strict=True) if v == v}
    with engine.connect() as conn:
        stored = conn.execute(
            sa.text(
                "SELECT partition_date, entity_id, label, arrived_at FROM outcomes "
                "WHERE dataset = 'churn'"
            )
        ).all()
        joined = conn.execute(
            sa.text(
                "SELECT count(*) AS n, avg(CASE WHEN p.label = o.label THEN 1.0 ELSE 0.0 END) "
                "AS accuracy FROM predictions p JOIN outcomes o ON o.dataset = p.dataset "
                "AND o.partition_date = p.partition_date AND o.entity_id = p.entity_id "
                "WHERE p.dataset = 'churn' AND p.model_version = :v"
            ),
            {"v": version},
        ).one()
        view = {
            str(r.partition_date): r
            for r in conn.execute(
                sa.text("SELECT * FROM realised_performance WHERE dataset = 'churn'")
            )
        }
    assert {str(r.partition_date) for r in stored} == {str(days[1])}  # the failed day has none
    assert {r.entity_id: r.label for r in stored} == expected and len(expected) == 198
    realised = computed[days[1]]["metrics"]
    assert joined.n == computed[days[1]]["rows"] == 198
    assert float(joined.accuracy) == pytest.approx(realised["accuracy"])
    assert 0.5 < realised["accuracy"] < 1.0  # the join is row by row, not trivially equal
    assert view[str(days[1])].auc == pytest.approx(realised["auc"])
    assert view[str(days[1])].accuracy == pytest.approx(realised["accuracy"])
    assert view[str(days[1])].error is None and not view[str(days[1])].in_sample
    assert view[str(days[0])].rows == 0 and view[str(days[0])].error.startswith(
        "late labels of 2026-10-01"
    )
    # A second pass changes nothing; a changed label alone gets a new arrived_at.
    assert monitoring.realised_performance(engine, settings) == []
    first = {r.entity_id: r.arrived_at for r in stored}
    flipped = y.copy()
    flipped[np.flatnonzero(~np.isnan(y))[0]] = 1 - flipped[np.flatnonzero(~np.isnan(y))[0]]
    assert monitoring.store_outcomes(engine, "churn", days[1], (ids, flipped)) == 198
    with engine.connect() as conn:
        after = {
            r.entity_id: (r.label, r.arrived_at)
            for r in conn.execute(sa.text("SELECT entity_id, label, arrived_at FROM outcomes"))
        }
    changed = [e for e in after if after[e][1] != first[e]]
    assert len(changed) == 1 and after[changed[0]][0] == 1 - expected[changed[0]]
    monitoring.store_outcomes(engine, "churn", days[1], None)  # labels taken back: no outcomes
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM outcomes")).scalar() == 0


# --- train / evaluate -------------------------------------------------------------------------


def test_train_and_evaluate_binary(trained: dict) -> None:
    settings, manifest = trained["settings"], trained["manifest"]
    metrics = evaluation.evaluate_model(
        settings, trained["model"] / "model.ubj", trained["data"] / "holdout.parquet"
    )
    assert metrics["auc"] > 0.7 and metrics["primary"] == "auc"
    assert metrics["primary_value"] == metrics["auc"]
    assert metrics["rows"] == 300 and 0 <= metrics["accuracy"] <= 1 and metrics["logloss"] > 0
    assert manifest["params"]["objective"] == "binary:logistic"
    assert manifest["params"]["seed"] == 0 and manifest["params"]["nthread"] == 2


def test_manifest_describes_the_saved_model(trained: dict) -> None:
    settings, manifest, model = trained["settings"], trained["manifest"], trained["model"]
    spec = settings.dataset
    # the returned manifest holds the contract's tuples; the file holds them as lists
    assert json.loads((model / "manifest.json").read_text()) == json.loads(json.dumps(manifest))
    assert manifest["sha256"] == sha(model / "model.ubj")
    assert manifest["features"] == spec.feature_names
    assert list(manifest["feature_dtypes"]) == spec.feature_names
    contract = schema.Contract.from_dict(manifest["contract"])
    assert contract.feature_names == spec.feature_names
    assert contract.dataset == spec.name and contract.threshold == spec.target.threshold
    assert contract.features[-1].vocabulary == spec.features[-1].categories
    assert contract.feature_types.count("c") == 3  # native categorical splits
    assert manifest["training_data_hash"] == trained["summary"]["data_hash"]
    assert manifest["created_from"]["days"] == trained["summary"]["days"]
    assert set(manifest["reference_stats"]) == set(spec.feature_names)
    booster = xgb.Booster(model_file=str(model / "model.ubj"))
    assert booster.feature_names == spec.feature_names
    assert booster.feature_types == contract.feature_types
    assert manifest["tuning"] is None  # training.tune is off by default


def test_the_deployed_model_is_refit_on_every_split(trained: dict) -> None:
    """training.refit (the default): model.ubj is refit on train + valid + holdout for the
    evaluated model's best_iteration + 1 rounds; evaluated.ubj is the early-stopped model the
    gate judges, which saw the train and valid days only."""
    manifest, model, summary = trained["manifest"], trained["model"], trained["summary"]
    rows, best = summary["rows"], manifest["best_iteration"]
    evaluated = manifest["evaluated"]
    assert evaluated["file"] == "evaluated.ubj"
    assert evaluated["sha256"] == sha(model / "evaluated.ubj")
    assert evaluated["sha256"] != manifest["sha256"]
    assert (model / "model.ubj").read_bytes() != (model / "evaluated.ubj").read_bytes()
    assert evaluated["best_iteration"] == best
    assert (evaluated["train_rows"], evaluated["valid_rows"]) == (rows["train"], rows["valid"])
    splits = summary["splits"]
    assert evaluated["seen"] == {
        "split": "days",
        "days": splits["train"] + splits["valid"],  # never a holdout day
        "holdout_fraction": None,
    }
    assert manifest["refit"] == {
        "rows": sum(rows.values()),
        "num_boost_round": best + 1,
        "days": summary["days"],
    }
    assert manifest["train_rows"] == sum(rows.values())  # the deployed model's rows
    deployed = xgb.Booster(model_file=str(model / "model.ubj"))
    twin = xgb.Booster(model_file=str(model / "evaluated.ubj"))
    assert deployed.num_boosted_rounds() == twin.num_boosted_rounds() == best + 1
    assert best + 1 < FAST["num_boost_round"]  # early stopping cut the evaluated model


def test_the_refit_learns_the_newest_days(
    deliveries: Settings, engine: sa.Engine, tmp_path: Path
) -> None:
    """Cars appear in the valid and holdout days only, 30 minutes slower than the rest: the
    evaluated model never saw a car, the refit learns them."""
    settings = fast(deliveries)
    spec = settings.dataset

    def cars_only_lately(i: int, table: pa.Table) -> pa.Table:
        vehicle = np.array(table.column("vehicle").to_pylist())
        minutes = table.column(spec.target.name).to_numpy()
        if i < 6:  # the train days (window: days 2..7, valid day 6, holdout day 7)
            vehicle[vehicle == "car"] = "bike"
        else:
            minutes = minutes + 30.0 * (vehicle == "car")
        table = table.set_column(table.schema.get_field_index("vehicle"), "vehicle", [vehicle])
        column = table.schema.get_field_index(spec.target.name)
        return table.set_column(column, spec.target.name, pa.array(minutes))

    build_lake(settings, engine, rows=200, edit=cars_only_lately)
    data, model = tmp_path / "data", tmp_path / "model"
    training.prepare_training_set(settings, data, engine)
    manifest = training.train_model(settings, data, model)
    contract = schema.Contract.from_dict(manifest["contract"])
    newest = pa.concat_tables(pq.read_table(data / f"{s}.parquet") for s in ("valid", "holdout"))
    cars = newest.filter(pc.equal(newest.column("vehicle"), "car"))
    y = cars.column(spec.target.name).to_numpy()
    x, _ = schema.feature_matrix(cars, contract)

    def rmse(file: str) -> float:
        booster = xgb.Booster(model_file=str(model / file))
        return float(np.sqrt(np.mean((booster.inplace_predict(x) - y) ** 2)))

    assert cars.num_rows > 50
    assert rmse("evaluated.ubj") > 20 and rmse("model.ubj") < 0.5 * rmse("evaluated.ubj")


def test_refit_off_deploys_the_evaluated_model(trained: dict, tmp_path: Path) -> None:
    """training.refit false: model.ubj is the evaluated model itself (byte for byte what the
    refit run saves as evaluated.ubj), fit on the train split; no evaluated.ubj."""
    (tmp_path / "evaluated.ubj").write_bytes(b"left by an earlier run")
    settings = fast(trained["settings"], refit=False)
    manifest = training.train_model(settings, trained["data"], tmp_path)
    assert not (tmp_path / "evaluated.ubj").exists()
    assert (tmp_path / "model.ubj").read_bytes() == (
        trained["model"] / "evaluated.ubj"
    ).read_bytes()
    assert manifest["refit"] is None
    assert manifest["evaluated"]["file"] == "model.ubj"
    assert manifest["evaluated"]["sha256"] == manifest["sha256"] == sha(tmp_path / "model.ubj")
    assert manifest["evaluated"]["seen"] == trained["manifest"]["evaluated"]["seen"]
    assert manifest["train_rows"] == trained["summary"]["rows"]["train"]
    assert manifest["baselines"] == trained["manifest"]["baselines"]


def test_baselines_are_saved_beside_the_model(trained: dict) -> None:
    """The prior is the train split's positive rate; linear.ubj (gblinear, fit on the train
    split) beats chance on the holdout."""
    settings, manifest, data = trained["settings"], trained["manifest"], trained["data"]
    spec, model = settings.dataset, trained["model"]
    train = pq.read_table(data / "train.parquet")
    prior = manifest["baselines"]["prior"]["value"]
    assert prior == pytest.approx(float(np.mean(train.column(spec.target.name).to_numpy())))
    linear = manifest["baselines"]["linear"]
    assert linear["file"] == "linear.ubj" and linear["sha256"] == sha(model / "linear.ubj")
    assert linear["rows"] == train.num_rows
    booster = baselines.load_linear((model / "linear.ubj").read_bytes())
    assert booster.save_config().count('"gblinear"') >= 1
    holdout = pq.read_table(data / "holdout.parquet")
    contract = schema.Contract.from_dict(manifest["contract"])
    scores = baselines.predict_linear(booster, linear["encoding"], holdout, contract)
    y = holdout.column(spec.target.name).to_numpy()
    assert evaluation.metrics_for(spec, y, scores)["auc"] > 0.7


def test_same_data_seed_nthread_give_identical_model(trained: dict, tmp_path: Path) -> None:
    again = training.train_model(trained["settings"], trained["data"], tmp_path)
    assert again["sha256"] == trained["manifest"]["sha256"] == sha(tmp_path / "model.ubj")
    assert again == trained["manifest"]
    for file in ("evaluated.ubj", "linear.ubj"):
        assert sha(tmp_path / file) == sha(trained["model"] / file)


# --- tuning -----------------------------------------------------------------------------------


def test_tuning_is_a_seeded_search_on_the_validation_split(trained: dict, tmp_path: Path) -> None:
    """training.tune: trial 0 is the configured params, then candidates drawn from the space
    with the seed; the best valid AUC wins and its params are the model's; twice: the same
    choice and the same bytes."""
    base = trained["settings"]
    tune = base.training.tune.model_copy(update={"enabled": True, "trials": 3})
    settings = fast(base, tune=tune)
    first = training.train_model(settings, trained["data"], tmp_path / "a")
    second = training.train_model(settings, trained["data"], tmp_path / "b")
    tuning = first["tuning"]
    assert tuning["metric"] == "auc" and tuning["trials_planned"] == tuning["ran"] == 3
    assert tuning["stopped_by_budget"] is False and len(tuning["trials"]) == 3
    configured = trained["manifest"]["params"]
    assert tuning["trials"][0]["params"] == {k: v for k, v in configured.items() if k in tune.space}
    for trial in tuning["trials"][1:]:
        assert set(trial["params"]) == set(tune.space)
        for name, value in trial["params"].items():
            low, high = tune.space[name]
            assert low <= value <= high
        assert isinstance(trial["params"]["max_depth"], int)
    values = [t["valid_value"] for t in tuning["trials"]]
    assert values[tuning["chosen"]] == max(values)
    chosen = tuning["trials"][tuning["chosen"]]
    assert first["params"] == {**configured, **chosen["params"]}
    assert first["best_iteration"] == chosen["best_iteration"]
    assert second["tuning"]["chosen"] == tuning["chosen"] and second["params"] == first["params"]
    drawn = [t["params"] for t in tuning["trials"]]
    assert [t["params"] for t in second["tuning"]["trials"]] == drawn
    assert first["sha256"] == second["sha256"]
    assert sha(tmp_path / "a/evaluated.ubj") == sha(tmp_path / "b/evaluated.ubj")
    # trial 0 is the untuned run: the same valid AUC as the evaluated model of `trained`
    untuned = xgb.Booster(model_file=str(trained["model"] / "evaluated.ubj"))
    assert tuning["trials"][0]["best_iteration"] == trained["manifest"]["best_iteration"]
    assert untuned.num_boosted_rounds() == tuning["trials"][0]["best_iteration"] + 1


def test_tuning_stops_when_its_budget_is_spent(trained: dict, tmp_path: Path) -> None:
    base = trained["settings"]
    tune = base.training.tune.model_copy(update={"enabled": True, "trials": 5, "budget_s": 1e-9})
    manifest = training.train_model(fast(base, tune=tune), trained["data"], tmp_path)
    assert manifest["tuning"]["ran"] == 1 and manifest["tuning"]["stopped_by_budget"] is True
    assert manifest["tuning"]["chosen"] == 0 and manifest["sha256"] == trained["manifest"]["sha256"]


# --- bounded memory -----------------------------------------------------------------------------


def test_prepared_files_do_not_depend_on_the_batch_size(trained: dict, tmp_path: Path) -> None:
    """Each day is read in batches and sorted through spill files, one chunk of its sorted
    order at a time (7 rows: 43 chunks a day): the files are the same, and no spill file is
    left."""
    settings, engine = trained["settings"], trained["engine"]
    small = training.prepare_training_set(settings, tmp_path, engine, batch_rows=7)
    assert small == trained["summary"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "holdout.parquet",
        "prepare.json",
        "train.parquet",
        "valid.parquet",
    ]


def test_the_window_is_never_read_whole(
    trained: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prepare, train and evaluate read record batches only: no partition or split is read
    as one table; XGBoost gets QuantileDMatrix from batches, and a plain DMatrix (gblinear
    takes no other) never holds more than baselines.LINEAR_MAX_ROWS rows (here 100)."""
    plain = xgb.DMatrix

    def whole(*args: object, **kwargs: object) -> None:
        raise AssertionError("read whole")

    def bounded(data: np.ndarray, *args: object, **kwargs: object) -> xgb.DMatrix:
        assert len(data) <= 100, f"a DMatrix of {len(data)} rows"
        return plain(data, *args, **kwargs)

    for module, name, patch in [
        (pq, "read_table", whole),
        (storage, "read_partition", whole),
        (storage, "read_files", whole),
        (xgb, "DMatrix", bounded),
    ]:
        monkeypatch.setattr(module, name, patch)
    monkeypatch.setattr(baselines, "LINEAR_MAX_ROWS", 100)
    settings, engine = trained["settings"], trained["engine"]
    summary = training.prepare_training_set(settings, tmp_path / "data", engine)
    manifest = training.train_model(settings, tmp_path / "data", tmp_path / "model")
    metrics = evaluation.evaluate_model(
        settings, tmp_path / "model/model.ubj", tmp_path / "data/holdout.parquet"
    )
    assert summary == trained["summary"]
    assert manifest["baselines"]["linear"]["rows"] < 100  # train and valid: 100 together
    del manifest["baselines"]
    assert manifest == {k: v for k, v in trained["manifest"].items() if k != "baselines"}
    assert metrics["rows"] == summary["rows"]["holdout"]


def test_streamed_statistics_and_metrics_equal_the_whole_table_ones(trained: dict) -> None:
    """Reference statistics and the score reference, computed a batch at a time over the
    rows the deployed (refit) model was fit on, are those of the whole splits in memory; so
    are the evaluated model's holdout metrics."""
    settings, manifest, data = trained["settings"], trained["manifest"], trained["data"]
    spec = settings.dataset
    contract = schema.Contract.from_dict(manifest["contract"])
    every = pa.concat_tables(pq.read_table(data / f"{s}.parquet") for s in training.SPLITS)
    expected = stats.reference_statistics(every, contract)
    assert manifest["reference_stats"] == json.loads(json.dumps(expected))
    booster = xgb.Booster(model_file=str(trained["model"] / "model.ubj"))
    scores = booster.inplace_predict(
        schema.feature_matrix(every, contract)[0], validate_features=False
    )
    assert manifest["score_reference"] == stats.score_statistics(scores)
    holdout = pq.read_table(data / "holdout.parquet")
    twin = xgb.Booster(model_file=str(trained["model"] / "evaluated.ubj"))
    predictions = twin.inplace_predict(
        schema.feature_matrix(holdout, contract)[0], validate_features=False
    )
    y = holdout.column(spec.target.name).to_numpy()
    whole = evaluation.metrics_for(spec, y, predictions, contract.threshold)
    metrics = evaluation.evaluate_model(
        settings, trained["model"] / "model.ubj", data / "holdout.parquet"
    )
    assert {k: metrics[k] for k in whole} == whole


def test_max_rows_trains_on_a_deterministic_sample_of_the_split(
    trained: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """training.max_rows caps the rows each fit holds: the evaluated model's train and valid
    splits, and the refit's three, each split in proportion to its size."""
    settings, data = trained["settings"], trained["data"]
    spec = settings.dataset
    assert trained["manifest"]["train_sample"] is None
    rows = trained["summary"]["rows"]
    at_size = fast(settings, max_rows=sum(rows.values()))  # what the refit holds
    assert training.train_model(at_size, data, tmp_path / "all") == trained["manifest"]

    capped = fast(settings, max_rows=500)
    with caplog.at_level("WARNING", logger="batchpred.training"):
        first = training.train_model(capped, data, tmp_path / "a")
    # the evaluated model: train and valid shrink by the same share, to 500 rows together
    valid_kept = round(500 * rows["valid"] / (rows["train"] + rows["valid"]))
    assert (
        f"the evaluated model of churn: the splits it is fit on hold 1500 rows, above "
        f"training.max_rows: XGBoost gets a sample of {500 - valid_kept} of 1,200 training rows "
        f"and {valid_kept} of 300 early-stopping rows"
    ) in caplog.text
    assert first["evaluated"]["train_rows"] == 500 - valid_kept
    assert first["evaluated"]["valid_rows"] == valid_kept
    # the refit: all three splits, to 500 rows together
    kept = {s: round(500 * rows[s] / sum(rows.values())) for s in ("valid", "holdout")}
    kept["train"] = 500 - kept["valid"] - kept["holdout"]
    assert "the refit of churn: the splits it is fit on hold 1800 rows" in caplog.text
    assert first["train_rows"] == first["refit"]["rows"] == 500
    assert first["train_sample"] == {
        "max_rows": 500,
        "split_rows": 1200,
        "train_kept": kept["train"],
        "valid_rows": rows["valid"],
        "valid_kept": kept["valid"],
        "holdout_rows": rows["holdout"],
        "holdout_kept": kept["holdout"],
    }
    assert training.training_data(trained["summary"], first)["trained_on_a_sample"] == (
        f"{kept['train']} of 1,200 training rows, {kept['valid']} of 300 early-stopping rows "
        f"and {kept['holdout']} of 300 holdout rows (training.max_rows 500)"
    )
    second = training.train_model(capped, data, tmp_path / "b")
    assert first == second and sha(tmp_path / "a/model.ubj") == sha(tmp_path / "b/model.ubj")
    assert first["sha256"] != trained["manifest"]["sha256"]
    tables = []
    for split in training.SPLITS:
        sampled = training._sample(training._Rows(data / f"{split}.parquet"), spec, kept[split])
        table = pq.read_table(data / f"{split}.parquet").filter(pa.array(sampled.keep))
        assert table.num_rows == kept[split]
        assert set(table.column(spec.event_date).to_pylist()) == {  # every day of the split
            date.fromisoformat(d) for d in trained["summary"]["splits"][split]
        }
        tables.append(table)
    contract = schema.Contract.from_dict(first["contract"])
    reference = stats.reference_statistics(pa.concat_tables(tables), contract)
    assert first["reference_stats"] == json.loads(json.dumps(reference))  # the rows fit on

    # without the refit, the deployed model is the evaluated one and so is the sample
    unrefit = training.train_model(fast(capped, refit=False), data, tmp_path / "c")
    assert unrefit["train_rows"] == 500 - valid_kept
    assert unrefit["train_sample"] == {
        "max_rows": 500,
        "split_rows": 1200,
        "train_kept": 500 - valid_kept,
        "valid_rows": rows["valid"],
        "valid_kept": valid_kept,
    }
    assert sha(tmp_path / "c/model.ubj") == sha(tmp_path / "a/evaluated.ubj")


def test_regression_trains_and_evaluates(
    deliveries: Settings, engine: sa.Engine, tmp_path: Path
) -> None:
    settings = fast(deliveries)
    build_lake(settings, engine, rows=200)
    training.prepare_training_set(settings, tmp_path / "data", engine)
    manifest = training.train_model(settings, tmp_path / "data", tmp_path / "model")
    assert manifest["task"] == "regression" and manifest["params"]["eval_metric"] == ["rmse"]
    assert manifest["params"]["max_depth"] == 5  # dataset params win over defaults
    metrics = evaluation.evaluate_model(
        settings, tmp_path / "model/model.ubj", tmp_path / "data/holdout.parquet"
    )
    assert metrics["primary"] == "neg_rmse" and metrics["primary_value"] == -metrics["rmse"]
    assert metrics["rmse"] < 8 and metrics["r2"] > 0.5 and metrics["mae"] > 0


# --- metrics (evaluation) ---------------------------------------------------------------------


def test_auc_handles_ties(churn: Settings) -> None:
    spec = churn.dataset
    y = np.array([0, 0, 1, 1])
    assert evaluation.metrics_for(spec, y, np.array([0.1, 0.4, 0.35, 0.8]))["auc"] == 0.75
    assert evaluation.metrics_for(spec, y, np.full(4, 0.5))["auc"] == 0.5
    assert evaluation.metrics_for(spec, y, np.array([0.2, 0.5, 0.5, 0.9]))["auc"] == 0.875
    with pytest.raises(ValueError, match="one class"):
        evaluation.metrics_for(spec, np.ones(3), np.full(3, 0.5))


def test_metrics_ignore_rows_without_a_label_and_use_the_threshold(churn: Settings) -> None:
    spec = churn.dataset
    y = np.array([0, np.nan, 1, 1, np.nan])
    p = np.array([0.1, 0.9, 0.35, 0.8, 0.0])
    metrics = evaluation.metrics_for(spec, y, p)
    assert metrics["rows"] == 3 and metrics["auc"] == 1.0
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert evaluation.metrics_for(spec, y, p, threshold=0.3)["accuracy"] == 1.0


# --- drift reference --------------------------------------------------------------------------


def psi(expected: list[float], actual: list[float]) -> float:
    e, a = np.clip(expected, 1e-4, None), np.clip(actual, 1e-4, None)
    return float(np.sum((a - e) * np.log(a / e)))


def test_reference_statistics_and_bin_fractions(churn: Settings) -> None:
    spec = churn.dataset
    base = synthetic_day(spec, START, 3000, seed=1)
    contract = schema.build_contract(spec, base)
    reference = stats.reference_statistics(base, contract)
    json.dumps(reference, allow_nan=False)  # JSON-safe
    same = synthetic_day(spec, START, 3000, seed=2)
    shifted = synthetic_day(spec, START, 3000, seed=3, shift=0.3)
    for f in contract.features:
        s = reference[f.name]
        nullable = spec.feature(f.name).nullable
        assert sum(s["fractions"]) == pytest.approx(1.0)
        assert 0 <= s["null_rate"] <= 1 and (s["null_rate"] > 0) == nullable
        own = stats.bin_fractions(encode_column(f, base.column(f.name))[0], s)
        assert own == s["fractions"]
        again = stats.bin_fractions(encode_column(f, same.column(f.name))[0], s)
        assert psi(s["fractions"], again) < 0.02
        if s["kind"] == "numeric":
            assert len(s["edges"]) <= 9 and s["edges"] == sorted(set(s["edges"]))
            assert s["mean"] is not None and s["std"] > 0
            moved = stats.bin_fractions(encode_column(f, shifted.column(f.name))[0], s)
            assert psi(s["fractions"], moved) > 0.2
        else:
            assert len(s["fractions"]) == (len(f.vocabulary or ()) if f.dtype == "category" else 2)


def test_realised_metrics_on_a_day_the_model_was_fit_on_are_marked_in_sample(
    trained: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refit is fit on the newest labelled day, which the nightly also scores: realised
    metrics of a day among the deployed model's trained days carry `in_sample` (status says
    "in-sample", the realised table in the Prefect UI has it), those of a day it never saw do
    not."""
    settings = trained["settings"]
    engine = db.create_engine(f"sqlite:///{tmp_path}/registry.db")
    db.migrate(engine)
    model_dir = tmp_path / "model"
    shutil.copytree(trained["model"], model_dir)
    manifest = json.loads((model_dir / training.MANIFEST_FILE).read_text())
    fitted = manifest["refit"]["days"]
    seen, unseen = date.fromisoformat(fitted[-2]), date.fromisoformat(fitted[-1])
    manifest["refit"]["days"] = fitted[:-1]  # as if the newest day came after the window
    (model_dir / training.MANIFEST_FILE).write_text(json.dumps(manifest))
    version = registry.register_model(engine, model_dir, str(tmp_path / "models"))
    for day in (seen, unseen):
        ids = synthetic_day(settings.dataset, day, 300, (day - START).days)[0]
        scores = np.random.default_rng(1).uniform(size=300)
        prediction = sinks.PredictionBatch(
            ids.cast(pa.string()), scores, (scores >= 0.5).astype(np.int8), None
        )
        key = sinks.PartitionKey("churn", day, version)
        with sinks.partition_writer(engine, key, "run", fingerprint="fp") as out:
            out.write(prediction)
            out.finish(sinks.LedgerEntry("fp", 300, 0, datetime.now(UTC)))
    rows = {r["partition_date"]: r for r in monitoring.realised_performance(engine, settings)}
    assert rows[seen]["metrics"]["in_sample"] is True
    assert "in_sample" not in rows[unseen]["metrics"] and rows[unseen]["rows"] == 300
    status = reports.status(engine, "churn")
    assert status.count("labelled, in-sample)") == 1 and "(300 labelled)" in status
    tables: list[dict[str, Any]] = []
    monkeypatch.setattr(reporting, "create_table_artifact", lambda **kw: tables.append(kw))
    reporting.publish_realised.fn("churn", list(rows.values()))
    flags = {r["day"]: r["in_sample"] for r in tables[0]["table"]}
    assert flags == {str(seen): True, str(unseen): False}
    engine.dispose()


def test_trained_days_are_the_deployed_models() -> None:
    """The refit's days; the evaluated model's seen days when it is deployed; the window's
    days for a manifest from before refits."""
    days = ["2026-10-01", "2026-10-02", "2026-10-03"]
    seen = {"split": "days", "days": days[:2], "holdout_fraction": None}
    refit = {"refit": {"rows": 9, "num_boost_round": 3, "days": days}, "evaluated": {"seen": seen}}
    assert model.trained_days(refit) == {date(2026, 10, d) for d in (1, 2, 3)}
    assert model.trained_days({"refit": None, "evaluated": {"seen": seen}}) == {
        date(2026, 10, 1),
        date(2026, 10, 2),
    }
    legacy = {"created_from": {"days": days, "missing_days": []}}
    assert model.trained_days(legacy) == {date(2026, 10, d) for d in (1, 2, 3)}


def test_a_new_unlabelled_or_invalid_day_leaves_the_window_manifest_as_it_was(
    churn: Settings, engine: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """window.json (what DVC retrains on) names only what training reads: a new day without
    labels, or invalid and without labels, after the window changes none of its bytes, so
    the night does not retrain; passed_over.json beside it names that day and why."""
    monkeypatch.setenv(config.DATABASE_URL_ENV, f"sqlite:///{tmp_path}/p.db")
    settings = fast(churn)
    build_lake(settings, engine, days=7)
    out = tmp_path / "train" / "window.json"
    window.write_window(settings, out)
    before = out.read_bytes()
    assert window.passed_over(out.parent) == []
    build_lake(settings, engine, days=9, failed=(8,), unlabelled=(7, 8))
    window.write_window(settings, out)
    assert out.read_bytes() == before
    assert window.passed_over(out.parent) == [
        {"day": (START + timedelta(days=7)).isoformat(), "reason": "no labels yet"},
        {"day": (START + timedelta(days=8)).isoformat(), "reason": "validation failed"},
    ]
    build_lake(settings, engine, days=9, failed=(8,), unlabelled=(8,))  # day 7's labels came
    window.write_window(settings, out)
    assert (
        json.loads(out.read_bytes())["days"][-1]["day"] == (START + timedelta(days=7)).isoformat()
    )
