"""The same storage and ingestion code paths against S3 (a moto server on loopback)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from batchpred import storage
from batchpred.config import Settings
from batchpred.demo import generate_day, write_demo_source
from batchpred.ingestion import ingest_partition, source_days

pytestmark = pytest.mark.s3


def on_s3(settings: Settings, bucket: str) -> Settings:
    demo = settings.demo.model_copy(update={"days": 2, "rows_per_day": 60})
    source = settings.source.model_copy(update={"url": f"s3://{bucket}/source"})
    lake = settings.lake.model_copy(update={"raw": f"s3://{bucket}/raw"})
    return settings.model_copy(update={"demo": demo, "source": source, "lake": lake})


def test_demo_source_and_ingest_on_s3(churn: Settings, s3_bucket: str) -> None:
    settings = on_s3(churn, s3_bucket)
    spec, demo = settings.dataset, settings.demo
    assert storage.list_partitions(settings.lake.raw) == []
    days = write_demo_source(spec, demo, settings.source.url)
    assert days == [demo.start_date, demo.start_date + timedelta(days=1)]
    assert write_demo_source(spec, demo, settings.source.url) == []
    assert source_days(settings) == days

    results = [ingest_partition(settings, day) for day in days]
    assert [r.status for r in results] == ["new", "new"]
    assert results[0].path == f"s3://{s3_bucket}/raw/dt={days[0].isoformat()}/part-0.parquet"
    assert storage.list_partitions(settings.lake.raw) == days
    assert storage.partition_files(settings.lake.raw, days[0]) == [results[0].path]
    manifest = storage.read_manifest(settings.lake.raw, days[0])
    assert manifest is not None and manifest["content_hash"] == results[0].content_hash
    assert ingest_partition(settings, days[0]).status == "unchanged"

    expected = generate_day(spec, demo, days[0])
    assert storage.read_partition(settings.lake.raw, days[0]).equals(expected)
    batches = list(storage.iter_batches(settings.lake.raw, days[0], 25, columns=[spec.entity_id]))
    assert [b.num_rows for b in batches] == [25, 25, 10]
    ids = [i for b in batches for i in b.column(0).to_pylist()]
    assert ids == expected.column(spec.entity_id).to_pylist()


def test_fingerprint_uses_etags(churn: Settings, s3_bucket: str) -> None:
    settings = on_s3(churn, s3_bucket)
    spec, demo = settings.dataset, settings.demo
    day = demo.start_date
    root = settings.lake.raw
    storage.write_partition(root, day, generate_day(spec, demo, day))
    fs, path = storage.url_to_fs(storage.partition_files(root, day)[0])
    assert fs.info(path).get("ETag")
    first = storage.fingerprint_partition(root, day)
    storage.write_manifest(root, day, {"rows": 60})
    assert storage.fingerprint_partition(root, day) == first
    other = demo.model_copy(update={"seed": 1})
    storage.write_partition(root, day, generate_day(spec, other, day))
    assert storage.fingerprint_partition(root, day) != first
    storage.write_partition(root, day, generate_day(spec, demo, day))
    assert storage.fingerprint_partition(root, day) == first
