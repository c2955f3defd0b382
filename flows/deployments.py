"""The deployments, declared in the repo and served by `make serve` (`python -m flows.deployments`).

- nightly/nightly   cron 02:00 UTC: ingest -> validate -> train -> evaluate -> score the day
- score/score       on demand: `--param day=YYYY-MM-DD` (model: the champion at run start)
- score/backfill    on demand: `--param start=... --param end=... --param model=<version>`;
                    one model version is pinned for the whole range
- train/train       on demand retraining through `dvc repro`
- ingest/ingest     on demand: pull and validate source days
"""

from __future__ import annotations

from prefect import serve

from flows.ingest import ingest
from flows.nightly import nightly
from flows.score import score
from flows.train import train

NIGHTLY_CRON = "0 2 * * *"


def deployments() -> list:  # type: ignore[type-arg]
    return [
        nightly.to_deployment(name="nightly", cron=NIGHTLY_CRON, concurrency_limit=1),
        score.to_deployment(name="score"),
        score.to_deployment(
            name="backfill",
            description="Score every partition in [start, end] with one pinned model version.",
        ),
        train.to_deployment(name="train", concurrency_limit=1),
        ingest.to_deployment(name="ingest"),
    ]


def main() -> None:
    serve(*deployments())


if __name__ == "__main__":
    main()
