"""What must hold before a flow starts, checked without a flow run: the config loads, the
database URL is usable and the database answers, the model asked for exists, the source is
there. Each failure is a config.SetupError, one line naming the fix."""

from __future__ import annotations

import re
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path

import sqlalchemy as sa

from batchpred import config, db, registry, storage
from batchpred.config import Settings, SetupError

# Query parameters that carry a secret (libpq's `password`, `sslpassword`; tokens of others).
SECRET_PARAMS = frozenset({"password", "passwd", "pass", "pwd", "sslpassword", "secret", "token"})


def _secret_param(name: str) -> bool:
    return name.lower() in SECRET_PARAMS


def _split_host(url: sa.engine.URL) -> sa.engine.URL:
    """A password holding an unencoded @ puts its tail in front of the host: cut it off."""
    if url.host and "@" in url.host:
        return url.set(host=url.host.rsplit("@", 1)[1], password="***")
    return url


def hide_password(url: str) -> str:
    """A database URL fit for a log line: every secret shown as *** (the password, in the
    userinfo or as a query parameter, and the tail of one holding an unencoded @)."""
    try:
        parsed = _split_host(sa.engine.make_url(url))
        query = {k: "***" if _secret_param(k) else v for k, v in parsed.query.items()}
        shown = parsed.set(query=query).render_as_string(hide_password=True)
        return shown.replace("=%2A%2A%2A", "=***")
    except Exception:  # noqa: BLE001 - not even a URL: hide whatever sits between : and @
        shown = re.sub(r"(://[^:/@]*:).*@", r"\1***@", url)
        names = "|".join(SECRET_PARAMS)
        return re.sub(rf"([?&](?:{names})=)[^&]*", r"\1***", shown, flags=re.IGNORECASE)


def _secrets(url: str) -> list[str]:
    """The secret strings of a URL, to blank out of a driver's message."""
    out = []
    with suppress(Exception):
        parsed = sa.engine.make_url(url)
        out += [str(parsed.password)] if parsed.password else []
        if parsed.host and "@" in parsed.host:
            out.append(parsed.host.rsplit("@", 1)[0])
        for key, value in parsed.query.items():
            if _secret_param(key):
                out += [value] if isinstance(value, str) else list(value)
    return [s for s in out if s]


def database_line(url: str, exc: BaseException) -> str:
    """Why the database at `url` did not answer, in one line, without its password."""
    cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    reason = lines[0] if lines else type(cause).__name__
    for secret in sorted(_secrets(url), key=len, reverse=True):
        reason = reason.replace(secret, "***")
    return f"cannot reach the database {hide_password(url)}: {reason}"


def check_database_url(url: str) -> None:
    """A URL SQLAlchemy and the installed drivers can use; else SetupError saying what to
    write instead (the scheme `postgres://` of Heroku-style URLs is the usual one)."""
    shown = hide_password(url)
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise SetupError(
            f"${config.DATABASE_URL_ENV} is not a database URL: {shown!r} "
            "(expected sqlite:///path.db or postgresql+psycopg://user:password@host:5432/db)"
        ) from None
    if parsed.host and "@" in parsed.host:
        raise SetupError(
            f"${config.DATABASE_URL_ENV} {shown}: the password holds an unencoded @; write it "
            "as %40 (percent-encode the password)"
        )
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
        raise SetupError(database_line(url, exc)) from None


def check_source(settings: Settings) -> None:
    """The dataset's source exists: its folder (files, partitioned) or its file (snapshot)."""
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


def check(files: Iterable[str | Path] | None, *, source: bool = False) -> Settings:
    """What must hold before a flow starts: the config loads, the database answers, and (for
    ingest and the nightly) the source exists. SetupError otherwise. (An unknown model is
    found by the score flow itself, after it found partitions to score.)"""
    settings = config.load_settings(files)
    check_database(config.database_url())
    if source:
        check_source(settings)
    return settings
