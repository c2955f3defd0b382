"""Tasks that plan and score partitions into the predictions table."""

from __future__ import annotations

from datetime import date

from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from prefect.runtime import flow_run

from batchpred import monitoring, outcomes, registry, reports, schema, scoring, storage
from batchpred.config import Settings
from tasks import resources


@task(name="resolve-model", cache_policy=NONE)
def resolve_model(settings: Settings, model: str) -> str:
    """Pin a model version for the whole run: an alias is resolved once, here."""
    version = registry.resolve_version(resources.engine(), settings.dataset.name, model)
    loaded = resources.model(version, settings.scoring.nthread)  # fail early: missing, tampered
    schema.check_compatible(loaded.contract, settings.dataset, version)  # or incompatible spec
    return version


@task(name="plan-partitions", cache_policy=NONE)
def plan_partitions(settings: Settings, start: date | None, end: date | None) -> storage.Listing:
    """The input partitions in [start, end] (all when both are open) and the entries of the
    input refused as partitions (dt=2026-11-6, a symlink out of the root), each named in a
    WARNING; a WARNING names the days of a bounded range that have none (no partition at
    all is the flow's to report)."""
    listing = storage.scan_partitions(settings.scoring_input).between(start, end)
    days = listing.days
    for entry in listing.refused:  # never skipped in silence
        get_run_logger().warning("not scored: %s", entry)
    if days and start is not None and end is not None:
        missing = outcomes.missing_days(days, start, end)
        if missing:
            get_run_logger().warning(
                "no partition for %d day(s) in %s..%s, not scored: %s",
                len(missing),
                start,
                end,
                outcomes.days_text(missing),
            )
    return listing


@task(
    name="score-partition",
    cache_policy=NONE,
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=resources.retry_transient,
    task_run_name="score-{day}",
)
def score_partition(
    settings: Settings, version: str, day: date, force: bool = False
) -> scoring.PartitionResult:
    """Score one partition exactly once per model version (rerun-safe; a retry replaces).
    Takes the partition's lock before reading it: while another run scores it, one line
    names that run, and if it finished the partition this one skips without reading it."""
    engine = resources.engine()
    model = resources.model(version, settings.scoring.nthread)
    logger = get_run_logger()
    result = scoring.score_partition(
        engine,
        settings.dataset,
        settings.validation,
        settings.scoring,
        model,
        settings.scoring_input,
        day,
        resources.run_id(),
        force=force,
        reports_url=settings.lake.reports,
        run_name=flow_run.name,
        on_wait=lambda wait: logger.info("%s: %s", day, wait.message()),
    )
    if result.status == "skipped":
        logger.info("%s: skipped, already scored by run %s", day, result.scored_by)
    else:
        logger.info(
            "%s: %s, %d rows scored, %d rejected, %.0f rows/s",
            day,
            result.status,
            result.rows_scored,
            result.rows_rejected,
            result.rows_per_second,
        )
    if result.unknown_values:
        logger.warning(
            "%s: category values unknown to model %s, scored as missing: %s",
            day,
            version,
            ", ".join(f"{k} {v:,} rows" for k, v in sorted(result.unknown_values.items())),
        )
    return result


@task(name="measure-drift", cache_policy=NONE, task_run_name="drift-{day}")
def measure_drift(
    settings: Settings, version: str, day: date, rescored: bool = True
) -> monitoring.DriftAssessment:
    """PSI per feature of a partition, and of the model's scores on it, against the training
    statistics stored with the model, judged by monitoring's thresholds: one WARNING names
    what drifted. A partition not re-scored (same input, same model) keeps the figures
    already measured: they are judged again, not measured again."""
    model, engine = resources.model(version, settings.scoring.nthread), resources.engine()
    stored = (
        [] if rescored else monitoring.stored_drift(engine, settings.dataset.name, day, version)
    )
    if stored:
        return _judge(settings, version, day, stored)
    metrics = monitoring.measure_drift(
        settings.scoring_input,
        day,
        settings.dataset,
        model.contract,
        model.manifest["reference_stats"],
        settings.scoring.batch_rows,
    )
    if model.manifest.get("score_reference"):  # models saved before it was stored: features only
        metrics.append(
            monitoring.measure_score_drift(engine, day, version, model.manifest["score_reference"])
        )
    monitoring.record_drift(
        engine, settings.dataset.name, day, version, resources.run_id(), metrics
    )
    return _judge(settings, version, day, metrics)


def _judge(
    settings: Settings, version: str, day: date, metrics: list[dict]
) -> monitoring.DriftAssessment:
    assessment = monitoring.assess_drift(metrics, settings.monitoring)
    if assessment.is_drifted:
        get_run_logger().warning(
            "%s drifted against model %s's training data: %s", day, version, assessment.describe()
        )
    return assessment


@task(name="realised-performance", cache_policy=NONE)
def realised_performance(settings: Settings) -> list[dict]:
    """Realised metrics of every scored (day, model) whose labels arrived since last time."""
    engine = resources.engine()
    computed = monitoring.realised_performance(engine, settings)
    if computed:
        get_run_logger().info(
            "realised performance computed for %s", reports.realised_pairs(computed)
        )
    return monitoring.recent_realised(engine, settings.dataset.name)


@task(name="resolve-shadow", cache_policy=NONE)
def resolve_shadow(settings: Settings, champion: str) -> str | None:
    """The challenger to score in shadow, if there is one other than the champion."""
    engine = resources.engine()
    version = registry.get_alias(engine, settings.dataset.name, registry.CHALLENGER)
    return version if version and version != champion else None


def partition_runner(settings: Settings):  # type: ignore[no-untyped-def]
    """The task runner partitions fan out on: a bounded thread pool (Prefect's default is
    unbounded), or an existing Dask cluster when scoring.dask_address is set."""
    if settings.scoring.dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=settings.scoring.dask_address)
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=settings.scoring.concurrency)
