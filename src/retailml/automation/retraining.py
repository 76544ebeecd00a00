"""AutoRetrainingPipeline: the guide's automated retraining, as governed jobs.

::

    from retailml.training.model_trainer import AutoRetrainingPipeline

    pipeline = AutoRetrainingPipeline(
        model_name="sales_forecast",
        triggers={"schedule": "weekly", "performance_threshold": {"mape": 0.20},
                  "data_drift_threshold": 0.05, "min_new_data_points": 1000},
    )
    decision = await pipeline.check_retrain_conditions()     # should_retrain, reason, fired
    if decision.should_retrain:
        new_model = await pipeline.retrain(data_source="production",
                                           validation_strategy="holdout",
                                           auto_deploy_threshold={"mape": 0.15})
        comparison = await pipeline.validate_new_model(new_model, "production",
                                                       new_model.test_data)
        if comparison.is_better:
            outcome = await pipeline.deploy_new_model(new_model, deployment_strategy="canary")
            outcome.status        # "rollout_started", or "awaiting_approval" (which roles)

Triggers are described in :mod:`retailml.automation._triggers`; the data
``"production"`` means in :mod:`retailml.automation._data`.

The challenger
--------------
:meth:`AutoRetrainingPipeline.retrain` trains with the champion's recorded
configuration (model type, algorithm, hyperparameters, target; see
:mod:`retailml.automation._champion`), or with a training config given as
``config=`` (``retailml retrain --config``). The champion is the version
holding the ``production`` alias, else the latest active one. Training runs
in a worker thread, off the event loop.

Jobs and the lease
------------------
Every :meth:`~AutoRetrainingPipeline.retrain` is a ``retrain`` job record
(:mod:`retailml.core.jobs`) with its inputs (the shared schema: ``model_name,
model_type, algorithm, hyperparameters, target, validation_strategy,
n_splits, seed, data {source, path, window, data_version}, config,
register``), what triggered it, and its outcome (metrics, MLflow run,
registered version, comparison with the champion, deployment decision).
A failure is recorded with the real exception. While training, a thread
refreshes the job's heartbeat and renews the lease ``retrain:<model>``; a
second worker that finds the lease held records its job as ``skipped``
("already being retrained by <owner>") and trains nothing.

Deployment
----------
:meth:`~AutoRetrainingPipeline.deploy_new_model` never deploys a challenger
that did not beat the champion on the same holdout. It registers the
challenger (once per job: the version is tagged ``retrain_job=<job id>`` and
reused on a second call), and production needs an approved governance
request: without one it opens a request (or reuses the open one) for the
pipeline's ``approvers`` and answers ``awaiting_approval``; once every
approver approved, a second call rolls the version out through
:class:`~retailml.deployment.model_server.ModelServer` (canary or blue-green
from the active version; a direct, health-checked deployment when nothing
serves production yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import pandas as pd
from mlflow.pyfunc import PyFuncModel

from retailml.automation._champion import Champion, champion_of
from retailml.automation._data import resolve_data
from retailml.automation._jobs import Heartbeat, lease_key, update_outcome
from retailml.automation._triggers import (
    FiredTrigger,
    Triggers,
    check_drift,
    check_new_data,
    check_performance,
    check_schedule,
    is_lower_better,
    last_retrain,
    last_retrain_data_version,
    parse_triggers,
)
from retailml.core import jobs
from retailml.core.db import UsesPlatformDB, new_id
from retailml.core.db_jobs import TrainingJob
from retailml.core.db_registry import ModelVersionRecord
from retailml.core.errors import ConfigError, NotFoundError, StateError, problem
from retailml.core.io import read_yaml_mapping
from retailml.core.settings import Settings, get_settings
from retailml.deployment.model_server import ModelServer, ModelVersion
from retailml.governance.model_governance import ModelGovernance
from retailml.registry._semver import parse_semver
from retailml.registry.model_registry import ModelRegistry
from retailml.training._tasks import make_task
from retailml.training._tracking import RetailMLModel
from retailml.training._trainer import ModelTrainer, TrainingResult
from retailml.training._validation import ModelValidator

__all__ = [
    "DEFAULT_APPROVERS",
    "AutoRetrainingPipeline",
    "DeploymentOutcome",
    "FiredTrigger",
    "ModelComparison",
    "RetrainDecision",
    "RetrainRun",
    "RetrainedModel",
]

logger = logging.getLogger(__name__)

#: Roles whose approval a production deployment of a challenger requests by default.
DEFAULT_APPROVERS: Final = ("lead_data_scientist", "ml_engineer", "business_owner")
#: The registry tag naming the retrain job a version came from.
JOB_TAG: Final = "retrain_job"
DEPLOYMENT_STRATEGIES: Final = ("canary", "blue_green", "direct")


def _json_safe(value: Any) -> Any:
    """``value`` as JSON holds it: numpy scalars as numbers, NaN as None, tuples as lists."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    return json.loads(json.dumps(value, default=str))


def _finite(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
    }


def _meets(metrics: Mapping[str, float], thresholds: Mapping[str, float]) -> tuple[bool, list[str]]:
    """Whether every threshold is met (at equality too), and the misses."""
    misses = []
    for metric, limit in thresholds.items():
        value = metrics.get(metric)
        if value is None or not math.isfinite(value):
            misses.append(f"{metric} undefined (limit {limit:g})")
        elif is_lower_better(metric) and value > limit:
            misses.append(f"{metric} {value:.4g} > {limit:g}")
        elif not is_lower_better(metric) and value < limit:
            misses.append(f"{metric} {value:.4g} < {limit:g}")
    return not misses, misses


