"""Who holds each partition's scoring lock, and since when (batchpred.locks).

The rows name the holder for a waiting run; the exclusion itself is a PostgreSQL session
advisory lock or, on SQLite, a flock on a file beside the database. A row left behind by a
killed holder is replaced by the next holder.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"

COMMENTS = {
    "dataset": "dataset name",
    "partition_date": "day being scored",
    "model_version": "model scoring it",
    "run_id": "Prefect flow run id of the run holding the lock",
    "run_name": "its flow run name (null outside a flow)",
    "acquired_at": "when it took the lock",
}


def upgrade() -> None:
    op.create_table(
        "partition_locks",
        sa.Column("dataset", sa.Text, primary_key=True),
        sa.Column("partition_date", sa.Date, primary_key=True),
        sa.Column("model_version", sa.Text, primary_key=True),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("run_name", sa.Text),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "COMMENT ON TABLE partition_locks IS 'Partitions being scored right now: one row "
            "per (dataset, partition_date, model_version) whose lock a run holds. Operational, "
            "not analytical: a row disappears when its partition is done.'"
        )
        for column, text in COMMENTS.items():
            op.execute(f"COMMENT ON COLUMN partition_locks.{column} IS '{text}'")


def downgrade() -> None:
    op.drop_table("partition_locks")
