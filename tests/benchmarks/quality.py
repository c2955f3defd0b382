"""Model quality on real data: the model batchpred deploys against what a careful person trains
by hand from the same rows, measured out of time (make quality).

    .venv/bin/python -m tests.benchmarks.quality [--datasets bikeshare,nycflights13,diabetes,churn]
        [--no-doc]

Per dataset, one or more cases (a training window and the rows scored after it):

  bikeshare     ISLP's Capital Bikeshare hours of 2011: trained on 2011-01-01..04-30, scored on
                every hour of May and June (regression, R²).
  nycflights13  four nights, windows ending 2013-03-31, 06-30, 09-30 and 11-30 (the dataset's
                28 days), each scored on the next 14 days' flights that arrived (binary, AUC).
  diabetes      the snapshot holds 80% of the patients (a sha256 of "quality:<patient_id>",
                independent of the row split's hash); scored on the other 20% (R²).
  churn         the demo (make run's settings): trained on its first 28 days, scored on the
                labelled rows of the rest (AUC).

Each case runs in a temporary workspace (source, lake, SQLite database and models under a
tmp dir; nothing under data/ is read or written). The source is exported by batchpred's own
exporter (public.py, demo.py), the lake is written by the real ingest path
(ingestion.ingest_partition, then validation.validate_partition records each day's verdict,
which the training window reads), and batchpred trains with the functions the DVC stages run
(training.prepare_training_set, training.train_model) with training.until = the window's
last day. Models measured on the scored rows:

  deployed       batchpred's model.ubj, loaded by its manifest's sha256 and scored through
                 its contract (model.predict_table)
  no-refit       the same with training.refit false: the booster of the split (train,
                 early stopping on valid, holdout unseen)
  hand refit     plain pandas + xgboost, no batchpred code: the window's rows read from the
                 lake's Parquet files, the same features and params, early stopping on the
                 same valid rows, then refit on every row of the window with
                 best_iteration + 1 rounds
  hand no-refit  that early-stopped booster itself
  linear         batchpred's linear baseline (linear.ubj, baselines.predict_linear), when the
                 model directory has one
  prior          the training split's label mean (binary: positive rate), a constant

Metrics are scikit-learn's (r2_score, mean_squared_error, roc_auc_score, log_loss), the same
function for every model. Acceptance, per case (quality.json): the deployed model's primary
metric is within TOLERANCE of the hand refit and above the no-refit split; issue 14 asks it of
seasonal data (bikeshare). Figures, never assertions. Writes docs/quality.json (every figure
under stable keys) and docs/quality.md (a table per dataset, then a reading of them) unless
--no-doc. Seen: about 2 minutes on an idle 2-core machine, most of it in train_model (twice
a case) and in validating the lake.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa
import xgboost as xgb
from sklearn.metrics import log_loss, mean_squared_error, r2_score, roc_auc_score

from batchpred import (
    baselines,
    db,
    demo,
    ingestion,
    model,
    public,
    schema,
    storage,
    training,
    validation,
)
from batchpred.config import Settings, deep_merge, load_settings
from tests.benchmarks.bench import ROOT, log, machine

DOC_JSON = ROOT / "docs" / "quality.json"
DOC_MD = ROOT / "docs" / "quality.md"
TOLERANCE = 0.01  # the deployed model within this of the hand refit, on the primary metric
DATASETS = ("bikeshare", "nycflights13", "diabetes", "churn")
MODELS = ("deployed", "no_refit", "hand_refit", "hand_no_refit", "linear", "prior")
HEADINGS = {
    "deployed": "deployed",
    "no_refit": "no-refit",
    "hand_refit": "hand refit",
    "hand_no_refit": "hand no-refit",
    "linear": "linear",
    "prior": "prior",
}
PRIMARY = {"binary": "auc", "regression": "r2"}
# The hand-written training's objective and early-stopping metric, per task (XGBoost stops on
# the last metric of the list: batchpred's binary list is auc, logloss).
HAND_OBJECTIVE = {
    "binary": {"objective": "binary:logistic", "eval_metric": ["auc", "logloss"]},
    "regression": {"objective": "reg:squarederror", "eval_metric": ["rmse"]},
}
FLIGHT_NIGHTS = (date(2013, 3, 31), date(2013, 6, 30), date(2013, 9, 30), date(2013, 11, 30))
FLIGHT_SCORED_DAYS = 14
BIKESHARE_TRAIN = (date(2011, 1, 1), date(2011, 4, 30))
BIKESHARE_SCORED = (date(2011, 5, 1), date(2011, 6, 30))
DIABETES_SCORED_SHARE = 0.2
DIABETES_DAY = date(2026, 1, 1)  # the day the snapshot is ingested as (make diabetes's)
CHURN_TRAIN_DAYS = 28


@dataclass(frozen=True)
class Case:
    """One training window and the labelled rows scored after it."""

    dataset: str
    name: str
    settings: Settings  # the workspace's, with training.until = the window's last day
    engine: sa.Engine
    work: Path  # this case's folder for prepared data and models
    scored: pa.Table  # rows with a label, in the source's columns
    scored_days: tuple[date, date] | None  # None: a snapshot's other patients


# --- the workspace: source, lake and verdicts, as the pipeline writes them ----------------------


def workspace_settings(dataset: str, tmp: Path, **overrides: Any) -> Settings:
    """The dataset's config with every path under `tmp` and no late labels (the flights config
    points labels.url at data/labels-source, which is the user's)."""
    paths = {
        "source": {"url": str(tmp / "source")},
        "labels": {"url": None},
        "lake": {
            "raw": str(tmp / "raw"),
            "labels": str(tmp / "labels"),
            "reports": str(tmp / "reports"),
        },
        "validation": {"data_docs": False},
        "training": {"registry": str(tmp / "models")},
    }
    files = [ROOT / "configs/base.yaml", ROOT / f"configs/datasets/{dataset}.yaml"]
    return load_settings(files, overrides=deep_merge(paths, overrides))


