"""The `batchpred` command and the flows' entry points as an operator meets them: every flow
it offers exists and documents its options; --config anywhere; known failures (a missing or
invalid config, an unreachable database, a postgres:// URL, a missing source) are one line
without a traceback, which --debug / $BATCHPRED_DEBUG=1 bring back."""

from __future__ import annotations

import importlib
import logging
import socket
from pathlib import Path

import pytest
import sqlalchemy as sa

from batchpred import cli, config, outcomes

ROOT = Path(__file__).resolve().parents[2]
CHURN = [
    "--config",
    str(ROOT / "configs/base.yaml"),
    "--config",
    str(ROOT / "configs/datasets/churn.yaml"),
]


@pytest.mark.parametrize("name", cli.FLOWS)
def test_every_flow_command_has_a_module_with_main(name):
    module = importlib.import_module(f"flows.{name}")
    assert callable(module.main)
    assert module.__doc__


def test_unknown_flow_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "nope"])
    assert "invalid choice" in capsys.readouterr().err


# --- --config anywhere, run FLOW --help ----------------------------------------------------------


def test_config_before_or_after_run_flow_reaches_the_flow(monkeypatch, tmp_path):
    seen: list[list[str]] = []
    monkeypatch.setattr(cli, "cmd_flow", lambda args, extra: seen.append(list(extra)))
    monkeypatch.delenv(config.CONFIG_ENV, raising=False)
    base, churn = CHURN[1], CHURN[3]
    cli.main(["--config", base, "--config", churn, "run", "score", "--day", "2026-10-08"])
    cli.main(["run", "score", "--config", base, "--day", "2026-10-08", "--config", churn])
    cli.main(["run", "score", "--config", base, "--config", churn, "--day", "2026-10-08"])
    cli.main(
        ["--config", base, "run", "score", "--debug", "--day", "2026-10-08", "--config", churn]
    )
    expected = ["--config", base, "--config", churn, "--day", "2026-10-08"]
    assert seen[:3] == [expected] * 3
    assert seen[3] == ["--config", base, "--config", churn, "--debug", "--day", "2026-10-08"]


@pytest.mark.parametrize(
    ("flow", "options"),
    [
        ("score", {"--day": "score this day", "--model": "version id", "--force": "re-score"}),
        ("ingest", {"--day": "a source day to pull", "--start": "first source day"}),
        ("nightly", {"--day": "the day to score", "--workspace": "dvc.yaml"}),
        ("train", {"--workspace": "dvc.yaml"}),
    ],
)
def test_run_flow_help_lists_the_flows_options_with_their_help(capsys, flow, options):
    with pytest.raises(SystemExit) as ended:
        cli.main(["run", flow, "--help"])
    assert ended.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # help wraps lines: compare on words
    assert out.startswith(f"usage: batchpred run {flow} ")
    for option, words in {**options, "--config": "YAML file", "--debug": "traceback"}.items():
        assert f"{option} " in out and words in out, (option, out)
    assert "Exit codes:" in out


def test_run_help_without_a_flow_lists_the_flows(capsys):
    cli.main(["run", "--help"])
    out = capsys.readouterr().out
    assert "{ingest,train,score,nightly}" in out and "FLOW --help" in out
    with pytest.raises(SystemExit) as ended:
        cli.main(["run"])
    assert ended.value.code == 2 and "name the flow to run" in capsys.readouterr().err


# --- one line per known failure ----------------------------------------------------------------


