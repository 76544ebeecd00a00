"""Training jobs and the leases that keep two workers off the same model.

A *job* is one training, retraining, tuning or reproduction run: what went in
(``inputs``: config, algorithm, hyperparameters, data version and window,
validation strategy, seed, parent job), what came out (``outcome``: metrics,
MLflow run id, registered version, deployment decision) or how it failed
(``error_type``, ``error_message``, ``error_traceback``), and its timing.
Workers refresh ``heartbeat_at`` while they run, so a job whose worker died
can be told from a slow one.

A *lease* (``job_leases``) is a named, expiring lock held in the platform
database: ``key`` is the primary key, so two schedulers inserting the same key
collide and only one wins, on SQLite and PostgreSQL alike; an expired lease is
taken over with a conditional UPDATE (``WHERE expires_at < now``), which is
again atomic. See :mod:`retailml.core.jobs` for the operations.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from retailml.core.db import Base, new_id, utcnow

#: Job states. ``abandoned``: the worker died (stale heartbeat) before finishing.
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "abandoned", "skipped")


class TrainingJob(Base):
    """One training / retraining / tuning / reproduction job."""

    __tablename__ = "training_jobs"
    __table_args__ = (Index("ix_training_jobs_model_status", "model_name", "status"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    #: train | retrain | tune | reproduce | restart
    kind: Mapped[str] = mapped_column(String(16))
    model_name: Mapped[str] = mapped_column(String(255))
    model_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    algorithm: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    #: What started it: manual | schedule | performance | drift | data_volume | restart | ...
    trigger: Mapped[str] = mapped_column(String(255), default="manual")
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    outcome: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error_type: Mapped[str | None] = mapped_column(String(255), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_traceback: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: The job this one retries or reproduces.
    parent_job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    #: ``host:pid`` of the worker that runs it.
    owner: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class JobLease(Base):
    """A named, expiring lock (for example ``retrain:<model name>``)."""

    __tablename__ = "job_leases"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255))
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    acquired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
