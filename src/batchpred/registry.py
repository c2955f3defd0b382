"""Model registry: content-addressed model files plus versions and aliases in the database.

A version id names a model file registered for one dataset: the first 16 hex digits of
sha256("<dataset>:<sha256 of the file>") (version_of), so the same bytes trained for two
datasets are two registrations, each with its own manifest, threshold and aliases. Versions
registered before that are the file's sha256[:16] and keep their id. Files live under
``{registry}/{version}/`` (any fsspec URL); the database row keeps the full sha256 of the
bytes, which is checked against them before xgboost ever parses them. The row's uri is a URL
or an absolute path, never a relative one: whoever loads the model (a Dask worker started in
another directory, on another machine) fetches it from the same place.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec
import sqlalchemy as sa
import xgboost as xgb

from batchpred import baselines, db, predictions, schema, storage
from batchpred.model import LoadedModel, ModelIntegrityError, sha256_bytes
from batchpred.model import predict_table as predict_table  # re-exported for callers

MODEL_FILE = "model.ubj"  # the deployed model (training.MODEL_FILE); companions beside it
CHAMPION = "champion"
CHALLENGER = "challenger"
PINNED = "pinned"  # points at the champion while it is frozen against the nightly gate
ALIASES = (CHAMPION, CHALLENGER, PINNED)
# How an alias came to point where it does (model_alias_history.action).
GATE, PROMOTE, ROLLBACK, PIN, UNPIN, SET = "gate", "promote", "rollback", "pin", "unpin", "set"
DRIFT_BLOCK = "drift-block"  # the gate set the challenger: it passed, but the holdout drifted
USER_ENV = "BATCHPRED_USER"  # who acts, when not the OS user


class UnknownModelError(LookupError):
    pass


class LifecycleError(Exception):
    """A lifecycle change that cannot be made as asked; the message is one line for the user."""


VERSION_DIGITS = 16  # part of table names (sinks: one leaf per day and version)


def version_of(dataset: str, sha256: str) -> str:
    """The version id of model bytes (their sha256) registered for `dataset`. Keyed by both,
    so that no registration of one dataset ever lands on another's id, store folder, manifest
    or version-keyed rows (ledger, predictions); hex of today's length, as table names need."""
    return hashlib.sha256(f"{dataset}:{sha256}".encode()).hexdigest()[:VERSION_DIGITS]


def is_version_of(version: str, dataset: str, sha256: str) -> bool:
    """Whether `version` is the id of these bytes for this dataset: version_of, or the
    sha256[:16] a version registered before ids carried the dataset has (never recomputed)."""
    return version in (version_of(dataset, sha256), sha256[:VERSION_DIGITS])


def dvc_md5(lock_file: str | Path, out_path: str) -> str | None:
    """The md5 DVC recorded for a stage output in dvc.lock, if any."""
    import yaml

    path = Path(lock_file)
    if not path.exists():
        return None
    lock = yaml.safe_load(path.read_text()) or {}
    for stage in lock.get("stages", {}).values():
        for out in stage.get("outs", []):
            if out.get("path") == out_path:
                return out.get("md5")
    return None


_LOCAL = ("file", "local")


def store_url(registry: str) -> str:
    """The registry root as recorded in model_versions.uri: a URL (s3://...) as given, a local
    path (or file:// URL) made absolute against the working directory, where register_model
    writes it. A relative path would mean another file to every process that reads it."""
    if fsspec.utils.get_protocol(registry) not in _LOCAL:
        return registry.rstrip("/")
    path = registry.split("://", 1)[1] if "://" in registry else registry
    return os.path.abspath(os.path.expanduser(path))


def is_portable_uri(uri: str) -> bool:
    """Whether a stored model uri means the same file to every process: a URL, or an absolute
    local path."""
    if fsspec.utils.get_protocol(uri) not in _LOCAL:
        return True
    return os.path.isabs(uri.split("://", 1)[1] if "://" in uri else uri)


