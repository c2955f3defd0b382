"""Readers while a partition is re-scored on PostgreSQL: the worst wait of an entity lookup.

Writes one (day, model) of `--rows` rows through the real sink, then re-scores it (forced)
while another connection loops entity lookups on `predictions` (no partition key, every
leaf probed), and once more while a third connection holds a long transaction that read
`predictions` for `--hold` seconds (the swap waits for it, retrying under lock_timeout).
Prints the worst and p99 lookup waits and the write times.

    python -m tests.benchmarks.readers [--rows 2000000] [--hold 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
import uuid
from datetime import UTC, date, datetime

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from batchpred import db, sinks

ADMIN = os.environ.get(
    "BATCHPRED_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
DAY, VERSION = date(2026, 10, 1), "0123456789abcdef"


def _write(engine: sa.Engine, ids: pa.Array, seed: int) -> float:
    scores = np.random.default_rng(seed).random(len(ids))
    t = time.perf_counter()
    key = sinks.PartitionKey("bench", DAY, VERSION)
    with sinks.partition_writer(
        engine, key, f"run-{seed}", fingerprint=f"fp-{seed}", force=True
    ) as out:
        for i in range(0, len(ids), 131_072):
            out.write(sinks.PredictionBatch(ids[i : i + 131_072], scores[i : i + 131_072]))
        out.finish(sinks.LedgerEntry(f"fp-{seed}", len(ids), 0, datetime.now(UTC)))
    return time.perf_counter() - t


def _lookups(engine: sa.Engine, done: threading.Event, n: int) -> list[float]:
    waits = []
    with engine.connect() as conn:
        while not done.is_set():
            t = time.perf_counter()
            conn.execute(
                sa.text("SELECT score FROM predictions WHERE entity_id = :e"),
                {"e": f"e{int(t * 1e6) % n:09d}"},
            ).all()
            conn.commit()
            waits.append((time.perf_counter() - t) * 1000)
    return waits


def _rewrite_with_readers(engine, ids, seed, hold: float = 0.0) -> tuple[float, list[float]]:
    done, out = threading.Event(), {}
    analyst = engine.connect() if hold else None
    if analyst is not None:
        analyst.begin()
        analyst.execute(sa.text("SELECT count(*) FROM predictions")).all()
        threading.Timer(hold, lambda: (analyst.rollback(), analyst.close())).start()

    def writer() -> None:
        out["seconds"] = _write(engine, ids, seed)
        done.set()

    w = threading.Thread(target=writer)
    w.start()
    waits = _lookups(engine, done, len(ids))
    w.join()
    return out["seconds"], waits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--hold", type=float, default=5.0)
    a = ap.parse_args()
    admin = sa.create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    name = f"bench_readers_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine = db.create_engine(ADMIN.rsplit("/", 1)[0] + f"/{name}")
    try:
        db.migrate(engine)
        ids = pa.array(np.char.add("e", np.char.zfill(np.arange(a.rows).astype("U9"), 9)).tolist())
        first = _write(engine, ids, 1)
        print(
            f"first write of {a.rows:,} rows: {first:.1f} s ({a.rows / first / 1e6:.2f} M rows/s)"
        )
        for label, hold in (
            ("re-score", 0.0),
            (f"re-score, a reader holding {a.hold:g} s", a.hold),
        ):
            seconds, waits = _rewrite_with_readers(engine, ids, 2 if not hold else 3, hold)
            p50, p99 = statistics.median(waits), statistics.quantiles(waits, n=100)[98]
            print(
                f"{label}: write {seconds:.1f} s; {len(waits):,} lookups meanwhile, "
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, worst {max(waits):.0f} ms"
            )
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
