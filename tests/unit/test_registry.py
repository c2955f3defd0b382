"""Model registry: content-addressed store, integrity check, aliases, promotion gate, and the
analysts' predictions_latest table.

tests/integration/test_postgres.py collects the view test again with `engine` on PostgreSQL.
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
import xgboost as xgb

from batchpred import db, promotion, registry, schema, sinks
from batchpred.config import Settings
from tests.unit.test_scoring import settings_for, train_small
from tests.unit.test_sinks import batch, write


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A good churn model and one trained on shuffled labels, sharing one holdout file."""
    tmp = tmp_path_factory.mktemp("registry_models")
    settings = settings_for("churn", tmp)
    good, holdout = train_small(settings, tmp / "good")
    bad, _ = train_small(settings, tmp / "bad", shuffle_labels=True)
    return {"settings": settings, "good": good, "bad": bad, "holdout": holdout}


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "models")


def manifest_of(model_dir: Path) -> dict:
    return json.loads((model_dir / "manifest.json").read_text())


def history(engine: sa.Engine, dataset: str = "churn") -> list[tuple]:
    t = db.table(engine, "model_alias_history")
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.alias, t.c.version, t.c.previous_version, t.c.reason)
            .where(t.c.dataset == dataset)
            .order_by(t.c.id)
        )
        return [tuple(r) for r in rows]


def test_register_and_load_roundtrip(engine: sa.Engine, models: dict, store: str) -> None:
    good: Path = models["good"]
    manifest = manifest_of(good)
    version = registry.register_model(engine, good, store, dvc_hash="d41d8cd9")
    assert version == registry.version_of("churn", manifest["sha256"])
    assert (Path(store) / version / "model.ubj").read_bytes() == (good / "model.ubj").read_bytes()
    row = registry.get_version(engine, version)
    assert row["sha256"] == manifest["sha256"] and row["dataset"] == "churn"
    assert row["uri"] == f"{store}/{version}/model.ubj" and row["dvc_md5"] == "d41d8cd9"
    assert row["features"] == manifest["features"]
    assert row["reference_stats"] == manifest["reference_stats"]
    assert row["contract"] == manifest["contract"]

    model = registry.load_model(engine, version)
    assert model.version == version and model.manifest == manifest
    assert model.contract == schema.Contract.from_dict(manifest["contract"])
    assert model.contract.feature_names == models["settings"].dataset.feature_names
    holdout = pq.read_table(models["holdout"])
    x, _ = schema.feature_matrix(holdout, model.contract)
    original = xgb.Booster(model_file=str(good / "model.ubj"))
    expected = original.inplace_predict(x, validate_features=False)
    np.testing.assert_array_equal(
        model.booster.inplace_predict(x, validate_features=False), expected
    )
    np.testing.assert_array_equal(registry.predict_table(model, holdout), expected)


def test_model_registered_without_a_contract_is_refused(
    engine: sa.Engine, models: dict, store: str
) -> None:
    """A model from before contracts cannot say how to encode its inputs: retrain it."""
    version = registry.register_model(engine, models["good"], store)
    t = db.table(engine, "model_versions")
    with engine.begin() as conn:
        conn.execute(t.update().where(t.c.version == version).values(contract=None))
    with pytest.raises(registry.ModelIntegrityError, match="without a contract.*retrain") as err:
        registry.load_model(engine, version)
    assert version in str(err.value)


def test_registering_twice_gives_the_same_version(
    engine: sa.Engine, models: dict, store: str
) -> None:
    first = registry.register_model(engine, models["good"], store)
    assert registry.register_model(engine, models["good"], store) == first
    other = registry.register_model(engine, models["bad"], store)
    assert other != first
    t = db.table(engine, "model_versions")
    with engine.connect() as conn:
        assert sorted(conn.execute(sa.select(t.c.version)).scalars()) == sorted([first, other])


def test_unknown_version_is_a_clear_error(engine: sa.Engine) -> None:
    with pytest.raises(registry.UnknownModelError, match="'0000000000000000' is not registered"):
        registry.load_model(engine, "0000000000000000")


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_tampered_model_is_refused(
    engine: sa.Engine, models: dict, store: str, damage: str
) -> None:
    version = registry.register_model(engine, models["good"], store)
    path = Path(store) / version / "model.ubj"
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        del data[-10:]
    path.write_bytes(bytes(data))
    with pytest.raises(registry.ModelIntegrityError, match="refusing to load it") as err:
        registry.load_model(engine, version)
    assert version in str(err.value) and "does not match" in str(err.value)


