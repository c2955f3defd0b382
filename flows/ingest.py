"""Flow `ingest`: pull source days into the lake's raw zone and validate every partition."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

from prefect import flow, get_run_logger, unmapped
from prefect.runtime import flow_run

from batchpred import config, storage
from tasks import lake, reporting


@dataclass
class IngestSummary:
    passed: list[date] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # day -> error naming column and rule


class InvalidPartitions(Exception):
    """One or more partitions failed validation; they are not trained on or scored."""


def _already_validated(settings: config.Settings, day: date) -> dict | None:
    manifest = storage.read_manifest(settings.lake.raw, day) or {}
    check = manifest.get("validation")
    if check and check.get("content_hash") == manifest.get("content_hash"):
        return check
    return None


def _run_name() -> str:
    days = flow_run.parameters.get("days")
    return f"ingest-{min(days)}..{max(days)}" if days else "ingest-all"


@flow(name="ingest", flow_run_name=_run_name)
def ingest(
    days: list[date] | None = None,
    config_files: list[str] | None = None,
    fail_on_invalid: bool = True,
) -> IngestSummary:
    """Pull source days (all when none given) into the raw zone and validate each one."""
    settings = config.load_settings(config_files)
    logger = get_run_logger()
    wanted = days or lake.list_source_days(settings)
    ingested = lake.ingest_partition.map(unmapped(settings), wanted).result()
    summary, outcomes = IngestSummary(), {}
    to_validate = []
    for result in ingested:
        previous = (
            None if result.status != "unchanged" else _already_validated(settings, result.day)
        )
        if previous is None:
            to_validate.append(result.day)
        elif previous["success"]:
            summary.passed.append(result.day)
            outcomes[str(result.day)] = "passed (unchanged since last validation)"
        else:
            summary.failed[str(result.day)] = f"failed earlier, see {previous['report']}"
    futures = lake.validate_partition.map(unmapped(settings), to_validate)
    for day, future in zip(to_validate, futures, strict=True):
        future.wait()
        if future.state.is_completed():
            summary.passed.append(day)
            outcomes[str(day)] = "passed"
        else:
            summary.failed[str(day)] = str(future.state.result(raise_on_failure=False))
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
    parser.add_argument("--config", action="append", help="YAML file to layer (repeatable)")
    args = parser.parse_args(argv)
    summary = ingest(days=args.day, config_files=args.config)
    print(f"passed: {len(summary.passed)} partition(s); failed: {len(summary.failed)}")


if __name__ == "__main__":
    main()
