"""The training window as DVC sees it: a small JSON naming exactly what `prepare` will read.

DVC hashes local paths, not an `s3://` lake, and cannot see `$BATCHPRED_CONFIG`. So the
pipeline's first stage (always run) writes this manifest: the dataset, the days
`training.select_window` picks with each partition's content hash (raw and, when present, late
labels), the window's missing days (with their reasons), and a hash of every setting that
shapes training. Nothing else: the partitions passed over after the window (labels not
arrived yet, or invalid and unlabelled) are not read by training, so a night whose only new
day is such a one leaves the file as it was and DVC does not retrain. They go to
passed_over.json beside it (PASSED_OVER_FILE, not a DVC dependency), which the reports read:
tonight's list, whether or not training ran. Beyond what `select_window` consults (listings,
validation verdicts, and the entity id column of days with late labels, to check them against
the day's rows) it reads only `_manifest.json` files, so it stays cheap on a local or `s3://`
lake. The file is byte-identical while lake and config are unchanged, and every later stage
depends on it: DVC retrains exactly when it changes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from batchpred import storage, training
from batchpred.config import Settings

PASSED_OVER_FILE = "passed_over.json"  # beside window.json: tonight's passed-over partitions

# The settings sections that change what is trained (scoring and demo do not).
TRAINING_SECTIONS = ("dataset", "validation", "training", "labels", "lake")


def settings_hash(settings: Settings) -> str:
    """sha256 of the effective (layered, expanded) settings that affect training."""
    payload = {
        name: json.loads(getattr(settings, name).model_dump_json()) for name in TRAINING_SECTIONS
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _content_hash(root: str, day: Any) -> str | None:
    manifest = storage.read_manifest(root, day)
    return None if manifest is None else manifest.get("content_hash")


def describe_window(settings: Settings) -> dict[str, Any]:
    """The window manifest: what the next `prepare` will train on, by content hash, and under
    `excluded` the partitions passed over (not part of the manifest file: write_window)."""
    window = training.select_window(settings)
    return {
        "dataset": settings.dataset.name,
        "days": [
            {
                "day": day.isoformat(),
                "raw": _content_hash(settings.lake.raw, day),
                "labels": _content_hash(settings.lake.labels, day),
            }
            for day in window.days
        ],
        "missing": list(window.missing),
        "excluded": list(window.excluded),
        "settings_sha256": settings_hash(settings),
    }


def dumps(window: dict[str, Any]) -> str:
    """Deterministic text: sorted keys, no timestamps, trailing newline."""
    return json.dumps(window, indent=2, sort_keys=True, default=str) + "\n"


def write_window(settings: Settings, out: str | Path) -> dict[str, Any]:
    """Write the window manifest to `out`, rewritten only if the bytes differ (mtime kept),
    without `excluded`, which goes to PASSED_OVER_FILE beside it (always rewritten)."""
    window = describe_window(settings)
    manifest = {k: v for k, v in window.items() if k != "excluded"}
    path, text = Path(out), dumps(manifest)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    (path.parent / PASSED_OVER_FILE).write_text(dumps({"excluded": window["excluded"]}))
    return window


def passed_over(window_dir: str | Path) -> list[dict[str, str]] | None:
    """The partitions the window stage last passed over ({day, reason}), from
    PASSED_OVER_FILE in `window_dir`; None where no window stage wrote one."""
    path = Path(window_dir) / PASSED_OVER_FILE
    return json.loads(path.read_text())["excluded"] if path.exists() else None
