"""Initial schema: predictions, ledger, model registry, validation and drift, analysts' view."""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    # PostgreSQL: list-partitioned by day, each day by model version. Re-scoring one
    # (day, model) truncates one leaf and COPYs it back; the key is enforced by a unique
    # index on entity_id in each leaf (day and model are fixed there), built by the writer
    # after COPY (sinks.PostgresWriter). Byte-order collation makes that index cheap.
    # SQLite: one table, unique on (partition_date, model_version, entity_id).
    op.create_table(
        "predictions",
        sa.Column("partition_date", sa.Date, nullable=False),
        sa.Column("entity_id", sa.Text(collation="C") if pg else sa.Text, nullable=False),
        sa.Column("score", sa.Float(53), nullable=False),
        sa.Column("label", sa.SmallInteger),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("scored_at", TS, nullable=False),
        *(
            []
            if pg
            else [
                sa.UniqueConstraint(
                    "partition_date", "model_version", "entity_id", name="predictions_key"
                )
            ]
        ),
        **({"postgresql_partition_by": "LIST (partition_date)"} if pg else {}),
    )
    if not pg:
        op.create_index("predictions_by_entity", "predictions", ["entity_id"])

    op.create_table(
        "scoring_ledger",
        sa.Column("partition_date", sa.Date, primary_key=True),
        sa.Column("model_version", sa.Text, primary_key=True),
        sa.Column("dataset", sa.Text, nullable=False),
        sa.Column("input_fingerprint", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("rows_in", sa.BigInteger, nullable=False),
        sa.Column("rows_scored", sa.BigInteger, nullable=False),
        sa.Column("rows_rejected", sa.BigInteger, nullable=False),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
    )

    op.create_table(
        "rejected_rows",
        sa.Column("partition_date", sa.Date, nullable=False),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("entity_id", sa.Text),
        sa.Column("column_name", sa.Text),
        sa.Column("rule", sa.Text, nullable=False),
        sa.Column("run_id", sa.Text, nullable=False),
    )
    op.create_index("rejected_rows_by_key", "rejected_rows", ["partition_date", "model_version"])

    op.create_table(
        "model_versions",
        sa.Column("version", sa.Text, primary_key=True),
        sa.Column("dataset", sa.Text, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("dvc_md5", sa.Text),
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("xgboost_version", sa.Text, nullable=False),
        sa.Column("features", JSON, nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("training_data_hash", sa.Text, nullable=False),
        sa.Column("metrics", JSON, nullable=False),
        sa.Column("reference_stats", JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "model_aliases",
        sa.Column("dataset", sa.Text, primary_key=True),
        sa.Column("alias", sa.Text, primary_key=True),
        sa.Column("version", sa.Text, sa.ForeignKey("model_versions.version"), nullable=False),
        sa.Column("set_at", TS, nullable=False),
    )
    op.create_table(
        "model_alias_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dataset", sa.Text, nullable=False),
        sa.Column("alias", sa.Text, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("previous_version", sa.Text),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("set_at", TS, nullable=False),
    )

    op.create_table(
        "validation_results",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dataset", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("partition_date", sa.Date),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("success", sa.Boolean, nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("evaluated", sa.Integer, nullable=False),
        sa.Column("failures", JSON, nullable=False),
        sa.Column("report_uri", sa.Text),
        sa.Column("validated_at", TS, nullable=False),
    )
    op.create_table(
        "drift_metrics",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dataset", sa.Text, nullable=False),
        sa.Column("partition_date", sa.Date, nullable=False),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("feature", sa.Text, nullable=False),
        sa.Column("psi", sa.Float, nullable=False),
        sa.Column("null_rate", sa.Float, nullable=False),
        sa.Column("reference_null_rate", sa.Float, nullable=False),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("computed_at", TS, nullable=False),
    )
    op.create_index("drift_by_partition", "drift_metrics", ["partition_date", "model_version"])

    # Analysts: the newest prediction of each entity by the current champion of its dataset.
    op.execute(
        """
        CREATE VIEW champion_predictions AS
        SELECT m.dataset, p.entity_id, p.partition_date, p.score, p.label,
               p.model_version, p.run_id, p.scored_at
        FROM predictions p
        JOIN model_aliases a ON a.alias = 'champion' AND a.version = p.model_version
        JOIN model_versions m ON m.version = p.model_version
        WHERE p.partition_date = (
            SELECT max(p2.partition_date) FROM predictions p2
            WHERE p2.entity_id = p.entity_id AND p2.model_version = p.model_version
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP VIEW champion_predictions")
    for table in (
        "drift_metrics",
        "validation_results",
        "model_alias_history",
        "model_aliases",
        "model_versions",
        "rejected_rows",
        "scoring_ledger",
        "predictions",
    ):
        op.drop_table(table)
