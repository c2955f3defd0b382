"""Drift against the statistics stored with the model: PSI per feature, kept per partition."""

from __future__ import annotations

from datetime import date, timedelta

import pyarrow as pa
import sqlalchemy as sa

from batchpred import demo, monitoring, schema, stats, storage


def _lake(settings, root, *, drift: bool):
    cfg = settings.demo.model_copy(
        update={
            "days": 2,
            "rows_per_day": 3000,
            "drift_start": settings.demo.start_date + timedelta(days=1) if drift else None,
            "drift_strength": 2.0,
        }
    )
    return demo.write_demo_source(settings.dataset, cfg, root)


def _reference(settings):
    """The model contract and training statistics from other days of the same (undrifted)
    generator."""
    cfg = settings.demo.model_copy(update={"rows_per_day": 3000})
    table = pa.concat_tables(
        demo.generate_day(settings.dataset, cfg, cfg.start_date + timedelta(days=10 + i))
        for i in range(3)
    )
    contract = schema.build_contract(settings.dataset, table)
    return contract, stats.reference_statistics(table, contract)


def test_same_distribution_is_stable_and_shifted_features_drift(churn, tmp_path):
    spec, (contract, reference) = churn.dataset, _reference(churn)
    root = str(tmp_path / "lake")
    days = _lake(churn, root, drift=True)
    before = monitoring.measure_drift(root, days[0], spec, contract, reference, 1000)
    after = monitoring.measure_drift(root, days[1], spec, contract, reference, 1000)
    assert [m["feature"] for m in before] == spec.feature_names
    assert max(m["psi"] for m in before) < 0.05
    numeric = [f.name for f in spec.features if f.dtype in ("float", "int")]
    shifted = {m["feature"]: m["psi"] for m in after}
    assert shifted[numeric[0]] > 0.25 and shifted[numeric[1]] > 0.25
    unshifted = [shifted[f.name] for f in spec.features if f.dtype == "category"]
    assert max(unshifted) < 0.05


def test_null_rates_are_measured(churn, tmp_path):
    spec, (contract, reference) = churn.dataset, _reference(churn)
    root = str(tmp_path / "lake")
    (day,) = _lake(churn, root, drift=False)[:1]
    nullable = next(f.name for f in spec.features if f.nullable)
    table = storage.read_partition(root, day)
    i = table.schema.get_field_index(nullable)
    table = table.set_column(i, nullable, pa.nulls(table.num_rows, table.schema.field(i).type))
    storage.write_partition(root, day, table)
    drift = monitoring.measure_drift(root, day, spec, contract, reference, 500)
    metrics = {m["feature"]: m for m in drift}
    assert metrics[nullable]["null_rate"] == 1.0
    assert metrics[nullable]["reference_null_rate"] < 0.1


def test_drift_follows_the_model_contract_and_unseen_categories_count_as_missing(churn, tmp_path):
    """Drift is measured on the model's features in the model's encoding, whatever order
    today's spec lists them in; a category value the model never saw is a missing value."""
    spec, (contract, reference) = churn.dataset, _reference(churn)
    root = str(tmp_path / "lake")
    (day,) = _lake(churn, root, drift=False)[:1]
    table = storage.read_partition(root, day)
    i = table.schema.get_field_index("region")
    table = table.set_column(i, "region", pa.array(["atlantis"] * table.num_rows, pa.string()))
    storage.write_partition(root, day, table)
    reordered = spec.model_copy(update={"features": spec.features[::-1]})
    drift = monitoring.measure_drift(root, day, reordered, contract, reference, 500)
    assert [m["feature"] for m in drift] == contract.feature_names
    metrics = {m["feature"]: m for m in drift}
    assert metrics["region"]["null_rate"] == 1.0
    assert metrics["tenure_months"]["psi"] < 0.05


def test_record_drift_replaces_the_partition_rows(engine):
    day = date(2026, 10, 1)
    metrics = [{"feature": "a", "psi": 0.3, "null_rate": 0.0, "reference_null_rate": 0.0}]
    monitoring.record_drift(engine, "churn", day, "abcdef0123", "r1", metrics)
    monitoring.record_drift(engine, "churn", day, "abcdef0123", "r2", metrics)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("select run_id, psi from drift_metrics")).all()
    assert rows == [("r2", 0.3)]
