"""Reports for operators: model versions, one model, two models side by side, the state of
recent days, an entity's predictions, what a lifecycle command changed, the gate's decision in
words, a validation result as a static HTML page, and progress lines on the terminal.

The text reports read the database and return text (aligned columns, metrics under readable
names, rounded to 4 digits); the `batchpred` command only prints it.
"""

from __future__ import annotations

import html
import json
import logging
import re
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, TextIO

import sqlalchemy as sa

from batchpred import db, evaluation, predictions, promotion, registry, storage, training

METRIC_NAMES = {  # display order and names; anything else shows with spaces for underscores
    "auc": "AUC",
    "logloss": "log loss",
    "accuracy": "accuracy",
    "rmse": "RMSE",
    "mae": "MAE",
    "r2": "R2",
    "positive_rate": "positive rate",
    "predicted_positive_rate": "predicted positive rate",
    "rows": "rows",
}
# not metrics of the model: the primary's name and value, errors, and what the registry keeps
# beside the gate's metrics (its baselines' metrics, the lift, which model they are of)
HIDDEN_METRICS = {
    "primary",
    "primary_value",
    "error",
    "unmatched_labels",
    "baselines",
    "lift_over_linear",
    "evaluated",
    "in_sample",
}
BASELINES = ("linear", "prior")  # the baselines every report shows, in this order
STATUS_DAYS = 7


class NotFound(LookupError):
    """Nothing matches the question (no such prediction); one line for the user."""


# --- formatting --------------------------------------------------------------------------------


def metric_label(key: str) -> str:
    return METRIC_NAMES.get(key, key.replace("_", " "))


def metric_value(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if key == "rows" or isinstance(value, int):
        return f"{int(value):,}"
    return f"{value:.4f}"


def metric_keys(*metrics: dict[str, Any]) -> list[str]:
    """The metric keys of one or more metric dicts, known ones in display order first."""
    present = {k for m in metrics for k in m if k not in HIDDEN_METRICS}
    return [k for k in METRIC_NAMES if k in present] + sorted(present - METRIC_NAMES.keys())


def format_metrics(metrics: dict[str, Any]) -> str:
    """`AUC 0.8094, log loss 0.4925, ...` (or the error a metric could not be computed with)."""
    if not metrics:
        return "none recorded"
    text = ", ".join(
        f"{metric_label(k)} {metric_value(k, metrics[k])}" for k in metric_keys(metrics)
    )
    return text + (f" (error: {metrics['error']})" if metrics.get("error") else "")


def primary_metric(metrics: dict[str, Any] | None) -> tuple[str, float] | None:
    """The model's primary metric under its readable name: `neg_rmse` -0.58 reads RMSE 0.58."""
    name, value = (metrics or {}).get("primary"), (metrics or {}).get("primary_value")
    if name is None or value is None:
        return None
    if name.startswith("neg_"):
        return metric_label(name[4:]), -float(value)
    return metric_label(name), float(value)


def baselines_text(metrics: Mapping[str, Any] | None) -> str:
    """`linear AUC 0.7712, prior AUC 0.5000; lift over linear +0.0312 AUC`: the baselines'
    primary metric and the model's lift over the linear one, from a version's metrics."""
    found = (metrics or {}).get("baselines") or {}
    shown = [(name, primary_metric(found[name])) for name in BASELINES if name in found]
    if not shown:
        return "not recorded (registered before baselines)"
    text = ", ".join(f"{name} {p[0]} {p[1]:.4f}" for name, p in shown if p)
    lift = (metrics or {}).get("lift_over_linear")
    if lift is not None:
        label = evaluation.metric_label(str((metrics or {}).get("primary", "")))
        text += f"; lift over linear {lift:+.4f} {label}"
    return text


def deployed_text(manifest: Mapping[str, Any]) -> str:
    """What the deployed model was fit on: the refit's rows, rounds and days, or the evaluated
    model itself (refit off, or a manifest from before refits)."""
    refit = manifest.get("refit")
    best, rounds = manifest.get("best_iteration"), manifest.get("num_boost_round")
    if refit is None:
        which = "itself" if manifest.get("evaluated") else "itself (trained before refits)"
        return (
            f"the evaluated model {which}: {manifest.get('train_rows', 0):,} rows; best "
            f"iteration {best} of {rounds} rounds"
        )
    days = refit.get("days") or []
    on = f" of {training.describe_days(days, None)}" if days else ""
    rounds = refit["num_boost_round"]
    return (
        f"refit on {refit['rows']:,} rows{on} (train, valid and holdout) for {rounds} "
        f"round{'' if rounds == 1 else 's'}: the evaluated model's best iteration {best} + 1"
    )


def tuning_text(tuning: Mapping[str, Any]) -> str:
    """`12 of 20 trials (stopped by the 300 s budget); chose trial 4 by valid AUC 0.8123`."""
    ran, planned, chosen = tuning["ran"], tuning["trials_planned"], tuning["chosen"]
    stopped = f" (stopped by the {tuning['budget_s']:g} s budget)"
    value = tuning["trials"][chosen]["valid_value"]
    return (
        f"{ran} of {planned} trials{stopped if tuning['stopped_by_budget'] else ''}; chose "
        f"trial {chosen} by valid {metric_label(tuning['metric'])} {value:.4f}"
    )


def align(header: Sequence[str], rows: Iterable[Sequence[str]], right: Iterable[int] = ()) -> str:
    """Rows as columns two spaces apart; the `right` columns (numbers) right-aligned."""
    rows, right = [list(r) for r in rows], set(right)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = (
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "  ".join(padded).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])


