"""What the end of a run means: its state names, the CLI's exit codes, and the one-line
reasons of the known ways a run ends without doing its job (or cannot start).

A cron job or an operator reads the exit code; the Prefect UI shows the state. Both say the
same thing:

    exit  state                      meaning
    0     Completed                  done (clean, or nothing new: every step a no-op)
    1     Failed                     an error: invalid partition, training or scoring failed;
          (no run)                   or the run could not start (config, database, model, source)
    2     (argparse)                 bad command-line arguments
    3     Failed                     nothing to score: no partition for the day(s) asked
    4     Drifted (type COMPLETED)   nightly: scored, but drift above monitoring's thresholds
    5     Blocked (type FAILED)      nightly: the gate was blocked by drift
                                     monitoring.drift_block_nights nights running: the
                                     champion is frozen (the day was scored)

Every entry point (`batchpred`, `python -m flows.X`) runs inside `entry_point`: a known
failure is one line on stderr, `prog: error: ...`, never a traceback (`--debug` or
$BATCHPRED_DEBUG=1 shows it). Before a flow starts, `preflight.check` checks what an operator
can get wrong without a flow run being needed to find out: the config files, the database URL
and that the database answers, the model asked for, the source.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import date, timedelta
from pathlib import Path

import psutil
import sqlalchemy as sa

from batchpred import (
    config,
    preflight,
    registry,
    reports,
    rules,
    schema,
    scoring,
    storage,
    training,
    verdicts,
)
from batchpred.config import DEBUG_ENV, SetupError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOTHING_TO_SCORE = 3
EXIT_DRIFTED = 4
EXIT_BLOCKED = 5
DRIFTED = "Drifted"  # the name of the nightly's COMPLETED state when the day drifted
BLOCKED = "Blocked"  # the name of the nightly's FAILED state when drift froze the champion


class NothingToScore(LookupError):
    """A score run found no partition for the day or range it was asked for."""


class TrainingFailed(RuntimeError):
    """The nightly's training failed; the day was scored (or not) with the current champion."""


class RunFailed(Exception):
    """A known way a run fails (partitions invalid, partitions that could not be scored): the
    message, written for the operator, names what and why; a traceback adds nothing."""


class GateBlocked(RunFailed):
    """The nightly gate was blocked by drift monitoring.drift_block_nights nights running:
    the champion is frozen until a person acts (the day itself was scored)."""


