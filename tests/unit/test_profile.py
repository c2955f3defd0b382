"""`batchpred dataset init`: a spec drafted from a sample of data we did not generate (real
datasets from their registry packages) loads as a spec, guesses id, date and target as a
person would, and its ranges hold every sampled row."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml

from batchpred import cli, config, ingestion, profile, public, storage, validation

ROOT = Path(__file__).resolve().parents[2]


def _spec(text: str) -> config.DatasetSpec:
    return config.DatasetSpec.model_validate(yaml.safe_load(text)["dataset"])


def _within(spec: config.DatasetSpec, table: pa.Table) -> None:
    for feature in spec.features:
        if feature.min is None:
            continue
        low, high = pc.min_max(table.column(feature.name)).values()
        assert feature.min <= low.as_py() and high.as_py() <= feature.max, feature


def test_a_snapshot_without_dates_drafts_id_target_and_bounds(tmp_path: Path) -> None:
    path = public.write_diabetes_source(str(tmp_path / "diabetes"))
    drafted = profile.draft_from(str(tmp_path / "diabetes"), "diab", target="progression")
    spec = _spec(drafted.text)
    assert (drafted.entity_id, drafted.event_date) == ("patient_id", None)
    assert spec.target.task == "regression" and spec.entity_id_dtype == "int"
    assert spec.feature_names == ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    _within(spec, storage.read_files([path]))
    settings = yaml.safe_load(drafted.text)
    assert settings["source"]["layout"] == "snapshot" and settings["training"]["split"] == "rows"
    # Layered on the base config as configs/datasets/<name>.yaml would be, it loads whole.
    out = tmp_path / "diab.yaml"
    out.write_text(drafted.text)
    loaded = config.load_settings([str(ROOT / "configs/base.yaml"), str(out)])
    assert loaded.dataset.name == "diab"


def test_dated_real_data_finds_its_date_its_per_day_id_and_a_text_target(tmp_path: Path) -> None:
    sample = tmp_path / "flights"
    public.write_flights_source(str(sample), end=date(2013, 1, 4))  # four days of real flights
    drafted = profile.draft_from(str(sample), "flights")
    text = drafted.text
    assert (drafted.entity_id, drafted.event_date) == ("flight_id", "flight_date")
    assert drafted.target == "arrival_status"  # guessed from its name
    spec = _spec(text)
    assert spec.target.task == "binary" and spec.target.classes == {"late": 0, "on_time": 1}
    assert "CHECK which class is 1" in text  # a guess a person must confirm
    assert spec.feature("origin").dtype == "category" and "EWR, JFK, LGA" in text
    _within(spec, storage.read_files([str(p) for p in sample.rglob("*.parquet")]))


def test_the_cli_writes_the_draft_and_never_overwrites_unasked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs/datasets").mkdir(parents=True)
    (tmp_path / "configs/base.yaml").write_text((ROOT / "configs/base.yaml").read_text())
    (tmp_path / "configs/datasets/churn.yaml").write_text(
        (ROOT / "configs/datasets/churn.yaml").read_text()
    )
    public.write_diabetes_source("sample")
    cli.main(["dataset", "init", "diab", "--from", "sample"])
    out = tmp_path / "configs/datasets/diab.yaml"
    said = capsys.readouterr().out
    assert said.startswith("configs/datasets/diab.yaml: drafted from sample (id patient_id, ")
    assert "target progression" in said and "review it" in said
    assert _spec(out.read_text()).name == "diab"
    with pytest.raises(SystemExit) as refused:
        cli.main(["dataset", "init", "diab", "--from", "sample"])
    assert "exists: --force to overwrite" in str(refused.value)
    cli.main(["dataset", "list", "--json"])
    assert '"diab"' in capsys.readouterr().out  # onboarded: the DVC stages are made for it
    assert "- diab" in (tmp_path / "data/train/datasets.yaml").read_text()


def test_a_snapshot_without_an_id_is_onboarded_with_each_rows_position(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine
) -> None:
    """ISLP's Default (credit card default, 10,000 people, no id column): the draft names a
    row id the ingest adds (source.row_id), quotes the No/Yes classes YAML would read as
    booleans, and the drafted spec validates its own data."""
    from ISLP import load_data

    monkeypatch.chdir(tmp_path)
    Path("data/source/credit").mkdir(parents=True)
    load_data("Default").to_parquet("data/source/credit/part-0.parquet")
    drafted = profile.draft_from("data/source/credit", "credit")
    assert (drafted.entity_id, drafted.event_date, drafted.target) == ("row_id", None, "default")
    assert 'classes: {"No": 0, "Yes": 1}' in drafted.text
    Path("credit.yaml").write_text(drafted.text)
    settings = config.load_settings([str(ROOT / "configs/base.yaml"), "credit.yaml"])
    assert settings.source.row_id == "row_id" and settings.dataset.entity_id == "row_id"
    day = date(2026, 1, 1)
    table = ingestion.read_source_day(settings, day)
    assert table.column("row_id").to_pylist() == list(range(10_000))
    assert ingestion.ingest_partition(settings, day).status == "new"
    report = validation.validate_partition(
        engine,
        settings.dataset,
        settings.validation,
        settings.lake.raw,
        day,
        reports_url=None,
        run_id="test",
    )
    assert report.success, report.message()
