"""Ingestion from file and SQL sources into the raw zone."""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from batchpred import ingestion, storage
from batchpred.config import Settings
from batchpred.demo import generate_day, write_demo_source
from batchpred.ingestion import (
    ingest_labels,
    ingest_partition,
    label_days,
    read_source_day,
    source_days,
)
from batchpred.schema import arrow_schema

DAY = date(2026, 10, 1)


def small(settings: Settings, **update: object) -> Settings:
    demo = settings.demo.model_copy(update={"days": 2, "rows_per_day": 40, **update})
    return settings.model_copy(update={"demo": demo})


def test_new_unchanged_replaced(churn: Settings) -> None:
    churn = small(churn)
    days = write_demo_source(churn.dataset, churn.demo, churn.source.url)
    assert source_days(churn) == days
    first = ingest_partition(churn, DAY)
    assert (first.status, first.rows) == ("new", 40)
    assert first.path == storage.partition_files(churn.lake.raw, DAY)[0]
    manifest = storage.read_manifest(churn.lake.raw, DAY)
    assert manifest is not None
    assert manifest["content_hash"] == first.content_hash
    assert manifest["partition"] == "2026-10-01"
    assert manifest["rows"] == 40
    assert manifest["source"] == churn.source.url
    assert manifest["label_rows"] == 40  # labels in the data: the day can be trained on
    assert "validation" not in manifest  # verdicts live in validation_results, by content
    assert manifest["schema"][churn.dataset.target.name] == "int8"
    mtime = Path(first.path).stat().st_mtime_ns
    fingerprint = storage.fingerprint_partition(churn.lake.raw, DAY)

    again = ingest_partition(churn, DAY)
    assert again.status == "unchanged"
    assert again.content_hash == first.content_hash
    assert Path(first.path).stat().st_mtime_ns == mtime
    assert storage.read_manifest(churn.lake.raw, DAY) == manifest

    changed = generate_day(churn.dataset, churn.demo.model_copy(update={"seed": 99}), DAY)
    storage.write_partition(churn.source.url, DAY, changed)
    replaced = ingest_partition(churn, DAY)
    assert replaced.status == "replaced"
    assert replaced.content_hash != first.content_hash
    assert storage.fingerprint_partition(churn.lake.raw, DAY) != fingerprint
    assert storage.read_partition(churn.lake.raw, DAY).equals(changed)


def test_csv_source_gets_spec_types(deliveries: Settings) -> None:
    deliveries = small(deliveries)
    write_demo_source(deliveries.dataset, deliveries.demo, deliveries.source.url, fmt="csv")
    table = read_source_day(deliveries, DAY)
    canonical = arrow_schema(deliveries.dataset)
    assert [(f.name, f.type) for f in table.schema] == [(f.name, f.type) for f in canonical]
    expected = generate_day(deliveries.dataset, deliveries.demo, DAY)
    assert table.column(deliveries.dataset.entity_id).equals(
        expected.column(deliveries.dataset.entity_id)
    )
    assert ingest_partition(deliveries, DAY).status == "new"


def test_csv_bad_values_survive_ingest(churn: Settings, tmp_path: Path) -> None:
    spec = churn.dataset
    numeric = next(f.name for f in spec.features if f.dtype == "float")
    folder = Path(storage.partition_path(churn.source.url, DAY))
    folder.mkdir(parents=True)
    (folder / "part-0.csv").write_text(
        f"{spec.entity_id},{spec.event_date},{numeric}\n1,2026-10-01,oops\n2,2026-10-01,1.5\n"
    )
    table = read_source_day(churn, DAY)
    assert table.schema.field(spec.entity_id).type == pa.int64()
    assert table.schema.field(spec.event_date).type == pa.date32()
    assert table.schema.field(numeric).type == pa.string()
    result = ingest_partition(churn, DAY)
    assert result.rows == 2
    manifest = storage.read_manifest(churn.lake.raw, DAY)
    assert manifest is not None and manifest["schema"][numeric] == "string"


def test_missing_column_survives_ingest(churn: Settings) -> None:
    churn = small(churn)
    dropped = churn.dataset.features[0].name
    table = generate_day(churn.dataset, churn.demo, DAY).drop_columns([dropped])
    storage.write_partition(churn.source.url, DAY, table)
    ingest_partition(churn, DAY)
    raw = storage.read_partition(churn.lake.raw, DAY)
    assert dropped not in raw.column_names
    assert raw.num_rows == 40