def _fails(argv: list[str], capsys, main=cli.main) -> str:
    """Run an entry point that must fail with exit 1 and one line on stderr; the line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as ended:
        main(argv)
    err = capsys.readouterr().err
    assert ended.value.code == outcomes.EXIT_FAILED, err
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    return line


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


@pytest.fixture
def db_url(tmp_path, monkeypatch) -> str:
    url = f"sqlite:///{tmp_path}/bp.db"
    monkeypatch.setenv(config.DATABASE_URL_ENV, url)
    monkeypatch.delenv(outcomes.DEBUG_ENV, raising=False)
    return url


def test_a_missing_config_file_is_one_line_naming_it(capsys, db_url, tmp_path):
    missing = tmp_path / "nope.yaml"
    line = _fails([*CHURN, "--config", str(missing), "status"], capsys)
    said = f"config file {missing} does not exist (working directory {Path.cwd()})"
    assert line == f"batchpred: error: {said}"
    from flows import ingest, nightly, score, train

    for module in (score, ingest, nightly, train):
        line = _fails(["--config", str(missing)], capsys, module.main)
        assert line.endswith(
            f"error: config file {missing} does not exist (working directory {Path.cwd()})"
        )


def test_a_bad_key_is_one_line_naming_the_file_and_the_key(capsys, db_url, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  windw_days: 3\n")
    line = _fails([*CHURN, "--config", str(bad), "models", "list"], capsys)
    assert line.startswith(f"batchpred: error: config {bad}: unknown key 'training.windw_days'; ")
    assert "did you mean 'window_days'?" in line and "known under training: " in line
    # A wrong value names the file that set it; a broken file names its line.
    bad.write_text("scoring:\n  concurrency: many\n")
    line = _fails([*CHURN, "--config", str(bad), "status"], capsys)
    assert line.startswith(f"batchpred: error: config {bad}: scoring.concurrency: ")
    assert "'many'" in line
    bad.write_text("scoring:\n  concurrency: [1\n")
    line = _fails([*CHURN, "--config", str(bad), "status"], capsys)
    assert line.startswith(f"batchpred: error: config {bad} line ") and "not valid YAML" in line
    from flows import score

    bad.write_text("training:\n  windw_days: 3\n")
    line = _fails([*CHURN, "--config", str(bad), "--day", "2026-01-01"], capsys, score.main)
    assert line.startswith(f"score: error: config {bad}: unknown key 'training.windw_days'")


def test_an_unreachable_database_is_one_line_without_its_password(capsys, monkeypatch):
    monkeypatch.delenv(outcomes.DEBUG_ENV, raising=False)
    url = f"postgresql+psycopg://bob:s3cret@127.0.0.1:{_closed_port()}/bp"
    monkeypatch.setenv(config.DATABASE_URL_ENV, url)
    shown = url.replace("s3cret", "***")
    line = _fails([*CHURN, "status"], capsys)
    assert line.startswith(f"batchpred: error: cannot reach the database {shown}: ")
    assert "s3cret" not in line
    from flows import nightly, score

    for module in (nightly, score):
        line = _fails(CHURN, capsys, module.main)
        assert f"error: cannot reach the database {shown}: " in line and "s3cret" not in line


def test_an_unreachable_prefect_server_is_one_line(capsys, monkeypatch, db_url):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows import score

    monkeypatch.delenv(outcomes.DEBUG_ENV, raising=False)
    api = f"http://127.0.0.1:{_closed_port()}/api"
    with temporary_settings({PREFECT_API_URL: api}):
        line = _fails([*CHURN, "--day", "2026-11-04"], capsys, score.main)
    assert line.startswith(
        f"score: error: cannot reach the Prefect server at {api} (PREFECT_API_URL): "
    )
    assert line.endswith("or unset PREFECT_API_URL to run on a temporary local server")


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("postgresql+psycopg://bob@127.0.0.1:{port}/bp?password=s3cret&sslmode=disable", "s3cret"),
        ("postgresql+psycopg://127.0.0.1:{port}/bp?user=bob&PASSWORD=s3cret", "s3cret"),
    ],
)
def test_a_password_in_the_query_string_is_never_shown(capsys, monkeypatch, url, secret):
    monkeypatch.delenv(outcomes.DEBUG_ENV, raising=False)
    monkeypatch.setenv(config.DATABASE_URL_ENV, url.format(port=_closed_port()))
    line = _fails([*CHURN, "status"], capsys)
    assert "cannot reach the database" in line and "=***" in line
    assert secret not in line


def test_an_unencoded_at_in_a_password_is_refused_without_showing_it(capsys, monkeypatch):
    monkeypatch.delenv(outcomes.DEBUG_ENV, raising=False)
    monkeypatch.setenv(config.DATABASE_URL_ENV, "postgresql+psycopg://bob:p@ss@db.example/bp")
    line = _fails([*CHURN, "status"], capsys)
    assert "the password holds an unencoded @" in line and "%40" in line
    assert "postgresql+psycopg://bob:***@db.example/bp" in line and "ss@" not in line


def test_a_postgres_scheme_says_to_use_postgresql_psycopg(capsys, monkeypatch):
    monkeypatch.delenv(outcomes.DEBUG_ENV, raising=False)
    monkeypatch.setenv(config.DATABASE_URL_ENV, "postgres://bob:s3cret@db.example:5432/bp")
    line = _fails([*CHURN, "models", "list"], capsys)
    assert "postgres://" in line and "use postgresql+psycopg://" in line
    assert "postgresql+psycopg://bob:***@db.example:5432/bp" in line and "s3cret" not in line
    from flows import score

    line = _fails(CHURN, capsys, score.main)
    assert line.startswith("score: error: $BATCHPRED_DATABASE_URL postgres://bob:***@")


def test_a_missing_source_is_one_line(capsys, db_url, tmp_path):
    layer = tmp_path / "source.yaml"
    layer.write_text(f"source:\n  url: {tmp_path / 'no-such-source'}\n")
    from flows import ingest, nightly

    for module in (ingest, nightly):
        line = _fails([*CHURN, "--config", str(layer)], capsys, module.main)
        assert line.endswith(
            f"error: source folder {tmp_path / 'no-such-source'} of dataset 'churn' does not "
            "exist (make demo writes the demo's); set source.url in the dataset's config"
        )


def test_debug_shows_the_traceback(capsys, monkeypatch, tmp_path):
    url = f"postgresql+psycopg://bob:s3cret@127.0.0.1:{_closed_port()}/bp"
    monkeypatch.setenv(config.DATABASE_URL_ENV, url)
    monkeypatch.delenv(outcomes.DEBUG_ENV, raising=False)
    with pytest.raises(sa.exc.OperationalError):
        cli.main([*CHURN, "status", "--debug"])
    with pytest.raises(sa.exc.OperationalError):
        cli.main(["--debug", *CHURN, "status"])
    monkeypatch.setenv(outcomes.DEBUG_ENV, "1")
    with pytest.raises(sa.exc.OperationalError):
        cli.main([*CHURN, "status"])
    from flows import score

    with pytest.raises(outcomes.SetupError, match="cannot reach the database"):
        score.main(CHURN)  # the preflight's own error, raised as is
    monkeypatch.setenv(outcomes.DEBUG_ENV, "0")
    _fails([*CHURN, "status"], capsys)


def test_console_logs_drop_the_traceback_of_known_failures_only(monkeypatch):
    """Prefect logs a failed run with its traceback; on the console of an entry point a known
    failure keeps its line and loses the traceback (the API handler keeps it)."""
    import io

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    log = logging.getLogger("prefect.test-entry")
    try:
        with outcomes.quiet_known_tracebacks():
            for error in (outcomes.NothingToScore("nothing to score: x"), ValueError("a bug")):
                try:
                    raise error
                except Exception:
                    log.error("Encountered exception during execution: %r", error, exc_info=True)
        with pytest.raises(SystemExit), outcomes.entry_point("t"):
            raise outcomes.NothingToScore("nothing to score: y")
    finally:
        root.removeHandler(handler)
    text = stream.getvalue()
    assert "NothingToScore('nothing to score: x')" in text and "ValueError('a bug')" in text
    assert text.count("Traceback") == 1 and "raise error" in text  # the bug's only
    assert not isinstance(handler.formatter, outcomes._QuietKnown)  # restored


def test_exit_codes_of_known_failures():
    assert outcomes.explain(outcomes.nothing_to_score("r", None, None)) == (
        3,
        "nothing to score: no partition under r",
    )
    assert outcomes.explain(outcomes.SetupError("config x: bad")) == (1, "config x: bad")
    assert outcomes.explain(FileNotFoundError(2, "No such file", "data/x.parquet")) == (
        1,
        "no such file or folder: data/x.parquet",
    )
    assert outcomes.explain(ValueError("a bug")) is None


@pytest.mark.parametrize("flow", ["ingest", "score"])
def test_end_before_start_is_a_usage_error_before_any_run(capsys, flow):
    module = importlib.import_module(f"flows.{flow}")
    with pytest.raises(SystemExit) as exc:
        module.main([*CHURN, "--start", "2026-10-05", "--end", "2026-10-01"])
    assert exc.value.code == 2
    assert "--end 2026-10-01 is before --start 2026-10-05" in capsys.readouterr().err
