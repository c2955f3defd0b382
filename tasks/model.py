"""Tasks of the model lifecycle: run the DVC pipeline, push artifacts, register and gate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from batchpred import config, promotion, registry, reports, training, window
from batchpred.config import Settings
from tasks import resources

TRAIN_DIR = "data/train"  # dvc.yaml's stages for dataset D write under data/train/D/


def train_dir(dataset: str) -> str:
    """Where dvc.yaml's stages for `dataset` write, relative to the workspace."""
    return f"{TRAIN_DIR}/{dataset}"


def stage(name: str, dataset: str) -> str:
    """The DVC name of a `foreach` stage for one dataset, e.g. evaluate@churn."""
    return f"{name}@{dataset}"


def _dvc(workspace: str, config_files: list[str] | None, *args: str) -> str:
    env = dict(os.environ)
    # The stages call `batchpred`; make sure it is this environment's.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    files = config.config_files(config_files)
    env[config.CONFIG_ENV] = ",".join(str(Path(f).resolve()) for f in files)
    # dvc.yaml's stages are made for the datasets this lists: every configs/datasets/ file's,
    # and the dataset of the config given (it may be layered from elsewhere)
    training.write_dvc_datasets(Path(workspace), [config.load_settings(files).dataset.name])
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=workspace, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


@task(name="dvc-repro", cache_policy=NONE)
def reproduce_pipeline(workspace: str, config_files: list[str] | None, dataset: str) -> bool:
    """Run `dvc repro evaluate@<dataset>` (window -> prepare -> train -> evaluate); the window
    stage always runs, the others only if the window's labelled days, the settings or the
    code changed. True when the model was trained now, False when DVC found it current (its
    manifest untouched)."""
    manifest = Path(workspace) / train_dir(dataset) / "model" / training.MANIFEST_FILE
    before = manifest.stat().st_mtime_ns if manifest.exists() else None
    out = _dvc(workspace, config_files, "repro", stage("evaluate", dataset))
    get_run_logger().info(out[-2000:])
    return before is None or manifest.stat().st_mtime_ns != before


@task(name="dvc-push", cache_policy=NONE, retries=3, retry_delay_seconds=10)
def push_artifacts(workspace: str, config_files: list[str] | None, dataset: str) -> None:
    """Push the dataset's model and training data to the DVC remote. Retried whatever failed:
    dvc's failure is an exit code and a message, not an exception resources.transient could
    judge, and pushing again is harmless (only what the remote lacks is sent)."""
    _dvc(workspace, config_files, "push", "--with-deps", stage("evaluate", dataset))


@task(name="register-and-gate", cache_policy=NONE)
def register_and_gate(settings: Settings, workspace: str) -> dict[str, Any]:
    """Register the trained model and promote it if it passes the gate against the champion
    (their evaluated models, on the holdout rows neither saw, beside the challenger's
    baselines). The result: the GateDecision under "gate", its JSON-ready fields
    (evaluation.GateDecision.as_dict: version, decision, reason in words, metrics, baselines,
    lift, compared rows) and what the model was trained on (the days passed over are tonight's
    window stage's)."""
    work, out = Path(workspace), train_dir(settings.dataset.name)
    decision = promotion.promote_if_better(
        resources.engine(),
        settings,
        work / out / "model",
        work / out / "data" / "holdout.parquet",
        dvc_hash=registry.dvc_md5(work / "dvc.lock", f"{out}/model"),
    )
    prepared = json.loads((work / out / "data" / training.PREPARE_FILE).read_text())
    manifest = json.loads((work / out / "model" / training.MANIFEST_FILE).read_text())
    data = training.training_data(prepared, manifest)
    tonight = window.passed_over(work / out)  # the window stage's, even when prepare was skipped
    if tonight is not None:
        data["days_passed_over"] = tonight
    get_run_logger().info("%s; trained on %s", reports.gate_summary(decision), data)
    return {**decision.as_dict(), "gate": decision, "training_data": data}
