"""One Prefect test harness for the whole session, and throwaway DVC workspaces."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import VENV_PATH, dvc_workspace


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
    ws = dvc_workspace(tmp_path / "ws")
    monkeypatch.chdir(ws)
    monkeypatch.setenv("PATH", VENV_PATH)
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