def test_tampered_manifest_is_refused(engine: sa.Engine, models: dict, store: str) -> None:
    """The manifest holds the drift references and the contract: editing it (here, the
    reference statistics a drift check compares against) is caught like a tampered model."""
    version = registry.register_model(engine, models["good"], store)
    sha = registry.load_model(engine, version).manifest["sha256"]
    assert version == registry.version_of("churn", sha)
    path = Path(store) / version / "manifest.json"
    manifest = json.loads(path.read_text())
    first = next(iter(manifest["reference_stats"]))
    manifest["reference_stats"][first]["null_rate"] = 0.5
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    with pytest.raises(registry.ModelIntegrityError, match="manifest.json does not match"):
        registry.load_model(engine, version)


def test_the_evaluated_twin_and_the_linear_baseline_are_stored_and_loaded(
    engine: sa.Engine, models: dict, store: str, tmp_path: Path
) -> None:
    """The gate judges the evaluated twin (fit without the holdout), not the deployed model
    refit on it: a different model, stored beside it with the linear baseline, each checked
    against the sha256 the (hash-checked) manifest gives."""
    good: Path = models["good"]
    manifest = manifest_of(good)
    version = registry.register_model(engine, good, store)
    for name in ("evaluated.ubj", "linear.ubj"):
        assert (Path(store) / version / name).read_bytes() == (good / name).read_bytes()
    holdout = pq.read_table(models["holdout"])
    deployed, evaluated = (
        registry.load_model(engine, version),
        registry.load_evaluated(engine, version),
    )
    assert evaluated.version == version and evaluated.contract == deployed.contract
    assert evaluated.manifest == manifest
    twin = xgb.Booster(model_file=str(good / "evaluated.ubj"))
    x, _ = schema.feature_matrix(holdout, evaluated.contract)
    np.testing.assert_array_equal(
        registry.predict_table(evaluated, holdout), twin.inplace_predict(x, validate_features=False)
    )
    assert not np.allclose(
        registry.predict_table(evaluated, holdout), registry.predict_table(deployed, holdout)
    )
    linear = registry.load_linear(engine, version)
    assert linear is not None and linear.encoding == manifest["baselines"]["linear"]["encoding"]
    assert linear.prior == manifest["baselines"]["prior"]["value"]


def test_a_manifest_from_before_refits_is_its_own_evaluated_model(
    engine: sa.Engine, models: dict, store: str, tmp_path: Path
) -> None:
    legacy = tmp_path / "legacy"
    shutil.copytree(models["good"], legacy)
    for name in ("evaluated.ubj", "linear.ubj"):
        (legacy / name).unlink()
    manifest = manifest_of(legacy)
    for key in ("evaluated", "refit", "baselines", "tuning"):
        manifest.pop(key, None)
    (legacy / "manifest.json").write_text(json.dumps(manifest))
    version = registry.register_model(engine, legacy, store)
    assert sorted(p.name for p in (Path(store) / version).iterdir()) == [
        "manifest.json",
        "model.ubj",
    ]
    holdout = pq.read_table(models["holdout"])
    np.testing.assert_array_equal(
        registry.predict_table(registry.load_evaluated(engine, version), holdout),
        registry.predict_table(registry.load_model(engine, version), holdout),
    )
    assert registry.load_linear(engine, version) is None


@pytest.mark.parametrize("name", ["evaluated.ubj", "linear.ubj"])
def test_a_tampered_companion_is_refused_by_name(
    engine: sa.Engine, models: dict, store: str, tmp_path: Path, name: str
) -> None:
    version = registry.register_model(engine, models["good"], store)
    path = Path(store) / version / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    load = registry.load_evaluated if name == "evaluated.ubj" else registry.load_linear
    with pytest.raises(registry.ModelIntegrityError, match=f"{name} at .* does not match"):
        load(engine, version)
    registry.load_model(engine, version)  # the deployed model is untouched
    # and a model directory whose companion does not match its manifest is not registered
    copy = tmp_path / "copy"
    shutil.copytree(models["good"], copy)
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(registry.ModelIntegrityError, match=f"copy/{name} does not match"):
        registry.register_model(engine, copy, store)


