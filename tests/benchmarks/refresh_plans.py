"""A nightly day into a large `predictions_latest`, PostgreSQL: the refresh plan batchpred
chooses (predictions.PROBE_ABOVE) against the scan plan alone, interleaved, through the
scoring write path (`sinks.partition_writer`: COPY, key index, refresh, ledger, swap).

    python -m tests.benchmarks.refresh_plans --cache 1500000,5000000

The cache is seeded with `--cache` entities of one champion; each write is one new day of
`--rows` entities drawn from them (every row an update of its cached entity). Figures, not
assertions. Creates and drops the database `bp_refresh_plans` on the server of `--url`."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from batchpred import db, predictions, registry, sinks
from tests.unit.test_api import register

VERSION = "a1a1a1a1a1a1a1a1"
PLANS = {"scan alone": 10**12, "chosen": predictions.PROBE_ABOVE}


def seeded(server: sa.URL, cache: int) -> sa.Engine:
    admin = sa.create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql("DROP DATABASE IF EXISTS bp_refresh_plans")
        conn.exec_driver_sql("CREATE DATABASE bp_refresh_plans")
    admin.dispose()
    engine = db.create_engine(server.set(database="bp_refresh_plans").render_as_string(False))
    db.migrate(engine)
    register(engine, VERSION, "churn")
    registry.set_alias(engine, "churn", "champion", VERSION, "seed", by="bench")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"INSERT INTO predictions_latest ({', '.join(predictions.COLUMNS)}) "
            f"SELECT 'churn', 'C' || lpad(i::text, 9, '0'), DATE '2026-01-01', 0.5, 1, "
            f"'{VERSION}', 'seed', now() FROM generate_series(1, {cache}) AS i ORDER BY 2"
        )
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
            "VACUUM ANALYZE predictions_latest"
        )
    return engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", default="1500000,5000000", help="cached entities, comma list")
    parser.add_argument("--rows", type=int, default=125_000, help="rows a day")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--url",
        default=os.environ.get("BATCHPRED_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/"),
    )
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    print("| cached entities | rows a day | plan | seconds a day (each) | median |")
    print("|---:|---:|---|---|---:|")
    for cache in (int(c) for c in args.cache.split(",")):
        engine = seeded(sa.make_url(args.url), cache)
        times: dict[str, list[float]] = {plan: [] for plan in PLANS}
        day = date(2026, 2, 1)
        for _ in range(args.repeat):
            for plan, above in PLANS.items():
                predictions.PROBE_ABOVE = above
                # in no particular order, as a day's rows come (the cache is in key order)
                ids = rng.permutation(np.unique(rng.integers(1, cache + 1, args.rows)))
                scores = rng.random(len(ids))
                batch = sinks.PredictionBatch(
                    pa.array([f"C{i:09d}" for i in ids], pa.string()),
                    scores,
                    (scores >= 0.5).astype(np.int8),
                )
                key = sinks.PartitionKey("churn", day, VERSION)
                started = time.perf_counter()
                with sinks.partition_writer(engine, key, f"bench-{day}", fingerprint="fp") as out:
                    out.write(batch)
                    out.finish(sinks.LedgerEntry("fp", len(ids), 0, datetime.now(UTC)))
                times[plan].append(time.perf_counter() - started)
                day += timedelta(days=1)
        engine.dispose()
        for plan, seconds in times.items():
            each, median = " ".join(f"{s:.2f}" for s in seconds), statistics.median(seconds)
            print(f"| {cache:,} | {args.rows:,} | {plan} | {each} | {median:.2f} |")


if __name__ == "__main__":
    main()
