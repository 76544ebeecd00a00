"""Job bookkeeping of the retraining pipeline: heartbeats, the retrain lease, outcome updates."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from types import TracebackType
from typing import Any

from retailml.core import jobs
from retailml.core.db import PlatformDB
from retailml.core.db_jobs import TrainingJob
from retailml.core.errors import NotFoundError, problem

__all__ = ["Heartbeat", "lease_key", "release_abandoned_leases", "update_outcome"]

logger = logging.getLogger(__name__)


def lease_key(model_name: str) -> str:
    """The lease that keeps two workers from retraining the same model at once."""
    return f"retrain:{model_name}"


class Heartbeat:
    """A daemon thread that refreshes a running job's heartbeat and renews its lease.

    Args:
        db: The platform database.
        job_id: The running job.
        lease: The lease key held for it (renewed with ``ttl``), or None.
        interval_s: Seconds between beats.
        ttl: The lease's time to live.
        owner: The lease's owner.
    """

    def __init__(
        self,
        db: PlatformDB,
        job_id: str,
        *,
        lease: str | None,
        interval_s: float,
        ttl: timedelta,
        owner: str,
    ) -> None:
        self.db = db
        self.job_id = job_id
        self.lease = lease
        self.interval_s = interval_s
        self.ttl = ttl
        self.owner = owner
        self.lost_lease = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"retailml-heartbeat-{job_id[:8]}", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=max(self.interval_s, 1.0) * 2)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                jobs.heartbeat(self.db, self.job_id)
                if self.lease is not None and not jobs.renew_lease(
                    self.db, self.lease, self.ttl, owner=self.owner
                ):
                    # Someone took the lease over (ours expired): say so, keep beating.
                    if not self.lost_lease:
                        logger.warning(
                            "job %s lost the lease %s to another worker", self.job_id, self.lease
                        )
                    self.lost_lease = True
            except Exception:  # a database hiccup must not kill the training
                logger.exception("heartbeat of job %s failed", self.job_id)


def update_outcome(db: PlatformDB, job_id: str, **values: Any) -> dict[str, Any]:
    """Merge ``values`` into a job's outcome without touching its status or timing.

    Raises:
        NotFoundError: for an unknown job.
    """
    with db.session() as session:
        row = session.get(TrainingJob, job_id)
        if row is None:
            raise NotFoundError(
                problem("a recorded training job", repr(job_id), "check the id", subject="job")
            )
        outcome = {**dict(row.outcome or {}), **values}
        row.outcome = outcome
        return outcome


def release_abandoned_leases(db: PlatformDB, reaped: list[jobs.JobRecord]) -> list[str]:
    """Free the retrain leases the workers of reaped (abandoned) jobs held.

    A lease is released only while the dead job's worker still holds it for
    that job, so a lease another worker took over in the meantime is left alone.

    Returns:
        The released lease keys.
    """
    released = []
    for job in reaped:
        key = lease_key(job.model_name)
        holder = jobs.lease_holder(db, key)
        if holder is None or job.owner is None or holder[0] != job.owner:
            continue
        jobs.release_lease(db, key, owner=job.owner)
        released.append(key)
    return released