def _ts(ts: Any) -> datetime:
    """A stored timestamp, or one of the JSON reports' ISO texts, in UTC."""
    return registry.utc(datetime.fromisoformat(ts) if isinstance(ts, str) else ts)


def _minute(ts: Any) -> str:
    return f"{_ts(ts):%Y-%m-%d %H:%M}" if ts is not None else "-"


def _day(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def _markers(aliases: dict[str, registry.AliasState], version: str) -> str:
    return ", ".join(a for a in registry.ALIASES if a in aliases and aliases[a].version == version)


def _rank(aliases: dict[str, registry.AliasState], version: str) -> int:
    """The champion first, then the challenger, then versions without an alias."""
    held = [
        i for i, a in enumerate(registry.ALIASES) if a in aliases and aliases[a].version == version
    ]
    return min(held, default=len(registry.ALIASES))


def _window(manifest: dict[str, Any] | None) -> str:
    """The days a model trained on, of its window's span, naming the missing ones."""
    created = (manifest or {}).get("created_from") or {}
    if not created.get("days"):
        return "unknown (manifest not readable)" if manifest is None else "not recorded"
    return training.describe_days(created["days"], created.get("missing_days"))


def not_retrained(version: str, passed_over: Sequence[Mapping[str, str]]) -> str:
    """Why a night did not train: DVC found model `version` current (window.py: the window's
    labelled days, their contents, the settings and the code unchanged), with the partitions
    passed over tonight, which training does not read."""
    why = "not retrained: the window's labelled days, the settings and the code are unchanged "
    why += f"since model {version} was trained"
    if passed_over:
        why += f"; passed over: {training.describe_missing(passed_over)}"
    return why


def training_lines(data: Mapping[str, Any]) -> list[str]:
    """What the nightly summary says a model was trained on (training.training_data): the
    days of the window with the missing ones, rows, what was left out, late labels matching
    no row, any sample."""
    lines = [
        f"  trained on {data['days']}",
        f"    {sum(data['rows'].values()):,} rows in train/valid/holdout; left out: "
        f"{data['unlabelled_rows_left_out']:,} without a label, "
        f"{data['rejected_rows_left_out']:,} breaking a rule, "
        f"{len(data['days_passed_over'])} day(s) passed over",
    ]
    unmatched = data.get("late_labels_matching_no_row", "none")
    if unmatched != "none":
        lines.append(f"    late labels matching no row: {unmatched}")
    if "trained_on_a_sample" in data:
        lines.append(f"    trained on a sample: {data['trained_on_a_sample']}")
    return lines


def _manifest(uri: str) -> dict[str, Any] | None:
    try:
        return registry.read_manifest(uri)
    except (OSError, ValueError):  # store unreachable or file gone: show what the row knows
        return None


# --- models ------------------------------------------------------------------------------------


def _iso(ts: Any) -> str | None:
    """A timestamp for JSON: ISO 8601 in UTC with a Z, as the API writes them."""
    return None if ts is None else registry.utc(ts).isoformat().replace("+00:00", "Z")


def _aliases_of(aliases: dict[str, registry.AliasState], version: str) -> list[str]:
    return [a for a in registry.ALIASES if a in aliases and aliases[a].version == version]


def _primary(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """{key: "rmse", name: "RMSE", value: 0.58} (a neg_ primary as the metric itself)."""
    p = primary_metric(metrics)
    if p is None or metrics is None:
        return None
    return {"key": str(metrics["primary"]).removeprefix("neg_"), "name": p[0], "value": p[1]}


def models_list_data(engine: sa.Engine, dataset: str) -> dict[str, Any]:
    """`batchpred models list --json`: every version of the dataset, newest first."""
    versions = registry.list_versions(engine, dataset)
    aliases = registry.get_aliases(engine, dataset) if versions else {}
    return {
        "dataset": dataset,
        "models": [
            {
                "version": v["version"],
                "created_at": _iso(v["created_at"]),
                "aliases": _aliases_of(aliases, v["version"]),
                "primary_metric": _primary(v["metrics"]),
                "metrics": v["metrics"] or {},
            }
            for v in versions
        ],
    }


def models_list(engine: sa.Engine, dataset: str) -> str:
    """One line per version of the dataset, newest first, with alias markers."""
    models = models_list_data(engine, dataset)["models"]
    if not models:
        return f"no models registered for dataset {dataset!r} yet"
    primaries = [m["primary_metric"] for m in models]
    names = {p["name"] for p in primaries if p}
    header = names.pop() if len(names) == 1 else "METRIC"
    rows = []
    for m, p in zip(models, primaries, strict=True):
        value = (
            "-"
            if p is None
            else f"{p['value']:.4f}"
            if header == p["name"]
            else f"{p['name']} {p['value']:.4f}"
        )
        rows.append([m["version"], _minute(m["created_at"]), value, ", ".join(m["aliases"])])
    table = align(["VERSION", "CREATED (UTC)", header, "ALIASES"], rows, right=[2])
    return f"models of {dataset} ({len(models)}, newest first)\n{table}"


def model_show_data(engine: sa.Engine, dataset: str, ref: str) -> dict[str, Any]:
    """`batchpred models show --json`: the registry's row of one version, its manifest (null
    when the store cannot be read), its aliases and its alias history (newest 10)."""
    version = registry.find_version(engine, dataset, ref)
    row = registry.get_version(engine, version)
    aliases = registry.get_aliases(engine, dataset)
    return {
        "dataset": dataset,
        "version": version,
        "aliases": _aliases_of(aliases, version),
        "created_at": _iso(row["created_at"]),
        "sha256": row["sha256"],
        "dvc_md5": row["dvc_md5"],
        "uri": row["uri"],
        "xgboost_version": row["xgboost_version"],
        "training_data_hash": row["training_data_hash"],
        "contract": row.get("contract") or {},
        "metrics": row["metrics"] or {},
        "manifest": _manifest(row["uri"]),
        "alias_history": [
            _change(h) for h in registry.alias_history(engine, dataset, version=version, limit=10)
        ],
    }


def model_show(engine: sa.Engine, dataset: str, ref: str) -> str:
    """Everything an operator asks about one version: store, training, metrics, contract,
    alias history (model_show_data, as text)."""
    data = model_show_data(engine, dataset, ref)
    version, manifest, contract = data["version"], data["manifest"], data["contract"]
    features = contract.get("features") or []
    facts = [
        ("created", registry.when(_ts(data["created_at"]))),
        ("sha256", data["sha256"]),
        ("dvc md5", data["dvc_md5"] or "-"),
        ("stored at", data["uri"]),
        ("xgboost", data["xgboost_version"]),
        (
            "task",
            f"{contract.get('task', '?')}, target {contract.get('target', '?')}, "
            f"threshold {contract.get('threshold', '?')}",
        ),
        ("training window", _window(manifest)),
        ("training data", f"hash {data['training_data_hash']}"),
    ]
    metrics = data["metrics"]
    if manifest is not None:
        facts.append(("deployed model", deployed_text(manifest)))
        if manifest.get("tuning"):
            facts.append(("tuning", tuning_text(manifest["tuning"])))
    of = metrics.get("evaluated") or (evaluation.evaluated_model(manifest) if manifest else None)
    facts += [
        ("holdout metrics", format_metrics(metrics)),
        ("metrics of", of or "-"),
        ("baselines", baselines_text(metrics) if metrics else "-"),
        (
            "contract",
            f"{len(features)} features, spec hash {contract.get('spec_hash', '-')}, "
            f"encoding {contract.get('encoding', '-')}",
        ),
    ]
    width = max(len(k) for k, _ in facts)
    marks = ", ".join(data["aliases"])
    lines = [f"model {version} of {dataset}" + (f" ({marks})" if marks else "")]
    lines += [f"  {k.ljust(width)}  {v}" for k, v in facts]
    feature_rows = [
        [
            f["name"],
            f["dtype"],
            f"{len(f['vocabulary'])} values" if f.get("vocabulary") else "",
        ]
        for f in features
    ]
    if feature_rows:
        lines += [
            "    " + line
            for line in align(["FEATURE", "TYPE", "VOCABULARY"], feature_rows).split("\n")
        ]
    if data["alias_history"]:
        lines.append("  alias history (newest first)")
        lines += ["    " + line for line in _history_table(data["alias_history"]).split("\n")]
    return "\n".join(lines)


def _history_table(history: list[dict[str, Any]]) -> str:
    rows = [
        [
            _minute(h["set_at"]),
            h["alias"],
            h["action"] or "-",
            h["version"] if h["action"] != registry.UNPIN else f"({h['version']})",
            h["previous_version"] or "-",
            h["set_by"] or "-",
            h["reason"] or "",
        ]
        for h in history
    ]
    return align(["WHEN (UTC)", "ALIAS", "ACTION", "VERSION", "BEFORE", "BY", "WHY"], rows)


def _change(h: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "set_at": _iso(h["set_at"]),
        "alias": h["alias"],
        "action": h["action"],
        "version": h["version"],
        "previous_version": h["previous_version"],
        "set_by": h["set_by"],
        "reason": h["reason"],
    }


def alias_history_data(engine: sa.Engine, dataset: str, limit: int = 20) -> dict[str, Any]:
    """`batchpred models history --json`: the newest alias changes, newest first."""
    history = registry.alias_history(engine, dataset, limit=limit)
    return {"dataset": dataset, "changes": [_change(h) for h in history]}


def alias_history(engine: sa.Engine, dataset: str, limit: int = 20) -> str:
    """The newest alias changes of a dataset: who, when, how and why."""
    history = alias_history_data(engine, dataset, limit)["changes"]
    if not history:
        return f"no alias changes for dataset {dataset!r} yet"
    return f"alias changes of {dataset} (newest first)\n{_history_table(history)}"


def models_compare_data(engine: sa.Engine, dataset: str, ref_a: str, ref_b: str) -> dict[str, Any]:
    """`batchpred models compare --json`: each version's row (holdout metrics as recorded, on
    its own holdout) and manifest, and the realised metrics of every day both have them,
    newest first."""
    a, b = (
        registry.find_version(engine, dataset, ref_a),
        registry.find_version(engine, dataset, ref_b),
    )
    aliases = registry.get_aliases(engine, dataset)

    def side(v: str) -> dict[str, Any]:
        row = registry.get_version(engine, v)
        return {
            "version": v,
            "aliases": _aliases_of(aliases, v),
            "created_at": _iso(row["created_at"]),
            "metrics": row["metrics"] or {},
            "manifest": _manifest(row["uri"]),
        }

    realised = _realised(engine, dataset, [a, b])
    days = sorted(
        {d for d, v in realised if v == a} & {d for d, v in realised if v == b}, reverse=True
    )
    return {
        "dataset": dataset,
        "a": side(a),
        "b": side(b),
        "realised": [
            {"day": d.isoformat(), "a": realised[d, a], "b": realised[d, b]} for d in days
        ],
    }


def models_compare(engine: sa.Engine, dataset: str, ref_a: str, ref_b: str) -> str:
    """Two versions side by side: each one's holdout metrics as recorded (each on its own
    holdout), then realised metrics on every day both have them (models_compare_data)."""
    data = models_compare_data(engine, dataset, ref_a, ref_b)
    A, B = data["a"], data["b"]

    def name(side: Mapping[str, Any]) -> str:
        marks = ", ".join(side["aliases"])
        return f"{side['version']} ({marks})" if marks else side["version"]

    ma, mb = A["metrics"], B["metrics"]
    rows = [
        ["created (UTC)", _minute(A["created_at"]), _minute(B["created_at"]), ""],
        ["training window", _window(A["manifest"]), _window(B["manifest"]), ""],
    ]
    for key in metric_keys(ma, mb):
        va, vb = ma.get(key), mb.get(key)
        delta = ""
        if isinstance(va, int | float) and isinstance(vb, int | float) and key != "rows":
            delta = f"{vb - va:+.4f}"
        rows.append([metric_label(key), metric_value(key, va), metric_value(key, vb), delta])
    rows += _baseline_rows(ma, mb)
    lines = [
        f"{dataset}: A = {name(A)}, B = {name(B)}",
        "holdout metrics, each model on its own holdout as recorded at registration (of its "
        "evaluated model, fit without that holdout), beside its baselines:",
        align(["", "A", "B", "B - A"], rows, right=[1, 2, 3]),
    ]
    lines += [f"A: {ma.get('evaluated') or 'not recorded'}"]
    lines += [f"B: {mb.get('evaluated') or 'not recorded'}"]
    realised = data["realised"]
    if not realised:
        lines.append("realised metrics: no day has them for both models yet")
        return "\n".join(lines)
    keys = [
        k
        for k in metric_keys(*(r[s]["metrics"] for r in realised for s in ("a", "b")))
        if k != "rows"
    ]
    header = ["DAY", "ROWS"] + [f"{metric_label(k)} {s}" for k in keys for s in ("A", "B")]
    table = [
        [r["day"], f"{r['a']['rows']:,}"]
        + [metric_value(k, r[s]["metrics"].get(k)) for k in keys for s in ("a", "b")]
        for r in realised
    ]
    lines += [
        "realised metrics per day (labels arrived), on the rows each model scored:",
        align(header, table, right=range(1, len(header))),
    ]
    return "\n".join(lines)


def _baseline_rows(ma: Mapping[str, Any], mb: Mapping[str, Any]) -> list[list[str]]:
    """Rows of models_compare: each baseline's primary metric, and the lift over linear."""
    rows = []
    for which in BASELINES:
        of_a, of_b = (primary_metric((m.get("baselines") or {}).get(which)) for m in (ma, mb))
        if of_a is None and of_b is None:
            continue
        label = (of_a or of_b or ("", 0.0))[0]
        va, vb = (f"{p[1]:.4f}" if p else "-" for p in (of_a, of_b))
        delta = f"{of_b[1] - of_a[1]:+.4f}" if of_a and of_b else ""
        rows.append([f"{which} baseline {label}", va, vb, delta])
    lift_a, lift_b = ma.get("lift_over_linear"), mb.get("lift_over_linear")
    if lift_a is not None or lift_b is not None:
        va, vb = (f"{x:+.4f}" if x is not None else "-" for x in (lift_a, lift_b))
        delta = "" if lift_a is None or lift_b is None else f"{lift_b - lift_a:+.4f}"
        rows.append(["lift over linear", va, vb, delta])
    return rows


def _realised(
    engine: sa.Engine,
    dataset: str,
    versions: Sequence[str] | None = None,
    days: Sequence[date] | None = None,
) -> dict[tuple[date, str], dict[str, Any]]:
    t = db.table(engine, "realised_metrics")
    query = sa.select(t.c.partition_date, t.c.model_version, t.c.rows, t.c.metrics).where(
        t.c.dataset == dataset
    )
    if versions is not None:
        query = query.where(t.c.model_version.in_(list(versions)))
    if days is not None:
        query = query.where(t.c.partition_date.in_(list(days)))
    with engine.connect() as conn:
        return {
            (_day(r.partition_date), r.model_version): {"rows": r.rows, "metrics": r.metrics or {}}
            for r in conn.execute(query)
        }


# --- lifecycle changes -------------------------------------------------------------------------


def lifecycle_change(
    command: str,
    dataset: str,
    change: registry.Change,
    by: str,
    reason: str,
    outlook: promotion.Outlook,
) -> str:
    """What `promote`, `rollback`, `pin` or `unpin` did, in words, and then what the next
    nightly may do to the champion as the command leaves it (`outlook`, read after it)."""
    who = f"by {by}: {reason}"
    then = next_nightly(outlook)
    if command == "promote":
        if not change.changed:
            same = f"{change.champion} is already the champion of {dataset}; nothing changed"
            return f"{same}\n{then}"
        before = change.champion_before or "none"
        return f"champion of {dataset}: {before} -> {change.champion} ({who})\n{then}"
    if command == "rollback":
        old = change.champion_before
        return (
            f"champion of {dataset} rolled back: {old} -> {change.champion} ({who})\n{then}; "
            f"even unpinned, the gate never re-promotes {old} "
            f"(`batchpred models promote {old}` does)"
        )
    if command == "pin":
        if not change.changed:
            return (
                f"{change.champion} is already the pinned champion of {dataset}; nothing "
                f"changed\n{then}"
            )
        lines = []
        if change.champion_before != change.champion:
            lines.append(
                f"champion of {dataset}: {change.champion_before or 'none'} -> {change.champion}"
            )
        if change.pinned_before and change.pinned_before != change.champion:
            lines.append(f"the pin moves from {change.pinned_before}")
        return "\n".join([*lines, f"champion of {dataset} pinned ({who})", then])
    if command == "unpin":
        if not change.changed:
            return f"the champion of {dataset} is not pinned; nothing changed\n{then}"
        return f"champion {change.champion} of {dataset} unpinned ({who})\n{then}"
    raise ValueError(f"unknown lifecycle command {command!r}")


# --- status ------------------------------------------------------------------------------------


def _active_days(conn: sa.Connection, engine: sa.Engine, dataset: str, limit: int) -> list[date]:
    """The newest days with any ledger, validation, drift or realised row."""
    selects = [
        sa.select(t.c.partition_date.label("d")).where(
            t.c.dataset == dataset, t.c.partition_date.is_not(None)
        )
        for t in (
            db.table(engine, name)
            for name in (
                "scoring_ledger",
                "validation_results",
                "drift_metrics",
                "realised_metrics",
            )
        )
    ]
    union = sa.union(*selects).subquery()
    rows = conn.execute(sa.select(union.c.d).order_by(union.c.d.desc()).limit(limit)).scalars()
    return [_day(d) for d in rows]


def status_data(
    engine: sa.Engine, dataset: str, *, day: date | None = None, days: int = STATUS_DAYS
) -> dict[str, Any]:
    """`batchpred status --json`: per day (one, or the newest `days` with any activity),
    newest first, its newest validation verdict and per model (champion first) its ledger
    counts, its largest drift and its realised metrics; the aliases; notes (invalid days,
    late labels that failed or matched no row)."""
    ledger, verdicts = db.table(engine, "scoring_ledger"), db.table(engine, "validation_results")
    drift = db.table(engine, "drift_metrics")
    with engine.connect() as conn:
        wanted = [day] if day is not None else _active_days(conn, engine, dataset, days)
        scored = {
            (_day(r["partition_date"]), r["model_version"]): r
            for r in conn.execute(
                sa.select(ledger).where(
                    ledger.c.dataset == dataset, ledger.c.partition_date.in_(wanted)
                )
            ).mappings()
        }
        verdict: dict[date, Any] = {}
        for v in conn.execute(
            sa.select(verdicts.c.partition_date, verdicts.c.success, verdicts.c.message)
            .where(verdicts.c.dataset == dataset, verdicts.c.partition_date.in_(wanted))
            .order_by(verdicts.c.id)
        ):
            verdict[_day(v.partition_date)] = v  # the newest wins
        worst: dict[tuple[date, str], Any] = {}
        for r in conn.execute(
            sa.select(
                drift.c.partition_date, drift.c.model_version, drift.c.feature, drift.c.psi
            ).where(drift.c.dataset == dataset, drift.c.partition_date.in_(wanted))
        ):
            key = (_day(r.partition_date), r.model_version)
            if key not in worst or r.psi > worst[key].psi:
                worst[key] = r
    realised = _realised(engine, dataset, days=wanted)
    aliases = registry.get_aliases(engine, dataset)
    out_days, notes = [], []
    for d in sorted(wanted, reverse=True):
        models = sorted(
            {v for dd, v in [*scored, *worst, *realised] if dd == d},
            key=lambda v: (_rank(aliases, v), v),
        )
        checked = verdict.get(d)
        if not models and checked is None:
            continue  # only a --day with nothing on it
        if checked is not None and not checked.success and checked.message:
            notes.append(f"{d} invalid: {_first_failure(checked.message)}")
        notes += _labels_notes(d, [r for (dd, _), r in realised.items() if dd == d])
        entries = []
        for model in models:
            led, w, real = scored.get((d, model)), worst.get((d, model)), realised.get((d, model))
            entries.append(
                {
                    "version": model,
                    "aliases": _aliases_of(aliases, model),
                    "ledger": None
                    if led is None
                    else {
                        "status": led["status"],
                        "rows_in": led["rows_in"],
                        "rows_scored": led["rows_scored"],
                        "rows_rejected": led["rows_rejected"],
                        "finished_at": _iso(led["finished_at"]),
                    },
                    "max_psi": None if w is None else {"feature": w.feature, "psi": w.psi},
                    "realised": real,
                }
            )
        out_days.append(
            {
                "day": d.isoformat(),
                "validation": None
                if checked is None
                else {
                    "status": "valid" if checked.success else "invalid",
                    "message": checked.message,
                },
                "models": entries,
            }
        )
    champion = aliases.get(registry.CHAMPION)
    return {
        "dataset": dataset,
        "asked": {"day": day.isoformat()} if day is not None else {"days": days},
        "aliases": {
            a: {
                "version": st.version,
                "set_at": _iso(st.set_at),
                "set_by": st.set_by,
                "reason": st.reason,
            }
            for a, st in aliases.items()
        },
        "champion_trained_on": None
        if champion is None
        else _window(_manifest(registry.get_version(engine, champion.version)["uri"])),
        "days": out_days,
        "notes": notes,
    }


def status(
    engine: sa.Engine, dataset: str, *, day: date | None = None, days: int = STATUS_DAYS
) -> str:
    """status_data as text: the aliases, then one line per day and model."""
    data = status_data(engine, dataset, day=day, days=days)
    rows = []
    for entry in data["days"]:
        checked = entry["validation"]
        for i, m in enumerate(entry["models"] or [None]):
            led = m and m["ledger"]
            w = m and m["max_psi"]
            real = m and m["realised"]
            p = primary_metric(real["metrics"]) if real else None
            first = i == 0
            rows.append(
                [
                    entry["day"] if first else "",
                    ("-" if checked is None else checked["status"]) if first else "",
                    m["version"] if m else "-",
                    ", ".join(m["aliases"]) if m else "",
                    f"{led['rows_in']:,}" if led else "-",
                    f"{led['rows_scored']:,}" if led else "-",
                    f"{led['rows_rejected']:,}" if led else "-",
                    f"{w['psi']:.3f} {w['feature']}" if w else "-",
                    f"{p[0]} {p[1]:.4f} ({real['rows']:,} labelled"
                    + (", in-sample)" if real["metrics"].get("in_sample") else ")")
                    if p and real
                    else "labels failed"
                    if real and _labels_failed(real)
                    else "-",
                ]
            )
    head = _alias_line(dataset, registry.get_aliases(engine, dataset))
    if data["champion_trained_on"] is not None:
        head += f"\nchampion trained on {data['champion_trained_on']}"
    if not rows:
        on = f" on {day}" if day is not None else " yet"
        return f"{head}\nno activity recorded for {dataset}{on}"
    header = ["DAY", "VALIDATION", "MODEL", "ALIASES", "ROWS IN", "SCORED", "REJECTED"]
    header += ["MAX PSI", "REALISED"]
    n = len(data["days"]) if day is None else 0
    what = f"day {day}" if day is not None else f"newest {n} day(s) with activity"
    return "\n".join([head, f"{what}:", align(header, rows, right=[4, 5, 6]), *data["notes"]])


def _labels_failed(realised: Mapping[str, Any]) -> bool:
    """A realised row recording that the day's late labels failed (monitoring)."""
    return realised["rows"] == 0 and "unmatched_labels" in realised["metrics"]


def _labels_notes(day: date, realised: Sequence[Mapping[str, Any]]) -> list[str]:
    """The day's late labels matching no row, from its realised rows (the count is the day's,
    the same in each): the failure's line, or the count where the labels passed."""
    for r in realised:
        if _labels_failed(r):
            return [r["metrics"].get("error") or f"late labels of {day} failed"]  # names the day
    counts = {r["metrics"].get("unmatched_labels") or 0 for r in realised}
    if max(counts, default=0):
        return [f"{day} late labels: {max(counts):,} match no row of the day's partition"]
    return []


def _first_failure(message: str) -> str:
    """The first failing rule of a stored validation message (its first `  - ` line)."""
    lines = message.splitlines()
    failures = [line.strip()[2:] for line in lines if line.strip().startswith("- ")]
    return failures[0] if failures else lines[0]


def _alias_line(dataset: str, aliases: dict[str, registry.AliasState]) -> str:
    champion, challenger = aliases.get(registry.CHAMPION), aliases.get(registry.CHALLENGER)
    frozen = aliases.get(registry.PINNED)
    parts = [f"champion {champion.version if champion else 'none'}"]
    if frozen is not None:
        who = frozen.set_by or "unknown"
        parts[0] += f" (pinned by {who} on {registry.when(frozen.set_at)}: {frozen.reason})"
    if challenger is not None:
        parts.append(f"challenger {challenger.version}")
    return f"{dataset}: " + ", ".join(parts)


# --- predictions -------------------------------------------------------------------------------


def find_predictions(engine: sa.Engine, dataset: str, entity_id: str) -> list[dict[str, Any]]:
    """Every stored prediction of an entity (any model, any day), newest day first: the
    history, not the current prediction (that is predictions.lookup)."""
    preds = db.table(engine, "predictions")
    query = (
        sa.select(
            preds.c.partition_date,
            preds.c.model_version,
            preds.c.score,
            preds.c.label,
            preds.c.scored_at,
        )
        .where(preds.c.dataset == dataset, preds.c.entity_id == str(entity_id))
        .order_by(preds.c.partition_date.desc(), preds.c.model_version)
    )
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def predictions_lookup(
    engine: sa.Engine,
    dataset: str,
    entity_id: str,
    *,
    day: date | None = None,
    model: str | None = None,
    every: bool = False,
    as_json: bool = False,
) -> str:
    """predictions.lookup rendered (a table, or its JSON); with `every` the entity's whole
    history. NotFound when nothing matches."""
    version = registry.find_version(engine, dataset, model) if model is not None else None
    if every:
        found = [
            r
            for r in find_predictions(engine, dataset, entity_id)
            if (version is None or r["model_version"] == version)
            and (day is None or _day(r["partition_date"]) == day)
        ]
        if as_json:
            return json.dumps(
                [
                    {
                        "dataset": dataset,
                        "entity_id": str(entity_id),
                        "partition_date": str(_day(r["partition_date"])),
                        "score": r["score"],
                        "label": r["label"],
                        "model_version": r["model_version"],
                    }
                    for r in found
                ]
            )
    else:
        with engine.connect() as conn:
            one = predictions.lookup(conn, dataset, entity_id, day=day, model=version)
        if one is not None and as_json:
            return json.dumps(one.to_json())
        found = (
            [
                {
                    "partition_date": one.partition_date,
                    "model_version": one.model_version,
                    "score": one.score,
                    "label": one.label,
                    "scored_at": one.scored_at,
                }
            ]
            if one
            else []
        )
    if not found:
        by = f" by {version}" if version else ""
        on = f" on {day}" if day else ""
        raise NotFound(f"no prediction of entity {entity_id!r} in {dataset!r}{by}{on}")
    aliases = registry.get_aliases(engine, dataset)
    rows = [
        [
            str(_day(r["partition_date"])),
            r["model_version"],
            _markers(aliases, r["model_version"]),
            f"{r['score']:.4f}",
            "-" if r["label"] is None else str(r["label"]),
            _minute(r["scored_at"]),
        ]
        for r in found
    ]
    table = align(["DAY", "MODEL", "ALIASES", "SCORE", "LABEL", "SCORED AT (UTC)"], rows, right=[3])
    note = ""
    if not every and version is None and aliases.get(registry.CHAMPION) is not None:
        champion = aliases[registry.CHAMPION].version
        if found[0]["model_version"] != champion:
            note = f"\n(the champion {champion} has not scored it; an earlier champion's)"
    return f"entity {entity_id} of {dataset}:\n{table}{note}"


# --- the gate's decision and what the next nightly may do, in words ----------------------------


def gate_summary(decision: evaluation.GateDecision) -> str:
    """One line for a log or an artifact: the version, the decision and its reasons."""
    return f"model {decision.version} {decision.decision}: {decision.describe()}"


def next_nightly(outlook: promotion.Outlook) -> str:
    """What the next nightly gate may do to the champion, as a lifecycle command leaves it:
    nothing while pinned; against an operator's champion, replace it only with a model that
    beats it by the margin; else with one within max_regression of it."""
    champion = outlook.champion
    if champion is None:
        return "the nightly gate will promote the next model that clears training.gate.min_metric"
    label = evaluation.metric_label(outlook.metric)
    lower = outlook.metric.startswith("neg_")
    drift = (
        ", and not while the holdout has drifted against the champion's training data "
        "(monitoring.block_promotion_on_drift)"
        if outlook.drift_block
        else ""
    )
    if outlook.operator is not None:
        rule = (
            f"only with a model that beats its {label} by more than {outlook.margin:.4f} "
            f"({'lower' if lower else 'higher'} is better; "
            f"training.gate.min_improvement_over_operator){drift}"
        )
    else:
        rule = (
            f"with any model whose {label} is at most {outlook.max_regression:.4f} "
            f"{'higher' if lower else 'lower'} (training.gate.max_regression){drift}"
        )
    if outlook.pinned is not None:
        return (
            f"pinned: the nightly will not change the champion {champion} until `batchpred "
            f"models unpin --reason ...` (new models are still trained, registered, reported "
            f"and set as challenger); once unpinned, the nightly gate will replace it {rule}"
        )
    if outlook.operator is not None:
        return f"the nightly gate will replace {champion} {rule}"
    return f"the nightly gate may replace {champion} {rule}"


def round_metric(value: Any) -> Any:
    """A metric for a table: floats to 4 decimals, anything else as it is."""
    if isinstance(value, float) and not isinstance(value, bool):
        return round(value, 4)
    return value


# --- validation results as a page readable offline ---------------------------------------------

_HIDDEN_KWARGS = {"column", "column_list", "batch_id", "result_format", "include_config"}
_PAGE_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse;width:100%}"
    "th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
    "th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums}"
    ".fail{background:#fde8e8}.pass{color:#1a7f37}.bad{color:#b42318;font-weight:bold}"
    "code{font-size:90%}"
)