def test_empty_or_missing_day_errors_clearly(churn: Settings) -> None:
    churn = small(churn)
    with pytest.raises(FileNotFoundError, match="2026-10-01") as err:
        ingest_partition(churn, DAY)
    assert churn.source.url in str(err.value)
    empty = generate_day(churn.dataset, churn.demo, DAY).slice(0, 0)
    file = storage.write_partition(churn.source.url, DAY, empty)
    with pytest.raises(ingestion.DayRefused) as refused:
        ingest_partition(churn, DAY)
    # that day's validation failure, in one line: partition, file and rule
    assert str(refused.value) == f"partition dt={DAY} file {file}: 0 rows [rule: no rows]"
    assert (refused.value.day, refused.value.rule) == (DAY, "no rows")
    assert storage.partition_files(churn.lake.raw, DAY) == []


@pytest.mark.parametrize("damage", ["truncated", "not-parquet"])
def test_an_unreadable_file_refuses_its_day_naming_file_and_rule(
    churn: Settings, damage: str
) -> None:
    churn = small(churn)
    days = write_demo_source(churn.dataset, churn.demo, churn.source.url)
    ingest_partition(churn, days[0])
    landed = storage.fingerprint_partition(churn.lake.raw, days[0])
    bad = Path(storage.partition_files(churn.source.url, days[0])[0])
    bad.write_bytes(bad.read_bytes()[:300] if damage == "truncated" else b"id,x\n1,2\n")
    with pytest.raises(ingestion.DayRefused) as refused:
        ingest_partition(churn, days[0])
    message = str(refused.value)
    assert message.startswith(f"partition dt={days[0]} file {bad}: cannot be read as data")
    assert message.endswith("[rule: readable]") and "\n" not in message
    assert refused.value.files == [str(bad)]
    # what the lake held is kept; the other day is not affected
    assert storage.fingerprint_partition(churn.lake.raw, days[0]) == landed
    assert ingest_partition(churn, days[1]).status == "new"


