"""The scripts batchpred is measured against, run as their users launch them:

    python -m tests.benchmarks.peers {naive,competent,careful} JOB.json

naive: pandas.read_parquet -> Booster.predict(DMatrix) -> DataFrame.to_sql() (plain INSERT,
pandas' defaults); competent: the same with to_sql(method=psql_insert_copy), the COPY callable
of the pandas docs; careful: pyarrow.parquet -> inplace_predict -> pyarrow CSV -> psycopg COPY.
Each loads the model once, scores the partitions one after the other (xgboost on all cores)
and appends to a table with no key or index. The bench times the whole process, launch to
exit; the script prints one line, `work_s S`, the seconds from loading the model to the last
commit (what the bench reported before it timed whole processes).

They import nothing of batchpred: JOB.json holds what such a script hard-codes (the partition
files, the features and their vocabularies, the threshold, where to write), written by
`job_file`. The bench also calls these functions in-process (score checks, the limits)."""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

TABLE = "peer_predictions"
# the pragmas batchpred's engine sets on SQLite (db.create_engine; the bench reports both)
SQLITE_PRAGMAS = (
    ("journal_mode", "WAL"),
    ("synchronous", "NORMAL"),
    ("cache_size", -131072),
    ("wal_autocheckpoint", 262144),
    ("journal_size_limit", 67108864),
)


def engine(url: str) -> Any:
    """What a peer script gets: a plain SQLAlchemy engine; on SQLite with the pragmas
    batchpred's engine sets (db.create_engine; the bench reports both)."""
    import sqlalchemy as sa

    made = sa.create_engine(url)
    if url.startswith("sqlite"):

        @sa.event.listens_for(made, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            for name, value in SQLITE_PRAGMAS:
                cur.execute(f"PRAGMA {name}={value}")
            cur.close()

    return made


def psql_insert_copy(table: Any, conn: Any, keys: list[str], data_iter: Any) -> None:
    """The `method` callable of the pandas docs (io.sql, "Insertion method"), as written there
    for psycopg2, with its one psycopg2 call (`cur.copy_expert(sql, file)`) in psycopg 3's
    spelling (`cur.copy(sql)`), the driver installed here."""
    dbapi_conn = conn.connection
    with dbapi_conn.cursor() as cur:
        s_buf = io.StringIO()
        writer = csv.writer(s_buf)
        writer.writerows(data_iter)
        s_buf.seek(0)
        columns = ", ".join([f'"{k}"' for k in keys])
        table_name = f"{table.schema}.{table.name}" if table.schema else table.name
        sql = f"COPY {table_name} ({columns}) FROM STDIN WITH CSV"
        with cur.copy(sql) as copy:
            copy.write(s_buf.read())


def pandas_matrix(df: Any, features: list[Any]) -> Any:
    """Category codes in the training vocabulary (unknown: missing), the rest as float32."""
    import numpy as np
    import pandas as pd

    X = pd.DataFrame(index=df.index)
    for f in features:
        col = df[f.name]
        if f.dtype == "category":
            codes = pd.Categorical(col, categories=list(f.vocabulary)).codes
            X[f.name] = np.where(codes < 0, np.nan, codes).astype("float32")
        else:
            X[f.name] = col.astype("float32")
    return X


def arrow_matrix(table: Any, features: list[Any]) -> Any:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    X = np.empty((table.num_rows, len(features)), dtype=np.float32)
    for j, f in enumerate(features):
        col = table.column(f.name)
        if f.dtype == "category":
            col = pc.index_in(col, value_set=pa.array(list(f.vocabulary)))
        elif pa.types.is_boolean(col.type):
            col = pc.cast(col, pa.int8())
        X[:, j] = pc.cast(col, pa.float32(), safe=False).to_numpy(zero_copy_only=False)
    return X


def arrow_predictions(
    table: Any, day: date, scores: Any, threshold: float, version: str, id_col: str
) -> Any:
    import pyarrow as pa

    n = table.num_rows
    return pa.table(
        {
            "partition_date": pa.repeat(pa.scalar(day, pa.date32()), n),
            "entity_id": table.column(id_col).cast(pa.string()),
            "score": pa.array(scores, pa.float64()),
            "label": pa.array((scores >= threshold).astype("int16")),
            "model_version": pa.repeat(version, n),
            "scored_at": pa.repeat(pa.scalar(datetime.now(UTC), pa.timestamp("us", "UTC")), n),
        }
    )


def copy_arrow(conn: Any, table: Any, name: str = TABLE) -> None:
    """COPY an Arrow table into `name` as CSV written by pyarrow (psycopg 3 connection)."""
    import pyarrow.csv as pacsv

    buf = io.BytesIO()
    pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False))
    with (
        conn.cursor() as cur,
        cur.copy(f"COPY {name} ({', '.join(table.column_names)}) FROM STDIN (FORMAT csv)") as copy,
    ):
        copy.write(buf.getbuffer())