def validation_page_url(json_url: str) -> str:
    """Where the page of a validation report (JSON) is written: beside it, as .html."""
    return json_url[: -len(".json")] + ".html" if json_url.endswith(".json") else json_url + ".html"


def existing_page(json_url: str) -> str | None:
    """The page of a validation report if it was written (reports older than the pages have
    none); a remote one is assumed written (no request per partition to find out)."""
    url = validation_page_url(json_url)
    if "://" in url and not url.startswith("file://"):
        return url
    fs, path = storage.url_to_fs(url)
    return url if fs.exists(path) else None


def _rule_args(kwargs: dict[str, Any]) -> str:
    parts = []
    for key, value in kwargs.items():
        if key in _HIDDEN_KWARGS or value is None:
            continue
        if isinstance(value, list) and len(value) > 8:
            shown = f"<{len(value)} values: {', '.join(map(repr, value[:3]))}, ...>"
        else:
            shown = repr(value)
        parts.append(f"{key}={shown}")
    return ", ".join(parts)


def validation_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per rule of a validation report (the JSON validation writes): rule, column,
    unexpected count and percent, what was observed, passed; failures first."""
    rows = []
    for r in (summary.get("gx") or {}).get("results") or []:
        conf = r.get("expectation_config") or {}
        kwargs = conf.get("kwargs") or {}
        out = r.get("result") or {}
        info = r.get("exception_info") or {}
        errors = [info] if "raised_exception" in info else list(info.values())
        error = next(
            (
                e.get("exception_message")
                for e in errors
                if isinstance(e, dict) and e.get("raised_exception")
            ),
            None,
        )
        observed = out.get("observed_value")
        examples = out.get("partial_unexpected_list") or []
        rows.append(
            {
                "rule": conf.get("type", "?"),
                "args": _rule_args(kwargs),
                "column": kwargs.get("column") or ", ".join(kwargs.get("column_list") or []) or "",
                "unexpected": out.get("unexpected_count"),
                "percent": out.get("unexpected_percent"),
                "observed": f"error: {error}"
                if error
                else repr(observed)
                if observed is not None
                else (f"e.g. {examples[:3]!r}" if examples else ""),
                "passed": bool(r.get("success")),
            }
        )
    rows.sort(key=lambda row: (row["passed"], row["column"], row["rule"]))
    return rows


def validation_page(summary: dict[str, Any], *, dataset: str, json_name: str | None = None) -> str:
    """A validation report (the JSON validation writes) as one self-contained HTML page: no
    script, no stylesheet or font from elsewhere, so it reads the same offline."""
    esc = html.escape
    rows = validation_rows(summary)
    failed = sum(not r["passed"] for r in rows)
    ok = bool(summary.get("success"))
    subject = str(summary.get("subject", ""))
    partition = re.search(r"dt=(\d{4}-\d{2}-\d{2})", subject)
    title = f"{dataset}: validation of {partition[0] if partition else subject}"
    verdict = (
        '<span class="pass">valid</span>'
        if ok
        else f'<span class="bad">invalid: {failed} of {len(rows)} rules failed</span>'
    )
    body = []
    for r in rows:
        count = "" if r["unexpected"] is None else f"{r['unexpected']:,}"
        pct = "" if r["percent"] is None else f"{r['percent']:.2f}%"
        result = '<td class="pass">pass</td>' if r["passed"] else '<td class="bad">FAIL</td>'
        body.append(
            f'<tr class="{"ok" if r["passed"] else "fail"}">'
            f"<td>{esc(r['column']) or '(table)'}</td>"
            f"<td><code>{esc(r['rule'])}</code><br><small>{esc(r['args'])}</small></td>"
            f'<td class="n">{count}</td><td class="n">{pct}</td>'
            f"<td>{esc(str(r['observed'])[:300])}</td>{result}</tr>"
        )
    links = [f'<a href="{esc(json_name)}">the full report (JSON)</a>'] if json_name else []
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{esc(title)}</title><style>{_PAGE_STYLE}</style></head><body>",
            f"<h1>{esc(title)}</h1>",
            f"<p>{verdict}; {summary.get('rows', 0):,} rows; {len(rows)} rules.</p>",
            f"<p><small>{esc(subject)}</small></p>",
            "<table><thead><tr><th>column</th><th>rule</th><th>unexpected rows</th>"
            "<th>unexpected %</th><th>observed</th><th>result</th></tr></thead><tbody>",
            *body,
            "</tbody></table>",
            f"<p><small>written {made}"
            + (f"; {' '.join(links)}" if links else "")
            + "</small></p>",
            "</body></html>",
            "",
        ]
    )


def write_validation_page(json_url: str, dataset: str) -> str:
    """Read a validation report (JSON, any fsspec URL), write its page beside it; the page's URL."""
    fs, path = storage.url_to_fs(json_url)
    summary = json.loads(fs.cat_file(path))
    page = validation_page(summary, dataset=dataset, json_name=path.rsplit("/", 1)[-1])
    out_url = validation_page_url(json_url)
    out_fs, out_path = storage.url_to_fs(out_url)
    out_fs.pipe_file(out_path, page.encode())
    return out_url


