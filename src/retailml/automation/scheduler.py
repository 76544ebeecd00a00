"""The retraining scheduler: ``retailml scheduler`` runs the schedules of a YAML file.

The file (default ``retraining.yaml`` in the working directory) lists the
models to watch, each with the guide's triggers and how to retrain it::

    stale_after_seconds: 300        # a running job silent this long is abandoned
    heartbeat_seconds: 10           # how often a running job proves it is alive
    models:
      sales_forecast:
        triggers:
          schedule: weekly            # hourly, daily, weekly, monthly or "0 3 * * 1"
          performance_threshold: {mape: 0.20}
          data_drift_threshold: 0.05
          min_new_data_points: 1000
        config: configs/sales_forecast.yaml   # optional: train from this config
        data_source: production       # or a Parquet/CSV path
        data_window: 2y
        validation_strategy: holdout
        auto_deploy: true             # deploy (governed) when better than the champion
        auto_deploy_threshold: {mape: 0.15}
        deployment_strategy: canary
        approvers: [lead_data_scientist, ml_engineer, business_owner]

Every tick first marks running jobs whose heartbeat is older than
``stale_after_seconds`` as ``abandoned`` (their worker died) and frees the
retrain leases those workers held. Then, for each model, a challenger that
waited for approval and is now approved is rolled out
(:meth:`~retailml.automation.retraining.AutoRetrainingPipeline.resume_approved_deployment`),
and :meth:`~retailml.automation.retraining.AutoRetrainingPipeline.run` runs:
its triggers are checked and, when one fired, it is retrained under the
lease ``retrain:<model>``, compared with the champion and, with
``auto_deploy``, deployed through governance (or it waits for approval). Several schedulers may run
against one platform database: the lease keeps them off the same model.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from retailml.automation._jobs import release_abandoned_leases
from retailml.automation._triggers import parse_triggers
from retailml.automation.retraining import (
    DEFAULT_APPROVERS,
    AutoRetrainingPipeline,
    DeploymentOutcome,
    RetrainRun,
)
from retailml.core import jobs
from retailml.core.db import UsesPlatformDB
from retailml.core.errors import ConfigError, RetailMLError, problem
from retailml.core.io import read_yaml_mapping
from retailml.core.settings import Settings, get_settings

__all__ = [
    "DEFAULT_SCHEDULE_FILE",
    "ModelSchedule",
    "Scheduler",
    "TickReport",
    "load_schedules",
]

logger = logging.getLogger(__name__)

DEFAULT_SCHEDULE_FILE: Final = Path("retraining.yaml")
_TOP_KEYS: Final = ("models", "stale_after_seconds", "heartbeat_seconds")
_MODEL_KEYS: Final = (
    "triggers",
    "config",
    "data_source",
    "data_window",
    "validation_strategy",
    "auto_deploy",
    "auto_deploy_threshold",
    "deployment_strategy",
    "approvers",
)


@dataclass(frozen=True)
class ModelSchedule:
    """One model of the schedules file."""

    model_name: str
    triggers: dict[str, Any]
    config: str | None = None
    data_source: str = "production"
    data_window: str | None = None
    validation_strategy: str | None = None
    auto_deploy: bool = True
    auto_deploy_threshold: dict[str, float] = field(default_factory=dict)
    deployment_strategy: str = "canary"
    approvers: tuple[str, ...] = DEFAULT_APPROVERS


@dataclass(frozen=True)
class Schedules:
    """The parsed schedules file."""

    models: tuple[ModelSchedule, ...]
    stale_after_s: float = 300.0
    heartbeat_s: float = 10.0


def _positive(value: object, key: str, problems: list[str]) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        problems.append(
            problem("a positive number of seconds", repr(value), "e.g. 30", subject=key)
        )
        return None
    return float(value)


def parse_schedules(data: Mapping[str, Any], *, source: str = "schedules") -> Schedules:
    """Check a schedules mapping as a whole; every problem is reported at once.

    Raises:
        ConfigError: listing each problem.
    """
    problems: list[str] = []
    unknown = [k for k in data if k not in _TOP_KEYS]
    if unknown:
        problems.append(
            problem(f"keys among {', '.join(_TOP_KEYS)}", f"unknown {unknown}", "drop them")
        )
    models = data.get("models")
    if not isinstance(models, Mapping) or not models:
        problems.append(
            problem(
                "models: a mapping of model name -> {triggers: ..., ...}",
                repr(models),
                "add e.g. models: {sales_forecast: {triggers: {schedule: weekly}}}",
                subject="models",
            )
        )
        models = {}
    parsed: list[ModelSchedule] = []
    for name, entry in models.items():
        subject = f"models.{name}"
        if not isinstance(entry, Mapping):
            problems.append(
                problem("a mapping", repr(entry), "see retraining.yaml", subject=subject)
            )
            continue
        bad = [k for k in entry if k not in _MODEL_KEYS]
        if bad:
            problems.append(
                problem(
                    f"keys among {', '.join(_MODEL_KEYS)}",
                    f"unknown {bad}",
                    "drop them",
                    subject=subject,
                )
            )
        try:
            parse_triggers(entry.get("triggers") or {})
        except ConfigError as exc:
            problems.append(f"{subject}.triggers: {exc}")
        approvers = entry.get("approvers", list(DEFAULT_APPROVERS))
        if not isinstance(approvers, list) or not approvers:
            problems.append(
                problem(
                    "a list of approver roles",
                    repr(approvers),
                    "e.g. [ml_engineer]",
                    subject=subject,
                )
            )
            approvers = list(DEFAULT_APPROVERS)
        auto_deploy = entry.get("auto_deploy", True)
        if not isinstance(auto_deploy, bool):
            problems.append(
                problem("true or false", repr(auto_deploy), "fix auto_deploy", subject=subject)
            )
            auto_deploy = True
        parsed.append(
            ModelSchedule(
                model_name=str(name),
                triggers=dict(entry.get("triggers") or {}),
                config=str(entry["config"]) if entry.get("config") else None,
                data_source=str(entry.get("data_source") or "production"),
                data_window=str(entry["data_window"]) if entry.get("data_window") else None,
                validation_strategy=entry.get("validation_strategy"),
                auto_deploy=auto_deploy,
                auto_deploy_threshold=dict(entry.get("auto_deploy_threshold") or {}),
                deployment_strategy=str(entry.get("deployment_strategy") or "canary"),
                approvers=tuple(str(a) for a in approvers),
            )
        )
    stale = _positive(data.get("stale_after_seconds"), "stale_after_seconds", problems)
    beat = _positive(data.get("heartbeat_seconds"), "heartbeat_seconds", problems)
    if problems:
        count = len(problems)
        raise ConfigError(
            f"{source}: {count} problem{'s' if count != 1 else ''}:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
    return Schedules(tuple(parsed), stale or 300.0, beat or 10.0)


def load_schedules(path: Path = DEFAULT_SCHEDULE_FILE) -> Schedules:
    """Read and check a schedules file (see the module docstring).

    Raises:
        ConfigError: for a missing or invalid file, listing every problem.
    """
    data = read_yaml_mapping(
        path,
        subject="schedules file",
        shape="models: {<model name>: {triggers: {...}, ...}} (see `retailml scheduler --help`)",
    )
    return parse_schedules(data, source=str(path))


@dataclass
class TickReport:
    """What one scheduler tick did."""

    tick: int
    started_at: datetime
    reaped: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    runs: dict[str, RetrainRun] = field(default_factory=dict)
    resumed: dict[str, DeploymentOutcome] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe form."""
        return {
            "tick": self.tick,
            "started_at": self.started_at.isoformat(),
            "reaped": self.reaped,
            "released": self.released,
            "runs": {name: run.to_dict() for name, run in self.runs.items()},
            "resumed": {name: outcome.to_dict() for name, outcome in self.resumed.items()},
            "errors": self.errors,
        }


