"""Feature builds: the lineage of each published feature-set version.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feature_builds",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("feature_set", sa.String(255), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("input_table", sa.String(255), nullable=False),
        sa.Column("input_data_version", sa.String(128), nullable=False),
        # SHA-256 of the definition's SQL text.
        sa.Column("transformation", sa.String(64), nullable=False),
        sa.Column("parameters", sa.JSON, nullable=False),
        sa.Column("engine", sa.String(32), nullable=False),
        sa.Column("output_path", sa.String(4096), nullable=True),
        sa.Column("row_count", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("validation", sa.JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_feature_builds_feature_set", "feature_builds", ["feature_set"])


def downgrade() -> None:
    op.drop_index("ix_feature_builds_feature_set", table_name="feature_builds")
    op.drop_table("feature_builds")
