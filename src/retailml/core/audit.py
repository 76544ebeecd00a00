"""The append-only, hash-chained audit log of everything that changes what serves.

Approvals, deployments, rollbacks, deletions and setting changes append one
:class:`~retailml.core.db_governance.AuditEntry` each through
:func:`append_audit`. Entry ``n`` stores ``hash_n = SHA-256(hash_{n-1} ||
canonical JSON of (seq, at, actor, action, subject, details))`` with
``hash_0``'s predecessor the all-zero digest, so changing, deleting or
reordering any entry breaks every later link; :func:`verify_audit` finds the
first broken one. Appends from several processes are serialised by the
unique ``seq``: a writer that loses the race for a position retries on top of
the winner, so the chain never forks.

The chain detects tampering by anyone without the code (an edited row, a
deleted row); it cannot stop someone who rewrites the whole chain with the
code. Anchoring the latest hash elsewhere (a signed export) is the next step
for that threat and is not done here.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from retailml.core.db import PlatformDB, utcnow
from retailml.core.db_governance import AuditEntry
from retailml.core.errors import StateError, problem

__all__ = [
    "GENESIS",
    "AuditVerification",
    "append_audit",
    "current_actor",
    "verify_audit",
    "version_subject",
]

GENESIS: Final = "0" * 64
_ATTEMPTS: Final = 50


def version_subject(model_name: str, version: str) -> str:
    """The audit subject naming one model version: ``sales_forecast@1.2.0``."""
    return f"{model_name}@{version}"


def current_actor() -> str:
    """Who is acting: ``RETAILML_ACTOR`` if set, else the OS user."""
    explicit = os.environ.get("RETAILML_ACTOR")
    if explicit:
        return explicit
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _canonical(seq: int, at: datetime, actor: str, action: str, subject: str, details: Any) -> str:
    return json.dumps(
        {
            "seq": seq,
            "at": _utc_wall(at).isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "subject": subject,
            "details": details,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )


def _digest(prev_hash: str, payload: str) -> str:
    return hashlib.sha256(f"{prev_hash}{payload}".encode()).hexdigest()


def _utc_wall(at: datetime) -> datetime:
    """UTC wall time without tzinfo: SQLite returns naive UTC, PostgreSQL aware times."""
    return at if at.tzinfo is None else at.astimezone(UTC).replace(tzinfo=None)


def append_audit(
    db: PlatformDB,
    action: str,
    subject: str,
    details: Mapping[str, Any] | None = None,
    *,
    actor: str | None = None,
) -> AuditEntry:
    """Append one entry to the chain and return it.

    Args:
        db: The platform database.
        action: What happened, e.g. ``approval.approved``, ``deployment.promoted``.
        subject: What it happened to, e.g. ``sales_forecast@1.2.0``.
        details: JSON-safe facts (who approved, the reason, thresholds ...).
        actor: Who did it (default :func:`current_actor`).
    """
    safe = json.loads(json.dumps(dict(details or {}), default=str))
    who = actor or current_actor()
    for _ in range(_ATTEMPTS):
        try:
            with db.session() as session:
                last = session.scalars(
                    select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1)
                ).first()
                seq = (last.seq + 1) if last is not None else 1
                prev = last.hash if last is not None else GENESIS
                at = utcnow()
                entry = AuditEntry(
                    seq=seq,
                    at=at,
                    actor=who,
                    action=action,
                    subject=subject,
                    details=safe,
                    prev_hash=prev,
                    hash=_digest(prev, _canonical(seq, at, who, action, subject, safe)),
                )
                session.add(entry)
            return entry
        except IntegrityError:
            continue  # another writer took this position: retry on top of it
    raise StateError(
        problem(
            "a free position in the audit log",
            f"{_ATTEMPTS} collisions in a row",
            "retry; check for a runaway writer",
            subject="audit log",
        )
    )


@dataclass(frozen=True)
class AuditVerification:
    """The outcome of :func:`verify_audit`."""

    ok: bool
    checked: int
    first_broken: int | None = None
    reason: str = ""

    def __str__(self) -> str:
        if self.ok:
            return f"audit log intact: {self.checked} entries, every link verified"
        return f"audit log BROKEN at entry {self.first_broken}: {self.reason}"


def verify_audit(db: PlatformDB) -> AuditVerification:
    """Recompute the chain and report the first broken link (or that all hold)."""
    prev = GENESIS
    expected_seq = 1
    checked = 0
    with db.session() as session:
        for entry in session.scalars(select(AuditEntry).order_by(AuditEntry.seq)):
            if entry.seq != expected_seq:
                return AuditVerification(
                    False, checked, expected_seq, f"entry {expected_seq} is missing"
                )
            if entry.prev_hash != prev:
                return AuditVerification(
                    False, checked, entry.seq, "its prev_hash does not match the previous entry"
                )
            payload = _canonical(
                entry.seq,
                entry.at,
                entry.actor,
                entry.action,
                entry.subject,
                entry.details,
            )
            if _digest(prev, payload) != entry.hash:
                return AuditVerification(
                    False, checked, entry.seq, "its content does not match its hash (edited)"
                )
            prev = entry.hash
            expected_seq += 1
            checked += 1
    return AuditVerification(True, checked)