def register_model(
    engine: sa.Engine,
    model_dir: str | Path,
    registry: str,
    *,
    dvc_hash: str | None = None,
    dataset: str | None = None,
) -> str:
    """Copy a trained model (model.ubj + manifest.json, and the companions the manifest names:
    the evaluated twin, the linear baseline; each checked against its sha256 there) into the
    store and record it for the manifest's dataset (which must be `dataset`, when given).
    Idempotent per dataset: registering the same bytes for the same dataset again returns the
    version they already have (an id from before ids carried the dataset included), rewrites
    only that version's files and records where they were written now (a row from before
    uris were absolute is healed). The same bytes for another dataset are another version
    (version_of). A local `registry` is recorded as an absolute path (store_url)."""
    model_dir = Path(model_dir)
    registry = store_url(registry)
    data = (model_dir / MODEL_FILE).read_bytes()
    manifest = json.loads((model_dir / "manifest.json").read_text())
    digest = sha256_bytes(data)
    if manifest.get("sha256") != digest:
        raise ModelIntegrityError(f"{model_dir}/model.ubj does not match its manifest sha256")
    companions = {}
    for entry in companion_entries(manifest):
        companions[entry["file"]] = (model_dir / entry["file"]).read_bytes()
        if sha256_bytes(companions[entry["file"]]) != entry["sha256"]:
            raise ModelIntegrityError(
                f"{model_dir}/{entry['file']} does not match its manifest sha256"
            )
    owner = manifest.get("dataset")
    if not owner:
        raise ModelIntegrityError(f"{model_dir}/manifest.json names no dataset; not registering it")
    if dataset is not None and owner != dataset:
        raise ModelIntegrityError(
            f"{model_dir}/manifest.json is for dataset {owner!r}, not {dataset!r}; "
            f"not registering it"
        )
    t = db.table(engine, "model_versions")
    with engine.connect() as conn:
        known = conn.execute(
            sa.select(t.c.version).where(t.c.dataset == owner, t.c.sha256 == digest)
        ).scalar()
    version = known or version_of(owner, digest)
    fs, root = storage.url_to_fs(registry)
    target = f"{root}/{version}"
    fs.makedirs(target, exist_ok=True)
    for name, content in {MODEL_FILE: data, **companions}.items():
        with fs.open(f"{target}/{name}", "wb") as fh:
            fh.write(content)
    manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode()
    with fs.open(f"{target}/manifest.json", "wb") as fh:
        fh.write(manifest_bytes)
    uri = f"{registry}/{version}/model.ubj"
    if not is_portable_uri(uri):  # store_url makes it absolute; never record a relative one
        raise ValueError(f"model uri {uri!r} is neither a URL nor an absolute path")
    with engine.begin() as conn:
        if known:  # the same bytes for the same dataset: the files written now are its files
            conn.execute(
                t.update()
                .where(t.c.version == version)
                .values(uri=uri, manifest_sha256=sha256_bytes(manifest_bytes))
            )
        else:
            conn.execute(
                t.insert().values(
                    version=version,
                    dataset=owner,
                    sha256=digest,
                    dvc_md5=dvc_hash,
                    uri=uri,
                    xgboost_version=manifest["xgboost_version"],
                    features=manifest["features"],
                    params=manifest["params"],
                    training_data_hash=manifest["training_data_hash"],
                    metrics=manifest.get("metrics", {}),
                    reference_stats=manifest["reference_stats"],
                    contract=manifest["contract"],
                    manifest_sha256=sha256_bytes(manifest_bytes),
                    created_at=datetime.now(UTC),
                )
            )
    return version


