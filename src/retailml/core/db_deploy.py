"""Deployments, rollouts and the prediction log: what serves, how traffic moves, what was served.

* ``deployments``: one row per model version deployed to an environment
  (``staging`` or ``production``). At most one row per model and environment is
  ``active`` (the version taking traffic when no rollout runs); the others are
  ``pending`` (health checks running), ``failed`` (never took traffic),
  ``superseded`` or ``rolled_back``.
* ``rollouts``: a canary or blue-green move from ``current_version`` (blue) to
  ``new_version`` (green) with its traffic split and rollback thresholds; its
  ``state`` (``running``, ``promoted``, ``rolled_back``) lives here, so a
  restarted service resumes a running rollout.
* ``prediction_log``: one row per served prediction (written in batches off
  the request path): request id, model version, A/B or rollout arm, a hash of
  the features, the output, latency and status. Monitoring joins actuals to it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Index, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from retailml.core.db import Base, utcnow


class Deployment(Base):
    """A model version deployed to an environment."""

    __tablename__ = "deployments"
    __table_args__ = (Index("ix_deployments_model_env", "model_name", "environment"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(255))
    environment: Mapped[str] = mapped_column(String(32))
    version: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    replicas: Mapped[int] = mapped_column(Integer, default=1)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    health: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Rollout(Base):
    """A canary / blue-green move between two versions of a model in one environment."""

    __tablename__ = "rollouts"
    __table_args__ = (Index("ix_rollouts_model_env_state", "model_name", "environment", "state"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(255))
    environment: Mapped[str] = mapped_column(String(32))
    strategy: Mapped[str] = mapped_column(String(16))
    current_version: Mapped[str] = mapped_column(String(128))
    new_version: Mapped[str] = mapped_column(String(128))
    #: ``{"blue": 90, "green": 10}``: percentages of traffic per colour.
    traffic_split: Mapped[dict[str, Any]] = mapped_column(JSON)
    rollback_threshold: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: Seconds the green version must stay healthy before it takes 100 %.
    healthy_window_s: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(16))
    #: The last health evaluation: error rate, p95 latency, performance drop per colour.
    observed: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class PredictionLogEntry(Base):
    """One served prediction."""

    __tablename__ = "prediction_log"
    __table_args__ = (
        Index("ix_prediction_log_model_time", "model_name", "created_at"),
        Index("ix_prediction_log_version", "model_name", "model_version"),
    )

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(255))
    model_version: Mapped[str] = mapped_column(String(128))
    environment: Mapped[str] = mapped_column(String(32))
    #: ``blue``/``green`` during a rollout, the A/B arm during a test, else null.
    arm: Mapped[str | None] = mapped_column(String(64), nullable=True)
    entity_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    features_hash: Mapped[str] = mapped_column(String(64))
    output: Mapped[Any] = mapped_column(JSON)
    latency_ms: Mapped[float] = mapped_column(Float)
    status_code: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def is_active_deployment(
    session: Session, model_name: str, version: str, environment: str = "production"
) -> bool:
    """Whether ``version`` of ``model_name`` is an active deployment of ``environment``."""
    found = session.scalars(
        select(Deployment.id).where(
            Deployment.model_name == model_name,
            Deployment.version == version,
            Deployment.environment == environment,
            Deployment.status == "active",
        )
    ).first()
    return found is not None
