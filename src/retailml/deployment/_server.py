"""ModelServer: health-checked deployments, blue-green rollouts with automatic rollback, rollback.

State lives in the platform database (``deployments``, ``rollouts``,
``prediction_log``; see :mod:`retailml.core.db_deploy`) and in the registry's
aliases (``staging``, ``production``, ``canary``), so any process (a
restarted service, the CLI, a second instance) sees and continues the same
deployments and rollouts.

Deployment rows move through these statuses:

* ``pending``: created; health checks running, or (the green version of a
  rollout) taking its share of traffic until the rollout is decided;
* ``failed``: health checks failed; it never took traffic;
* ``active``: the version the environment serves (at most one per model);
* ``superseded``: a later deployment (or promotion) replaced it;
* ``rolled_back``: removed by a rollback (manual, or automatic at a threshold).

See :mod:`retailml.deployment._rollout` for how a rollout is judged.

Governance
----------
Nothing takes production traffic without an approved request
(:meth:`ModelGovernance.require_approval
<retailml.governance.model_governance.ModelGovernance.require_approval>`):
:meth:`ModelServer.deploy_model`, :meth:`ModelServer.blue_green_deploy` (and
so canary rollouts and :meth:`ModelServer.promote`, which use them) refuse an
unapproved version in ``production`` with a :class:`StateError` naming the
request's status and the roles still to approve. Staging needs no approval.
No setting disables the check. A rollback is allowed without a new request:
it restores a version that served production before, so it was approved
then (or predates the check).

Every deployment (and refusal), rollout start and end, promotion and
rollback is appended to the hash-chained audit log
(:func:`retailml.core.audit.append_audit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import getpass
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Final

from sqlalchemy import select, update

from retailml.core.audit import append_audit, version_subject
from retailml.core.db import PlatformDB, as_utc, new_id, utcnow
from retailml.core.db_deploy import Deployment as DeploymentRow
from retailml.core.db_deploy import PredictionLogEntry
from retailml.core.db_deploy import Rollout as RolloutRow
from retailml.core.errors import ConfigError, NotFoundError, StateError, problem
from retailml.core.settings import Settings, get_settings
from retailml.deployment._rollout import (
    DEFAULT_MIN_REQUESTS,
    DEFAULT_WINDOW_S,
    Decision,
    arm_stats,
    decide,
    parse_split,
    parse_thresholds,
    performance_drop,
)
from retailml.governance.model_governance import ModelGovernance
from retailml.registry.model_registry import ModelRegistry

logger = logging.getLogger(__name__)

ENVIRONMENTS: Final = ("staging", "production")
#: Keys of a deployment config (the guide's ``deployment_config``).
CONFIG_KEYS: Final = ("model_name", "model_version", "replicas", "resources", "auto_scaling")
RESOURCE_KEYS: Final = ("cpu", "memory")
AUTO_SCALING_KEYS: Final = ("min_replicas", "max_replicas", "target_cpu")
#: Kubernetes quantities: CPU in cores or millicores, memory in bytes with an optional suffix.
_CPU: Final = re.compile(r"^(?:\d+m|\d+(?:\.\d{1,3})?)$")
_MEMORY: Final = re.compile(r"^\d+(?:\.\d+)?(?:Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_GUIDE_CONFIG: Final = (
    'e.g. {"model_name": "sales_forecast_prophet", "model_version": "1.2.0", "replicas": 2, '
    '"resources": {"cpu": "1000m", "memory": "2Gi"}, '
    '"auto_scaling": {"min_replicas": 1, "max_replicas": 5, "target_cpu": 70}}'
)


# --- results ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Deployment:
    """A model version deployed to an environment (one ``deployments`` row).

    Attributes:
        id: The deployment id.
        model_name: The registered model.
        version: Its semantic version.
        environment: ``staging`` or ``production``.
        status: ``pending``, ``failed``, ``active``, ``superseded`` or ``rolled_back``.
        replicas: Worker processes of the service (pods on Kubernetes).
        config: The checked deployment config (plus ``health_checks`` and ``monitoring``).
        health: The health checks: ``passed``, ``checks`` (name, ok, detail, ms) and ``reason``.
        created_by: Who deployed it (or restored it, for a rollback).
        reason: Why it failed, was rolled back or was restored.
        created_at: When it was created.
        updated_at: When its status last changed.
    """

    id: str
    model_name: str
    version: str
    environment: str
    status: str
    replicas: int
    config: dict[str, Any]
    health: dict[str, Any]
    created_by: str
    reason: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def active(self) -> bool:
        """Whether it is the version the environment serves."""
        return self.status == "active"

    @classmethod
    def of(cls, row: DeploymentRow) -> Deployment:
        return cls(
            id=row.id,
            model_name=row.model_name,
            version=row.version,
            environment=row.environment,
            status=row.status,
            replicas=row.replicas,
            config=dict(row.config),
            health=dict(row.health or {}),
            created_by=row.created_by,
            reason=row.reason,
            created_at=as_utc(row.created_at),
            updated_at=as_utc(row.updated_at),
        )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["created_at"] = self.created_at.isoformat()
        data["updated_at"] = self.updated_at.isoformat()
        return data


@dataclasses.dataclass(frozen=True)
class Rollout:
    """A blue-green (or canary) move from ``current_version`` (blue) to ``new_version`` (green).

    Attributes:
        state: ``running``, ``promoted`` or ``rolled_back``.
        traffic_split: ``{"blue": 90.0, "green": 10.0}`` while running.
        rollback_threshold: Limits, with ``window_seconds`` and ``min_requests``.
        observed: The last evaluation: per-arm statistics (``blue``, ``green``),
            ``performance`` values recorded per arm, ``performance_drop``,
            ``decision`` and ``evaluated_at``.
        reason: Why it was promoted or rolled back.
    """

    id: str
    model_name: str
    environment: str
    strategy: str
    current_version: str
    new_version: str
    traffic_split: dict[str, float]
    rollback_threshold: dict[str, float]
    healthy_window_s: float
    state: str
    observed: dict[str, Any]
    reason: str | None
    started_at: datetime
    ended_at: datetime | None

    @property
    def running(self) -> bool:
        return self.state == "running"

    @classmethod
    def of(cls, row: RolloutRow) -> Rollout:
        return cls(
            id=row.id,
            model_name=row.model_name,
            environment=row.environment,
            strategy=row.strategy,
            current_version=row.current_version,
            new_version=row.new_version,
            traffic_split=dict(row.traffic_split),
            rollback_threshold=dict(row.rollback_threshold),
            healthy_window_s=row.healthy_window_s,
            state=row.state,
            observed=dict(row.observed or {}),
            reason=row.reason,
            started_at=as_utc(row.started_at),
            ended_at=as_utc(row.ended_at) if row.ended_at else None,
        )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["started_at"] = self.started_at.isoformat()
        data["ended_at"] = self.ended_at.isoformat() if self.ended_at else None
        return data


@dataclasses.dataclass(frozen=True)
class RollbackResult:
    """What ``rollback`` did.

    Attributes:
        changed: False when the last action on the model was already a
            rollback (the call is then a no-op that reports the state).
        action: ``restored_previous`` (the previous production version serves
            again), ``rollout_rolled_back`` (a running rollout was stopped; the
            current version never stopped serving) or ``none``.
        active_version: The version the environment serves now.
        rolled_back_version: The version taken out of service.
    """

    model_name: str
    environment: str
    changed: bool
    action: str
    active_version: str
    rolled_back_version: str | None
    actor: str
    reason: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Alert:
    """An alert raised by a deployment event (an automatic rollback, a failed deploy)."""

    severity: str
    title: str
    message: str
    model_name: str
    environment: str
    rollout_id: str | None
    created_at: datetime


AlertHook = Callable[[Alert], object]


# --- config -----------------------------------------------------------------------------------


def _config_error(expected: str, got: str, subject: str, fix: str = _GUIDE_CONFIG) -> ConfigError:
    return ConfigError(problem(expected, got, f"pass {fix}", subject=subject))


def _int(value: object, least: int, subject: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise _config_error(f"a whole number >= {least}", repr(value), subject)
    return value


def _keys(value: object, valid: tuple[str, ...], subject: str, required: bool) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _config_error(f"a mapping with keys {list(valid)}", repr(value), subject)
    unknown = sorted(str(key) for key in set(value) - set(valid))
    if unknown:
        raise _config_error(f"keys among {list(valid)}", f"unknown {unknown}", subject)
    missing = [key for key in valid if key not in value] if required else []
    if missing:
        raise _config_error(f"the keys {list(valid)}", f"no {missing}", subject)
    return dict(value)


def parse_deployment_config(config: object) -> dict[str, Any]:
    """Check a deployment config and return it with defaults (``replicas`` 1).

    Raises:
        ConfigError: for unknown keys (listing the valid ones), a missing model
            name or version, a bad replica count, Kubernetes quantity or
            auto-scaling range.
    """
    cfg = _keys(config, CONFIG_KEYS, "deployment config", required=False)
    for key in ("model_name", "model_version"):
        if not isinstance(cfg.get(key), str) or not cfg[key]:
            raise _config_error("a non-empty string", repr(cfg.get(key)), f"config[{key!r}]")
    cfg["replicas"] = _int(cfg.get("replicas", 1), 1, "config['replicas']")
    if cfg.get("resources") is not None:
        resources = _keys(cfg["resources"], RESOURCE_KEYS, "config['resources']", required=False)
        for key, pattern, example in (
            ("cpu", _CPU, "'1000m' or '1.5'"),
            ("memory", _MEMORY, "'2Gi'"),
        ):
            if key in resources:
                text = str(resources[key])
                if not pattern.fullmatch(text) or float(re.sub(r"[^\d.]", "", text)) <= 0:
                    raise _config_error(
                        f"a positive Kubernetes quantity such as {example}",
                        repr(resources[key]),
                        f"config['resources'][{key!r}]",
                        fix=f"e.g. {example}",
                    )
                resources[key] = text
        cfg["resources"] = resources
    else:
        cfg.pop("resources", None)
    if cfg.get("auto_scaling") is not None:
        subject = "config['auto_scaling']"
        scaling = _keys(cfg["auto_scaling"], AUTO_SCALING_KEYS, subject, required=True)
        low = _int(scaling["min_replicas"], 1, f"{subject}['min_replicas']")
        high = _int(scaling["max_replicas"], 1, f"{subject}['max_replicas']")
        target = _int(scaling["target_cpu"], 1, f"{subject}['target_cpu']")
        if high < low or target > 100:
            raise _config_error(
                "min_replicas <= max_replicas and target_cpu a percentage 1..100",
                f"min_replicas={low}, max_replicas={high}, target_cpu={target}",
                subject,
            )
        if not low <= cfg["replicas"] <= high:
            raise _config_error(
                f"replicas within auto_scaling's {low}..{high}",
                repr(cfg["replicas"]),
                "config['replicas']",
            )
        cfg["auto_scaling"] = scaling
    else:
        cfg.pop("auto_scaling", None)
    return cfg


def current_user() -> str:
    """The operating-system user (who deployed or rolled back, by default)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# --- the server -------------------------------------------------------------------------------


