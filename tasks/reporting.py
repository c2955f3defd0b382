"""Tasks that publish run reports: artifacts in the Prefect UI (keyed by dataset), progress
per finished partition, the webhook notification; and what every flow does first: tag its run
(dataset, host, process) and mark Crashed the runs of the same flow that a killed process left
Running."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any
from uuid import UUID

import httpx
from prefect import get_client, get_run_logger, tags, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NONE
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
    TaskRunFilter,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.context import TagsContext
from prefect.runtime import flow_run
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL
from prefect.states import Crashed

from batchpred import config, evaluation, monitoring, notifications, outcomes, reports
from batchpred.config import NotificationsConfig, Settings
from batchpred.scoring import PartitionResult

DATASET_TAG = "dataset:"


def artifact_key(*parts: str) -> str:
    """An artifact key from its parts: lowercase letters, digits and dashes only (Prefect's
    rule), e.g. artifact_key("drift", "NYC_flights13") == "drift-nyc-flights13"."""
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")


def dataset_of(config_files: list[str] | None) -> str:
    """The dataset a run's config is for, for the run's name ("unknown" if the config is
    broken: the run itself then fails saying why)."""
    try:
        return config.load_settings(config_files).dataset.name
    except Exception:  # noqa: BLE001
        return "unknown"


# --- the start of every run --------------------------------------------------------------------


def start_run(dataset: str) -> None:
    """Tag the current flow run with its dataset, host and process, then mark Crashed the runs
    of the same flow on this host that are still Running although their process is gone
    (outcomes.process_gone: no such PID, a PID reused by a later process, or a reboot since).
    A run whose process is alive, or on another host, or without the tags, is never touched.
    Problems talking to the API are a WARNING: they never fail the run."""
    logger = get_run_logger()
    run_id, name = flow_run.id, flow_run.flow_name
    if run_id is None or name is None:
        return
    try:
        host = outcomes.host_tag()
        mine = [DATASET_TAG + dataset, host, outcomes.process_tag()]
        with get_client(sync_client=True) as client:
            tags = [t for t in flow_run.tags if not t.startswith(outcomes.PROCESS_TAG)]
            client.update_flow_run(UUID(str(run_id)), tags=sorted({*tags, *mine}))
            for crashed in sweep_crashed_runs(client, name, host, exclude=UUID(str(run_id))):
                logger.warning("%s", crashed)
    except Exception as exc:  # noqa: BLE001 - bookkeeping must never fail the run
        logger.warning(
            "could not tag this run or look for crashed runs: %s", outcomes.one_line(exc)
        )


@contextmanager
def flow_body(dataset: str) -> Iterator[None]:
    """A flow's body: the run tagged and its crashed predecessors swept (start_run), then
    every task run created inside without the host and process tags (untagged_task_runs).
    Each flow runs its whole body in it."""
    start_run(dataset)
    with untagged_task_runs():
        yield


@contextmanager
def untagged_task_runs() -> Iterator[None]:
    """Task runs created inside do not inherit the host and process tags (flow_entry's,
    which mark flow runs for the sweep): Prefect takes a concurrency slot with a lease, a
    round trip to the server, for each tag of each task run (61 small days ingested: the flow
    25.4-28.2 s with them, 16.1-18.1 s without; one report task after scoring waited 2.1 s
    for it). Other tags stay."""
    current = TagsContext.get().current_tags
    kept = {t for t in current if not t.startswith((outcomes.HOST_TAG, outcomes.PROCESS_TAG))}
    with TagsContext(current_tags=kept):
        yield


@contextmanager
def run_tags() -> Iterator[None]:
    """Flow runs created inside carry this host's and process's tags from their creation, so
    a process killed before a run's first line leaves a run the sweep can judge: the
    top-level run (flow_entry) and the nightly's subflows (ingest, train, score), called here
    from a body that runs in untagged_task_runs."""
    with tags(outcomes.host_tag(), outcomes.process_tag()):
        yield


def tag_run(tag: str) -> None:
    """Add `tag` to the current flow run: a chip on its row in the UI's runs list, and a
    filter there (`drifted`, `blocked`: an end that Prefect colours like its type, COMPLETED
    or FAILED, is told apart at a glance). A problem with the API is a WARNING."""
    if flow_run.id is None:
        return
    try:
        with get_client(sync_client=True) as client:
            run_id = UUID(str(flow_run.id))
            current = client.read_flow_run(run_id).tags
            client.update_flow_run(run_id, tags=sorted({*current, tag}))
    except Exception as exc:  # noqa: BLE001 - bookkeeping must never fail the run
        get_run_logger().warning("could not tag this run %r: %s", tag, outcomes.one_line(exc))


@contextmanager
def flow_entry() -> Iterator[None]:
    """What each flow's entry point runs its flow in. The flow run carries this host's and
    process's tags from its creation, not only from start_run, so a process killed before
    its flow's first line leaves a run the next one can judge and sweep (sweep_crashed_runs).
    A configured Prefect server that does not answer is one line and exit 1, not a traceback
    from deep inside the client (judged from the error: no round trip when it answers)."""
    try:
        with run_tags():
            yield
    except Exception as exc:
        api = PREFECT_API_URL.value()
        if not api or not _unreachable(exc):
            raise
        raise outcomes.SetupError(
            f"cannot reach the Prefect server at {api} (PREFECT_API_URL): "
            f"{outcomes.one_line(exc.__cause__ or exc)}; start it (make server) or unset "
            "PREFECT_API_URL to run on a temporary local server"
        ) from exc


def _unreachable(exc: BaseException) -> bool:
    """Whether `exc` is Prefect's client failing to reach its API."""
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, RuntimeError) and str(exc).startswith("Failed to reach API at")


