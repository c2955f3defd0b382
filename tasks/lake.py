"""Tasks that pull source data into the lake and validate its partitions."""

from __future__ import annotations

from datetime import date

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from batchpred import ingestion, outcomes, reports, validation, verdicts
from batchpred.config import Settings
from tasks import resources


@task(
    name="list-source-days",
    cache_policy=NONE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=resources.retry_transient,
)
def list_source_days(settings: Settings, start: date | None, end: date | None) -> list[date]:
    """The days the source offers in [start, end]."""
    return ingestion.source_days(settings, start, end)


@task(name="refused-folders", cache_policy=NONE)
def refused_folders(settings: Settings) -> list[str]:
    """Source folders that are not canonical dt=YYYY-MM-DD partitions, or lead out of the root."""
    return ingestion.refused_folders(settings)


@task(
    name="list-label-days",
    cache_policy=NONE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=resources.retry_transient,
)
def list_label_days(settings: Settings, start: date | None, end: date | None) -> list[date]:
    """The days the late-labels source offers in [start, end]."""
    return ingestion.label_days(settings, start, end)


@task(
    name="ingest-partition",
    cache_policy=NONE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=resources.retry_transient,
    task_run_name="ingest-{day}",
)
def ingest_partition(settings: Settings, day: date) -> ingestion.IngestResult:
    """Pull one source day into the raw zone (a no-op when its content is unchanged)."""
    result = ingestion.ingest_partition(settings, day)
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
def ingest_labels(settings: Settings, day: date) -> ingestion.IngestResult:
    """Pull one day of late labels into the lake's labels zone."""
    result = ingestion.ingest_labels(settings, day)
    get_run_logger().info("labels %s: %s, %d rows", day, result.status, result.rows)
    return result


@task(name="partition-status", cache_policy=NONE, task_run_name="status-{day}")
def partition_status(settings: Settings, day: date) -> verdicts.Verdict:
    """The partition's verdict under the current spec: valid, invalid or unvalidated."""
    return verdicts.partition_status(
        resources.engine(), settings.dataset, settings.validation, settings.lake.raw, day
    )


@task(name="validate-partition", cache_policy=NONE, task_run_name="validate-{day}")
def validate_partition(settings: Settings, day: date) -> verdicts.ValidationReport:
    """Validate one raw partition with Great Expectations; raise naming column and rule. The
    JSON report gets a static HTML page beside it (reports.validation_page)."""
    report = validation.validate_partition(
        resources.engine(),
        settings.dataset,
        settings.validation,
        settings.lake.raw,
        day,
        reports_url=settings.lake.reports,
        run_id=resources.run_id(),
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
