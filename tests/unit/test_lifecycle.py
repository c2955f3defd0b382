"""The model lifecycle: pin, rollback, promote and unpin against the nightly gate, history
that says who, when and why, and the operator's commands (`batchpred models | status |
predictions lookup`) through batchpred.cli.main.

The gate tests run on SQLite and, marked `postgres`, on a fresh PostgreSQL database.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from batchpred import cli, config, db, monitoring, promotion, registry, reports, sinks, verdicts
from batchpred.config import Settings
from batchpred.evaluation import GateDecision
from tests.unit.test_scoring import settings_for, train_small
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
    assert registry.get_version(engine, strong)["metrics"] == night.challenger_metrics

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
    assert "must beat it by more than 0.0000" in reason and reason.endswith("it does not")
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
    assert "FEATURE" in shown and "category" in shown and " values" in shown
    pin_row = next(line for line in shown.splitlines() if " pinned " in line)
    assert pin_row.split()[2:6] == ["pinned", "pin", three["good"], "-"]
    assert pin_row.split()[-2:] == ["tester", "freeze"]
    assert bp("models", "show", "champion") == shown

    message = error_of(bp, "models", "show", "nope")
    assert "unknown model 'nope' for dataset 'churn'" in message
    assert all(v in message for v in three.values())


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
