"""Approval requests, approvers' decisions and the hash-chained audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from retailml.core.db import Base, utcnow


class ApprovalRequestRecord(Base):
    """A request to deploy a model version to a target, and its outcome."""

    __tablename__ = "approval_requests"
    __table_args__ = (Index("ix_approval_requests_model", "model_name", "model_version"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(255))
    model_version: Mapped[str] = mapped_column(String(128))
    deployment_target: Mapped[str] = mapped_column(String(32))
    business_justification: Mapped[str] = mapped_column(Text)
    risk_assessment: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: The roles (or names) whose approval is required, all of them.
    approvers: Mapped[list[str]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    requested_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ApprovalDecisionRecord(Base):
    """One approver's decision on a request."""

    __tablename__ = "approval_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(32), index=True)
    approver: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(255))
    decision: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str] = mapped_column(Text)
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEntry(Base):
    """One entry of the append-only audit log.

    ``seq`` is explicit and unique: two writers racing for the same position
    collide on the primary key and the loser retries on top of the winner,
    so the chain never forks. ``hash`` is SHA-256 over ``prev_hash`` and the
    entry's canonical JSON (see :mod:`retailml.core.audit`).
    """

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(512))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


def has_approved_request(
    session: Session, model_name: str, model_version: str, deployment_target: str = "production"
) -> bool:
    """Whether an approved request covers this version and target."""
    found = session.scalars(
        select(ApprovalRequestRecord.id).where(
            ApprovalRequestRecord.model_name == model_name,
            ApprovalRequestRecord.model_version == model_version,
            ApprovalRequestRecord.deployment_target == deployment_target,
            ApprovalRequestRecord.status == "approved",
        )
    ).first()
    return found is not None
