"""One verdict per (dataset, partition, content, spec), stored in validation_results, and the
one question everybody asks of it: is this partition valid, invalid or unvalidated?

The content key is the partition's input fingerprint (file names, sizes, content digests or
S3 ETags) and the spec hash covers the dataset spec and the validation policy: new content or
a changed spec makes the old verdict stale, so the partition is validated again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal

import sqlalchemy as sa

from batchpred import db, rules, storage
from batchpred.config import DatasetSpec, ValidationConfig
from batchpred.ingestion import DayRefused

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
    return lookup_many(engine, dataset, {day: content_key}, spec_hash)[day]


def lookup_many(
    engine: sa.Engine, dataset: str, keys: dict[date, str], spec_hash: str
) -> dict[date, Verdict]:
    """`lookup` for many days ({day: content key}) in one query."""
    if not keys:
        return {}
    t = db.table(engine, "validation_results")
    newest: dict[tuple[date, str], Verdict] = {}
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.partition_date, t.c.content_key, t.c.success, t.c.message)
            .add_columns(t.c.report_uri)
            .where(
                t.c.dataset == dataset,
                t.c.spec_hash == spec_hash,
                t.c.partition_date.in_(list(keys)),
                t.c.content_key.in_(set(keys.values())),
            )
            .order_by(t.c.id)  # the newest verdict for a key wins
        )
        for row in rows:
            status: Status = "valid" if row.success else "invalid"
            newest[(row.partition_date, row.content_key)] = Verdict(
                status, row.message or "", row.report_uri, row.content_key, spec_hash
            )
    return {
        d: newest.get((d, k)) or Verdict("unvalidated", content_key=k, spec_hash=spec_hash)
        for d, k in keys.items()
    }


def partition_statuses(
    engine: sa.Engine, spec: DatasetSpec, cfg: ValidationConfig, root: str, days: list[date]
) -> dict[date, Verdict]:
    """Valid, invalid or unvalidated: each partition's verdict for its current files under
    the current spec and policy, in one query. A partition without data files is
    unvalidated. Fingerprints come from listings and manifests (storage.fingerprint_partition):
    nothing is read while files are as ingest left them."""
    keys = {day: storage.fingerprint_partition(root, day) for day in days}
    return lookup_many(engine, spec.name, keys, rules.spec_hash(spec, cfg))


def partition_status(
    engine: sa.Engine, spec: DatasetSpec, cfg: ValidationConfig, root: str, day: date
) -> Verdict:
    """partition_statuses for one partition."""
    return partition_statuses(engine, spec, cfg, root, [day])[day]


def record_refused(
    engine: sa.Engine,
    spec: DatasetSpec,
    cfg: ValidationConfig,
    root: str,
    day: date,
    problem: DayRefused,
    run_id: str,
) -> ValidationReport:
    """Record the invalid verdict of a source day that ingest could not land (`problem`: a
    file that cannot be read, no rows): its failure names file and rule. While `root` holds
    nothing for the day, the verdict is keyed by that empty partition's fingerprint, so
    partition_status says "invalid" with the reason; a copy landed earlier keeps its own
    verdict (the source's breakage is recorded beside it, under a key of its own)."""
    where = ", ".join(problem.files) or "source sql"
    failure = Failure(None, problem.rule, problem.detail)
    report = ValidationReport(f"partition dt={day} ({where})", False, (failure,), 1, 0, None, None)
    if storage.partition_files(root, day):
        key = "refused:" + hashlib.sha256(str(problem).encode()).hexdigest()[:16]
    else:
        key = storage.fingerprint_partition(root, day)
    record(engine, spec.name, day, key, rules.spec_hash(spec, cfg), report, run_id)
    return report
