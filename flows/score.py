"""Flow `score`: score partitions in parallel with one pinned model version, exactly once."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from prefect import flow, get_run_logger
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.states import Failed

from batchpred import config, outcomes, preflight
from batchpred.config import Day
from batchpred.scoring import PartitionResult
from tasks import reporting, resources, scoring


class PartitionsFailed(outcomes.RunFailed):
    """Some partitions could not be scored; the others landed."""


def _run_name() -> str:
    p = flow_run.parameters
    dataset = reporting.dataset_of(p.get("config_files"))
    if p.get("day"):
        return f"score-{dataset}-{p['day']}"
    span = f"{p.get('start') or 'first'}..{p.get('end') or 'last'}"
    return f"score-{dataset}-{span}-{p.get('model', 'champion')}"


@flow(name="score", flow_run_name=_run_name)
def score(
    day: Day | None = None,
    start: Day | None = None,
    end: Day | None = None,
    model: str = "champion",
    force: bool = False,
    config_files: list[str] | None = None,
) -> list[PartitionResult]:
    """Score one day, or every partition in [start, end], with `model` (an alias or a version
    id) resolved once for the whole run. Partitions already in the ledger with the same input
    and model are skipped unless `force`. No partition at all for the day or range: the run
    fails with one line naming the days (outcomes.NothingToScore). Entries of the input
    refused as partitions (dt=2026-11-6, a symlink out of the root) are never scored: each
    is named in a WARNING and in the partitions artifact (status "refused", with why)."""
    settings = config.load_settings(config_files)
    if day is not None:
        start = end = day
    with reporting.flow_body(settings.dataset.name):
        return _score(settings, day, start, end, model, force)


def _score(
    settings: config.Settings,
    day: date | None,
    start: date | None,
    end: date | None,
    model: str,
    force: bool,
) -> list[PartitionResult]:
    """The score flow's body (its task runs without the host and process tags)."""
    listing = scoring.plan_partitions(settings, start, end)
    days, refused = listing.days, {entry.url: entry.reason for entry in listing.refused}
    if not days:  # a known end, not a crash: one line, no traceback (exit 3 from main)
        nothing = outcomes.nothing_to_score(settings.scoring_input, start, end)
        said = str(nothing) + "".join(f"; refused {u}: {why}" for u, why in refused.items())
        get_run_logger().error("%s", said)
        reporting.notify_failed(settings, "score", day, said)
        reporting.publish_partitions(settings.dataset.name, [], {}, refused)
        # the state ends the run: a caller gets its data, or its error raised (Prefect's types
        # cannot say that a flow may return a state)
        return Failed(message=said, data=nothing)  # type: ignore[return-value]
    try:  # an unknown model is one line listing the dataset's versions, not a traceback
        known = preflight.check_model(settings, model, resources.engine())
    except outcomes.SetupError as exc:
        get_run_logger().error("%s", exc)
        reporting.notify_failed(settings, "score", day, exc)
        # the state ends the run: a caller gets its data, or its error raised (Prefect's types
        # cannot say that a flow may return a state)
        return Failed(message=str(exc), data=exc)  # type: ignore[return-value]
    version = scoring.resolve_model(settings, known)
    get_run_logger().info("scoring %d partition(s) with model %s", len(days), version)
    done: dict[date, PartitionResult] = {}
    failures: dict[str, str] = {}
    with (
        reporting.Progress("score", settings.dataset.name, len(days)) as progress,
        scoring.partition_runner(settings) as runner,
    ):
        futures = {
            runner.submit(
                scoring.score_partition,
                {"settings": settings, "version": version, "day": d, "force": force},
            ): d
            # newest first: each older day then finds its entities' newer rows already in
            # predictions_latest, and its refresh reads instead of rewriting them
            for d in sorted(days, reverse=True)
        }
        for future in as_completed(list(futures)):  # progress as each partition finishes
            future.wait()  # its final state, not the API's view of it (which may lag)
            d = futures[future]
            if future.state.is_completed():
                result = done[d] = future.result()
                progress.step(result.status, d)
            else:
                failures[str(d)] = str(future.state.result(raise_on_failure=False))
                progress.step("failed", d)
        results = [done[d] for d in days if d in done]
        rows = sum(r.rows_scored for r in results if r.status == "scored")
        progress.finish(f"{progress.counts_text()}; {rows:,} rows scored with model {version}")
    reporting.publish_partitions(settings.dataset.name, results, failures, refused)
    if failures:
        failed = PartitionsFailed("\n".join(f"{d}: {e}" for d, e in sorted(failures.items())))
        reporting.notify_failed(settings, "score", day, failed)
        # known: the run ends Failed with its lines, no traceback in the UI or the worker log
        get_run_logger().error("%s", failed)
        return Failed(message=outcomes.one_line(failed), data=failed)  # type: ignore[return-value]
    return results


def main(argv: Sequence[str] | None = None, prog: str = "python -m flows.score") -> None:
    parser = outcomes.flow_parser(prog, __doc__)
    parser.add_argument("--day", type=date.fromisoformat, help="score this day, YYYY-MM-DD")
    parser.add_argument(
        "--start", type=date.fromisoformat, help="first day of a range (with --end: a backfill)"
    )
    parser.add_argument("--end", type=date.fromisoformat, help="last day of a range")
    parser.add_argument(
        "--model",
        default="champion",
        help="version id, a unique prefix (4+ digits) or an alias (default: champion, resolved "
        "once at the start)",
    )
    parser.add_argument(
        "--force", action="store_true", help="re-score partitions already in the ledger"
    )
    args = parser.parse_args(argv)
    outcomes.check_range(parser, args)
    with (
        outcomes.entry_point(prog.removeprefix("python -m flows."), args.debug),
        reporting.flow_entry(),
    ):
        preflight.check(args.config)
        results = score(
            day=args.day,
            start=args.start,
            end=args.end,
            model=args.model,
            force=args.force,
            config_files=args.config,
        )
    for r in results:
        by = f"  already scored by run {r.scored_by}" if r.scored_by else ""
        print(
            f"{r.partition_date}  {r.status:8}  {r.rows_scored:>9,} rows"
            f"  {r.rows_per_second:>9,.0f} rows/s{by}"
        )


if __name__ == "__main__":
    main()
    outcomes.end_process()