def sql_settings(churn: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A SQLite source table holding three demo days, without one feature column."""
    spec = churn.dataset
    churn = small(churn, days=3)
    url = f"sqlite:///{tmp_path / 'source.db'}"
    monkeypatch.setenv("TEST_SOURCE_DB", url)
    rows = [
        row
        for offset in range(3)
        for row in generate_day(spec, churn.demo, DAY + timedelta(days=offset)).to_pylist()
    ]
    names = [n for n in rows[0] if n != spec.features[-1].name]
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"create table events ({', '.join(names)})"))
        conn.execute(
            sa.text(f"insert into events values ({', '.join(':' + n for n in names)})"),
            [{n: row[n] for n in names} for row in rows],
        )
    engine.dispose()
    query = f"select * from events where {spec.event_date} = :dt"
    source = churn.source.model_copy(
        update={"kind": "sql", "query": query, "url_env": "TEST_SOURCE_DB"}
    )
    return churn.model_copy(update={"source": source})


def test_sql_source_binds_the_day(
    churn: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = sql_settings(churn, tmp_path, monkeypatch)
    spec = settings.dataset
    day = DAY + timedelta(days=1)
    seen: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append((statement, parameters))

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", capture)
    try:
        table = read_source_day(settings, day)
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", capture)
    assert seen == [(settings.source.query.replace(":dt", "?"), ("2026-10-02",))]
    assert table.num_rows == 40
    assert set(table.column(spec.event_date).to_pylist()) == {day}
    assert table.schema.field(spec.event_date).type == pa.date32()
    expected = generate_day(spec, settings.demo, day)
    assert table.column(spec.entity_id).equals(expected.column(spec.entity_id))
    assert spec.features[-1].name not in table.column_names

    result = ingest_partition(settings, day)
    assert (result.status, result.rows) == ("new", 40)
    manifest = storage.read_manifest(settings.lake.raw, day)
    assert manifest is not None and manifest["source"] == "sql"
    assert str(tmp_path / "source.db") not in str(manifest)
    assert ingest_partition(settings, day).status == "unchanged"
    with pytest.raises(ingestion.DayRefused) as refused:
        ingest_partition(settings, date(2026, 12, 25))
    assert str(refused.value) == "partition dt=2026-12-25 source sql: 0 rows [rule: no rows]"
    with pytest.raises(ValueError, match="explicitly"):
        source_days(settings)


def test_sql_bad_url_is_not_echoed(
    churn: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = sql_settings(churn, tmp_path, monkeypatch)
    monkeypatch.setenv("TEST_SOURCE_DB", "not a url:secret-password")
    with pytest.raises(ValueError) as err:
        read_source_day(settings, DAY)
    assert "secret-password" not in str(err.value)
    monkeypatch.delenv("TEST_SOURCE_DB")
    with pytest.raises(KeyError, match="TEST_SOURCE_DB"):
        read_source_day(settings, DAY)


def test_a_sql_source_lists_its_days_and_reads_only_the_changed_ones(
    churn: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """source.days_query lists the days (with a change marker): ingest and the nightly plan
    SQL days like file days, and a day whose marker is unchanged is not read again."""
    settings = sql_settings(churn, tmp_path, monkeypatch)
    spec = settings.dataset
    days_query = f"select {spec.event_date}, count(*) from events group by 1"
    source = settings.source.model_copy(update={"days_query": days_query})
    settings = settings.model_copy(update={"source": source})
    days = [DAY + timedelta(days=i) for i in range(3)]
    assert source_days(settings) == days
    assert source_days(settings, start=days[1]) == days[1:]
    queries = []  # the days query runs once per plan, not again for each day pulled
    sql_days = ingestion.sql_days
    monkeypatch.setattr(ingestion, "sql_days", lambda *a: queries.append(a) or sql_days(*a))
    first = ingestion.plan(settings, days, [])
    assert first.to_pull == days and first.unchanged == []
    for day in days:
        assert ingest_partition(settings, day, first.markers[day]).status == "new"
    assert len(queries) == 1
    again = ingestion.plan(settings, days, [])
    assert again.to_pull == [] and [r.day for r in again.unchanged] == days
    # A row arrives late for the second day: only that day is read again.
    engine = sa.create_engine(os.environ["TEST_SOURCE_DB"])
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"insert into events select * from events where {spec.event_date} = :d limit 1"
            ),
            {"d": days[1].isoformat()},
        )
        conn.execute(
            sa.text(
                f"update events set {spec.entity_id} = 'late' where rowid = last_insert_rowid()"
            )
        )
    engine.dispose()
    assert ingestion.plan(settings, days, []).to_pull == [days[1]]
    assert ingest_partition(settings, days[1]).status == "replaced"
    assert ingestion.plan(settings, days, []).to_pull == []


def test_late_labels_from_sql(churn: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """labels.query and labels.days_query: late labels from a table, landed in the labels zone
    like a labels file, and not read again while their day's marker is unchanged."""
    settings = sql_settings(churn, tmp_path, monkeypatch)
    spec, target = settings.dataset, settings.dataset.target.name
    engine = sa.create_engine(os.environ["TEST_SOURCE_DB"])
    with engine.begin() as conn:
        conn.execute(sa.text("create table outcomes (id text, outcome text, dt date)"))
        conn.execute(
            sa.text("insert into outcomes values (:i, :o, :d)"),
            [{"i": str(i), "o": "yes" if i % 3 else "no", "d": str(DAY)} for i in range(5)],
        )
    engine.dispose()
    labels = settings.labels.model_copy(
        update={
            "query": f"select id as {spec.entity_id}, outcome as {target} from outcomes "
            "where dt = :dt",
            "days_query": "select dt, count(*) from outcomes group by dt",
            "url_env": "TEST_SOURCE_DB",
        }
    )
    settings = settings.model_copy(update={"labels": labels})
    assert ingestion.label_days(settings) == [DAY]
    planned = ingestion.plan(settings, [], [DAY])
    assert planned.labels_to_pull == [DAY]
    assert planned.label_markers == {DAY: "sql:5"}  # the pull records the plan's marker
    result = ingestion.ingest_labels(settings, DAY, planned.label_markers[DAY])
    assert (result.status, result.rows) == ("new", 5)
    landed = storage.read_partition(settings.lake.labels, DAY)
    assert landed.column_names == [spec.entity_id, target] and landed.num_rows == 5
    assert ingestion.plan(settings, [], [DAY]).labels_to_pull == []


def test_parquet_types_are_not_forced(churn: Settings) -> None:
    spec = churn.dataset
    table = generate_day(spec, small(churn).demo, DAY)
    target = spec.target.name
    table = table.set_column(
        table.column_names.index(target), target, pa.array(["x"] * table.num_rows)
    )
    folder = Path(storage.partition_path(churn.source.url, DAY))
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "a.parquet")
    assert read_source_day(churn, DAY).schema.field(target).type == pa.string()


