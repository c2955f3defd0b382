"""An entity's current prediction: its one definition, the lookups, and `predictions_latest`.

The definition (what the CLI, the API and the analysts' table all answer): among the
predictions of an entity made by a version that is or was its dataset's champion, the one
ranked first by

    1. made by the current champion (`by_champion`),
    2. the newest partition day,
    3. the newest `scored_at` (a re-score wins over what it replaced),
    4. the greater version id (only to make the order total).

So an entity the current champion scored shows the champion's newest prediction; one that only
earlier champions ever scored shows the newest of theirs, with `by_champion` false. Predictions
of versions that were never champion (shadow scoring, a backfill pinned to a challenger) are
not current: ask for them by model. "On day D" is the same ranking among the entity's
predictions for D; "by model M" is M's newest (or M's on D).

`predictions_latest` is a cache of this definition, one row per (dataset, entity), and every
write that can change the answer keeps it equal to the definition in the same transaction:
a partition written by a champion past or present upserts its rows where they rank first and
recomputes the entities a re-score dropped (`after_partition_write`); a change of champion
(promote, rollback, pin, the nightly gate) recomputes the dataset (`refresh_dataset`).
`latest_mismatches` recomputes the definition and compares it with the cache.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from batchpred import db

CHAMPION = "champion"  # the alias (registry.CHAMPION is the same name)

COLUMNS = (
    "dataset",
    "entity_id",
    "partition_date",
    "score",
    "label",
    "model_version",
    "run_id",
    "scored_at",
)
_TYPES = (sa.Text, sa.Text, sa.Date, sa.Float, sa.SmallInteger, sa.Text, sa.Text)
_COLUMN_TYPES: list[tuple[str, Any]] = [
    *zip(COLUMNS[:-1], _TYPES, strict=True),
    ("scored_at", sa.DateTime(timezone=True)),
]
# Lightweight table clauses: statements build without reflection (the read-only API too).
PREDICTIONS = sa.table("predictions", *(sa.column(n, t) for n, t in _COLUMN_TYPES))
LATEST = sa.table("predictions_latest", *(sa.column(n, t) for n, t in _COLUMN_TYPES))
ALIASES = sa.table(
    "model_aliases", sa.column("dataset", sa.Text), sa.column("alias", sa.Text),
    sa.column("version", sa.Text),
)  # fmt: skip
HISTORY = sa.table(
    "model_alias_history", sa.column("dataset", sa.Text), sa.column("alias", sa.Text),
    sa.column("version", sa.Text),
)  # fmt: skip


@dataclass(frozen=True)
class Prediction:
    """One stored prediction, as every surface reports it."""

    dataset: str
    entity_id: str
    partition_date: date
    score: float
    label: int | None  # binary: the predicted class at the model's threshold; else None
    model_version: str
    run_id: str
    scored_at: datetime  # UTC
    by_champion: bool  # made by the dataset's current champion

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Prediction:
        day, ts = row["partition_date"], row["scored_at"]
        if isinstance(day, str):  # SQLite through a raw DBAPI cursor
            day = date.fromisoformat(day)
        if isinstance(ts, str):
            ts = datetime.fromisoformat(ts)
        ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
        label = row["label"]
        return cls(
            dataset=row["dataset"],
            entity_id=str(row["entity_id"]),
            partition_date=day,
            score=float(row["score"]),
            label=None if label is None else int(label),
            model_version=row["model_version"],
            run_id=row["run_id"],
            scored_at=ts,
            by_champion=bool(row["by_champion"]),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "entity_id": self.entity_id,
            "partition_date": self.partition_date.isoformat(),
            "score": self.score,
            "label": self.label,
            "model_version": self.model_version,
            "run_id": self.run_id,
            "scored_at": self.scored_at.isoformat().replace("+00:00", "Z"),  # as the API
            "by_champion": self.by_champion,
        }


# --- the definition ---------------------------------------------------------------------------


def _champion_of(dataset: Any) -> Any:
    return (
        sa.select(ALIASES.c.version)
        .where(ALIASES.c.dataset == dataset, ALIASES.c.alias == CHAMPION)
        .scalar_subquery()
    )


def _ranking(dataset: Any) -> tuple[list[Any], list[Any], Any]:
    """(where, order by, by_champion) of the definition over PREDICTIONS for `dataset`."""
    P = PREDICTIONS.c
    champion = _champion_of(dataset)
    ever = sa.select(HISTORY.c.version).where(
        HISTORY.c.dataset == dataset, HISTORY.c.alias == CHAMPION
    )
    current = sa.case((P.model_version == champion, 1), else_=0)
    where = [P.dataset == dataset, sa.or_(P.model_version == champion, P.model_version.in_(ever))]
    order = [current.desc(), P.partition_date.desc(), P.scored_at.desc(), P.model_version.desc()]
    return where, order, current


def _by_champion(table: Any, dataset: Any) -> Any:
    return sa.case((table.c.model_version == _champion_of(dataset), True), else_=False).label(
        "by_champion"
    )


def statements() -> dict[str, sa.Select[Any]]:
    """The lookups, with bind parameters `dataset`, `entity_id`, `day`, `model`, `ids`
    (`ids`: PostgreSQL an array, SQLite a JSON array; see `ids_param`). Each returns COLUMNS
    and `by_champion`. "current" and "current_many" read the cache, the others the definition."""
    ds = sa.bindparam("dataset", type_=sa.Text)
    eid = sa.bindparam("entity_id", type_=sa.Text)
    day = sa.bindparam("day", type_=sa.Date)
    model = sa.bindparam("model", type_=sa.Text)
    P, L = PREDICTIONS.c, LATEST.c
    where, order, _ = _ranking(ds)
    of_entity = sa.select(*PREDICTIONS.c, _by_champion(PREDICTIONS, ds)).where(
        P.dataset == ds, P.entity_id == eid
    )
    return {
        "current": sa.select(*LATEST.c, _by_champion(LATEST, ds)).where(
            L.dataset == ds, L.entity_id == eid
        ),
        "on_day": of_entity.where(*where, P.partition_date == day).order_by(*order).limit(1),
        "of_model": of_entity.where(P.model_version == model)
        .order_by(P.partition_date.desc())
        .limit(1),
        "of_model_on_day": of_entity.where(P.model_version == model, P.partition_date == day),
    }


def current_many_statement(dialect: str) -> sa.Select[Any]:
    """The cache's rows of many entities in one statement text whatever their number."""
    ds, L = sa.bindparam("dataset", type_=sa.Text), LATEST.c
    if dialect == "sqlite":
        each = sa.func.json_each(sa.bindparam("ids", type_=sa.Text)).table_valued("value")
        ids: Any = L.entity_id.in_(sa.select(each.c.value))
    else:
        ids = L.entity_id == sa.any_(sa.bindparam("ids", type_=postgresql.ARRAY(sa.Text)))
    return sa.select(*LATEST.c, _by_champion(LATEST, ds)).where(L.dataset == ds, ids)


