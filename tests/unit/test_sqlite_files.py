"""SQLite: after a batchpred process exits, the database file alone holds what it wrote."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path


def test_database_file_alone_has_the_writes_after_exit(tmp_path: Path) -> None:
    """The engine checkpoints the WAL only past 1 GiB (db.create_engine); at exit its pooled
    connections close and the last one moves the WAL into the file. Without that, a copy of
    the file alone (a backup, a download) silently lacks what the process wrote: after
    `batchpred migrate` the schema stayed in `-wal` and the file held 4 KiB."""
    path = tmp_path / "a.db"
    env = {**os.environ, "BATCHPRED_DATABASE_URL": f"sqlite:///{path}"}
    cli = Path(sys.executable).with_name("batchpred")
    subprocess.run([str(cli), "migrate"], check=True, env=env, capture_output=True)
    assert not Path(f"{path}-wal").exists()
    copy = tmp_path / "copy" / "a.db"
    copy.parent.mkdir()
    shutil.copy(path, copy)  # the file alone, no -wal beside it
    with sqlite3.connect(copy) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"predictions", "predictions_latest", "scoring_ledger"} <= tables
