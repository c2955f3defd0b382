"""Outcomes with meaning: the one-line reasons of a run that had nothing to score or whose
training failed, and a 0-row partition refused by the scoring stream."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from batchpred import outcomes, storage
from batchpred.config import Settings
from batchpred.registry import LoadedModel
from batchpred.scoring import PartitionRejected
from tests.unit.test_scoring import (
    assert_nothing_written,
    loaded,
    make_lake,
    score,
    settings_for,
    validated_at_ingest,
)

D = date.fromisoformat
ROOT = "data/raw/churn"


@pytest.mark.parametrize(
    ("start", "end", "line"),
    [
        ("2027-01-01", "2027-01-01", "no partition for 2027-01-01 under data/raw/churn"),
        (
            "2027-01-01",
            "2027-01-31",
            "no partition in 2027-01-01..2027-01-31 under data/raw/churn (31 days)",
        ),
        ("2027-01-05", "2027-01-01", "empty range 2027-01-05..2027-01-01 (start is after end)"),
        ("2027-01-01", None, "no partition from 2027-01-01 on under data/raw/churn"),
        (None, "2027-01-01", "no partition up to 2027-01-01 under data/raw/churn"),
        (None, None, "no partition under data/raw/churn"),
    ],
)
def test_nothing_to_score_is_one_line_naming_the_days(
    start: str | None, end: str | None, line: str
) -> None:
    error = outcomes.nothing_to_score(ROOT, start and D(start), end and D(end))
    assert isinstance(error, outcomes.NothingToScore)
    assert str(error) == f"nothing to score: {line}"
    assert outcomes.one_line(error) == str(error)


def test_missing_days_are_named_as_runs() -> None:
    have = [D("2026-10-01"), D("2026-10-02"), D("2026-10-04"), D("2026-10-08")]
    missing = outcomes.missing_days(have, D("2026-10-01"), D("2026-10-09"))
    assert outcomes.days_text(missing) == "2026-10-03, 2026-10-05..2026-10-07, 2026-10-09"
    assert outcomes.missing_days(have, D("2026-10-02"), D("2026-10-01")) == []


def test_one_line_keeps_the_cause_of_a_tool_error() -> None:
    dvc = RuntimeError(
        "dvc repro evaluate@churn failed (1):\n"
        "Running stage 'train@churn':\n"
        "> batchpred train ...\n"
        "ERROR: failed to reproduce 'train@churn': exited with 1\n"
    )
    assert outcomes.one_line(dvc) == (
        "RuntimeError: dvc repro evaluate@churn failed (1): "
        "ERROR: failed to reproduce 'train@churn': exited with 1"
    )
    assert outcomes.one_line(ValueError("bad\nvalue")) == "ValueError: bad"
    assert outcomes.one_line(KeyError()) == "KeyError"
    assert outcomes.one_line("plain reason") == "plain reason"


def test_training_failed_says_why_and_what_became_of_the_day() -> None:
    error = ValueError("training needs at least 3 valid, labelled partitions")
    scored = outcomes.training_failed(error, D("2026-10-09"), "abc123", 400, None)
    assert str(scored).splitlines()[0] == (
        "training failed: ValueError: training needs at least 3 valid, labelled partitions; "
        "2026-10-09 was scored with the current champion abc123 (400 rows)"
    )
    unscored = outcomes.training_failed(
        error, D("2026-10-09"), None, 0, LookupError("dataset 'churn' has no 'champion' model")
    )
    assert "2026-10-09 was not scored either: LookupError: dataset 'churn' has no" in str(unscored)
    assert outcomes.one_line(unscored) == str(unscored).splitlines()[0]


@pytest.fixture(scope="module")
def churn_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, LoadedModel]:
    tmp = tmp_path_factory.mktemp("churn_model")
    settings = settings_for("churn", tmp)
    return settings, loaded(settings, tmp)


def test_a_partition_of_zero_rows_is_refused_by_the_stream(
    engine: sa.Engine, churn_model: tuple[Settings, LoadedModel], tmp_path: Path
) -> None:
    """Validation fails it first (validation.min_rows); were it marked valid anyway, the
    stream still refuses it instead of reporting "scored, 0 rows"."""
    settings, model = churn_model
    root = str(tmp_path / "lake")
    (day,) = make_lake(settings, root, days=1)
    path = storage.partition_files(root, day)[0]
    pq.write_table(pq.read_table(path).slice(0, 0), path)
    validated_at_ingest(engine, settings, root, day)
    with pytest.raises(PartitionRejected, match=rf"dt={day} .*0 rows in .*{Path(path).name}"):
        score(engine, settings, model, root, day)
    assert_nothing_written(engine, day, model.version)