def statement_for(day: date | None, model: str | None) -> str:
    """Which of `statements()` answers a lookup."""
    if model is not None:
        return "of_model" if day is None else "of_model_on_day"
    return "current" if day is None else "on_day"


def lookup(
    conn: sa.Connection,
    dataset: str,
    entity_id: str,
    *,
    day: date | None = None,
    model: str | None = None,
) -> Prediction | None:
    """Entity `entity_id`'s current prediction (see the module docstring); with `day` its
    prediction for that day; with `model` (a full version id) that version's newest, or its
    prediction for `day`. None when there is none."""
    params: dict[str, Any] = {"dataset": dataset, "entity_id": str(entity_id)}
    if day is not None:
        params["day"] = day
    if model is not None:
        params["model"] = model
    row = conn.execute(statements()[statement_for(day, model)], params).mappings().first()
    return Prediction.from_row(dict(row)) if row else None


def ids_param(dialect: str, entity_ids: list[str]) -> Any:
    return json.dumps(entity_ids) if dialect == "sqlite" else entity_ids


# --- the cache --------------------------------------------------------------------------------


def _definition(dataset: str, extra: list[Any] | None = None) -> sa.Select[Any]:
    """The definition's first-ranked row of every entity of `dataset` (with `extra`
    conditions on PREDICTIONS), as COLUMNS."""
    where, order, _ = _ranking(sa.literal(dataset, sa.Text))
    rank = sa.func.row_number().over(partition_by=PREDICTIONS.c.entity_id, order_by=order)
    ranked = sa.select(*PREDICTIONS.c, rank.label("rank")).where(*where, *(extra or [])).subquery()
    return sa.select(*(ranked.c[c] for c in COLUMNS)).where(ranked.c.rank == 1)


