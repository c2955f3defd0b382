"""The writers' mutexes (db.writer_lock), out of the read-only role's reach (PostgreSQL).

Until 0006 the writers excluded each other with advisory locks, which any login can take:
a read-only analyst taking a partition's key stalled the writer for as long as they liked.
A row lock (`SELECT ... FOR UPDATE`) needs UPDATE privilege on the table, and this table
lives in the writer's private schema, where the read-only role has no USAGE: only the writer
can hold these locks. SQLite needs none (flock files and BEGIN IMMEDIATE).
"""

from alembic import op

revision = "0007"
down_revision = "0006"

PARTITIONS = "batchpred_partitions"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {PARTITIONS}")
    op.execute(f"CREATE TABLE {PARTITIONS}.writer_locks (name text PRIMARY KEY)")
    op.execute(
        f"COMMENT ON TABLE {PARTITIONS}.writer_locks IS 'One row per named writer mutex; a "
        "writer holds one by locking its row (batchpred.db.writer_lock). Rows are never deleted.'"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TABLE {PARTITIONS}.writer_locks")
