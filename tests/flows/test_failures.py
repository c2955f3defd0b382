"""Retry only what can heal: a corrupt file fails its partition at once, naming the file, and
the partition task is not retried; dropped connections are retried."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from prefect.artifacts import Artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

from batchpred import config, db, demo, registry, scoring, storage, verdicts
from batchpred.schema import ContractMismatch
from flows.ingest import InvalidPartitions, ingest
from flows.score import PartitionsFailed, score
from tasks import resources
from tests.unit.test_scoring import make_lake, train_small

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("exc", "heals"),
    [
        (ConnectionResetError("peer reset"), True),
        (TimeoutError("read timed out"), True),
        (sa.exc.OperationalError("select 1", {}, Exception("server closed the connection")), True),
        (storage.DataError("file x.parquet: cannot be read as data"), False),
        (scoring.PartitionRejected("column 'a' broke rule max=1"), False),
        (ContractMismatch("feature 'a' is not in the spec any more"), False),
        (registry.ModelIntegrityError("sha256 differs"), False),
        (ValueError("anything else"), False),
    ],
)
def test_only_connection_type_errors_are_retried(exc: BaseException, heals: bool) -> None:
    assert resources.transient(exc) is heals


def test_corrupt_file_fails_its_partition_at_once_naming_the_file(workspace) -> None:
    files = workspace("churn", demo={"start_date": "2031-03-03"})  # task names unique here
    settings = config.load_settings(files)
    days = make_lake(settings, settings.scoring_input, days=2, rows=100)
    model_dir, _ = train_small(settings, Path("work"))
    engine = db.create_engine(config.database_url())
    db.migrate(engine)
    version = registry.register_model(engine, model_dir, settings.training.registry)
    (bad_file,) = storage.partition_files(settings.scoring_input, days[1])
    Path(bad_file).write_bytes(Path(bad_file).read_bytes()[:200])  # truncated upload

    with pytest.raises(PartitionsFailed) as failed:
        score(start=days[0], end=days[1], model=version, config_files=files)

    message = str(failed.value)
    assert f"{days[1]}:" in message and f"file {bad_file}: cannot be read as data" in message
    assert str(days[0]) not in message  # the good partition landed
    with engine.connect() as conn:
        landed = conn.execute(sa.text("select distinct partition_date from predictions")).all()
    assert [str(r[0]) for r in landed] == [str(days[0])]
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=[f"score-{days[1]}"]))
        )
    assert len(runs) == 1 and runs[0].run_count == 1  # failed at once: no retry
    assert runs[0].state is not None and runs[0].state.is_failed()


def test_ingest_fails_only_the_bad_days_and_names_every_refused_entry(workspace) -> None:
    """A 0-row day and a corrupt file fail their own days, one line each naming partition,
    file and rule, with their verdicts recorded; every other day is landed and validated;
    refused folders are named; the run is never green."""
    files = workspace("churn", demo={"start_date": "2031-04-04", "days": 5})
    settings = config.load_settings(files)
    src = settings.source.url
    days = demo.write_demo_source(settings.dataset, settings.demo, src)
    empty_day, corrupt_day = days[1], days[3]
    (empty_file,) = storage.partition_files(src, empty_day)
    pq.write_table(pq.read_table(empty_file).slice(0, 0), empty_file)
    (corrupt_file,) = storage.partition_files(src, corrupt_day)
    Path(corrupt_file).write_bytes(Path(corrupt_file).read_bytes()[:200])  # truncated upload
    for name in ("dt=2031-4-9", "dt=..%2F..%2Fetc"):
        Path(src, name).mkdir()

    with pytest.raises(InvalidPartitions) as failed:
        ingest(config_files=files)

    lines = str(failed.value).splitlines()
    assert f"partition dt={empty_day} file {empty_file}: 0 rows [rule: no rows]" in lines
    (corrupt,) = [line for line in lines if line.startswith(f"partition dt={corrupt_day} ")]
    assert corrupt.startswith(f"partition dt={corrupt_day} file {corrupt_file}: cannot be read")
    assert corrupt.endswith("[rule: readable]")
    assert f"{src}/dt=2031-4-9: refused, not a dt=YYYY-MM-DD partition folder" in lines
    assert f"{src}/dt=..%2F..%2Fetc: refused, not a dt=YYYY-MM-DD partition folder" in lines
    good = [d for d in days if d not in (empty_day, corrupt_day)]
    engine = db.create_engine(config.database_url())
    statuses = verdicts.partition_statuses(
        engine, settings.dataset, settings.validation, settings.lake.raw, days
    )
    assert {d: v.status for d, v in statuses.items()} == {
        **dict.fromkeys(good, "valid"),
        empty_day: "invalid",
        corrupt_day: "invalid",
    }
    assert "table failed no rows: 0 rows" in statuses[empty_day].message
    assert "table failed readable: cannot be read" in statuses[corrupt_day].message

    summary = ingest(config_files=files, fail_on_invalid=False)  # the nightly's call
    assert summary.passed == good and sorted(summary.failed_days()) == [empty_day, corrupt_day]
    refused = {e.url.rsplit("/", 1)[-1]: e.reason for e in summary.refused}
    assert refused == dict.fromkeys(
        ["dt=2031-4-9", "dt=..%2F..%2Fetc"], "not a dt=YYYY-MM-DD partition folder"
    )


def test_score_names_the_folders_it_refuses(workspace) -> None:
    """A non-canonical dt=2031-5-6 folder in the scoring input is never scored in silence:
    the run's message and the partitions artifact name it, with why."""
    files = workspace("churn", demo={"start_date": "2031-05-05"})
    settings = config.load_settings(files)
    Path(settings.scoring_input, "dt=2031-5-6").mkdir(parents=True)

    state = score(day=date(2031, 5, 6), config_files=files, return_state=True)

    assert state.is_failed()
    folder = f"{settings.scoring_input}/dt=2031-5-6"
    assert f"refused {folder}: not a dt=YYYY-MM-DD partition folder" in (state.message or "")
    artifact = Artifact.get("scoring-partitions-churn")
    assert artifact is not None and "1 entries refused" in (artifact.description or "")
    rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    assert {
        "partition": folder,
        "status": "refused",
        "error": "not a dt=YYYY-MM-DD partition folder",
    } in rows
