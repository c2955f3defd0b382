"""Retry only what can heal: a corrupt file fails its partition at once, naming the file, and
the partition task is not retried; dropped connections are retried."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

from batchpred import config, db, registry, scoring, storage
from batchpred.schema import ContractMismatch
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
