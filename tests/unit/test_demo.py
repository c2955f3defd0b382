"""The demo generator: deterministic, in-spec, learnable, drifting on request."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pyarrow.compute as pc
import xgboost as xgb

from batchpred import storage
from batchpred.config import Settings
from batchpred.demo import generate_day, write_demo_source
from batchpred.schema import arrow_schema, build_contract, feature_matrix

DAY = date(2026, 10, 1)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney AUC from ranks (no ties expected in model scores)."""
    ranks = np.empty(len(scores))
    ranks[np.argsort(scores)] = np.arange(1, len(scores) + 1)
    pos = labels == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_deterministic_per_seed_and_day(churn: Settings) -> None:
    a = generate_day(churn.dataset, churn.demo, DAY)
    assert a.equals(generate_day(churn.dataset, churn.demo, DAY))
    assert not a.equals(generate_day(churn.dataset, churn.demo, DAY + timedelta(days=1)))
    other = churn.demo.model_copy(update={"seed": 8})
    assert not a.equals(generate_day(churn.dataset, other, DAY))


def test_schema_ranges_nulls_and_ids(churn: Settings, deliveries: Settings) -> None:
    for settings in (churn, deliveries):
        spec, demo = settings.dataset, settings.demo
        table = generate_day(spec, demo, DAY)
        assert table.schema == arrow_schema(spec)
        assert table.num_rows == demo.rows_per_day
        ids = table.column(spec.entity_id)
        assert pc.count_distinct(ids).as_py() == table.num_rows
        assert pc.all(pc.equal(table.column(spec.event_date), DAY)).as_py()
        for feature in spec.features:
            column = table.column(feature.name)
            if not feature.nullable:
                assert column.null_count == 0, feature.name
            if feature.categories:
                assert set(pc.unique(column.drop_null()).to_pylist()) <= set(feature.categories)
            if feature.min is not None:
                assert pc.min(column).as_py() >= feature.min, feature.name
            if feature.max is not None:
                assert pc.max(column).as_py() <= feature.max, feature.name
        assert table.column(spec.target.name).null_count == 0


def test_nullable_features_get_some_nulls(churn: Settings) -> None:
    demo = churn.demo.model_copy(update={"rows_per_day": 5000})
    table = generate_day(churn.dataset, demo, DAY)
    for feature in churn.dataset.features:
        if feature.nullable:
            assert 0.01 < table.column(feature.name).null_count / 5000 < 0.03


def test_entities_recur_across_days(deliveries: Settings) -> None:
    spec, demo = deliveries.dataset, deliveries.demo
    first = set(generate_day(spec, demo, DAY).column(spec.entity_id).to_pylist())
    second = set(
        generate_day(spec, demo, DAY + timedelta(days=1)).column(spec.entity_id).to_pylist()
    )
    assert first & second
    assert all(i.startswith(f"{spec.name[:3]}-") for i in first)


def test_churn_label_is_learnable_on_a_held_out_day(churn: Settings) -> None:
    spec = churn.dataset
    demo = churn.demo.model_copy(update={"rows_per_day": 4000})
    train = generate_day(spec, demo, DAY)
    test = generate_day(spec, demo, DAY + timedelta(days=5))
    y_train = train.column(spec.target.name).to_numpy()
    assert 0.1 < y_train.mean() < 0.5
    contract = build_contract(spec)  # the matrix a model sees: categories as native codes

    def dmatrix(table, label=None):
        return xgb.DMatrix(
            feature_matrix(table, contract)[0],
            label=label,
            feature_names=contract.feature_names,
            feature_types=contract.feature_types,
            enable_categorical=True,
        )

    model = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "eta": 0.1, "nthread": 1},
        dmatrix(train, y_train),
        num_boost_round=80,
    )
    scores = model.predict(dmatrix(test))
    assert auc(test.column(spec.target.name).to_numpy(), scores) > 0.7


def test_regression_target_correlates_with_features(deliveries: Settings) -> None:
    spec = deliveries.dataset
    demo = deliveries.demo.model_copy(update={"rows_per_day": 3000})
    train = generate_day(spec, demo, DAY)
    test = generate_day(spec, demo, DAY + timedelta(days=3))
    target = test.column(spec.target.name).to_numpy()
    assert target.min() > 0
    contract = build_contract(spec)
    x = np.nan_to_num(feature_matrix(train, contract)[0])
    design = np.column_stack([x, np.ones(len(x))])
    coef, *_ = np.linalg.lstsq(design, train.column(spec.target.name).to_numpy(), rcond=None)
    x_test = np.nan_to_num(feature_matrix(test, contract)[0])
    predicted = np.column_stack([x_test, np.ones(len(x_test))]) @ coef
    assert np.corrcoef(predicted, target)[0, 1] > 0.5


def test_drift_shifts_the_first_numeric_features(churn: Settings) -> None:
    spec = churn.dataset
    start = DAY + timedelta(days=3)
    base = churn.demo.model_copy(update={"rows_per_day": 3000})
    drifting = base.model_copy(update={"drift_start": start, "drift_strength": 1.0})
    numeric = [f.name for f in spec.features if f.dtype in ("int", "float")]
    before = generate_day(spec, drifting, DAY)
    assert before.equals(generate_day(spec, base, DAY))
    after = generate_day(spec, drifting, start)
    plain = generate_day(spec, base, start)
    for name in numeric[:2]:
        std = np.std(plain.column(name).to_numpy(zero_copy_only=False))
        shift = pc.mean(after.column(name)).as_py() - pc.mean(plain.column(name)).as_py()
        assert shift > 0.5 * std, name
    assert after.column(numeric[2]).equals(plain.column(numeric[2]))


def test_write_demo_source_skips_existing_days(churn: Settings) -> None:
    url = churn.source.url
    demo = churn.demo.model_copy(update={"days": 3, "rows_per_day": 50})
    days = write_demo_source(churn.dataset, demo, url)
    assert days == [demo.start_date + timedelta(days=i) for i in range(3)]
    assert storage.list_partitions(url) == days
    fingerprint = storage.fingerprint_partition(url, days[0])
    more = demo.model_copy(update={"days": 4})
    assert write_demo_source(churn.dataset, more, url) == [days[-1] + timedelta(days=1)]
    assert storage.fingerprint_partition(url, days[0]) == fingerprint
    assert storage.read_partition(url, days[0]).equals(generate_day(churn.dataset, demo, days[0]))


def test_write_demo_source_csv(deliveries: Settings) -> None:
    url = deliveries.source.url
    demo = deliveries.demo.model_copy(update={"days": 2, "rows_per_day": 20})
    days = write_demo_source(deliveries.dataset, demo, url, fmt="csv")
    assert [f.rsplit("/", 1)[-1] for f in storage.partition_files(url, days[0])] == ["part-0.csv"]
    assert storage.read_partition(url, days[0]).num_rows == 20
