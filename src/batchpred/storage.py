"""Lake I/O through one fsspec code path: dt=YYYY-MM-DD partitions, manifests, hashes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fsspec.core import url_to_fs as _fsspec_url_to_fs

MANIFEST = "_manifest.json"
DATA_SUFFIXES = (".parquet", ".csv")
PARTITION_PREFIX = "dt="
DATA_FILE = "part-0.parquet"


def url_to_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and bare path of a local path or fsspec URL; s3 honours AWS_ENDPOINT_URL."""
    kwargs: dict[str, Any] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if url.startswith(("s3://", "s3a://")) and endpoint:
        kwargs["client_kwargs"] = {"endpoint_url": endpoint}
    return _fsspec_url_to_fs(url, **kwargs)


def partition_path(root: str, day: date) -> str:
    """The URL of one day's partition folder under `root`."""
    return f"{root.rstrip('/')}/{PARTITION_PREFIX}{day.isoformat()}"


def _fresh_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = url_to_fs(url)
    fs.invalidate_cache()  # listings must see writes made through other instances
    return fs, path


_CANONICAL = re.compile(r"^dt=\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Refused:
    """An entry under a partitioned root that is not taken as a partition, and why."""

    url: str
    reason: str

    def __str__(self) -> str:
        return f"{self.url}: {self.reason}"


@dataclass(frozen=True)
class Listing:
    """What a partitioned root holds: the days accepted, and every entry refused with why."""

    days: list[date]
    refused: list[Refused]

    def between(self, start: date | None, end: date | None) -> Listing:
        """The days within [start, end] (open ends: unbounded); the refused entries all stay,
        since a refused name cannot be placed in a range."""
        days = [d for d in self.days if (start is None or d >= start) and (end is None or d <= end)]
        return Listing(days, self.refused)


def scan_partitions(root: str) -> Listing:
    """The one listing of a partitioned root: the days with a dt=YYYY-MM-DD folder (sorted;
    none if `root` is missing), and every other entry refused, with why: a name that is not
    canonical (dt=20261105, dt=2026-1-5, dt=2026-02-30, dt=..%2F..%2Fetc: never half-parsed
    into a day), a .parquet/.csv file beside the partitions or, on a local disk, a symlink
    leading out of `root`. Entries starting with _ or . are working files and other files
    (a README) are not data: both are ignored."""
    fs, path = _fresh_fs(root)
    if not fs.exists(path):
        return Listing([], [])
    days, refused = set(), []
    local = fsspec.utils.get_protocol(root) in ("file", "local")
    base = os.path.realpath(path) if local else ""
    for entry in fs.ls(path, detail=True):
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        url = f"{root.rstrip('/')}/{name}"
        if name.startswith(("_", ".")):
            continue
        folder = entry.get("type") == "directory" or entry.get("islink")  # links: checked below
        if not folder:  # data beside the partitions would never be read: say so
            if _is_data_file(name):
                refused.append(Refused(url, "a data file outside any dt=YYYY-MM-DD folder"))
            continue
        day = None
        if _CANONICAL.match(name):
            with suppress(ValueError):  # dt=2026-02-30
                day = date.fromisoformat(name[len(PARTITION_PREFIX) :])
        if day is None:
            refused.append(Refused(url, "not a dt=YYYY-MM-DD partition folder"))
            continue
        if local and not _inside(os.path.realpath(entry["name"]), base):
            target = os.path.realpath(entry["name"])
            refused.append(Refused(url, f"a symlink out of the root (to {target})"))
            continue
        days.add(day)
    return Listing(sorted(days), refused)


def _inside(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip(os.sep) + os.sep)


def list_partitions(root: str) -> list[date]:
    """The days with a canonical dt=YYYY-MM-DD folder under `root`, sorted (see
    scan_partitions for the entries it refuses: callers that must report them use it)."""
    return scan_partitions(root).days


def _is_data_file(name: str) -> bool:
    return not name.startswith(("_", ".")) and name.endswith(DATA_SUFFIXES)


def _data_names(root: str, day: date) -> list[str]:
    fs, path = _fresh_fs(partition_path(root, day))
    if not fs.exists(path):
        return []
    names = (entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(path, detail=False))
    return sorted(name for name in names if _is_data_file(name))


def partition_files(root: str, day: date) -> list[str]:
    """The partition's data files (.parquet/.csv) as URLs under `root`, sorted by name.
    Raises DataError for a local file that is a symlink out of `root`."""
    folder = partition_path(root, day)
    urls = [f"{folder}/{name}" for name in _data_names(root, day)]
    if urls and fsspec.utils.get_protocol(root) in ("file", "local"):
        base = os.path.realpath(url_to_fs(root)[1])
        for url in urls:
            target = os.path.realpath(url_to_fs(url)[1])
            if not _inside(target, base):
                raise DataError(f"file {url}: a symlink out of the root {root} (to {target})", url)
    return urls


def _stat(fs: fsspec.AbstractFileSystem, path: str) -> tuple[int, str]:
    """(size, change tag) from a listing, never from the bytes: the ETag of an object store,
    the modification time of a local file."""
    info = fs.info(path)
    tag = (
        info.get("ETag")
        or info.get("etag")
        or f"mtime={info.get('mtime') or info.get('LastModified')}"
    )
    return int(info["size"]), str(tag)


def file_stats(urls: list[str]) -> dict[str, dict[str, Any]]:
    """Per file name: size, change tag (see _stat) and content sha256 (ETag on object
    stores). Written into a manifest, it lets fingerprint_partition skip the content hash of
    files that did not change."""
    out = {}
    for url in urls:
        fs, path = url_to_fs(url)
        size, tag = _stat(fs, path)
        digest = tag if not tag.startswith("mtime=") else _content_digest(fs, path)
        out[path.rsplit("/", 1)[-1]] = {"size": size, "tag": tag, "sha256": digest}
    return out


def listing_key(urls: list[str]) -> str:
    """sha256 over each file's name, size and change tag: equal while no file was touched,
    computed from the listing alone (nothing read). Changes when a file is rewritten even
    with the same bytes, so it only ever says "look closer", never "changed"."""
    digest = hashlib.sha256()
    for url in urls:
        fs, path = url_to_fs(url)
        size, tag = _stat(fs, path)
        digest.update(f"{path.rsplit('/', 1)[-1]}\0{size}\0{tag}\n".encode())
    return digest.hexdigest()


def fingerprint_partition(root: str, day: date) -> str:
    """sha256 over each data file's name, size and content identity (the ETag on object
    stores, the sha256 of the bytes on a local disk): changes when any file's content changes.
    Cheap first: a local file whose size and modification time match the `files` recorded in
    the partition's manifest is not read again (ingest records them), so a night with
    nothing new reads no data to find that out."""
    urls = partition_files(root, day)
    known = (read_manifest(root, day) or {}).get("files") or {} if urls else {}
    digest = hashlib.sha256()
    for url in urls:
        fs, path = url_to_fs(url)
        name = path.rsplit("/", 1)[-1]
        size, tag = _stat(fs, path)
        if not tag.startswith("mtime="):
            content = tag
        elif known.get(name, {}).get("size") == size and known[name].get("tag") == tag:
            content = known[name]["sha256"]
        else:
            content = _content_digest(fs, path)
        digest.update(f"{name}\0{size}\0{content}\n".encode())
    return digest.hexdigest()


def _content_digest(fs: fsspec.AbstractFileSystem, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


ROW_GROUP_ROWS = 65_536  # a reader decodes a row group at a time: this bounds its memory


def write_partition(
    root: str, day: date, table: pa.Table, *, row_group_size: int = ROW_GROUP_ROWS
) -> str:
    """Replace the partition's data with `table` as one Parquet file; returns its URL.

    The file is written under a hidden temporary name, then moved over part-0.parquet, and
    any other old data files are removed.
    """
    folder = partition_path(root, day)
    fs, path = url_to_fs(folder)
    fs.makedirs(path, exist_ok=True)
    tmp = f"{path}/.tmp-{uuid.uuid4().hex}.parquet"
    try:
        with fs.open(tmp, "wb") as fh:
            pq.write_table(table, fh, row_group_size=row_group_size)
        for name in _data_names(root, day):
            if name != DATA_FILE:
                fs.rm(f"{path}/{name}")
        fs.mv(tmp, f"{path}/{DATA_FILE}")
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)
        fs.invalidate_cache()
    return f"{folder}/{DATA_FILE}"


def read_partition(
    root: str,
    day: date,
    columns: list[str] | None = None,
    *,
    column_types: dict[str, pa.DataType] | None = None,
) -> pa.Table:
    """All data files of a partition as one table. `column_types` applies to CSV files only.

    Raises FileNotFoundError if the partition has no data files.
    """
    urls = partition_files(root, day)
    if not urls:
        raise FileNotFoundError(f"no data files in partition {partition_path(root, day)}")
    return read_files(urls, columns, column_types=column_types)


def snapshot_files(url: str) -> list[str]:
    """The data files of a snapshot source: `url` itself if it is a file, else the data
    files directly inside the folder, sorted by name."""
    fs, path = _fresh_fs(url)
    if not fs.exists(path):
        return []
    if fs.isfile(path):
        return [url]
    names = (entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(path, detail=False))
    return [f"{url.rstrip('/')}/{name}" for name in sorted(names) if _is_data_file(name)]


class DataError(ValueError):
    """A file that cannot be read as data (empty, truncated, corrupt, not Parquet/CSV, or
    files whose schemas cannot be combined). Names the file (`url`: the file, or the files
    joined with ", " when they cannot be combined); retrying will not heal it."""

    def __init__(self, message: str, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


# Raised by pyarrow while decoding: data problems. Connection and timeout errors (also
# OSError subclasses) pass through untouched: those may heal on a retry.
_DECODE_ERRORS = (pa.ArrowException, OSError, EOFError)
_NETWORK_ERRORS = (ConnectionError, TimeoutError)


@contextmanager
def _decoding(url: str) -> Iterator[None]:
    try:
        yield
    except _NETWORK_ERRORS:
        raise
    except FileNotFoundError:
        raise
    except _DECODE_ERRORS as exc:
        raise DataError(f"file {url}: cannot be read as data: {exc}", url) from exc


def _read_csv(fh: Any, columns: list[str] | None, types: dict[str, pa.DataType]) -> pa.Table:
    convert = pacsv.ConvertOptions(
        column_types=types, include_columns=columns or [], strings_can_be_null=True
    )
    return pacsv.read_csv(fh, convert_options=convert)


def read_files(
    urls: list[str],
    columns: list[str] | None = None,
    *,
    column_types: dict[str, pa.DataType] | None = None,
) -> pa.Table:
    """Parquet and CSV files as one table. `column_types` applies to CSV files only, where
    the values allow it (a value that does not parse leaves the column as read, for
    validation to judge). Raises DataError naming a file that cannot be read."""
    tables = []
    for url in urls:
        fs, path = url_to_fs(url)
        with _decoding(url), fs.open(path, "rb") as fh:
            if not path.endswith(".csv"):
                tables.append(pq.read_table(fh, columns=columns))
                continue
            try:
                tables.append(_read_csv(fh, columns, column_types or {}))
            except pa.ArrowInvalid:  # a value that does not parse as its spec type
                if not column_types:
                    raise
                fh.seek(0)
                tables.append(_read_csv(fh, columns, {}))
    with _decoding(", ".join(urls)):
        return pa.concat_tables(tables, promote_options="default")


def iter_file_batches(
    url: str,
    batch_rows: int,
    columns: list[str] | None = None,
    check: Callable[[pa.Schema], None] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream one Parquet file as record batches of at most `batch_rows` rows; `check` sees
    the file's schema before anything is read."""
    if not url.endswith(".parquet"):
        raise ValueError(f"{url}: only Parquet partitions can be streamed")
    fs, path = url_to_fs(url)
    with fs.open(path, "rb") as fh:
        with _decoding(url):
            reader = pq.ParquetFile(fh)
        if check is not None:
            check(reader.schema_arrow)
        # One row group at a time: iterating the whole file lets the reader keep several
        # row groups alive (measured: peak Arrow memory grew with the file's size).
        for group in range(reader.num_row_groups):
            with _decoding(url):
                batches = list(
                    reader.iter_batches(batch_size=batch_rows, row_groups=[group], columns=columns)
                )
            yield from batches


def iter_batches(
    root: str, day: date, batch_rows: int, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Stream a partition's Parquet files, never loading the whole partition."""
    for url in partition_files(root, day):
        yield from iter_file_batches(url, batch_rows, columns)


def files_schema(urls: list[str]) -> pa.Schema:
    """The schema read_files gives the files as one table: a column holding only nulls in one
    file takes its type from another, a column missing from a file is null there. Reads
    Parquet footers only (a CSV file is read whole). Raises DataError as read_files does."""
    schemas = []
    for url in urls:
        if not url.endswith(".parquet"):
            schemas.append(read_files([url]).schema)
            continue
        fs, path = url_to_fs(url)
        with _decoding(url), fs.open(path, "rb") as fh:
            schemas.append(pq.ParquetFile(fh).schema_arrow)
    if len(schemas) == 1:
        return schemas[0]
    with _decoding(", ".join(urls)):
        return pa.unify_schemas(schemas, promote_options="default")


def iter_files(urls: list[str], batch_rows: int, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """The rows read_files(urls) gives, in the same order, as record batches of at most
    `batch_rows` rows conformed to `schema` (files_schema(urls)): Parquet streamed a row
    group at a time, a CSV file read whole."""
    for url in urls:
        if url.endswith(".parquet"):
            batches = iter_file_batches(url, batch_rows)
        else:
            batches = iter(read_files([url]).to_batches(max_chunksize=batch_rows))
        for batch in batches:
            if batch.schema.equals(schema):
                yield batch
                continue
            names = batch.schema.names
            arrays = [
                batch.column(f.name).cast(f.type)
                if f.name in names
                else pa.nulls(batch.num_rows, f.type)
                for f in schema
            ]
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def read_manifest(root: str, day: date) -> dict[str, Any] | None:
    """The partition's _manifest.json, or None if it has none."""
    fs, path = _fresh_fs(f"{partition_path(root, day)}/{MANIFEST}")
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as fh:
        return json.loads(fh.read())


def write_manifest(root: str, day: date, manifest: dict[str, Any]) -> None:
    """Write (replace) the partition's _manifest.json."""
    fs, path = url_to_fs(partition_path(root, day))
    fs.makedirs(path, exist_ok=True)
    body = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
    with fs.open(f"{path}/{MANIFEST}", "wb") as fh:
        fh.write(body)
    fs.invalidate_cache()


def table_hash(table: pa.Table) -> str:
    """sha256 of the table's Arrow IPC stream: same data and schema give the same hash,
    however the table is chunked."""
    table = table.combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches():
            writer.write_batch(batch)
    return hashlib.sha256(sink.getvalue()).hexdigest()
