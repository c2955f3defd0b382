"""Partitioning layouts for `predictions` on PostgreSQL, measured side by side (docs/design.md).

Two years of days x three model versions, `--rows` rows per (day, model):

- day/model: LIST by day, each day LIST by model (one leaf per (day, model)); a write COPYs
  into a staging table, builds its unique index and swaps it in (ATTACH);
- month: RANGE by month, one unique index on (entity_id, partition_date, model_version);
  a write COPYs into the month's leaf, which maintains its index row by row.

Measures an entity's whole history (the query no partition key prunes), the latest
prediction of an entity by one model, and the write of one `--write-rows` (day, model).

    python -m tests.benchmarks.partitioning [--days 730] [--models 3] [--rows 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import date, timedelta

import numpy as np
import psycopg

URL = os.environ.get("BATCHPRED_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
COLS = (
    '(partition_date date not null, entity_id text collate "C" not null, '
    "score float8 not null, model_version text not null)"
)


def _csv(day: date, model: str, n: int, seed: int = 0) -> bytes:
    ids = np.char.add("e", np.arange(n).astype("U9"))
    scores = np.random.default_rng(seed).random(n).round(6).astype("U12")
    lines = np.char.add(np.char.add(f"{day},", ids), ",")
    lines = np.char.add(np.char.add(lines, scores), f",{model}\n")
    return "".join(lines.tolist()).encode()


def _lookups(cur: psycopg.Cursor, sql: str, n: int = 50) -> tuple[float, float]:
    """Median and worst of n lookups (planning included, as a client sees it), in ms."""
    times = []
    for i in range(n):
        t = time.perf_counter()
        cur.execute(sql, (f"e{(i * 37) % 100}",))
        cur.fetchall()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), max(times)


def _drop(cur: psycopg.Cursor) -> None:
    """Table by table: one DROP SCHEMA of thousands of relations runs out of lock slots
    (max_locks_per_transaction), itself a cost of one relation per (day, model)."""
    cur.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'bench_part' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
    )
    for (name,) in cur.fetchall():
        cur.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass",
            (f"bench_part.{name}",),
        )
        for (child,) in cur.fetchall():
            cur.execute(f"DROP TABLE bench_part.{child} CASCADE")
    cur.execute("DROP SCHEMA IF EXISTS bench_part CASCADE")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=730)
    ap.add_argument("--models", type=int, default=3)
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--write-rows", type=int, default=1_000_000)
    a = ap.parse_args()
    start = date(2025, 1, 1)
    days = [start + timedelta(d) for d in range(a.days)]
    models = [f"{m:016x}" for m in range(1, a.models + 1)]
    conn = psycopg.connect(URL, autocommit=True)
    cur = conn.cursor()
    _drop(cur)
    cur.execute("CREATE SCHEMA bench_part")
    cur.execute(f"CREATE TABLE bench_part.dm {COLS} PARTITION BY LIST (partition_date)")
    cur.execute(f"CREATE TABLE bench_part.mo {COLS} PARTITION BY RANGE (partition_date)")
    cur.execute("CREATE INDEX ON bench_part.mo (entity_id, partition_date, model_version)")
    t0 = time.perf_counter()
    for d in days:
        dt = f"bench_part.dm_{d:%Y%m%d}"
        cur.execute(
            f"CREATE TABLE {dt} PARTITION OF bench_part.dm FOR VALUES IN ('{d}') "
            "PARTITION BY LIST (model_version)"
        )
        if d.day == 1:
            nxt = (d.replace(day=28) + timedelta(days=4)).replace(day=1)
            cur.execute(
                f"CREATE TABLE bench_part.mo_{d:%Y%m} PARTITION OF bench_part.mo "
                f"FOR VALUES FROM ('{d}') TO ('{nxt}')"
            )
        for m in models:
            leaf = f"{dt}_{m}"
            cur.execute(f"CREATE TABLE {leaf} PARTITION OF {dt} FOR VALUES IN ('{m}')")
            data = _csv(d, m, a.rows)
            with cur.copy(f"COPY {leaf} FROM STDIN (FORMAT csv)") as cp:
                cp.write(data)
            cur.execute(f"CREATE UNIQUE INDEX ON {leaf} (entity_id)")
            with cur.copy("COPY bench_part.mo FROM STDIN (FORMAT csv)") as cp:
                cp.write(data)
    cur.execute("ANALYZE bench_part.dm")
    cur.execute("ANALYZE bench_part.mo")
    print(f"setup: {len(days)} days x {len(models)} models in {time.perf_counter() - t0:.0f} s")
    rows = []
    for name, table in (("day/model leaves", "dm"), ("monthly leaves", "mo")):
        hist = _lookups(cur, f"SELECT * FROM bench_part.{table} WHERE entity_id = %s")
        latest = _lookups(
            cur,
            f"SELECT * FROM bench_part.{table} WHERE entity_id = %s "
            f"AND model_version = '{models[0]}' ORDER BY partition_date DESC LIMIT 1",
        )
        rows.append((name, *hist, *latest))
    # One write of a (day, model) of --write-rows rows, each layout's way.
    data = _csv(days[-1], "f" * 16, a.write_rows)  # a new model's day, in the last month
    t = time.perf_counter()
    cur.execute(f"CREATE TABLE bench_part.stage {COLS}")
    with cur.copy("COPY bench_part.stage FROM STDIN (FORMAT csv)") as cp:
        cp.write(data)
    cur.execute("CREATE UNIQUE INDEX ON bench_part.stage (entity_id)")
    staged = time.perf_counter() - t
    t = time.perf_counter()
    with cur.copy("COPY bench_part.mo FROM STDIN (FORMAT csv)") as cp:
        cp.write(data)
    in_place = time.perf_counter() - t
    staged_rate, in_place_rate = a.write_rows / staged / 1e6, a.write_rows / in_place / 1e6
    print(
        f"\nwrite of {a.write_rows:,} rows: staging COPY + index {staged_rate:.2f} M rows/s; "
        f"COPY into the indexed monthly leaf {in_place_rate:.2f} M rows/s"
    )
    print("\n| layout | history p50 ms | history max ms | latest-by-model p50 ms | max ms |")
    print("|---|---|---|---|---|")
    for name, h50, hmax, l50, lmax in rows:
        print(f"| {name} | {h50:.1f} | {hmax:.1f} | {l50:.1f} | {lmax:.1f} |")
    _drop(cur)


if __name__ == "__main__":
    main()
