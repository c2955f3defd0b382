"""One Prefect test harness for the whole session, and throwaway DVC workspaces."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A copy of the project's pipeline definition (dvc.yaml, .dvcignore, configs) in a fresh
    DVC repo, with the library source linked in (a DVC dependency), as the working directory,
    and a SQLite database of its own. Returns a function writing a small override config for
    a dataset (configs/test-<dataset>.yaml; calling it again rewrites that file)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copy(ROOT / "dvc.yaml", ws / "dvc.yaml")
    shutil.copytree(ROOT / "configs", ws / "configs")
    (ws / "src").symlink_to(ROOT / "src")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(
        [sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=ws, check=True, env=env
    )
    project_config = (
        (ROOT / ".dvc" / "config").read_text().replace("[core]", "[core]\n    no_scm = True")
    )
    (ws / ".dvc" / "config").write_text(project_config)
    shutil.copy(ROOT / ".dvcignore", ws / ".dvcignore")  # after init, which writes its own
    monkeypatch.chdir(ws)
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.setenv("BATCHPRED_DATABASE_URL", f"sqlite:///{ws / 'data' / 'bp.db'}")

    def configure(dataset: str, **overrides: object) -> list[str]:
        small = {
            "demo": {
                "days": 8,
                "rows_per_day": 400,
                "unlabelled_days": 0,
                "null_label_fraction": 0.0,
            },
            "training": {
                "window_days": 6,
                "valid_days": 1,
                "holdout_days": 1,
                "num_boost_round": 40,
            },
            "validation": {"data_docs": False},
        }
        from batchpred.config import deep_merge

        path = ws / "configs" / f"test-{dataset}.yaml"
        path.write_text(yaml.safe_dump(deep_merge(small, overrides), sort_keys=False))
        return [
            str(ws / "configs/base.yaml"),
            str(ws / f"configs/datasets/{dataset}.yaml"),
            str(path),
        ]

    return configure