def companion_entries(manifest: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The manifest's entries of the files stored beside model.ubj ({"file", "sha256", ...}):
    the evaluated twin (when it is not model.ubj itself) and the linear baseline. None in a
    manifest from before refits and baselines."""
    entries = []
    evaluated = manifest.get("evaluated")
    if evaluated is not None and evaluated["file"] != MODEL_FILE:
        entries.append(evaluated)
    linear = (manifest.get("baselines") or {}).get("linear")
    if linear is not None:
        entries.append(linear)
    for entry in entries:
        if Path(entry["file"]).name != entry["file"]:
            raise ModelIntegrityError(f"manifest names {entry['file']!r}: not a file name")
    return entries


def update_metrics(engine: sa.Engine, version: str, metrics: dict[str, Any]) -> None:
    """Record a version's holdout metrics (the gate's: of its evaluated model, with its
    baselines and lift, promotion.promote_if_better)."""
    t = db.table(engine, "model_versions")
    with engine.begin() as conn:
        conn.execute(t.update().where(t.c.version == version).values(metrics=metrics))


def get_version(engine: sa.Engine, version: str) -> dict[str, Any]:
    t = db.table(engine, "model_versions")
    with engine.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.version == version)).mappings().first()
    if row is None:
        raise UnknownModelError(f"model version {version!r} is not registered")
    return dict(row)


def get_alias(engine: sa.Engine, dataset: str, alias: str) -> str | None:
    t = db.table(engine, "model_aliases")
    with engine.connect() as conn:
        return conn.execute(
            sa.select(t.c.version).where(t.c.dataset == dataset, t.c.alias == alias)
        ).scalar()


def set_alias(
    engine: sa.Engine,
    dataset: str,
    alias: str,
    version: str,
    reason: str,
    *,
    by: str | None = None,
    action: str = SET,
) -> None:
    """Point an alias at a version and append to its history: who (`by`, default
    current_user()), when, why and how (`action`). The gate's write to champion re-checks the
    pin under the alias lock, so a champion pinned meanwhile is never replaced."""
    get_version(engine, version)
    with _changing_aliases(engine, dataset) as conn:
        if alias == CHAMPION and action == GATE:
            frozen = _alias_state(conn, dataset, PINNED)
            if frozen is not None:
                raise LifecycleError(
                    f"the champion of {dataset!r} was pinned meanwhile ({frozen.describe()}); "
                    f"not promoting {version}"
                )
        _point(conn, dataset, alias, version, reason, by or current_user(), action)


@dataclass(frozen=True)
class AliasState:
    """Where an alias points now, and who set it, when and why."""

    alias: str
    version: str
    set_at: datetime
    set_by: str | None
    reason: str | None

    def describe(self) -> str:
        why = f": {self.reason}" if self.reason else ""
        return f"{self.version}, by {self.set_by or 'unknown'} on {when(self.set_at)}{why}"


def current_user() -> str:
    """Who is acting: $BATCHPRED_USER, else the OS user."""
    import getpass

    if os.environ.get(USER_ENV):
        return os.environ[USER_ENV]
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return "unknown"


def utc(ts: datetime) -> datetime:
    """A stored timestamp in UTC (SQLite hands back the naive UTC time it was given)."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def when(ts: datetime) -> str:
    return f"{utc(ts):%Y-%m-%d %H:%M} UTC"


@contextmanager
def _changing_aliases(engine: sa.Engine, dataset: str) -> Iterator[sa.Connection]:
    """A transaction that alone changes the dataset's aliases (an operator against the nightly
    gate). SQLite: the engine's BEGIN IMMEDIATE holds the write lock. PostgreSQL: the writers'
    mutex `aliases|<dataset>` (db.writer_lock). The tables are reflected first: on SQLite,
    reflecting inside would wait for our own lock."""
    db.tables(engine)
    with engine.begin() as conn:
        db.writer_lock(conn, f"aliases|{dataset}")
        yield conn


def _alias_state(conn: sa.Connection, dataset: str, alias: str) -> AliasState | None:
    t = db.table(conn.engine, "model_aliases")
    row = conn.execute(
        sa.select(t.c.alias, t.c.version, t.c.set_at, t.c.set_by, t.c.reason).where(
            t.c.dataset == dataset, t.c.alias == alias
        )
    ).first()
    return AliasState(*row) if row else None