def test_source_days_within_a_range(churn: Settings) -> None:
    churn = small(churn, days=4)
    days = write_demo_source(churn.dataset, churn.demo, churn.source.url)
    assert source_days(churn, start=days[1]) == days[1:]
    assert source_days(churn, end=days[1]) == days[:2]
    assert source_days(churn, days[1], days[2]) == days[1:3]


def test_unlabelled_day_counts_no_label_rows(churn: Settings) -> None:
    """A day to score arrives without labels (no column, or nulls): ingest records how many
    rows carry one, which is how training passes over days without labels."""
    churn = small(churn)
    spec = churn.dataset
    table = generate_day(spec, churn.demo, DAY)
    storage.write_partition(churn.source.url, DAY, table.drop_columns([spec.target.name]))
    assert ingest_partition(churn, DAY).status == "new"
    assert storage.read_manifest(churn.lake.raw, DAY)["label_rows"] == 0
    i = table.schema.get_field_index(spec.target.name)
    labels = table.column(i).to_pylist()
    partly = table.set_column(i, spec.target.name, pa.array(labels[:10] + [None] * 30, pa.int8()))
    storage.write_partition(churn.source.url, DAY, partly)
    assert ingest_partition(churn, DAY).status == "replaced"
    assert storage.read_manifest(churn.lake.raw, DAY)["label_rows"] == 10


def test_snapshot_file_is_ingested_as_the_named_day_with_the_date_filled(
    churn: Settings, tmp_path: Path
) -> None:
    """source.layout snapshot: one Parquet file without dates becomes the day you name."""
    spec = churn.dataset
    table = generate_day(spec, small(churn).demo, DAY).drop_columns([spec.event_date])
    snapshot = tmp_path / "snapshot.parquet"
    pq.write_table(table, snapshot)
    source = churn.source.model_copy(update={"url": str(snapshot), "layout": "snapshot"})
    settings = churn.model_copy(update={"source": source})
    day = date(2027, 1, 15)
    assert source_days(settings, end=day) == [day]
    result = ingest_partition(settings, day)
    assert (result.status, result.rows) == ("new", 40)
    assert storage.list_partitions(settings.lake.raw) == [day]
    raw = storage.read_partition(settings.lake.raw, day)
    assert raw.schema.field(spec.event_date).type == pa.date32()
    assert set(raw.column(spec.event_date).to_pylist()) == {day}
    assert raw.column(spec.entity_id).equals(table.column(spec.entity_id))
    assert ingest_partition(settings, day).status == "unchanged"


def test_late_labels_are_ingested_into_the_labels_zone(churn: Settings, tmp_path: Path) -> None:
    spec = churn.dataset
    table = generate_day(spec, small(churn).demo, DAY)
    url = str(tmp_path / "late")
    labels = table.select([spec.entity_id, spec.target.name, spec.features[0].name])
    storage.write_partition(url, DAY, labels)
    settings = churn.model_copy(update={"labels": churn.labels.model_copy(update={"url": url})})
    assert label_days(settings) == [DAY] and label_days(churn) == []
    result = ingest_labels(settings, DAY)
    assert (result.status, result.rows) == ("new", 40)
    stored = storage.read_partition(settings.lake.labels, DAY)
    assert stored.column_names == [spec.entity_id, spec.target.name]  # id and label only
    assert stored.column(spec.target.name).equals(table.column(spec.target.name))
    assert storage.read_manifest(settings.lake.labels, DAY)["label_rows"] == 40
    assert ingest_labels(settings, DAY).status == "unchanged"
    storage.write_partition(url, DAY, labels.drop_columns([spec.target.name]))
    with pytest.raises(ValueError, match=rf"dt={DAY}.*'{spec.target.name}'.*missing"):
        ingest_labels(settings, DAY)
    with pytest.raises(FileNotFoundError, match="2026-10-02"):
        ingest_labels(settings, DAY + timedelta(days=1))