def with_until(settings: Settings, until: date, **training: Any) -> Settings:
    cfg = settings.training.model_copy(update={"until": until, **training})
    return settings.model_copy(update={"training": cfg})


def land(settings: Settings, engine: sa.Engine, days: list[date]) -> None:
    """Ingest each source day into the raw zone and record its validation verdict, as the
    nightly's ingest does; a day that fails validation stops the run (a dataset config that
    rejects its own real data is a bug to see, not a case to measure)."""
    spec, raw = settings.dataset, settings.lake.raw
    for day in days:
        ingestion.ingest_partition(settings, day)
        report = validation.validate_partition(
            engine, spec, settings.validation, raw, day, reports_url=None, run_id="quality"
        )
        if not report.success:
            raise SystemExit(f"{spec.name} {day}: validation failed: {report.message()}")


def labelled(table: pa.Table, settings: Settings) -> pa.Table:
    target = settings.dataset.target.name
    if target not in table.column_names:
        return table.slice(0, 0)
    return table.filter(pc.is_valid(table.column(target)))


def source_days(settings: Settings, first: date, last: date) -> pa.Table:
    """The labelled rows of the source's days first..last (missing days skipped)."""
    url, parts = settings.source.url, []
    for i in range((last - first).days + 1):
        day = first + timedelta(days=i)
        if storage.partition_files(url, day):
            parts.append(labelled(storage.read_partition(url, day), settings))
    return pa.concat_tables([p for p in parts if p.num_rows], promote_options="default")


def engine_in(tmp: Path) -> sa.Engine:
    engine = db.create_engine(f"sqlite:///{tmp}/quality.db")
    db.migrate(engine)
    return engine


def bikeshare_cases(tmp: Path) -> Iterator[Case]:
    settings = workspace_settings("bikeshare", tmp)
    engine = engine_in(tmp)
    (first, last), (s_first, s_last) = BIKESHARE_TRAIN, BIKESHARE_SCORED
    done = public.write_bikeshare_source(settings.source.url, start=first, end=s_last)
    land(settings, engine, [d for d in done.days if d <= last])
    scored = source_days(settings, s_first, s_last)
    name = f"{first}..{last} -> {s_first}..{s_last}"
    yield Case(
        "bikeshare", name, with_until(settings, last), engine, tmp, scored, (s_first, s_last)
    )


