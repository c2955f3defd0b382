"""The model contract: scoring builds the matrix from what the model was trained with (features,
order, vocabularies, encoding), never from today's YAML, which is only checked against it."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from batchpred import demo, registry, schema, sinks, storage, training
from batchpred.config import Settings
from batchpred.registry import LoadedModel
from batchpred.schema import Contract, ContractFeature, ContractMismatch
from batchpred.scoring import score_partition
from tests.unit import test_scoring
from tests.unit.test_scoring import FAST, edit, make_lake, settings_for, stored, with_feature

churn_model = test_scoring.churn_model  # the module-scoped trained model fixture


# --- building and encoding --------------------------------------------------------------------


def test_listed_categories_are_the_vocabulary_in_the_spec_order(churn: Settings) -> None:
    contract = schema.build_contract(churn.dataset)
    region = contract.features[churn.dataset.feature_names.index("region")]
    assert region == ContractFeature(
        "region", "category", churn.dataset.feature("region").categories
    )
    assert contract.feature_names == churn.dataset.feature_names
    assert contract.feature_types == [
        "c" if f.dtype == "category" else "q" for f in churn.dataset.features
    ]
    assert (contract.dataset, contract.task, contract.target) == ("churn", "binary", "churned")
    assert contract.threshold == 0.5 and contract.encoding == schema.ENCODING


def test_a_feature_without_categories_learns_its_vocabulary_from_the_data(churn: Settings) -> None:
    spec = with_feature(churn.dataset, "region", categories=None)
    train = pa.table({"region": pa.array(["west", None, "east", "west", "north"])})
    contract = schema.build_contract(spec, train)  # listed categories come from the spec
    vocabularies = {f.name: f.vocabulary for f in contract.features if f.dtype == "category"}
    assert vocabularies["region"] == ("east", "north", "west")  # sorted, nulls left out
    assert vocabularies["contract"] == spec.feature("contract").categories
    with pytest.raises(ValueError, match="'region' lists no categories"):
        schema.build_contract(spec)


def test_contract_survives_json(churn: Settings) -> None:
    contract = schema.build_contract(churn.dataset)
    assert Contract.from_dict(json.loads(json.dumps(contract.to_dict()))) == contract


def test_feature_matrix_follows_the_contract_not_the_table(churn: Settings) -> None:
    contract = Contract(
        dataset="churn",
        task="binary",
        target="churned",
        features=(
            ContractFeature("region", "category", ("north", "south")),
            ContractFeature("has_partner", "bool"),
            ContractFeature("tenure_months", "int"),
        ),
        threshold=0.5,
        spec_hash="x",
    )
    table = pa.table(
        {
            "tenure_months": pa.array([3, None, 7], pa.int64()),
            "extra": pa.array(["ignored"] * 3),
            "has_partner": pa.array([True, False, None]),
            "region": pa.array(["south", "atlantis", None]).dictionary_encode(),
        }
    )
    matrix, unknown = schema.feature_matrix(table, contract)
    assert matrix.dtype == np.float32 and matrix.shape == (3, 3)
    np.testing.assert_array_equal(
        matrix, np.array([[1, 1, 3], [np.nan, 0, np.nan], [np.nan, np.nan, 7]], np.float32)
    )
    assert list(unknown) == ["region"] and unknown["region"].tolist() == [False, True, False]
    values, mask = schema.encode_column(contract.features[1], table.column("has_partner"))
    assert mask is None and values.tolist()[:2] == [1.0, 0.0]
    with pytest.raises(KeyError, match="'region' is missing"):
        schema.feature_matrix(table.drop_columns(["region"]), contract)


def test_check_compatible(churn: Settings) -> None:
    spec = churn.dataset
    contract = schema.build_contract(spec)
    relaxed = with_feature(spec, "region", categories=("west", "north", "mars"), on_unknown="fail")
    relaxed = with_feature(relaxed, "tenure_months", max=600, nullable=True)
    reordered = relaxed.model_copy(update={"features": relaxed.features[::-1]})
    schema.check_compatible(contract, reordered, "v1")  # order, ranges, lists may change
    grown = spec.model_copy(
        update={"features": (*spec.features, spec.features[0].model_copy(update={"name": "x"}))}
    )
    schema.check_compatible(contract, grown, "v1")  # a new feature the model ignores
    gone = spec.model_copy(update={"features": spec.features[1:]})
    with pytest.raises(ContractMismatch, match=r"model v1 .*'tenure_months' \(int\) is not in"):
        schema.check_compatible(contract, gone, "v1")
    retyped = with_feature(spec, "tenure_months", dtype="float")
    with pytest.raises(ContractMismatch, match="'tenure_months' is float in the spec, int in"):
        schema.check_compatible(contract, retyped, "v1")
    other = spec.model_copy(update={"name": "other"})
    with pytest.raises(ContractMismatch, match="the model is for 'churn'"):
        schema.check_compatible(contract, other, "v1")


# --- scoring through the contract -------------------------------------------------------------


def test_reordered_spec_gives_byte_identical_scores(
    engine: sa.Engine, churn_model: tuple[Settings, LoadedModel], tmp_path: Path
) -> None:
    """Features and category lists listed in another order: the same model scores the same
    partition to the same bytes (the matrix comes from the contract)."""
    settings, model = churn_model
    spec = settings.dataset
    reordered = spec.model_copy(
        update={
            "features": tuple(
                f.model_copy(update={"categories": f.categories[::-1]}) if f.categories else f
                for f in spec.features[::-1]
            )
        }
    )
    assert reordered.feature_names != spec.feature_names
    root = str(tmp_path / "lake")
    day = make_lake(settings, root)[0]
    args = (settings.validation, settings.scoring, model, root, day)
    score_partition(engine, spec, *args, "r1")
    before = {i: r["score"] for i, r in stored(engine, day, model.version).items()}
    result = score_partition(engine, reordered, *args, "r2", force=True)
    assert result.rows_scored == 200
    after = {i: r["score"] for i, r in stored(engine, day, model.version).items()}
    assert after == before  # exact equality of every float
    table = storage.read_partition(root, day)
    shuffled = table.select(table.column_names[::-1])
    assert registry.predict_table(model, shuffled).tobytes() == (
        registry.predict_table(model, table).tobytes()
    )


@pytest.mark.parametrize("change", ["removed", "retyped"])
def test_spec_that_cannot_feed_the_model_is_refused_before_any_row_is_written(
    change: str,
    engine: sa.Engine,
    churn_model: tuple[Settings, LoadedModel],
    tmp_path: Path,
) -> None:
    settings, model = churn_model
    spec = settings.dataset
    if change == "removed":
        spec = spec.model_copy(
            update={"features": tuple(f for f in spec.features if f.name != "support_calls")}
        )
    else:
        spec = with_feature(spec, "support_calls", dtype="float")
    root = str(tmp_path / "lake")
    day = make_lake(settings, root)[0]
    with pytest.raises(ContractMismatch) as err:
        score_partition(engine, spec, settings.validation, settings.scoring, model, root, day, "r1")
    assert model.version in str(err.value) and "'support_calls'" in str(err.value)
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from predictions")).scalar() == 0
        assert conn.execute(sa.text("select count(*) from validation_results")).scalar() == 0
    assert sinks.ledger_row(engine, day, model.version) is None


def test_vocabulary_learned_in_training_scores_unseen_values_as_missing(
    engine: sa.Engine, tmp_path: Path
) -> None:
    """`region` without a category list: the model's vocabulary is the values of the window's
    rows (train, valid and holdout: one contract for the evaluated and the refit model),
    frozen into its contract; a value outside it is scored as missing and counted, and the
    partition still validates (no list, no set rule)."""
    settings = settings_for("churn", tmp_path)
    spec = settings.dataset
    learned = settings.model_copy(
        update={
            "dataset": with_feature(spec, "region", categories=None),
            "training": settings.training.model_copy(update=FAST),
        }
    )
    cfg = settings.demo.model_copy(update={"rows_per_day": 300})
    days = [cfg.start_date + timedelta(days=i) for i in range(5)]
    data = tmp_path / "data"
    data.mkdir()
    tables = [demo.generate_day(spec, cfg, d) for d in days]
    iso = [d.isoformat() for d in days]
    splits = {"train": iso[:3], "valid": iso[3:4], "holdout": iso[4:]}
    parts = {"train": tables[:3], "valid": tables[3:4], "holdout": tables[4:]}
    for split, table in ((s, pa.concat_tables(p)) for s, p in parts.items()):
        central = np.flatnonzero(pc.equal(table.column("region"), "central").to_numpy(False))
        table = edit(table, "region", dict.fromkeys(central.tolist(), "north"))
        pq.write_table(table, data / f"{split}.parquet")
    summary = {"days": iso, "splits": splits, "data_hash": "learned"}
    (data / training.PREPARE_FILE).write_text(json.dumps(summary))
    manifest = training.train_model(learned, data, tmp_path / "model")
    (region,) = [f for f in manifest["contract"]["features"] if f["name"] == "region"]
    assert list(region["vocabulary"]) == ["east", "north", "south", "west"]  # no central

    version = registry.register_model(engine, tmp_path / "model", str(tmp_path / "models"))
    model = registry.load_model(engine, version)
    assert model.booster.feature_types[spec.feature_names.index("region")] == "c"
    root = str(tmp_path / "lake")
    day = make_lake(settings, root)[0]
    regions = storage.read_partition(root, day).column("region")
    central = pc.sum(pc.equal(regions, "central")).as_py()
    assert central > 0
    result = score_partition(
        engine, learned.dataset, learned.validation, learned.scoring, model, root, day, "r1"
    )
    assert (result.status, result.rows_scored, result.rows_rejected) == ("scored", 200, 0)
    assert result.unknown_values == {"region": central}
    assert sinks.ledger_row(engine, day, version)["unknown_values"] == {"region": central}


def test_models_keep_their_own_contracts(churn_model: tuple[Settings, LoadedModel]) -> None:
    """What the registry hands back is the contract trained with, not today's spec."""
    settings, model = churn_model
    assert model.contract.feature_names == settings.dataset.feature_names
    assert model.contract.spec_hash == schema.spec_fingerprint(settings.dataset)
    assert model.manifest["contract"] == json.loads(json.dumps(model.contract.to_dict()))
