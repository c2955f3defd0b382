"""Flow `ingest`: pull source days into the lake's raw zone and validate every partition."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import date

from prefect import flow, get_run_logger, unmapped
from prefect.runtime import flow_run

from batchpred import config
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


class InvalidPartitions(Exception):
    """One or more partitions failed validation; they are not trained on or scored."""


def _run_name() -> str:
    p = flow_run.parameters
    days = p.get("days")
    if days:
        return f"ingest-{min(days)}..{max(days)}"
    if p.get("start") or p.get("end"):
        return f"ingest-{p.get('start') or 'first'}..{p.get('end') or 'last'}"
    return "ingest-all"


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
    logger = get_run_logger()
    wanted = days or lake.list_source_days(settings, start, end)
    ingested = lake.ingest_partition.map(unmapped(settings), wanted).result()
    if settings.labels.url:
        label_days = days or lake.list_label_days(settings, start, end)
        lake.ingest_labels.map(unmapped(settings), label_days).result()
    summary, outcomes = IngestSummary(), {}
    to_validate = []
    statuses = lake.partition_status.map(unmapped(settings), [r.day for r in ingested]).result()
    for result, verdict in zip(ingested, statuses, strict=True):
        if verdict.status == "unvalidated":
            to_validate.append(result.day)
        elif verdict.status == "valid":
            summary.passed.append(result.day)
            outcomes[str(result.day)] = "passed (content and spec unchanged since validation)"
        else:
            summary.failed[str(result.day)] = verdict.message
    futures = lake.validate_partition.map(unmapped(settings), to_validate)
    for day, future in zip(to_validate, futures, strict=True):
        future.wait()
        if future.state.is_completed():
            summary.passed.append(day)
            outcomes[str(day)] = "passed"
        else:
            summary.failed[str(day)] = str(future.state.result(raise_on_failure=False))
    for problem in lake.refused_folders(settings):  # never silently skipped
        folder, _, why = problem.partition(": ")
        summary.failed[folder] = f"{folder}: refused, {why}"
    outcomes.update({day: f"FAILED: {err}" for day, err in summary.failed.items()})
    reporting.publish_validation(outcomes)
    summary.passed.sort()
    logger.info("%d partition(s) passed, %d failed", len(summary.passed), len(summary.failed))
    if summary.failed and fail_on_invalid:
        raise InvalidPartitions("\n".join(summary.failed.values()))
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.ingest", description=__doc__)
    parser.add_argument("--day", action="append", type=date.fromisoformat, help="repeatable")
    parser.add_argument("--start", type=date.fromisoformat, help="first source day to pull")
    parser.add_argument("--end", type=date.fromisoformat, help="last source day to pull")
    parser.add_argument("--config", action="append", help="YAML file to layer (repeatable)")
    args = parser.parse_args(argv)
    summary = ingest(days=args.day, start=args.start, end=args.end, config_files=args.config)
    print(f"passed: {len(summary.passed)} partition(s); failed: {len(summary.failed)}")


if __name__ == "__main__":
    main()
