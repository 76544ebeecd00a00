"""Platform tables of A/B tests: their definitions and the observations per arm.

:mod:`retailml.deployment.ab_testing` owns the logic; this module only holds
the SQLAlchemy models, registered on :class:`retailml.core.db.Base` so the
Alembic migrations (revision ``0004``) and the drift check see them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from retailml.core.db import Base, new_id, utcnow


class ABTestRecord(Base):
    """One A/B test: its arms, success metrics, schedule and outcome.

    ``arms`` is a list of ``{"arm", "model_name", "model_version",
    "traffic_percentage"}`` in definition order (the first arm is the
    control); ``success_metrics`` a list of ``{"name", "direction"}`` with
    ``direction`` ``"lower"`` or ``"higher"`` (the first is the primary
    metric). ``salt`` keys the hash that assigns entities to arms, so an
    entity's arm depends on the test and its key only. ``status`` is
    ``running``, ``concluded`` or ``stopped``; ``conclusion`` holds the
    results the test was concluded with, and ``promoted_at`` when the winner
    was handed to the deployment path.
    """

    __tablename__ = "ab_tests"
    __table_args__ = (UniqueConstraint("name", name="uq_ab_tests_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    arms: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    success_metrics: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    duration_days: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="running")
    salt: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    concluded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    winner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    conclusion: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    promoted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ABObservation(Base):
    """One observed value of a success metric for one arm of a test.

    ``entity_key_hash`` is the SHA-256 (hex) of the entity key when the value
    was recorded by key, so raw customer or store identifiers are not stored.
    """

    __tablename__ = "ab_observations"
    __table_args__ = (Index("ix_ab_observations_test_arm_metric", "test_name", "arm", "metric"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    test_name: Mapped[str] = mapped_column(String(255))
    arm: Mapped[str] = mapped_column(String(64))
    entity_key_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    metric: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    observed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