# --- progress on the terminal ------------------------------------------------------------------

_STREAM: TextIO | None = None  # set by outcomes.entry_point; None: runs print no progress


def progress_stream(stream: TextIO | None) -> TextIO | None:
    """Where progress lines go (an entry point's stderr); returns the previous one."""
    global _STREAM
    previous, _STREAM = _STREAM, stream
    return previous


def _duration(seconds: float) -> str:
    return (
        f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:02.0f} s"
    )


def progress_line(title: str, done: int, total: int, detail: str, seconds: float) -> str:
    """`score churn [########............] 12/30 ... 41.0 s`"""
    width = 20
    filled = width * done // total if total else width
    bar = "#" * filled + "." * (width - filled)
    return f"{title} [{bar}] {done}/{total} {detail} {_duration(seconds)}"


class TerminalProgress:
    """A run phase's progress on the terminal of an entry point. On a TTY whose console log is
    quiet (the `prefect` logger above INFO, as `make run` sets it), a bar redrawn in place as
    items finish; in any case one summary line when the phase ends, so a log file gets one
    line per phase, never a line per redraw. Silent outside entry points (served runs)."""

    def __init__(self, title: str, stream: TextIO | None = None) -> None:
        self.title = title
        self.stream = stream if stream is not None else _STREAM
        self.started = time.monotonic()
        tty = bool(self.stream is not None and getattr(self.stream, "isatty", lambda: False)())
        quiet = logging.getLogger("prefect").getEffectiveLevel() > logging.INFO
        self.live = tty and quiet
        self.width = shutil.get_terminal_size((100, 20)).columns

    def show(self, done: int, total: int, detail: str = "") -> None:
        if not self.live or self.stream is None:
            return
        line = progress_line(self.title, done, total, detail, time.monotonic() - self.started)
        # Cursor back to column 0: a log line printed meanwhile overwrites the bar.
        self.stream.write("\r\x1b[K" + line[: self.width - 1] + "\r")
        self.stream.flush()

    def finish(self, detail: str) -> None:
        if self.stream is None:
            return
        took = _duration(time.monotonic() - self.started)
        self.stream.write(("\r\x1b[K" if self.live else "") + f"{self.title}: {detail} ({took})\n")
        self.stream.flush()


def realised_pairs(computed: Sequence[Mapping[str, Any]]) -> str:
    """The (day, model) pairs of realised metrics just computed, as `day/version, ...`."""
    return ", ".join(f"{r['partition_date']}/{r['model_version']}" for r in computed)