def flights_cases(tmp: Path) -> Iterator[Case]:
    settings = workspace_settings("nycflights13", tmp)
    engine = engine_in(tmp)
    window = settings.training.window_days
    for night in FLIGHT_NIGHTS:
        first, s_last = night - timedelta(days=window - 1), night + timedelta(FLIGHT_SCORED_DAYS)
        done = public.write_flights_source(settings.source.url, start=first, end=s_last)
        land(settings, engine, [d for d in done.days if d <= night])
        s_first = night + timedelta(days=1)
        scored = source_days(settings, s_first, s_last)
        work = tmp / f"night-{night}"
        name = f"{first}..{night} -> {s_first}..{s_last}"
        yield Case(
            "nycflights13",
            name,
            with_until(settings, night),
            engine,
            work,
            scored,
            (s_first, s_last),
        )


def diabetes_cases(tmp: Path) -> Iterator[Case]:
    snapshot = tmp / "source" / storage.DATA_FILE
    settings = workspace_settings(
        "diabetes", tmp, source={"url": str(snapshot), "layout": "snapshot"}
    )
    engine = engine_in(tmp)
    patients = public.load_diabetes()
    ids = patients.column(public.DIABETES_ID).to_pylist()
    scored = np.array([_unit(f"quality:{i}") < DIABETES_SCORED_SHARE for i in ids])
    snapshot.parent.mkdir(parents=True)
    pq.write_table(patients.filter(pa.array(~scored)), snapshot)
    land(settings, engine, [DIABETES_DAY])
    name = f"{int((~scored).sum())} patients -> the other {int(scored.sum())}"
    yield Case(
        "diabetes",
        name,
        with_until(settings, DIABETES_DAY),
        engine,
        tmp,
        patients.filter(pa.array(scored)),
        None,
    )


def churn_cases(tmp: Path) -> Iterator[Case]:
    settings = workspace_settings("churn", tmp)
    engine = engine_in(tmp)
    days = demo.write_demo_source(settings.dataset, settings.demo, settings.source.url)
    train, rest = days[:CHURN_TRAIN_DAYS], days[CHURN_TRAIN_DAYS:]
    land(settings, engine, train)
    scored = source_days(settings, rest[0], rest[-1])
    name = f"{train[0]}..{train[-1]} -> {rest[0]}..{rest[-1]} (labelled rows)"
    yield Case(
        "churn", name, with_until(settings, train[-1]), engine, tmp, scored, (rest[0], rest[-1])
    )


CASES: dict[str, Callable[[Path], Iterator[Case]]] = {
    "bikeshare": bikeshare_cases,
    "nycflights13": flights_cases,
    "diabetes": diabetes_cases,
    "churn": churn_cases,
}