def sweep_crashed_runs(client: Any, flow_name: str, host: str, exclude: UUID | None) -> list[str]:
    """Set Crashed every flow run of `flow_name` that is Running, or Pending (it never
    started: the entry point tags a run when it creates it), was tagged on `host` and whose
    process is gone, with its Running task runs; one line per run crashed."""
    running = FlowRunFilterState(
        type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])
    )
    runs = client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
        flow_run_filter=FlowRunFilter(
            state=running,
            tags=FlowRunFilterTags(all_=[host]),
            id=FlowRunFilterId(not_any_=[exclude] if exclude else None),
        ),
        limit=200,
    )
    lines = []
    for run in runs:
        process = next((t for t in run.tags if t.startswith(outcomes.PROCESS_TAG)), None)
        if process is None or not outcomes.process_gone(process):
            continue
        pid = process.removeprefix(outcomes.PROCESS_TAG).split("@")[0]
        message = (
            f"process {pid} on {host.removeprefix(outcomes.HOST_TAG)} that ran it is gone "
            f"(found by the next {flow_name} run, process {os.getpid()})"
        )
        client.set_flow_run_state(run.id, Crashed(message=message), force=True)
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
            task_run_filter=TaskRunFilter(
                state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.RUNNING]))
            ),
        )
        for task_run in tasks:
            client.set_task_run_state(task_run.id, Crashed(message=message), force=True)
        left = "Running" if run.state_type == StateType.RUNNING else "Pending (never started)"
        lines.append(f"flow run {run.name!r} ({run.id}) was left {left}: marked Crashed, {message}")
    return lines


# --- progress ----------------------------------------------------------------------------------


class Progress:
    """Progress of a run's partitions: a Prefect progress artifact updated as each finishes
    (key `<what>-progress-<dataset>`), and on an entry point's terminal a bar (TTY, quiet
    console log) and one summary line per phase (reports.TerminalProgress)."""

    def __init__(
        self, what: str, dataset: str, total: int, unit: str = "partition", doing: str = ""
    ) -> None:
        self.title, self.unit = f"{what} {dataset}", unit
        self.total = total
        self.counts: dict[str, int] = {}
        self.terminal = reports.TerminalProgress(self.title)
        self.artifact: UUID | None = None
        self.last_update = 0.0
        try:
            artifact = create_progress_artifact(
                0.0, key=artifact_key(what, "progress", dataset), description=self._describe()
            )
            # called from sync code it returns the id itself (a coroutine only when awaited)
            self.artifact = artifact if isinstance(artifact, UUID) else None
        except Exception as exc:  # noqa: BLE001 - progress must never fail the run
            logging.getLogger(__name__).debug("no progress artifact: %s", exc)
        self.finished = False
        self.terminal.show(0, total, doing)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if not self.finished:  # an error ended the phase: say so, the caller raises it
            self.finish(f"stopped: {outcomes.one_line(exc)}" if exc is not None else None)

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def add(self, more: int) -> None:
        """More items became known (validation after the pull)."""
        self.total += more
        self.terminal.show(self.done, self.total, self.counts_text())

    def step(self, outcome: str, item: object = "", n: int = 1) -> None:
        """`n` items (default one) finished, with their outcome (`pulled`, `validated`,
        `failed`, `scored`...)."""
        if n <= 0:
            return
        self.counts[outcome] = self.counts.get(outcome, 0) + n
        last = f"(last {item})" if item else ""
        self.terminal.show(self.done, self.total, f"{self.counts_text()} {last}".strip())
        now = time.monotonic()
        if now - self.last_update >= 0.5 or self.done >= self.total:  # no API flood
            self.last_update = now
            self._update()

    def finish(self, summary: str | None = None) -> None:
        self.finished = True
        self._update(final=True)
        self.terminal.finish(summary or self.counts_text() or f"no {self.unit}s")

    def counts_text(self) -> str:
        return ", ".join(f"{n} {what}" for what, n in self.counts.items())

    def _describe(self) -> str:
        return f"{self.title}: {self.done}/{self.total} {self.unit}(s)" + (
            f" ({self.counts_text()})" if self.counts else ""
        )

    def _update(self, final: bool = False) -> None:
        if self.artifact is None:
            return
        share = 100.0 if final or not self.total else 100.0 * self.done / self.total
        try:
            update_progress_artifact(self.artifact, min(share, 100.0), self._describe())
        except Exception as exc:  # noqa: BLE001
            logging.getLogger(__name__).debug("progress artifact not updated: %s", exc)


