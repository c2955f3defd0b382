"""Flow `ingest`: pull source days into the lake's raw zone and validate every partition."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from prefect import flow, get_run_logger, unmapped
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run
from prefect.states import Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from batchpred import (
    config,
    ingestion,
    monitoring,
    outcomes,
    preflight,
    reports,
    storage,
    verdicts,
)
from batchpred.config import Day
from tasks import lake, reporting, resources


@dataclass
class IngestSummary:
    passed: list[date] = field(default_factory=list)
    # day (a refused source entry, or "labels dt=...") -> one error naming file, column, rule
    failed: dict[str, str] = field(default_factory=dict)
    # source entries not taken as partitions, with why (also in `failed`: never green)
    refused: list[storage.Refused] = field(default_factory=list)

    def failed_days(self) -> list[date]:
        days = []
        for key in self.failed:
            with suppress(ValueError):  # a refused folder is not a day
                days.append(date.fromisoformat(key))
        return days


class InvalidPartitions(outcomes.RunFailed):
    """One or more partitions failed validation; they are not trained on or scored."""


def _one_line(state: State) -> str:
    """A failed pull as one line: a refused day's own (partition, file, rule), else the
    error's first line with its type."""
    error = state.result(raise_on_failure=False)
    return str(error) if isinstance(error, ingestion.DayRefused) else outcomes.one_line(error)


def _run_name() -> str:
    p = flow_run.parameters
    dataset = reporting.dataset_of(p.get("config_files"))
    days = p.get("days")
    if days:
        return f"ingest-{dataset}-{min(days)}..{max(days)}"
    if p.get("start") or p.get("end"):
        return f"ingest-{dataset}-{p.get('start') or 'first'}..{p.get('end') or 'last'}"
    return f"ingest-{dataset}-all"


@flow(name="ingest", flow_run_name=_run_name)
def ingest(
    days: list[Day] | None = None,
    start: Day | None = None,
    end: Day | None = None,
    config_files: list[str] | None = None,
    fail_on_invalid: bool = True,
) -> IngestSummary:
    """Pull source days (`days`, else all in [start, end]) and their late labels into the
    lake, and validate every partition that has no verdict under the current spec. Where
    labels landed, the scored days they label get their `outcomes` rows and realised metrics
    (monitoring.realised_performance)."""
    settings = config.load_settings(config_files)
    with reporting.flow_body(settings.dataset.name):
        return _ingest(settings, days, start, end, fail_on_invalid)