def _unit(text: str) -> float:
    """A stable number in [0, 1) for a string: the first 8 bytes of its sha256."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2.0**64


# --- batchpred ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trained:
    """A model directory the DVC stage `train` wrote, loaded as scoring loads it."""

    directory: Path
    loaded: model.LoadedModel

    @classmethod
    def load(cls, directory: Path) -> Trained:
        manifest = json.loads((directory / training.MANIFEST_FILE).read_text())
        data = (directory / training.MODEL_FILE).read_bytes()
        if model.sha256_bytes(data) != manifest["sha256"]:
            raise model.ModelIntegrityError(f"{directory}: model bytes do not match")
        booster = xgb.Booster()
        booster.load_model(bytearray(data))
        contract = schema.Contract.from_dict(manifest["contract"])
        return cls(directory, model.LoadedModel(directory.name, booster, manifest, contract))

    @property
    def manifest(self) -> dict[str, Any]:
        return self.loaded.manifest

    def predict(self, table: pa.Table) -> np.ndarray:
        return model.predict_table(self.loaded, table)

    def predict_linear(self, table: pa.Table) -> np.ndarray | None:
        entry = (self.manifest.get("baselines") or {}).get("linear")
        if not entry:
            return None
        booster = baselines.load_linear((self.directory / entry["file"]).read_bytes())
        return baselines.predict_linear(booster, entry["encoding"], table, self.loaded.contract)

    @property
    def prior(self) -> float | None:
        entry = (self.manifest.get("baselines") or {}).get("prior")
        return None if entry is None else float(entry["value"])


def train_batchpred(case: Case) -> tuple[dict[str, Any], Trained, Trained]:
    """prepare, then train twice on the same prepared data: as configured (refit) and with
    training.refit false. Returns prepare's summary and the two models."""
    data = case.work / "data"
    prepared = training.prepare_training_set(case.settings, data, case.engine)
    rows = sum(prepared["rows"].values())
    if case.settings.training.max_rows is not None and rows > case.settings.training.max_rows:
        raise SystemExit(f"{case.dataset}: {rows} rows exceed training.max_rows: not the same rows")
    training.train_model(case.settings, data, case.work / "deployed")
    no_refit = with_until(case.settings, case.settings.training.until, refit=False)
    training.train_model(no_refit, data, case.work / "no-refit")
    return prepared, Trained.load(case.work / "deployed"), Trained.load(case.work / "no-refit")


# --- by hand: pandas and xgboost only -----------------------------------------------------------


@dataclass(frozen=True)
class HandModels:
    refit: xgb.Booster
    no_refit: xgb.Booster
    best_iteration: int
    splits: dict[str, list[str]]  # days of each split (a snapshot: its one day in each)
    rows: dict[str, int]
    prior: float
    vocabulary: dict[str, list[str]]


def read_window(raw: str, days: list[date]) -> pd.DataFrame:
    """The lake's rows of `days`, read with pandas (a partition is a dt=YYYY-MM-DD folder)."""
    frames = [pd.read_parquet(Path(raw) / f"dt={d.isoformat()}") for d in days]
    return pd.concat(frames, ignore_index=True)


def hand_features(
    frame: pd.DataFrame | pa.Table, settings: Settings, vocabulary: dict[str, list[str]]
) -> pd.DataFrame:
    """The feature columns: numbers as float, bools as 0/1, categories as pandas categoricals
    over the vocabulary (a value outside it is missing)."""
    df = frame.to_pandas() if isinstance(frame, pa.Table) else frame
    out = {}
    for f in settings.dataset.features:
        column = df[f.name]
        if f.dtype == "category":
            out[f.name] = pd.Categorical(column, categories=vocabulary[f.name])
        else:
            out[f.name] = pd.to_numeric(column.astype(object), errors="coerce").astype(float)
    return pd.DataFrame(out, index=df.index)


def hand_labels(frame: pd.DataFrame | pa.Table, settings: Settings) -> np.ndarray:
    target = settings.dataset.target
    column = (frame.to_pandas() if isinstance(frame, pa.Table) else frame)[target.name]
    if target.classes:
        column = column.map(target.classes)
    return column.astype(float).to_numpy()


