"""Monitoring records analysts can query: validation results and drift per partition."""

from __future__ import annotations

from datetime import UTC, date, datetime

import sqlalchemy as sa

from batchpred import db
from batchpred.validation import ValidationReport


def record_validation(
    engine: sa.Engine, dataset: str, report: ValidationReport, day: date | None, run_id: str
) -> None:
    """Append one validation outcome to validation_results."""
    t = db.table(engine, "validation_results")
    with engine.begin() as conn:
        conn.execute(
            t.insert().values(
                dataset=dataset,
                subject=report.subject,
                partition_date=day,
                run_id=run_id,
                success=report.success,
                rows=report.rows,
                evaluated=report.evaluated,
                failures=[
                    {"column": f.column, "expectation": f.expectation, "detail": f.detail}
                    for f in report.failures
                ],
                report_uri=report.json_path,
                validated_at=datetime.now(UTC),
            )
        )
