"""Lake storage on the local filesystem: partitions, files, batches, manifests, hashes."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from batchpred import storage

DAY = date(2026, 10, 2)


def table(n: int, start: int = 0) -> pa.Table:
    return pa.table(
        {"k": pa.array(range(start, start + n), pa.int64()), "v": [i * 0.5 for i in range(n)]}
    )


def test_partition_paths_and_listing(tmp_path: Path) -> None:
    root = str(tmp_path / "lake")
    assert storage.list_partitions(root) == []
    assert storage.partition_files(root, DAY) == []
    assert storage.partition_path(root + "/", DAY) == f"{root}/dt=2026-10-02"
    storage.write_partition(root, DAY, table(3))
    storage.write_partition(root, date(2026, 9, 30), table(3))
    (tmp_path / "lake" / "not-a-partition").mkdir()
    (tmp_path / "lake" / "dt=garbage").mkdir()
    assert storage.list_partitions(root) == [date(2026, 9, 30), DAY]


def test_write_read_replace(tmp_path: Path) -> None:
    root = str(tmp_path)
    url = storage.write_partition(root, DAY, table(5))
    assert url == f"{root}/dt=2026-10-02/part-0.parquet"
    folder = tmp_path / "dt=2026-10-02"
    pq.write_table(table(2), folder / "part-1.parquet")
    storage.write_manifest(root, DAY, {"rows": 5})
    (folder / ".hidden.parquet").write_bytes(b"x")
    assert [Path(f).name for f in storage.partition_files(root, DAY)] == [
        "part-0.parquet",
        "part-1.parquet",
    ]
    assert storage.read_partition(root, DAY).num_rows == 7
    assert storage.read_partition(root, DAY, columns=["v"]).column_names == ["v"]
    storage.write_partition(root, DAY, table(4, start=10))
    assert storage.partition_files(root, DAY) == [url]
    assert storage.read_partition(root, DAY).equals(table(4, start=10))
    assert not list(folder.glob(".tmp-*"))
    assert storage.read_manifest(root, DAY) == {"rows": 5}


def test_read_missing_partition_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="dt=2026-10-02"):
        storage.read_partition(str(tmp_path), DAY)


def test_read_csv_with_types(tmp_path: Path) -> None:
    folder = tmp_path / "dt=2026-10-02"
    folder.mkdir()
    pacsv.write_csv(pa.table({"k": [1, 2], "s": ["a", None]}), folder / "part-0.csv")
    out = storage.read_partition(str(tmp_path), DAY, column_types={"k": pa.float64()})
    assert out.schema.field("k").type == pa.float64()
    assert out.column("s").to_pylist() == ["a", None]


@pytest.mark.parametrize("batch_rows", [1, 7, 64, 1000])
def test_iter_batches_spans_files_and_row_groups(tmp_path: Path, batch_rows: int) -> None:
    root = str(tmp_path)
    storage.write_partition(root, DAY, table(100), row_group_size=30)
    pq.write_table(
        table(50, start=100), tmp_path / "dt=2026-10-02" / "part-1.parquet", row_group_size=20
    )
    assert pq.ParquetFile(tmp_path / "dt=2026-10-02" / "part-0.parquet").num_row_groups == 4
    batches = list(storage.iter_batches(root, DAY, batch_rows))
    assert all(b.num_rows <= batch_rows for b in batches)
    keys = [k for b in batches for k in b.column("k").to_pylist()]
    assert keys == list(range(150))
    only_v = next(storage.iter_batches(root, DAY, batch_rows, columns=["v"]))
    assert only_v.schema.names == ["v"]


def test_manifest_roundtrip(tmp_path: Path) -> None:
    root = str(tmp_path)
    assert storage.read_manifest(root, DAY) is None
    manifest = {"partition": "2026-10-02", "rows": 3, "schema": {"k": "int64"}, "validation": None}
    storage.write_manifest(root, DAY, manifest)
    assert storage.read_manifest(root, DAY) == manifest
    assert storage.list_partitions(root) == [DAY]
    assert storage.partition_files(root, DAY) == []


def test_fingerprint_changes_only_with_data(tmp_path: Path) -> None:
    root = str(tmp_path)
    storage.write_partition(root, DAY, table(10))
    first = storage.fingerprint_partition(root, DAY)
    assert storage.fingerprint_partition(root, DAY) == first
    storage.write_manifest(root, DAY, {"rows": 10})
    assert storage.fingerprint_partition(root, DAY) == first
    path = tmp_path / "dt=2026-10-02" / "part-0.parquet"
    os.utime(path, (0, 0))
    assert storage.fingerprint_partition(root, DAY) == first
    storage.write_partition(root, DAY, table(10, start=1))
    assert storage.fingerprint_partition(root, DAY) != first
    storage.write_partition(root, DAY, table(10))
    assert storage.fingerprint_partition(root, DAY) == first
    pq.write_table(table(1), tmp_path / "dt=2026-10-02" / "part-1.parquet")
    assert storage.fingerprint_partition(root, DAY) != first


def test_table_hash(tmp_path: Path) -> None:
    t = table(10)
    chunked = pa.concat_tables([t.slice(0, 4), t.slice(4)])
    assert storage.table_hash(t) == storage.table_hash(chunked)
    assert storage.table_hash(t) != storage.table_hash(table(10, start=1))
    assert storage.table_hash(t) != storage.table_hash(
        t.cast(pa.schema([("k", pa.int32()), ("v", pa.float64())]))
    )
    storage.write_partition(str(tmp_path), DAY, t)
    assert storage.table_hash(storage.read_partition(str(tmp_path), DAY)) == storage.table_hash(t)


def test_folders_that_are_not_canonical_partitions_are_reported_never_half_parsed(tmp_path):
    root = tmp_path / "root"
    names = ("dt=2026-01-01", "dt=20260102", "dt=2026-1-3", "dt=2026-02-30", "2026-01-04")
    for name in (*names, "dt=2026-11-6", "dt=..%2F..%2Fetc"):
        (root / name).mkdir(parents=True)
    (root / "_tmp").mkdir()  # working folders are ignored
    (root / "README.md").write_text("not data")  # nor is a file that is not data
    pq.write_table(pa.table({"k": [1]}), root / "stray.parquet")  # data no one would read
    listing = storage.scan_partitions(str(root))
    assert listing.days == [date(2026, 1, 1)]
    refused = {entry.url.rsplit("/", 1)[-1]: entry.reason for entry in listing.refused}
    folders = ["2026-01-04", "dt=..%2F..%2Fetc", "dt=2026-02-30", "dt=2026-1-3", "dt=2026-11-6"]
    assert sorted(refused) == sorted([*folders, "dt=20260102", "stray.parquet"])
    assert all(refused[f] == "not a dt=YYYY-MM-DD partition folder" for f in folders)
    assert refused["stray.parquet"] == "a data file outside any dt=YYYY-MM-DD folder"
    assert all(
        str(e) == f"{e.url}: {e.reason}" and e.url.startswith(str(root)) for e in listing.refused
    )
    assert storage.list_partitions(str(root)) == [date(2026, 1, 1)]
    # a range keeps every refused entry: a name that is not a day cannot be placed in it
    assert (
        storage.scan_partitions(str(root)).between(date(2027, 1, 1), None).refused
        == listing.refused
    )


def test_symlinks_out_of_the_root_are_refused(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    table = pa.table({"k": [1, 2]})
    storage.write_partition(str(outside), date(2026, 1, 5), table)
    storage.write_partition(str(root), date(2026, 1, 1), table)
    (root / "dt=2026-01-05").symlink_to(outside / "dt=2026-01-05")
    (root / "dt=2026-01-02").symlink_to(root / "dt=2026-01-01")  # inside the root: fine
    listing = storage.scan_partitions(str(root))
    assert listing.days == [date(2026, 1, 1), date(2026, 1, 2)]
    (entry,) = listing.refused
    assert entry.url.endswith("dt=2026-01-05") and entry.reason.startswith(
        "a symlink out of the root"
    )
    # a data file linked from elsewhere is refused too
    (root / "dt=2026-01-01" / "extra.parquet").symlink_to(
        outside / "dt=2026-01-05" / "part-0.parquet"
    )
    with pytest.raises(storage.DataError, match=r"extra\.parquet: a symlink out of the root"):
        storage.partition_files(str(root), date(2026, 1, 1))


@pytest.mark.parametrize("damage", ["empty", "truncated", "not-parquet", "corrupt-page"])
def test_unreadable_files_raise_a_data_error_naming_the_file(tmp_path, damage):
    day = date(2026, 1, 1)
    url = storage.write_partition(str(tmp_path), day, pa.table({"k": list(range(5000))}))
    good = Path(url).read_bytes()
    bad = {
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "not-parquet": b"id,score\n1,2\n" * 20,
        "corrupt-page": good[:100] + b"\0" * 200 + good[300:],
    }[damage]
    Path(url).write_bytes(bad)
    with pytest.raises(storage.DataError, match=rf"file {url}: cannot be read as data"):
        storage.read_partition(str(tmp_path), day)
    with pytest.raises(storage.DataError, match=rf"file {url}"):
        list(storage.iter_file_batches(url, 1000))