def _lock_latest(conn: sa.Connection, dataset: str) -> None:
    """PostgreSQL: one writer of a dataset's cache rows at a time (partitions written at once
    would update the same entities and could deadlock on each other's row locks). SQLite
    has one writer anyway."""
    db.writer_lock(conn, f"latest|{dataset}")


def refresh_dataset(conn: sa.Connection, dataset: str) -> int:
    """Rebuild the dataset's cache rows from the definition (after its champion changed);
    returns the rows written. Runs in the caller's transaction: the change and the cache
    commit together."""
    _lock_latest(conn, dataset)
    conn.execute(sa.delete(LATEST).where(LATEST.c.dataset == dataset))
    result = conn.execute(sa.insert(LATEST).from_select(list(COLUMNS), _definition(dataset)))
    return int(result.rowcount or 0)


def _upsert(conn: sa.Connection, select: sa.Select[Any]) -> None:
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(LATEST)
    stmt = insert.from_select(list(COLUMNS), select)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["dataset", "entity_id"],
            set_={c: stmt.excluded[c] for c in COLUMNS[2:]},
        )
    )


@contextmanager
def _planner(conn: sa.Connection, **settings: str) -> Iterator[None]:
    """PostgreSQL: the statements inside plan with `settings` (enable_* = off), each set back
    afterwards; an error rolls the transaction back, and the settings with it."""
    before = {k: conn.exec_driver_sql(f"SHOW {k}").scalar() for k in settings}
    for k, v in settings.items():
        conn.exec_driver_sql(f"SET LOCAL {k} = {v}")
    yield
    for k, old in before.items():
        conn.exec_driver_sql(f"SET LOCAL {k} = {old}")


# How a refresh joins the partition's rows (n) to the cache (c), PostgreSQL. The planner's
# estimate of the cache's rows for one dataset lags behind a dataset's first runs (at one row
# PostgreSQL looped over the cache once per new row: one 125,000-row refresh ran for over two
# minutes before it was stopped), so the plan is chosen here, and every choice stays linear
# whatever the estimates:
# - SCAN, a cache at most PROBE_ABOVE times the partition: hash joins, no nested loop (one
#   pass over the cache, 0.4-0.6 s a 125,000-row partition beside 660,000 cached rows);
# - PROBE, a larger cache: one key lookup per new row, and the winners updated by the tuple
#   id the lookup found; hash and merge joins off, so no plan can pass over the whole cache.
#   A nightly day of 125,000 rows through the sink into 5,000,000 cached entities: 2.79 s
#   against 7.01 s scanning; 1,500,000 cached: 1.51 s against 2.37 s (medians of 3,
#   tests/benchmarks/refresh_plans.py). A first backfill (16 x 125,000 rows into an empty
#   cache) scans: probing took 13.0-14.3 s against 9.8-10.3 s (docs/design.md).
# The probe joins on n.dataset, not the constant: with a constant, a rescan of the dataset's
# cache rows estimated at one row could cost the same to the planner as a keyed lookup. The
# tuple ids are safe to reuse within the statement: every writer of a dataset's cache rows
# holds its lock (_lock_latest).
PROBE_ABOVE = 10
_SCAN = {"enable_nestloop": "off"}
_PROBE = {"enable_hashjoin": "off", "enable_mergejoin": "off", "enable_material": "off"}


