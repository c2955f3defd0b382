"""The analysts' schema: a dataset column, `predictions_latest`, the partitions out of the
way (their own schema), comments on every table and column.

On PostgreSQL `predictions` stays LIST-partitioned by day and then by model version (the
leaves are built aside and swapped in: `sinks.PostgresWriter`; the measurements behind the
choice are in docs/design.md); the day tables and leaves move to `batchpred_partitions`.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"

TS = sa.DateTime(timezone=True)
PARTITIONS = "batchpred_partitions"

# Shown by `\d+` in psql and by any SQL client's schema browser (PostgreSQL only).
COMMENTS: dict[str, tuple[str, dict[str, str]]] = {
    "predictions": (
        "Every prediction: one row per (partition_date, model_version, entity_id). A "
        "(day, model) is replaced whole when re-scored, never appended to. Partitioned by "
        "day then model version: filter on partition_date where you can.",
        {
            "dataset": "dataset name (configs/datasets/<name>.yaml)",
            "partition_date": "the day of the scored input partition (dt=YYYY-MM-DD)",
            "entity_id": "the entity scored (the dataset's id column)",
            "score": "model output: probability of the positive class, or the regression value",
            "label": "predicted class (score >= the model's threshold); null for regression",
            "model_version": "model_versions.version that made the prediction",
            "run_id": "Prefect flow run id of the scoring run",
            "scored_at": "when the partition was written",
        },
    ),
    "predictions_latest": (
        "Per (dataset, entity): its newest prediction by a model that was the dataset's "
        "champion when it was written. Kept in the same transaction as each partition write; "
        "a promotion removes nobody: model_version says which champion made the row.",
        {
            "dataset": "dataset name",
            "entity_id": "the entity",
            "partition_date": "day of the partition the prediction came from",
            "score": "model output",
            "label": "predicted class; null for regression",
            "model_version": "the champion that made this prediction",
            "run_id": "Prefect flow run id",
            "scored_at": "when it was written",
        },
    ),
    "scoring_ledger": (
        "One row per scored (partition_date, model_version): what was scored, from which "
        "input, by which run. Written in the same transaction as the predictions.",
        {
            "partition_date": "day scored",
            "model_version": "model used",
            "dataset": "dataset name",
            "input_fingerprint": "content hash of the input partition's files",
            "status": "done (only finished partitions are recorded)",
            "rows_in": "rows read",
            "rows_scored": "rows written to predictions",
            "rows_rejected": "rows refused by validation (see rejected_rows)",
            "run_id": "Prefect flow run id",
            "started_at": "when scoring of the partition began",
            "finished_at": "when it committed",
            "seconds": "finished_at - started_at",
            "unknown_values": "per feature: category values never seen in training",
        },
    ),
    "rejected_rows": (
        "Input rows not scored, each with the rule it broke.",
        {
            "partition_date": "day",
            "model_version": "model of the scoring run",
            "entity_id": "entity of the rejected row (null if the id itself was bad)",
            "column_name": "column that broke the rule",
            "rule": "the rule, e.g. not_null, range[0, 120], category",
            "run_id": "Prefect flow run id",
        },
    ),
    "model_versions": (
        "Registered models, content-addressed per dataset: version is the first 16 hex digits "
        "of the sha256 of the dataset name, a colon and the model file's sha256 (of the file's "
        "own sha256 for versions registered before ids carried the dataset).",
        {
            "version": "the model's id for its dataset (see the table comment)",
            "dataset": "dataset name",
            "sha256": "sha256 of the model file, checked before loading",
            "dvc_md5": "md5 DVC records for the model file",
            "uri": "where the model file lives (registry)",
            "xgboost_version": "xgboost that trained it",
            "features": "feature names in model order",
            "params": "training parameters",
            "training_data_hash": "hash of the training window (days and their content)",
            "metrics": "holdout metrics",
            "reference_stats": "feature and score statistics of the training data (drift)",
            "created_at": "registration time",
            "contract": "input contract: features, types, category vocabularies",
            "manifest_sha256": "sha256 of the model manifest (contract, reference stats)",
        },
    ),
    "model_aliases": (
        "Current aliases per dataset: champion (scores nightly), pinned (frozen champion).",
        {
            "dataset": "dataset name",
            "alias": "champion | pinned",
            "version": "model_versions.version",
            "set_at": "when set",
            "set_by": "who set it (user@host or the flow)",
            "reason": "why",
        },
    ),
    "model_alias_history": (
        "Every alias change: promotions, rollbacks, pins.",
        {
            "id": "sequence",
            "dataset": "dataset name",
            "alias": "alias changed",
            "version": "new version",
            "previous_version": "version it replaced",
            "reason": "why (gate decision, rollback note, ...)",
            "set_at": "when",
            "set_by": "who",
            "action": "gate | drift-block | promote | rollback | pin | unpin | set",
        },
    ),
    "validation_results": (
        "Validation verdicts, one per (dataset, partition, content, spec).",
        {
            "id": "sequence",
            "dataset": "dataset name",
            "subject": "what was validated (a partition, the training window)",
            "partition_date": "day validated",
            "run_id": "Prefect flow run id",
            "success": "true if the partition passed",
            "rows": "rows validated",
            "evaluated": "expectations evaluated",
            "failures": "failed rules: column, rule, unexpected count and share",
            "report_uri": "validation report (JSON and HTML) in the lake's reports zone",
            "validated_at": "when",
            "content_key": "content fingerprint of the partition",
            "spec_hash": "hash of the rules and thresholds in force",
            "message": "one-line summary",
        },
    ),
    "drift_metrics": (
        "Population stability (PSI) per feature and for the score, per scored partition.",
        {
            "id": "sequence",
            "dataset": "dataset name",
            "partition_date": "day",
            "model_version": "model whose training statistics are the reference",
            "feature": "feature name, or __score__ for the score distribution",
            "psi": "population stability index against the training data",
            "null_rate": "share of nulls in the day",
            "reference_null_rate": "share of nulls in the training data",
            "run_id": "Prefect flow run id",
            "computed_at": "when",
        },
    ),
    "realised_metrics": (
        "Performance once the labels of a scored day arrived.",
        {
            "dataset": "dataset name",
            "partition_date": "day",
            "model_version": "model that scored it",
            "rows": "predictions with a label",
            "metrics": "AUC / log loss, or RMSE / MAE",
            "labels_hash": "hash of the labels used",
            "computed_at": "when",
        },
    ),
}


def _upgrade_postgresql() -> None:
    conn = op.get_bind()
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {PARTITIONS}")
    op.execute(
        f"COMMENT ON SCHEMA {PARTITIONS} IS 'Partitions of predictions (a table per day, a "
        "leaf per day and model version): query the parent table predictions, not these.'"
    )
    op.execute("ALTER TABLE predictions ADD COLUMN dataset text NOT NULL DEFAULT ''")
    op.execute("ALTER TABLE predictions ALTER COLUMN dataset DROP DEFAULT")
    children = (
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = '{}'::regclass"
    )
    for (day_table,) in conn.exec_driver_sql(children.format("predictions")).all():
        for (leaf,) in conn.exec_driver_sql(children.format(day_table)).all():
            op.execute(
                f"UPDATE {leaf} p SET dataset = m.dataset FROM model_versions m "
                "WHERE m.version = p.model_version"
            )
            op.execute(f"ALTER TABLE {leaf} SET SCHEMA {PARTITIONS}")
        op.execute(f"ALTER TABLE {day_table} SET SCHEMA {PARTITIONS}")


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    op.execute("DROP VIEW champion_predictions")  # replaced by the table predictions_latest
    if pg:
        _upgrade_postgresql()
    else:
        op.add_column("predictions", sa.Column("dataset", sa.Text))
        op.execute(
            "UPDATE predictions SET dataset = (SELECT m.dataset FROM model_versions m "
            "WHERE m.version = predictions.model_version)"
        )
        op.drop_index("predictions_by_entity", "predictions")
        op.create_index("predictions_by_entity", "predictions", ["entity_id", "partition_date"])
    op.create_table(
        "predictions_latest",
        sa.Column("dataset", sa.Text, primary_key=True),
        sa.Column("entity_id", sa.Text(collation="C") if pg else sa.Text, primary_key=True),
        sa.Column("partition_date", sa.Date, nullable=False),
        sa.Column("score", sa.Float(53), nullable=False),
        sa.Column("label", sa.SmallInteger),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("scored_at", TS, nullable=False),
        # Every write updates rows in place: free space on each page keeps updates HOT.
        **({"postgresql_with": {"fillfactor": 70}} if pg else {}),
    )
    # Seeded from the current champions' predictions (an upgrade from 0004).
    op.execute(
        """
        INSERT INTO predictions_latest
        SELECT p.dataset, p.entity_id, p.partition_date, p.score, p.label, p.model_version,
               p.run_id, p.scored_at
        FROM predictions p
        JOIN model_aliases a ON a.alias = 'champion' AND a.version = p.model_version
        WHERE p.partition_date = (
            SELECT max(p2.partition_date) FROM predictions p2
            WHERE p2.entity_id = p.entity_id AND p2.model_version = p.model_version
        )
        """
    )
    if pg:
        for table, (comment, columns) in COMMENTS.items():
            op.execute(f"COMMENT ON TABLE {table} IS {_quote(comment)}")
            existing = {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}
            for column, text in columns.items():
                if column in existing:
                    op.execute(f"COMMENT ON COLUMN {table}.{column} IS {_quote(text)}")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def downgrade() -> None:
    raise NotImplementedError("0005 reshapes predictions; restore a backup to go back")