@pytest.mark.parametrize("column, value", [("sha256", "0" * 64), ("dataset", "deliveries")])
def test_a_version_id_must_be_that_of_its_sha256_and_dataset(
    engine: sa.Engine, models: dict, store: str, column: str, value: str
) -> None:
    """A row edited to name other bytes, or to hand the model to another dataset, no longer
    gives its version id: loading it is refused."""
    version = registry.register_model(engine, models["good"], store)
    t = db.table(engine, "model_versions")
    with engine.begin() as conn:
        conn.execute(t.update().where(t.c.version == version).values({column: value}))
    with pytest.raises(registry.ModelIntegrityError, match="does not give the version id"):
        registry.load_model(engine, version)


def twin_for(model_dir: Path, dataset: str, threshold: float, out: Path) -> Path:
    """The same model bytes, with a manifest (and contract) of another dataset."""
    shutil.copytree(model_dir, out)
    manifest = manifest_of(out)
    manifest["dataset"] = manifest["contract"]["dataset"] = dataset
    manifest["contract"]["threshold"] = threshold
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return out


def test_identical_bytes_for_two_datasets_are_two_registrations(
    engine: sa.Engine, models: dict, store: str, tmp_path: Path
) -> None:
    """Issue 13: one model file trained for churn and for deliveries used to get one version,
    and the second registration rewrote the first's manifest (dataset, threshold) while the
    row kept the first dataset. Now each dataset has its own version, stored manifest, row,
    listing and aliases, and registering one never touches the other."""
    churn_dir = models["good"]
    twin = twin_for(churn_dir, "deliveries", 0.3, tmp_path / "twin")
    assert (twin / "model.ubj").read_bytes() == (churn_dir / "model.ubj").read_bytes()

    churn = registry.register_model(engine, churn_dir, store, dataset="churn")
    stored_churn = (Path(store) / churn / "manifest.json").read_bytes()
    row_churn = registry.get_version(engine, churn)
    deliveries = registry.register_model(engine, twin, store, dataset="deliveries")

    assert deliveries != churn
    assert deliveries == registry.version_of("deliveries", manifest_of(twin)["sha256"])
    assert (Path(store) / churn / "manifest.json").read_bytes() == stored_churn
    assert registry.get_version(engine, churn) == row_churn
    assert registry.read_manifest(row_churn["uri"]) == manifest_of(churn_dir)
    row_deliveries = registry.get_version(engine, deliveries)
    assert registry.read_manifest(row_deliveries["uri"]) == manifest_of(twin)
    assert (row_churn["dataset"], row_deliveries["dataset"]) == ("churn", "deliveries")
    assert row_churn["sha256"] == row_deliveries["sha256"]  # the bytes' digest, both

    loaded_churn, loaded_deliveries = (
        registry.load_model(engine, churn),
        registry.load_model(engine, deliveries),
    )
    assert loaded_churn.manifest["dataset"] == "churn"
    assert loaded_churn.contract.threshold == manifest_of(churn_dir)["contract"]["threshold"]
    assert loaded_deliveries.manifest["dataset"] == "deliveries"
    assert loaded_deliveries.contract.threshold == 0.3

    assert [v["version"] for v in registry.list_versions(engine, "churn")] == [churn]
    assert [v["version"] for v in registry.list_versions(engine, "deliveries")] == [deliveries]
    registry.set_alias(engine, "churn", "champion", churn, "churn's own")
    registry.set_alias(engine, "deliveries", "challenger", deliveries, "deliveries' own")
    assert registry.get_aliases(engine, "churn").keys() == {"champion"}
    assert registry.get_aliases(engine, "deliveries").keys() == {"challenger"}
    assert registry.get_alias(engine, "churn", "champion") == churn
    assert registry.get_alias(engine, "deliveries", "challenger") == deliveries
    with pytest.raises(registry.LifecycleError, match="belongs to dataset 'churn'"):
        registry.promote(engine, "deliveries", churn, "wrong dataset")

    # Registering each again is idempotent and still leaves the other alone.
    assert registry.register_model(engine, churn_dir, store) == churn
    assert registry.register_model(engine, twin, store) == deliveries
    assert registry.read_manifest(row_churn["uri"]) == manifest_of(churn_dir)
    assert registry.read_manifest(row_deliveries["uri"]) == manifest_of(twin)
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from model_versions")).scalar() == 2


