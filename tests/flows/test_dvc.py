"""DVC tells the truth: it retrains when the lake's window, the layered config or the code
changes (also on an s3:// lake), skips when nothing did, and keeps datasets apart."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from batchpred import config, demo, registry
from flows.ingest import ingest
from flows.train import train

pytestmark = pytest.mark.slow

SMALL = {"training": {"num_boost_round": 20}}  # on top of the workspace fixture's small config
STAGES = ("prepare", "train", "evaluate")


def _source_and_ingest(files: list[str]) -> config.Settings:
    settings = config.load_settings(files)
    demo.write_demo_source(settings.dataset, settings.demo, settings.source.url)
    ingest(config_files=files)
    return settings


def _out(dataset: str) -> Path:
    return Path("data/train") / dataset


def _read(path: Path) -> Any:
    return json.loads(path.read_text())


def _trained_state(dataset: str) -> dict[str, Any]:
    """What a re-run of prepare/train/evaluate would change: the outputs' mtimes and the
    stages' entries in dvc.lock."""
    out = _out(dataset)
    files = [*sorted((out / "data").iterdir()), *sorted((out / "model").iterdir())]
    lock = yaml.safe_load(Path("dvc.lock").read_text())["stages"]
    return {
        "mtimes": {str(f): f.stat().st_mtime_ns for f in [*files, out / "metrics.json"]},
        "lock": {s: lock[f"{s}@{dataset}"] for s in STAGES},
    }


def test_s3_lake_retrains_when_a_day_arrives_and_only_then(workspace, s3_bucket):
    lake = {
        "raw": f"s3://{s3_bucket}/raw/{{dataset}}",
        "labels": f"s3://{s3_bucket}/labels/{{dataset}}",
    }
    files = workspace("churn", lake=lake, **SMALL)
    settings = _source_and_ingest(files)
    assert settings.lake.raw == f"s3://{s3_bucket}/raw/churn"
    assert not Path("data/raw").exists()  # nothing local for DVC to hash

    first = train(config_files=files)
    assert first["decision"] == "promoted" and first["retrained"] is True
    window = _read(_out("churn") / "window.json")
    assert window["dataset"] == "churn"
    assert len(window["days"]) == 6 and all(
        d["raw"] and d["labels"] is None for d in window["days"]
    )
    assert _read(_out("churn") / "data" / "prepare.json")["days"] == [
        d["day"] for d in window["days"]
    ]
    trained = _trained_state("churn")

    # Nothing new: the window manifest is rewritten byte for byte, nothing downstream runs.
    window_bytes = (_out("churn") / "window.json").read_bytes()
    assert train(config_files=files)["decision"] == "unchanged"
    assert (_out("churn") / "window.json").read_bytes() == window_bytes
    assert _trained_state("churn") == trained

    # A new source day (demo settings are not training settings): ingested, then retrained.
    files = workspace("churn", lake=lake, demo={"days": 9}, **SMALL)
    new_day = (_source_and_ingest(files).demo.start_date + timedelta(days=8)).isoformat()
    train(config_files=files)
    moved = _read(_out("churn") / "window.json")
    assert moved["settings_sha256"] == window["settings_sha256"]
    assert [d["day"] for d in moved["days"]] == [d["day"] for d in window["days"]][1:] + [new_day]
    assert _read(_out("churn") / "model" / "manifest.json")["created_from"]["days"][-1] == new_day
    retrained = _trained_state("churn")
    assert retrained["lock"] != trained["lock"]
    assert all(retrained["mtimes"][f] > t for f, t in trained["mtimes"].items())

    # A new day without labels yet (a day to score): training does not read it, so nothing
    # retrains, and the run says why, naming the day.
    files = workspace("churn", lake=lake, demo={"days": 10, "unlabelled_days": 1}, **SMALL)
    settings = _source_and_ingest(files)
    unlabelled = (settings.demo.start_date + timedelta(days=9)).isoformat()
    night = train(config_files=files)
    assert night["retrained"] is False and night["decision"] == "unchanged"
    assert night["not_retrained"].endswith(f"passed over: {unlabelled} (no labels yet)")
    assert _trained_state("churn") == retrained


def test_nothing_on_local_disk_dvc_remote_and_registry_on_s3(workspace, s3_bucket):
    """Lake, model registry and DVC remote all on S3: training pushes the model to the remote
    (content-addressed by DVC's md5), registers it by its sha256 in the S3 registry, and a
    workspace that lost its model and DVC cache gets the same bytes back with `dvc pull`."""
    import boto3

    files = workspace(
        "churn",
        lake={"raw": f"s3://{s3_bucket}/raw/{{dataset}}"},
        training={"num_boost_round": 20, "registry": f"s3://{s3_bucket}/models"},
    )
    remote = ["remote", "modify", "local", "url", f"s3://{s3_bucket}/dvc"]
    subprocess.run([sys.executable, "-m", "dvc", *remote], check=True)
    _source_and_ingest(files)
    result = train(config_files=files)
    assert result["decision"] == "promoted"

    s3 = boto3.client("s3")
    keys = {
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
        for o in page.get("Contents", [])
    }
    model = _out("churn") / "model" / "model.ubj"
    local_bytes = model.read_bytes()
    sha = hashlib.sha256(local_bytes).hexdigest()
    md5 = hashlib.md5(local_bytes).hexdigest()
    assert f"dvc/files/md5/{md5[:2]}/{md5[2:]}" in keys  # pushed by the train flow
    version = registry.version_of("churn", sha)  # the bytes' sha256, scoped to the dataset
    assert f"models/{version}/model.ubj" in keys and result["version"] == version

    model.unlink()
    shutil.rmtree(".dvc/cache")
    subprocess.run([sys.executable, "-m", "dvc", "pull", "-q", "train@churn"], check=True)
    assert hashlib.sha256(model.read_bytes()).hexdigest() == sha


