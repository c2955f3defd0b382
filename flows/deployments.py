"""The deployments, served in-process by `make serve` (`python -m flows.deployments`).

- nightly/nightly   on the cron of config's `schedule` (default 02:00 UTC): ingest -> validate
                    -> train -> evaluate -> score the day
- score/score       on demand: `--param day=YYYY-MM-DD` (model: the champion at run start)
- score/backfill    on demand: `--param start=... --param end=... --param model=<version>`;
                    one model version is pinned for the whole range
- train/train       on demand retraining through `dvc repro`
- ingest/ingest     on demand: pull and validate source days

`prefect.yaml` declares the same deployments on the `batchpred` process work pool, for
`make worker` (`prefect deploy --all`, then `prefect worker start --pool batchpred`); its
build step `schedule_step` reads the same schedule from config, and
tests/flows/test_deployments.py keeps the two declarations equal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import serve
from prefect.schedules import Cron

from batchpred import config
from flows.ingest import ingest
from flows.nightly import nightly
from flows.score import score
from flows.train import train


def deployments(config_files: list[str] | None = None) -> list[Any]:
    # RunnerDeployments; to_deployment's annotation also allows a coroutine (async callers)
    schedule = config.load_settings(config_files).schedule
    return [
        nightly.to_deployment(
            name="nightly",
            schedules=[Cron(schedule.cron, timezone=schedule.timezone)],
            concurrency_limit=1,
        ),
        score.to_deployment(name="score"),
        score.to_deployment(
            name="backfill",
            description="Score every partition in [start, end] with one pinned model version.",
        ),
        train.to_deployment(name="train", concurrency_limit=1),
        ingest.to_deployment(name="ingest"),
    ]


def schedule_step(config_files: list[str] | None = None) -> dict[str, Any]:
    """prefect.yaml's build step: the nightly's schedule from config (the layers of
    $BATCHPRED_CONFIG, else the defaults), and the workspace flow runs start in: the checkout
    `prefect deploy` runs in (dvc.yaml, configs/, data/, flows/, tasks/)."""
    schedule = config.load_settings(config_files).schedule
    return {
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "workspace": str(Path.cwd().resolve()),
    }


def main() -> None:
    serve(*deployments())


if __name__ == "__main__":
    main()
