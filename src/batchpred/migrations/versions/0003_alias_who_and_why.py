"""Aliases say who set them, how and why: set_by and action on every history row, set_by and
reason on the live alias (so `pinned` tells who froze the champion without a history query)."""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    # Plain ADD COLUMN (nullable): works on SQLite and PostgreSQL; rows from before this
    # migration keep NULL (who and how were never recorded).
    op.add_column("model_alias_history", sa.Column("set_by", sa.Text))
    # gate | promote | rollback | pin | unpin | set (a direct registry.set_alias call)
    op.add_column("model_alias_history", sa.Column("action", sa.Text))
    op.add_column("model_aliases", sa.Column("set_by", sa.Text))
    op.add_column("model_aliases", sa.Column("reason", sa.Text))


def downgrade() -> None:
    op.drop_column("model_aliases", "reason")
    op.drop_column("model_aliases", "set_by")
    op.drop_column("model_alias_history", "action")
    op.drop_column("model_alias_history", "set_by")