def test_two_datasets_in_one_workspace_keep_their_own_outputs(workspace):
    churn_files = workspace("churn", **SMALL)
    deliveries_files = workspace("deliveries", **SMALL)
    specs = {
        "churn": _source_and_ingest(churn_files).dataset,
        "deliveries": _source_and_ingest(deliveries_files).dataset,
    }

    assert train(config_files=churn_files)["decision"] == "promoted"
    churn_trained = _trained_state("churn")
    assert train(config_files=deliveries_files)["decision"] == "promoted"
    assert _trained_state("churn") == churn_trained  # training deliveries left churn alone
    deliveries_trained = _trained_state("deliveries")
    assert train(config_files=churn_files)["decision"] == "unchanged"  # switching back: no rerun
    assert _trained_state("churn") == churn_trained
    assert _trained_state("deliveries") == deliveries_trained

    lock = yaml.safe_load(Path("dvc.lock").read_text())["stages"]
    for name, spec in specs.items():
        out = _out(name)
        manifest = _read(out / "model" / "manifest.json")
        prepared = _read(out / "data" / "prepare.json")
        assert manifest["dataset"] == name and manifest["features"] == spec.feature_names
        assert manifest["training_data_hash"] == prepared["data_hash"]
        assert prepared["dataset"] == name and _read(out / "window.json")["dataset"] == name
        assert _read(out / "metrics.json")["primary"] == (
            "auc" if spec.target.task == "binary" else "neg_rmse"
        )
        # every stage of this dataset reads and writes only its own folder (and the code)
        paths = {
            entry["path"]
            for stage in ("window", *STAGES)
            for kind in ("deps", "outs")
            for entry in lock[f"{stage}@{name}"].get(kind, [])
        }
        assert {p for p in paths if not p.startswith(f"{out}/")} == {"src/batchpred"}


def test_a_layered_config_change_retrains(workspace):
    files = workspace("churn", **SMALL)
    _source_and_ingest(files)
    train(config_files=files)
    before = _read(_out("churn") / "window.json")
    trained = _trained_state("churn")

    files = workspace("churn", training={"num_boost_round": 15})  # rewrites the layered file
    train(config_files=files)
    after = _read(_out("churn") / "window.json")
    assert after["days"] == before["days"]
    assert after["settings_sha256"] != before["settings_sha256"]
    assert _read(_out("churn") / "model" / "manifest.json")["num_boost_round"] == 15
    assert _trained_state("churn")["lock"]["train"] != trained["lock"]["train"]


def test_stage_refuses_a_config_for_another_dataset(workspace):
    files = workspace("churn")
    env = {**os.environ, config.CONFIG_ENV: ",".join(files)}
    out = "data/train/deliveries/window.json"
    proc = subprocess.run(
        [sys.executable, "-m", "batchpred.cli", "window", "--dataset", "deliveries", "--out", out],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and not Path(out).exists()
    (line,) = proc.stderr.strip().splitlines()
    assert "--dataset deliveries" in line and "'churn'" in line


def test_config_and_dataset_work_before_or_after_the_subcommand(workspace, monkeypatch):
    from batchpred import cli

    files = workspace("churn")
    seen: list[list[str]] = []
    monkeypatch.setattr(cli, "cmd_flow", lambda args, extra: seen.append(list(extra)))
    monkeypatch.delenv(config.CONFIG_ENV, raising=False)
    cli.main(["--config", files[0], "run", "score", "--day", "2026-10-08", "--config", files[1]])
    cli.main(["run", "train", "--dataset", "deliveries"])
    assert seen == [
        ["--config", files[0], "--config", files[1], "--day", "2026-10-08"],
        ["--config", "configs/base.yaml", "--config", "configs/datasets/deliveries.yaml"],
    ]
    out = Path("window-args.json")
    with pytest.raises(SystemExit, match="--dataset deliveries .* 'churn'"):
        cli.main(
            [
                "window",
                "--out",
                str(out),
                "--dataset",
                "deliveries",
                "--config",
                files[0],
                "--config",
                files[1],
            ]
        )
    assert not out.exists()


def test_a_dataset_is_onboarded_by_its_yaml_alone(workspace):
    """A new configs/datasets/<name>.yaml is all it takes: dvc.yaml is not edited, `batchpred
    dataset list` names it, and a plain `dvc repro evaluate@<name>` trains it."""
    files = workspace("churn", **SMALL)
    spec = yaml.safe_load(Path("configs/datasets/churn.yaml").read_text())
    spec["dataset"]["name"] = "newco"
    Path("configs/datasets/newco.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    dvc_yaml = Path("dvc.yaml").read_text()
    files = [files[0], "configs/datasets/newco.yaml", files[2]]
    _source_and_ingest(files)

    env = {**os.environ, config.CONFIG_ENV: ",".join(files)}
    listed = subprocess.run(
        [sys.executable, "-m", "batchpred.cli", "dataset", "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0, listed.stderr
    assert "newco" in json.loads(listed.stdout)
    repro = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "evaluate@newco"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert repro.returncode == 0, repro.stdout + repro.stderr
    assert _read(_out("newco") / "model" / "manifest.json")["dataset"] == "newco"
    assert _read(_out("newco") / "metrics.json")["auc"] > 0.6
    assert Path("dvc.yaml").read_text() == dvc_yaml  # never edited