def _point(
    conn: sa.Connection,
    dataset: str,
    alias: str,
    version: str | None,
    reason: str,
    by: str,
    action: str,
) -> str | None:
    """Point `alias` at `version` (None: remove it) and append the change to its history;
    returns the version it pointed at before. A removal's history row names the version the
    alias left, as both version and previous_version."""
    aliases, history = (
        db.table(conn.engine, "model_aliases"),
        db.table(conn.engine, "model_alias_history"),
    )
    now = datetime.now(UTC)
    where = (aliases.c.dataset == dataset, aliases.c.alias == alias)
    previous = conn.execute(sa.select(aliases.c.version).where(*where)).scalar()
    conn.execute(aliases.delete().where(*where))
    if version is not None:
        conn.execute(
            aliases.insert().values(
                dataset=dataset, alias=alias, version=version, set_at=now, set_by=by, reason=reason
            )
        )
    conn.execute(
        history.insert().values(
            dataset=dataset,
            alias=alias,
            version=version or previous,
            previous_version=previous,
            reason=reason,
            set_at=now,
            set_by=by,
            action=action,
        )
    )
    if alias == CHAMPION and previous != version:  # the current prediction changes with it
        predictions.refresh_dataset(conn, dataset)
    return previous


def resolve_version(engine: sa.Engine, dataset: str, ref: str) -> str:
    """A version id, or an alias name (champion / challenger) resolved to one."""
    version = get_alias(engine, dataset, ref) if ref in (CHAMPION, CHALLENGER) else ref
    if version is None:
        raise UnknownModelError(f"dataset {dataset!r} has no {ref!r} model yet; train one first")
    return version


# --- lifecycle: what operators do by hand, and what the nightly gate must respect ------------
#
# The champion may be pinned: alias `pinned` points at it, with who, when and why. While it
# exists the gate still registers, evaluates and reports every new model (it becomes the
# challenger) but never moves `champion`; only people do (`pin V`, `rollback`, or `promote`
# after `unpin`). A rollback restores the previous champion from the history and pins it: an
# operator who rolled back has found something the gate cannot see, and tomorrow's model comes
# from the same pipeline. After `unpin` the gate still never re-promotes a version that was
# rolled back from, until someone promotes it by hand.


@dataclass(frozen=True)
class Change:
    """What a lifecycle command did to the champion and its pin."""

    champion_before: str | None
    champion: str | None
    pinned_before: str | None
    pinned: str | None

    @property
    def changed(self) -> bool:
        return (self.champion_before, self.pinned_before) != (self.champion, self.pinned)


def get_aliases(engine: sa.Engine, dataset: str) -> dict[str, AliasState]:
    """Every alias of a dataset, by name."""
    t = db.table(engine, "model_aliases")
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.alias, t.c.version, t.c.set_at, t.c.set_by, t.c.reason).where(
                t.c.dataset == dataset
            )
        ).all()
    return {r.alias: AliasState(*r) for r in rows}


def alias_history(
    engine: sa.Engine, dataset: str, *, version: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """Alias changes of a dataset, newest first (only those touching `version`, if given)."""
    t = db.table(engine, "model_alias_history")
    query = sa.select(t).where(t.c.dataset == dataset).order_by(t.c.id.desc()).limit(limit)
    if version is not None:
        query = query.where(sa.or_(t.c.version == version, t.c.previous_version == version))
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def list_versions(engine: sa.Engine, dataset: str) -> list[dict[str, Any]]:
    """The dataset's registered versions, newest first."""
    t = db.table(engine, "model_versions")
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.version, t.c.created_at, t.c.metrics)
            .where(t.c.dataset == dataset)
            .order_by(t.c.created_at.desc(), t.c.version)
        ).mappings()
        return [dict(r) for r in rows]