def test_a_version_registered_before_ids_carried_the_dataset_keeps_its_id(
    engine: sa.Engine, models: dict, store: str, tmp_path: Path
) -> None:
    """A row from before (version = sha256[:16], files under that folder) still loads, is what
    registering the same bytes for its dataset returns, and another dataset's registration of
    those bytes gets its own version instead of rewriting it."""
    good: Path = models["good"]
    sha = manifest_of(good)["sha256"]
    new = registry.register_model(engine, good, store)
    old = sha[:16]
    shutil.copytree(Path(store) / new, Path(store) / old)
    shutil.rmtree(Path(store) / new)
    t = db.table(engine, "model_versions")
    with engine.begin() as conn:
        conn.execute(
            t.update().where(t.c.version == new).values(version=old, uri=f"{store}/{old}/model.ubj")
        )
    stored = (Path(store) / old / "manifest.json").read_bytes()

    assert registry.load_model(engine, old).manifest == manifest_of(good)
    assert registry.register_model(engine, good, store) == old
    twin = twin_for(good, "deliveries", 0.3, tmp_path / "twin")
    other = registry.register_model(engine, twin, store)
    assert other not in (old, new)
    assert (Path(store) / old / "manifest.json").read_bytes() == stored
    assert registry.get_version(engine, old)["dataset"] == "churn"
    assert [v["version"] for v in registry.list_versions(engine, "churn")] == [old]
    assert registry.load_model(engine, other).contract.threshold == 0.3