def train_by_hand(settings: Settings) -> HandModels:
    """The window's rows as the config describes them: for split days, the `window_days`
    calendar days up to training.until that the lake holds, the newest `holdout_days` held
    out, the `valid_days` before them for early stopping; for split rows, a hash of the
    entity id. Rows without a label are dropped; rows in (day, id) order, as the prepared
    splits hold them, so that subsampling draws alike."""
    cfg, spec = settings.training, settings.dataset
    assert cfg.until is not None
    first = cfg.until - timedelta(days=cfg.window_days - 1)
    listed = sorted(
        date.fromisoformat(p.name.removeprefix("dt=")) for p in Path(settings.lake.raw).glob("dt=*")
    )
    days = [d for d in listed if first <= d <= cfg.until]
    frame = read_window(settings.lake.raw, days)
    if spec.event_date not in frame.columns:  # a snapshot: its day is the partition's
        frame[spec.event_date] = days[-1]
    frame = frame[frame[spec.target.name].notna()]
    frame = frame.sort_values([spec.event_date, spec.entity_id], kind="stable")
    day_of = pd.to_datetime(frame[spec.event_date]).dt.date
    if cfg.split == "rows":
        ids = frame[spec.entity_id].astype(str).to_numpy(dtype=object)
        u = pd.util.hash_array(ids).astype(np.float64) / 2.0**64
        holdout = u < cfg.holdout_fraction
        valid = ~holdout & (u < cfg.holdout_fraction + cfg.valid_fraction)
        masks = {"train": ~holdout & ~valid, "valid": valid, "holdout": holdout}
        splits = {k: [d.isoformat() for d in days] for k in masks}
    else:
        n_fit = len(days) - cfg.valid_days - cfg.holdout_days
        groups = {
            "train": days[:n_fit],
            "valid": days[n_fit : n_fit + cfg.valid_days],
            "holdout": days[n_fit + cfg.valid_days :],
        }
        masks = {k: day_of.isin(v).to_numpy() for k, v in groups.items()}
        splits = {k: [d.isoformat() for d in v] for k, v in groups.items()}
    vocabulary = {
        f.name: list(f.categories) if f.categories else sorted(frame[f.name].dropna().unique())
        for f in spec.features
        if f.dtype == "category"
    }
    x, y = hand_features(frame, settings, vocabulary), hand_labels(frame, settings)
    parts = {k: (x[m], y[m]) for k, m in masks.items()}
    params = {
        **HAND_OBJECTIVE[spec.target.task],
        **cfg.params,
        "seed": cfg.seed,
        "nthread": cfg.nthread,
    }

    def matrix(x: pd.DataFrame, y: np.ndarray, ref: Any = None) -> xgb.QuantileDMatrix:
        return xgb.QuantileDMatrix(x, y, ref=ref, enable_categorical=True, nthread=cfg.nthread)

    dtrain = matrix(*parts["train"])
    evaluated = xgb.train(
        params,
        dtrain,
        num_boost_round=cfg.num_boost_round,
        evals=[(matrix(*parts["valid"], ref=dtrain), "valid")],
        early_stopping_rounds=cfg.early_stopping_rounds,
        verbose_eval=False,
    )
    best = evaluated.best_iteration
    everything = [parts[k] for k in ("train", "valid", "holdout")]
    refit = xgb.train(
        params,
        matrix(pd.concat([p[0] for p in everything]), np.concatenate([p[1] for p in everything])),
        num_boost_round=best + 1,
    )
    return HandModels(
        refit=refit,
        no_refit=evaluated[: best + 1],
        best_iteration=best,
        splits=splits,
        rows={k: int(m.sum()) for k, m in masks.items()},
        prior=float(parts["train"][1].mean()),
        vocabulary=vocabulary,
    )


def hand_predict(booster: xgb.Booster, x: pd.DataFrame) -> np.ndarray:
    return booster.predict(xgb.DMatrix(x, enable_categorical=True))


# --- measuring ----------------------------------------------------------------------------------


def metrics(task: str, y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    if task == "binary":
        return {
            "auc": float(roc_auc_score(y, p)),
            "logloss": float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15))),
        }
    return {
        "r2": float(r2_score(y, p)),
        "rmse": float(np.sqrt(mean_squared_error(y, p))),
    }


