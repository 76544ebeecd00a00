"""The platform-database index of registered model versions.

MLflow's Model Registry holds the models themselves; this table is the
platform's index beside it: the semantic version of each MLflow version, the
SHA-256 digest of its artifact (checked before every load), its metadata and
tags as JSON, and its lifecycle (``active``, ``archived``, ``deleted``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from retailml.core.db import Base, utcnow


class ModelVersionRecord(Base):
    """One registered version of a model.

    ``semver`` is unique per model and only ever increases; a deleted version
    keeps its row (``status="deleted"``) so its semantic version is never reused.
    """

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_name", "semver", name="uq_model_versions_semver"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(255), index=True)
    semver: Mapped[str] = mapped_column(String(128))
    mlflow_version: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64))
    model_uri: Mapped[str] = mapped_column(String(4096))
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # ``metadata`` is reserved on declarative classes; the column keeps the name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    tags: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="active")
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
