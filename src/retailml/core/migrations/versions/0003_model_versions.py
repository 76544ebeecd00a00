"""Model versions: the platform's index of MLflow registry versions.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.String(255), nullable=False),
        # Semantic version (major.minor.patch[-pre]); MLflow's integer beside it.
        sa.Column("semver", sa.String(128), nullable=False),
        sa.Column("mlflow_version", sa.Integer, nullable=False),
        # SHA-256 over the model directory's sorted relative paths and contents.
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("model_uri", sa.String(4096), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        # active | archived | deleted
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("model_name", "semver", name="uq_model_versions_semver"),
    )
    op.create_index("ix_model_versions_model_name", "model_versions", ["model_name"])


def downgrade() -> None:
    op.drop_index("ix_model_versions_model_name", table_name="model_versions")
    op.drop_table("model_versions")