def test_ingest_never_turns_a_bad_bool_into_true(churn: Settings) -> None:
    """7 or 300 in a bool column stay numbers in the raw zone, for the bool rule to reject;
    a column of 0/1 numbers becomes bool."""
    churn = small(churn)
    table = generate_day(churn.dataset, churn.demo, DAY)
    for name, bad in (("has_partner", [7, 300]), ("paperless_billing", [])):
        i = table.schema.get_field_index(name)
        values = [int(v) for v in table.column(i).to_pylist()]
        values[: len(bad)] = bad
        table = table.set_column(i, name, pa.array(values, pa.int64()))
    storage.write_partition(churn.source.url, DAY, table)
    ingest_partition(churn, DAY)
    raw = storage.read_partition(churn.lake.raw, DAY)
    assert raw.schema.field("has_partner").type == pa.int64()
    assert raw.column("has_partner").to_pylist()[:2] == [7, 300]
    assert raw.schema.field("paperless_billing").type == pa.bool_()


def test_a_night_with_nothing_new_reads_no_data(churn: Settings, monkeypatch) -> None:
    """Ingest and fingerprints look at listings and manifests only while nothing changed:
    the cost of a no-op night does not grow with the bytes of history."""
    churn = small(churn)
    days = write_demo_source(churn.dataset, churn.demo, churn.source.url)
    for day in days:
        ingest_partition(churn, day)
    before = {day: storage.fingerprint_partition(churn.lake.raw, day) for day in days}

    reads: list[str] = []
    real_read, real_digest = storage.read_files, storage._content_digest
    monkeypatch.setattr(storage, "read_files", lambda urls, *a, **k: reads.extend(urls))
    monkeypatch.setattr(storage, "_content_digest", lambda fs, path: reads.append(path))
    again = [ingest_partition(churn, day) for day in days]
    after = {day: storage.fingerprint_partition(churn.lake.raw, day) for day in days}
    assert {r.status for r in again} == {"unchanged"} and reads == []
    assert after == before

    # A touched source file (same bytes) is read once to find it unchanged, then remembered.
    monkeypatch.setattr(storage, "read_files", real_read)
    monkeypatch.setattr(storage, "_content_digest", real_digest)
    (source_file,) = storage.partition_files(churn.source.url, days[0])
    os.utime(source_file, ns=(1, 1))
    assert ingest_partition(churn, days[0]).status == "unchanged"
    monkeypatch.setattr(storage, "read_files", lambda urls, *a, **k: reads.extend(urls))
    assert ingest_partition(churn, days[0]).status == "unchanged" and reads == []
    # A raw file rewritten behind our back is hashed again: its fingerprint tracks content.
    monkeypatch.setattr(storage, "_content_digest", real_digest)
    (raw_file,) = storage.partition_files(churn.lake.raw, days[1])
    os.utime(raw_file, ns=(2, 2))
    assert storage.fingerprint_partition(churn.lake.raw, days[1]) == before[days[1]]


def test_plan_pulls_only_new_or_touched_days(
    churn: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan is made from listings and manifests: unchanged days are answered from the
    manifest, new and touched days (and labels) are pulled; nothing is read to decide."""
    labels = tmp_path / "late-labels"  # the source: not the lake's labels zone
    churn = small(churn, days=3)
    churn = churn.model_copy(
        update={"labels": churn.labels.model_copy(update={"url": str(labels)})}
    )
    days = write_demo_source(churn.dataset, churn.demo, churn.source.url)
    for day in days[:2]:
        storage.write_partition(str(labels), day, pa.table({"customer_id": [1], "churned": [0]}))
    plan = ingestion.plan(churn, days, days[:2])
    assert (plan.unchanged, plan.to_pull, plan.labels_to_pull) == ([], days, days[:2])
    for day in days[:2]:
        ingest_partition(churn, day)
        ingest_labels(churn, day)
    (touched,) = storage.partition_files(churn.source.url, days[0])
    os.utime(touched, ns=(1, 1))  # same bytes, new mtime: looked at closer, by the pull

    reads: list[str] = []
    monkeypatch.setattr(storage, "read_files", lambda urls, *a, **k: reads.extend(urls))
    plan = ingestion.plan(churn, days, days[:2])
    assert reads == []
    assert [r.day for r in plan.unchanged] == [days[1]]
    assert plan.unchanged[0].rows == 40 and plan.unchanged[0].status == "unchanged"
    assert plan.to_pull == [days[0], days[2]] and plan.labels_to_pull == []


def test_refused_source_folders_are_named(churn: Settings) -> None:
    churn = small(churn)
    write_demo_source(churn.dataset, churn.demo, churn.source.url)
    Path(churn.source.url, "dt=20261005").mkdir()
    (problem,) = ingestion.refused_folders(churn)
    assert str(problem).endswith("dt=20261005: not a dt=YYYY-MM-DD partition folder")
