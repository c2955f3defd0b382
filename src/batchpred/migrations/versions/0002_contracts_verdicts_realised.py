"""Model contracts, verdicts keyed by content and spec, unknown-category counts, realised
performance per (day, model version)."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # One verdict per (dataset, partition, content, spec): a spec change revalidates.
    op.add_column("validation_results", sa.Column("content_key", sa.Text))
    op.add_column("validation_results", sa.Column("spec_hash", sa.Text))
    op.add_column("validation_results", sa.Column("message", sa.Text))
    op.create_index(
        "validation_results_by_key",
        "validation_results",
        ["dataset", "partition_date", "content_key", "spec_hash"],
    )
    op.add_column("model_versions", sa.Column("contract", JSON))
    op.add_column("scoring_ledger", sa.Column("unknown_values", JSON))
    op.create_table(
        "realised_metrics",
        sa.Column("dataset", sa.Text, primary_key=True),
        sa.Column("partition_date", sa.Date, primary_key=True),
        sa.Column("model_version", sa.Text, primary_key=True),
        sa.Column("rows", sa.BigInteger, nullable=False),  # predictions with a label
        sa.Column("metrics", JSON, nullable=False),
        sa.Column("labels_hash", sa.Text, nullable=False),
        sa.Column("computed_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("realised_metrics")
    op.drop_column("scoring_ledger", "unknown_values")
    op.drop_column("model_versions", "contract")
    op.drop_index("validation_results_by_key", "validation_results")
    for column in ("message", "spec_hash", "content_key"):
        op.drop_column("validation_results", column)
