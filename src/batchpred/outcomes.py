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

Every entry point (`batchpred`, `python -m flows.X`) runs inside `entry_point`: a known
failure is one line on stderr, `prog: error: ...`, never a traceback (`--debug` or
$BATCHPRED_DEBUG=1 shows it). Before a flow starts, `preflight` checks what an operator can
get wrong without a flow run being needed to find out: the config files, the database URL and
that the database answers, the model asked for, the source.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import re
import socket
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlalchemy as sa

    from batchpred.config import Settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOTHING_TO_SCORE = 3
EXIT_DRIFTED = 4
DRIFTED = "Drifted"  # the name of the nightly's COMPLETED state when the day drifted
DEBUG_ENV = "BATCHPRED_DEBUG"  # 1: tracebacks for known failures too (like --debug)


class NothingToScore(LookupError):
    """A score run found no partition for the day or range it was asked for."""


class TrainingFailed(RuntimeError):
    """The nightly's training failed; the day was scored (or not) with the current champion."""


class RunFailed(Exception):
    """A known way a run fails (partitions invalid, partitions that could not be scored): the
    message, written for the operator, names what and why; a traceback adds nothing."""


class SetupError(Exception):
    """The run cannot start: a config file missing or invalid, the database unreachable or its
    URL wrong, an unknown model, a missing source. The message is one line naming the fix."""


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
    """An error as one line: its first line, and when that only introduces what follows
    (`dvc repro failed (1):`), the last non-empty line too (where tools put the cause)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    first = lines[0]
    if first.endswith(":") and len(lines) > 1:
        first = f"{first} {lines[-1]}"
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


def hide_password(url: str) -> str:
    """A database URL fit for a log line: the password shown as ***."""
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not even a URL: hide whatever sits between : and @
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _config_origin(files: Iterable[str | Path] | None) -> str:
    from batchpred import config

    if files:
        return ""
    if os.environ.get(config.CONFIG_ENV):
        return f" (from ${config.CONFIG_ENV})"
    return f" (the default; set --config or ${config.CONFIG_ENV})"


def _yaml_of(path: Path) -> Any:
    import yaml

    with suppress(OSError, yaml.YAMLError), open(path) as fh:
        return yaml.safe_load(fh)
    return None


def _has(data: Any, loc: tuple[Any, ...]) -> bool:
    for part in loc:
        in_dict = isinstance(data, dict) and part in data
        in_list = isinstance(data, list) and isinstance(part, int) and part < len(data)
        if not (in_dict or in_list):
            return False
        data = data[part]
    return True


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the settings model accepts at `loc` (a path of keys and list indices)."""
    import typing

    from pydantic import BaseModel

    from batchpred import config

    model: type[BaseModel] = config.Settings
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        candidates = [field.annotation, *typing.get_args(field.annotation)]
        nested = [
            c
            for a in candidates
            for c in [a, *typing.get_args(a)]
            if isinstance(c, type) and issubclass(c, BaseModel)
        ]
        if not nested:
            return []
        model = nested[0]
    return sorted(model.model_fields)


def _config_error(err: Any, paths: list[Path], files: Iterable[str | Path] | None) -> str:
    """One pydantic error of the merged config as a line naming the file and the key."""
    loc = tuple(err.get("loc") or ())
    key = ".".join(str(p) for p in loc) or "(top level)"
    # Which file: the last layer that sets the key (or, for a key missing everywhere, all).
    owner = next((p for p in reversed(paths) if loc and _has(_yaml_of(p), loc)), None)
    where = str(owner) if owner else ", ".join(map(str, paths)) + _config_origin(files)
    kind, msg = err.get("type", ""), str(err.get("msg", "")).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        under = ".".join(str(p) for p in loc[:-1]) or "the top level"
        known = f" (known under {under}: {', '.join(allowed)})" if allowed else ""
        return f"config {where}: unknown key {key!r}{hint}{known}"
    if kind == "missing":
        return f"config {where}: {key} is required and not set"
    got = err.get("input")
    shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
    return f"config {where}: {key}: {msg}{shown}"


def load_config(files: Iterable[str | Path] | None = None) -> Settings:
    """config.load_settings, its errors one line naming the file (and the key, line)."""
    import pydantic
    import yaml

    from batchpred import config

    files = list(files) if files else None
    paths = config.config_files(files)
    try:
        return config.load_settings(files)
    except FileNotFoundError as exc:
        missing = exc.filename or exc
        raise SetupError(
            f"config file {missing} does not exist{_config_origin(files)} "
            f"(working directory {Path.cwd()})"
        ) from None
    except IsADirectoryError as exc:
        raise SetupError(f"config file {exc.filename} is a folder, not a YAML file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = (
            f"{mark.name} line {mark.line + 1}" if mark is not None else ", ".join(map(str, paths))
        )
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SetupError(f"config {where}: not valid YAML: {problem}") from None
    except pydantic.ValidationError as exc:
        errors = exc.errors()
        line = _config_error(errors[0], paths, files)
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise SetupError(line + more) from None
    except ValueError as exc:  # a file whose top level is not a mapping
        raise SetupError(f"config {one_line(str(exc))}") from None


def _database_line(url: str, exc: BaseException) -> str:
    """Why the database at `url` did not answer, in one line, without its password."""
    import sqlalchemy as sa

    cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    reason = lines[0] if lines else type(cause).__name__
    with suppress(Exception):
        password = sa.engine.make_url(url).password
        if password:
            reason = reason.replace(str(password), "***")
    return f"cannot reach the database {hide_password(url)}: {reason}"


