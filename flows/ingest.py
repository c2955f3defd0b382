"""Flow `ingest`: pull source days into the lake's raw zone and validate every partition."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import date

from prefect import flow, get_run_logger, unmapped
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from batchpred import config, outcomes, reports, verdicts
from tasks import lake, reporting


@dataclass
class IngestSummary:
    passed: list[date] = field(default_factory=list)
    # day (or refused folder) -> error naming file, column and rule
    failed: dict[str, str] = field(default_factory=dict)

    def failed_days(self) -> list[date]:
        days = []
        for key in self.failed:
            with suppress(ValueError):  # a refused folder is not a day
                days.append(date.fromisoformat(key))
        return days


class InvalidPartitions(outcomes.RunFailed):
    """One or more partitions failed validation; they are not trained on or scored."""


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
    days: list[date] | None = None,
    start: date | None = None,
    end: date | None = None,
    config_files: list[str] | None = None,
    fail_on_invalid: bool = True,
) -> IngestSummary:
    """Pull source days (`days`, else all in [start, end]) and their late labels into the
    lake, and validate every partition that has no verdict under the current spec."""
    settings = config.load_settings(config_files)
    dataset = settings.dataset.name
    reporting.start_run(dataset)
    logger = get_run_logger()
    plan = lake.plan_ingest(settings, days, start, end)
    wanted, listing = plan.listing.days, plan.listing
    with (
        reporting.Progress("ingest", dataset, len(wanted)) as progress,
        # bounded like scoring (Prefect's default thread pool is not): memory and I/O
        ThreadPoolTaskRunner(max_workers=settings.scoring.concurrency) as runner,
    ):
        progress.step("unchanged", n=len(listing.unchanged))
        each_day = {"settings": unmapped(settings)}
        pulls = runner.map(lake.ingest_partition, {**each_day, "day": listing.to_pull})
        for future in as_completed(list(pulls)):  # progress as each day lands
            future.wait()  # its final state, not the API's view of it (which may lag)
            done = future.state.is_completed()
            progress.step(f"{future.result().status}" if done else "failed to pull")
        pulled = pulls.result()
        runner.map(lake.ingest_labels, {**each_day, "day": listing.labels_to_pull}).result()
        statuses = dict(plan.known)
        if pulled:  # their verdicts, under the current spec (pulled content may be known)
            statuses.update(lake.partition_statuses(settings, [r.day for r in pulled]))
        summary, said, pages = IngestSummary(), {}, {}
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
        validating = runner.map(lake.validate_partition, {**each_day, "day": to_validate})
        futures = dict(zip(validating, to_validate, strict=True))
        for future in as_completed(list(futures)):  # progress as each partition is judged
            future.wait()  # its final state, not the API's view of it (which may lag)
            day = futures[future]
            if future.state.is_completed():
                report = future.result()
                summary.passed.append(day)
                said[str(day)] = "passed"
                progress.step("validated", day)
            else:
                error = future.state.result(raise_on_failure=False)
                report = error.report if isinstance(error, verdicts.ValidationError) else None
                summary.failed[str(day)] = str(error)
                progress.step("invalid", day)
            if report is not None and report.json_path:
                pages[str(day)] = reports.validation_page_url(report.json_path)
        for problem in plan.refused:  # never silently skipped
            folder, _, why = problem.partition(": ")
            summary.failed[folder] = f"{folder}: refused, {why}"
        said.update({day: f"FAILED: {err}" for day, err in summary.failed.items()})
        reporting.publish_validation(dataset, said, pages)
        summary.passed.sort()
        valid, failed = len(summary.passed), len(summary.failed)
        progress.finish(
            f"{len(wanted)} source day(s): {valid} valid, {failed} failed"
            f" ({len(to_validate)} validated now)"
        )
    logger.info("%d partition(s) passed, %d failed", len(summary.passed), len(summary.failed))
    if summary.failed and fail_on_invalid:
        raise InvalidPartitions("\n".join(summary.failed[d] for d in sorted(summary.failed)))
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
    with outcomes.entry_point(prog.removeprefix("python -m flows."), args.debug):
        outcomes.preflight(args.config, source=True)
        summary = ingest(days=args.day, start=args.start, end=args.end, config_files=args.config)
    print(f"passed: {len(summary.passed)} partition(s); failed: {len(summary.failed)}")


if __name__ == "__main__":
    main()