# Ends a run foresees: its flow ends Failed with the message, without a traceback.
KNOWN_FAILURES: tuple[type[Exception], ...] = (
    NothingToScore,
    TrainingFailed,
    RunFailed,
    SetupError,
)


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
    """An error as one line: its first line, and when that only introduces what follows, the
    first item of the list that follows (a validation failure's first rule broken, `- column
    'x' failed ...`), else the last non-empty line (`dvc repro failed (1):` and the cause that
    tools print last)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    first = lines[0]
    if first.endswith(":") and len(lines) > 1:
        items = [line.removeprefix("- ") for line in lines[1:] if line.startswith("- ")]
        first = f"{first} {items[0] if items else lines[-1]}"
    if isinstance(error, BaseException) and not isinstance(error, KNOWN_FAILURES):
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


# --- errors an operator can act on -------------------------------------------------------------


def debug_wanted(flag: bool = False) -> bool:
    """--debug, or $BATCHPRED_DEBUG set to anything but 0/false/no."""
    env = os.environ.get(DEBUG_ENV, "").strip().lower()
    return flag or env not in ("", "0", "false", "no")


def explain(exc: BaseException) -> tuple[int, str] | None:
    """A known failure as (exit code, message for stderr); None for anything else (a bug:
    its traceback is shown)."""
    if isinstance(exc, NothingToScore):
        return EXIT_NOTHING_TO_SCORE, str(exc)
    if isinstance(exc, GateBlocked):
        return EXIT_BLOCKED, str(exc)
    if isinstance(exc, TrainingFailed):
        return EXIT_FAILED, str(exc).splitlines()[0]
    said = (SetupError, RunFailed, verdicts.ValidationError, storage.DataError)
    if isinstance(exc, said + (scoring.PartitionRejected, training.TrainingDataError)):
        return EXIT_FAILED, str(exc)
    told = (
        registry.UnknownModelError,
        registry.ModelIntegrityError,
        registry.LifecycleError,
        schema.ContractMismatch,
        rules.SchemaMismatch,
        reports.NotFound,
    )
    if isinstance(exc, told):
        return EXIT_FAILED, one_line(str(exc))
    if isinstance(exc, sa.exc.NoSuchModuleError | sa.exc.ArgumentError):
        url = config.database_url()
        try:
            preflight.check_database_url(url)
        except SetupError as bad:
            return EXIT_FAILED, str(bad)
        return None
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError) or (
        isinstance(exc, sa.exc.ProgrammingError) and "invalid connection option" in str(exc)
    ):  # the database did not answer, or the URL's query holds an option libpq refuses
        url = config.database_url()
        try:
            preflight.check_database_url(url)  # a URL that cannot be right says so first
        except SetupError as bad:
            return EXIT_FAILED, str(bad)
        return EXIT_FAILED, preflight.database_line(url, exc)
    if isinstance(exc, FileNotFoundError):
        return EXIT_FAILED, f"no such file or folder: {exc.filename or one_line(str(exc))}"
    return None


# --- entry points ------------------------------------------------------------------------------


class _QuietKnown(logging.Formatter):
    """Wraps a console handler's formatter: a record carrying a known failure is printed
    without its traceback (the line itself says what happened), whichever logger it came
    from; Prefect's engine loggers drop it for every handler (_KnownWithoutTraceback)."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not _is_known(exc):
            return self.inner.format(record)
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text = saved


def _explained(exc: BaseException) -> tuple[int, str] | None:
    try:
        return explain(exc)
    except Exception:  # noqa: BLE001 - explaining must never hide the error itself
        return None


def _is_known(exc: BaseException) -> bool:
    return _explained(exc) is not None


class _KnownWithoutTraceback(logging.Filter):
    """On the loggers of Prefect's engine: a record carrying a known failure loses its
    traceback (console and UI alike), and Prefect's "exited with unexpected exception" about
    one is dropped: the run already logged its one line, and ends Failed with it."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not _is_known(exc):
            return True
        if "unexpected exception" in record.getMessage():
            return False
        record.exc_info, record.exc_text = None, None
        return True


ENGINE_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "prefect.engine")


def quiet_known_failures_in_run_logs() -> None:
    """Install _KnownWithoutTraceback on Prefect's engine loggers (idempotent; not under
    $BATCHPRED_DEBUG=1). The flows package does it on import, so a run a worker started, in a
    process that is Prefect's and not our entry point's, shows known failures as one line."""
    if debug_wanted(False):
        return
    for name in ENGINE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _KnownWithoutTraceback) for f in logger.filters):
            logger.addFilter(_KnownWithoutTraceback())


@contextmanager
def quiet_known_tracebacks() -> Iterator[None]:
    """Console handlers (on the root and `prefect` loggers) print known failures without a
    traceback while inside; restored after."""
    wrapped = []
    for name in ("", "prefect"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler.formatter, _QuietKnown
            ):
                wrapped.append((handler, handler.formatter))
                handler.setFormatter(_QuietKnown(handler.formatter))
    try:
        yield
    finally:
        for handler, formatter in wrapped:
            handler.setFormatter(formatter)


@contextmanager
def entry_point(prog: str, debug: bool = False) -> Iterator[None]:
    """Run a command: a known failure exits with its code and `prog: error: <message>` on
    stderr, no traceback; anything else (and everything under --debug / $BATCHPRED_DEBUG)
    raises as usual. Turns on the terminal progress lines of the flows' partitions."""
    debug = debug_wanted(debug)
    previous = reports.progress_stream(sys.stderr)
    try:
        if debug:
            for name in ENGINE_LOGGERS:  # every traceback, known failures' too
                logger = logging.getLogger(name)
                for f in [f for f in logger.filters if isinstance(f, _KnownWithoutTraceback)]:
                    logger.removeFilter(f)
            yield
            return
        with quiet_known_tracebacks():
            try:
                yield
            except Exception as exc:  # noqa: BLE001 - known ones become one line, others raise
                known = _explained(exc)
                if known is None:
                    raise
                code, message = known
                print(f"{prog}: error: {message}", file=sys.stderr)
                raise SystemExit(code) from None
    finally:
        reports.progress_stream(previous)


