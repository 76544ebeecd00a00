"""Monitoring: model performance time series, drift reports and alerts.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "model_performance",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("arm", sa.String(64), nullable=True),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("window_start", _TS, nullable=False),
        sa.Column("window_end", _TS, nullable=False),
        sa.Column("recorded_at", _TS, nullable=False),
    )
    op.create_index(
        "ix_model_performance_series",
        "model_performance",
        ["model_name", "model_version", "metric", "window_end"],
    )
    op.create_table(
        "drift_reports",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("share_drifted", sa.Float, nullable=False),
        sa.Column("n_drifted", sa.Integer, nullable=False),
        sa.Column("n_columns", sa.Integer, nullable=False),
        sa.Column("dataset_drift", sa.Boolean, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_drift_reports_model_time", "drift_reports", ["model_name", "created_at"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("alert_type", sa.String(128), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("model_name", sa.String(255), nullable=True),
        sa.Column("model_version", sa.String(128), nullable=True),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("open_fingerprint", sa.String(64), nullable=True, unique=True),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("first_seen", _TS, nullable=False),
        sa.Column("last_seen", _TS, nullable=False),
        sa.Column("last_notified", _TS, nullable=True),
        sa.Column("acknowledged_by", sa.String(255), nullable=True),
        sa.Column("acknowledged_at", _TS, nullable=True),
        sa.Column("resolved_at", _TS, nullable=True),
    )
    op.create_index("ix_alerts_state_last_seen", "alerts", ["state", "last_seen"])
    op.create_index("ix_alerts_fingerprint", "alerts", ["fingerprint"])


def downgrade() -> None:
    op.drop_index("ix_alerts_fingerprint", table_name="alerts")
    op.drop_index("ix_alerts_state_last_seen", table_name="alerts")
    op.drop_table("alerts")
    op.drop_index("ix_drift_reports_model_time", table_name="drift_reports")
    op.drop_table("drift_reports")
    op.drop_index("ix_model_performance_series", table_name="model_performance")
    op.drop_table("model_performance")
