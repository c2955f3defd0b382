"""Model registry: content-addressed model files plus versions and aliases in the database.

A version id is the first 16 hex digits of the model file's sha256. Files live under
``{registry}/{version}/`` (any fsspec URL); the database row keeps the full sha256, which is
checked against the bytes before xgboost ever parses them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import xgboost as xgb

from batchpred import db, schema, storage
from batchpred.config import DatasetSpec, Settings

CHAMPION = "champion"
CHALLENGER = "challenger"


class ModelIntegrityError(Exception):
    """The model bytes do not match the registered sha256 (tampered or truncated)."""


class UnknownModelError(LookupError):
    pass


@dataclass(frozen=True)
class LoadedModel:
    version: str
    booster: xgb.Booster
    manifest: dict[str, Any]
    contract: schema.Contract


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def version_of(sha256: str) -> str:
    return sha256[:16]


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


def register_model(
    engine: sa.Engine, model_dir: str | Path, registry: str, *, dvc_hash: str | None = None
) -> str:
    """Copy a trained model (model.ubj + manifest.json) into the store and record it.
    Idempotent: registering the same bytes twice returns the same version."""
    model_dir = Path(model_dir)
    data = (model_dir / "model.ubj").read_bytes()
    manifest = json.loads((model_dir / "manifest.json").read_text())
    digest = sha256_bytes(data)
    if manifest.get("sha256") != digest:
        raise ModelIntegrityError(f"{model_dir}/model.ubj does not match its manifest sha256")
    version = version_of(digest)
    fs, root = storage.url_to_fs(registry)
    target = f"{root}/{version}"
    fs.makedirs(target, exist_ok=True)
    with fs.open(f"{target}/model.ubj", "wb") as fh:
        fh.write(data)
    with fs.open(f"{target}/manifest.json", "w") as fh:
        fh.write(json.dumps(manifest, indent=2, sort_keys=True))
    t = db.table(engine, "model_versions")
    with engine.begin() as conn:
        exists = conn.execute(sa.select(t.c.version).where(t.c.version == version)).first()
        if not exists:
            conn.execute(
                t.insert().values(
                    version=version,
                    dataset=manifest["dataset"],
                    sha256=digest,
                    dvc_md5=dvc_hash,
                    uri=f"{registry.rstrip('/')}/{version}/model.ubj",
                    xgboost_version=manifest["xgboost_version"],
                    features=manifest["features"],
                    params=manifest["params"],
                    training_data_hash=manifest["training_data_hash"],
                    metrics=manifest.get("metrics", {}),
                    reference_stats=manifest["reference_stats"],
                    contract=manifest["contract"],
                    created_at=datetime.now(UTC),
                )
            )
    return version


def update_metrics(engine: sa.Engine, version: str, metrics: dict[str, Any]) -> None:
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


def set_alias(engine: sa.Engine, dataset: str, alias: str, version: str, reason: str) -> None:
    """Point an alias at a version (promotion, rollback) and append to its history."""
    get_version(engine, version)
    aliases, history = db.table(engine, "model_aliases"), db.table(engine, "model_alias_history")
    now = datetime.now(UTC)
    with engine.begin() as conn:
        previous = conn.execute(
            sa.select(aliases.c.version).where(
                aliases.c.dataset == dataset, aliases.c.alias == alias
            )
        ).scalar()
        conn.execute(aliases.delete().where(aliases.c.dataset == dataset, aliases.c.alias == alias))
        conn.execute(
            aliases.insert().values(dataset=dataset, alias=alias, version=version, set_at=now)
        )
        conn.execute(
            history.insert().values(
                dataset=dataset,
                alias=alias,
                version=version,
                previous_version=previous,
                reason=reason,
                set_at=now,
            )
        )


def resolve_version(engine: sa.Engine, dataset: str, ref: str) -> str:
    """A version id, or an alias name (champion / challenger) resolved to one."""
    version = get_alias(engine, dataset, ref) if ref in (CHAMPION, CHALLENGER) else ref
    if version is None:
        raise UnknownModelError(f"dataset {dataset!r} has no {ref!r} model yet; train one first")
    return version


def load_model(engine: sa.Engine, version: str) -> LoadedModel:
    """Fetch a registered model from its store, check its sha256, then parse it."""
    row = get_version(engine, version)
    fs, path = storage.url_to_fs(row["uri"])
    with fs.open(path, "rb") as fh:
        data = fh.read()
    if sha256_bytes(data) != row["sha256"]:
        raise ModelIntegrityError(
            f"model {version} at {row['uri']}: sha256 {sha256_bytes(data)[:16]}... does not match "
            f"the registered {row['sha256'][:16]}...; refusing to load it"
        )
    booster = xgb.Booster()
    booster.load_model(bytearray(data))
    manifest_fs, manifest_path = storage.url_to_fs(row["uri"].rsplit("/", 1)[0] + "/manifest.json")
    with manifest_fs.open(manifest_path) as fh:
        manifest = json.loads(fh.read())
    if not row.get("contract"):
        raise ModelIntegrityError(
            f"model {version} was registered without a contract (before batchpred recorded "
            f"features, vocabularies and encoding with each model); retrain it"
        )
    contract = schema.Contract.from_dict(row["contract"])
    if list(booster.feature_names or []) != contract.feature_names:
        raise ModelIntegrityError(f"model {version}: feature names differ from its contract")
    return LoadedModel(version=version, booster=booster, manifest=manifest, contract=contract)


def predict_table(model: LoadedModel, table: Any) -> Any:
    """Scores for every row of an Arrow table, matrix built from the model's own contract."""
    matrix, _ = schema.feature_matrix(table, model.contract)
    return model.booster.inplace_predict(matrix, validate_features=False)


def evaluate_on(model: LoadedModel, spec: DatasetSpec, holdout_path: str | Path) -> dict[str, Any]:
    """Metrics of a registered model on a holdout file (the challenger's holdout): each model
    reads the holdout through its own contract."""
    import pyarrow.parquet as pq

    from batchpred import training

    table = pq.read_table(holdout_path)
    y = table.column(spec.target.name).to_numpy(zero_copy_only=False)
    return training.metrics_for(spec, y, predict_table(model, table), model.contract.threshold)


def promote_if_better(
    engine: sa.Engine,
    settings: Settings,
    model_dir: str | Path,
    holdout_path: str | Path,
    *,
    dvc_hash: str | None = None,
) -> dict[str, Any]:
    """Register the trained model, evaluate it and the champion on the same holdout, and
    promote it to champion if it passes the gate (else it becomes the challenger)."""
    from batchpred import training

    spec = settings.dataset
    version = register_model(engine, model_dir, settings.training.registry, dvc_hash=dvc_hash)
    challenger = evaluate_on(load_model(engine, version), spec, holdout_path)
    update_metrics(engine, version, challenger)
    champion_version = get_alias(engine, spec.name, CHAMPION)
    champion = None
    if champion_version and champion_version != version:
        champion = evaluate_on(load_model(engine, champion_version), spec, holdout_path)
    if champion_version == version:
        decision, reason = "unchanged", "this model is already the champion"
    else:
        ok, reason = training.passes_gate(settings.training.gate, challenger, champion)
        decision = "promoted" if ok else "rejected"
        set_alias(engine, spec.name, CHAMPION if ok else CHALLENGER, version, reason)
    return {
        "version": version,
        "champion_before": champion_version,
        "decision": decision,
        "reason": reason,
        "challenger_metrics": challenger,
        "champion_metrics": champion,
    }
