"""Score one partition: check its verdict, stream record batches through the row rules, build
the model's matrix from its contract, predict, and hand the rows to the sink."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Literal

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from batchpred import locks, rules, schema, sinks, storage, verdicts
from batchpred.config import DatasetSpec, ScoringConfig, ValidationConfig
from batchpred.model import LoadedModel


class PartitionRejected(Exception):
    """The partition broke a rule badly enough to stop it; nothing of it was written."""


@dataclass(frozen=True)
class PartitionResult:
    partition_date: date
    model_version: str
    status: Literal["scored", "skipped"]
    rows_in: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    seconds: float = 0.0
    unknown_values: dict[str, int] = field(default_factory=dict)  # per category feature
    scored_by: str | None = None  # skipped: the run whose ledger row says it is done

    @property
    def rows_per_second(self) -> float:
        return self.rows_scored / self.seconds if self.seconds else 0.0


def iter_input_batches(
    root: str, day: date, spec: DatasetSpec, batch_rows: int, features: list[str] | None = None
) -> Iterator[tuple[str, pa.RecordBatch]]:
    """(file, batch) over every Parquet file and row group of a partition, reading only the
    entity id, the event date (where a file has it: its rule is the partition's) and
    `features` (default: the spec's). Raises PartitionRejected naming the file and column
    when a file lacks a column or has a type the spec cannot accept."""
    features = spec.feature_names if features is None else features
    columns = [spec.entity_id, spec.event_date, *features]
    files = storage.partition_files(root, day)
    if not files:
        raise PartitionRejected(f"partition dt={day} under {root}: no data files")
    for url in files:

        def check(file_schema: pa.Schema, url: str = url) -> None:
            try:
                rules.check_columns(file_schema, spec, features)
            except rules.SchemaMismatch as exc:
                raise PartitionRejected(f"partition dt={day} file {url}: {exc}") from exc

        for batch in storage.iter_file_batches(url, batch_rows, columns, check):
            yield url, batch


def check_verdict(
    engine: sa.Engine,
    spec: DatasetSpec,
    rules_cfg: ValidationConfig,
    cfg: ScoringConfig,
    root: str,
    day: date,
    *,
    reports_url: str | None,
    run_id: str,
    fingerprint: str,
) -> None:
    """Fail closed: a partition invalid under the current spec is never scored, and one never
    validated under it is validated first (or refused, with scoring.unvalidated: refuse).
    `fingerprint`: the partition's current one (storage.fingerprint_partition)."""
    spec_hash = rules.spec_hash(spec, rules_cfg)
    verdict = verdicts.lookup(engine, spec.name, day, fingerprint, spec_hash)
    if verdict.status == "unvalidated":
        if not storage.partition_files(root, day):  # nothing to validate (nor to score)
            raise PartitionRejected(f"partition dt={day} under {root}: no data files")
        if cfg.unvalidated == "refuse":
            raise PartitionRejected(
                f"partition dt={day} under {root} was never validated under the current spec "
                f"(scoring.unvalidated: refuse); run the ingest flow first"
            )
        # Imported here, not at the top: Great Expectations takes 2-4 s to import, and only a
        # partition the ingest flow never validated needs it; every score run, backfill and
        # worker process would otherwise pay it at start-up (docs/design.md, "Modules and arrows").
        from batchpred import validation

        report = validation.validate_partition(
            engine, spec, rules_cfg, root, day, reports_url=reports_url, run_id=run_id
        )
        verdict = verdicts.Verdict("valid" if report.success else "invalid", report.message())
    if verdict.status == "invalid":
        raise PartitionRejected(
            f"partition dt={day} under {root} failed validation; not scored:\n{verdict.message}"
        )


@dataclass
class _Stream:
    """Per-partition state of the row rules: tallies, rejects and unknown-category counts."""

    spec: DatasetSpec
    checks: list[rules.Rule]
    tallies: dict[rules.Rule, rules.Tally] = field(default_factory=dict)
    unknown: dict[str, int] = field(default_factory=dict)
    duplicates: rules.SeenIds = field(default_factory=rules.SeenIds)

    def unique_rule(self) -> rules.Rule:
        return next(r for r in self.checks if r.kind == "unique")

    def check(
        self, url: str, day: date, batch: pa.RecordBatch
    ) -> tuple[np.ndarray, list[tuple[np.ndarray, rules.Rule]]]:
        ok, broken = rules.evaluate(self.checks, batch, self.tallies)
        ids = batch.column(self.spec.entity_id)
        repeat = self.duplicates.repeats(ids)
        unique = self.unique_rule()
        tally = self.tallies.setdefault(unique, rules.Tally())
        tally.applied += int(rules.present(ids).sum())
        if repeat.any():
            rows = np.flatnonzero(repeat)
            tally.broken += rows.size
            tally.example = (
                tally.example if tally.example is not None else ids[int(rows[0])].as_py()
            )
            ok &= ~repeat
            broken.append((rows, unique))
        self.fail_fast(url, day, [rule for _, rule in broken])
        return ok, broken

    def unknown_values(
        self,
        url: str,
        day: date,
        batch: pa.RecordBatch,
        masks: dict[str, np.ndarray],
        contract: schema.Contract,
        policy: float,
        version: str,
    ) -> tuple[np.ndarray, list[tuple[np.ndarray, rules.Rule]]]:
        """Apply each category feature's on_unknown to the values the model never saw
        (`masks`): count them ("missing": scored as missing), reject the rows, or fail."""
        ok = np.ones(batch.num_rows, dtype=bool)
        broken: list[tuple[np.ndarray, rules.Rule]] = []
        for feature in contract.features:
            if feature.dtype != "category":
                continue
            mask = masks.get(feature.name)
            count = 0 if mask is None else int(mask.sum())
            if count:
                self.unknown[feature.name] = self.unknown.get(feature.name, 0) + count
            on_unknown = self.spec.feature(feature.name).on_unknown
            if on_unknown == "missing":
                continue
            rule = rules.Rule(feature.name, "in_set", (), policy if on_unknown == "reject" else 0)
            tally = self.tallies.setdefault(rule, rules.Tally())
            tally.applied += int(rules.present(batch.column(feature.name)).sum())
            if mask is not None and count:
                rows = np.flatnonzero(mask)
                tally.broken += count
                if tally.example is None:
                    tally.example = batch.column(feature.name)[int(rows[0])].as_py()
                ok[rows] = False
                broken.append((rows, rule))
        if broken:
            self.fail_fast(url, day, [rule for _, rule in broken], f" (unknown to model {version})")
        return ok, broken

    def fail_fast(self, url: str, day: date, broken: list[rules.Rule], note: str = "") -> None:
        for rule in broken:
            if rule.threshold == 0:
                raise PartitionRejected(
                    f"partition dt={day} file {url}: "
                    f"{rules.describe(rule, self.tallies[rule])}{note}; nothing was written"
                )


def _rejects_table(ids: pa.Array, broken: list[tuple[np.ndarray, rules.Rule]]) -> pa.Table:
    rows = np.concatenate([r for r, _ in broken])
    taken = ids.take(pa.array(rows)).cast(pa.string())
    columns = [rule.column for r, rule in broken for _ in range(r.size)]
    names = [rule.name for r, rule in broken for _ in range(r.size)]
    return pa.table({"entity_id": taken, "column_name": columns, "rule": names})


def _scored_by(engine: sa.Engine, key: sinks.PartitionKey, fingerprint: str) -> str | None:
    """The run the ledger says scored the partition from this input; None if not done."""
    row = sinks.ledger_row(engine, key.partition_date, key.model_version)
    done = row and row["status"] == "done" and row["input_fingerprint"] == fingerprint
    return str(row["run_id"]) if row and done else None


def score_partition(
    engine: sa.Engine,
    spec: DatasetSpec,
    rules_cfg: ValidationConfig,
    cfg: ScoringConfig,
    model: LoadedModel,
    root: str,
    day: date,
    run_id: str,
    *,
    force: bool = False,
    reports_url: str | None = None,
    run_name: str | None = None,
    on_wait: Callable[[locks.LockWait], None] | None = None,
) -> PartitionResult:
    """Score one partition into the predictions table, exactly once per (partition, model).

    Skips (status "skipped", `scored_by` the run that did it) when the ledger shows it done
    with the same input fingerprint, unless `force`. The partition's lock is taken before
    anything of it is read (locks.partition_lock; `on_wait` hears whom it waits for, and
    locks.PartitionLocked ends a wait longer than `cfg.lock_timeout_s`); the ledger is read
    again once it is held, so a duplicate run that waited reads nothing. The partition must be
    valid under the current spec (validated on the way in if it never was). Rows breaking a
    rule are rejected with their reasons; above their family's share in
    `rules_cfg.reject_up_to` the whole partition fails with PartitionRejected and nothing is
    written. The matrix comes from the model's contract.
    """
    t0, started = time.perf_counter(), datetime.now(UTC)
    contract = model.contract
    schema.check_compatible(contract, spec, model.version)
    fingerprint = storage.fingerprint_partition(root, day)
    key = sinks.PartitionKey(spec.name, day, model.version)
    if not force and (by := _scored_by(engine, key, fingerprint)):  # no lock for a no-op
        return PartitionResult(
            day, model.version, "skipped", seconds=time.perf_counter() - t0, scored_by=by
        )
    with locks.partition_lock(
        engine, key, run_id, timeout_s=cfg.lock_timeout_s, run_name=run_name, on_wait=on_wait
    ):
        if not force and (by := _scored_by(engine, key, fingerprint)):  # by the run we waited for
            return PartitionResult(
                day, model.version, "skipped", seconds=time.perf_counter() - t0, scored_by=by
            )
        check_verdict(
            engine,
            spec,
            rules_cfg,
            cfg,
            root,
            day,
            reports_url=reports_url,
            run_id=run_id,
            fingerprint=fingerprint,
        )
        features = contract.feature_names
        read = {spec.entity_id, spec.event_date, *features}
        row_rules = [
            r
            for r in rules.compile_rules(spec, rules_cfg, label=False, day=day)
            if r.column in read
        ]
        stream = _Stream(spec, row_rules)
        binary = contract.task == "binary"
        rows_in = rejected = 0
        try:
            with sinks.partition_writer(
                engine, key, run_id, fingerprint=fingerprint, force=force
            ) as out:
                for url, batch in iter_input_batches(root, day, spec, cfg.batch_rows, features):
                    rows_in += batch.num_rows
                    ok, broken = stream.check(url, day, batch)
                    ids = batch.column(spec.entity_id)
                    matrix, unknown = schema.feature_matrix(batch, contract)
                    unknown = {name: mask & ok for name, mask in unknown.items()}
                    ok_known, more = stream.unknown_values(
                        url,
                        day,
                        batch,
                        unknown,
                        contract,
                        rules_cfg.reject_up_to.category,
                        model.version,
                    )
                    ok &= ok_known
                    broken += more
                    rejects = None
                    if broken:
                        rejected += int((~ok).sum())
                        rejects = _rejects_table(ids, broken)
                        matrix, ids = matrix[ok], ids.filter(pa.array(ok))
                    scores = model.booster.inplace_predict(matrix, validate_features=False)
                    labels = (scores >= contract.threshold).astype(np.int8) if binary else None
                    out.write(sinks.PredictionBatch(ids, scores, labels, rejects))
                if rows_in == 0:
                    files = ", ".join(storage.partition_files(root, day))
                    raise PartitionRejected(
                        f"partition dt={day} under {root}: 0 rows in {files}; nothing was written"
                    )
                hit = rules.over_threshold(stream.tallies)
                if hit:
                    raise PartitionRejected(
                        f"partition dt={day} under {root}: {rules.describe(*hit)}; "
                        "nothing was written"
                    )
                out.finish(
                    sinks.LedgerEntry(
                        fingerprint, rows_in, rejected, started, unknown_values=stream.unknown
                    )
                )
        except sinks.AlreadyScored:  # written by a writer that bypassed the partition lock
            return PartitionResult(
                day,
                model.version,
                "skipped",
                seconds=time.perf_counter() - t0,
                scored_by=_scored_by(engine, key, fingerprint),
            )
        return PartitionResult(
            day,
            model.version,
            "scored",
            rows_in,
            rows_in - rejected,
            rejected,
            time.perf_counter() - t0,
            dict(stream.unknown),
        )
