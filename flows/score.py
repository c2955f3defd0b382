"""Flow `score`: score partitions in parallel with one pinned model version, exactly once."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import date

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Failed

from batchpred import config, outcomes
from batchpred.scoring import PartitionResult
from tasks import reporting, scoring


class PartitionsFailed(Exception):
    """Some partitions could not be scored; the others landed."""


def _run_name() -> str:
    p = flow_run.parameters
    if p.get("day"):
        return f"score-{p['day']}"
    return (
        f"score-{p.get('start') or 'first'}..{p.get('end') or 'last'}-{p.get('model', 'champion')}"
    )


@flow(name="score", flow_run_name=_run_name)
def score(
    day: date | None = None,
    start: date | None = None,
    end: date | None = None,
    model: str = "champion",
    force: bool = False,
    config_files: list[str] | None = None,
) -> list[PartitionResult]:
    """Score one day, or every partition in [start, end], with `model` (an alias or a version
    id) resolved once for the whole run. Partitions already in the ledger with the same input
    and model are skipped unless `force`. No partition at all for the day or range: the run
    fails with one line naming the days (outcomes.NothingToScore)."""
    settings = config.load_settings(config_files)
    if day is not None:
        start = end = day
    days = scoring.plan_partitions(settings, start, end)
    if not days:  # a known end, not a crash: one line, no traceback (exit 3 from main)
        nothing = outcomes.nothing_to_score(settings.scoring_input, start, end)
        get_run_logger().error("%s", nothing)
        return Failed(message=str(nothing), data=nothing)
    version = scoring.resolve_model(settings, model)
    get_run_logger().info("scoring %d partition(s) with model %s", len(days), version)
    results, failures = [], {}
    with scoring.partition_runner(settings) as runner:
        futures = [
            runner.submit(
                scoring.score_partition,
                {"settings": settings, "version": version, "day": d, "force": force},
            )
            for d in days
        ]
        for d, future in zip(days, futures, strict=True):
            future.wait()
            if future.state.is_completed():
                results.append(future.result())
            else:
                failures[str(d)] = str(future.state.result(raise_on_failure=False))
    reporting.publish_partitions(results, failures)
    if failures:
        raise PartitionsFailed("\n".join(f"{d}: {e}" for d, e in failures.items()))
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.score", description=__doc__)
    parser.add_argument("--day", type=date.fromisoformat)
    parser.add_argument("--start", type=date.fromisoformat)
    parser.add_argument("--end", type=date.fromisoformat)
    parser.add_argument("--model", default="champion", help="alias or version id")
    parser.add_argument("--force", action="store_true", help="re-score partitions already done")
    parser.add_argument("--config", action="append", help="YAML file to layer (repeatable)")
    args = parser.parse_args(argv)
    try:
        results = score(
            day=args.day,
            start=args.start,
            end=args.end,
            model=args.model,
            force=args.force,
            config_files=args.config,
        )
    except outcomes.NothingToScore as exc:
        print(exc, file=sys.stderr)
        sys.exit(outcomes.EXIT_NOTHING_TO_SCORE)
    for r in results:
        print(
            f"{r.partition_date}  {r.status:8}  {r.rows_scored:>9,} rows"
            f"  {r.rows_per_second:>9,.0f} rows/s"
        )


if __name__ == "__main__":
    main()
