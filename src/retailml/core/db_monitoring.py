"""Platform tables of model monitoring: performance time series, drift runs and alerts.

:mod:`retailml.monitoring` owns the logic; this module only holds the
SQLAlchemy models, registered on :class:`retailml.core.db.Base` so the Alembic
migrations (revision ``0006``) and the drift check see them.

* ``model_performance``: one row per metric per evaluation of a model version
  (and A/B or rollout arm, when there is one) over a window of predictions:
  the time series the dashboard draws and concept drift is tested on.
* ``drift_reports``: one summary row per data-drift run, with the per-column
  verdicts in ``details``.
* ``alerts``: one row per open incident. A repeat of an open alert (same
  fingerprint: type, model, version and severity) raises ``count`` and
  ``last_seen`` instead of adding a row; ``open_fingerprint`` holds the
  fingerprint while the alert is not resolved (NULL once resolved), and its
  unique constraint keeps two processes from opening the same incident twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from retailml.core.db import Base, new_id, utcnow


class ModelPerformanceRecord(Base):
    """One metric of one model version (and arm) over one window of predictions."""

    __tablename__ = "model_performance"
    __table_args__ = (
        Index("ix_model_performance_series", "model_name", "model_version", "metric", "window_end"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(255))
    model_version: Mapped[str] = mapped_column(String(128))
    #: The A/B or rollout arm the predictions were served by, else null.
    arm: Mapped[str | None] = mapped_column(String(64), nullable=True)
    metric: Mapped[str] = mapped_column(String(64))
    #: The metric's value; null when it is undefined (MAPE over zero actuals only).
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: The number of (prediction, actual) pairs evaluated.
    n: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DriftReportRecord(Base):
    """The summary of one data-drift run of a model version."""

    __tablename__ = "drift_reports"
    __table_args__ = (Index("ix_drift_reports_model_time", "model_name", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    model_name: Mapped[str] = mapped_column(String(255))
    model_version: Mapped[str] = mapped_column(String(128))
    share_drifted: Mapped[float] = mapped_column(Float)
    n_drifted: Mapped[int] = mapped_column(Integer)
    n_columns: Mapped[int] = mapped_column(Integer)
    dataset_drift: Mapped[bool] = mapped_column(Boolean)
    #: :meth:`retailml.validators.drift.DriftReport.to_dict`: every column's verdict.
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AlertRecord(Base):
    """One alert incident: open, acknowledged or resolved."""

    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_state_last_seen", "state", "last_seen"),
        Index("ix_alerts_fingerprint", "fingerprint"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    alert_type: Mapped[str] = mapped_column(String(128))
    #: ``info``, ``warning`` or ``critical``.
    severity: Mapped[str] = mapped_column(String(16))
    model_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    model_version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: ``open``, ``acknowledged`` or ``resolved``.
    state: Mapped[str] = mapped_column(String(16))
    fingerprint: Mapped[str] = mapped_column(String(64))
    #: The fingerprint while the alert is not resolved, else null (unique).
    open_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    count: Mapped[int] = mapped_column(Integer, default=1)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: When the channels were last notified (the cool-down runs from here).
    last_notified: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    acknowledged_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