def _check_thresholds(thresholds: Mapping[str, Any] | None, subject: str) -> dict[str, float]:
    if thresholds is None:
        return {}
    if not isinstance(thresholds, Mapping):
        raise ConfigError(
            problem("a dict of metric -> limit", repr(thresholds), "e.g. {'mape': 0.15}", subject)
        )
    out = {}
    for metric, limit in thresholds.items():
        is_lower_better(str(metric))
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int | float)
            or not math.isfinite(limit)
        ):
            raise ConfigError(
                problem(
                    "a finite number as each limit",
                    f"{metric!r}: {limit!r}",
                    "e.g. {'mape': 0.15}",
                    subject=subject,
                )
            )
        out[str(metric)] = float(limit)
    return out


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrainDecision:
    """What :meth:`AutoRetrainingPipeline.check_retrain_conditions` returns.

    Attributes:
        model_name: The model.
        should_retrain: True when at least one trigger fired.
        reason: Every fired trigger with its measured value and limit, ``"; "``-joined
            (or why none fired).
        fired: The triggers that fired.
        checks: Every configured trigger's evaluation, fired or not.
        champion_version: The version the triggers measured (production, else the latest).
        checked_at: When (UTC).
    """

    model_name: str
    should_retrain: bool
    reason: str
    fired: tuple[FiredTrigger, ...]
    checks: tuple[FiredTrigger, ...]
    champion_version: str | None
    checked_at: datetime

    @property
    def trigger(self) -> str:
        """The fired triggers' names, comma-separated (a job's ``trigger``), or ``manual``."""
        return ",".join(f.trigger for f in self.fired) or "manual"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe form."""
        return {
            "model_name": self.model_name,
            "should_retrain": self.should_retrain,
            "reason": self.reason,
            "fired": [f.to_dict() for f in self.fired],
            "checks": [c.to_dict() for c in self.checks],
            "champion_version": self.champion_version,
            "checked_at": self.checked_at.isoformat(),
        }


@dataclass(frozen=True)
class ModelComparison:
    """What :meth:`AutoRetrainingPipeline.validate_new_model` returns.

    Attributes:
        is_better: True when the challenger is at least as good as the baseline on
            every decision metric, better on one, and meets the auto-deploy threshold.
        metrics_new: The challenger's metrics on the holdout.
        metrics_baseline: The baseline's metrics on the same holdout (empty without one).
        deltas: ``challenger - baseline`` per metric both have.
        decided_on: The metrics the decision looked at (the auto-deploy threshold's,
            else the model type's primary metric).
        meets_threshold: Whether the challenger meets the auto-deploy threshold.
        baseline: What the challenger was compared with (e.g. ``"production 1.0.0"``).
        n_rows: Holdout rows.
        reason: A readable account of the decision.
    """

    is_better: bool
    metrics_new: dict[str, float]
    metrics_baseline: dict[str, float]
    deltas: dict[str, float]
    decided_on: tuple[str, ...]
    meets_threshold: bool
    baseline: str | None
    n_rows: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe form."""
        safe: dict[str, Any] = _json_safe(
            {
                "is_better": self.is_better,
                "metrics_new": self.metrics_new,
                "metrics_baseline": self.metrics_baseline,
                "deltas": self.deltas,
                "decided_on": list(self.decided_on),
                "meets_threshold": self.meets_threshold,
                "baseline": self.baseline,
                "n_rows": self.n_rows,
                "reason": self.reason,
            }
        )
        return safe


@dataclass
class RetrainedModel:
    """What :meth:`AutoRetrainingPipeline.retrain` returns: the challenger and its job.

    Attributes:
        model_name: The registered model it challenges.
        status: ``"trained"``, or ``"skipped"`` when another worker holds the lease.
        job_id: The ``retrain`` job record.
        result: The :class:`~retailml.training.model_trainer.TrainingResult` (None if skipped).
        test_data: The holdout kept back from training (compare models on it).
        auto_deploy_threshold: The limits a deployment requires.
        meets_threshold: Whether the cross-validated metrics meet them.
        champion_version: The version it challenges, if any.
        reason: Why it was skipped, or what triggered it.
        comparison: Set by :meth:`AutoRetrainingPipeline.validate_new_model`.
        registered_version: Set when the challenger is registered.
    """

    model_name: str
    status: str
    job_id: str
    result: TrainingResult | None = None
    test_data: pd.DataFrame | None = field(default=None, repr=False)
    auto_deploy_threshold: dict[str, float] = field(default_factory=dict)
    meets_threshold: bool = False
    champion_version: str | None = None
    reason: str = ""
    comparison: ModelComparison | None = None
    registered_version: str | None = None
    training_config: dict[str, Any] = field(default_factory=dict, repr=False)
    training_data: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def metrics(self) -> dict[str, float]:
        """The challenger's cross-validated metrics (empty when skipped)."""
        return dict(self.result.metrics) if self.result is not None else {}

    @property
    def trained(self) -> bool:
        """True when a challenger was trained."""
        return self.status == "trained" and self.result is not None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe summary."""
        safe: dict[str, Any] = _json_safe(
            {
                "model_name": self.model_name,
                "status": self.status,
                "job_id": self.job_id,
                "metrics": self.metrics,
                "run_id": self.result.run_id if self.result else None,
                "algorithm": self.result.algorithm if self.result else None,
                "auto_deploy_threshold": self.auto_deploy_threshold,
                "meets_threshold": self.meets_threshold,
                "champion_version": self.champion_version,
                "reason": self.reason,
                "registered_version": self.registered_version,
                "comparison": self.comparison.to_dict() if self.comparison else None,
            }
        )
        return safe


@dataclass(frozen=True)
class DeploymentOutcome:
    """What :meth:`AutoRetrainingPipeline.deploy_new_model` returns.

    Attributes:
        status: ``"deployed"`` (serving), ``"rollout_started"`` (canary/blue-green
            running), ``"rolled_back"`` (health checks or the rollout failed),
            ``"awaiting_approval"`` (a governance request waits for ``pending_approvers``),
            ``"refused"`` (not better than the champion, or nothing trained) or
            ``"blocked"`` (the deployment API refused, e.g. a rollout already runs).
        model_name: The model.
        version: The registered version (None when refused before registration).
        strategy: The deployment strategy.
        reason: A readable account.
        approval_request_id: The governance request, when one was needed.
        pending_approvers: Roles that have not approved yet.
        deployment_id: The direct deployment, if any.
        rollout_id: The canary / blue-green rollout, if any.
    """

    status: str
    model_name: str
    version: str | None
    strategy: str
    reason: str
    approval_request_id: str | None = None
    pending_approvers: tuple[str, ...] = ()
    deployment_id: str | None = None
    rollout_id: str | None = None

    @property
    def deployed(self) -> bool:
        """True when the version serves (all traffic, or its rollout share)."""
        return self.status in ("deployed", "rollout_started")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe form."""
        return {
            "status": self.status,
            "model_name": self.model_name,
            "version": self.version,
            "strategy": self.strategy,
            "reason": self.reason,
            "approval_request_id": self.approval_request_id,
            "pending_approvers": list(self.pending_approvers),
            "deployment_id": self.deployment_id,
            "rollout_id": self.rollout_id,
        }


@dataclass(frozen=True)
class RetrainRun:
    """One pass of :meth:`AutoRetrainingPipeline.run`: check, retrain, validate, deploy."""

    decision: RetrainDecision | None
    model: RetrainedModel | None = None
    comparison: ModelComparison | None = None
    deployment: DeploymentOutcome | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe form."""
        return {
            "decision": self.decision.to_dict() if self.decision else None,
            "model": self.model.to_dict() if self.model else None,
            "comparison": self.comparison.to_dict() if self.comparison else None,
            "deployment": self.deployment.to_dict() if self.deployment else None,
        }


# --- the pipeline -----------------------------------------------------------------------------


class AutoRetrainingPipeline(UsesPlatformDB):
    """Decide when a model needs retraining, retrain it, compare it, and deploy it governed.

    Args:
        model_name: The registered model (the champion is its production version).
        triggers: The guide's triggers (see :mod:`retailml.automation._triggers`);
            each may be absent.
        config: A training config (mapping or YAML path, as ``retailml train``
            reads): its model type, algorithm, hyperparameters and ``data:``
            section replace the champion's recorded ones.
        data_window: Train on the last window of data (``"2y"``, ``"90d"``).
        approvers: Roles a production deployment asks approval of.
        traffic_split: Canary / blue-green split (default 90/10).
        rollback_threshold: Rollout thresholds (default the deployment defaults).
        heartbeat_s: Seconds between a running job's heartbeats (and lease renewals).
        lease_ttl_s: How long the retrain lease outlives a silent worker.
        settings: retailml settings; default the process settings.

    Raises:
        ConfigError: for bad triggers (every problem at once) or a bad config.
    """

    def __init__(
        self,
        model_name: str,
        triggers: Mapping[str, Any] | None = None,
        *,
        config: Mapping[str, Any] | str | Path | None = None,
        data_window: str | None = None,
        approvers: Sequence[str] = DEFAULT_APPROVERS,
        traffic_split: Mapping[str, float] | None = None,
        rollback_threshold: Mapping[str, float] | None = None,
        heartbeat_s: float = 10.0,
        lease_ttl_s: float = 120.0,
        settings: Settings | None = None,
    ) -> None:
        if not isinstance(model_name, str) or not model_name:
            raise ConfigError(
                problem("a registered model name", repr(model_name), "pass model_name='...'")
            )
        self.model_name = model_name
        self.triggers: Triggers = parse_triggers(triggers)
        self.config_path: str | None = None
        if isinstance(config, str | Path):
            self.config_path = str(config)
            config = read_yaml_mapping(
                Path(config), subject="config", shape="a training config (configs/*.yaml)"
            )
        self.config: dict[str, Any] | None = dict(config) if config is not None else None
        if self.config is not None and "model_type" not in self.config:
            raise ConfigError(
                problem(
                    "a training config with a model_type",
                    f"keys {sorted(self.config)}",
                    "add e.g. model_type: sales_forecast",
                    subject="config",
                )
            )
        self.data_window = data_window
        self.approvers = tuple(approvers)
        self.traffic_split = dict(traffic_split) if traffic_split else None
        self.rollback_threshold = dict(rollback_threshold) if rollback_threshold else None
        if heartbeat_s <= 0 or lease_ttl_s <= heartbeat_s:
            raise ConfigError(
                problem(
                    "heartbeat_s > 0 and lease_ttl_s > heartbeat_s",
                    f"heartbeat_s={heartbeat_s!r}, lease_ttl_s={lease_ttl_s!r}",
                    "e.g. heartbeat_s=10, lease_ttl_s=120",
                )
            )
        self.heartbeat_s = float(heartbeat_s)
        self.lease_ttl = timedelta(seconds=lease_ttl_s)
        self._use_db(settings or get_settings(), None)
        self._registry: ModelRegistry | None = None
        self._last_decision: RetrainDecision | None = None

    def __repr__(self) -> str:
        return (
            f"AutoRetrainingPipeline(model_name={self.model_name!r}, "
            f"triggers={self.triggers.to_dict()!r})"
        )

    def close(self) -> None:
        """Release the database connections (the registry's too)."""
        if self._registry is not None:
            self._registry.close()
            self._registry = None
        super().close()

    @property
    def registry(self) -> ModelRegistry:
        """The model registry."""
        if self._registry is None:
            self._registry = ModelRegistry(self.settings)
        return self._registry

    # --- triggers ---------------------------------------------------------------------------

    async def check_retrain_conditions(self, now: datetime | None = None) -> RetrainDecision:
        """Evaluate every configured trigger.

        Args:
            now: The time the schedule is judged at (default now, UTC).

        Returns:
            A :class:`RetrainDecision`: ``should_retrain``, ``reason`` naming every
            fired trigger with its value and limit, ``fired`` and ``checks``.
        """
        return await asyncio.to_thread(self.check_retrain_conditions_sync, now)

    def check_retrain_conditions_sync(self, now: datetime | None = None) -> RetrainDecision:
        """:meth:`check_retrain_conditions` without an event loop."""
        now = (now or datetime.now(UTC)).astimezone(UTC)
        version = self._current_version()
        semver = version.version if version is not None else None
        checks: list[FiredTrigger] = []
        triggers = self.triggers
        retrained = last_retrain(self.db, self.model_name)
        if triggers.cron is not None and triggers.schedule is not None:
            since, what = retrained, "last retrain"
            if since is None and version is not None:
                since, what = version.created_at.astimezone(UTC), f"{semver} registered"
            checks.append(check_schedule(triggers.cron, triggers.schedule, since, what, now))
        for metric, limit in triggers.performance_threshold.items():
            checks.append(
                check_performance(self.db, self.model_name, semver, metric, limit, retrained)
            )
        if triggers.data_drift_threshold is not None:
            checks.append(
                check_drift(
                    self.db, self.model_name, semver, triggers.data_drift_threshold, retrained
                )
            )
        if triggers.min_new_data_points is not None:
            trained_version = None
            if version is not None:
                with contextlib.suppress(StateError):
                    champion = champion_of(self.registry, self.model_name)
                    trained_version = champion.data_version if champion else None
            checks.append(
                check_new_data(
                    self.db,
                    triggers.min_new_data_points,
                    trained_version,
                    version.created_at if version is not None else None,
                    f"{self.model_name} {semver}",
                    last_retrain_data_version(self.db, self.model_name),
                )
            )
        fired = tuple(c for c in checks if c.fired)
        if fired:
            reason = "; ".join(c.detail for c in fired)
        elif checks:
            reason = "no trigger fired: " + "; ".join(c.detail for c in checks)
        else:
            reason = "no trigger configured"
        decision = RetrainDecision(
            model_name=self.model_name,
            should_retrain=bool(fired),
            reason=reason,
            fired=fired,
            checks=tuple(checks),
            champion_version=semver,
            checked_at=now,
        )
        self._last_decision = decision
        return decision

    def _current_version(self) -> ModelVersion | None:
        try:
            return self.registry.get_model_version(self.model_name, None)
        except NotFoundError:
            return None

    # --- retraining -------------------------------------------------------------------------

    def _champion(self) -> Champion | None:
        try:
            return champion_of(self.registry, self.model_name)
        except StateError:
            # A champion without a recorded configuration: a training config replaces it.
            if self.config is None:
                raise
            return None

    def _training_config(self, champion: Champion | None) -> dict[str, Any]:
        if self.config is not None:
            cfg = self.config
            return {
                "model_type": str(cfg["model_type"]),
                "algorithm": cfg.get("algorithm"),
                "hyperparameters": dict(cfg.get("hyperparameters") or {}),
                "target": cfg.get("target"),
                "validation_strategy": cfg.get("validation_strategy"),
                "n_splits": int(cfg.get("n_splits", 5)),
                "seed": None,
            }
        if champion is None:
            raise NotFoundError(
                problem(
                    f"a registered version of {self.model_name!r} to retrain (the champion), "
                    "or a training config",
                    "no registered version",
                    "register one (retailml register) or pass config=... "
                    "(retailml retrain --config configs/<model>.yaml)",
                    subject=f"model {self.model_name!r}",
                )
            )
        return {
            "model_type": champion.model_type,
            "algorithm": champion.algorithm,
            "hyperparameters": dict(champion.hyperparameters),
            "target": champion.target,
            "validation_strategy": champion.validation_strategy,
            "n_splits": champion.n_splits or 5,
            "seed": champion.seed,
        }

    async def retrain(
        self,
        data_source: str | Path = "production",
        validation_strategy: str | None = None,
        auto_deploy_threshold: Mapping[str, float] | None = None,
        *,
        trigger: str | None = None,
        data_window: str | None = None,
        register: bool = False,
    ) -> RetrainedModel:
        """Train a challenger with the champion's configuration on current data, as a job.

        Args:
            data_source: ``"production"`` (the workspace's current data; see
                :mod:`retailml.automation._data`) or a Parquet/CSV path.
            validation_strategy: ``"holdout"``, ``"time_series_split"``, ``"kfold"``
                (``"k-fold"``); default the champion's.
            auto_deploy_threshold: Limits a deployment requires (``{"mape": 0.15}``:
                errors are maxima, scores minima).
            trigger: What started it (default: the triggers the last check fired,
                else ``"manual"``).
            data_window: Overrides the pipeline's ``data_window``.
            register: Register the challenger right away (otherwise
                :meth:`deploy_new_model` registers it).

        Returns:
            A :class:`RetrainedModel` (``status="skipped"`` when another worker
            holds the model's retrain lease).

        Raises:
            ConfigError, NotFoundError, DataValidationError: recorded on the failed job too.
        """
        thresholds = _check_thresholds(auto_deploy_threshold, "auto_deploy_threshold")
        champion = await asyncio.to_thread(self._champion)
        config = self._training_config(champion)
        window = data_window or self.data_window
        data_spec = self.config.get("data") if self.config is not None else None
        strategy = validation_strategy or config["validation_strategy"]
        if trigger is None:
            decision = self._last_decision
            trigger = decision.trigger if decision and decision.should_retrain else "manual"
        spec = data_spec or (champion.data_spec if champion else None)
        is_path = str(data_source) != "production"
        if not is_path and spec and spec.get("source") == "file":
            data_source_path: str | None = str(spec.get("path"))
        else:
            data_source_path = str(data_source) if is_path else None
        inputs = _json_safe(
            {
                "model_name": self.model_name,
                "model_type": config["model_type"],
                "algorithm": config["algorithm"],
                "hyperparameters": config["hyperparameters"],
                "target": config["target"],
                "validation_strategy": strategy,
                "n_splits": config["n_splits"],
                "seed": config["seed"] if config["seed"] is not None else self.settings.seed,
                "data": {
                    "source": "silver" if data_source_path is None else "path",
                    "path": data_source_path,
                    "window": window,
                    "data_version": None,
                    "spec": spec,
                },
                "config": self.config_path,
                "register": register,
                "auto_deploy_threshold": thresholds,
                "champion_version": champion.semver if champion else None,
            }
        )
        owner = f"{jobs.worker_id()}:{new_id()[:8]}"
        job = await asyncio.to_thread(
            jobs.create_job,
            self.db,
            kind="retrain",
            model_name=self.model_name,
            inputs=inputs,
            model_type=config["model_type"],
            algorithm=config["algorithm"],
            trigger=trigger[:255],
        )
        key = lease_key(self.model_name)
        taken = await asyncio.to_thread(
            jobs.acquire_lease, self.db, key, self.lease_ttl, owner, job.id
        )
        if not taken:
            holder = await asyncio.to_thread(jobs.lease_holder, self.db, key)
            who = holder[0] if holder else "another worker"
            reason = f"{self.model_name} is already being retrained by {who}"
            await asyncio.to_thread(
                jobs.finish_job,
                self.db,
                job.id,
                {"reason": reason, "lease_holder": who},
                "skipped",
            )
            logger.info("retrain job %s skipped: %s", job.id, reason)
            return RetrainedModel(
                model_name=self.model_name,
                status="skipped",
                job_id=job.id,
                auto_deploy_threshold=thresholds,
                champion_version=champion.semver if champion else None,
                reason=reason,
            )
        try:
            return await asyncio.to_thread(
                self._run_job,
                job.id,
                owner,
                inputs,
                config,
                champion,
                data_source,
                thresholds,
                register,
                trigger,
            )
        finally:
            await asyncio.to_thread(jobs.release_lease, self.db, key, owner)

    def _run_job(
        self,
        job_id: str,
        owner: str,
        inputs: dict[str, Any],
        config: dict[str, Any],
        champion: Champion | None,
        data_source: str | Path,
        thresholds: dict[str, float],
        register: bool,
        trigger: str,
    ) -> RetrainedModel:
        jobs.start_job(self.db, job_id, owner=owner)
        stage = "data"
        try:
            with Heartbeat(
                self.db,
                job_id,
                lease=lease_key(self.model_name),
                interval_s=self.heartbeat_s,
                ttl=self.lease_ttl,
                owner=owner,
            ):
                resolved = resolve_data(
                    data_source,
                    model_type=config["model_type"],
                    target=config["target"],
                    hyperparameters=config["hyperparameters"],
                    config_spec=inputs["data"]["spec"] if self.config is not None else None,
                    champion_spec=champion.data_spec if champion else None,
                    window=inputs["data"]["window"],
                    settings=self.settings,
                )
                stage = "training"
                trainer = ModelTrainer(
                    model_type=config["model_type"],
                    algorithm=config["algorithm"],
                    hyperparameters=config["hyperparameters"],
                    validation_strategy=inputs["validation_strategy"],
                    n_splits=int(config["n_splits"]),
                    random_state=int(inputs["seed"]),
                    settings=self.settings,
                )
                result = trainer.train_sync(
                    resolved.data.train,
                    target=config["target"],
                    model_name=self.model_name,
                    data_version=resolved.data.data_version,
                    feature_set_versions=resolved.data.feature_set_versions,
                )
        except BaseException as exc:
            jobs.fail_job(self.db, job_id, exc, outcome={"stage": stage})
            raise
        meets, misses = _meets(_finite(result.metrics), thresholds)
        training_config = _json_safe(
            {
                "model_type": result.model_type,
                "algorithm": result.algorithm,
                "hyperparameters": result.hyperparameters,
                "target": result.target,
                "validation_strategy": result.validation_strategy,
                "n_splits": config["n_splits"],
                "seed": inputs["seed"],
                "data_version": resolved.data.data_version,
            }
        )
        model = RetrainedModel(
            model_name=self.model_name,
            status="trained",
            job_id=job_id,
            result=result,
            test_data=resolved.data.test,
            auto_deploy_threshold=thresholds,
            meets_threshold=meets,
            champion_version=champion.semver if champion else None,
            reason=f"trigger: {trigger}",
            training_config=training_config,
            training_data=resolved.spec,
        )
        with self.db.session() as session:
            row = session.get(TrainingJob, job_id)
            if row is not None:
                row.inputs = {**row.inputs, "data": {**row.inputs["data"], **resolved.record}}
        outcome = _json_safe(
            {
                "metrics": _finite(result.metrics),
                "run_id": result.run_id,
                "model_uri": result.model_uri,
                "training_seconds": result.training_seconds,
                "rows": result.n_rows,
                "meets_auto_deploy_threshold": meets,
                "threshold_misses": misses,
                "champion_version": model.champion_version,
                "registered_version": None,
                "comparison": None,
                "deployment": None,
            }
        )
        jobs.finish_job(self.db, job_id, outcome)
        if register:
            self._register(model)
        logger.info("retrain job %s of %s: %s", job_id, self.model_name, _finite(result.metrics))
        return model

    # --- validation -------------------------------------------------------------------------

    async def validate_new_model(
        self,
        new_model: RetrainedModel | TrainingResult,
        baseline_model: Any = "production",
        test_data: pd.DataFrame | None = None,
        *,
        thresholds: Mapping[str, float] | None = None,
    ) -> ModelComparison:
        """Score the challenger and the baseline on the same holdout and compare them.

        Args:
            new_model: :meth:`retrain`'s result (or a TrainingResult).
            baseline_model: The champion: a TrainingResult, a model loaded from the
                registry (``registry.load_model(...)``, an MLflow pyfunc model of
                retailml), a :class:`ModelVersion`, a registry reference of this
                model (an alias such as ``"production"``, which falls back to the latest
                active version while no version holds it, or a semantic version),
                a fitted retailml estimator, or None (no champion: the challenger
                is better when it meets the threshold).
            test_data: The holdout; default the one :meth:`retrain` kept back.
                Forecasts score the periods after each model's own training data.
            thresholds: Auto-deploy limits (default the retrain's).

        Returns:
            A :class:`ModelComparison` (``is_better``, both models' metrics, deltas).

        Raises:
            ConfigError: without test data, or for a baseline of an unknown kind.
            NotFoundError: for a registry reference that names nothing.
        """
        return await asyncio.to_thread(
            self.validate_new_model_sync, new_model, baseline_model, test_data, thresholds
        )

    def validate_new_model_sync(
        self,
        new_model: RetrainedModel | TrainingResult,
        baseline_model: Any = "production",
        test_data: pd.DataFrame | None = None,
        thresholds: Mapping[str, float] | None = None,
    ) -> ModelComparison:
        """:meth:`validate_new_model` without an event loop."""
        model = self._as_retrained(new_model)
        if model.result is None:
            raise StateError(
                problem(
                    "a trained challenger",
                    f"retrain job {model.job_id} was {model.status} ({model.reason})",
                    "retrain again once the other worker finished",
                    subject="validate_new_model",
                )
            )
        test = test_data if test_data is not None else model.test_data
        if test is None or len(test) == 0:
            raise ConfigError(
                problem(
                    "test_data: the holdout both models are scored on",
                    "none (and the retrain kept no holdout)",
                    "pass test_data=<recent rows the challenger did not train on>",
                    subject="validate_new_model",
                )
            )
        limits = (
            _check_thresholds(thresholds, "thresholds")
            if thresholds is not None
            else dict(model.auto_deploy_threshold)
        )
        validator = ModelValidator()
        new_metrics = _finite(
            validator.validate_model(
                model=model.result, test_data=test, validation_config={}
            ).metrics
        )
        baseline, label = self._baseline(baseline_model)
        base_metrics: dict[str, float] = {}
        if baseline is not None:
            subject, config = baseline
            base_metrics = _finite(
                validator.validate_model(
                    model=subject, test_data=test, validation_config=config
                ).metrics
            )
        deltas = {
            name: new_metrics[name] - base_metrics[name]
            for name in new_metrics
            if name in base_metrics
        }
        primary = make_task(model.result.model_type).primary_metric
        wanted = tuple(limits) or ((primary,) if primary else ())
        decided_on = tuple(m for m in wanted if m in new_metrics and m in base_metrics)
        meets, misses = _meets(new_metrics, limits)
        if baseline is None:
            is_better = meets
            reason = "no champion to compare with; " + (
                "the challenger meets the threshold" if meets else "misses " + ", ".join(misses)
            )
        elif not decided_on:
            is_better = False
            reason = (
                f"no metric among {list(wanted)} is defined for both models on the holdout; "
                "not better"
            )
        else:
            worse, better = [], []
            for name in decided_on:
                lower = is_lower_better(name)
                gain = -deltas[name] if lower else deltas[name]
                text = f"{name} {new_metrics[name]:.4g} vs {base_metrics[name]:.4g}"
                if gain < 0:
                    worse.append(text)
                elif gain > 0:
                    better.append(text)
            is_better = not worse and bool(better) and meets
            if worse:
                reason = f"worse than {label}: " + ", ".join(worse)
            elif not better:
                reason = f"no better than {label} on {', '.join(decided_on)}"
            elif not meets:
                reason = f"better than {label} but misses the threshold: " + ", ".join(misses)
            else:
                reason = f"better than {label}: " + ", ".join(better)
        comparison = ModelComparison(
            is_better=is_better,
            metrics_new=new_metrics,
            metrics_baseline=base_metrics,
            deltas=deltas,
            decided_on=decided_on,
            meets_threshold=meets,
            baseline=label,
            n_rows=len(test),
            reason=reason,
        )
        model.comparison = comparison
        if isinstance(new_model, RetrainedModel):
            new_model.comparison = comparison
        if model.job_id:
            with contextlib.suppress(NotFoundError):
                update_outcome(self.db, model.job_id, comparison=comparison.to_dict())
        return comparison

    def _as_retrained(self, model: RetrainedModel | TrainingResult) -> RetrainedModel:
        if isinstance(model, RetrainedModel):
            return model
        if isinstance(model, TrainingResult):
            return RetrainedModel(
                model_name=self.model_name, status="trained", job_id="", result=model
            )
        raise ConfigError(
            problem(
                "the result of retrain() or a TrainingResult",
                type(model).__name__,
                "pass new_model=await pipeline.retrain(...)",
                subject="new_model",
            )
        )

    def _baseline(self, baseline: Any) -> tuple[tuple[Any, dict[str, Any]] | None, str | None]:
        """``((what ModelValidator scores, its validation_config), label)``."""
        if baseline is None:
            return None, None
        if isinstance(baseline, RetrainedModel):
            baseline = baseline.result
        if isinstance(baseline, TrainingResult):
            return (baseline, {}), f"{baseline.model_name} ({baseline.algorithm})"
        label = None
        if isinstance(baseline, ModelVersion):
            label = f"{baseline.model_name} {baseline.version}"
            baseline = self.registry.load_model(baseline.model_name, baseline.version)
        elif isinstance(baseline, str):
            try:
                version = self.registry.get_model_version(self.model_name, baseline)
            except NotFoundError:
                if baseline != "production":
                    raise
                # Nothing holds the alias yet: the champion is the latest active version.
                version = self.registry.get_model_version(self.model_name, None)
                baseline = "latest"
            label = f"{baseline} {version.version}" if baseline != version.version else baseline
            baseline = self.registry.load_model(self.model_name, version.version)
        if isinstance(baseline, PyFuncModel):
            baseline = baseline.unwrap_python_model()  # type: ignore[no-untyped-call]
            label = label or "the loaded model"
        if isinstance(baseline, RetailMLModel):
            config = {"target": baseline.target} if baseline.target else {}
            return (baseline.model, config), label or baseline.model_type
        if hasattr(baseline, "predict") and hasattr(baseline, "get_params"):
            return (baseline, {}), label or type(baseline).__name__
        raise ConfigError(
            problem(
                "a baseline: a TrainingResult, a model loaded from the registry, a "
                "ModelVersion, a registry alias or version, a fitted retailml estimator, or None",
                f"{type(baseline).__name__}",
                "pass baseline_model='production'",
                subject="baseline_model",
            )
        )

    # --- deployment -------------------------------------------------------------------------

    async def deploy_new_model(
        self,
        model: RetrainedModel | TrainingResult,
        deployment_strategy: str = "canary",
        *,
        environment: str = "production",
        business_justification: str | None = None,
        wait: bool = False,
        timeout_s: float | None = None,
    ) -> DeploymentOutcome:
        """Register the challenger and roll it out through the governed deployment path.

        A challenger that was not compared yet is first compared with the
        production version on its holdout; one that is not better is never
        deployed (``status="refused"``). Production needs an approved
        governance request: without one, a request for :attr:`approvers` is
        opened (or the open one reused) and ``status="awaiting_approval"`` is
        returned; call again once approved.

        Args:
            model: :meth:`retrain`'s result (or a TrainingResult).
            deployment_strategy: ``"canary"`` (default), ``"blue_green"`` or ``"direct"``.
            environment: ``"production"`` (default) or ``"staging"``.
            business_justification: The approval request's justification (default:
                the triggers and the comparison).
            wait: Watch a rollout until it is promoted or rolled back.
            timeout_s: Stop watching after this long.

        Raises:
            ConfigError: for an unknown strategy.
        """
        strategy = deployment_strategy.replace("-", "_")
        if strategy not in DEPLOYMENT_STRATEGIES:
            raise ConfigError(
                problem(
                    f"a deployment_strategy among {', '.join(DEPLOYMENT_STRATEGIES)}",
                    repr(deployment_strategy),
                    "use 'canary'",
                    subject="deploy_new_model",
                )
            )
        retrained = self._as_retrained(model)
        if retrained.result is None:
            return self._record_deployment(
                retrained,
                DeploymentOutcome(
                    "refused", self.model_name, None, strategy, "nothing was trained"
                ),
            )
        if retrained.comparison is None:
            baseline = "production" if self._current_version() is not None else None
            await self.validate_new_model(retrained, baseline, retrained.test_data)
            if isinstance(model, RetrainedModel):
                model.comparison = retrained.comparison
        comparison = retrained.comparison
        assert comparison is not None
        if not comparison.is_better:
            return self._record_deployment(
                retrained,
                DeploymentOutcome(
                    "refused",
                    self.model_name,
                    None,
                    strategy,
                    f"not deployed: {comparison.reason}",
                ),
            )
        version = await asyncio.to_thread(self._register, retrained)
        if isinstance(model, RetrainedModel):
            model.registered_version = version
        if environment == "production":
            waiting = await asyncio.to_thread(
                self._approval, retrained, version, business_justification, strategy
            )
            if waiting is not None:
                return self._record_deployment(retrained, waiting)
        outcome = await self._roll_out(version, strategy, environment, wait, timeout_s)
        return self._record_deployment(retrained, outcome)

    def _record_deployment(
        self, model: RetrainedModel, outcome: DeploymentOutcome
    ) -> DeploymentOutcome:
        if model.job_id:
            with contextlib.suppress(NotFoundError):
                update_outcome(self.db, model.job_id, deployment=outcome.to_dict())
        logger.info("deployment of %s: %s (%s)", self.model_name, outcome.status, outcome.reason)
        return outcome

    def _register(self, model: RetrainedModel) -> str:
        """Register the challenger once per job; returns its semantic version."""
        assert model.result is not None
        if model.registered_version is not None:
            return model.registered_version
        if model.job_id:
            with self.db.session() as session:
                rows = list(
                    session.query(ModelVersionRecord).filter(
                        ModelVersionRecord.model_name == self.model_name
                    )
                )
            for row in rows:
                if (row.tags or {}).get(JOB_TAG) == model.job_id:
                    model.registered_version = row.semver
                    return row.semver
        metadata = {
            "training_config": model.training_config,
            "training_data": model.training_data,
            "performance_metrics": _finite(model.result.metrics),
            "model_type": model.result.model_type,
            "algorithm": model.result.algorithm,
            "run_id": model.result.run_id,
            "retrain_job": model.job_id or None,
            "champion_version": model.champion_version,
            "comparison": model.comparison.to_dict() if model.comparison else None,
        }
        tags = {"automated_retrain": "true", **({JOB_TAG: model.job_id} if model.job_id else {})}
        for _ in range(3):
            semver = self._next_version()
            try:
                registered = self.registry.register_model(
                    self.model_name, semver, model.result, metadata=metadata, tags=tags
                )
            except StateError:  # another process registered that version just now
                continue
            model.registered_version = registered.version
            if model.job_id:
                update_outcome(self.db, model.job_id, registered_version=registered.version)
            return registered.version
        raise StateError(
            problem(
                f"a free version number for {self.model_name!r}",
                "three concurrent registrations took the next ones",
                "retry the deployment",
                subject="registry",
            )
        )

    def _next_version(self) -> str:
        """The next minor version above every version ever registered (deleted ones too)."""
        with self.db.session() as session:
            semvers = [
                row.semver
                for row in session.query(ModelVersionRecord).filter(
                    ModelVersionRecord.model_name == self.model_name
                )
            ]
        if not semvers:
            return "1.0.0"
        major, minor, _patch, _pre, _ = parse_semver(max(semvers, key=parse_semver))
        return f"{major}.{minor + 1}.0"

    def _approval(
        self,
        model: RetrainedModel,
        version: str,
        justification: str | None,
        strategy: str,
    ) -> DeploymentOutcome | None:
        """None when approved; else the open request and its pending roles."""
        governance = ModelGovernance(self.settings, db=self.db)
        if governance.is_approved(self.model_name, version, "production"):
            return None
        open_requests = [
            r
            for r in governance.list_requests(self.model_name)
            if r.model_version == version
            and r.deployment_target == "production"
            and r.status == "pending"
        ]
        if open_requests:
            request = open_requests[0]
        else:
            comparison = model.comparison.reason if model.comparison else "not compared"
            request = governance.request_approval(
                model_name=self.model_name,
                model_version=version,
                deployment_target="production",
                business_justification=justification
                or f"automated retrain (job {model.job_id or 'manual'}): {comparison}",
                risk_assessment={
                    "automated": True,
                    "strategy": strategy,
                    "champion_version": model.champion_version,
                    "metrics": _finite(model.result.metrics) if model.result else {},
                },
                approvers=list(self.approvers),
            )
        return DeploymentOutcome(
            "awaiting_approval",
            self.model_name,
            version,
            strategy,
            f"approval request {request.id} waits for {', '.join(request.pending)}",
            approval_request_id=request.id,
            pending_approvers=request.pending,
        )

    async def _roll_out(
        self,
        version: str,
        strategy: str,
        environment: str,
        wait: bool,
        timeout_s: float | None,
    ) -> DeploymentOutcome:
        server = ModelServer(environment, self.settings, registry=self.registry)
        try:
            active = await asyncio.to_thread(server.active_deployment, self.model_name)
            if active is not None and active.version == version:
                return DeploymentOutcome(
                    "deployed",
                    self.model_name,
                    version,
                    strategy,
                    f"{version} already serves {environment}",
                    deployment_id=active.id,
                )
            if active is None or strategy == "direct":
                deployment = await server.deploy_model(
                    config={"model_name": self.model_name, "model_version": version}
                )
                ok = deployment.status == "active"
                return DeploymentOutcome(
                    "deployed" if ok else "rolled_back",
                    self.model_name,
                    version,
                    strategy,
                    f"{version} serves {environment}"
                    if ok
                    else f"health checks failed: {deployment.reason}",
                    deployment_id=deployment.id,
                )
            rollout = await server.blue_green_deploy(
                self.model_name,
                version,
                active.version,
                self.traffic_split or {"blue": 90, "green": 10},
                self.rollback_threshold,
                strategy=strategy,
            )
            if wait and rollout.running:
                rollout = await server.watch_rollout(rollout.id, timeout_s=timeout_s)
            status = {"running": "rollout_started", "promoted": "deployed"}.get(
                rollout.state, "rolled_back"
            )
            return DeploymentOutcome(
                status,
                self.model_name,
                version,
                strategy,
                f"{strategy} rollout {rollout.id} {rollout.state}: {rollout.current_version} "
                f"-> {version}" + (f" ({rollout.reason})" if rollout.reason else ""),
                rollout_id=rollout.id,
            )
        except StateError as exc:
            return DeploymentOutcome("blocked", self.model_name, version, strategy, str(exc))
        finally:
            server.close()

    async def resume_approved_deployment(self) -> DeploymentOutcome | None:
        """Roll out the latest challenger that waited for approval, once it is approved.

        Looks at the model's newest retrain job with a deployment decision: when
        that decision is ``awaiting_approval`` and every approver has approved
        its version since, the version is rolled out with the strategy it was
        meant for, and the job's outcome records the new decision. The
        scheduler calls it every tick.

        Returns:
            The deployment outcome, or None when nothing was waiting or the
            approval is still pending.
        """
        waiting = await asyncio.to_thread(self._approved_waiting_job)
        if waiting is None:
            return None
        job_id, version, strategy = waiting
        outcome = await self._roll_out(version, strategy, "production", False, None)
        await asyncio.to_thread(update_outcome, self.db, job_id, deployment=outcome.to_dict())
        logger.info("approved %s %s: %s", self.model_name, version, outcome.status)
        return outcome

    def _approved_waiting_job(self) -> tuple[str, str, str] | None:
        """``(job id, version, strategy)`` of the newest decision, if it waits and is approved."""
        for job in jobs.list_jobs(self.db, model_name=self.model_name, status="succeeded"):
            if job.kind != "retrain" or not job.outcome.get("deployment"):
                continue
            decision = dict(job.outcome["deployment"])
            version = job.outcome.get("registered_version")
            if decision.get("status") != "awaiting_approval" or not version:
                return None  # the newest decision is final: nothing waits
            governance = ModelGovernance(self.settings, db=self.db)
            if not governance.is_approved(self.model_name, str(version), "production"):
                return None
            return job.id, str(version), str(decision.get("strategy") or "canary")
        return None

    # --- one pass ---------------------------------------------------------------------------

    async def run(
        self,
        *,
        force: bool = False,
        data_source: str | Path = "production",
        validation_strategy: str | None = None,
        auto_deploy_threshold: Mapping[str, float] | None = None,
        auto_deploy: bool = True,
        deployment_strategy: str = "canary",
        now: datetime | None = None,
    ) -> RetrainRun:
        """Check the triggers, and when one fired (or ``force``): retrain, compare with
        the champion on the holdout, and deploy when better (``auto_deploy``)."""
        decision = None
        if not force:
            decision = await self.check_retrain_conditions(now)
            if not decision.should_retrain:
                return RetrainRun(decision)
        model = await self.retrain(
            data_source=data_source,
            validation_strategy=validation_strategy,
            auto_deploy_threshold=auto_deploy_threshold,
            trigger=decision.trigger if decision else "manual",
        )
        if not model.trained:
            return RetrainRun(decision, model)
        current = await asyncio.to_thread(self._current_version)
        baseline = "production" if current is not None else None
        comparison = await self.validate_new_model(model, baseline, model.test_data)
        deployment = None
        if auto_deploy:
            deployment = await self.deploy_new_model(model, deployment_strategy)
        elif model.job_id:
            await asyncio.to_thread(
                update_outcome,
                self.db,
                model.job_id,
                deployment={"status": "not_requested", "reason": "auto-deploy is off"},
            )
        return RetrainRun(decision, model, comparison, deployment)