def flow_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """The argument parser of a flow's entry point, with the options every flow takes."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="Through `batchpred run FLOW`, --config, --dataset NAME and --debug may also "
        "come before FLOW. Exit codes: 0 done, 1 failed (or could not start), 2 bad arguments, "
        "3 nothing to score, 4 drifted (nightly), 5 gate blocked by drift (nightly).",
    )
    parser.add_argument(
        "--config",
        action="append",
        metavar="FILE",
        help=f"YAML file to layer, repeatable (default ${config.CONFIG_ENV}, else "
        "configs/base.yaml + configs/datasets/churn.yaml)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the traceback of a known error too (or ${DEBUG_ENV}=1)",
    )
    return parser


def end_process() -> None:
    """Call once a command's work is done, just before its process exits: every object is
    moved to the permanent generation (gc.freeze), so the interpreter's last collections at
    exit skip what the imports built (Prefect, pydantic, pandas, xgboost). Those walks made
    0.7-0.9 s of every exit on a 2-core machine, 0.06-0.08 s frozen. Exit handlers still run
    (logs and events are drained, files closed); only reference cycles left at exit are not
    collected, whose finalizers Python never promises to run. A process's entry point only:
    in a process that goes on (the tests), frozen garbage would never be freed."""
    gc.freeze()


def check_range(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--end before --start is a usage error (exit 2) before any flow run is created."""
    start, end = getattr(args, "start", None), getattr(args, "end", None)
    if start is not None and end is not None and end < start:
        parser.error(f"--end {end} is before --start {start}")


# --- processes that ran flows ------------------------------------------------------------------

# A run records where it runs: the host (with its PID namespace: two containers may share a
# hostname, never a namespace) and the process (PID, its start time since boot, the boot id),
# so that a later run on the same host can tell for certain that the process is gone.
HOST_TAG, PROCESS_TAG = "host:", "process:"


def _boot_id() -> str:
    with suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    return "-"


def _pid_namespace() -> str:
    with suppress(OSError):
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:").strip("[]")
    return "-"


def _start_ticks(pid: int) -> str | None:
    """When the process started, in clock ticks since boot (as Linux counts them), None when
    unknown (no such process, or not ours to look at)."""
    try:
        started = psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None
    ticks_per_second = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return str(round((started - psutil.boot_time()) * ticks_per_second))


def host_tag() -> str:
    return f"{HOST_TAG}{socket.gethostname()}/{_pid_namespace()}"


def process_tag(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{PROCESS_TAG}{pid}@{_start_ticks(pid) or '-'}@{_boot_id()}"


def process_gone(tag: str) -> bool:
    """Whether the process a process tag (of this host) names has certainly ended: no process
    with that PID, or one that started at another time (the PID was reused), or the machine
    rebooted since. When unsure (a tag this code did not write), False."""
    parts = tag.removeprefix(PROCESS_TAG).split("@")
    if len(parts) != 3 or not parts[0].isdigit():
        return False
    pid, started, boot = int(parts[0]), parts[1], parts[2]
    if boot != "-" and _boot_id() != "-" and boot != _boot_id():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, under another user
    now = _start_ticks(pid)
    return started != "-" and now is not None and now != started