def check_database_url(url: str) -> None:
    """A URL SQLAlchemy and the installed drivers can use; else SetupError saying what to
    write instead (the scheme `postgres://` of Heroku-style URLs is the usual one)."""
    import sqlalchemy as sa

    from batchpred import config

    shown = hide_password(url)
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise SetupError(
            f"${config.DATABASE_URL_ENV} is not a database URL: {shown!r} "
            "(expected sqlite:///path.db or postgresql+psycopg://user:password@host:5432/db)"
        ) from None
    if parsed.drivername == "postgres" or parsed.drivername.startswith("postgres+"):
        fixed = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=True)
        raise SetupError(
            f"${config.DATABASE_URL_ENV} {shown} uses the scheme postgres://, which SQLAlchemy "
            f"does not accept: use postgresql+psycopg:// ({fixed})"
        )
    try:
        parsed.get_dialect()
    except sa.exc.NoSuchModuleError:
        raise SetupError(
            f"${config.DATABASE_URL_ENV} {shown}: unknown database type {parsed.drivername!r} "
            "(use sqlite:///... or postgresql+psycopg://...)"
        ) from None


def check_database(url: str) -> None:
    """The database URL is usable and the database answers (10 s at most); else SetupError."""
    import sqlalchemy as sa

    from batchpred import db

    check_database_url(url)
    parsed = sa.engine.make_url(url)
    try:
        if parsed.get_backend_name() == "postgresql":
            engine = sa.create_engine(url, connect_args={"connect_timeout": 10})
        else:
            engine = db.create_engine(url)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("select 1")
        finally:
            engine.dispose()
    except ImportError as exc:
        raise SetupError(
            f"{hide_password(url)}: its driver is not installed ({exc}); batchpred ships "
            "psycopg 3: postgresql+psycopg://..."
        ) from None
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        raise SetupError(_database_line(url, exc)) from None


def check_source(settings: Settings) -> None:
    """The dataset's source exists: its folder (files, partitioned) or its file (snapshot)."""
    from batchpred import storage

    source = settings.source
    if source.kind != "files":
        return
    fs, path = storage.url_to_fs(source.url)
    if not fs.exists(path):
        what = "file" if source.layout == "snapshot" else "folder"
        hint = " (make demo writes the demo's)" if settings.dataset.name == "churn" else ""
        raise SetupError(
            f"source {what} {source.url} of dataset {settings.dataset.name!r} does not "
            f"exist{hint}; set source.url in the dataset's config"
        )


def check_model(settings: Settings, ref: str, engine: sa.Engine | None = None) -> str:
    """The version `ref` names (id, unique prefix of 4+ digits, alias) in the dataset;
    SetupError listing the dataset's known versions when there is none."""
    from batchpred import config, db, registry

    own = engine is None
    if engine is None:
        engine = db.create_engine(config.database_url())
        db.migrate(engine)
    try:
        return registry.find_version(engine, settings.dataset.name, ref)
    except registry.UnknownModelError as exc:
        raise SetupError(str(exc)) from None
    finally:
        if own:
            engine.dispose()


def preflight(files: Iterable[str | Path] | None, *, source: bool = False) -> Settings:
    """What must hold before a flow starts: the config loads, the database answers, and (for
    ingest and the nightly) the source exists. SetupError otherwise. (An unknown model is
    found by the score flow itself, after it found partitions to score.)"""
    from batchpred import config

    settings = load_config(files)
    check_database(config.database_url())
    if source:
        check_source(settings)
    return settings


def explain(exc: BaseException) -> tuple[int, str] | None:
    """A known failure as (exit code, message for stderr); None for anything else (a bug:
    its traceback is shown)."""
    import sqlalchemy as sa

    from batchpred import (
        config,
        registry,
        reports,
        rules,
        schema,
        scoring,
        storage,
        training,
        verdicts,
    )

    if isinstance(exc, NothingToScore):
        return EXIT_NOTHING_TO_SCORE, str(exc)
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
            check_database_url(url)
        except SetupError as bad:
            return EXIT_FAILED, str(bad)
        return None
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return EXIT_FAILED, _database_line(config.database_url(), exc)
    if isinstance(exc, FileNotFoundError):
        return EXIT_FAILED, f"no such file or folder: {exc.filename or one_line(str(exc))}"
    return None


# --- entry points ------------------------------------------------------------------------------


class _QuietKnown(logging.Formatter):
    """Wraps a console handler's formatter: a record carrying a known failure is printed
    without its traceback (the line itself says what happened). Other handlers, such as the
    one sending logs to the Prefect API, still get the traceback."""

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
    from batchpred import reports

    debug = debug_wanted(debug)
    previous = reports.progress_stream(sys.stderr)
    try:
        if debug:
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
        "3 nothing to score, 4 drifted (nightly).",
    )
    parser.add_argument(
        "--config",
        action="append",
        metavar="FILE",
        help=f"YAML file to layer, repeatable (default ${_config_env()}, else "
        "configs/base.yaml + configs/datasets/churn.yaml)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the traceback of a known error too (or ${DEBUG_ENV}=1)",
    )
    return parser


def _config_env() -> str:
    from batchpred import config

    return config.CONFIG_ENV


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
    """When the process started (clock ticks since boot, Linux), None when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


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