# --- artifacts ---------------------------------------------------------------------------------


@task(name="report-partitions", cache_policy=NONE)
def publish_partitions(
    dataset: str,
    results: list[PartitionResult],
    failures: dict[str, str],
    refused: dict[str, str] | None = None,
) -> None:
    """Partitions table: rows, seconds, rows/s, rejected, status; and the input's entries
    refused as partitions (`refused`: entry -> why), never scored."""
    refused = refused or {}
    rows: list[dict[str, Any]] = [
        {
            "partition": str(r.partition_date),
            "model_version": r.model_version,
            "status": r.status,
            "rows_in": r.rows_in,
            "rows_scored": r.rows_scored,
            "rows_rejected": r.rows_rejected,
            "seconds": round(r.seconds, 2),
            "rows_per_s": round(r.rows_per_second),
            "scored_by": r.scored_by or "",  # skipped: the run that scored it
        }
        for r in results
    ]
    rows += [
        {"partition": day, "status": "failed", "error": err[:500]} for day, err in failures.items()
    ]
    rows += [{"partition": url, "status": "refused", "error": why} for url, why in refused.items()]
    failed = f", {len(failures)} failed" if failures else ""
    failed += f", {len(refused)} entries refused (not scored)" if refused else ""
    create_table_artifact(
        key=artifact_key("scoring-partitions", dataset),
        table=rows,
        description=f"{dataset}: {len(results)} partition(s) scored or skipped{failed}",
    )


@task(name="report-validation", cache_policy=NONE)
def publish_validation(
    dataset: str, outcomes: dict[str, str], pages: dict[str, str] | None = None
) -> None:
    """Validation summary: each partition's outcome, with failures spelled out, and a link to
    its page (every rule with its column, unexpected rows and result; readable offline)."""
    pages = pages or {}
    lines = ["| partition | outcome | report |", "|---|---|---|"]
    for day, text in sorted(outcomes.items()):
        page = pages.get(day)
        link = f"[rules and results]({_link(page)})" if page else ""
        lines.append(f"| {day} | {text.replace(chr(10), '<br>')} | {link} |")
    create_markdown_artifact(
        key=artifact_key("validation-summary", dataset),
        markdown="\n".join(lines),
        description=f"{dataset}: validation results per partition",
    )


def _link(url: str) -> str:
    """A URL a browser can open: local paths as file:// URLs."""
    if "://" in url:
        return url
    return "file://" + os.path.abspath(url).replace(" ", "%20")


@task(name="report-drift", cache_policy=NONE)
def publish_drift(dataset: str, day: str, version: str, drift: monitoring.DriftAssessment) -> None:
    """Drift table: PSI, level against its threshold and null rates per feature and for the
    score distribution, worst first; the description starts with DRIFT: when the day drifted."""
    rows = [
        {
            "feature": m["feature"],
            "psi": round(m["psi"], 4),
            "level": m["level"],
            "psi_major": m["psi_major"],
            "null_rate": round(m["null_rate"], 4),
            "reference_null_rate": round(m["reference_null_rate"], 4),
        }
        for m in drift.rows
    ]
    against = f"{day} against model {version}'s training data"
    create_table_artifact(
        key=artifact_key("drift", dataset),
        table=rows,
        description=f"DRIFT: {drift.describe()} ({against})"
        if drift.is_drifted
        else f"Drift of {against}: none above its threshold",
    )