# --- the scripts --------------------------------------------------------------------------------


def job_file(
    path: Path,
    files: dict[date, list[str]],
    contract: Any,
    version: str,
    model_file: Path,
    entity_id: str,
    target: str,
) -> Path:
    """Write what a peer script hard-codes for one workload; `target`: a SQLAlchemy URL
    (naive, competent) or a libpq connection string (careful)."""
    job = {
        "files": {str(day): fs for day, fs in sorted(files.items())},
        "features": [
            {"name": f.name, "dtype": f.dtype, "vocabulary": list(f.vocabulary or ())}
            for f in contract.features
        ],
        "threshold": contract.threshold,
        "version": version,
        "model_file": str(model_file),
        "entity_id": entity_id,
        "target": target,
    }
    path.write_text(json.dumps(job))
    return path


def load_job(path: str | Path) -> SimpleNamespace:
    job = json.loads(Path(path).read_text())
    job["files"] = {date.fromisoformat(d): fs for d, fs in job["files"].items()}
    job["features"] = [SimpleNamespace(**f) for f in job["features"]]
    return SimpleNamespace(**job)


def pandas_script(job: SimpleNamespace, method: Any) -> float:
    """naive (method=None: INSERT) or competent (method=psql_insert_copy)."""
    import pandas as pd
    import xgboost as xgb

    db = engine(job.target)
    t = time.perf_counter()
    booster = xgb.Booster(model_file=job.model_file)
    for day, files in job.files.items():
        df = pd.concat(pd.read_parquet(f) for f in files)
        dm = xgb.DMatrix(pandas_matrix(df, job.features), feature_types=booster.feature_types)
        proba = booster.predict(dm)
        out = pd.DataFrame(
            {
                "partition_date": day,
                "entity_id": df[job.entity_id].astype(str),
                "score": proba.astype("float64"),
                "label": (proba >= job.threshold).astype("int16"),
                "model_version": job.version,
                "scored_at": datetime.now(UTC),
            }
        )
        out.to_sql(TABLE, db, if_exists="append", index=False, method=method)
    seconds = time.perf_counter() - t
    db.dispose()
    return seconds


def careful_script(job: SimpleNamespace) -> float:
    """pyarrow read -> inplace_predict -> pyarrow CSV -> COPY, one partition after the other."""
    import psycopg
    import pyarrow.parquet as pq
    import xgboost as xgb

    cols = [job.entity_id, *(f.name for f in job.features)]
    t = time.perf_counter()
    booster = xgb.Booster(model_file=job.model_file)
    with psycopg.connect(job.target) as conn:
        for day, files in job.files.items():
            for f in files:
                table = pq.read_table(f, columns=cols)
                scores = booster.inplace_predict(arrow_matrix(table, job.features))
                copy_arrow(
                    conn,
                    arrow_predictions(
                        table, day, scores, job.threshold, job.version, job.entity_id
                    ),
                )
            conn.commit()
    return time.perf_counter() - t


SCRIPTS = {
    "naive": lambda job: pandas_script(job, None),
    "competent": lambda job: pandas_script(job, psql_insert_copy),
    "careful": careful_script,
}


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[0] not in SCRIPTS:
        raise SystemExit(f"usage: python -m tests.benchmarks.peers {{{','.join(SCRIPTS)}}} JOB")
    print(f"work_s {SCRIPTS[argv[0]](load_job(argv[1])):.6f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