def measure(case: Case) -> dict[str, Any]:
    started = time.perf_counter()
    spec, task = case.settings.dataset, case.settings.dataset.target.task
    prepared, deployed, no_refit = train_batchpred(case)
    hand = train_by_hand(case.settings)
    if hand.splits != prepared["splits"] or hand.rows != prepared["rows"]:
        raise SystemExit(
            f"{case.dataset} {case.name}: the hand-written window differs from batchpred's: "
            f"{hand.splits} {hand.rows} vs {prepared['splits']} {prepared['rows']}"
        )
    y = hand_labels(case.scored, case.settings)
    x = hand_features(case.scored, case.settings, hand.vocabulary)
    prior = deployed.prior if deployed.prior is not None else hand.prior
    predictions: dict[str, np.ndarray | None] = {
        "deployed": deployed.predict(case.scored),
        "no_refit": no_refit.predict(case.scored),
        "hand_refit": hand_predict(hand.refit, x),
        "hand_no_refit": hand_predict(hand.no_refit, x),
        "linear": deployed.predict_linear(case.scored),
        "prior": np.full(len(y), prior),
    }
    figures = {k: None if p is None else metrics(task, y, p) for k, p in predictions.items()}
    primary = PRIMARY[task]
    value = {k: None if m is None else m[primary] for k, m in figures.items()}
    assert value["deployed"] is not None and value["hand_refit"] is not None
    assert value["no_refit"] is not None
    gap = value["deployed"] - value["hand_refit"]
    lift = value["deployed"] - value["no_refit"]
    refit = deployed.manifest.get("refit")
    evaluated = deployed.manifest.get("evaluated")
    return {
        "name": case.name,
        "window": {
            "until": case.settings.training.until.isoformat(),  # type: ignore[union-attr]
            "splits": {k: [v[0], v[-1]] for k, v in prepared["splits"].items()},
            "rows": prepared["rows"],
        },
        "scored": {
            "days": None if case.scored_days is None else [d.isoformat() for d in case.scored_days],
            "rows": int(len(y)),
            "label_mean": float(np.mean(y)),
        },
        "deployed_is_refit": bool(refit),
        "refit": refit,
        # the model the gate judged (evaluated.ubj) is the one training.refit false deploys
        "no_refit_is_evaluated": None
        if evaluated is None
        else evaluated["sha256"] == no_refit.manifest["sha256"],
        "best_iteration": {
            "batchpred": deployed.manifest["best_iteration"],
            "hand": hand.best_iteration,
        },
        "prior": {"value": prior, "from": "manifest" if deployed.prior is not None else "hand"},
        "metrics": figures,
        "primary": value,
        "deployed_minus_hand_refit": gap,
        "deployed_minus_no_refit": lift,
        "acceptance": {
            "within_tolerance_of_hand_refit": abs(gap) <= TOLERANCE,
            "better_than_no_refit": lift > 0,
            "holds": abs(gap) <= TOLERANCE and lift > 0,
        },
        "seconds": round(time.perf_counter() - started, 1),
        "target": spec.target.name,
    }


def run(datasets: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    out: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "tolerance": TOLERANCE,
        "xgboost": xgb.__version__,
        "datasets": {},
    }
    for name in datasets:
        with tempfile.TemporaryDirectory(prefix=f"quality-{name}-") as tmp:
            os.environ["BATCHPRED_DATABASE_URL"] = f"sqlite:///{tmp}/quality.db"
            t0 = time.perf_counter()
            cases, engines = [], set()
            for case in CASES[name](Path(tmp)):
                engines.add(case.engine)
                log(f"{name} {case.name}: training and scoring")
                cases.append(measure(case))
                primary = cases[-1]["primary"]
                log(
                    f"{name}: "
                    + ", ".join(f"{k} {_fmt(v)}" for k, v in primary.items())
                    + f"; deployed - hand refit {cases[-1]['deployed_minus_hand_refit']:+.4f}"
                )
            for engine in engines:
                engine.dispose()
            task = load_settings(
                [ROOT / "configs/base.yaml", ROOT / f"configs/datasets/{name}.yaml"]
            ).dataset.target.task
            out["datasets"][name] = {
                "task": task,
                "metric": PRIMARY[task],
                "cases": cases,
                "seconds": round(time.perf_counter() - t0, 1),
            }
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


