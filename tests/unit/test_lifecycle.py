"""The model lifecycle: pin, rollback, promote and unpin against the nightly gate, history
that says who, when and why, and the operator's commands (`batchpred models | status |
predictions lookup`) through batchpred.cli.main.

The gate tests run on SQLite and, marked `postgres`, on a fresh PostgreSQL database.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from batchpred import (
    baselines,
    cli,
    config,
    db,
    demo,
    evaluation,
    monitoring,
    promotion,
    registry,
    reports,
    schema,
    sinks,
    training,
    verdicts,
)
from batchpred.config import Settings
from batchpred.evaluation import GateDecision
from flows.train import summary_lines
from tasks import reporting
from tests.unit.test_scoring import FAST, settings_for, train_small
from tests.unit.test_sinks import batch, write

ROOT = Path(__file__).resolve().parents[2]
CHURN = ["--config", str(ROOT / "configs/base.yaml")]
CHURN += ["--config", str(ROOT / "configs/datasets/churn.yaml")]
DAY1, DAY2 = date(2026, 10, 1), date(2026, 10, 2)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Three churn models sharing one holdout: `bad` (shuffled labels, near chance), `good`
    and `other` (a good one trained on fewer rows: different bytes)."""
    tmp = tmp_path_factory.mktemp("lifecycle_models")
    settings = settings_for("churn", tmp)
    good, holdout = train_small(settings, tmp / "good")
    bad, _ = train_small(settings, tmp / "bad", shuffle_labels=True)
    other, _ = train_small(settings, tmp / "other", rows=200)
    return {"settings": settings, "good": good, "bad": bad, "other": other, "holdout": holdout}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    """A migrated database: SQLite, and a fresh PostgreSQL database (the `pg_url` fixture)."""
    url = f"sqlite:///{tmp_path}/l.db" if request.param == "sqlite" else None
    url = url or request.getfixturevalue("pg_url")
    engine = db.create_engine(url)
    db.migrate(engine)
    yield engine
    engine.dispose()


def gate_settings(models: dict, tmp_path: Path) -> Settings:
    base: Settings = models["settings"]
    store = str(tmp_path / "models")
    return base.model_copy(
        update={"training": base.training.model_copy(update={"registry": store})}
    )


def gate(engine: sa.Engine, models: dict, settings: Settings, name: str) -> GateDecision:
    """One nightly gate run with the model `name` as the newly trained one."""
    return promotion.promote_if_better(engine, settings, models[name], models["holdout"])


def history(engine: sa.Engine, alias: str | None = None) -> list[tuple]:
    """(alias, action, version, previous, by, reason) per change, oldest first."""
    t = db.table(engine, "model_alias_history")
    query = sa.select(
        t.c.alias, t.c.action, t.c.version, t.c.previous_version, t.c.set_by, t.c.reason
    ).where(t.c.dataset == "churn")
    if alias:
        query = query.where(t.c.alias == alias)
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query.order_by(t.c.id))]


def champion(engine: sa.Engine) -> str | None:
    return registry.get_alias(engine, "churn", registry.CHAMPION)


# --- the gate against pins and rollbacks, on both databases -------------------------------------


def test_pinned_champion_survives_a_better_challenger(
    any_engine: sa.Engine, models: dict, tmp_path: Path
) -> None:
    engine, settings = any_engine, gate_settings(models, tmp_path)
    weak = gate(engine, models, settings, "bad").version
    assert champion(engine) == weak
    change = registry.pin(engine, "churn", weak, "holiday freeze", by="alice")
    assert change == registry.Change(weak, weak, None, weak)

    night = gate(engine, models, settings, "good")
    strong, reason = night.version, night.describe()
    assert night.decision == "pinned" and night.champion_before == weak
    assert f"pinned ({weak}, by alice on " in reason and "holiday freeze" in reason
    assert "; the metrics: AUC " in reason and night.passed
    assert night.challenger_metrics["auc"] > night.champion_metrics["auc"] + 0.1
    assert champion(engine) == weak
    assert registry.get_alias(engine, "churn", registry.CHALLENGER) == strong
    recorded = registry.get_version(engine, strong)["metrics"]  # with baselines and lift
    assert {k: recorded[k] for k in night.challenger_metrics} == night.challenger_metrics

    # A manual promotion is refused while pinned; unpinning lets the next gate promote.
    with pytest.raises(registry.LifecycleError, match="is pinned .*alice.*unpin it first"):
        registry.promote(engine, "churn", strong, "try", by="bob")
    registry.unpin(engine, "churn", "freeze over", by="alice")
    assert gate(engine, models, settings, "good").decision == "promoted"
    assert champion(engine) == strong


def test_rollback_restores_the_previous_champion_and_sticks(
    any_engine: sa.Engine, models: dict, tmp_path: Path
) -> None:
    engine, settings = any_engine, gate_settings(models, tmp_path)
    weak = gate(engine, models, settings, "bad").version
    strong = gate(engine, models, settings, "good").version
    assert champion(engine) == strong

    change = registry.rollback(engine, "churn", "realised AUC fell", by="carol")
    assert change == registry.Change(strong, weak, None, weak)
    assert champion(engine) == weak

    night = gate(engine, models, settings, "good")  # same data, same bytes, still "better"
    assert night.decision == "pinned" and champion(engine) == weak
    assert "carol" in night.describe() and "realised AUC fell" in night.describe()

    # Unpinned, the gate still never brings back the model that was rolled back from ...
    registry.unpin(engine, "churn", "investigated", by="carol")
    night = gate(engine, models, settings, "good")
    assert night.decision == "rejected" and champion(engine) == weak
    assert f"{strong} was rolled back from by carol" in night.describe()
    # ... but promotes any other better model, and a person may bring it back by hand.
    assert gate(engine, models, settings, "other").decision == "promoted"
    registry.promote(engine, "churn", strong, "fixed upstream", by="dave")
    assert champion(engine) == strong
    registry.promote(engine, "churn", weak, "test", by="dave")
    assert gate(engine, models, settings, "good").decision == "promoted"


