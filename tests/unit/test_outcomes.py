"""Outcomes with meaning: the one-line reasons of a run that had nothing to score or whose
training failed, and a 0-row partition refused by the scoring stream; telling a process that
left its run Running is gone; what operators read (the gate's reason in words, a validation
result as a page readable offline, progress lines)."""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from batchpred import outcomes, reports, storage
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


def test_one_line_of_a_validation_failure_names_the_column_and_rule() -> None:
    """Not the report's path (the last line): the first rule broken."""
    failed = (
        "partition dt=2026-11-05 under data/lake/raw/churn: validation failed, 2 of 20 "
        "expectations on 400 rows:\n"
        "  - column 'tenure_months' failed expect_column_values_to_be_between(max_value=120): "
        "36 of 400 rows, e.g. [999]\n"
        "  - column 'contract' failed expect_column_values_to_be_in_set: 2 of 400 rows\n"
        "  report: /srv/batchpred/data/reports/churn/validation/2026-11-05.json\n"
    )
    assert outcomes.one_line(failed) == (
        "partition dt=2026-11-05 under data/lake/raw/churn: validation failed, 2 of 20 "
        "expectations on 400 rows: column 'tenure_months' failed "
        "expect_column_values_to_be_between(max_value=120): 36 of 400 rows, e.g. [999]"
    )


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


# --- processes that left runs Running ----------------------------------------------------------


def test_a_process_tag_tells_a_gone_process_from_a_live_one() -> None:
    import subprocess
    import sys

    mine = outcomes.process_tag()
    assert mine.startswith(f"process:{os.getpid()}@") and not outcomes.process_gone(mine)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    tag = outcomes.process_tag(child.pid)
    assert not outcomes.process_gone(tag)  # alive
    child.kill()
    child.wait()
    assert outcomes.process_gone(tag)  # killed
    pid, started, boot = mine.removeprefix("process:").split("@")
    if started != "-":  # Linux: the same PID started at another time is another process
        assert outcomes.process_gone(f"process:{pid}@{int(started) + 1}@{boot}")
    if boot != "-":  # and a reboot since ended every process of the old boot
        assert outcomes.process_gone(f"process:{pid}@{started}@{'0' * 8}")
    for unsure in ("process:abc", "process:12", "something else"):
        assert not outcomes.process_gone(unsure)
    assert outcomes.host_tag().startswith("host:")


# --- what operators read -----------------------------------------------------------------------


def test_a_validation_page_lists_every_rule_and_reads_offline(tmp_path: Path) -> None:
    summary = {
        "subject": "partition dt=2026-10-03 (data/raw/churn/dt=2026-10-03/part-0.parquet)",
        "success": False,
        "rows": 400,
        "gx": {
            "results": [
                {
                    "success": True,
                    "expectation_config": {
                        "type": "expect_column_values_to_not_be_null",
                        "kwargs": {"column": "customer_id", "batch_id": "x"},
                    },
                    "result": {
                        "element_count": 400,
                        "unexpected_count": 0,
                        "unexpected_percent": 0.0,
                    },
                },
                {
                    "success": False,
                    "expectation_config": {
                        "type": "expect_column_values_to_be_between",
                        "kwargs": {"column": "tenure_months", "min_value": 0, "max_value": 120},
                    },
                    "result": {
                        "element_count": 400,
                        "unexpected_count": 36,
                        "unexpected_percent": 9.0,
                        "partial_unexpected_list": [999, 999],
                    },
                },
                {
                    "success": False,
                    "expectation_config": {
                        "type": "expect_column_to_exist",
                        "kwargs": {"column": "<script>alert(1)</script>"},
                    },
                    "result": {},
                },
            ]
        },
    }
    json_url = tmp_path / "validation" / "partition_dt=2026-10-03.json"
    json_url.parent.mkdir()
    json_url.write_text(json.dumps(summary))
    url = reports.write_validation_page(str(json_url), "churn")
    assert url == str(json_url.with_suffix(".html"))
    page = Path(url).read_text()
    assert "churn: validation of dt=2026-10-03" in page and "invalid: 2 of 3 rules failed" in page
    rows = page.split("<tr")[2:]  # failures first, then the rule that passed
    assert "tenure_months" in rows[1] and "max_value=120" in rows[1] and ">36<" in rows[1]
    assert "9.00%" in rows[1] and "FAIL" in rows[1] and "e.g. [999, 999]" in rows[1]
    assert "customer_id" in rows[2] and ">pass<" in rows[2] and "batch_id" not in rows[2]
    assert "<script>" not in page and "&lt;script&gt;" in page  # escaped
    assert "http" not in page and "<script" not in page and "<link" not in page  # no CDN
    assert 'href="partition_dt=2026-10-03.json"' in page
    assert reports.existing_page(str(json_url)) == url
    assert reports.existing_page(str(tmp_path / "old.json")) is None


def test_progress_lines_are_for_entry_points_and_bars_for_quiet_terminals(monkeypatch) -> None:
    import io
    import logging

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert reports.progress_stream(None) is None  # tests and served runs: nothing
    silent = reports.TerminalProgress("score churn")
    silent.show(1, 2)
    silent.finish("done")  # nowhere to go: no error

    log = io.StringIO()
    plain = reports.TerminalProgress("score churn", stream=log)
    plain.show(1, 2, "1 scored")
    plain.finish("2 scored")
    assert log.getvalue().startswith("score churn: 2 scored (") and log.getvalue().count("\n") == 1

    monkeypatch.setattr(logging.getLogger("prefect"), "level", logging.WARNING)
    tty = Tty()
    bar = reports.TerminalProgress("ingest churn", stream=tty)
    bar.show(3, 4, "3 new")
    assert "ingest churn [###############.....] 3/4 3 new" in tty.getvalue()
    bar.finish("4 new")
    assert tty.getvalue().endswith("\x1b[Kingest churn: 4 new (0.0 s)\n")
