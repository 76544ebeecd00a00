"""Job records and database leases: the operations over :mod:`retailml.core.db_jobs`.

Every function takes the :class:`~retailml.core.db.PlatformDB` and commits its
own short transaction, so a worker that dies between two calls leaves a
consistent record behind (a ``running`` job with a stale heartbeat, which
:func:`reap_stale_jobs` turns into ``abandoned``).
"""

from __future__ import annotations

import os
import socket
import traceback
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from retailml.core.db import PlatformDB, as_utc, new_id, utcnow
from retailml.core.db_jobs import JobLease, TrainingJob
from retailml.core.errors import NotFoundError, problem


def worker_id() -> str:
    """``host:pid`` of this process (the owner written on jobs and leases)."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class JobRecord:
    """A read-only snapshot of one training job."""

    id: str
    kind: str
    model_name: str
    model_type: str | None
    algorithm: str | None
    status: str
    trigger: str
    inputs: dict[str, Any]
    outcome: dict[str, Any]
    error_type: str | None
    error_message: str | None
    error_traceback: str | None
    parent_job_id: str | None
    owner: str | None
    created_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, row: TrainingJob) -> JobRecord:
        values = {f.name: getattr(row, f.name) for f in fields(cls)}
        for name, value in values.items():
            if isinstance(value, datetime):
                values[name] = as_utc(value)
        values["inputs"] = dict(row.inputs or {})
        values["outcome"] = dict(row.outcome or {})
        return cls(**values)

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to finish (None while running or never started)."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = value.isoformat() if isinstance(value, datetime) else value
        out["duration_s"] = self.duration_s
        return out


def create_job(
    db: PlatformDB,
    *,
    kind: str,
    model_name: str,
    inputs: dict[str, Any],
    model_type: str | None = None,
    algorithm: str | None = None,
    trigger: str = "manual",
    parent_job_id: str | None = None,
    status: str = "queued",
) -> JobRecord:
    """Insert a job record (``queued`` unless told otherwise)."""
    with db.session() as session:
        row = TrainingJob(
            id=new_id(),
            kind=kind,
            model_name=model_name,
            model_type=model_type,
            algorithm=algorithm,
            status=status,
            trigger=trigger,
            inputs=inputs,
            outcome={},
            parent_job_id=parent_job_id,
            created_at=utcnow(),
        )
        session.add(row)
        session.commit()
        return JobRecord.of(row)


def get_job(db: PlatformDB, job_id: str) -> JobRecord:
    """One job by id.

    Raises:
        NotFoundError: for an unknown id.
    """
    with db.session() as session:
        row = session.get(TrainingJob, job_id)
        if row is None:
            raise NotFoundError(
                problem(
                    "the id of a recorded training job",
                    repr(job_id),
                    "list the jobs with `retailml jobs` (or list_jobs())",
                    subject="training job",
                )
            )
        return JobRecord.of(row)


def list_jobs(
    db: PlatformDB,
    model_name: str | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[JobRecord]:
    """Jobs, newest first."""
    query = select(TrainingJob)
    if model_name is not None:
        query = query.where(TrainingJob.model_name == model_name)
    if status is not None:
        query = query.where(TrainingJob.status == status)
    with db.session() as session:
        rows = session.scalars(query.order_by(TrainingJob.created_at.desc()).limit(limit))
        return [JobRecord.of(row) for row in rows]


def _set(db: PlatformDB, job_id: str, **values: Any) -> JobRecord:
    with db.session() as session:
        row = session.get(TrainingJob, job_id)
        if row is None:
            raise NotFoundError(
                problem("a recorded training job", repr(job_id), "check the id", subject="job")
            )
        for key, value in values.items():
            setattr(row, key, value)
        session.commit()
        return JobRecord.of(row)


def start_job(db: PlatformDB, job_id: str, owner: str | None = None) -> JobRecord:
    """Mark a job running, owned by this process."""
    now = utcnow()
    return _set(
        db, job_id, status="running", owner=owner or worker_id(), started_at=now, heartbeat_at=now
    )


def heartbeat(db: PlatformDB, job_id: str) -> None:
    """Refresh a running job's heartbeat."""
    with db.session() as session:
        session.execute(
            update(TrainingJob).where(TrainingJob.id == job_id).values(heartbeat_at=utcnow())
        )
        session.commit()