def run_url() -> str | None:
    """The current flow run's page in the Prefect UI, where $PREFECT_UI_URL (or
    $PREFECT_API_URL, which it defaults from) says where the UI is; else None (a run on a
    temporary local server has no page to link to)."""
    if flow_run.id is None or not PREFECT_UI_URL.value():
        return None
    return flow_run.ui_url


def notify_failed(
    settings: Settings, flow: str, day: date | None, reason: BaseException | str
) -> None:
    """Notify (notifications.send) that this run of `flow` failed, saying why in one line;
    not from a subflow (the nightly's scoring): the run that called it reports the failure."""
    if flow_run.parent_flow_run_id:
        return
    notify(
        settings.notifications,
        notifications.run_summary(
            flow=flow,
            run=flow_run.name,
            url=run_url(),
            dataset=settings.dataset.name,
            day=day,
            state="Failed",
            reason=outcomes.one_line(reason),
        ),
    )


@task(name="notify", cache_policy=NONE)
def notify(cfg: NotificationsConfig, payload: dict[str, Any]) -> None:
    """POST the run's summary to the configured webhook; a failure is a WARNING, never a
    change of the run's outcome."""
    problem = notifications.send(cfg, payload)
    if problem:
        get_run_logger().warning("%s", problem)


@task(name="report-model", cache_policy=NONE)
def publish_model_comparison(dataset: str, result: dict[str, Any]) -> None:
    """Challenger vs champion (their evaluated models, fit without the holdout) and the
    challenger's linear and prior baselines, on the same holdout rows (metrics under readable
    names, 4 decimals); the lift over the linear baseline and which rows were compared; the
    gate's decision in words, and what the model was trained on (rows, rows left out for a
    missing label or a broken rule, days passed over)."""
    challenger = result["challenger_metrics"]
    champion = result["champion_metrics"] or {}
    found = result.get("baselines") or {}
    linear, prior = found.get("linear") or {}, found.get("prior") or {}
    blank = {"champion": "", "linear baseline": "", "prior baseline": ""}
    rows: list[dict[str, Any]] = [
        {
            "metric": reports.metric_label(k),
            "challenger": reports.round_metric(challenger.get(k)),
            "champion": reports.round_metric(champion.get(k)),
            "linear baseline": reports.round_metric(linear.get(k)),
            "prior baseline": reports.round_metric(prior.get(k)),
        }
        for k in reports.metric_keys(challenger, champion, linear, prior)
    ]
    lift, data = result.get("lift"), result.get("training_data") or {}
    said = {
        "lift over linear": "-"
        if lift is None
        else f"{lift:+.4f} {evaluation.metric_label(result['metric'])}",
        "compared on": result.get("compared_on") or "-",
        **{f"training: {k.replace('_', ' ')}": _plain(v) for k, v in data.items()},
    }
    rows += [{"metric": k, "challenger": v, **blank} for k, v in said.items()]
    create_table_artifact(
        key=artifact_key("model-comparison", dataset),
        table=rows,
        description=f"{dataset}: {reports.gate_summary(result['gate'])}",
    )


def _plain(value: Any) -> str:
    if isinstance(value, dict) and set(value) == {"day", "reason"}:
        return f"{value['day']} ({value['reason']})"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_plain(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(map(_plain, value)) or "none"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(reports.round_metric(value))


@task(name="report-realised", cache_policy=NONE)
def publish_realised(dataset: str, rows: list[dict[str, Any]]) -> None:
    """Realised performance: each scored day's metrics once its labels arrived, per model;
    `in_sample` where the model was fit on the day (monitoring.realised_performance)."""
    keys = ("auc", "logloss", "accuracy", "rmse", "mae", "error")
    table = [
        {
            "day": str(r["partition_date"]),
            "model_version": r["model_version"],
            "labelled_rows": r["rows"],
            **{k: reports.round_metric(r["metrics"][k]) for k in keys if k in r["metrics"]},
            "in_sample": bool(r["metrics"].get("in_sample")),
        }
        for r in rows
    ]
    create_table_artifact(
        key=artifact_key("realised", dataset),
        table=table,
        description=f"{dataset}: realised performance on scored days whose labels arrived",
    )
