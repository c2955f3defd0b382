"""Tasks that pull source data into the lake and validate its partitions."""

from __future__ import annotations

from datetime import UTC, date, datetime

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from batchpred import ingestion, monitoring, storage, validation
from batchpred.config import Settings
from tasks import resources


@task(name="list-source-days", cache_policy=NONE, retries=2, retry_delay_seconds=5)
def list_source_days(settings: Settings) -> list[date]:
    """The days the source offers."""
    return ingestion.source_days(settings)


@task(
    name="ingest-partition",
    cache_policy=NONE,
    retries=2,
    retry_delay_seconds=5,
    task_run_name="ingest-{day}",
)
def ingest_partition(settings: Settings, day: date) -> ingestion.IngestResult:
    """Pull one source day into the raw zone (a no-op when its content is unchanged)."""
    result = ingestion.ingest_partition(settings, day)
    get_run_logger().info("%s: %s, %d rows", day, result.status, result.rows)
    return result


@task(name="validate-partition", cache_policy=NONE, task_run_name="validate-{day}")
def validate_partition(settings: Settings, day: date) -> validation.ValidationReport:
    """Validate one raw partition with Great Expectations; raise naming column and rule."""
    raw = settings.lake.raw
    files = storage.partition_files(raw, day)
    subject = f"partition dt={day} ({', '.join(files)})"
    frame = storage.read_partition(raw, day).to_pandas()
    report = validation.validate_frame(
        frame,
        settings.dataset,
        settings.validation,
        subject=subject,
        reports_url=settings.lake.reports,
    )
    manifest = storage.read_manifest(raw, day) or {}
    manifest["validation"] = {
        "success": report.success,
        "report": report.json_path,
        "validated_at": datetime.now(UTC).isoformat(),
        "content_hash": manifest.get("content_hash"),
        "message": None if report.success else report.message(),
    }
    storage.write_manifest(raw, day, manifest)
    monitoring.record_validation(
        resources.engine(), settings.dataset.name, report, day, resources.run_id()
    )
    if not report.success:
        raise validation.ValidationError(report)
    return report