def finish_job(
    db: PlatformDB, job_id: str, outcome: dict[str, Any], status: str = "succeeded"
) -> JobRecord:
    """Record a job's outcome (``succeeded`` or ``skipped``)."""
    return _set(db, job_id, status=status, outcome=outcome, finished_at=utcnow())


def fail_job(
    db: PlatformDB,
    job_id: str,
    error: BaseException,
    outcome: dict[str, Any] | None = None,
) -> JobRecord:
    """Record a job's failure with the real exception type, message and traceback."""
    return _set(
        db,
        job_id,
        status="failed",
        error_type=f"{type(error).__module__}.{type(error).__qualname__}",
        error_message=str(error)[:20000],
        error_traceback="".join(
            traceback.format_exception(type(error), error, error.__traceback__)
        )[-20000:],
        outcome=outcome or {},
        finished_at=utcnow(),
    )


def reap_stale_jobs(
    db: PlatformDB, stale_after: timedelta, model_name: str | None = None
) -> list[JobRecord]:
    """Mark ``running`` jobs whose heartbeat is older than ``stale_after`` as ``abandoned``."""
    cutoff = utcnow() - stale_after
    query = select(TrainingJob).where(TrainingJob.status == "running")
    if model_name is not None:
        query = query.where(TrainingJob.model_name == model_name)
    reaped: list[JobRecord] = []
    with db.session() as session:
        for row in session.scalars(query).all():
            beat = as_utc(row.heartbeat_at or row.started_at or row.created_at)
            assert beat is not None
            if beat < cutoff:
                row.status = "abandoned"
                row.finished_at = utcnow()
                row.error_message = (
                    f"the worker {row.owner} stopped sending heartbeats at {beat.isoformat()}"
                )
                reaped.append(JobRecord.of(row))
        session.commit()
    return reaped


# --- leases ---------------------------------------------------------------------------------


def acquire_lease(
    db: PlatformDB,
    key: str,
    ttl: timedelta,
    owner: str | None = None,
    job_id: str | None = None,
) -> bool:
    """Take the lease ``key`` for ``ttl`` if it is free or expired; True when taken.

    Atomic on SQLite and PostgreSQL: a fresh key is an INSERT that only one
    contender wins (primary key); an expired one is taken over by a conditional
    UPDATE that only one contender's row count sees as 1. The owner may
    re-acquire (renew) its own lease.
    """
    owner = owner or worker_id()
    now = utcnow()
    try:
        with db.session() as session:
            session.add(
                JobLease(key=key, owner=owner, job_id=job_id, acquired_at=now, expires_at=now + ttl)
            )
            session.commit()
            return True
    except IntegrityError:
        pass
    with db.session() as session:
        result = session.execute(
            update(JobLease)
            .where(JobLease.key == key)
            .where((JobLease.expires_at < now) | (JobLease.owner == owner))
            .values(owner=owner, job_id=job_id, acquired_at=now, expires_at=now + ttl)
        )
        session.commit()
        return bool(getattr(result, "rowcount", 0) == 1)


def renew_lease(db: PlatformDB, key: str, ttl: timedelta, owner: str | None = None) -> bool:
    """Extend a lease this owner holds; False when it is no longer ours."""
    owner = owner or worker_id()
    with db.session() as session:
        result = session.execute(
            update(JobLease)
            .where(JobLease.key == key, JobLease.owner == owner)
            .values(expires_at=utcnow() + ttl)
        )
        session.commit()
        return bool(getattr(result, "rowcount", 0) == 1)


def release_lease(db: PlatformDB, key: str, owner: str | None = None) -> None:
    """Give a lease back (no-op when another owner holds it)."""
    owner = owner or worker_id()
    with db.session() as session:
        session.execute(delete(JobLease).where(JobLease.key == key, JobLease.owner == owner))
        session.commit()


def lease_holder(db: PlatformDB, key: str) -> tuple[str, datetime] | None:
    """``(owner, expires_at)`` of a lease, or None when nobody holds it."""
    with db.session() as session:
        row = session.get(JobLease, key)
        if row is None:
            return None
        expires = as_utc(row.expires_at)
        assert expires is not None
        return (row.owner, expires)
