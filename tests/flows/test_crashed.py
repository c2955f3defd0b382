"""Runs left Running by a killed process are marked Crashed by the next run of the same flow,
and only those: the criterion is the process recorded on the run (host with its PID
namespace, PID, start time, boot), never the age of the run."""

from __future__ import annotations

import subprocess
import sys
from datetime import date

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.states import Pending, Running

from batchpred import config, outcomes
from flows.ingest import ingest
from flows.score import score
from tasks import reporting

pytestmark = pytest.mark.slow


def _gone_process_tag() -> str:
    """The tag of a process that ran and was killed (as a run's process would be)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    tag = outcomes.process_tag(child.pid)
    child.kill()
    child.wait()
    return tag


def test_the_next_run_crashes_the_runs_whose_process_is_gone(workspace) -> None:
    files = workspace("churn")
    config.load_settings(files)
    host, gone = outcomes.host_tag(), _gone_process_tag()
    other_host = "host:elsewhere.example/4026531836"
    cases = {  # name: (flow, tags, crashed by the next score run?)
        "killed": (score, [host, gone], True),
        "never-started": (score, [host, gone], True),  # Pending: killed before its flow began
        "alive": (score, [host, outcomes.process_tag()], False),
        "other-host": (score, [other_host, gone], False),
        "untagged": (score, [], False),
        "other-flow": (ingest, [host, gone], False),
    }
    with get_client(sync_client=True) as client:
        runs = {
            name: client.create_flow_run(
                flow,
                name=f"left-{name}",
                tags=tags,
                state=Pending() if name == "never-started" else Running(),
                parameters={},
            )
            for name, (flow, tags, _) in cases.items()
        }
        task_run = client.create_task_run(
            task=_a_task(),
            flow_run_id=runs["killed"].id,
            dynamic_key="0",
            state=Running(),
        )

    state = score(day=date(2031, 1, 1), config_files=files, return_state=True)  # nothing to score
    assert state.is_failed()

    with get_client(sync_client=True) as client:
        after = {name: client.read_flow_run(run.id) for name, run in runs.items()}
        task_after = client.read_task_run(task_run.id)
        this = client.read_flow_run(state.state_details.flow_run_id)
    for name, (_, _, crashed) in cases.items():
        expected = StateType.CRASHED if crashed else StateType.RUNNING
        assert after[name].state_type == expected, name
    assert "is gone" in after["never-started"].state.message
    pid = gone.removeprefix("process:").split("@")[0]
    message = after["killed"].state.message
    assert f"process {pid} on " in message and "is gone" in message and "next score run" in message
    assert task_after.state_type == StateType.CRASHED
    # The run itself carries what the next one needs to judge it, and its dataset.
    assert {"dataset:churn", host, outcomes.process_tag()} <= set(this.tags)
    assert this.name == "score-churn-2031-01-01"

    # Idempotent: a second run finds nothing more to crash.
    score(day=date(2031, 1, 1), config_files=files, return_state=True)
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(runs["alive"].id).state_type == StateType.RUNNING
        assert client.read_flow_run(runs["killed"].id).state_type == StateType.CRASHED


def _a_task():  # type: ignore[no-untyped-def]
    from prefect import task

    @task(name="left-running")
    def left_running() -> None:
        return None

    return left_running


def test_a_run_carries_its_process_from_its_creation() -> None:
    """A process killed after creating its run and before the flow's first line still leaves
    a run naming it (so the sweep above can judge it): the entry point tags at creation."""
    from prefect import flow
    from prefect.runtime import flow_run

    @flow(name="tagged-at-creation")
    def first_line() -> list[str]:
        return list(flow_run.tags)

    with outcomes.entry_point("test"), reporting.flow_entry():  # as each flow's main
        seen = first_line()
    assert outcomes.host_tag() in seen
    assert outcomes.process_tag() in seen


def test_task_runs_do_not_carry_the_process_tags() -> None:
    """The host and process tags mark flow runs, subflows included (the sweep judges them),
    not the task runs the flows make: Prefect takes a concurrency slot, a round trip to the
    server, for each tag of each task run. A flow's body runs untagged; a subflow called in
    run_tags is created with the tags. Tags the user gave reach both."""
    from prefect import flow, tags, task
    from prefect.runtime import flow_run, task_run

    @task(name="what-tags")
    def what_tags() -> list[str]:
        return sorted(task_run.tags)

    @flow(name="tagged-subflow")
    def subflow() -> list[str]:
        return list(flow_run.tags)

    @flow(name="untagged-tasks")
    def body() -> tuple[list[str], list[str], list[str]]:
        with reporting.flow_body("churn"):
            task_tags = what_tags.submit().result()
            called = what_tags()
            with reporting.run_tags():
                sub = subflow()
        assert called == task_tags
        return list(flow_run.tags), sub, task_tags

    with tags("team-a"), outcomes.entry_point("test"), reporting.flow_entry():
        flow_tags, subflow_tags, task_tags = body()
    ours = {outcomes.host_tag(), outcomes.process_tag(), "team-a"}
    assert ours <= set(flow_tags) and ours <= set(subflow_tags)
    assert task_tags == ["team-a"]