def test_history_says_who_how_and_why(
    any_engine: sa.Engine, models: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, settings = any_engine, gate_settings(models, tmp_path)
    monkeypatch.setenv(registry.USER_ENV, "nightly-bot")
    weak = gate(engine, models, settings, "bad").version
    strong = gate(engine, models, settings, "good").version
    registry.rollback(engine, "churn", "bad realised AUC", by="carol")
    registry.unpin(engine, "churn", "done", by="carol")
    registry.pin(engine, "churn", strong, "known good", by="erin")
    rows = history(engine)
    assert [r[:5] for r in rows] == [
        ("champion", "gate", weak, None, "nightly-bot"),
        ("champion", "gate", strong, weak, "nightly-bot"),
        ("champion", "rollback", weak, strong, "carol"),
        ("pinned", "rollback", weak, None, "carol"),
        ("pinned", "unpin", weak, weak, "carol"),
        ("champion", "pin", strong, weak, "erin"),
        ("pinned", "pin", strong, None, "erin"),
    ]
    assert "no champion" in rows[0][5] and "against the champion's" in rows[1][5]
    assert [r[5] for r in rows[2:]] == ["bad realised AUC"] * 2 + ["done"] + ["known good"] * 2
    state = registry.get_aliases(engine, "churn")
    assert (state["pinned"].version, state["pinned"].set_by) == (strong, "erin")
    assert state["pinned"].reason == "known good" and state["champion"].set_by == "erin"
    assert registry.utc(state["pinned"].set_at) <= datetime.now(UTC)


def test_repeated_rollbacks_step_back_one_champion_at_a_time(
    engine: sa.Engine, models: dict, tmp_path: Path
) -> None:
    store = str(tmp_path / "models")
    v = {n: registry.register_model(engine, models[n], store) for n in ("bad", "good", "other")}
    for name in ("bad", "good", "other"):
        registry.set_alias(engine, "churn", "champion", v[name], "gate", action=registry.GATE)
    assert registry.rollback(engine, "churn", "1", by="x").champion == v["good"]
    assert registry.rollback(engine, "churn", "2", by="x").champion == v["bad"]
    with pytest.raises(registry.LifecycleError, match="no earlier champion .* to roll back to"):
        registry.rollback(engine, "churn", "3", by="x")
    assert champion(engine) == v["bad"]


def lenient(settings: Settings) -> Settings:
    """max_regression 1.0: any model passes against a champion the gate chose."""
    gate = settings.training.gate.model_copy(update={"max_regression": 1.0})
    training = settings.training.model_copy(update={"gate": gate})
    return settings.model_copy(update={"training": training})


def test_a_tie_does_not_replace_an_operators_champion(
    any_engine: sa.Engine, models: dict, tmp_path: Path
) -> None:
    """After `models promote`, a challenger within max_regression of the champion (the old
    gate promoted it) stays challenger; one that beats it is promoted."""
    engine, settings = any_engine, lenient(gate_settings(models, tmp_path))
    monitoring_cfg = settings.monitoring.model_copy(update={"block_promotion_on_drift": False})
    settings = settings.model_copy(update={"monitoring": monitoring_cfg})
    gate(engine, models, settings, "bad")
    good = registry.register_model(engine, models["good"], settings.training.registry)
    registry.promote(engine, "churn", good, "back", by="dave")

    night = gate(engine, models, settings, "bad")  # within max_regression 1.0 of `good`
    assert night.decision == "held-by-operator" and champion(engine) == good
    assert night.operator is not None and night.operator.by == "dave"
    assert night.challenger_value < night.champion_value
    reason = night.describe()
    assert "chosen by an operator (promote by dave on " in reason and ": back)" in reason
    assert "must beat it by more than 0.0000" in reason
    assert "): it does not; lift over the linear baseline " in reason
    assert registry.get_alias(engine, "churn", registry.CHALLENGER) == night.version
    assert history(engine, "challenger")[-1][1:3] == ("gate", night.version)

    beats = gate(engine, models, settings, "other")
    assert beats.challenger_value > beats.champion_value
    assert beats.decision == "promoted" and champion(engine) == beats.version
    # The gate's champion again: max_regression applies, the lenient gate lets `bad` through.
    assert gate(engine, models, settings, "bad").decision == "promoted"


def test_the_gate_blocked_by_drift_counts_the_nights_running(
    engine: sa.Engine, models: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = lenient(gate_settings(models, tmp_path))
    good = gate(engine, models, settings, "good").version
    drift = f"not promoted: the holdout drifted against champion {good}'s training data"
    drifted: list[str | None] = [drift]
    monkeypatch.setattr(monitoring, "holdout_drift_block", lambda *_: drifted[0])
    t = db.table(engine, "model_alias_history")

    def next_night() -> None:  # the history so far happened a day earlier
        with engine.begin() as conn:
            for row_id, at in conn.execute(sa.select(t.c.id, t.c.set_at)).all():
                day_before = at - timedelta(days=1)
                conn.execute(t.update().where(t.c.id == row_id).values(set_at=day_before))

    nights = []
    for _ in range(3):
        next_night()
        night = gate(engine, models, settings, "other")
        assert night.decision == "rejected" and night.drift == drift and champion(engine) == good
        nights.append((night.drift_nights, night.frozen_by_drift(3)))
    assert [n for n, _ in nights] == [1, 2, 3]
    assert nights[0][1] is None and nights[1][1] is None
    frozen = nights[2][1]
    assert frozen is not None
    assert frozen.startswith(f"gate blocked by drift 3 nights running; the champion {good} is ")
    assert history(engine, "challenger")[-1][1] == registry.DRIFT_BLOCK
    assert "(3 nights running)" in history(engine, "challenger")[-1][5]
    # A second run the same night is the same night.
    assert gate(engine, models, settings, "other").drift_nights == 3
    # A night the gate is not blocked ends the run of nights.
    next_night()
    drifted[0] = None
    assert gate(engine, models, settings, "other").decision == "promoted"
    drifted[0] = drift
    next_night()
    assert gate(engine, models, settings, "good").drift_nights == 1


def test_gate_write_rechecks_the_pin(engine: sa.Engine, models: dict, tmp_path: Path) -> None:
    """A pin set while the gate was evaluating wins: the gate's champion write fails."""
    store = str(tmp_path / "models")
    old = registry.register_model(engine, models["bad"], store)
    new = registry.register_model(engine, models["good"], store)
    registry.pin(engine, "churn", old, "freeze", by="alice")
    with pytest.raises(registry.LifecycleError, match="pinned meanwhile"):
        registry.set_alias(engine, "churn", "champion", new, "gate", action=registry.GATE)
    assert champion(engine) == old


def test_lifecycle_edge_cases(engine: sa.Engine, models: dict, tmp_path: Path) -> None:
    store = str(tmp_path / "models")
    with pytest.raises(registry.LifecycleError, match="no champion to roll back"):
        registry.rollback(engine, "churn", "why", by="x")
    v = registry.register_model(engine, models["good"], store)
    assert registry.unpin(engine, "churn", "why", by="x").changed is False
    assert registry.promote(engine, "churn", v, "first", by="x").changed
    assert registry.promote(engine, "churn", v, "again", by="x").changed is False
    assert registry.pin(engine, "churn", v, "f", by="x").changed
    assert registry.pin(engine, "churn", v, "f", by="x").changed is False
    with pytest.raises(registry.LifecycleError, match="belongs to dataset 'churn'"):
        registry.promote(engine, "deliveries", v, "wrong dataset", by="x")


def test_find_version(engine: sa.Engine, models: dict, tmp_path: Path) -> None:
    store = str(tmp_path / "models")
    v = registry.register_model(engine, models["good"], store)
    assert registry.find_version(engine, "churn", v) == v
    assert registry.find_version(engine, "churn", v[:6]) == v
    with pytest.raises(registry.UnknownModelError, match=f"unknown model 'zzzz'.*known.*{v}"):
        registry.find_version(engine, "churn", "zzzz")
    with pytest.raises(registry.UnknownModelError, match="no 'champion' model"):
        registry.find_version(engine, "churn", "champion")
    with pytest.raises(registry.UnknownModelError, match="known .*: none, train one first"):
        registry.find_version(engine, "deliveries", v)


# --- the fair gate: never a model judged on rows it was fit or early-stopped on ---------------


def train_on(settings: Settings, workdir: Path, splits: dict[str, list[int]]) -> Path:
    """A model trained by training.train_model on the demo days train_small uses (0..4:
    2026-10-01..2026-10-05, the same rows), split as `splits` says (day indexes). Returns the
    model dir; the holdout is data/holdout.parquet beside it."""
    spec, cfg = settings.dataset, settings.demo.model_copy(update={"rows_per_day": 300})
    days = {
        split: [cfg.start_date + timedelta(days=i) for i in idx] for split, idx in splits.items()
    }
    data = workdir / "data"
    data.mkdir(parents=True)
    for split, on in days.items():
        table = pa.concat_tables([demo.generate_day(spec, cfg, d) for d in on])
        pq.write_table(table, data / f"{split}.parquet")
    summary = {
        "days": sorted(d.isoformat() for on in days.values() for d in on),
        "splits": {split: [d.isoformat() for d in on] for split, on in days.items()},
        "data_hash": f"splits={splits}",
    }
    (data / training.PREPARE_FILE).write_text(json.dumps(summary))
    fast = settings.model_copy(update={"training": settings.training.model_copy(update=FAST)})
    training.train_model(fast, data, workdir / "model")
    return workdir / "model"


@pytest.fixture(scope="module")
def newer(models: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose holdout is 2026-10-04..2026-10-05: fit on the 1st and 2nd, early-stopped
    on the 3rd. `good` (the champion below) was early-stopped on the 4th."""
    tmp = tmp_path_factory.mktemp("newer_model")
    return train_on(models["settings"], tmp, {"train": [0, 1], "valid": [2], "holdout": [3, 4]})


def fair_settings(models: dict, tmp_path: Path, **gate: Any) -> Settings:
    """Any metric passes (max_regression 1.0), drift never blocks: the tests see the rows."""
    settings = lenient(gate_settings(models, tmp_path))
    cfg = settings.training.gate.model_copy(update=gate)
    monitoring_cfg = settings.monitoring.model_copy(update={"block_promotion_on_drift": False})
    return settings.model_copy(
        update={
            "training": settings.training.model_copy(update={"gate": cfg}),
            "monitoring": monitoring_cfg,
        }
    )


def edited(model_dir: Path, to: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of a trained model whose manifest `edit` changed (before it is registered: the
    registry records the manifest as it is then)."""
    shutil.copytree(model_dir, to)
    manifest = json.loads((to / "manifest.json").read_text())
    edit(manifest)
    (to / "manifest.json").write_text(json.dumps(manifest))
    return to


def on_rows(engine: sa.Engine, version: str, table: pa.Table, spec: Any) -> dict[str, Any]:
    """The metrics of a version's evaluated model on exactly these rows."""
    model = registry.load_evaluated(engine, version)
    y = table.column(spec.target.name).to_numpy(zero_copy_only=False)
    return evaluation.metrics_for(spec, y, registry.predict_table(model, table))


def test_the_gate_compares_on_the_days_neither_model_was_trained_on(
    engine: sa.Engine, models: dict, newer: Path, tmp_path: Path
) -> None:
    settings, spec = fair_settings(models, tmp_path), models["settings"].dataset
    champ = gate(engine, models, settings, "good").version  # early-stopped on 2026-10-04
    holdout = newer.parent / "data/holdout.parquet"  # 2026-10-04 and 2026-10-05
    night = promotion.promote_if_better(engine, settings, newer, holdout)
    assert (night.compared_rows, night.holdout_rows) == (300, 600)
    assert night.compared_on == (
        f"2026-10-05 only (300 of 600 rows): the champion {champ}'s evaluated model was "
        "trained on 2026-10-04"
    )
    assert "; compared on 2026-10-05 only (300 of 600 rows)" in night.describe()
    # Every figure was taken on the 5th alone: the models' and the challenger's baselines.
    table = pq.read_table(holdout)
    fifth = table.filter(pc.equal(table.column("event_date"), pa.scalar(DAY1 + timedelta(4))))
    assert night.champion_metrics == pytest.approx(on_rows(engine, champ, fifth, spec))
    assert night.challenger_metrics == pytest.approx(on_rows(engine, night.version, fifth, spec))
    linear = registry.load_linear(engine, night.version)
    assert linear is not None
    y = fifth.column(spec.target.name).to_numpy()
    scores = baselines.predict_linear(linear.booster, linear.encoding, fifth, linear.contract)
    assert night.baselines["linear"] == pytest.approx(evaluation.metrics_for(spec, y, scores))
    assert night.baselines["prior"]["auc"] == 0.5 and night.baselines["prior"]["rows"] == 300
    assert night.lift == pytest.approx(
        night.challenger_value - night.baselines["linear"]["primary_value"]
    )
    # The registry keeps the challenger's own whole holdout, which its evaluated model never saw.
    recorded = registry.get_version(engine, night.version)["metrics"]
    whole = on_rows(engine, night.version, table, spec)
    assert whole["rows"] == 600 and {k: recorded[k] for k in whole} == pytest.approx(whole)


def test_one_class_left_on_the_fair_rows_is_not_compared(
    engine: sa.Engine, models: dict, newer: Path, tmp_path: Path
) -> None:
    settings = fair_settings(models, tmp_path)
    champ = gate(engine, models, settings, "good").version
    table = pq.read_table(newer.parent / "data/holdout.parquet")
    fifth = pc.equal(table.column("event_date"), pa.scalar(DAY1 + timedelta(4)))
    churned = pc.equal(table.column("churned"), 1)
    table = table.filter(pc.or_(pc.invert(fifth), churned))  # the 5th: churned rows only
    pq.write_table(table, tmp_path / "holdout.parquet")
    night = promotion.promote_if_better(engine, settings, newer, tmp_path / "holdout.parquet")
    assert night.decision == "rejected" and not night.passed and champion(engine) == champ
    assert night.incomparable is not None and night.describe().startswith(night.incomparable)
    assert "only one class" in night.incomparable
    assert f"`batchpred models promote {night.version} --reason ...`" in night.incomparable


def test_a_champion_trained_on_every_holdout_row_cannot_be_compared(
    engine: sa.Engine, models: dict, tmp_path: Path
) -> None:
    """A champion from before refits says only which days it was created from: its holdout
    day among them (here its model.ubj was indeed refit on it). Today's holdout is that day:
    no row is fair, the challenger is not promoted, and the reason says what to do."""

    def legacy(manifest: dict[str, Any]) -> None:
        for key in ("evaluated", "refit", "baselines", "tuning"):
            manifest.pop(key, None)

    old = edited(models["good"], tmp_path / "legacy", legacy)
    settings = fair_settings(models, tmp_path)
    champ = registry.register_model(engine, old, settings.training.registry)
    registry.set_alias(engine, "churn", "champion", champ, "gate", action=registry.GATE)
    night = gate(engine, models, settings, "other")
    assert night.decision == "rejected" and champion(engine) == champ
    assert (night.compared_rows, night.holdout_rows) == (0, 300)
    assert night.incomparable == (
        f"the champion {champ} (trained before refits) was trained on every holdout row "
        f"(days 2026-10-05): the gate cannot compare them; `batchpred models promote "
        f"{night.version} --reason ...` to choose by hand"
    )
    assert night.describe().startswith(night.incomparable + "; the metrics: AUC ")
    assert registry.get_alias(engine, "churn", registry.CHALLENGER) == night.version
    assert history(engine, "challenger")[-1][5] == night.describe()


def test_split_rows_compare_on_the_entities_neither_model_saw(
    engine: sa.Engine, models: dict, tmp_path: Path
) -> None:
    """Split by rows, a model saw every day but its holdout entities (schema.entity_unit
    below its holdout_fraction): a champion held out 0.3 of them, today's challenger 0.6;
    the gate compares on the 0.3 neither saw."""

    def rows(fraction: float) -> Callable[[dict[str, Any]], None]:
        def edit(manifest: dict[str, Any]) -> None:
            days = manifest["created_from"]["days"]
            seen = {"split": "rows", "days": days, "holdout_fraction": fraction}
            manifest["evaluated"]["seen"] = seen

        return edit

    settings, spec = fair_settings(models, tmp_path), models["settings"].dataset
    champ_dir = edited(models["good"], tmp_path / "champ", rows(0.3))
    champ = registry.register_model(engine, champ_dir, settings.training.registry)
    registry.set_alias(engine, "churn", "champion", champ, "gate", action=registry.GATE)
    table = pq.read_table(models["holdout"])
    unit = schema.entity_unit(table.column(spec.entity_id))
    table = table.filter(pa.array(unit < 0.6))  # the challenger's holdout entities
    pq.write_table(table, tmp_path / "holdout.parquet")
    challenger = edited(models["other"], tmp_path / "challenger", rows(0.6))
    night = promotion.promote_if_better(engine, settings, challenger, tmp_path / "holdout.parquet")
    fair = table.filter(pa.array(schema.entity_unit(table.column(spec.entity_id)) < 0.3))
    assert 0 < fair.num_rows < table.num_rows
    assert (night.compared_rows, night.holdout_rows) == (fair.num_rows, table.num_rows)
    assert night.compared_on == (
        f"{fair.num_rows} of {table.num_rows} holdout rows (2026-10-05): the champion "
        f"{champ}'s evaluated model was trained on {table.num_rows - fair.num_rows} of them"
    )
    assert night.champion_metrics == pytest.approx(on_rows(engine, champ, fair, spec))
    assert night.challenger_metrics == pytest.approx(on_rows(engine, night.version, fair, spec))


def test_min_lift_refuses_a_model_that_does_not_beat_the_linear_baseline(
    engine: sa.Engine, models: dict, tmp_path: Path
) -> None:
    """No model lifts AUC by 0.5 over anything: refused, and the reason says by what bar;
    a bar it clears lets it through."""
    night = gate(
        engine, models, fair_settings(models, tmp_path, min_lift_over_baseline=0.5), "good"
    )
    assert night.decision == "rejected" and not night.passed and champion(engine) is None
    assert night.lift is not None and night.lift < 0.5 and night.min_lift == 0.5
    assert night.describe().endswith(
        "below the 0.5000 required (training.gate.min_lift_over_baseline)"
    )
    assert night.as_dict()["lift"] == night.lift
    cleared = fair_settings(models, tmp_path, min_lift_over_baseline=-1.0)
    assert gate(engine, models, cleared, "good").decision == "promoted"


def test_the_reports_show_the_baselines_the_lift_and_the_rows_compared(
    engine: sa.Engine,
    models: dict,
    newer: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = fair_settings(models, tmp_path)
    gate(engine, models, settings, "good")
    night = promotion.promote_if_better(
        engine, settings, newer, newer.parent / "data/holdout.parquet"
    )
    lines = summary_lines({"gate": night})
    assert lines[1].startswith("  holdout: AUC ") and "rows 300" in lines[1]
    assert lines[2] == f"    on {night.compared_on}"
    assert lines[3].startswith("  baselines: linear AUC 0.") and ", prior AUC 0.5000; " in lines[3]
    assert lines[3].endswith(f"; lift over linear {night.lift:+.4f} AUC")
    tables: list[dict[str, Any]] = []
    monkeypatch.setattr(reporting, "create_table_artifact", lambda **kw: tables.append(kw))
    reporting.publish_model_comparison.fn("churn", {**night.as_dict(), "gate": night})
    rows = {r["metric"]: r for r in tables[0]["table"]}
    assert list(rows["AUC"]) == [
        "metric",
        "challenger",
        "champion",
        "linear baseline",
        "prior baseline",
    ]
    assert rows["AUC"]["linear baseline"] == round(night.baselines["linear"]["auc"], 4)
    assert rows["AUC"]["prior baseline"] == 0.5 and rows["rows"]["champion"] == 300
    assert rows["lift over linear"]["challenger"] == f"{night.lift:+.4f} AUC"
    assert rows["compared on"]["challenger"] == night.compared_on


def test_what_the_deployed_model_was_fit_on_and_how_it_was_tuned() -> None:
    refit_off = {"train_rows": 900, "best_iteration": 7, "num_boost_round": 40}
    assert reports.deployed_text({**refit_off, "evaluated": {"file": "model.ubj"}}) == (
        "the evaluated model itself: 900 rows; best iteration 7 of 40 rounds"
    )
    assert reports.deployed_text(refit_off).endswith(
        "itself (trained before refits): 900 rows; best iteration 7 of 40 rounds"
    )
    tuning = {
        "metric": "auc",
        "budget_s": 300.0,
        "trials_planned": 20,
        "ran": 12,
        "stopped_by_budget": True,
        "chosen": 1,
        "trials": [{"valid_value": 0.8}, {"valid_value": 0.81234}],
    }
    assert reports.tuning_text(tuning) == (
        "12 of 20 trials (stopped by the 300 s budget); chose trial 1 by valid AUC 0.8123"
    )


# --- the commands ------------------------------------------------------------------------------


@pytest.fixture
def bp(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """Run `batchpred ...` (churn) against the test's database; returns its stdout. An error
    exits with one line, which the test reads from the SystemExit."""
    monkeypatch.setenv(config.DATABASE_URL_ENV, engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv(registry.USER_ENV, "tester")

    def run(*args: str) -> str:
        capsys.readouterr()
        cli.main([*CHURN, *args])
        return capsys.readouterr().out

    return run


def error_of(bp, *args: str) -> str:
    with pytest.raises(SystemExit) as exc:
        bp(*args)
    message = str(exc.value.code)
    assert message.startswith("batchpred: error: ") and "\n" not in message
    return message


@pytest.fixture
def three(engine: sa.Engine, models: dict, tmp_path: Path) -> dict[str, str]:
    """bad then good through the gate (good is champion), other registered only."""
    settings = gate_settings(models, tmp_path)
    out = {n: gate(engine, models, settings, n).version for n in ("bad", "good")}
    out["other"] = registry.register_model(engine, models["other"], str(tmp_path / "models"))
    return out


def test_models_list_and_show(bp, three: dict[str, str]) -> None:
    listing = bp("models", "list").splitlines()
    assert listing[0] == "models of churn (3, newest first)"
    assert listing[1].split() == ["VERSION", "CREATED", "(UTC)", "AUC", "ALIASES"]
    rows = {line.split()[0]: line for line in listing[2:]}
    assert set(rows) == set(three.values())
    assert rows[three["good"]].endswith("champion")
    assert rows[three["other"]].split()[-1] == "-"  # registered, never evaluated
    auc = rows[three["good"]].split()[3]
    assert len(auc.split(".")[1]) == 4 and 0.6 < float(auc) < 1

    bp("models", "pin", three["good"], "--reason", "freeze")
    pinned = bp("models", "list").splitlines()
    assert pinned[listing.index(rows[three["good"]])].endswith("champion, pinned")

    shown = bp("models", "show", three["good"][:6])
    assert shown.splitlines()[0] == f"model {three['good']} of churn (champion, pinned)"
    assert "training window  5 of 5 days, 2026-10-01..2026-10-05" in shown
    assert "holdout metrics  AUC 0." in shown and "log loss" in shown and "primary" not in shown
    assert "metrics of       evaluated model: fit on 900 rows without the holdout" in shown
    assert "deployed model   refit on 1,500 rows of 5 day(s), 2026-10-01..2026-10-05" in shown
    baseline_line = next(line for line in shown.splitlines() if "  baselines  " in line)
    assert (
        "linear AUC 0." in baseline_line and "prior AUC 0.5000; lift over linear " in baseline_line
    )
    assert "FEATURE" in shown and "category" in shown and " values" in shown
    pin_row = next(line for line in shown.splitlines() if " pinned " in line)
    assert pin_row.split()[2:6] == ["pinned", "pin", three["good"], "-"]
    assert pin_row.split()[-2:] == ["tester", "freeze"]
    assert bp("models", "show", "champion") == shown

    message = error_of(bp, "models", "show", "nope")
    assert "unknown model 'nope' for dataset 'churn'" in message
    assert all(v in message for v in three.values())
    message = error_of(bp, "models", "show", three["good"][:3])
    assert f"'{three['good'][:3]}' is too short a prefix: give 4+ digits" in message


def test_models_compare_shows_holdout_and_realised_metrics(
    bp, engine: sa.Engine, three: dict[str, str]
) -> None:
    a, b = three["bad"], three["good"]
    t = db.table(engine, "realised_metrics")
    with engine.begin() as conn:
        for day, version, auc in ((DAY1, a, 0.51234), (DAY1, b, 0.7), (DAY2, b, 0.71)):
            conn.execute(
                t.insert().values(
                    dataset="churn",
                    partition_date=day,
                    model_version=version,
                    rows=500,
                    metrics={"auc": auc, "logloss": 0.6, "rows": 500, "primary": "auc"},
                    labels_hash="h",
                    computed_at=datetime.now(UTC),
                )
            )
    text = bp("models", "compare", a, "champion")
    assert text.splitlines()[0] == f"churn: A = {a}, B = {b} (champion)"
    assert "primary" not in text
    auc_line = next(line for line in text.splitlines() if line.startswith("AUC"))
    low, high, delta = auc_line.split()[1:]
    assert float(low) < float(high) and delta.startswith("+") and len(delta.split(".")[1]) == 4
    assert next(x for x in text.splitlines() if x.startswith("linear baseline AUC"))
    assert next(x for x in text.splitlines() if x.startswith("lift over linear"))
    assert "\nB: evaluated model: fit on 900 rows without the holdout" in text
    realised = text.split("realised metrics per day")[1].splitlines()
    assert realised[1].split() == ["DAY", "ROWS", "AUC", "A", "AUC", "B", "log", "loss", "A"] + [
        "log",
        "loss",
        "B",
    ]
    assert realised[2].split() == ["2026-10-01", "500", "0.5123", "0.7000", "0.6000", "0.6000"]
    assert len(realised) == 3  # DAY2 has only B


def test_lifecycle_commands(bp, engine: sa.Engine, three: dict[str, str]) -> None:
    bad, good = three["bad"], three["good"]
    out = bp("models", "rollback", "--reason", "realised AUC fell", "--by", "carol")
    assert f"rolled back: {good} -> {bad} (by carol: realised AUC fell)" in out
    assert f"\npinned: the nightly will not change the champion {bad} until `batchpred" in out
    assert "once unpinned, the nightly gate will replace it only with a model that beats" in out
    assert f"the gate never re-promotes {good}" in out

    message = error_of(bp, "models", "promote", good, "--reason", "x")
    assert "is pinned" in message and "carol" in message and "unpin it first" in message
    with pytest.raises(SystemExit):  # --reason is required
        bp("models", "promote", good)

    out = bp("models", "unpin")
    assert out.splitlines() == [
        f"champion {bad} of churn unpinned (by tester: no reason given)",
        f"the nightly gate will replace {bad} only with a model that beats its AUC by more than "
        "0.0000 (higher is better; training.gate.min_improvement_over_operator), and not while "
        "the holdout has drifted against the champion's training data "
        "(monitoring.block_promotion_on_drift)",
    ]
    out = bp("models", "promote", good[:8], "--reason", "fixed")
    assert out.splitlines()[0] == f"champion of churn: {bad} -> {good} (by tester: fixed)"
    assert out.splitlines()[1].startswith(
        f"the nightly gate will replace {good} only with a model that beats its AUC by more "
        "than 0.0000"
    )
    assert "nothing changed" in bp("models", "promote", good, "--reason", "again")
    out = bp("models", "pin", three["other"], "--reason", "known good")
    assert out.splitlines()[:2] == [
        f"champion of churn: {good} -> {three['other']}",
        "champion of churn pinned (by tester: known good)",
    ]
    assert out.splitlines()[2].startswith(
        f"pinned: the nightly will not change the champion {three['other']} until `batchpred "
        "models unpin --reason ...`"
    )

    changes = bp("models", "history").splitlines()
    assert changes[0] == "alias changes of churn (newest first)"
    assert changes[2].split()[2:6] == ["pinned", "pin", three["other"], "-"]
    assert "carol" in "\n".join(changes) and "realised AUC fell" in "\n".join(changes)


def seed_day(engine: sa.Engine, champ: str, other: str) -> None:
    """Ledger and predictions for two days (champion both, the other model on DAY2), a valid
    and an invalid verdict, drift and realised metrics on DAY2."""
    for day, version, ids, seed in (
        (DAY1, champ, ["a", "b"], 1),
        (DAY2, champ, ["a", "c"], 2),
        (DAY2, other, ["a", "b", "c"], 3),
    ):
        write(engine, sinks.PartitionKey("churn", day, version), [batch(ids, seed=seed)])
    for day, ok in ((DAY1, False), (DAY2, True)):
        report = verdicts.ValidationReport(
            subject=f"partition dt={day}",
            success=ok,
            failures=()
            if ok
            else (verdicts.Failure("tenure_months", "expect_between", "3 of 400 rows"),),
            evaluated=5,
            rows=400,
            json_path=None,
            docs_path=None,
        )
        verdicts.record(engine, "churn", day, "key", "spec", report, "run")
    monitoring.record_drift(
        engine,
        "churn",
        DAY2,
        champ,
        "run",
        [
            {"feature": "tenure_months", "psi": 0.31234, "null_rate": 0, "reference_null_rate": 0},
            {"feature": "region", "psi": 0.01, "null_rate": 0, "reference_null_rate": 0},
        ],
    )
    t = db.table(engine, "realised_metrics")
    with engine.begin() as conn:
        conn.execute(
            t.insert().values(
                dataset="churn",
                partition_date=DAY2,
                model_version=champ,
                rows=2,
                metrics={"auc": 0.75, "primary": "auc", "primary_value": 0.75},
                labels_hash="h",
                computed_at=datetime.now(UTC),
            )
        )


def test_status(bp, engine: sa.Engine, three: dict[str, str]) -> None:
    good, bad = three["good"], three["bad"]
    assert "no activity recorded for churn yet" in bp("status")
    seed_day(engine, good, bad)
    lines = bp("status").splitlines()
    assert lines[0] == f"churn: champion {good}"
    assert lines[1].startswith("champion trained on ")  # the window, with any missing days
    assert lines[2] == "newest 2 day(s) with activity:"
    header, *rows = lines[3:7]
    assert header.split()[:4] == ["DAY", "VALIDATION", "MODEL", "ALIASES"]
    assert rows[0].split() == [
        "2026-10-02",
        "valid",
        good,
        "champion",
        "2",
        "2",
        "0",
        "0.312",
        "tenure_months",
        "AUC",
        "0.7500",
        "(2",
        "labelled)",
    ]
    assert rows[1].split() == [bad, "3", "3", "0", "-", "-"]  # same day, another model
    assert rows[2].split()[:3] == ["2026-10-01", "invalid", good]
    assert lines[-1] == (
        "2026-10-01 invalid: column 'tenure_months' failed expect_between: 3 of 400 rows"
    )
    assert bp("status", "--day", "2026-10-01").splitlines()[2] == "day 2026-10-01:"
    assert "no activity recorded for churn on 2026-09-01" in bp("status", "--day", "2026-09-01")
    assert len(bp("status", "--days", "1").splitlines()) == 6  # head (2), title, header, 2 models


def test_json_of_every_read_command_says_what_its_text_says(
    bp, engine: sa.Engine, three: dict[str, str]
) -> None:
    """`--json` on models list/show/history/compare and status: parsed, with stable fields,
    the same answers as the text (which is rendered from the same data)."""
    good, bad, other = three["good"], three["bad"], three["other"]
    seed_day(engine, good, bad)

    text = bp("models", "list").splitlines()[2:]
    listed = json.loads(bp("models", "list", "--json"))
    assert listed["dataset"] == "churn"
    assert [m["version"] for m in listed["models"]] == [line.split()[0] for line in text]
    by = {m["version"]: m for m in listed["models"]}
    assert by[good]["aliases"] == ["champion"] and by[other]["primary_metric"] is None
    assert (by[good]["primary_metric"]["key"], by[good]["primary_metric"]["name"]) == ("auc", "AUC")
    good_line = next(line for line in text if line.startswith(good))
    assert f"{by[good]['primary_metric']['value']:.4f}" == good_line.split()[3]
    assert by[good]["created_at"].endswith("Z")

    shown = json.loads(bp("models", "show", good[:6], "--json"))
    shown_text = bp("models", "show", good)
    assert (shown["version"], shown["aliases"]) == (good, ["champion"])
    assert shown["sha256"] in shown_text and shown["uri"] in shown_text
    assert len(shown["manifest"]["created_from"]["days"]) == 5
    features = shown["contract"]["features"]
    assert features and all(f"    {f['name']}" in shown_text for f in features)
    assert shown["metrics"]["auc"] == by[good]["metrics"]["auc"]

    history = json.loads(bp("models", "history", "--json"))
    newest = history["changes"][0]
    assert (newest["alias"], newest["version"], newest["previous_version"]) == (
        "champion", good, bad,
    )  # fmt: skip
    assert len(history["changes"]) == len(bp("models", "history").splitlines()) - 2

    compared = json.loads(bp("models", "compare", bad, "champion", "--json"))
    assert compared["a"]["version"] == bad and compared["b"]["aliases"] == ["champion"]
    assert compared["realised"] == []  # only the champion has realised metrics
    assert "no day has them for both models yet" in bp("models", "compare", bad, "champion")

    status = json.loads(bp("status", "--json"))
    assert status["aliases"]["champion"]["version"] == good
    assert [d["day"] for d in status["days"]] == ["2026-10-02", "2026-10-01"]
    top = status["days"][0]
    assert top["validation"]["status"] == "valid"
    assert [m["version"] for m in top["models"]] == [good, bad]
    champ = top["models"][0]
    assert champ["ledger"]["rows_scored"] == 2 and champ["ledger"]["rows_rejected"] == 0
    assert champ["max_psi"]["feature"] == "tenure_months"
    assert champ["max_psi"]["psi"] == pytest.approx(0.31234)
    assert champ["realised"]["rows"] == 2 and top["models"][1]["realised"] is None
    assert status["days"][1]["validation"]["status"] == "invalid"
    assert status["notes"] == [bp("status").splitlines()[-1]]
    assert json.loads(bp("status", "--day", "2026-09-01", "--json"))["days"] == []


def test_no_dataset_chosen_is_refused_once_the_database_holds_another(
    engine: sa.Engine,
    three: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """Without --dataset, --config or $BATCHPRED_CONFIG the default config (churn) answers
    only while the database holds no other dataset: never a silent report on the wrong one."""
    monkeypatch.setenv(config.DATABASE_URL_ENV, engine.url.render_as_string(hide_password=False))
    monkeypatch.delenv(config.CONFIG_ENV, raising=False)
    cli.main(["models", "list"])
    assert capsys.readouterr().out.startswith("models of churn (3, newest first)")
    write(engine, sinks.PartitionKey("nycflights13", DAY1, three["other"]), [batch(["x"])])
    for argv in (["models", "list"], ["status"], ["predictions", "lookup", "a"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert str(exc.value.code) == (
            "batchpred: error: which dataset? the database holds churn, nycflights13: pass "
            "--dataset NAME (without it the default config is 'churn''s)"
        )
    cli.main(["--dataset", "churn", "models", "list"])
    assert capsys.readouterr().out.startswith("models of churn")


def test_predictions_lookup(bp, engine: sa.Engine, three: dict[str, str]) -> None:
    good, bad = three["good"], three["bad"]
    seed_day(engine, good, bad)
    latest = bp("predictions", "lookup", "a").splitlines()
    assert latest[0] == "entity a of churn:"
    assert latest[1].split()[:3] == ["DAY", "MODEL", "ALIASES"] and len(latest) == 3
    assert latest[2].split()[:3] == ["2026-10-02", good, "champion"]
    assert len(latest[2].split()[3].split(".")[1]) == 4

    assert bp("predictions", "lookup", "b").splitlines()[2].split()[0] == "2026-10-01"
    every = bp("predictions", "lookup", "a", "--all").splitlines()[2:]
    assert [r.split()[:2] for r in every] == [
        *(["2026-10-02", v] for v in sorted([bad, good])),  # within a day, by version id
        ["2026-10-01", good],
    ]
    on_day = bp("predictions", "lookup", "a", "--day", "2026-10-01").splitlines()[2:]
    assert [r.split()[:2] for r in on_day] == [["2026-10-01", good]]
    by_model = bp("predictions", "lookup", "b", "--model", bad[:8]).splitlines()[2:]
    assert [r.split()[:2] for r in by_model] == [["2026-10-02", bad]]

    message = error_of(bp, "predictions", "lookup", "c", "--day", "2026-10-01")
    assert message.endswith("no prediction of entity 'c' in 'churn' on 2026-10-01")
    assert "no prediction of entity 'zz'" in error_of(bp, "predictions", "lookup", "zz", "--all")
    assert "unknown model 'ffff'" in error_of(bp, "predictions", "lookup", "a", "--model", "ffff")


def test_reports_without_a_champion(engine: sa.Engine) -> None:
    assert reports.models_list(engine, "churn") == "no models registered for dataset 'churn' yet"
    with pytest.raises(reports.NotFound, match="no prediction of entity 'a' in 'churn'"):
        reports.predictions_lookup(engine, "churn", "a")
    assert reports.alias_history(engine, "churn") == "no alias changes for dataset 'churn' yet"


def test_config_and_dataset_in_any_position(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv(config.DATABASE_URL_ENV, engine.url.render_as_string(hide_password=False))
    for argv in (
        [*CHURN, "models", "list"],
        ["models", *CHURN, "list"],
        ["models", "list", *CHURN, "--dataset", "churn"],
        ["--dataset", "churn", "status", *CHURN],
    ):
        cli.main(argv)
        assert "churn" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        cli.main(["--dataset", "churn", "models", "list", *CHURN, "--dataset", "deliveries"])
    assert "--dataset given twice with different names" in str(exc.value.code)
