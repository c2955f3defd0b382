"""Tasks that pull source data into the lake and validate its partitions.

`batchpred.validation` is imported where a partition is validated, not at the top: it imports
Great Expectations (2-3 s), which an ingest or nightly run that validates nothing (no new or
changed day) never needs; `python -m flows.ingest` and `python -m flows.nightly` then start
without it (tests/unit/test_imports.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from batchpred import ingestion, outcomes, reports, storage, verdicts
from batchpred.config import Settings
from tasks import resources


@dataclass(frozen=True)
class Plan:
    """What an ingest run has to do, from listings, manifests and stored verdicts alone."""

    listing: ingestion.IngestPlan  # days asked for; unchanged ones; days to pull
    known: dict[date, verdicts.Verdict]  # the unchanged days' verdicts under today's spec
    refused: list[storage.Refused]  # source entries that are not partitions, with why


@task(
    name="plan-ingest",
    cache_policy=NONE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=resources.retry_transient,
)
def plan_ingest(
    settings: Settings, days: list[date] | None, start: date | None, end: date | None
) -> Plan:
    """List the source (`days`, else every day in [start, end]), keep apart the days the lake
    holds from the same source listing, with their stored verdicts, and the folders refused.
    One task and one verdict query however long the history: a night with nothing new costs
    a listing per day, never a read or a task run per day."""
    wanted = days or ingestion.source_days(settings, start, end)
    # the days asked for that have labels (a day named whose labels have not come is no error)
    label_days = [
        d for d in ingestion.label_days(settings, start, end) if days is None or d in set(days)
    ]
    listing = ingestion.plan(settings, wanted, label_days)
    known = verdicts.partition_statuses(
        resources.engine(),
        settings.dataset,
        settings.validation,
        settings.lake.raw,
        [r.day for r in listing.unchanged],
    )
    refused = ingestion.refused_folders(settings)
    for entry in refused:  # never skipped in silence
        get_run_logger().warning("not ingested: %s", entry)
    return Plan(listing, known, refused)


@task(
    name="ingest-partition",
    cache_policy=NONE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=resources.retry_transient,
    task_run_name="ingest-{day}",
)
def ingest_partition(
    settings: Settings, day: date, marker: str | None = None
) -> ingestion.IngestResult:
    """Pull one source day into the raw zone (a no-op when its content is unchanged). A day
    that cannot be landed (unreadable file, no rows) fails here with its invalid verdict
    recorded, naming partition, file and rule; it is not retried. `marker`: the plan's
    listing key of a SQL day (ingestion.ingest_partition)."""
    try:
        result = ingestion.ingest_partition(settings, day, marker)
    except ingestion.DayRefused as exc:
        verdicts.record_refused(
            resources.engine(),
            settings.dataset,
            settings.validation,
            settings.lake.raw,
            day,
            exc,
            resources.run_id(),
        )
        get_run_logger().error("%s", exc)
        raise
    get_run_logger().info("%s: %s, %d rows", day, result.status, result.rows)
    return result


@task(
    name="ingest-labels",
    cache_policy=NONE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=resources.retry_transient,
    task_run_name="labels-{day}",
)
def ingest_labels(
    settings: Settings, day: date, marker: str | None = None
) -> ingestion.IngestResult:
    """Pull one day of late labels into the lake's labels zone (`marker`: the plan's)."""
    result = ingestion.ingest_labels(settings, day, marker)
    get_run_logger().info("labels %s: %s, %d rows", day, result.status, result.rows)
    return result


@task(name="partition-statuses", cache_policy=NONE)
def partition_statuses(settings: Settings, days: list[date]) -> dict[date, verdicts.Verdict]:
    """The partitions' verdicts under the current spec: valid, invalid or unvalidated."""
    return verdicts.partition_statuses(
        resources.engine(), settings.dataset, settings.validation, settings.lake.raw, days
    )


@task(name="validate-partition", cache_policy=NONE, task_run_name="validate-{day}")
def validate_partition(settings: Settings, day: date) -> verdicts.ValidationReport:
    """Validate one raw partition with Great Expectations; raise naming column and rule. The
    JSON report gets a static HTML page beside it (reports.validation_page); the Data Docs
    index is left to the flow (build_docs_index, once per run)."""
    from batchpred import validation  # on first use: see the module's docstring

    report = validation.validate_partition(
        resources.engine(),
        settings.dataset,
        settings.validation,
        settings.lake.raw,
        day,
        reports_url=settings.lake.reports,
        run_id=resources.run_id(),
        docs_index=False,
    )
    if report.json_path:  # a page of every rule and its result beside the JSON, readable offline
        try:
            reports.write_validation_page(report.json_path, settings.dataset.name)
        except Exception as exc:  # noqa: BLE001 - the verdict stands without its page
            get_run_logger().warning(
                "%s: validation page not written: %s", day, outcomes.one_line(exc)
            )
    if not report.success:
        raise verdicts.ValidationError(report)
    return report


def build_docs_index(settings: Settings) -> None:
    """The Data Docs index page, once per run after its validations (no task run: one call)."""
    from batchpred import validation  # on first use: see the module's docstring

    validation.build_docs_index(settings.lake.reports, settings.validation)


def prepare_validation(settings: Settings) -> None:
    """Import `validation` and set up its Great Expectations contexts in the flow's thread,
    before partitions are validated in parallel (no task run: one call)."""
    from batchpred import validation  # on first use: see the module's docstring

    validation.prepare(settings.lake.reports, settings.validation)
