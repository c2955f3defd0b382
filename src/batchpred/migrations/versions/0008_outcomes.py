"""Actual outcomes per row, `dataset` on rejected_rows, and realised metrics as columns.

- `outcomes`: one row per (dataset, partition_date, entity_id) with the label that arrived
  for it, encoded as the metrics read it (binary: 1 positive, 0 negative; regression: the
  value), so it joins to `predictions` row by row. Written wherever labels land
  (monitoring.realised_performance: the nightly, and ingest when it lands labels).
- `rejected_rows.dataset`, filled from the model that scored the row.
- `realised_performance`: a view of `realised_metrics` with each metric in a column.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"

METRICS = ("auc", "logloss", "accuracy", "rmse", "mae", "r2")

COMMENTS = {
    "dataset": "dataset name",
    "partition_date": "day of the scored partition the entity's row belongs to",
    "entity_id": "the entity (joins predictions.entity_id)",
    "label": "actual outcome as the metrics read it: binary 1 (positive class) or 0; "
    "regression the value. Compare with predictions.label (predicted class) or score",
    "arrived_at": "when batchpred first recorded this outcome (or its last change)",
}


def _view(pg: bool) -> str:
    def metric(key: str, kind: str) -> str:
        if pg:
            return f"(metrics ->> '{key}')::{kind}"
        return f"json_extract(metrics, '$.{key}')"

    columns = ",\n       ".join(f"{metric(m, 'float8')} AS {m}" for m in METRICS)
    return f"""
CREATE VIEW realised_performance AS
SELECT dataset, partition_date, model_version, rows,
       {columns},
       coalesce({metric("in_sample", "boolean")}, {"false" if pg else "0"}) AS in_sample,
       {metric("unmatched_labels", "bigint")} AS unmatched_labels,
       {"metrics ->> 'error'" if pg else "json_extract(metrics, '$.error')"} AS error,
       computed_at
  FROM realised_metrics"""


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    op.add_column("rejected_rows", sa.Column("dataset", sa.Text))
    op.execute(
        "UPDATE rejected_rows SET dataset = (SELECT m.dataset FROM model_versions m "
        "WHERE m.version = rejected_rows.model_version)"
    )
    op.create_table(
        "outcomes",
        sa.Column("dataset", sa.Text, primary_key=True),
        sa.Column("partition_date", sa.Date, primary_key=True),
        sa.Column("entity_id", sa.Text(collation="C") if pg else sa.Text, primary_key=True),
        sa.Column("label", sa.Float(53), nullable=False),
        sa.Column("arrived_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.execute(_view(pg))
    if pg:
        op.execute(
            "COMMENT ON TABLE outcomes IS 'Actual outcomes: one row per (dataset, partition_date, "
            "entity_id) whose label arrived. Join predictions on all three.'"
        )
        for column, text in COMMENTS.items():
            quoted = text.replace("'", "''")
            op.execute(f"COMMENT ON COLUMN outcomes.{column} IS '{quoted}'")
        op.execute("COMMENT ON COLUMN rejected_rows.dataset IS 'dataset name'")
        op.execute(
            "COMMENT ON VIEW realised_performance IS 'realised_metrics with each metric in a "
            "column: one row per (dataset, partition_date, model_version) once labels arrived. "
            "in_sample: the model was fit on that day; error: why it was not measured.'"
        )


def downgrade() -> None:
    op.execute("DROP VIEW realised_performance")
    op.drop_table("outcomes")
    op.drop_column("rejected_rows", "dataset")
