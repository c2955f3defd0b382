"""Outcomes with meaning, under Prefect: a drifted day ends Drifted (exit 4) with one WARNING,
a marked drift artifact and no automatic promotion; a clean day stays green; a missing day
or an empty range fails with one line naming the days (exit 3); failed training does not
stop the day being scored; the webhook is told of failed and drifted nights. What operators
read: artifacts and runs named by dataset, progress per partition, rounded metrics, the gate's
reason in words, a validation page per partition, one line (no traceback) per known failure."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prefect.artifacts import Artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.settings import PREFECT_UI_URL, temporary_settings

from batchpred import config, demo, monitoring, outcomes, storage
from flows import nightly as nightly_flow
from flows import score as score_flow
from flows.nightly import nightly
from flows.score import PartitionsFailed, score
from tests.unit.test_notifications import ENV, webhook_receiver

pytestmark = pytest.mark.slow


def _one(sql: str, **params: object) -> object:
    engine = sa.create_engine(config.database_url())
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def _source(files: list[str]) -> config.Settings:
    settings = config.load_settings(files)
    demo.write_demo_source(settings.dataset, settings.demo, settings.source.url)
    return settings


def _args(files: list[str]) -> list[str]:
    return [a for f in files for a in ("--config", f)]


def _data(key: str) -> Any:
    artifact = Artifact.get(key)
    assert artifact is not None, key
    return json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data


def _decimals(value: object) -> int:
    text = repr(value)
    return len(text.split(".")[1]) if isinstance(value, float) and "." in text else 0


def _check_operator_view(settings: config.Settings, day: date, champion: str) -> None:
    """After a first nightly: every artifact keyed by the dataset, metrics rounded under
    readable names, the gate's reason in words, progress at 100%, a page per validated
    partition linked from the summary, and runs named and tagged with the dataset."""
    comparison = _data("model-comparison-churn")
    metrics = {r["metric"]: r for r in comparison if not r["metric"].startswith("training: ")}
    assert {"AUC", "log loss", "accuracy"} <= set(metrics)
    assert not any("primary" in name or "_" in name for name in metrics)
    assert all(_decimals(r["challenger"]) <= 4 for r in metrics.values())
    described = Artifact.get("model-comparison-churn").description
    assert described.startswith(f"churn: model {champion} promoted: AUC 0.")
    assert "no champion yet to compare with" in described and "0.000000" not in described
    for key in ("ingest-progress-churn", "train-progress-churn", "score-progress-churn"):
        assert float(_data(key)) == 100.0, key
    assert _data("scoring-partitions-churn")[0]["partition"] == str(day)
    assert Artifact.get("drift-churn") is not None
    for shared in ("scoring-partitions", "validation-summary", "model-comparison", "drift"):
        assert Artifact.get(shared) is None  # every dataset has its own

    summary = Artifact.get("validation-summary-churn").data
    pages = re.findall(r"\[rules and results\]\(file://([^)]+)\)", summary)
    assert len(pages) == settings.demo.days
    page = Path(pages[-1]).read_text()
    assert f"churn: validation of dt={day}" in page and "expect_column_values_to_be_between" in page
    assert ">pass<" in page and "http" not in page

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["dataset:churn"]))
        )
    names = {r.name for r in runs}
    assert f"score-churn-{day}" in names and "train-churn" in names
    assert any(n.startswith("ingest-churn-") for n in names)
    assert any(n.startswith("nightly-") for n in names)


def _module(module: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    """`python -m module args` in its own process against the tests' Prefect server, as an
    operator runs it: its real stderr, Prefect's console log included."""
    from prefect.settings import PREFECT_API_URL

    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop(outcomes.DEBUG_ENV, None)
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_drifted_day_ends_drifted_warns_once_and_is_not_promoted(
    workspace, caplog, capsys, monkeypatch
):
    files = workspace("churn")
    settings = _source(files)
    with webhook_receiver() as hook:
        monkeypatch.setenv(ENV, hook.url)
        clean = nightly(config_files=files, return_state=True)
        # A clean day stays green and notifies nobody.
        assert clean.name == "Completed" and clean.is_completed()
        first = clean.result()
        assert first["model"]["decision"] == "promoted" and first["drifted"] == []
        assert {m["feature"] for m in first["drift"]} == {
            *settings.dataset.feature_names,
            monitoring.SCORE,
        }
        assert all(m["level"] != "major" for m in first["drift"])
        assert hook.bodies == []
        champion = first["model"]["version"]
        _check_operator_view(settings, first["day"], champion)

        # Two more days arrive, their first two numeric features shifted by 2 std.
        drift_start = settings.demo.start_date + timedelta(days=settings.demo.days)
        # The metric gate lets anything pass: only the drift block can hold the challenger.
        files = workspace(
            "churn",
            demo={"days": 10, "drift_start": drift_start.isoformat(), "drift_strength": 2.0},
            training={"gate": {"max_regression": 1.0}},
        )
        _source(files)
        caplog.clear()
        with caplog.at_level(logging.WARNING), pytest.raises(SystemExit) as ended:
            nightly_flow.main(_args(files))
    assert ended.value.code == outcomes.EXIT_DRIFTED == 4
    day = drift_start + timedelta(days=1)
    shifted = [f.name for f in settings.dataset.features if f.dtype in ("float", "int")][:2]

    # One WARNING line naming the drifted features and their PSI.
    warnings = [r.getMessage() for r in caplog.records if "drifted against" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert str(day) in warnings[0] and all(f"{f} PSI " in warnings[0] for f in shifted)
    err = capsys.readouterr().err
    assert "DRIFTED:" in err
    # Progress: one line per phase on the entry point's stderr (not a terminal: no bar).
    phases = [line.split(":")[0] for line in err.splitlines() if " churn: " in line]
    assert phases == ["ingest churn", "train churn", "score churn"], err
    assert "\x1b[K" not in err

    # The challenger trained on the drifted days was held back; the champion scored the day.
    aliases = dict(
        sa.create_engine(config.database_url())
        .connect()
        .execute(sa.text("select alias, version from model_aliases"))
        .all()
    )
    assert aliases["champion"] == champion and aliases["challenger"] != champion
    reason = _one(
        "select reason from model_alias_history where alias = 'challenger' order by id desc"
    )
    assert f"holdout drifted against champion {champion}" in str(reason)
    assert (
        _one(
            "select count(*) from predictions where partition_date = :d and model_version = :v",
            d=day,
            v=champion,
        )
        == settings.demo.rows_per_day
    )
    # drift_metrics has the score distribution's row too; the artifact is marked.
    assert _one("select count(*) from drift_metrics where feature = :f", f=monitoring.SCORE) == 2
    artifact = Artifact.get("drift-churn")
    assert artifact is not None and artifact.description.startswith("DRIFT: ")
    assert all(f in artifact.description for f in shifted)
    table = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    assert {r["feature"] for r in table if r["level"] == "major"} >= set(shifted)

    # The webhook heard of the drifted night, and only of it.
    (body,) = hook.bodies
    assert body["flow"] == "nightly" and body["state"] == "Drifted"
    assert body["dataset"] == "churn" and body["day"] == str(day)
    # the run's name as the UI shows it once the day is known (not "nightly-churn-latest")
    assert body["run"] == f"nightly-churn-{day}" and body["reason"].startswith(f"{day} drifted: ")
    drifted = {d["feature"]: d for d in body["drifted"]}
    assert set(shifted) <= set(drifted) and all(drifted[f]["psi"] > 0.25 for f in shifted)
    assert all(d["threshold"] == 0.25 for d in body["drifted"])

    # Calling the flow directly still returns its result; the state carries the name.
    again = nightly(config_files=files, return_state=True)
    assert again.name == outcomes.DRIFTED and again.is_completed()
    # green like Completed in the UI, but with a chip of its own on its row (and a filter)
    with get_client(sync_client=True) as client:
        assert "drifted" in client.read_flow_run(again.state_details.flow_run_id).tags
    assert again.result()["model"]["decision"] == "rejected"


def test_a_gate_blocked_by_drift_night_after_night_ends_blocked_and_says_so(
    workspace, capsys, monkeypatch
):
    """monitoring.drift_block_nights 1: the first night the drift block holds the gate, the
    nightly still scores the day with the champion, then ends Blocked (exit 5) and notifies."""
    files = workspace("churn")
    settings = _source(files)
    champion = nightly(config_files=files)["model"]["version"]
    drift_start = settings.demo.start_date + timedelta(days=settings.demo.days)
    files = workspace(
        "churn",
        demo={"days": 10, "drift_start": drift_start.isoformat(), "drift_strength": 2.0},
        training={"gate": {"max_regression": 1.0}},
        monitoring={"drift_block_nights": 1},
    )
    _source(files)
    with webhook_receiver() as hook:
        monkeypatch.setenv(ENV, hook.url)
        with pytest.raises(SystemExit) as ended:
            nightly_flow.main(_args(files))
    assert ended.value.code == outcomes.EXIT_BLOCKED == 5
    err = capsys.readouterr().err
    line = f"nightly: error: gate blocked by drift 1 night running; the champion {champion} is"
    assert line in err and "frozen" in err
    day = drift_start + timedelta(days=1)
    (body,) = hook.bodies
    assert body["state"] == "Blocked" and body["day"] == str(day)
    assert body["reason"].startswith("gate blocked by drift 1 night running")
    assert _one("select version from model_aliases where alias = 'champion'") == champion
    assert _one("select action from model_alias_history order by id desc") == "drift-block"
    # the day was scored all the same, by the champion
    assert _one(
        "select count(*) from predictions where partition_date = :d and model_version = :v",
        d=day,
        v=champion,
    )
    # called directly, the flow raises the known error; its state is named Blocked
    state = nightly(config_files=files, return_state=True)
    assert state.name == outcomes.BLOCKED and state.is_failed()
    assert isinstance(state.result(raise_on_failure=False), outcomes.GateBlocked)
    with get_client(sync_client=True) as client:
        assert "blocked" in client.read_flow_run(state.state_details.flow_run_id).tags


def test_missing_day_and_empty_range_fail_with_one_line(workspace, capsys, caplog):
    files = workspace("churn")
    settings = config.load_settings(files)
    cfg = settings.demo.model_copy(update={"days": 3})
    days = demo.write_demo_source(settings.dataset, cfg, settings.scoring_input)
    root = settings.scoring_input
    cases = [
        (["--day", "2027-01-01"], f"no partition for 2027-01-01 under {root}"),
        (
            ["--start", "2027-01-01", "--end", "2027-01-31", "--model", "0123456789abcdef"],
            f"no partition in 2027-01-01..2027-01-31 under {root} (31 days)",
        ),
        (
            ["--start", str(days[-1] + timedelta(days=1))],
            f"no partition from {days[-1] + timedelta(days=1)} on under {root}",
        ),
    ]
    for args, line in cases:
        with pytest.raises(SystemExit) as ended:
            score_flow.main([*args, *_args(files)])
        assert ended.value.code == outcomes.EXIT_NOTHING_TO_SCORE == 3
        err = capsys.readouterr().err
        assert f"nothing to score: {line}\n" in err
        assert "Traceback" not in err
    # start after end: refused before any flow run is created (usage, exit 2)
    with pytest.raises(SystemExit) as ended:
        score_flow.main(["--start", str(days[-1]), "--end", str(days[0]), *_args(files)])
    assert ended.value.code == 2
    assert f"--end {days[0]} is before --start {days[-1]}" in capsys.readouterr().err
    state = score(day=date(2027, 1, 1), config_files=files, return_state=True)
    assert state.is_failed() and state.message == f"nothing to score: {cases[0][1]}"
    with pytest.raises(outcomes.NothingToScore, match="2027-01-01"):
        score(day=date(2027, 1, 1), config_files=files)
    # Some days of a range missing: a WARNING names them, the others are planned.
    caplog.clear()
    gap = [days[-1] + timedelta(days=1), days[-1] + timedelta(days=2)]
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(
            outcomes.SetupError, match="unknown model '0123456789abcdef' for dataset 'churn'"
        ),
    ):
        score(start=days[0], end=gap[-1], model="0123456789abcdef", config_files=files)
    assert f"no partition for 2 day(s) in {days[0]}..{gap[-1]}, not scored: {gap[0]}..{gap[1]}" in (
        caplog.text
    )