def find_version(engine: sa.Engine, dataset: str, ref: str) -> str:
    """A version of the dataset from a version id, an unambiguous prefix of one (4+ digits) or
    an alias name; the error lists the known versions."""
    if ref in ALIASES:
        version = get_alias(engine, dataset, ref)
        if version is None:
            raise UnknownModelError(f"dataset {dataset!r} has no {ref!r} model")
        return version
    known = [r["version"] for r in list_versions(engine, dataset)]
    if ref in known:
        return ref
    matches = [v for v in known if v.startswith(ref)] if len(ref) >= 4 else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UnknownModelError(f"{ref!r} is ambiguous in {dataset!r}: {', '.join(matches)}")
    listed = ", ".join(known[:10]) + (f" and {len(known) - 10} more" if len(known) > 10 else "")
    if len(ref) < 4 and any(v.startswith(ref) for v in known):
        raise UnknownModelError(
            f"{ref!r} is too short a prefix: give 4+ digits of a version of {dataset!r} "
            f"(newest first: {listed})"
        )
    raise UnknownModelError(
        f"unknown model {ref!r} for dataset {dataset!r}; known (newest first): "
        + (listed or "none, train one first")
    )


def _of_dataset(engine: sa.Engine, dataset: str, version: str) -> None:
    other = get_version(engine, version)["dataset"]
    if other != dataset:
        raise LifecycleError(f"model {version} belongs to dataset {other!r}, not {dataset!r}")


def promote(
    engine: sa.Engine, dataset: str, version: str, reason: str, *, by: str | None = None
) -> Change:
    """Make `version` the champion by hand. Refused while the champion is pinned: unpin it
    first, or `pin` the new version (which replaces the pin knowingly)."""
    _of_dataset(engine, dataset, version)
    with _changing_aliases(engine, dataset) as conn:
        champion, frozen = (
            _alias_state(conn, dataset, CHAMPION),
            _alias_state(conn, dataset, PINNED),
        )
        before = champion.version if champion else None
        pinned = frozen.version if frozen else None
        if before == version:
            return Change(before, before, pinned, pinned)
        if frozen is not None:
            raise LifecycleError(
                f"the champion of {dataset!r} is pinned ({frozen.describe()}); unpin it first, "
                f"or pin {version} to replace it"
            )
        _point(conn, dataset, CHAMPION, version, reason, by or current_user(), PROMOTE)
    return Change(before, version, None, None)


def _rollback_target(conn: sa.Connection, dataset: str, current: str) -> str | None:
    """The champion before `current`, walking the history back past every version that was
    rolled back from: repeated rollbacks step back one champion at a time."""
    t = db.table(conn.engine, "model_alias_history")
    rows = conn.execute(
        sa.select(t.c.version, t.c.previous_version, t.c.action)
        .where(t.c.dataset == dataset, t.c.alias == CHAMPION)
        .order_by(t.c.id.desc())
    ).all()
    left = {current}
    for row in rows:
        if row.action == ROLLBACK and row.previous_version:
            left.add(row.previous_version)
        if row.version not in left:
            return str(row.version)
    return None


def rollback(engine: sa.Engine, dataset: str, reason: str, *, by: str | None = None) -> Change:
    """Restore the previous champion from the history and pin it, so that the nightly gate
    does not bring back what was rolled back from."""
    by = by or current_user()
    with _changing_aliases(engine, dataset) as conn:
        champion, frozen = (
            _alias_state(conn, dataset, CHAMPION),
            _alias_state(conn, dataset, PINNED),
        )
        if champion is None:
            raise LifecycleError(f"dataset {dataset!r} has no champion to roll back")
        target = _rollback_target(conn, dataset, champion.version)
        if target is None:
            raise LifecycleError(
                f"no earlier champion of {dataset!r} to roll back to from {champion.version}"
            )
        _point(conn, dataset, CHAMPION, target, reason, by, ROLLBACK)
        _point(conn, dataset, PINNED, target, reason, by, ROLLBACK)
    return Change(champion.version, target, frozen.version if frozen else None, target)


