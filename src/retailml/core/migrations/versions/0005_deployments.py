"""Deployments, rollouts and the prediction log.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("environment", sa.String(32), nullable=False),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("replicas", sa.Integer, nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("health", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    )
    op.create_index("ix_deployments_model_env", "deployments", ["model_name", "environment"])
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("environment", sa.String(32), nullable=False),
        sa.Column("strategy", sa.String(16), nullable=False),
        sa.Column("current_version", sa.String(128), nullable=False),
        sa.Column("new_version", sa.String(128), nullable=False),
        sa.Column("traffic_split", sa.JSON, nullable=False),
        sa.Column("rollback_threshold", sa.JSON, nullable=False),
        sa.Column("healthy_window_s", sa.Float, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("observed", sa.JSON, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("ended_at", _TS, nullable=True),
    )
    op.create_index(
        "ix_rollouts_model_env_state", "rollouts", ["model_name", "environment", "state"]
    )
    op.create_table(
        "prediction_log",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("environment", sa.String(32), nullable=False),
        sa.Column("arm", sa.String(64), nullable=True),
        sa.Column("entity_key", sa.String(255), nullable=True),
        sa.Column("features_hash", sa.String(64), nullable=False),
        sa.Column("output", sa.JSON, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_prediction_log_model_time", "prediction_log", ["model_name", "created_at"])
    op.create_index("ix_prediction_log_version", "prediction_log", ["model_name", "model_version"])


def downgrade() -> None:
    op.drop_index("ix_prediction_log_version", table_name="prediction_log")
    op.drop_index("ix_prediction_log_model_time", table_name="prediction_log")
    op.drop_table("prediction_log")
    op.drop_index("ix_rollouts_model_env_state", table_name="rollouts")
    op.drop_table("rollouts")
    op.drop_index("ix_deployments_model_env", table_name="deployments")
    op.drop_table("deployments")
