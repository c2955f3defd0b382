"""The model manifest (contract, reference statistics) is covered by a registered hash."""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.add_column("model_versions", sa.Column("manifest_sha256", sa.Text))


def downgrade() -> None:
    op.drop_column("model_versions", "manifest_sha256")
