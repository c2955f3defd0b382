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

from batchpred import config, registry
from batchpred.config import Settings
from tasks import resources

TRAIN_DIR = "data/train"  # where dvc.yaml's stages write, relative to the workspace


def _dvc(workspace: str, config_files: list[str], *args: str) -> str:
    env = dict(os.environ)
    # The stages call `batchpred`; make sure it is this environment's.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    files = config.config_files(config_files)
    env[config.CONFIG_ENV] = ",".join(str(Path(f).resolve()) for f in files)
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=workspace, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


@task(name="dvc-repro", cache_policy=NONE)
def reproduce_pipeline(workspace: str, config_files: list[str]) -> dict[str, Any]:
    """Run `dvc repro` (prepare -> train -> evaluate); unchanged stages are skipped."""
    out = _dvc(workspace, config_files, "repro")
    get_run_logger().info(out[-2000:])
    return json.loads((Path(workspace) / TRAIN_DIR / "metrics.json").read_text())


@task(name="dvc-push", cache_policy=NONE, retries=3, retry_delay_seconds=10)
def push_artifacts(workspace: str, config_files: list[str]) -> None:
    """Push the model and training data to the DVC remote."""
    _dvc(workspace, config_files, "push")


@task(name="register-and-gate", cache_policy=NONE)
def register_and_gate(settings: Settings, workspace: str) -> dict[str, Any]:
    """Register the trained model and promote it if it beats the champion on the same holdout."""
    work = Path(workspace)
    result = registry.promote_if_better(
        resources.engine(),
        settings,
        work / TRAIN_DIR / "model",
        work / TRAIN_DIR / "data" / "holdout.parquet",
        dvc_hash=registry.dvc_md5(work / "dvc.lock", f"{TRAIN_DIR}/model"),
    )
    get_run_logger().info(
        "model %s: %s (%s)", result["version"], result["decision"], result["reason"]
    )
    return result