def test_a_manifest_of_another_dataset_is_not_registered(
    engine: sa.Engine, models: dict, store: str, tmp_path: Path
) -> None:
    with pytest.raises(
        registry.ModelIntegrityError, match="is for dataset 'churn', not 'deliveries'"
    ):
        registry.register_model(engine, models["good"], store, dataset="deliveries")
    nameless = tmp_path / "nameless"
    shutil.copytree(models["good"], nameless)
    manifest = manifest_of(nameless)
    del manifest["dataset"]
    (nameless / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(registry.ModelIntegrityError, match="names no dataset"):
        registry.register_model(engine, nameless, store)
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from model_versions")).scalar() == 0
    assert not Path(store).exists() or not any(Path(store).iterdir())


def test_model_not_matching_its_manifest_is_not_registered(
    engine: sa.Engine, models: dict, store: str, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(models["good"], copy)
    shutil.copy(models["bad"] / "model.ubj", copy / "model.ubj")
    with pytest.raises(registry.ModelIntegrityError, match="does not match its manifest"):
        registry.register_model(engine, copy, store)
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from model_versions")).scalar() == 0


def test_set_alias_moves_it_and_keeps_history(engine: sa.Engine, models: dict, store: str) -> None:
    v1 = registry.register_model(engine, models["good"], store)
    v2 = registry.register_model(engine, models["bad"], store)
    assert registry.get_alias(engine, "churn", "champion") is None
    registry.set_alias(engine, "churn", "champion", v1, "first model")
    registry.set_alias(engine, "churn", "champion", v2, "promoted")
    registry.set_alias(engine, "churn", "champion", v1, "rollback")
    assert registry.get_alias(engine, "churn", "champion") == v1
    assert registry.resolve_version(engine, "churn", "champion") == v1
    assert history(engine) == [
        ("champion", v1, None, "first model"),
        ("champion", v2, v1, "promoted"),
        ("champion", v1, v2, "rollback"),
    ]
    assert registry.get_alias(engine, "deliveries", "champion") is None  # per dataset
    with pytest.raises(registry.UnknownModelError):
        registry.set_alias(engine, "churn", "champion", "0" * 16, "typo")
    assert registry.get_alias(engine, "churn", "champion") == v1


def test_resolve_version(engine: sa.Engine, models: dict, store: str) -> None:
    with pytest.raises(registry.UnknownModelError, match="no 'champion' model yet"):
        registry.resolve_version(engine, "churn", "champion")
    with pytest.raises(registry.UnknownModelError, match="no 'challenger' model yet"):
        registry.resolve_version(engine, "churn", "challenger")
    version = registry.register_model(engine, models["good"], store)
    assert registry.resolve_version(engine, "churn", version) == version


def test_promote_if_better(engine: sa.Engine, models: dict, store: str) -> None:
    base: Settings = models["settings"]
    settings = base.model_copy(
        update={"training": base.training.model_copy(update={"registry": store})}
    )
    holdout = models["holdout"]
    first = promotion.promote_if_better(engine, settings, models["good"], holdout)
    good = first.version
    assert first.decision == "promoted" and first.champion_before is None
    assert "no champion" in first.describe() and first.champion_metrics is None
    assert first.challenger_metrics["auc"] > 0.65
    assert registry.get_alias(engine, "churn", "champion") == good
    # the registry keeps the evaluated model's metrics on the whole holdout (here: the rows
    # compared), with the baselines' on the same rows, the lift, and which model they are of
    recorded = registry.get_version(engine, good)["metrics"]
    assert {k: recorded[k] for k in first.challenger_metrics} == first.challenger_metrics
    assert recorded["baselines"] == first.baselines and set(first.baselines) == {"linear", "prior"}
    assert recorded["lift_over_linear"] == pytest.approx(first.lift)
    assert recorded["evaluated"].startswith("evaluated model: fit on 900 rows without the holdout")

    worse = promotion.promote_if_better(engine, settings, models["bad"], holdout)
    assert worse.decision == "rejected" and worse.champion_before == good
    assert "more than the 0.0050 a new model may lose" in worse.describe()
    assert worse.challenger_metrics["auc"] < first.challenger_metrics["auc"] - 0.1
    assert worse.champion_metrics == first.challenger_metrics
    assert registry.get_alias(engine, "churn", "champion") == good
    assert registry.get_alias(engine, "churn", "challenger") == worse.version

    again = promotion.promote_if_better(engine, settings, models["good"], holdout)
    assert again.decision == "unchanged" and again.version == good
    assert [(a, v) for a, v, _, _ in history(engine)] == [
        ("champion", good),
        ("challenger", worse.version),
    ]
    # the history keeps the decision's reasons in words, as the gate made them
    assert [r for _, _, _, r in history(engine)] == [first.describe(), worse.describe()]


def test_predictions_latest_keeps_each_entitys_newest_champion_prediction(
    engine: sa.Engine, models: dict, store: str
) -> None:
    champ = registry.register_model(engine, models["good"], store)
    other = registry.register_model(engine, models["bad"], store)
    day1, day2, day3 = date(2026, 10, 1), date(2026, 10, 2), date(2026, 10, 3)

    def part(version: str, day: date, ids: list[str], seed: int) -> dict[str, tuple]:
        b = batch(ids, seed=seed)
        write(engine, sinks.PartitionKey("churn", day, version), [b], run_id=f"run-{seed}")
        return {
            e: ("churn", str(day), pytest.approx(s), version)
            for e, s in zip(ids, b.scores.tolist(), strict=True)
        }

    def latest() -> dict[str, tuple]:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "select dataset, entity_id, partition_date, score, model_version "
                    "from predictions_latest"
                )
            ).all()
        return {
            r.entity_id: (r.dataset, str(r.partition_date), r.score, r.model_version) for r in rows
        }

    z = part(champ, date(2026, 9, 30), ["z"], seed=9)
    assert latest() == {}  # written while no model was champion
    registry.set_alias(engine, "churn", "champion", champ, "test")
    assert latest() == z  # the champion now: its predictions are current, older ones too
    c1 = part(champ, day1, ["a", "b"], seed=1)
    c2 = part(champ, day2, ["a", "c"], seed=2)
    shadow = part(other, day2, ["a", "b", "c", "d"], seed=3)  # a challenger's shadow scores
    want = z | {"a": c2["a"], "b": c1["b"], "c": c2["c"]}
    assert latest() == want
    registry.set_alias(engine, "churn", "champion", other, "promotion")
    # the new champion's own predictions are current; z keeps the earlier champion's
    want = z | shadow
    assert latest() == want
    o3 = part(other, day3, ["a", "d"], seed=4)
    want |= o3
    assert latest() == want
    o1 = part(other, day1, ["b", "e"], seed=5)  # backfill of an older day by the champion
    # b: the champion's day2 is newer and stays; e: new
    assert latest() == want | {"e": o1["e"]}