def pin(
    engine: sa.Engine, dataset: str, version: str, reason: str, *, by: str | None = None
) -> Change:
    """Freeze the champion at `version` (making it the champion first if it is not)."""
    _of_dataset(engine, dataset, version)
    by = by or current_user()
    with _changing_aliases(engine, dataset) as conn:
        champion, frozen = (
            _alias_state(conn, dataset, CHAMPION),
            _alias_state(conn, dataset, PINNED),
        )
        before = champion.version if champion else None
        pinned = frozen.version if frozen else None
        if before == version and pinned == version:
            return Change(before, before, pinned, pinned)
        if before != version:
            _point(conn, dataset, CHAMPION, version, reason, by, PIN)
        _point(conn, dataset, PINNED, version, reason, by, PIN)
    return Change(before, version, pinned, version)


def unpin(engine: sa.Engine, dataset: str, reason: str, *, by: str | None = None) -> Change:
    """Let the nightly gate replace the champion again."""
    with _changing_aliases(engine, dataset) as conn:
        champion, frozen = (
            _alias_state(conn, dataset, CHAMPION),
            _alias_state(conn, dataset, PINNED),
        )
        current = champion.version if champion else None
        if frozen is None:
            return Change(current, current, None, None)
        _point(conn, dataset, PINNED, None, reason, by or current_user(), UNPIN)
    return Change(current, current, frozen.version, None)


def gate_hold(
    engine: sa.Engine, dataset: str, version: str, *, would_promote: bool
) -> tuple[str, str] | None:
    """Why the nightly gate must leave the champion alone, if it must: (decision, reason).
    "pinned" while the champion is pinned; "rejected" for a version an operator rolled back
    from and nobody promoted by hand since (only `promote` brings it back)."""
    frozen = get_aliases(engine, dataset).get(PINNED)
    if frozen is not None:
        return "pinned", f"champion pinned ({frozen.describe()})"
    if not would_promote:
        return None
    for row in alias_history(engine, dataset, version=version):
        if row["alias"] != CHAMPION:
            continue
        if row["action"] == ROLLBACK and row["previous_version"] == version:
            return "rejected", (
                f"{version} was rolled back from by {row['set_by'] or 'unknown'} on "
                f"{when(row['set_at'])}: {row['reason']}; only a promotion by hand brings it back"
            )
        if row["action"] in (PROMOTE, PIN) and row["version"] == version:
            return None
    return None


def read_manifest(uri: str) -> dict[str, Any]:
    """The manifest stored beside a registered model file."""
    fs, path = storage.url_to_fs(uri.rsplit("/", 1)[0] + "/manifest.json")
    with fs.open(path) as fh:
        return dict(json.loads(fh.read()))


def _fetch(version: str, url: str) -> bytes:
    """The bytes at a registered model's url, from whatever store it names (S3 included:
    storage.url_to_fs honours AWS_ENDPOINT_URL), read by the process that loads the model."""
    fs, path = storage.url_to_fs(url)
    try:
        with fs.open(path, "rb") as fh:
            return bytes(fh.read())
    except FileNotFoundError:
        if is_portable_uri(url):
            raise
        raise FileNotFoundError(  # a row registered before uris were made absolute
            f"model {version} is registered at the relative path {url}, which is not there "
            f"from {os.getcwd()}: register it again (the train flow does) to record an "
            f"absolute path or URL"
        ) from None


def _registered(engine: sa.Engine, version: str) -> dict[str, Any]:
    """The version's row, once its id is shown to be that of its sha256 and dataset."""
    row = get_version(engine, version)
    if not is_version_of(version, row["dataset"], row["sha256"]):
        raise ModelIntegrityError(
            f"model {version}: its registered sha256 {row['sha256'][:16]}... for dataset "
            f"{row['dataset']!r} does not give the version id; refusing to load it"
        )
    return row


def _stored(row: Mapping[str, Any], name: str) -> str:
    """The url of a file stored beside the version's model.ubj."""
    return str(row["uri"]).rsplit("/", 1)[0] + f"/{name}"