class ModelServer:
    """Deploy model versions to one environment and move traffic between them.

    Args:
        environment: ``staging`` or ``production``.
        settings: retailml settings (platform database, MLflow, workspace);
            default the process settings.
        registry: The model registry to use (default one on ``settings``).
        alerts: Callables given every :class:`Alert` (besides the ERROR log line).
        min_requests: Green requests needed before a rollout's error rate and
            latency are judged (a rollback_threshold ``min_requests`` overrides it).
    """

    def __init__(
        self,
        environment: str = "staging",
        settings: Settings | None = None,
        *,
        registry: ModelRegistry | None = None,
        alerts: list[AlertHook] | None = None,
        min_requests: int = DEFAULT_MIN_REQUESTS,
    ) -> None:
        if environment not in ENVIRONMENTS:
            raise ConfigError(
                problem(
                    f"an environment among {list(ENVIRONMENTS)}",
                    repr(environment),
                    'pass environment="staging" or "production"',
                    subject="ModelServer",
                )
            )
        self.environment = environment
        self.settings = settings or (registry.settings if registry else get_settings())
        self._registry = registry
        self._owns_registry = registry is None
        #: Alert hooks: each is called with every :class:`Alert`.
        self.alerts: list[AlertHook] = list(alerts or [])
        self.min_requests = _int(min_requests, 1, "min_requests")

    def __repr__(self) -> str:
        return f"ModelServer(environment={self.environment!r})"

    def __enter__(self) -> ModelServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the database connections (of a registry this server created)."""
        if self._registry is not None and self._owns_registry:
            self._registry.close()
            self._registry = None

    @property
    def registry(self) -> ModelRegistry:
        """The model registry (aliases, versions, digest-checked loading)."""
        if self._registry is None:
            self._registry = ModelRegistry(self.settings)
        return self._registry

    @property
    def db(self) -> PlatformDB:
        """The platform database."""
        return self.registry.db

    # --- governance hook ----------------------------------------------------------------------

    def _governance(self) -> ModelGovernance:
        return ModelGovernance(self.settings, db=self.db)

    def _check_approval(self, model_name: str, version: str) -> bool:
        """Whether the version may take this environment's traffic.

        Production needs an approved request for the version (every listed
        approver approved); staging needs none.
        """
        if self.environment != "production":
            return True
        return self._governance().is_approved(model_name, version, "production")

    def _require_approval(
        self, model_name: str, version: str, *, action: str, actor: str | None
    ) -> str | None:
        """The approved request's id (None in staging); refuse (and audit) without one.

        Raises:
            StateError: naming the request's status and the roles still to approve.
        """
        if self.environment != "production":
            return None
        try:
            return self._governance().require_approval(model_name, version, "production").id
        except StateError as exc:
            self._audit(
                "deployment.refused",
                model_name,
                version,
                {"attempt": action, "why": str(exc)},
                actor,
            )
            raise

    def _refuse_revoked(self, model_name: str, version: str, actor: str | None) -> None:
        """Refuse (and audit) restoring a production version whose approval was revoked.

        A rollback needs no new approval, since the version it restores was
        approved when it served; a revocation since then withdraws that.
        """
        if self.environment != "production":
            return
        revoked = self._governance().revoked_request(model_name, version, "production")
        if revoked is None:
            return
        error = StateError(
            problem(
                f"an earlier production version of {model_name!r} that is still approved",
                f"{version!r}, whose approval request {revoked.id} was {revoked.refusals}",
                f"deploy an approved version explicitly, or have {version} approved again",
                subject="rollback",
            )
        )
        self._audit(
            "deployment.refused",
            model_name,
            version,
            {"attempt": "rollback", "why": str(error)},
            actor,
        )
        raise error

    def _audit(
        self,
        action: str,
        model_name: str,
        version: str,
        details: Mapping[str, Any],
        actor: str | None = None,
    ) -> None:
        append_audit(
            self.db,
            action,
            version_subject(model_name, version),
            {"environment": self.environment, **details},
            actor=actor,
        )

    # --- reading ------------------------------------------------------------------------------

    def get_deployment(self, deployment_id: str) -> Deployment:
        """One deployment by id.

        Raises:
            NotFoundError: for an unknown id.
        """
        with self.db.session() as session:
            row = session.get(DeploymentRow, deployment_id)
            if row is None:
                raise NotFoundError(
                    problem(
                        "a deployment id", repr(deployment_id), "list them", subject="deployment"
                    )
                )
            return Deployment.of(row)

    def list_deployments(self, model_name: str | None = None) -> list[Deployment]:
        """This environment's deployments (of one model), newest first."""
        query = select(DeploymentRow).where(DeploymentRow.environment == self.environment)
        if model_name is not None:
            query = query.where(DeploymentRow.model_name == model_name)
        with self.db.session() as session:
            rows = session.scalars(query.order_by(DeploymentRow.created_at.desc()))
            return [Deployment.of(row) for row in rows]

    def active_deployment(self, model_name: str) -> Deployment | None:
        """The deployment the environment serves for a model, or None."""
        with self.db.session() as session:
            row = session.scalars(
                select(DeploymentRow)
                .where(
                    DeploymentRow.model_name == model_name,
                    DeploymentRow.environment == self.environment,
                    DeploymentRow.status == "active",
                )
                .order_by(DeploymentRow.updated_at.desc())
                .limit(1)
            ).first()
            return Deployment.of(row) if row else None

    def get_rollout(self, rollout_id: str) -> Rollout:
        """One rollout by id.

        Raises:
            NotFoundError: for an unknown id.
        """
        with self.db.session() as session:
            row = session.get(RolloutRow, rollout_id)
            if row is None:
                raise NotFoundError(
                    problem("a rollout id", repr(rollout_id), "list them", subject="rollout")
                )
            return Rollout.of(row)

    def list_rollouts(
        self, state: str | None = None, model_name: str | None = None
    ) -> list[Rollout]:
        """This environment's rollouts, newest first."""
        query = select(RolloutRow).where(RolloutRow.environment == self.environment)
        if state is not None:
            query = query.where(RolloutRow.state == state)
        if model_name is not None:
            query = query.where(RolloutRow.model_name == model_name)
        with self.db.session() as session:
            rows = session.scalars(query.order_by(RolloutRow.started_at.desc()))
            return [Rollout.of(row) for row in rows]

    def running_rollout(self, model_name: str) -> Rollout | None:
        """The model's running rollout in this environment, or None."""
        running = self.list_rollouts("running", model_name)
        return running[0] if running else None

    # --- direct deployment --------------------------------------------------------------------

    async def deploy_model(
        self,
        config: Mapping[str, Any],
        health_checks: bool = True,
        monitoring: bool = True,
        *,
        actor: str | None = None,
    ) -> Deployment:
        """Deploy a registered version to this environment (the guide's staging deployment).

        The version is health-checked first (in a worker thread): its artifact
        is loaded through the registry (SHA-256 digest verified) and predicts
        its saved input example. A version that fails never takes traffic: the
        result has ``status="failed"`` and the reason. A healthy one becomes
        the environment's ``active`` deployment (the previous one is
        ``superseded``) and the registry alias named after the environment
        points at it.

        Args:
            config: ``model_name``, ``model_version``, ``replicas`` (worker
                processes; pods on Kubernetes), optional ``resources``
                ``{cpu, memory}`` and ``auto_scaling`` ``{min_replicas,
                max_replicas, target_cpu}`` (used by the Kubernetes manifests).
            health_checks: Run the checks (False: deploy unchecked, recorded so).
            monitoring: Record that the prediction service logs this
                deployment's predictions for monitoring.
            actor: Who deploys (default the operating-system user).

        Raises:
            ConfigError: for an invalid config.
            NotFoundError: for an unregistered model or version.
            StateError: while a rollout of the model runs in this environment, or
                in production without an approved governance request for the
                version (the message names the roles still to approve).
        """
        return await asyncio.to_thread(
            self.deploy_model_sync, config, health_checks, monitoring, actor=actor
        )

    def deploy_model_sync(
        self,
        config: Mapping[str, Any],
        health_checks: bool = True,
        monitoring: bool = True,
        *,
        actor: str | None = None,
    ) -> Deployment:
        """:meth:`deploy_model` without an event loop."""
        cfg = parse_deployment_config(config)
        name = cfg["model_name"]
        version = self.registry.get_model_version(name, cfg["model_version"]).version
        cfg["model_version"] = version
        running = self.running_rollout(name)
        if running is not None:
            raise StateError(
                problem(
                    f"no rollout of {name!r} running in {self.environment}",
                    f"rollout {running.id} ({running.current_version} -> {running.new_version})",
                    f"wait for it to finish, or run `retailml rollback --model {name} "
                    f"--environment {self.environment}`",
                    subject=f"model {name!r}",
                )
            )
        approval = self._require_approval(name, version, action="deploy", actor=actor)
        row = self._insert_deployment(
            cfg,
            version,
            actor,
            health_checks=health_checks,
            monitoring=monitoring,
            extra={"approval_request": approval} if approval else None,
        )
        health = self.health_check(name, version) if health_checks else _SKIPPED
        outcome = self._activate(row.id, health) if health["passed"] else self._fail(row.id, health)
        self._audit(
            "deployment.activated" if outcome.active else "deployment.failed",
            name,
            version,
            {
                "deployment": outcome.id,
                "replicas": outcome.replicas,
                "health_checks": health_checks,
                "approval_request": approval,
                "reason": outcome.reason,
            },
            outcome.created_by,
        )
        return outcome

    def _insert_deployment(
        self,
        cfg: Mapping[str, Any],
        version: str,
        actor: str | None,
        *,
        health_checks: bool,
        monitoring: bool,
        status: str = "pending",
        extra: Mapping[str, Any] | None = None,
        reason: str | None = None,
    ) -> DeploymentRow:
        now = utcnow()
        row = DeploymentRow(
            id=new_id(),
            model_name=cfg["model_name"],
            environment=self.environment,
            version=version,
            status=status,
            replicas=int(cfg.get("replicas", 1)),
            config={
                **cfg,
                "model_version": version,
                "health_checks": health_checks,
                "monitoring": monitoring,
                **(extra or {}),
            },
            health={},
            created_by=actor or current_user(),
            reason=reason,
            created_at=now,
            updated_at=now,
        )
        with self.db.session() as session:
            session.add(row)
        return row

    def health_check(self, model_name: str, version: str) -> dict[str, Any]:
        """Load the version (digest verified) and predict its saved input example.

        Checks, in order, stopping at the first failure: ``artifact`` (a local
        copy whose SHA-256 digest matches the registered one), ``load`` (as an
        MLflow pyfunc model), ``input_example`` (the example saved with the
        model) and ``smoke_prediction`` (a non-empty prediction on it). A
        model saved without an input example (``TrainingResult.save``
        directories) cannot be smoke-tested: that check is recorded
        ``skipped`` and the others decide; models registered from a training
        run carry one.

        Returns:
            ``{"passed": bool, "checks": [{"name", "ok", "detail", "ms"}], "reason": str|None}``.
        """
        checks: list[dict[str, Any]] = []
        state: dict[str, Any] = {}

        def step(name: str, action: Callable[[], str]) -> bool:
            started = time.perf_counter()
            skipped = False
            try:
                detail, ok = action(), True
            except _CheckSkippedError as exc:
                detail, ok, skipped = f"skipped: {exc}", True, True
            except Exception as exc:  # a model may raise anything: it fails the check
                detail, ok = f"{type(exc).__name__}: {exc}", False
            checks.append(
                {
                    "name": name,
                    "ok": ok,
                    "skipped": skipped,
                    "detail": detail,
                    "ms": round((time.perf_counter() - started) * 1000, 1),
                }
            )
            return ok

        def artifact() -> str:
            state["path"] = self.registry.download_model(model_name, version)
            return "artifact digest matches the registered SHA-256"

        def load() -> str:
            state["model"] = self.registry.load_model(model_name, version)
            return "loaded as an MLflow pyfunc model"

        def example() -> str:
            value = state["model"].metadata.load_input_example(str(state["path"]))
            state["example"] = value
            if value is None:
                return (
                    "none saved with the model: the smoke prediction is skipped "
                    "(log models with input_example=..., as training runs do)"
                )
            return f"input example of {len(value)} row(s)"

        def predict() -> str:
            if state["example"] is None:
                raise _CheckSkippedError("no input example to predict")
            output = state["model"].predict(state["example"])
            rows = len(output) if hasattr(output, "__len__") else 1
            if rows == 0:
                raise ValueError("the prediction on the input example is empty")
            return f"predicted {rows} row(s)"

        for name, action in (
            ("artifact", artifact),
            ("load", load),
            ("input_example", example),
            ("smoke_prediction", predict),
        ):
            if not step(name, action):
                break
        failed = next((check for check in checks if not check["ok"]), None)
        return {
            "passed": failed is None,
            "checks": checks,
            "reason": f"{failed['name']}: {failed['detail']}" if failed else None,
        }

    def _fail(self, deployment_id: str, health: dict[str, Any]) -> Deployment:
        reason = f"health checks failed ({health['reason']}); it takes no traffic"
        with self.db.session() as session:
            row = session.get(DeploymentRow, deployment_id)
            assert row is not None
            row.status, row.health, row.reason, row.updated_at = "failed", health, reason, utcnow()
            failed = Deployment.of(row)
        self._alert(
            "warning",
            f"deployment of {failed.model_name} {failed.version} to {self.environment} failed",
            reason,
            failed.model_name,
        )
        return failed

    def _activate(self, deployment_id: str, health: dict[str, Any]) -> Deployment:
        now = utcnow()
        with self.db.session() as session:
            row = session.get(DeploymentRow, deployment_id)
            assert row is not None
            session.execute(
                update(DeploymentRow)
                .where(
                    DeploymentRow.model_name == row.model_name,
                    DeploymentRow.environment == self.environment,
                    DeploymentRow.status == "active",
                    DeploymentRow.id != row.id,
                )
                .values(status="superseded", updated_at=now)
            )
            row.status, row.health, row.updated_at = "active", health, now
            active = Deployment.of(row)
        self.registry.set_alias(active.model_name, active.version, self.environment)
        logger.info(
            "deployed %s %s to %s (%d replicas)",
            active.model_name,
            active.version,
            self.environment,
            active.replicas,
        )
        return active

    # --- blue-green ---------------------------------------------------------------------------

    async def blue_green_deploy(
        self,
        model_name: str,
        new_version: str,
        current_version: str,
        traffic_split: Mapping[str, float] | None = None,
        rollback_threshold: Mapping[str, float] | None = None,
        *,
        strategy: str = "blue_green",
        health_checks: bool = True,
        actor: str | None = None,
    ) -> Rollout:
        """Start moving traffic from ``current_version`` (blue) to ``new_version`` (green).

        Green is health-checked first (a failure ends the rollout
        ``rolled_back`` before it takes traffic), then takes its share of
        live traffic and holds the ``canary`` alias.
        :meth:`evaluate_rollouts` (called by :meth:`watch_rollout`, the CLI
        or the service) rolls it back automatically when a threshold is
        crossed, or promotes it to 100 % after ``window_seconds`` healthy.
        Calling again with the same versions while it runs returns the running
        rollout.

        Args:
            model_name: The model.
            new_version: Green, registered.
            current_version: Blue: the version active in this environment.
            traffic_split: ``{"blue": 90, "green": 10}`` (the default).
            rollback_threshold: ``error_rate`` (share), ``latency_p95`` (ms),
                ``performance_drop`` (relative), and optionally
                ``window_seconds`` (default 300) and ``min_requests``.
            strategy: ``blue_green`` or ``canary`` (recorded; judged alike).
            health_checks: Health-check green before it takes traffic.
            actor: Who starts it (default the operating-system user).

        Raises:
            ConfigError: for a bad split or thresholds, or equal versions.
            NotFoundError: for an unregistered model or version.
            StateError: when ``current_version`` is not the active version,
                another rollout of the model runs, or (production) the new
                version has no approved governance request.
        """
        return await asyncio.to_thread(
            self.blue_green_deploy_sync,
            model_name,
            new_version,
            current_version,
            traffic_split,
            rollback_threshold,
            strategy=strategy,
            health_checks=health_checks,
            actor=actor,
        )

    def blue_green_deploy_sync(
        self,
        model_name: str,
        new_version: str,
        current_version: str,
        traffic_split: Mapping[str, float] | None = None,
        rollback_threshold: Mapping[str, float] | None = None,
        *,
        strategy: str = "blue_green",
        health_checks: bool = True,
        actor: str | None = None,
    ) -> Rollout:
        """:meth:`blue_green_deploy` without an event loop."""
        split = parse_split(
            traffic_split if traffic_split is not None else {"blue": 90, "green": 10}
        )
        thresholds = parse_thresholds(rollback_threshold)
        thresholds.setdefault("window_seconds", DEFAULT_WINDOW_S)
        thresholds.setdefault("min_requests", float(self.min_requests))
        if strategy not in ("blue_green", "canary"):
            raise ConfigError(
                problem("strategy 'blue_green' or 'canary'", repr(strategy), "use one of those")
            )
        green = self.registry.get_model_version(model_name, new_version).version
        blue = self.registry.get_model_version(model_name, current_version).version
        if green == blue:
            raise ConfigError(
                problem(
                    "a new version different from the current one",
                    f"{green!r} for both",
                    "pass the version to roll out as new_version",
                    subject="blue_green_deploy",
                )
            )
        running = self.running_rollout(model_name)
        if running is not None:
            if (running.current_version, running.new_version) == (blue, green):
                return running
            raise StateError(
                problem(
                    f"no other rollout of {model_name!r} running in {self.environment}",
                    f"rollout {running.id} ({running.current_version} -> {running.new_version})",
                    "wait for it to finish or roll it back",
                    subject=f"model {model_name!r}",
                )
            )
        active = self.active_deployment(model_name)
        if active is None or active.version != blue:
            raise StateError(
                problem(
                    f"current_version to be the version active in {self.environment}",
                    f"{blue!r}; active: {active.version if active else 'none'!r}",
                    (
                        f"pass current_version={active.version!r}"
                        if active
                        else f"deploy {blue!r} to {self.environment} first "
                        f"(ModelServer(environment={self.environment!r}).deploy_model(...))"
                    ),
                    subject=f"model {model_name!r}",
                )
            )
        approval = self._require_approval(
            model_name, green, action=f"{strategy} rollout", actor=actor
        )
        rollout_id = new_id()
        cfg = {**active.config, "model_name": model_name}
        for key in ("health_checks", "monitoring", "rollback_of"):
            cfg.pop(key, None)
        green_row = self._insert_deployment(
            cfg,
            green,
            actor,
            health_checks=health_checks,
            monitoring=bool(active.config.get("monitoring", True)),
            extra={"rollout_id": rollout_id, "approval_request": approval},
        )
        health = self.health_check(model_name, green) if health_checks else _SKIPPED
        now = utcnow()
        record = RolloutRow(
            id=rollout_id,
            model_name=model_name,
            environment=self.environment,
            strategy=strategy,
            current_version=blue,
            new_version=green,
            traffic_split=split,
            rollback_threshold=thresholds,
            healthy_window_s=thresholds["window_seconds"],
            state="running",
            observed={},
            reason=None,
            started_at=now,
            ended_at=None,
        )
        if not health["passed"]:
            record.state, record.ended_at = "rolled_back", now
            record.reason = (
                f"health checks of {green} failed ({health['reason']}); no traffic taken"
            )
            with self.db.session() as session:
                session.add(record)
            self._fail(green_row.id, health)
            self._audit(
                "rollout.rolled_back",
                model_name,
                green,
                {"rollout": rollout_id, "strategy": strategy, "reason": record.reason},
                green_row.created_by,
            )
            return self.get_rollout(rollout_id)
        with self.db.session() as session:
            session.add(record)
            row = session.get(DeploymentRow, green_row.id)
            assert row is not None
            row.health = health
        first = self.list_rollouts("running", model_name)[-1]  # the oldest running one
        if first.id != rollout_id:  # started concurrently by another process: it wins
            self._finish(
                self.get_rollout(rollout_id),
                Decision("rollback", f"rollout {first.id} was started at the same time"),
                {},
                utcnow(),
                alert=False,
                drop_canary=False,  # it never set the alias; the winner may hold it
            )
            raise StateError(
                problem(
                    f"no other rollout of {model_name!r} running in {self.environment}",
                    f"rollout {first.id} ({first.current_version} -> {first.new_version}), "
                    "started concurrently",
                    "wait for it to finish or roll it back",
                    subject=f"model {model_name!r}",
                )
            )
        self.registry.set_alias(model_name, green, "canary")
        self._audit(
            "rollout.started",
            model_name,
            green,
            {
                "rollout": rollout_id,
                "strategy": strategy,
                "current_version": blue,
                "traffic_split": split,
                "rollback_threshold": thresholds,
                "approval_request": approval,
            },
            green_row.created_by,
        )
        logger.info(
            "rollout %s of %s in %s: %s (blue, %g%%) -> %s (green, %g%%)",
            rollout_id,
            model_name,
            self.environment,
            blue,
            split["blue"],
            green,
            split["green"],
        )
        return self.get_rollout(rollout_id)

    def record_performance(
        self, rollout_id: str, arm: str, value: float, *, metric: str = "error"
    ) -> Rollout:
        """Record an arm's error metric (lower is better: MAPE, MAE) for ``performance_drop``.

        An evaluation job that joins actuals to predictions calls it for both
        arms; the next evaluation compares them.

        Raises:
            ConfigError: for an arm other than blue/green or a non-finite value.
            NotFoundError: for an unknown rollout.
        """
        if arm not in ("blue", "green"):
            raise ConfigError(problem("arm 'blue' or 'green'", repr(arm), "use one of those"))
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ConfigError(problem("a finite number", repr(value), "pass the metric's value"))
        with self.db.session() as session:
            row = session.get(RolloutRow, rollout_id, with_for_update=True)
            if row is None:
                raise NotFoundError(problem("a rollout id", repr(rollout_id), "list them"))
            observed = dict(row.observed or {})
            performance = dict(observed.get("performance") or {})
            performance[arm] = {"value": float(value), "metric": metric, "at": utcnow().isoformat()}
            observed["performance"] = performance
            row.observed = observed
            return Rollout.of(row)

    def evaluate_rollouts(self, now: datetime | None = None) -> list[Rollout]:
        """Evaluate every running rollout of this environment (see :meth:`evaluate_rollout`)."""
        return [self.evaluate_rollout(r.id, now) for r in self.list_rollouts("running")]

    def evaluate_rollout(self, rollout_id: str, now: datetime | None = None) -> Rollout:
        """Judge a running rollout from the prediction log since it started; act on the decision.

        Rows are attributed to blue or green by their model version. Crossing
        a threshold rolls back (green ``rolled_back``, the ``canary`` alias
        removed, an alert raised); a healthy window promotes (green
        ``active``, blue ``superseded``, the environment's alias moved).
        A finished rollout is returned unchanged, so any number of processes
        may evaluate the same rollouts.
        """
        now = as_utc(now) if now is not None else utcnow()
        rollout = self.get_rollout(rollout_id)
        if not rollout.running:
            return rollout
        with self.db.session() as session:
            rows = session.execute(
                select(
                    PredictionLogEntry.model_version,
                    PredictionLogEntry.latency_ms,
                    PredictionLogEntry.status_code,
                    PredictionLogEntry.error,
                ).where(
                    PredictionLogEntry.model_name == rollout.model_name,
                    PredictionLogEntry.environment == self.environment,
                    PredictionLogEntry.model_version.in_(
                        [rollout.current_version, rollout.new_version]
                    ),
                    PredictionLogEntry.created_at >= rollout.started_at,
                    PredictionLogEntry.created_at <= now,
                )
            ).all()
        by_version: dict[str, list[tuple[float, int, str | None]]] = {}
        for version, latency, status, error in rows:
            by_version.setdefault(version, []).append((latency, status, error))
        blue = arm_stats(rollout.current_version, by_version.get(rollout.current_version, []))
        green = arm_stats(rollout.new_version, by_version.get(rollout.new_version, []))
        drop = performance_drop(rollout.observed.get("performance") or {})
        elapsed = (now - rollout.started_at).total_seconds()
        decision = decide(green, drop, rollout.rollback_threshold, elapsed_s=elapsed)
        observed = {
            **rollout.observed,
            "blue": blue.to_dict(),
            "green": green.to_dict(),
            "performance_drop": drop,
            "decision": decision.reason,
            "evaluated_at": now.isoformat(),
        }
        if decision.action == "wait":
            with self.db.session() as session:
                session.execute(
                    update(RolloutRow)
                    .where(RolloutRow.id == rollout.id, RolloutRow.state == "running")
                    .values(observed=observed)
                )
            return self.get_rollout(rollout.id)
        return self._finish(rollout, decision, observed, now)

    def _finish(
        self,
        rollout: Rollout,
        decision: Decision,
        observed: dict[str, Any],
        now: datetime,
        *,
        alert: bool = True,
        drop_canary: bool = True,
        actor: str | None = None,
    ) -> Rollout:
        promote = decision.action == "promote"
        state = "promoted" if promote else "rolled_back"
        with self.db.session() as session:
            claimed = session.execute(
                update(RolloutRow)
                .where(RolloutRow.id == rollout.id, RolloutRow.state == "running")
                .values(state=state, reason=decision.reason, observed=observed, ended_at=now)
            )
            won = getattr(claimed, "rowcount", 0) == 1
            greens = (
                []
                if not won
                else [
                    row
                    for row in session.scalars(
                        select(DeploymentRow).where(
                            DeploymentRow.model_name == rollout.model_name,
                            DeploymentRow.environment == self.environment,
                            DeploymentRow.version == rollout.new_version,
                            DeploymentRow.status == "pending",
                        )
                    )
                    if row.config.get("rollout_id") == rollout.id
                ]
            )
            if promote and won:
                session.execute(
                    update(DeploymentRow)
                    .where(
                        DeploymentRow.model_name == rollout.model_name,
                        DeploymentRow.environment == self.environment,
                        DeploymentRow.status == "active",
                    )
                    .values(status="superseded", updated_at=now)
                )
            for row in greens:
                row.status = "active" if promote else "rolled_back"
                row.updated_at = now
                row.reason = f"rollout {rollout.id}: {decision.reason}"
        if not won:  # another process decided it first
            return self.get_rollout(rollout.id)
        self._audit(
            f"rollout.{state}",
            rollout.model_name,
            rollout.new_version,
            {
                "rollout": rollout.id,
                "strategy": rollout.strategy,
                "current_version": rollout.current_version,
                "reason": decision.reason,
                "automatic": actor is None,
            },
            actor or "retailml (rollout evaluation)",
        )
        if promote:
            self.registry.set_alias(rollout.model_name, rollout.new_version, self.environment)
        if drop_canary:
            self._drop_canary(rollout.model_name, rollout.new_version)
        if promote:
            logger.info(
                "rollout %s promoted %s %s to 100%% of %s: %s",
                rollout.id,
                rollout.model_name,
                rollout.new_version,
                self.environment,
                decision.reason,
            )
        elif alert:
            self._alert(
                "critical",
                f"rollout of {rollout.model_name} {rollout.new_version} in {self.environment} "
                "rolled back automatically",
                f"{decision.reason}; {rollout.current_version} serves all traffic",
                rollout.model_name,
                rollout.id,
            )
        return self.get_rollout(rollout.id)

    def _drop_canary(self, model_name: str, version: str) -> None:
        with contextlib.suppress(NotFoundError):
            if self.registry.get_by_alias(model_name, "canary").version == version:
                self.registry.delete_alias(model_name, "canary")

    async def watch_rollout(
        self, rollout_id: str, interval_s: float = 5.0, timeout_s: float | None = None
    ) -> Rollout:
        """Evaluate a rollout every ``interval_s`` until it is promoted or rolled back.

        Returns:
            The finished rollout, or the running one when ``timeout_s`` passed first.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            rollout = await asyncio.to_thread(self.evaluate_rollout, rollout_id)
            if not rollout.running:
                return rollout
            if deadline is not None and time.monotonic() >= deadline:
                return rollout
            pause = interval_s if deadline is None else min(interval_s, deadline - time.monotonic())
            await asyncio.sleep(max(pause, 0.0))

    # --- promotion (staging -> production, an A/B winner) ------------------------------------

    async def promote(
        self,
        model_name: str,
        version: str,
        *,
        traffic_split: Mapping[str, float] | None = None,
        rollback_threshold: Mapping[str, float] | None = None,
        wait: bool = True,
        interval_s: float = 5.0,
        timeout_s: float | None = None,
        actor: str | None = None,
    ) -> Deployment | Rollout:
        """Make ``version`` the one this environment serves, safely.

        Nothing active yet: a direct, health-checked deployment. The version
        already active: returns that deployment. Otherwise a canary rollout
        (default split 90/10 and thresholds) from the active version, watched
        until decided when ``wait``. The config (replicas, resources) is the
        version's latest staging deployment's, else the active one's.

        Raises:
            StateError: in production, without an approved governance request
                for the version (naming the roles still to approve).
        """
        version = self.registry.get_model_version(model_name, version).version
        active = self.active_deployment(model_name)
        if active is not None and active.version == version:
            return active
        approval = self._require_approval(model_name, version, action="promote", actor=actor)
        self._audit(
            "promotion.started",
            model_name,
            version,
            {
                "from_version": active.version if active else None,
                "path": "canary rollout" if active else "direct deployment",
                "approval_request": approval,
            },
            actor,
        )
        if active is None:
            staged = [
                d
                for d in ModelServer("staging", registry=self.registry).list_deployments(model_name)
                if d.version == version and d.status in ("active", "superseded")
            ]
            base = dict(staged[0].config) if staged else {"replicas": 1}
            config = {
                key: base[key] for key in ("replicas", "resources", "auto_scaling") if key in base
            }
            config.update(model_name=model_name, model_version=version)
            return await self.deploy_model(config=config, actor=actor)
        rollout = await self.blue_green_deploy(
            model_name,
            version,
            active.version,
            traffic_split,
            rollback_threshold,
            strategy="canary",
            actor=actor,
        )
        if wait and rollout.running:
            rollout = await self.watch_rollout(rollout.id, interval_s, timeout_s)
        return rollout

    # --- rollback -----------------------------------------------------------------------------

    def rollback(self, model_name: str, reason: str, actor: str | None = None) -> RollbackResult:
        """Restore the previous version in one step (the guide's emergency rollback).

        * A rollout of the model running: it is rolled back (green leaves
          traffic; blue, which never stopped serving, keeps it).
        * Otherwise the active version is marked ``rolled_back`` and the most
          recent version superseded before it serves again, through a new
          ``active`` deployment row recording who (``actor``, default the OS
          user) and why; the environment's alias moves to it.

        No new approval is needed in production: the restored version served
        production before, so it passed the approval check then. Every
        rollback is recorded in the audit log with who and why.

        Safe to run twice: when the last action on the model in this
        environment already was a rollback (this one, or a rollout rolled
        back, automatically or not), nothing moves and the result reports the
        state with ``changed=False``. To go back further, deploy the wanted
        version explicitly.

        Raises:
            ConfigError: for an empty reason.
            StateError: when nothing serves the model, or no earlier version exists.
        """
        if not isinstance(reason, str) or not reason.strip():
            raise ConfigError(
                problem("a reason for the rollback", repr(reason), 'pass reason="..."')
            )
        actor = actor or current_user()
        running = self.running_rollout(model_name)
        if running is not None:
            decision = Decision("rollback", f"manual rollback by {actor}: {reason}")
            finished = self._finish(
                running,
                decision,
                {**running.observed, "manual": {"actor": actor, "reason": reason}},
                utcnow(),
                alert=False,
                actor=actor,
            )
            logger.warning("rollout %s rolled back by %s: %s", running.id, actor, reason)
            return RollbackResult(
                model_name=model_name,
                environment=self.environment,
                changed=finished.reason == decision.reason,
                action="rollout_rolled_back",
                active_version=running.current_version,
                rolled_back_version=running.new_version,
                actor=actor,
                reason=reason,
                message=f"rollout {running.id} rolled back: {running.current_version} serves "
                f"all traffic, {running.new_version} none",
            )
        active = self.active_deployment(model_name)
        if active is None:
            raise StateError(
                problem(
                    f"a version of {model_name!r} serving {self.environment}",
                    "none",
                    f"deploy one first (retailml deploy --environment {self.environment} ...)",
                    subject="rollback",
                )
            )
        repeat = self._last_rollback(model_name, active)
        if repeat is not None:
            return RollbackResult(
                model_name=model_name,
                environment=self.environment,
                changed=False,
                action="none",
                active_version=active.version,
                rolled_back_version=repeat[0],
                actor=actor,
                reason=reason,
                message=f"already rolled back ({repeat[1]}); {active.version} serves "
                f"{self.environment}. To move further, deploy the wanted version explicitly",
            )
        previous = self._previous(model_name, active)
        if previous is None:
            raise StateError(
                problem(
                    f"an earlier {self.environment} version of {model_name!r} to restore",
                    f"none before {active.version!r}",
                    "deploy the wanted version explicitly",
                    subject="rollback",
                )
            )
        self.registry.get_model_version(model_name, previous.version)  # still registered
        self._refuse_revoked(model_name, previous.version, actor)
        now = utcnow()
        with self.db.session() as session:
            taken = session.execute(
                update(DeploymentRow)
                .where(DeploymentRow.id == active.id, DeploymentRow.status == "active")
                .values(
                    status="rolled_back",
                    updated_at=now,
                    reason=f"rolled back by {actor}: {reason}",
                )
            )
            won = getattr(taken, "rowcount", 0) == 1
            if won:
                session.add(
                    DeploymentRow(
                        id=new_id(),
                        model_name=model_name,
                        environment=self.environment,
                        version=previous.version,
                        status="active",
                        replicas=previous.replicas,
                        config={**previous.config, "rollback_of": active.id},
                        health={"restored_from": previous.id, "passed": True, "checks": []},
                        created_by=actor,
                        reason=f"rollback from {active.version}: {reason}",
                        created_at=now,
                        updated_at=now,
                    )
                )
        if not won:  # a concurrent rollback won: report its outcome
            return self.rollback(model_name, reason, actor)
        self.registry.set_alias(model_name, previous.version, self.environment)
        self._drop_canary(model_name, active.version)
        self._audit(
            "deployment.rolled_back",
            model_name,
            active.version,
            {"restored_version": previous.version, "reason": reason},
            actor,
        )
        logger.warning(
            "%s rolled back %s in %s from %s to %s: %s",
            actor,
            model_name,
            self.environment,
            active.version,
            previous.version,
            reason,
        )
        return RollbackResult(
            model_name=model_name,
            environment=self.environment,
            changed=True,
            action="restored_previous",
            active_version=previous.version,
            rolled_back_version=active.version,
            actor=actor,
            reason=reason,
            message=f"{previous.version} serves {self.environment} again; "
            f"{active.version} rolled back",
        )

    def _last_rollback(self, model_name: str, active: Deployment) -> tuple[str, str] | None:
        """``(version rolled back, what happened)`` when the last action was a rollback."""
        if active.config.get("rollback_of"):
            with self.db.session() as session:
                gone = session.get(DeploymentRow, active.config["rollback_of"])
                version = gone.version if gone else "?"
            return version, f"{version} -> {active.version} by {active.created_by}: {active.reason}"
        for rollout in self.list_rollouts("rolled_back", model_name):
            if rollout.ended_at is not None and rollout.ended_at >= active.updated_at:
                return rollout.new_version, f"rollout {rollout.id}: {rollout.reason}"
        return None

    def _previous(self, model_name: str, active: Deployment) -> Deployment | None:
        with self.db.session() as session:
            rows = session.scalars(
                select(DeploymentRow)
                .where(
                    DeploymentRow.model_name == model_name,
                    DeploymentRow.environment == self.environment,
                    DeploymentRow.status == "superseded",
                    DeploymentRow.version != active.version,
                    DeploymentRow.created_at <= active.created_at,
                )
                .order_by(DeploymentRow.updated_at.desc())
                .limit(1)
            ).first()
            return Deployment.of(rows) if rows else None

    # --- alerts -------------------------------------------------------------------------------

    def _alert(
        self,
        severity: str,
        title: str,
        message: str,
        model_name: str,
        rollout_id: str | None = None,
    ) -> Alert:
        alert = Alert(
            severity=severity,
            title=title,
            message=message,
            model_name=model_name,
            environment=self.environment,
            rollout_id=rollout_id,
            created_at=utcnow(),
        )
        logger.error("ALERT [%s] %s: %s", severity, title, message)
        for hook in self.alerts:
            try:
                hook(alert)
            except Exception:  # one broken channel must not hide the alert from the others
                logger.exception("alert hook %r failed", hook)
        return alert


class _CheckSkippedError(Exception):
    """A health check that cannot run for this model (recorded as skipped, not failed)."""


_SKIPPED: Final[dict[str, Any]] = {"passed": True, "checks": [], "reason": None, "skipped": True}