# --- report -------------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def report(result: dict[str, Any], machine_lines: list[str]) -> str:
    lines = [
        "# Model quality on real data",
        "",
        "Written by `make quality` (tests/benchmarks/quality.py, which says how each figure is "
        "made). Out-of-time metrics of the model batchpred deploys (model.ubj, scored through "
        "its contract) against the same pipeline without refit, a hand-written XGBoost on the "
        "same window's rows (pandas + xgboost, same features and params, early-stopped on the "
        "same valid days, then refit on the whole window with best_iteration + 1 rounds) and "
        "its early-stopped model, batchpred's linear baseline and the prior. Differences are "
        "on the primary metric (higher is better); the last section reads them.",
        "",
        f"Generated {result['generated_at']} in {result['seconds']:.0f} s; xgboost "
        f"{result['xgboost']}.",
        *machine_lines,
    ]
    for name, entry in result["datasets"].items():
        metric = entry["metric"]
        label = {"r2": "R²", "auc": "AUC"}[metric]
        lines += [
            "",
            f"## {name} ({entry['task']}, {label}; {entry['seconds']:.0f} s)",
            "",
            "| window -> scored | rows scored | "
            + " | ".join(HEADINGS[m] for m in MODELS)
            + " | deployed - hand refit | deployed - no-refit | deployed - linear |",
            "|---|---:|" + "---:|" * len(MODELS) + "---:|---:|---:|",
        ]
        for case in entry["cases"]:
            p = case["primary"]
            linear = "—" if p["linear"] is None else f"{p['deployed'] - p['linear']:+.4f}"
            lines.append(
                f"| {case['name']} | {case['scored']['rows']:,} | "
                + " | ".join(_fmt(p[m]) for m in MODELS)
                + f" | {case['deployed_minus_hand_refit']:+.4f}"
                + f" | {case['deployed_minus_no_refit']:+.4f} | {linear} |"
            )
    return "\n".join([*lines, "", *summary(result)]) + "\n"


def summary(result: dict[str, Any]) -> list[str]:
    """What the tables say, counted from them: how close batchpred is to the hand refit, what
    the refit changes, and where the linear baseline is as good as the model."""
    cases = [(n, c) for n, e in result["datasets"].items() for c in e["cases"]]
    close = [c for _, c in cases if c["acceptance"]["within_tolerance_of_hand_refit"]]
    gains = sorted(c["deployed_minus_no_refit"] for _, c in cases)
    linear = [
        f"{n} {c['name'].split(' -> ')[0]}"
        for n, c in cases
        if c["primary"]["linear"] is not None and c["primary"]["linear"] >= c["primary"]["deployed"]
    ]
    return [
        "## Reading",
        "",
        f"- The deployed model is within {TOLERANCE} of the hand-written refit in {len(close)} "
        f"of {len(cases)} cases (largest gap "
        f"{max(abs(c['deployed_minus_hand_refit']) for _, c in cases):.4f}).",
        f"- The refit against the split's model (deployed - no-refit): from {gains[0]:+.4f} "
        f"to {gains[-1]:+.4f}. Acceptance of issue 14 (seasonal data: within {TOLERANCE} of "
        "the hand refit and clearly better than the no-refit split): "
        + "; ".join(
            f"{n} {c['name']}: {'holds' if c['acceptance']['holds'] else 'fails'}"
            for n, c in cases
            if n == "bikeshare"
        )
        + ".",
        "- The linear baseline is as good as the model or better in: "
        + (", ".join(linear) or "none")
        + " (training.gate.min_lift_over_baseline can refuse such a model).",
    ]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.quality",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated")
    p.add_argument("--no-doc", action="store_true", help="print only; write no docs/quality.*")
    args = p.parse_args(argv)
    names = [n for n in args.datasets.split(",") if n]
    unknown = set(names) - set(DATASETS)
    if unknown:
        p.error(f"unknown dataset(s) {sorted(unknown)}; choose from {', '.join(DATASETS)}")
    result = run(names)
    text = report(result, machine())
    print(text)
    if not args.no_doc:
        DOC_JSON.write_text(json.dumps(result, indent=2) + "\n")
        DOC_MD.write_text(text)
        log(f"wrote {DOC_JSON.relative_to(ROOT)} and {DOC_MD.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