def _checked_manifest(version: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """The version's manifest, checked against its registered sha256."""
    manifest_url = _stored(row, "manifest.json")
    manifest_bytes = _fetch(version, manifest_url)
    # The manifest carries the drift references, the contract and the companions' sha256.
    if sha256_bytes(manifest_bytes) != row.get("manifest_sha256"):
        raise ModelIntegrityError(
            f"model {version}: {manifest_url} does not match its registered sha256 "
            f"(tampered, or registered before manifests were hashed: register it again); "
            f"refusing to load it"
        )
    return dict(json.loads(manifest_bytes))


def _companion(version: str, row: Mapping[str, Any], entry: Mapping[str, Any]) -> bytes:
    """A file stored beside model.ubj, checked against the sha256 its manifest entry gives."""
    url = _stored(row, entry["file"])
    data = _fetch(version, url)
    if sha256_bytes(data) != entry["sha256"]:
        raise ModelIntegrityError(
            f"model {version}: {entry['file']} at {url}: sha256 {sha256_bytes(data)[:16]}... "
            f"does not match the manifest's {str(entry['sha256'])[:16]}...; refusing to load it"
        )
    return data


def _contract(version: str, row: Mapping[str, Any]) -> schema.Contract:
    if not row.get("contract"):
        raise ModelIntegrityError(
            f"model {version} was registered without a contract (before batchpred recorded "
            f"features, vocabularies and encoding with each model); retrain it"
        )
    return schema.Contract.from_dict(row["contract"])


def _loaded(
    version: str, row: Mapping[str, Any], manifest: dict[str, Any], data: bytes
) -> LoadedModel:
    contract = _contract(version, row)
    booster = xgb.Booster()
    booster.load_model(bytearray(data))
    if list(booster.feature_names or []) != contract.feature_names:
        raise ModelIntegrityError(f"model {version}: feature names differ from its contract")
    return LoadedModel(version=version, booster=booster, manifest=manifest, contract=contract)


def load_model(engine: sa.Engine, version: str) -> LoadedModel:
    """Fetch a registered model and its manifest from the store its row names, check both
    against their registered sha256, and only then let xgboost parse the model. Every
    process loading a model (a Dask worker too) does this itself."""
    row = _registered(engine, version)
    data = _fetch(version, row["uri"])
    if sha256_bytes(data) != row["sha256"]:
        raise ModelIntegrityError(
            f"model {version} at {row['uri']}: sha256 {sha256_bytes(data)[:16]}... does not match "
            f"the registered {row['sha256'][:16]}...; refusing to load it"
        )
    return _loaded(version, row, _checked_manifest(version, row), data)


def load_evaluated(engine: sa.Engine, version: str) -> LoadedModel:
    """The version's evaluated model, the one the gate judges: its twin fit without the
    holdout (the manifest's `evaluated.file`, checked against the sha256 the hash-checked
    manifest gives), with the version's contract and manifest. The deployed model itself
    when training.refit was off, or the manifest is from before refits."""
    row = _registered(engine, version)
    manifest = _checked_manifest(version, row)
    entry = manifest.get("evaluated")
    if entry is None or entry["file"] == MODEL_FILE:
        return load_model(engine, version)
    return _loaded(version, row, manifest, _companion(version, row, entry))


@dataclass(frozen=True)
class LinearBaseline:
    """A version's baselines as its manifest records them: the linear model (gblinear on the
    matrix `encoding` describes, baselines.linear_matrix) and the prior (the training split's
    label mean), with the version's contract."""

    version: str
    booster: xgb.Booster
    encoding: dict[str, Any]
    prior: float
    contract: schema.Contract


def load_linear(engine: sa.Engine, version: str) -> LinearBaseline | None:
    """The version's linear baseline and prior, each file checked as load_evaluated checks
    the twin; None for a manifest from before baselines."""
    row = _registered(engine, version)
    manifest = _checked_manifest(version, row)
    kept = manifest.get("baselines") or {}
    entry = kept.get("linear")
    if entry is None:
        return None
    booster = baselines.load_linear(_companion(version, row, entry))
    return LinearBaseline(
        version=version,
        booster=booster,
        encoding=dict(entry["encoding"]),
        prior=float(kept["prior"]["value"]),
        contract=_contract(version, row),
    )
