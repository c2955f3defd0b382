"""What the end of a run means: its state names, the CLI's exit codes, and the one-line
reasons of the known ways a run ends without doing its job.

A cron job or an operator reads the exit code; the Prefect UI shows the state. Both say the
same thing:

    exit  state                      meaning
    0     Completed                  done (clean, or nothing new: every step a no-op)
    1     Failed                     an error: invalid partition, training or scoring failed
    2     (argparse)                 bad command-line arguments
    3     Failed                     nothing to score: no partition for the day(s) asked
    4     Drifted (type COMPLETED)   nightly: scored, but drift above monitoring's thresholds
"""

from __future__ import annotations

from datetime import date, timedelta

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOTHING_TO_SCORE = 3
EXIT_DRIFTED = 4
DRIFTED = "Drifted"  # the name of the nightly's COMPLETED state when the day drifted


class NothingToScore(LookupError):
    """A score run found no partition for the day or range it was asked for."""


class TrainingFailed(RuntimeError):
    """The nightly's training failed; the day was scored (or not) with the current champion."""


# Ends a run foresees: its flow ends Failed with the message, without a traceback.
KNOWN_FAILURES: tuple[type[Exception], ...] = (NothingToScore, TrainingFailed)


def days_text(days: list[date]) -> str:
    """Days as runs of consecutive dates: `2026-10-03, 2026-10-05..2026-10-07`."""
    runs: list[list[date]] = []
    for d in sorted(days):
        if runs and d - runs[-1][-1] == timedelta(days=1):
            runs[-1].append(d)
        else:
            runs.append([d])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}..{r[-1]}" for r in runs)


def missing_days(available: list[date], start: date, end: date) -> list[date]:
    """The days in [start, end] that have no partition."""
    have = set(available)
    span = (end - start).days + 1
    return [d for d in (start + timedelta(days=i) for i in range(max(span, 0))) if d not in have]


def nothing_to_score(root: str, start: date | None, end: date | None) -> NothingToScore:
    """The one-line error of a score run over [start, end] that found no partition."""
    if start is not None and end is not None and start > end:
        what = f"empty range {start}..{end} (start is after end)"
    elif start is not None and start == end:
        what = f"no partition for {start} under {root}"
    elif start is not None and end is not None:
        what = f"no partition in {start}..{end} under {root} ({(end - start).days + 1} days)"
    elif start is not None:
        what = f"no partition from {start} on under {root}"
    elif end is not None:
        what = f"no partition up to {end} under {root}"
    else:
        what = f"no partition under {root}"
    return NothingToScore(f"nothing to score: {what}")


def one_line(error: BaseException | str) -> str:
    """An error as one line: its first line, and when that only introduces what follows
    (`dvc repro failed (1):`), the last non-empty line too (where tools put the cause)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    first = lines[0]
    if first.endswith(":") and len(lines) > 1:
        first = f"{first} {lines[-1]}"
    if isinstance(error, BaseException) and not isinstance(error, NothingToScore | TrainingFailed):
        first = f"{type(error).__name__}: {first}"
    return first


def training_failed(
    error: BaseException,
    day: date,
    scored_with: str | None,
    rows: int,
    scoring_error: BaseException | None,
) -> TrainingFailed:
    """The nightly's report when training failed: why, and what became of the day."""
    if scoring_error is not None:
        fate = f"{day} was not scored either: {one_line(scoring_error)}"
    elif scored_with is not None:
        fate = f"{day} was scored with the current champion {scored_with} ({rows:,} rows)"
    else:
        fate = f"{day} was not scored"
    return TrainingFailed(f"training failed: {one_line(error)}; {fate}\n{error}")
