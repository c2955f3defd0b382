"""Pull fresh data from the configured source into the lake's raw zone, one day at a time."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from batchpred import storage
from batchpred.config import DatasetSpec, Settings
from batchpred.schema import entity_id_type, feature_type, target_type


@dataclass(frozen=True)
class IngestResult:
    """What ingesting one day did to the raw zone."""

    day: date
    status: Literal["new", "unchanged", "replaced"]
    rows: int
    content_hash: str
    path: str


def source_days(settings: Settings) -> list[date]:
    """The days the source holds. Only file sources can be listed: for a SQL source the
    caller must name the days to ingest, and this raises ValueError."""
    if settings.source.kind == "sql":
        raise ValueError("a SQL source cannot list its days: pass the days to ingest explicitly")
    return storage.list_partitions(settings.source.url)


def _spec_types(spec: DatasetSpec) -> dict[str, pa.DataType]:
    types = {spec.entity_id: entity_id_type(spec), spec.event_date: pa.date32()}
    types.update({f.name: feature_type(f) for f in spec.features})
    types[spec.target.name] = target_type(spec)
    return types


def _soft_cast(table: pa.Table, types: dict[str, pa.DataType]) -> pa.Table:
    """Cast each present column to its spec type where that is lossless; leave the rest as
    they are, for validation to reject."""
    for i, name in enumerate(table.column_names):
        wanted = types.get(name)
        if wanted is None or table.schema.field(i).type == wanted:
            continue
        try:
            column = pc.cast(table.column(i), wanted)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        table = table.set_column(i, pa.field(name, wanted), column)
    return table


def _source_label(settings: Settings) -> str:
    return "sql" if settings.source.kind == "sql" else settings.source.url


def _column_array(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed Python types: keep them as text
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def _read_sql_day(settings: Settings, day: date) -> pa.Table:
    import sqlalchemy as sa

    query = sa.text(settings.source.query or "").bindparams(sa.bindparam("dt", type_=sa.Date))
    try:
        engine = sa.create_engine(os.environ[settings.source.url_env])
    except sa.exc.ArgumentError:  # its message would echo the URL, which may hold a password
        raise ValueError(f"{settings.source.url_env} is not a valid database URL") from None
    try:
        with engine.connect() as conn:
            result = conn.execute(query, {"dt": day})
            names = list(result.keys())
            rows = result.fetchall()
    finally:
        engine.dispose()
    return pa.table({name: _column_array([row[i] for row in rows]) for i, name in enumerate(names)})


def read_source_day(settings: Settings, day: date) -> pa.Table:
    """One day from the source, typed by the spec where values allow it, never forced into
    the canonical schema: a missing column or a wrong type reaches validation.

    Files: the day's Parquet/CSV files under source.url. SQL: source.query with `dt` bound
    to the day, on the database named by the environment variable source.url_env.
    Raises FileNotFoundError if a file source has no files for the day.
    """
    types = _spec_types(settings.dataset)
    if settings.source.kind == "sql":
        if settings.source.url_env not in os.environ:
            raise KeyError(f"source database URL: set the {settings.source.url_env} variable")
        return _soft_cast(_read_sql_day(settings, day), types)
    url = settings.source.url
    if not storage.partition_files(url, day):
        raise FileNotFoundError(f"source {url} has no files for {day.isoformat()}")
    try:
        table = storage.read_partition(url, day, column_types=types)
    except pa.ArrowInvalid:  # a CSV value that does not parse as its spec type
        table = storage.read_partition(url, day)
    return _soft_cast(table, types)


def ingest_partition(settings: Settings, day: date) -> IngestResult:
    """Copy one source day into the raw zone with a manifest, unless the raw partition
    already holds the same content. Raises ValueError for a day with no rows."""
    table = read_source_day(settings, day)
    if table.num_rows == 0:
        raise ValueError(f"source {_source_label(settings)} has no rows for {day.isoformat()}")
    raw = settings.lake.raw
    content_hash = storage.table_hash(table)
    manifest = storage.read_manifest(raw, day)
    existing = storage.partition_files(raw, day)
    if manifest and manifest.get("content_hash") == content_hash and existing:
        return IngestResult(day, "unchanged", table.num_rows, content_hash, existing[0])
    path = storage.write_partition(raw, day, table)
    storage.write_manifest(
        raw,
        day,
        {
            "partition": day.isoformat(),
            "rows": table.num_rows,
            "schema": {field.name: str(field.type) for field in table.schema},
            "content_hash": content_hash,
            "source": _source_label(settings),
            "ingested_at": datetime.now(UTC).isoformat(),
            "validation": None,
        },
    )
    status: Literal["new", "replaced"] = "replaced" if manifest or existing else "new"
    return IngestResult(day, status, table.num_rows, content_hash, path)
