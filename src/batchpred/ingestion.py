"""Pull fresh data from the configured source into the lake's raw zone, one day at a time."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

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


class DayRefused(storage.DataError):
    """A source day that cannot be landed in the lake: a file that cannot be read, a symlink
    out of the root, or no rows at all. It fails that day's validation (the ingest flow
    records the verdict); the other days go on. One line naming partition, file and rule."""

    def __init__(self, day: date, files: list[str], rule: str, detail: str) -> None:
        where = "source sql" if not files else f"file {', '.join(files)}"
        detail = " ".join(detail.split())  # one line, whatever the reader said
        super().__init__(f"partition dt={day} {where}: {detail} [rule: {rule}]", ", ".join(files))
        self.day, self.files, self.rule, self.detail = day, files, rule, detail


def source_days(
    settings: Settings, start: date | None = None, end: date | None = None
) -> list[date]:
    """The days the source holds within [start, end]: a SQL source's from its
    `source.days_query` (without one it cannot be listed: this raises ValueError); a
    snapshot source is one day, `end` or today (UTC). The entries a partitioned source
    refuses: refused_folders."""
    if settings.source.kind == "sql":
        if not settings.source.days_query:
            raise ValueError(
                "a SQL source lists its days with source.days_query (a query returning the "
                "days it holds); without one, pass the days to ingest explicitly"
            )
        return _between(sql_days(settings.source.url_env, settings.source.days_query), start, end)
    if settings.source.layout == "snapshot":
        return [end or datetime.now(UTC).date()]
    return storage.scan_partitions(settings.source.url).between(start, end).days


def _between(days: Iterable[date], start: date | None, end: date | None) -> list[date]:
    return sorted(d for d in days if (start is None or d >= start) and (end is None or d <= end))


def _sql_engine(url_env: str) -> sa.Engine:
    try:
        return sa.create_engine(os.environ[url_env])
    except KeyError:
        raise ValueError(f"${url_env} is not set: the SQL source's database URL") from None
    except sa.exc.ArgumentError:  # its message would echo the URL, which may hold a password
        raise ValueError(f"${url_env} is not a valid database URL") from None


def _sql_query(url_env: str, query: str, params: dict[str, Any]) -> sa.Result[Any]:
    """Run a source query, its rows fetched (the engine is disposed before returning)."""
    statement = sa.text(query)
    if "dt" in params:
        statement = statement.bindparams(sa.bindparam("dt", type_=sa.Date))
    engine = _sql_engine(url_env)
    try:
        with engine.connect() as conn:
            return conn.execute(statement, params).freeze()()  # type: ignore[no-any-return]
    finally:
        engine.dispose()


def sql_days(url_env: str, days_query: str) -> dict[date, str | None]:
    """The days a `days_query` lists, each with its change marker (its second column as text;
    None without one). Days come as dates or ISO text; anything else is refused by name."""
    out: dict[date, str | None] = {}
    for row in _sql_query(url_env, days_query, {}).all():
        value, *rest = tuple(row)
        try:
            day = value if isinstance(value, date) else date.fromisoformat(str(value)[:10])
        except ValueError:
            raise ValueError(f"days_query returned {value!r}, not a day (YYYY-MM-DD)") from None
        out[day.date() if isinstance(day, datetime) else day] = (
            None if not rest or rest[0] is None else str(rest[0])
        )
    return out


def _sql_key(url_env: str, days_query: str | None, day: date) -> str | None:
    """The listing key of a SQL day: its change marker, where the days query gives one."""
    if not days_query:
        return None
    marker = sql_days(url_env, days_query).get(day)
    return None if marker is None else f"sql:{marker}"


def refused_folders(settings: Settings) -> list[storage.Refused]:
    """Entries of the file source and the labels source that are refused as partitions (a
    name that is not dt=YYYY-MM-DD, a symlink out of the root, a data file outside any
    partition), each with why (storage.scan_partitions)."""
    roots = [settings.labels.url] if settings.labels.url else []
    partitioned = settings.source.kind == "files" and settings.source.layout == "partitioned"
    roots += [settings.source.url] if partitioned else []
    return [refused for root in roots for refused in storage.scan_partitions(root).refused]


def label_days(
    settings: Settings, start: date | None = None, end: date | None = None
) -> list[date]:
    """The days the late-labels source holds within [start, end] (none if it is not set)."""
    labels = settings.labels
    if labels.query and labels.days_query:
        return _between(sql_days(labels.url_env, labels.days_query), start, end)
    if not labels.url:
        return []
    return storage.scan_partitions(labels.url).between(start, end).days


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
        column = table.column(i)
        if pa.types.is_boolean(wanted) and not _zero_one(column):
            continue  # Arrow would cast 7 or 300 to true: leave it for the bool rule
        try:
            column = pc.cast(column, wanted)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        table = table.set_column(i, pa.field(name, wanted), column)
    return table


def _zero_one(column: pa.ChunkedArray) -> bool:
    """Whether every value is a bool, or a number that is 0 or 1 (text: Arrow's own parse)."""
    if pa.types.is_boolean(column.type) or pa.types.is_string(column.type):
        return True
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        return False
    values = pc.drop_null(pc.cast(column, pa.float64()))
    return bool(pc.all(pc.is_in(values, value_set=pa.array([0.0, 1.0]))).as_py() is not False)


def _source_label(settings: Settings) -> str:
    return "sql" if settings.source.kind == "sql" else settings.source.url


def _column_array(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed Python types: keep them as text
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def _read_sql_day(url_env: str, query: str, day: date) -> pa.Table:
    result = _sql_query(url_env, query, {"dt": day})
    names, rows = list(result.keys()), result.all()
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
        query = settings.source.query or ""
        return _soft_cast(_read_sql_day(settings.source.url_env, query, day), types)
    url = settings.source.url
    snapshot = settings.source.layout == "snapshot"
    files = _source_files(settings, day)
    if not files:
        raise FileNotFoundError(f"source {url} has no files for {day.isoformat()}")
    table = storage.read_files(files, column_types=types)
    date_column = settings.dataset.event_date
    if snapshot and date_column not in table.column_names:  # a snapshot is dated by its day
        table = table.append_column(date_column, pa.array([day] * table.num_rows, pa.date32()))
    row_id = settings.source.row_id
    if snapshot and row_id and row_id not in table.column_names:  # each row's position
        table = table.append_column(row_id, pa.array(range(table.num_rows), pa.int64()))
    return _soft_cast(table, types)


def _label_rows(settings: Settings, table: pa.Table) -> int:
    name = settings.dataset.target.name
    return 0 if name not in table.column_names else table.num_rows - table.column(name).null_count


def _source_files(settings: Settings, day: date) -> list[str]:
    url = settings.source.url
    if settings.source.layout == "snapshot":
        return storage.snapshot_files(url)
    return storage.partition_files(url, day)


# Manifest keys whose absence marks a partition ingested by older code: it is rewritten.
_MANIFEST_KEYS = ("label_rows", "files", "source_key")


def _landed(
    manifest: dict[str, Any], existing: list[str], day: date, source_key: str | None
) -> IngestResult | None:
    """The zone's copy of the day (its `manifest` and `existing` files), if the manifest says
    it came from exactly this source listing (`source_key`): then nothing needs reading.
    None: look closer."""
    complete = existing and all(k in manifest for k in _MANIFEST_KEYS)
    if not (complete and source_key and manifest["source_key"] == source_key):
        return None
    return IngestResult(day, "unchanged", manifest["rows"], manifest["content_hash"], existing[0])


def _in_zone(root: str, day: date) -> tuple[dict[str, Any], list[str]]:
    """A lake zone's manifest (empty if none) and data files for the day."""
    return storage.read_manifest(root, day) or {}, storage.partition_files(root, day)


def _land(
    settings: Settings,
    root: str,
    day: date,
    source: str,
    source_key: str | None,
    read: Callable[[], pa.Table],
) -> IngestResult:
    """Copy one day into a lake zone (`root`) with its manifest, unless the zone already holds
    it: first by the source's listing (`source_key`: nothing is read while it is unchanged),
    then by the content hash of what `read` returns."""
    manifest, existing = _in_zone(root, day)
    if (landed := _landed(manifest, existing, day, source_key)) is not None:
        return landed
    table = read()
    content_hash = storage.table_hash(table)
    complete = existing and all(k in manifest for k in _MANIFEST_KEYS)
    if complete and manifest["content_hash"] == content_hash:
        if manifest["source_key"] != source_key:  # touched, same content: remember the listing
            storage.write_manifest(root, day, {**manifest, "source_key": source_key})
        return IngestResult(day, "unchanged", table.num_rows, content_hash, existing[0])
    path = storage.write_partition(root, day, table)
    storage.write_manifest(
        root,
        day,
        {
            "partition": day.isoformat(),
            "rows": table.num_rows,
            "schema": {field.name: str(field.type) for field in table.schema},
            "content_hash": content_hash,
            "label_rows": _label_rows(settings, table),
            "source": source,
            "source_key": source_key,
            "files": storage.file_stats([path]),
            "ingested_at": datetime.now(UTC).isoformat(),
        },
    )
    status: Literal["new", "replaced"] = "replaced" if manifest or existing else "new"
    return IngestResult(day, status, table.num_rows, content_hash, path)


def ingest_partition(settings: Settings, day: date, marker: str | None = None) -> IngestResult:
    """Copy one source day into the raw zone with a manifest, unless the raw partition
    already holds the same content. A file source whose listing (names, sizes, modification
    times or ETags) is unchanged since the last ingest is not read at all. `marker`: a SQL
    day's listing key as the plan read it (IngestPlan.markers), so that the days query is not
    run again for every day; read before the day's rows, a later change upstream makes the next
    plan pull the day again. Raises DayRefused
    (one line: partition, file, rule) for a day whose file cannot be read (rule
    "readable"), a file linked from outside the source (rule "inside root") or a day with
    no rows (rule "no rows"); the raw zone keeps what it held."""
    try:
        files = _source_files(settings, day) if settings.source.kind == "files" else []
    except storage.DataError as exc:  # a file linked from outside the source
        url = exc.url or settings.source.url
        raise DayRefused(day, [url], "inside root", str(exc).removeprefix(f"file {url}: ")) from exc
    source = settings.source
    source_key = (
        storage.listing_key(files)
        if files
        else (marker or _sql_key(source.url_env, source.days_query, day))
        if source.kind == "sql"
        else None
    )

    def read() -> pa.Table:
        try:
            table = read_source_day(settings, day)
        except storage.DataError as exc:
            detail = str(exc).removeprefix(f"file {exc.url}: ")
            raise DayRefused(day, [exc.url] if exc.url else files, "readable", detail) from exc
        if table.num_rows == 0:
            raise DayRefused(day, files, "no rows", "0 rows")
        return table

    return _land(settings, settings.lake.raw, day, _source_label(settings), source_key, read)


@dataclass(frozen=True)
class IngestPlan:
    """What a run must pull, found from listings and manifests alone (no data is read)."""

    days: list[date]  # the source days asked for
    unchanged: list[IngestResult]  # days whose source listing matches what the lake holds
    to_pull: list[date]  # new or touched days: ingest_partition reads and compares them
    labels_to_pull: list[date]  # likewise for the late-labels source
    # SQL days to pull: the listing key (days query's marker) the plan read, for the pull
    markers: dict[date, str] = field(default_factory=dict)
    label_markers: dict[date, str] = field(default_factory=dict)


def plan(settings: Settings, days: list[date], label_days: list[date]) -> IngestPlan:
    """Split the days into those the lake already holds from the same source listing (file
    names, sizes, modification times or ETags: one listing per day, nothing read) and those
    to pull. A SQL source's listing is its days query's change marker; without one, every day
    is pulled (and compared by content)."""
    source, labels = settings.source, settings.labels
    files = source.kind == "files"
    markers = sql_days(source.url_env, source.days_query) if not files and source.days_query else {}
    unchanged, to_pull, pull_markers = [], [], {}
    for day in days:
        try:
            key = (
                storage.listing_key(_source_files(settings, day))
                if files
                else None
                if markers.get(day) is None
                else f"sql:{markers[day]}"
            )
        except storage.DataError:  # a file linked from outside: ingest_partition names it
            key = None
        landed = _landed(*_in_zone(settings.lake.raw, day), day, key) if key else None
        if landed is None:
            to_pull.append(day)
            if key and not files:
                pull_markers[day] = key
        else:
            unchanged.append(landed)
    labels_to_pull, pull_label_markers = [], {}
    label_markers = sql_days(labels.url_env, labels.days_query) if labels.days_query else {}
    for day in label_days if labels.late else []:
        if labels.url:
            label_key: str | None = storage.listing_key(storage.partition_files(labels.url, day))
        else:
            marker = label_markers.get(day)
            label_key = None if marker is None else f"sql:{marker}"
        zone = _in_zone(settings.lake.labels, day)
        if label_key is None or _landed(*zone, day, label_key) is None:
            labels_to_pull.append(day)
            if label_key and not labels.url:
                pull_label_markers[day] = label_key
    return IngestPlan(
        list(days), unchanged, to_pull, labels_to_pull, pull_markers, pull_label_markers
    )


def ingest_labels(settings: Settings, day: date, marker: str | None = None) -> IngestResult:
    """Copy one day of late labels (entity id and target) into the lake's labels zone,
    unless it already holds the same content. Labels are joined to the day's rows on the
    entity id by training and by realised-performance monitoring. `marker`: as for
    ingest_partition (IngestPlan.label_markers)."""
    spec, labels = settings.dataset, settings.labels
    if labels.query:
        where, files = "labels query", []
        key = marker or _sql_key(labels.url_env, labels.days_query, day)
    else:
        assert labels.url is not None, "labels.url is not set"
        files = storage.partition_files(labels.url, day)
        if not files:
            raise FileNotFoundError(f"labels source {labels.url} has no files for {day}")
        where, key = ", ".join(files), storage.listing_key(files)

    def read() -> pa.Table:
        if labels.query:
            table = _read_sql_day(labels.url_env, labels.query, day)
        else:
            table = storage.read_files(files)
        missing = {spec.entity_id, spec.target.name} - set(table.column_names)
        if missing:
            raise ValueError(
                f"labels partition dt={day} ({where}): column(s) {sorted(missing)} "
                f"missing [rule: exists]"
            )
        return _soft_cast(table.select([spec.entity_id, spec.target.name]), _spec_types(spec))

    source = "sql" if labels.query else str(labels.url)
    return _land(settings, settings.lake.labels, day, source, key, read)
