"""Flow `train`: run the dataset's DVC pipeline (window -> prepare -> train -> evaluate), then
register and gate."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from prefect import flow

from batchpred import config
from tasks import model, reporting


@flow(name="train", flow_run_name="train")
def train(config_files: list[str] | None = None, workspace: str = ".") -> dict[str, Any]:
    """Retrain on the rolling window via `dvc repro evaluate@<dataset>` (a no-op when window,
    settings and code are unchanged); promote only past the quality gate."""
    settings = config.load_settings(config_files)
    dataset = settings.dataset.name
    model.reproduce_pipeline(workspace, config_files, dataset)
    result = model.register_and_gate(settings, workspace)
    model.push_artifacts(workspace, config_files, dataset)
    reporting.publish_model_comparison(result)
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.train", description=__doc__)
    parser.add_argument("--config", action="append", help="YAML file to layer (repeatable)")
    parser.add_argument("--workspace", default=".", help="folder holding dvc.yaml")
    args = parser.parse_args(argv)
    result = train(config_files=args.config, workspace=args.workspace)
    print(f"model {result['version']}: {result['decision']} ({result['reason']})")


if __name__ == "__main__":
    main()