def _probe_the_cache(conn: sa.Connection, dataset: str, rows: int) -> bool:
    """Whether `dataset` holds more than PROBE_ABOVE cache rows per new row (`rows`, the
    partition's): its rows as the statistics estimate them (the table's rows times the
    dataset's share among its most common values; none where it has no statistics yet,
    which then scans: analyze_if_stale keeps them current)."""
    cached = conn.execute(
        sa.text(
            "SELECT c.reltuples * (SELECT m.f FROM pg_stats s, unnest("
            "s.most_common_vals::text::text[], s.most_common_freqs) AS m(v, f) "
            "WHERE s.schemaname = n.nspname AND s.tablename = c.relname "
            "AND s.attname = 'dataset' AND m.v = :dataset) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.oid = 'predictions_latest'::regclass"
        ),
        {"dataset": dataset},
    ).scalar()
    return float(cached or 0) > PROBE_ABOVE * rows


# The plan choice above and PostgreSQL's own join order both read the cache's statistics, and
# nothing else keeps them current within a run: autovacuum is off on some servers (the
# development machine's among them: predictions_latest never had statistics there) and,
# where it runs, analyses a table a minute or more after it grew, while a backfill writes
# millions of cache rows. Without them PostgreSQL takes a dataset's cache rows for 0.5% of
# the table, hashes the cache instead of the partition and spills it to disk (20,000,000
# rows in 16 partitions: every refresh hashed 5-6 M cached rows in 8 batches), and the probe
# plan is never chosen.
# So a PostgreSQL partition write first analyses the cache where the probe could be chosen
# (the whole table, as the statistics system counts its live rows without any analysis, holds
# more than PROBE_ABOVE rows per new row) and it changed by more than autovacuum's default
# share since its last analysis (ANALYZE samples 30,000 rows: 0.25 s at 6 M cached rows).
# Not before: analysing while a first backfill grows the cache cost it about 1 s in 8 at
# 2,000,000 rows and bought nothing (the planner's better-informed scan was no faster).
ANALYZE_SHARE, ANALYZE_ROWS = 0.1, 50  # autovacuum_analyze_scale_factor, _threshold


def analyze_if_stale(engine: sa.Engine, rows: int) -> bool:
    """PostgreSQL, before a refresh of a partition of `rows`: ANALYZE predictions_latest if
    the table holds more than PROBE_ABOVE live rows per new row and changed by more than
    ANALYZE_SHARE of its rows (plus ANALYZE_ROWS) since its last analysis; returns whether
    it did. On its own connection, outside any partition's transaction: it sees what has
    committed, holds its lock only while it samples, and SKIP_LOCKED never queues it behind
    another writer's analysis (the next partition does it then)."""
    if engine.dialect.name != "postgresql":
        return False
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        stale = conn.execute(
            sa.text(
                "SELECT s.n_live_tup > CAST(:probe AS bigint) "
                "AND s.n_mod_since_analyze > greatest(c.reltuples, 0) * :share + :rows "
                "FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
                "WHERE s.relid = 'predictions_latest'::regclass"
            ),
            # the product here: psycopg binds small ints as smallint, and 10 x 10,000 overflows
            {"probe": PROBE_ABOVE * rows, "share": ANALYZE_SHARE, "rows": ANALYZE_ROWS},
        ).scalar()
        if stale:
            conn.exec_driver_sql("ANALYZE (SKIP_LOCKED) predictions_latest")
    return bool(stale)


# work_mem for one partition's refresh: WORK_MEM_PER_ROW bytes a new row, within
# WORK_MEM_MB. The floor, 32 MB, came with the split refresh (2026-12-06) for partitions of
# 125,000 rows; with it a 1,250,000-row partition spilled (the write path of
# tests.benchmarks.refresh_plans, one such day into 4 M cached entities: 14.9-18.0 s a day,
# 11.1-14.8 s sized by rows; docs/design.md). The cap bounds the server's memory: each
# writer (one per partition written at once) may take it, twice over for a hash
# (hash_mem_multiplier).
WORK_MEM_PER_ROW = 200
WORK_MEM_MB = (32, 256)


