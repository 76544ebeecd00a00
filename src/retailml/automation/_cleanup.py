"""The model cleanup policy: plan what to delete and archive, then do it through the registry.

The guide's policy (``scripts/cleanup_models.py``):

* keep the latest ``keep`` versions of every model that does not serve
  production; of the older ones, delete those registered more than
  ``older_than`` ago;
* archive models not used for ``archive_unused``.

Nothing that serves is ever touched, whatever its age or rank: a version is
*protected* when it holds an alias (``production``, ``staging``,
``canary``), is deployed (``active``, or ``pending`` while its health checks
or its rollout run), takes part in a running rollout (either colour) or in a
running A/B test. A model is *used* at its latest registry load, prediction
served (the prediction log) or deployment change, and a model with a
protected version is in use, so it is never archived.

:func:`plan_cleanup` only reads; :func:`run_cleanup` plans, checks the
protections again right before each change, and changes the registry one
version at a time, so a version that started serving meanwhile is skipped,
not deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from sqlalchemy import func, select

from retailml.automation._durations import format_age, parse_age
from retailml.core.db import as_utc
from retailml.core.db_ab import ABTestRecord
from retailml.core.db_deploy import Deployment as DeploymentRow
from retailml.core.db_deploy import PredictionLogEntry
from retailml.core.db_deploy import Rollout as RolloutRow
from retailml.core.errors import ConfigError, RetailMLError, problem
from retailml.registry.model_registry import ModelRegistry, ModelVersion, RegisteredModel

logger = logging.getLogger(__name__)

#: Deployment statuses whose version is serving, or about to.
SERVING_STATUSES: Final = ("active", "pending")
_PAGE: Final = 100

Action = Literal["delete", "archive"]


@dataclass(frozen=True)
class CleanupPolicy:
    """What the cleanup keeps, deletes and archives.

    Attributes:
        keep: Newest versions of a non-production model never deleted.
        older_than: Older versions beyond ``keep`` are deleted once registered this long ago.
        archive_unused: Models not used for this long are archived.
    """

    keep: int = 5
    older_than: timedelta = timedelta(days=30)
    archive_unused: timedelta = timedelta(days=90)

    @classmethod
    def of(
        cls,
        keep: int = 5,
        older_than: str | timedelta = "30d",
        archive_unused: str | timedelta = "90d",
    ) -> CleanupPolicy:
        """A policy from CLI-style values (``"30d"``, ``"90d"``).

        Raises:
            ConfigError: for a negative ``keep`` or a malformed age.
        """
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 0:
            raise ConfigError(
                problem("an int >= 0", repr(keep), "pass e.g. keep=5", subject="keep")
            )
        return cls(
            keep=keep,
            older_than=parse_age(older_than, subject="older_than"),
            archive_unused=parse_age(archive_unused, subject="archive_unused"),
        )


@dataclass(frozen=True)
class CleanupAction:
    """One change the cleanup makes (or, in a dry run, would make).

    Attributes:
        action: ``delete`` (the version leaves MLflow's registry) or ``archive``.
        model_name: The model.
        version: Its semantic version.
        reason: Why the policy selects it.
        status: ``planned`` (dry run), ``done``, or ``skipped`` (it started
            serving, or the registry refused, between planning and the change).
        detail: Why it was skipped.
    """

    action: Action
    model_name: str
    version: str
    reason: str
    status: str = "planned"
    detail: str | None = None


@dataclass(frozen=True)
class ProtectedVersion:
    """A version the cleanup would select but never touches, and why."""

    model_name: str
    version: str
    reasons: tuple[str, ...]


@dataclass
class CleanupReport:
    """What a cleanup did or, with ``dry_run``, would do.

    Attributes:
        dry_run: True when nothing was changed.
        policy: The policy applied.
        now: The time ages were measured from.
        actions: Deletions and archivals, in the order made.
        protected: Versions of the policy's selection left alone because they serve.
        models: Models examined.
    """

    dry_run: bool
    policy: CleanupPolicy
    now: datetime
    actions: list[CleanupAction] = field(default_factory=list)
    protected: list[ProtectedVersion] = field(default_factory=list)
    models: int = 0

    @property
    def deleted(self) -> list[CleanupAction]:
        """The deletions (planned in a dry run)."""
        return [a for a in self.actions if a.action == "delete" and a.status != "skipped"]

    @property
    def archived(self) -> list[CleanupAction]:
        """The archivals (planned in a dry run)."""
        return [a for a in self.actions if a.action == "archive" and a.status != "skipped"]

    @property
    def skipped(self) -> list[CleanupAction]:
        """Changes not made because the version started serving or the registry refused."""
        return [a for a in self.actions if a.status == "skipped"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (ages in seconds)."""
        return {
            "dry_run": self.dry_run,
            "now": self.now.isoformat(),
            "policy": {
                "keep": self.policy.keep,
                "older_than_s": self.policy.older_than.total_seconds(),
                "archive_unused_s": self.policy.archive_unused.total_seconds(),
            },
            "models": self.models,
            "actions": [asdict(a) for a in self.actions],
            "protected": [asdict(p) for p in self.protected],
        }

    def summary(self) -> str:
        """One line: counts of what was (or would be) done."""
        verb = "would delete" if self.dry_run else "deleted"
        archive = "would archive" if self.dry_run else "archived"
        return (
            f"{self.models} models: {verb} {len(self.deleted)} versions, {archive} "
            f"{len(self.archived)}, left {len(self.protected)} serving versions alone"
            + (f", skipped {len(self.skipped)}" if self.skipped else "")
        )


def protected_versions(registry: ModelRegistry) -> dict[tuple[str, str], list[str]]:
    """``(model, version) -> reasons`` for every version that serves or is about to.

    Reads registry aliases, serving deployments, running rollouts and running
    A/B tests of the platform database.
    """
    reasons: dict[tuple[str, str], list[str]] = {}

    def add(model: str, version: str, reason: str) -> None:
        reasons.setdefault((model, version), []).append(reason)

    for model in registry.list_models():
        for alias, version in model.aliases.items():
            add(model.name, version, f"holds the {alias!r} alias")
    with registry.db.session() as session:
        for row in session.scalars(
            select(DeploymentRow).where(DeploymentRow.status.in_(SERVING_STATUSES))
        ):
            add(row.model_name, row.version, f"{row.status} deployment to {row.environment}")
        for rollout in session.scalars(select(RolloutRow).where(RolloutRow.state == "running")):
            where = f"running {rollout.strategy} rollout in {rollout.environment}"
            add(rollout.model_name, rollout.current_version, f"{where} (blue)")
            add(rollout.model_name, rollout.new_version, f"{where} (green)")
        for test in session.scalars(select(ABTestRecord).where(ABTestRecord.status == "running")):
            for arm in test.arms:
                add(
                    str(arm.get("model_name")),
                    str(arm.get("model_version")),
                    f"arm {arm.get('arm')!r} of running A/B test {test.name!r}",
                )
    return reasons


def last_use(registry: ModelRegistry, model: RegisteredModel) -> tuple[datetime, str]:
    """When a model was last used, and how: a registry load, a served prediction or a deployment.

    The registry counts a registration as a use, so a new model is never idle.
    """
    uses = [(as_utc(model.last_used), "registry load or registration")]
    with registry.db.session() as session:
        served = session.scalar(
            select(func.max(PredictionLogEntry.created_at)).where(
                PredictionLogEntry.model_name == model.name
            )
        )
        deployed = session.scalar(
            select(func.max(DeploymentRow.updated_at)).where(DeploymentRow.model_name == model.name)
        )
    if served is not None:
        uses.append((as_utc(served), "served prediction"))
    if deployed is not None:
        uses.append((as_utc(deployed), "deployment change"))
    return max(uses, key=lambda use: use[0])


def _all_versions(registry: ModelRegistry, name: str) -> list[ModelVersion]:
    versions: list[ModelVersion] = []
    while True:
        page = registry.get_model_versions(name, limit=_PAGE, offset=len(versions))
        versions.extend(page)
        if len(page) < _PAGE:
            return versions


def plan_cleanup(
    registry: ModelRegistry,
    policy: CleanupPolicy | None = None,
    *,
    now: datetime | None = None,
) -> CleanupReport:
    """What :func:`run_cleanup` would do now; changes nothing.

    Args:
        registry: The model registry.
        policy: The policy (default: keep 5, delete after 30 days, archive after 90 idle days).
        now: The time ages are measured from (default the current time).
    """
    policy = policy or CleanupPolicy()
    now = as_utc(now) if now is not None else datetime.now(UTC)
    report = CleanupReport(dry_run=True, policy=policy, now=now)
    protected = protected_versions(registry)
    chosen: dict[tuple[str, str], ProtectedVersion] = {}

    def spare(name: str, version: str) -> bool:
        reasons = protected.get((name, version))
        if reasons:
            chosen[(name, version)] = ProtectedVersion(name, version, tuple(reasons))
        return bool(reasons)

    models = registry.list_models()
    report.models = len(models)
    for model in models:
        versions = _all_versions(registry, model.name)
        deleted: set[str] = set()
        if model.environment != "production":
            for version in versions[policy.keep :]:
                age = now - as_utc(version.created_at)
                if age <= policy.older_than or spare(model.name, version.version):
                    continue
                deleted.add(version.version)
                report.actions.append(
                    CleanupAction(
                        "delete",
                        model.name,
                        version.version,
                        f"beyond the newest {policy.keep} of a model not in production, "
                        f"registered {format_age(age)} ago",
                    )
                )
        used_at, how = last_use(registry, model)
        idle = now - used_at
        in_use = any((model.name, v.version) in protected for v in versions)
        if idle <= policy.archive_unused or in_use:
            continue
        for version in versions:
            if version.status != "active" or version.version in deleted:
                continue
            if spare(model.name, version.version):
                continue
            report.actions.append(
                CleanupAction(
                    "archive",
                    model.name,
                    version.version,
                    f"model unused for {format_age(idle)} (last {how} {used_at:%Y-%m-%d})",
                )
            )
    report.protected = sorted(chosen.values(), key=lambda p: (p.model_name, p.version))
    return report


def run_cleanup(
    registry: ModelRegistry,
    policy: CleanupPolicy | None = None,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> CleanupReport:
    """Apply the cleanup policy through the registry (or, with ``dry_run``, only plan it).

    Each change re-checks that the version does not serve right before it is
    made; one that started serving, or that the registry refuses, is reported
    as ``skipped`` and the cleanup goes on.

    Returns:
        The :class:`CleanupReport` of what was done.
    """
    report = plan_cleanup(registry, policy, now=now)
    if dry_run:
        return report
    report.dry_run = False
    report.actions = list(_apply(registry, report.actions))
    return report


def _apply(registry: ModelRegistry, actions: Iterable[CleanupAction]) -> Iterable[CleanupAction]:
    protected: dict[tuple[str, str], list[str]] = {}
    model: str | None = None
    for action in actions:
        if action.model_name != model:
            # Read again before each model's changes: a deployment may have started.
            model, protected = action.model_name, protected_versions(registry)
        serving = protected.get((action.model_name, action.version))
        if serving:
            yield _with(action, "skipped", "; ".join(serving))
            continue
        try:
            if action.action == "delete":
                registry.delete_model_version(action.model_name, action.version)
            else:
                registry.archive_model(action.model_name, action.version)
        except RetailMLError as exc:
            logger.warning(
                "cleanup skipped %s of %s %s: %s",
                action.action,
                action.model_name,
                action.version,
                exc,
            )
            yield _with(action, "skipped", str(exc))
            continue
        logger.info("cleanup: %s %s %s", action.action, action.model_name, action.version)
        yield _with(action, "done", None)


def _with(action: CleanupAction, status: str, detail: str | None) -> CleanupAction:
    return CleanupAction(
        action.action, action.model_name, action.version, action.reason, status, detail
    )