def test_failed_training_still_scores_the_day_and_fails_saying_why(workspace, capsys, monkeypatch):
    files = workspace("churn")
    settings = _source(files)
    champion = nightly(config_files=files)["model"]["version"]

    # A new day arrives; training breaks on a parameter xgboost refuses.
    files = workspace("churn", demo={"days": 9}, training={"params": {"max_depth": -1}})
    _source(files)
    day = settings.demo.start_date + timedelta(days=8)
    with webhook_receiver() as hook:
        monkeypatch.setenv(ENV, hook.url)
        with pytest.raises(SystemExit) as ended:
            nightly_flow.main(["--day", str(day), *_args(files)])
    assert ended.value.code == outcomes.EXIT_FAILED == 1
    err = capsys.readouterr().err
    assert "training failed: RuntimeError: dvc repro evaluate@churn failed" in err
    assert f"{day} was scored with the current champion {champion} (400 rows)" in err
    assert (
        _one(
            "select count(*) from predictions where partition_date = :d and model_version = :v",
            d=day,
            v=champion,
        )
        == settings.demo.rows_per_day
    )
    assert _one("select version from model_aliases where alias = 'champion'") == champion
    (body,) = hook.bodies
    assert body["state"] == "Failed" and body["day"] == str(day) and body["drifted"] == []
    assert body["reason"].startswith("training failed: RuntimeError: dvc repro")
    assert "\n" not in body["reason"]

    # A 0-row partition fails validation (validation.min_rows), named, never "scored, 0 rows".
    empty_day = day + timedelta(days=1)
    table = storage.read_partition(settings.scoring_input, day).slice(0, 0)
    storage.write_partition(settings.scoring_input, empty_day, table)
    ui = {PREFECT_UI_URL: "https://prefect.example"}
    with webhook_receiver() as hook, temporary_settings(ui):
        monkeypatch.setenv(ENV, hook.url)
        with pytest.raises(PartitionsFailed, match=rf"(?s){empty_day}.*row_count"):
            score(day=empty_day, config_files=files)
    # A score (or backfill) run notifies too: its name and page, the rule in one line.
    (body,) = hook.bodies
    assert body["flow"] == "score" and body["state"] == "Failed"
    assert body["run"] == f"score-churn-{empty_day}" and body["day"] == str(empty_day)
    assert body["url"].startswith("https://prefect.example/flow-runs/flow-run/")
    assert "row_count" in body["reason"] and "\n" not in body["reason"]
    assert str(Path.cwd()) not in body["reason"]
    assert _one("select count(*) from scoring_ledger where partition_date = :d", d=empty_day) == 0

    # An unknown model: one line listing the dataset's versions (the champion among them).
    with pytest.raises(SystemExit) as ended:
        score_flow.main(["--day", str(day), "--model", "ffffffffffffffff", *_args(files)])
    assert ended.value.code == outcomes.EXIT_FAILED
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith(
        "score: error: unknown model 'ffffffffffffffff' for dataset 'churn'; known (newest first): "
    )
    assert champion in line

    # In its own process, a known failure raised inside the flow (the 0-row partition) is
    # one line on stderr, Prefect's log lines included: no traceback unless --debug.
    quiet = _module("flows.score", ["--day", str(empty_day), *_args(files)])
    assert quiet.returncode == outcomes.EXIT_FAILED, quiet.stderr
    assert "Traceback" not in quiet.stderr, quiet.stderr
    assert f"score: error: {empty_day}: " in quiet.stderr
    # the run ends Failed with its lines: Prefect has no exception to log a traceback of
    assert "Encountered exception during execution" not in quiet.stderr
    assert "Finished in state Failed(" in quiet.stderr
    loud = _module("flows.score", ["--day", str(empty_day), "--debug", *_args(files)])
    assert loud.returncode == outcomes.EXIT_FAILED and "Traceback" in loud.stderr
