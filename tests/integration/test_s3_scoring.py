"""Scoring a partition read from S3 (a moto server on loopback) into SQLite."""

from __future__ import annotations

import hashlib
from datetime import date

import pytest
import sqlalchemy as sa

from batchpred import demo, sinks, storage  # noqa: E402
from batchpred.config import Settings  # noqa: E402
from batchpred.registry import LoadedModel  # noqa: E402
from batchpred.scoring import score_partition  # noqa: E402
from tests.unit import test_scoring  # noqa: E402
from tests.unit.test_scoring import expected_scores, stored  # noqa: E402

churn_model = test_scoring.churn_model  # the module-scoped trained model fixture

pytestmark = pytest.mark.s3


def etag_fingerprint(root: str, day: date) -> str:
    """What the ledger should hold for an S3 partition: names, sizes and ETags only."""
    digest = hashlib.sha256()
    for url in storage.partition_files(root, day):
        fs, path = storage.url_to_fs(url)
        info = fs.info(path)
        digest.update(f"{path.rsplit('/', 1)[-1]}\0{info['size']}\0{info['ETag']}\n".encode())
    return digest.hexdigest()


def test_score_partition_from_s3(
    engine: sa.Engine, churn_model: tuple[Settings, LoadedModel], s3_bucket: str
) -> None:
    settings, model = churn_model
    spec = settings.dataset
    root = f"s3://{s3_bucket}/raw"
    cfg = settings.demo.model_copy(update={"days": 2, "rows_per_day": 150, "seed": 99})
    day = demo.write_demo_source(spec, cfg, root)[0]
    scoring = settings.scoring.model_copy(update={"batch_rows": 64})
    args = (engine, spec, settings.validation, scoring, model, root, day)

    result = score_partition(*args, "r1")
    assert (result.status, result.rows_in, result.rows_scored) == ("scored", 150, 150)
    table = storage.read_partition(root, day)
    expected = expected_scores(model, table, settings)
    rows = stored(engine, day, model.version)
    assert rows.keys() == expected.keys()
    assert [rows[i]["score"] for i in expected] == pytest.approx(list(expected.values()), abs=1e-6)
    first = sinks.ledger_row(engine, day, model.version)["input_fingerprint"]
    assert first == etag_fingerprint(root, day)
    assert score_partition(*args, "r2").status == "skipped"

    other = cfg.model_copy(update={"rows_per_day": 120, "seed": 5})
    storage.write_partition(root, day, demo.generate_day(spec, other, day))
    result = score_partition(*args, "r3")
    assert (result.status, result.rows_scored) == ("scored", 120)
    second = sinks.ledger_row(engine, day, model.version)["input_fingerprint"]
    assert second != first and second == etag_fingerprint(root, day)
    assert len(stored(engine, day, model.version)) == 120
