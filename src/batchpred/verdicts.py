"""One verdict per (dataset, partition, content, spec), stored in validation_results, and the
one question everybody asks of it: is this partition valid, invalid or unvalidated?

The content key is the partition's input fingerprint (file names, sizes, content digests or
S3 ETags) and the spec hash covers the dataset spec and the validation policy: new content or
a changed spec makes the old verdict stale, so the partition is validated again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal

import sqlalchemy as sa

from batchpred import db, rules, storage
from batchpred.config import DatasetSpec, ValidationConfig

Status = Literal["valid", "invalid", "unvalidated"]


@dataclass(frozen=True)
class Failure:
    column: str | None
    expectation: str  # snake_case GX type, e.g. expect_column_values_to_be_between
    detail: str  # what was found: count and examples, or the observed value
    args: str = ""  # the rule's arguments, e.g. "min_value=0, max_value=120"

    def __str__(self) -> str:
        where = f"column {self.column!r}" if self.column else "table"
        rule = f"{self.expectation}({self.args})" if self.args else self.expectation
        return f"{where} failed {rule}" + (f": {self.detail}" if self.detail else "")


@dataclass(frozen=True)
class ValidationReport:
    subject: str
    success: bool
    failures: tuple[Failure, ...]
    evaluated: int
    rows: int
    json_path: str | None
    docs_path: str | None

    def message(self) -> str:
        if self.success:
            return f"{self.subject}: valid ({self.evaluated} expectations, {self.rows} rows)"
        lines = [
            f"{self.subject}: validation failed, {len(self.failures)} of {self.evaluated} "
            f"expectations on {self.rows} rows:"
        ]
        lines += [f"  - {f}" for f in self.failures]
        lines += [f"  {k}: {v}" for k, v in (("report", self.json_path), ("docs", self.docs_path))]
        return "\n".join(line for line in lines if not line.endswith(": None"))


class ValidationError(Exception):
    def __init__(self, report: ValidationReport) -> None:
        super().__init__(report.message())
        self.report = report

    def __str__(self) -> str:
        return self.report.message()


@dataclass(frozen=True)
class Verdict:
    status: Status
    message: str = ""
    report_uri: str | None = None
    content_key: str = ""
    spec_hash: str = ""


def record(
    engine: sa.Engine,
    dataset: str,
    day: date | None,
    content_key: str,
    spec_hash: str,
    report: ValidationReport,
    run_id: str,
) -> None:
    """Store one validation outcome under its content key and spec hash."""
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
                content_key=content_key,
                spec_hash=spec_hash,
                message=None if report.success else report.message(),
            )
        )


def lookup(engine: sa.Engine, dataset: str, day: date, content_key: str, spec_hash: str) -> Verdict:
    """The newest verdict for exactly this content under exactly this spec."""
    t = db.table(engine, "validation_results")
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(t.c.success, t.c.message, t.c.report_uri)
            .where(
                t.c.dataset == dataset,
                t.c.partition_date == day,
                t.c.content_key == content_key,
                t.c.spec_hash == spec_hash,
            )
            .order_by(t.c.id.desc())
            .limit(1)
        ).first()
    if row is None:
        return Verdict("unvalidated", content_key=content_key, spec_hash=spec_hash)
    status: Status = "valid" if row.success else "invalid"
    return Verdict(status, row.message or "", row.report_uri, content_key, spec_hash)


def partition_status(
    engine: sa.Engine, spec: DatasetSpec, cfg: ValidationConfig, root: str, day: date
) -> Verdict:
    """Valid, invalid or unvalidated: the verdict for the partition's current files under the
    current spec and policy. A partition without data files is unvalidated."""
    key = storage.fingerprint_partition(root, day)
    return lookup(engine, spec.name, day, key, rules.spec_hash(spec, cfg))
