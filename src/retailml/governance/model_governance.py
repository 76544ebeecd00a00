"""Model governance: approval workflow, compliance checks and the audit log.

::

    governance = ModelGovernance()
    request = governance.request_approval(
        model_name="sales_forecast", model_version="1.2.0", deployment_target="production",
        business_justification="...", risk_assessment={"business_impact": "medium"},
        approvers=["lead_data_scientist", "ml_engineer", "business_owner"])
    governance.approve(request.id, approver="alice", role="lead_data_scientist", comment="ok")
    governance.is_approved("sales_forecast", "1.2.0", "production")   # all roles approved?
    report = governance.run_compliance_checks(model="sales_forecast", checks=[...])

Approvals
---------
``approvers`` lists the roles (or people) whose approval is required: *all*
of them. Each decision names the approver, the role they decide for and a
comment; one rejection rejects the request. A new request for the same
model, version and target supersedes an open one. Every request and decision
is appended to the hash-chained audit log (:mod:`retailml.core.audit`).

Enforcement: :class:`retailml.deployment.model_server.ModelServer` calls
:meth:`ModelGovernance.require_approval` before any version takes production
traffic (a direct deployment, a blue-green or canary rollout, a promotion,
an A/B winner's rollout; the CLI and the serving admin API go through it),
``ABTestManager.create_test`` does for every arm not already serving
production, and the registry refuses to move the
``production`` alias to a version that is neither approved nor deployed. No
setting turns this off. A rollback restores a version that served production
before (approved then), so it needs no new request.

Compliance checks
-----------------
=============================  ===============================================================
check                          what it does
=============================  ===============================================================
``bias_detection``             the model type's group disparity (ModelValidator with
                               ``bias_detection``: group error disparity for forecasts and
                               demand, demographic parity for anomaly flags and segments)
``fairness_assessment``        fairlearn's demographic parity and equalized odds (anomaly
                               flags with labels, segments), group error disparity (WAPE)
                               for forecasts and demand, over ``group_column``
``explainability_requirements`` permutation importance of every input feature, computed on
                               the evaluation data and stored with the model's MLflow run
                               (``explainability/permutation_importance.json``)
``data_privacy_compliance``    the model's features and the evaluation data scanned for
                               raw identifiers: identifier-like column names (name, email,
                               phone, address, customer id ...) and e-mail addresses or
                               phone numbers in text values
=============================  ===============================================================

The evaluation data is ``data=`` when given, else what a TrainingResult kept
(its training panel for forecasts and demand, its sample of training inputs
otherwise). A model named by its registry name has no data of its own: checks
that need data report ``skipped`` with the reason, and never pass silently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from retailml.core.audit import (
    AuditVerification,
    append_audit,
    current_actor,
    verify_audit,
    version_subject,
)
from retailml.core.db import PlatformDB, new_id, utcnow
from retailml.core.db_governance import (
    ApprovalDecisionRecord,
    ApprovalRequestRecord,
    AuditEntry,
    has_approved_request,
)
from retailml.core.errors import ConfigError, NotFoundError, StateError, problem
from retailml.core.settings import Settings, get_settings
from retailml.training._anomaly import AnomalyDetector
from retailml.training._demand import DemandPredictor
from retailml.training._forecast import SalesForecaster
from retailml.training._segmentation import CustomerSegmenter
from retailml.training.model_trainer import ModelValidator, TrainingResult

__all__ = [
    "COMPLIANCE_CHECKS",
    "ApprovalRequest",
    "ComplianceCheck",
    "ComplianceReport",
    "ModelGovernance",
]

COMPLIANCE_CHECKS: Final = (
    "bias_detection",
    "fairness_assessment",
    "explainability_requirements",
    "data_privacy_compliance",
)
_IDENTIFIER_NAMES: Final = re.compile(
    r"(^|_)(e_?mail|phone|mobile|first_?name|last_?name|surname|full_?name|name|address|"
    r"street|post_?code|zip|ssn|passport|iban|customer_?id|customer_?no)($|_)",
    re.IGNORECASE,
)
_EMAIL: Final = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_PHONE: Final = re.compile(r"(?:\+|00)\d[\d ()-]{7,}\d|\b0\d{2,4}[ -]?\d{3,4}[ -]?\d{3,4}\b")
_TYPES: Final = (
    (SalesForecaster, "sales_forecast"),
    (CustomerSegmenter, "customer_segmentation"),
    (AnomalyDetector, "anomaly_detection"),
    (DemandPredictor, "demand_prediction"),
)


@dataclass(frozen=True)
class ApprovalRequest:
    """A request and the decisions on it so far."""

    id: str
    model_name: str
    model_version: str
    deployment_target: str
    business_justification: str
    risk_assessment: dict[str, Any]
    approvers: tuple[str, ...]
    status: str
    requested_by: str
    decisions: tuple[dict[str, Any], ...] = ()

    @property
    def pending(self) -> tuple[str, ...]:
        """The roles that have not approved yet."""
        done = {d["role"] for d in self.decisions if d["decision"] == "approved"}
        return tuple(r for r in self.approvers if r not in done)

    @property
    def refusals(self) -> str:
        """Who rejected or revoked it, for which role and why (``""`` if nobody did)."""
        return "; ".join(
            f"{d['decision']} by {d['approver']} for {d['role']}"
            + (f": {d['comment']}" if d["comment"] else "")
            for d in self.decisions
            if d["decision"] in ("rejected", "revoked")
        )


@dataclass(frozen=True)
class ComplianceCheck:
    """One compliance check's outcome: ``passed``, ``failed`` or ``skipped`` (with why)."""

    name: str
    status: str
    details: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ComplianceReport:
    """Every requested check's outcome for one model version."""

    model_name: str
    model_version: str | None
    checks: tuple[ComplianceCheck, ...]

    @property
    def status(self) -> str:
        """``failed`` if any check failed, else ``passed`` (skipped checks are listed)."""
        return "failed" if any(c.status == "failed" for c in self.checks) else "passed"

    @property
    def compliant(self) -> bool:
        """True when no check failed and none was skipped."""
        return all(c.status == "passed" for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe form."""
        return {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "status": self.status,
            "checks": [vars(c) for c in self.checks],
        }


@dataclass
class _Subject:
    name: str
    version: str | None
    estimator: Any
    model_type: str
    data: pd.DataFrame | None
    run_id: str | None
    evaluated: Any  # what ModelValidator takes: a TrainingResult or the estimator


class ModelGovernance:
    """Approvals, compliance checks and the audit log (see the module docstring).

    Args:
        settings: retailml settings (the platform database).
        db: An open platform database (default: the settings').
    """

    def __init__(self, settings: Settings | None = None, *, db: PlatformDB | None = None) -> None:
        self.settings = settings or get_settings()
        self._db = db

    @property
    def db(self) -> PlatformDB:
        """The platform database, opened and migrated on first use."""
        if self._db is None:
            self._db = PlatformDB.from_settings(self.settings)
        return self._db

    # --- approvals ----------------------------------------------------------------------------

    def request_approval(
        self,
        model_name: str,
        model_version: str,
        deployment_target: str,
        business_justification: str,
        risk_assessment: Mapping[str, Any] | None = None,
        approvers: Sequence[str] = (),
        *,
        requested_by: str | None = None,
    ) -> ApprovalRequest:
        """Open a request; every listed approver (role) must approve it.

        Raises:
            ConfigError: without approvers, with duplicate approvers or an empty justification.
        """
        roles = [str(a) for a in approvers]
        if not roles or len(set(roles)) != len(roles):
            raise ConfigError(
                problem(
                    "a non-empty list of distinct approvers (roles or names)",
                    repr(list(approvers)),
                    "e.g. approvers=['lead_data_scientist', 'ml_engineer']",
                    subject="approvers",
                )
            )
        if not str(business_justification).strip():
            raise ConfigError(
                problem("a business justification", "an empty one", "say why it should ship")
            )
        who = requested_by or current_actor()
        with self.db.session() as session:
            for open_request in session.scalars(
                select(ApprovalRequestRecord).where(
                    ApprovalRequestRecord.model_name == model_name,
                    ApprovalRequestRecord.model_version == model_version,
                    ApprovalRequestRecord.deployment_target == deployment_target,
                    ApprovalRequestRecord.status == "pending",
                )
            ):
                open_request.status = "superseded"
                open_request.decided_at = utcnow()
            record = ApprovalRequestRecord(
                id=new_id(),
                model_name=model_name,
                model_version=model_version,
                deployment_target=deployment_target,
                business_justification=str(business_justification),
                risk_assessment=dict(risk_assessment or {}),
                approvers=roles,
                status="pending",
                requested_by=who,
                created_at=utcnow(),
            )
            session.add(record)
            request_id = record.id
        append_audit(
            self.db,
            "approval.requested",
            version_subject(model_name, model_version),
            {"request": request_id, "target": deployment_target, "approvers": roles},
            actor=who,
        )
        return self.get_request(request_id)

    def approve(
        self, request_id: str, approver: str, role: str, comment: str = ""
    ) -> ApprovalRequest:
        """Record an approval for ``role``; approved once every listed role approved."""
        return self._decide(request_id, approver, role, comment, "approved")

    def reject(
        self, request_id: str, approver: str, role: str, comment: str = ""
    ) -> ApprovalRequest:
        """Record a rejection; the request is rejected."""
        return self._decide(request_id, approver, role, comment, "rejected")

    def revoke(self, request_id: str, approver: str, role: str, reason: str) -> ApprovalRequest:
        """Withdraw an approved request: the version no longer counts as approved.

        One of the request's listed roles may revoke it (whoever approved it or
        not), with a reason. From then on nothing makes the version serve the
        target on the strength of this request: deployments, rollouts,
        promotions, the registry's ``production`` alias and rollbacks to it are
        refused, naming who revoked it and why, until a new request is
        approved. A version already serving keeps serving: roll back or deploy
        another version to take it out.

        Raises:
            NotFoundError: for an unknown request id.
            StateError: when the request is not approved (pending or rejected
                requests are decided with :meth:`reject`; a revoked one stays so).
            ConfigError: for a role the request does not list, or an empty reason.
        """
        if not isinstance(reason, str) or not reason.strip():
            raise ConfigError(
                problem("a reason for revoking the approval", repr(reason), 'pass reason="..."')
            )
        with self.db.session() as session:
            record = _open_request(
                session,
                request_id,
                role,
                status="approved",
                wanted="an approved request to revoke",
                fix="reject a pending request instead (ModelGovernance.reject or "
                "`retailml governance approve REQUEST_ID --reject ...`)",
                verb="revoke",
            )
            now = utcnow()
            session.add(
                ApprovalDecisionRecord(
                    request_id=request_id,
                    approver=str(approver),
                    role=role,
                    decision="revoked",
                    comment=reason,
                    decided_at=now,
                )
            )
            record.status = "revoked"
            record.decided_at = now
            subject = version_subject(record.model_name, record.model_version)
        append_audit(
            self.db,
            "approval.revoked",
            subject,
            {"request": request_id, "role": role, "reason": reason},
            actor=str(approver),
        )
        return self.get_request(request_id)

    def revoked_request(
        self, model_name: str, model_version: str, deployment_target: str = "production"
    ) -> ApprovalRequest | None:
        """The newest revoked request for the version and target, if none approved covers it."""
        if self.approved_request(model_name, model_version, deployment_target) is not None:
            return None
        return next(
            (
                r
                for r in self.list_requests(model_name)
                if r.model_version == model_version
                and r.deployment_target == deployment_target
                and r.status == "revoked"
            ),
            None,
        )

    def _decide(
        self, request_id: str, approver: str, role: str, comment: str, decision: str
    ) -> ApprovalRequest:
        with self.db.session() as session:
            record = _open_request(
                session,
                request_id,
                role,
                status="pending",
                wanted="a pending request",
                fix="open a new request with request_approval",
                verb="decide",
            )
            decided = {
                d.role
                for d in session.scalars(
                    select(ApprovalDecisionRecord).where(
                        ApprovalDecisionRecord.request_id == request_id
                    )
                )
            }
            if role in decided:
                raise StateError(
                    problem(
                        f"one decision per role; {role!r} has decided",
                        "a second decision",
                        "each listed role decides once",
                        subject="approval",
                    )
                )
            session.add(
                ApprovalDecisionRecord(
                    request_id=request_id,
                    approver=str(approver),
                    role=role,
                    decision=decision,
                    comment=str(comment),
                    decided_at=utcnow(),
                )
            )
            if decision == "rejected":
                record.status = "rejected"
                record.decided_at = utcnow()
            elif decided | {role} >= set(record.approvers):
                record.status = "approved"
                record.decided_at = utcnow()
            subject = version_subject(record.model_name, record.model_version)
        append_audit(
            self.db,
            f"approval.{decision}",
            subject,
            {"request": request_id, "role": role, "comment": comment},
            actor=str(approver),
        )
        return self.get_request(request_id)

    def get_request(self, request_id: str) -> ApprovalRequest:
        """A request with its decisions.

        Raises:
            NotFoundError: for an unknown id.
        """
        with self.db.session() as session:
            record = session.get(ApprovalRequestRecord, request_id)
            if record is None:
                raise NotFoundError(
                    problem("an existing approval request id", repr(request_id), "list requests")
                )
            decisions = tuple(
                {
                    "approver": d.approver,
                    "role": d.role,
                    "decision": d.decision,
                    "comment": d.comment,
                    "decided_at": d.decided_at.isoformat(),
                }
                for d in session.scalars(
                    select(ApprovalDecisionRecord)
                    .where(ApprovalDecisionRecord.request_id == request_id)
                    .order_by(ApprovalDecisionRecord.id)
                )
            )
            return ApprovalRequest(
                id=record.id,
                model_name=record.model_name,
                model_version=record.model_version,
                deployment_target=record.deployment_target,
                business_justification=record.business_justification,
                risk_assessment=dict(record.risk_assessment),
                approvers=tuple(record.approvers),
                status=record.status,
                requested_by=record.requested_by,
                decisions=decisions,
            )

    def list_requests(self, model_name: str | None = None) -> list[ApprovalRequest]:
        """Requests, newest first."""
        with self.db.session() as session:
            query = select(ApprovalRequestRecord.id).order_by(
                ApprovalRequestRecord.created_at.desc()
            )
            if model_name is not None:
                query = query.where(ApprovalRequestRecord.model_name == model_name)
            ids = list(session.scalars(query))
        return [self.get_request(i) for i in ids]

    def is_approved(
        self, model_name: str, model_version: str, deployment_target: str = "production"
    ) -> bool:
        """True when an approved request covers this version and target."""
        with self.db.session() as session:
            return has_approved_request(session, model_name, model_version, deployment_target)

    def approved_request(
        self, model_name: str, model_version: str, deployment_target: str = "production"
    ) -> ApprovalRequest | None:
        """The newest approved request covering this version and target, or None."""
        with self.db.session() as session:
            found = session.scalars(
                select(ApprovalRequestRecord.id)
                .where(
                    ApprovalRequestRecord.model_name == model_name,
                    ApprovalRequestRecord.model_version == model_version,
                    ApprovalRequestRecord.deployment_target == deployment_target,
                    ApprovalRequestRecord.status == "approved",
                )
                .order_by(ApprovalRequestRecord.created_at.desc())
                .limit(1)
            ).first()
        return None if found is None else self.get_request(found)

    def require_approval(
        self, model_name: str, model_version: str, deployment_target: str = "production"
    ) -> ApprovalRequest:
        """Return the approved request covering this version and target, or raise.

        Raises:
            StateError: saying no request exists, or naming the newest request,
                its status, who rejected it and the roles still waiting to approve.
        """
        approved = self.approved_request(model_name, model_version, deployment_target)
        if approved is not None:
            return approved
        latest = next(
            (
                r
                for r in self.list_requests(model_name)
                if r.model_version == model_version and r.deployment_target == deployment_target
            ),
            None,
        )
        if latest is None:
            got = "no approval request"
        else:
            got = f"request {latest.id} is {latest.status}"
            if latest.refusals:
                got += f" ({latest.refusals})"
            if latest.pending:
                got += f", waiting for {', '.join(latest.pending)}"
        raise StateError(
            problem(
                f"an approved request to deploy {model_name} {model_version} to "
                f"{deployment_target}",
                got,
                "request approval (ModelGovernance.request_approval or `retailml governance "
                f"request --model {model_name} --version {model_version} --approver ROLE ... "
                "--justification ...`) and have every listed approver approve it "
                "(`retailml governance approve REQUEST_ID --role ROLE --approver NAME`)",
                subject="governance",
            )
        )

    # --- audit -------------------------------------------------------------------------------

    def record(self, action: str, subject: str, details: Mapping[str, Any] | None = None) -> None:
        """Append an entry to the audit log (deployments, rollbacks, deletions, settings)."""
        append_audit(self.db, action, subject, details)

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest audit entries, newest first."""
        with self.db.session() as session:
            return [
                {
                    "seq": e.seq,
                    "at": e.at.isoformat(),
                    "actor": e.actor,
                    "action": e.action,
                    "subject": e.subject,
                    "details": e.details,
                    "hash": e.hash,
                }
                for e in session.scalars(
                    select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(limit)
                )
            ]

    def verify_audit(self) -> AuditVerification:
        """Recompute the hash chain; the result names the first broken link."""
        return verify_audit(self.db)

    # --- compliance ------------------------------------------------------------------------------

    def run_compliance_checks(
        self,
        model: Any,
        checks: Sequence[str] = COMPLIANCE_CHECKS,
        *,
        data: pd.DataFrame | None = None,
        group_column: str | None = None,
        version: str | None = None,
    ) -> ComplianceReport:
        """Run the named checks on a model (see the module docstring).

        Args:
            model: A registered model's name, a TrainingResult or a fitted estimator.
            checks: Among :data:`COMPLIANCE_CHECKS`.
            data: Evaluation data (the model type's training shape, with the target).
            group_column: The column groups are compared by (default: the validator's).
            version: The registered version (default: production, else the newest).

        Raises:
            ConfigError: for an unknown check, listing the valid ones.
        """
        unknown = [c for c in checks if c not in COMPLIANCE_CHECKS]
        if unknown:
            raise ConfigError(
                problem(
                    f"checks among {list(COMPLIANCE_CHECKS)}",
                    f"unknown {unknown}",
                    "rename or drop them",
                    subject="compliance checks",
                )
            )
        subject = self._subject(model, data, version)
        outcomes = []
        for check in checks:
            if check in ("bias_detection", "fairness_assessment"):
                outcomes.append(self._fairness(check, subject, group_column))
            elif check == "explainability_requirements":
                outcomes.append(self._explainability(subject))
            else:
                outcomes.append(self._privacy(subject))
        report = ComplianceReport(subject.name, subject.version, tuple(outcomes))
        append_audit(
            self.db,
            "compliance.checked",
            f"{subject.name}@{subject.version or '-'}",
            {c.name: c.status for c in outcomes},
        )
        return report

    def _subject(self, model: Any, data: pd.DataFrame | None, version: str | None) -> _Subject:
        if isinstance(model, TrainingResult):
            own = model.history if model.history is not None else model.reference_data
            return _Subject(
                model.model_name,
                None,
                model.model,
                model.model_type,
                data if data is not None else own,
                model.run_id,
                model,
            )
        if isinstance(model, str):
            from retailml.registry.model_registry import ModelRegistry

            with ModelRegistry(self.settings) as registry:
                found = registry.get_model_version(model, version)
                loaded = registry.load_model(model, found.version)
            estimator = loaded.unwrap_python_model().model  # type: ignore[no-untyped-call]
            run_id = getattr(found, "run_id", None)
            return _Subject(
                model, found.version, estimator, _model_type(estimator), data, run_id, estimator
            )
        return _Subject(type(model).__name__, None, model, _model_type(model), data, None, model)

    def _fairness(self, check: str, subject: _Subject, group_column: str | None) -> ComplianceCheck:
        if subject.data is None:
            return ComplianceCheck(
                check, "skipped", "no evaluation data: pass data=... (with the target column)"
            )
        fairness = (
            ["group_error_disparity"]
            if subject.model_type in ("sales_forecast", "demand_prediction")
            else ["demographic_parity", "equalized_odds"]
        )
        config: dict[str, Any] = {
            "bias_detection": check == "bias_detection",
            "fairness_metrics": fairness if check == "fairness_assessment" else [],
        }
        if group_column:
            config["group_column"] = group_column
        if subject.model_type == "sales_forecast" and isinstance(subject.evaluated, TrainingResult):
            config["train_data"] = subject.data
        outcome = ModelValidator().validate_model(
            model=subject.evaluated, test_data=subject.data, validation_config=config
        )
        relevant = [c for c in outcome.checks if c.kind == "fairness"]
        measured = [c for c in relevant if c.passed is not None]
        evidence = {c.name: c.value for c in measured}
        if not measured:
            reasons = "; ".join(c.detail for c in relevant) or "nothing to measure"
            return ComplianceCheck(check, "skipped", reasons)
        failed = [c for c in measured if not c.passed]
        details = "; ".join(c.detail for c in (failed or measured))
        return ComplianceCheck(check, "failed" if failed else "passed", details, evidence)

    def _explainability(self, subject: _Subject) -> ComplianceCheck:
        name = "explainability_requirements"
        if subject.model_type == "sales_forecast":
            return ComplianceCheck(
                name,
                "skipped",
                "univariate forecasts have no input features to attribute; each series' "
                "model is recorded in series_summary_",
            )
        if subject.data is None:
            return ComplianceCheck(name, "skipped", "no evaluation data: pass data=...")
        importances = _permutation_importance(subject)
        if subject.run_id:
            import mlflow

            mlflow.MlflowClient().log_dict(
                subject.run_id,
                {"method": "permutation", "importances": importances},
                "explainability/permutation_importance.json",
            )
        top = ", ".join(f"{k} {v:.3f}" for k, v in list(importances.items())[:5])
        stored = " (stored with the MLflow run)" if subject.run_id else ""
        return ComplianceCheck(
            name, "passed", f"permutation importance{stored}: {top}", importances
        )

    def _privacy(self, subject: _Subject) -> ComplianceCheck:
        name = "data_privacy_compliance"
        features = [str(c) for c in getattr(subject.estimator, "feature_names_in_", [])]
        flagged = {
            c: "identifier-like feature name" for c in features if _IDENTIFIER_NAMES.search(c)
        }
        if subject.data is not None:
            used = [c for c in subject.data.columns if str(c) in features] or []
            for column in used:
                values = subject.data[column]
                if values.dtype == object:
                    sample = values.dropna().astype(str).head(2000)
                    if sample.str.contains(_EMAIL).any():
                        flagged[str(column)] = "e-mail addresses in values"
                    elif sample.str.contains(_PHONE).any():
                        flagged[str(column)] = "phone numbers in values"
        scanned = f"{len(features)} features scanned"
        if flagged:
            listed = "; ".join(f"{c}: {why}" for c, why in flagged.items())
            return ComplianceCheck(name, "failed", f"{scanned}; raw identifiers: {listed}", flagged)
        return ComplianceCheck(name, "passed", f"{scanned}; no raw identifiers found")


def _open_request(
    session: Session, request_id: str, role: str, *, status: str, wanted: str, fix: str, verb: str
) -> ApprovalRequestRecord:
    """The request ``role`` may act on now: it exists, has ``status`` and lists the role.

    Raises:
        NotFoundError: for an unknown id.
        StateError: when its status is another (``wanted`` and ``fix`` say what was expected).
        ConfigError: when the request does not list ``role`` (``verb``: what the role does).
    """
    record = session.get(ApprovalRequestRecord, request_id)
    if record is None:
        raise NotFoundError(
            problem("an existing approval request id", repr(request_id), "list requests")
        )
    if record.status != status:
        raise StateError(
            problem(wanted, f"request {request_id} is {record.status}", fix, subject="approval")
        )
    if role not in record.approvers:
        raise ConfigError(
            problem(
                f"a role among the request's approvers {record.approvers}",
                repr(role),
                f"{verb} for one of the listed roles",
                subject="approval",
            )
        )
    return record


def _model_type(estimator: Any) -> str:
    for kind, model_type in _TYPES:
        if isinstance(estimator, kind):
            return model_type
    raise ConfigError(
        problem(
            "a registered model name, a TrainingResult or a retailml estimator",
            type(estimator).__name__,
            "pass one of those",
            subject="model",
        )
    )


def _permutation_importance(subject: _Subject, repeats: int = 3) -> dict[str, float]:
    """Mean change of the model's output when each feature is shuffled, normalised to sum 1."""
    estimator = subject.estimator
    frame = subject.data
    assert frame is not None
    if subject.model_type in ("demand_prediction", "anomaly_detection"):
        # The model's own preparation: lags for demand, line features for anomalies.
        from retailml.training._tasks import make_task

        target = estimator.target if subject.model_type == "demand_prediction" else None
        task = (
            subject.evaluated.task()
            if isinstance(subject.evaluated, TrainingResult)
            else make_task(subject.model_type, target)
        )
        frame = task.prepare(frame)
    features = [str(c) for c in estimator.feature_names_in_ if str(c) in frame.columns]
    sample = frame.sample(min(len(frame), 2000), random_state=0).reset_index(drop=True)
    rng = np.random.default_rng(0)

    def output(data: pd.DataFrame) -> np.ndarray[Any, Any]:
        if subject.model_type == "anomaly_detection":
            return np.asarray(estimator.score_samples(data), dtype=np.float64)
        return np.asarray(estimator.predict(data), dtype=np.float64)

    base = output(sample)
    scores: dict[str, float] = {}
    for feature in features:
        changes = []
        for _ in range(repeats):
            shuffled = sample.copy()
            shuffled[feature] = rng.permutation(shuffled[feature].to_numpy())
            moved = output(shuffled)
            if subject.model_type == "customer_segmentation":
                changes.append(float(np.mean(moved != base)))
            else:
                changes.append(float(np.mean(np.abs(moved - base))))
        scores[feature] = float(np.mean(changes))
    total = sum(scores.values()) or 1.0
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    return {k: v / total for k, v in ranked}
