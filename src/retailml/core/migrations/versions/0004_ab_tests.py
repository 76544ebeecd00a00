"""A/B tests and their observations.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ab_tests",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("arms", sa.JSON, nullable=False),
        sa.Column("success_metrics", sa.JSON, nullable=False),
        sa.Column("duration_days", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        # Keys the SHA-256 that assigns entity keys to arms.
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("concluded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("winner", sa.String(64), nullable=True),
        sa.Column("conclusion", sa.JSON, nullable=True),
        sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("name", name="uq_ab_tests_name"),
    )
    op.create_table(
        "ab_observations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("test_name", sa.String(255), nullable=False),
        sa.Column("arm", sa.String(64), nullable=False),
        sa.Column("entity_key_hash", sa.String(64), nullable=True),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_ab_observations_test_arm_metric", "ab_observations", ["test_name", "arm", "metric"]
    )


def downgrade() -> None:
    op.drop_index("ix_ab_observations_test_arm_metric", table_name="ab_observations")
    op.drop_table("ab_observations")
    op.drop_table("ab_tests")