def _work_mem(rows: int) -> int:
    """Megabytes of work_mem for the refresh of a partition of `rows` new rows."""
    low, high = WORK_MEM_MB
    return max(low, min(high, -(-rows * WORK_MEM_PER_ROW // 2**20)))


def after_partition_write(
    conn: sa.Connection,
    *,
    dataset: str,
    day: date,
    version: str,
    run_id: str,
    source: str = "predictions",
    rows: int,
    replaced: bool,
) -> None:
    """Keep the cache equal to the definition after the partition (`day`, `version`) was
    written by run `run_id`, inside the partition's transaction. `source` holds the new rows
    (a table name: `predictions` itself, or PostgreSQL's staging leaf before its swap), `rows`
    of them (the plan depends on it, see PROBE_ABOVE); `replaced`: the partition had rows
    before (a re-score), whose entities may be gone.

    A version that never was champion changes nothing. The new rows win over the cached one
    where they rank first: for the champion, unless the cache holds its own newer day; for an
    earlier champion, where the cache holds no current-champion row and nothing newer. Then
    the entities still pointing at the replaced rows get their next-ranked prediction, or
    leave the cache if they have none."""
    _lock_latest(conn, dataset)
    champion = conn.execute(
        sa.select(ALIASES.c.version).where(
            ALIASES.c.dataset == dataset, ALIASES.c.alias == CHAMPION
        )
    ).scalar()
    if version != champion:
        ever = conn.execute(
            sa.select(HISTORY.c.version)
            .where(
                HISTORY.c.dataset == dataset,
                HISTORY.c.alias == CHAMPION,
                HISTORY.c.version == version,
            )
            .limit(1)
        ).first()
        if ever is None:
            return
    params = {"dataset": dataset, "day": day, "version": version, "champion": champion}

    def wins(new: str, old: str = "o") -> str:
        """Where the new row (`new`) ranks above the cached one (`old`) of its entity."""
        if version == champion:
            return (
                f"NOT ({old}.model_version = {new}.model_version "
                f"AND {old}.partition_date > {new}.partition_date)"
            )
        if champion is None:
            return f"{old}.partition_date <= {new}.partition_date"
        return f"{old}.model_version <> :champion AND {old}.partition_date <= {new}.partition_date"

    names, columns = ", ".join(COLUMNS), ", ".join(f"n.{c}" for c in COLUMNS)
    # Rows that lose are filtered out before they are written (no row touched): a run that
    # writes the newest day first makes each older day's refresh a read (measured, 125,000
    # rows already cached: 0.08 s against 0.38 s for an upsert deciding row by row). A left
    # join, not NOT EXISTS: PostgreSQL 15 can then hash the partition and scan the cache once
    # (Hash Right Join) instead of sorting the whole cache for a merge anti-join; a cache
    # far larger than the partition is probed by key instead (PROBE_ABOVE). At most one cached row
    # per entity (the key), so "no cached row, or the new row wins" is the anti-join's
    # condition. A staging leaf holds the partition alone: no filter, so the planner sees its
    # real size. Written in entity order: the key index is filled in order. A scan reads
    # the dataset's cache rows alone (`c.dataset = :dataset`, a constant, not `n.dataset`): joined
    # on the column, PostgreSQL scanned and probed every dataset's cached rows for each
    # partition (16 x 125,000 rows beside another dataset's 3 M cached entities: 24.6-25.3 s
    # against 6.9 s with the constant; alone 5.1-6.0 s either way).
    partition = (
        ""
        if source != "predictions"
        else "n.partition_date = :day AND n.model_version = :version AND n.dataset = :dataset AND "
    )

    def winners(dataset: str = ":dataset", new: str = source) -> str:
        return (
            f"FROM {new} AS n LEFT JOIN predictions_latest AS c "
            f"ON c.dataset = {dataset} AND c.entity_id = n.entity_id "
            f"WHERE {partition}(c.entity_id IS NULL OR {wins('n', 'c')})"
        )

    if conn.dialect.name == "postgresql":
        # The winners split in one statement (one join, one snapshot): the entities not cached
        # are a plain INSERT, the cached ones an UPDATE. Under the dataset's lock no other
        # writer can add those keys, so neither pays for ON CONFLICT's speculative insertion,
        # which cost more than the join; work_mem lets a partition's hash, the materialized
        # winners and their sort stay in memory, sized to the partition (_work_mem).
        conn.exec_driver_sql(f"SET LOCAL work_mem = '{_work_mem(rows)}MB'")
        sets = ", ".join(f"{c} = w.{c}" for c in COLUMNS[2:])
        if _probe_the_cache(conn, dataset, rows):
            settings, cached, fresh = _PROBE, "c.ctid AS cached", "w.cached IS NULL"
            join, target = "n.dataset", "o.ctid = w.cached"
            # The partition in entity order: the lookups then walk the key index (and the
            # heap, written in entity order) page after page instead of landing each on a
            # random page. A day of 125,000 rows in no order into 5,000,000 cached entities:
            # 2.34 s against 3.63 s in the order the rows came (scan: 6.1 s).
            new = f"(SELECT * FROM {source} ORDER BY entity_id)"
        else:
            settings, cached, fresh = _SCAN, "c.entity_id IS NULL AS fresh", "w.fresh"
            join = ":dataset"
            target = "NOT w.fresh AND o.dataset = :dataset AND o.entity_id = w.entity_id"
            new = source
        sql = (
            f"WITH w AS MATERIALIZED (SELECT {columns}, {cached} {winners(join, new)}), "
            f"updated AS (UPDATE predictions_latest AS o SET {sets} FROM w WHERE {target}) "
            f"INSERT INTO predictions_latest ({names}) SELECT {names} FROM w WHERE {fresh} "
            "ORDER BY entity_id"
        )
        with _planner(conn, **settings):
            conn.execute(sa.text(sql), params)
    else:  # SQLite: no UPDATE in a WITH; its upsert probes the key index row by row anyway
        updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[2:])
        sql = (
            f"INSERT INTO predictions_latest AS o ({names}) SELECT {columns} {winners()} "
            f"ORDER BY n.entity_id ON CONFLICT (dataset, entity_id) DO UPDATE SET {updates} "
            f"WHERE {wins('excluded')}"
        )
        conn.execute(sa.text(sql), params)
    if not replaced:
        return
    # Cache rows still pointing at the partition but not written now: entities the new input
    # no longer has. Their next-ranked prediction, read past the partition's old rows (on
    # PostgreSQL still attached until the swap), then whatever is left has none.
    L, P = LATEST.c, PREDICTIONS.c
    stale = [
        L.dataset == dataset,
        L.partition_date == day,
        L.model_version == version,
        L.run_id != run_id,
    ]
    dropped = sa.select(L.entity_id).where(*stale)
    if conn.execute(dropped.limit(1)).first() is None:
        return
    _upsert(
        conn,
        _definition(
            dataset,
            [
                P.entity_id.in_(dropped),
                sa.not_(sa.and_(P.partition_date == day, P.model_version == version)),
            ],
        ),
    )
    conn.execute(sa.delete(LATEST).where(*stale))


def latest_mismatches(conn: sa.Connection, dataset: str, limit: int = 20) -> list[str]:
    """Entities whose cache row differs from the definition (missing, extra or different),
    at most `limit`, each as one line; [] when the cache is right."""
    want = {r.entity_id: tuple(r) for r in conn.execute(_definition(dataset))}
    have = {
        r.entity_id: tuple(r)
        for r in conn.execute(sa.select(*(LATEST.c[c] for c in COLUMNS)).where(
            LATEST.c.dataset == dataset
        ))
    }  # fmt: skip
    out = []
    for entity in sorted(want.keys() | have.keys()):
        if _normal(want.get(entity)) != _normal(have.get(entity)):
            out.append(f"{entity}: cache {have.get(entity)} != definition {want.get(entity)}")
            if len(out) >= limit:
                break
    return out


def _normal(row: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
    """Comparable across how dialects hand back dates and times."""
    if row is None:
        return None
    return tuple(
        v.replace(tzinfo=None) if isinstance(v, datetime) else str(v) if isinstance(v, date) else v
        for v in row
    )
