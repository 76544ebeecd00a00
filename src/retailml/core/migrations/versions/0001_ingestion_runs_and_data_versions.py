"""Ingestion runs and data versions.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ingestion_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("source_path", sa.String(4096), nullable=False),
        sa.Column("source_hash", sa.String(64), nullable=False),
        sa.Column("file_format", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rows_read", sa.Integer, nullable=False),
        sa.Column("silver_rows", sa.Integer, nullable=False),
        sa.Column("quarantined_rows", sa.Integer, nullable=False),
        sa.Column("duplicates_removed", sa.Integer, nullable=False),
        sa.Column("report_path", sa.String(4096), nullable=True),
        sa.UniqueConstraint("source_hash", name="uq_ingestion_runs_source_hash"),
    )
    op.create_table(
        "data_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("table_name", sa.String(255), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("parent_version", sa.String(64), nullable=True),
        sa.Column("row_count", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "ingestion_run_id",
            sa.String(32),
            sa.ForeignKey("ingestion_runs.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.UniqueConstraint("table_name", "version", name="uq_data_versions_version"),
    )
    op.create_index("ix_data_versions_table_name", "data_versions", ["table_name"])


def downgrade() -> None:
    op.drop_index("ix_data_versions_table_name", table_name="data_versions")
    op.drop_table("data_versions")
    op.drop_table("ingestion_runs")