class Scheduler(UsesPlatformDB):
    """Runs the schedules: each tick reaps stale jobs, then checks and retrains each model.

    Args:
        schedules: The parsed schedules file.
        settings: retailml settings; default the process settings.
        stale_after_s: Overrides the file's ``stale_after_seconds``.
        heartbeat_s: Overrides the file's ``heartbeat_seconds``.
    """

    def __init__(
        self,
        schedules: Schedules,
        settings: Settings | None = None,
        *,
        stale_after_s: float | None = None,
        heartbeat_s: float | None = None,
    ) -> None:
        self.schedules = schedules
        self.settings = settings or get_settings()
        self.stale_after = timedelta(seconds=stale_after_s or schedules.stale_after_s)
        self.heartbeat_s = heartbeat_s or schedules.heartbeat_s
        if self.heartbeat_s >= self.stale_after.total_seconds():
            raise ConfigError(
                problem(
                    "a heartbeat shorter than the stale timeout",
                    f"heartbeat {self.heartbeat_s:g} s, stale after "
                    f"{self.stale_after.total_seconds():g} s",
                    "beat several times per timeout, e.g. heartbeat 10 s, stale after 300 s",
                    subject="scheduler",
                )
            )
        self.ticks = 0
        self._use_db(self.settings, None)
        self._pipelines = {
            entry.model_name: AutoRetrainingPipeline(
                entry.model_name,
                entry.triggers,
                config=entry.config,
                data_window=entry.data_window,
                approvers=entry.approvers,
                heartbeat_s=self.heartbeat_s,
                lease_ttl_s=self.stale_after.total_seconds(),
                settings=self.settings,
            )
            for entry in schedules.models
        }

    def close(self) -> None:
        """Release the database connections (the pipelines' too)."""
        for pipeline in self._pipelines.values():
            pipeline.close()
        super().close()

    async def tick(
        self, now: datetime | None = None, stop: asyncio.Event | None = None
    ) -> TickReport:
        """Reap stale jobs, then run each model's pipeline once (errors are per model)."""
        self.ticks += 1
        report = TickReport(self.ticks, (now or datetime.now(UTC)))
        reaped = await asyncio.to_thread(jobs.reap_stale_jobs, self.db, self.stale_after)
        report.reaped = [job.id for job in reaped]
        report.released = await asyncio.to_thread(release_abandoned_leases, self.db, reaped)
        for job in reaped:
            logger.warning("job %s of %s abandoned: %s", job.id, job.model_name, job.error_message)
        for entry in self.schedules.models:
            if stop is not None and stop.is_set():
                break
            pipeline = self._pipelines[entry.model_name]
            try:
                resumed = await pipeline.resume_approved_deployment()
                if resumed is not None:
                    report.resumed[entry.model_name] = resumed
                report.runs[entry.model_name] = await pipeline.run(
                    data_source=entry.data_source,
                    validation_strategy=entry.validation_strategy,
                    auto_deploy_threshold=entry.auto_deploy_threshold or None,
                    auto_deploy=entry.auto_deploy,
                    deployment_strategy=entry.deployment_strategy,
                    now=now,
                )
            except RetailMLError as exc:
                # Recorded on the failed job; the other models still run.
                report.errors[entry.model_name] = str(exc)
                logger.error("retraining %s failed: %s", entry.model_name, exc)
        return report

    async def run(
        self,
        *,
        interval_s: float = 60.0,
        max_ticks: int | None = None,
        stop: asyncio.Event | None = None,
        on_tick: Callable[[TickReport], None] | None = None,
    ) -> int:
        """Tick every ``interval_s`` until ``stop`` is set or ``max_ticks`` ran; returns ticks."""
        stop = stop or asyncio.Event()
        done = 0
        while not stop.is_set() and (max_ticks is None or done < max_ticks):
            report = await self.tick(stop=stop)
            done += 1
            if on_tick is not None:
                on_tick(report)
            if max_ticks is not None and done >= max_ticks:
                break
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
            except TimeoutError:
                continue
        return done