def _ingest(
    settings: config.Settings,
    days: list[date] | None,
    start: date | None,
    end: date | None,
    fail_on_invalid: bool,
) -> IngestSummary:
    """The ingest flow's body (its task runs without the host and process tags)."""
    dataset = settings.dataset.name
    logger = get_run_logger()
    plan = lake.plan_ingest(settings, days, start, end)
    wanted, listing = plan.listing.days, plan.listing
    # bounded like scoring (Prefect's default thread pool is not): memory and I/O; its tasks
    # return different types (pulls, labels, reports), each future typed where it is read
    pool: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(max_workers=settings.scoring.concurrency)
    with (
        reporting.Progress("ingest", dataset, len(wanted)) as progress,
        pool as runner,
    ):
        progress.step("unchanged", n=len(listing.unchanged))
        each_day = {"settings": unmapped(settings)}
        summary = IngestSummary(refused=list(plan.refused))
        # One day that cannot be pulled (an unreadable file, no rows) fails that day alone,
        # its verdict recorded by the task; every other day is landed and validated.
        pulls = [
            runner.submit(
                lake.ingest_partition,
                {"settings": settings, "day": day, "marker": listing.markers.get(day)},
            )
            for day in listing.to_pull
        ]
        pulling: dict[PrefectFuture[ingestion.IngestResult], date]
        pulling = dict(zip(pulls, listing.to_pull, strict=True))
        pulled: list[ingestion.IngestResult] = []
        for future in as_completed(list(pulling)):  # progress as each day lands
            future.wait()  # its final state, not the API's view of it (which may lag)
            if future.state.is_completed():
                result: ingestion.IngestResult = future.result()
                pulled.append(result)
                progress.step(result.status)
            else:
                summary.failed[str(pulling[future])] = _one_line(future.state)
                progress.step("failed to pull", pulling[future])
        label_markers = [listing.label_markers.get(d) for d in listing.labels_to_pull]
        labels = runner.map(
            lake.ingest_labels,
            {**each_day, "day": listing.labels_to_pull, "marker": label_markers},
        )
        for landing, day in zip(labels, listing.labels_to_pull, strict=True):
            landing.wait()
            if not landing.state.is_completed():
                summary.failed[f"labels dt={day}"] = _one_line(landing.state)
        statuses = dict(plan.known)
        if pulled:  # their verdicts, under the current spec (pulled content may be known)
            statuses.update(lake.partition_statuses(settings, [r.day for r in pulled]))
        said: dict[str, str] = {}
        pages: dict[str, str] = {}
        to_validate = []
        for day in sorted(statuses):
            verdict = statuses[day]
            if verdict.status == "unvalidated":
                to_validate.append(day)
                continue
            page = reports.existing_page(verdict.report_uri) if verdict.report_uri else None
            if page:
                pages[str(day)] = page
            if verdict.status == "valid":
                summary.passed.append(day)
                said[str(day)] = "passed (content and spec unchanged since validation)"
            else:
                summary.failed[str(day)] = verdict.message
        progress.add(len(to_validate))
        if to_validate:
            lake.prepare_validation(settings)
        validating = [
            runner.submit(lake.validate_partition, {"settings": settings, "day": day})
            for day in to_validate
        ]
        futures: dict[PrefectFuture[verdicts.ValidationReport], date]
        futures = dict(zip(validating, to_validate, strict=True))
        for judged in as_completed(list(futures)):  # progress as each partition is judged
            judged.wait()  # its final state, not the API's view of it (which may lag)
            day = futures[judged]
            report: verdicts.ValidationReport | None
            if judged.state.is_completed():
                report = judged.result()
                summary.passed.append(day)
                said[str(day)] = "passed"
                progress.step("validated", day)
            else:
                error = judged.state.result(raise_on_failure=False)
                report = error.report if isinstance(error, verdicts.ValidationError) else None
                summary.failed[str(day)] = str(error)
                progress.step("invalid", day)
            if report is not None and report.json_path:
                pages[str(day)] = reports.validation_page_url(report.json_path)
        if to_validate:  # the Data Docs index once, not once a partition
            lake.build_docs_index(settings)
        for entry in plan.refused:  # never silently skipped
            summary.failed[entry.url] = f"{entry.url}: refused, {entry.reason}"
        said.update({day: f"FAILED: {err}" for day, err in summary.failed.items()})
        reporting.publish_validation(dataset, said, pages)
        summary.passed.sort()
        valid, failed = len(summary.passed), len(summary.failed)
        progress.finish(
            f"{len(wanted)} source day(s): {valid} valid, {failed} failed"
            f" ({len(to_validate)} validated now)"
        )
    logger.info("%d partition(s) passed, %d failed", len(summary.passed), len(summary.failed))
    if pulled or listing.labels_to_pull:  # labels may have landed: outcomes, realised metrics
        # no task run: a few queries when no scored day got labels (the common case)
        engine = resources.engine()
        computed = monitoring.realised_performance(engine, settings)
        if computed:
            logger.info("realised performance computed for %s", reports.realised_pairs(computed))
            reporting.publish_realised(dataset, monitoring.recent_realised(engine, dataset))
    if summary.failed and fail_on_invalid:
        invalid = InvalidPartitions("\n".join(summary.failed[d] for d in sorted(summary.failed)))
        # known: the run ends Failed with its lines, no traceback in the UI or the worker log
        logger.error("%s", invalid)
        return Failed(message=outcomes.one_line(invalid), data=invalid)  # type: ignore[return-value]
    return summary


def main(argv: Sequence[str] | None = None, prog: str = "python -m flows.ingest") -> None:
    parser = outcomes.flow_parser(prog, __doc__)
    parser.add_argument(
        "--day",
        action="append",
        type=date.fromisoformat,
        help="a source day to pull, YYYY-MM-DD (repeatable; default: every day it offers)",
    )
    parser.add_argument("--start", type=date.fromisoformat, help="first source day to pull")
    parser.add_argument("--end", type=date.fromisoformat, help="last source day to pull")
    args = parser.parse_args(argv)
    outcomes.check_range(parser, args)
    with (
        outcomes.entry_point(prog.removeprefix("python -m flows."), args.debug),
        reporting.flow_entry(),
    ):
        preflight.check(args.config, source=True)
        summary = ingest(days=args.day, start=args.start, end=args.end, config_files=args.config)
    print(f"passed: {len(summary.passed)} partition(s); failed: {len(summary.failed)}")


if __name__ == "__main__":
    main()
    outcomes.end_process()
