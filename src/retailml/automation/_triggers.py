"""Retraining triggers: what each one means, how it is parsed and how it is measured.

=========================  =====================================================================
trigger                    fires when
=========================  =====================================================================
``schedule``               a time of the schedule has passed since the model was last retrained
                           (its latest ``retrain`` job that ran, else the registration of the
                           production version). ``"hourly"``, ``"daily"``, ``"weekly"``,
                           ``"monthly"`` or a 5-field cron expression, in UTC.
``performance_threshold``  the latest monitored value of a metric of the production version
                           (``model_performance``, written by ModelMonitor) is worse than its
                           limit: above it for error metrics (``mape``, ``mae`` ...), below it
                           for scores (``f1``, ``silhouette_score`` ...).
``data_drift_threshold``   the share of drifted columns (``share_drifted``) of the latest
                           data-drift report of the production version (``drift_reports``,
                           written by ``ModelMonitor.detect_data_drift``) exceeds the limit.
``min_new_data_points``    at least this many silver transaction rows were ingested after the
                           data the production version was trained on: the row count of the
                           latest ``silver.transactions`` data version minus that of the version
                           recorded on the training run (``retailml.data_version``; without
                           one, the version current when the production version was registered).
=========================  =====================================================================

Evidence a retrain already acted upon does not fire again: performance values
and drift reports count only when recorded after the model's last retrain job
started, and new rows are counted from the data the last successful retrain
trained on when that is newer than the champion's. So a challenger that lost
against the champion is not retrained at every scheduler tick; new evidence
(a fresh evaluation, a new drift report, more rows) fires the trigger again.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from croniter import croniter  # type: ignore[import-untyped]
from sqlalchemy import select

from retailml.core.db import DataVersion, PlatformDB, as_utc
from retailml.core.db_jobs import TrainingJob
from retailml.core.db_monitoring import DriftReportRecord, ModelPerformanceRecord
from retailml.core.errors import ConfigError, problem
from retailml.data.ingest import SILVER_TABLE
from retailml.training._validation import HIGHER_IS_BETTER, LOWER_IS_BETTER

__all__ = [
    "SCHEDULE_SHORTHANDS",
    "TRIGGER_KEYS",
    "FiredTrigger",
    "Triggers",
    "is_lower_better",
    "next_due",
    "parse_triggers",
]

#: The trigger keys of the guide's ``triggers`` dict.
TRIGGER_KEYS: Final = (
    "schedule",
    "performance_threshold",
    "data_drift_threshold",
    "min_new_data_points",
)
#: Schedule shorthands and the cron expression each stands for (UTC).
SCHEDULE_SHORTHANDS: Final = {
    "hourly": "0 * * * *",
    "daily": "0 0 * * *",
    "weekly": "0 0 * * 0",
    "monthly": "0 0 1 * *",
}
#: The job kinds whose start counts as "retrained" for the schedule.
_RAN: Final = ("running", "succeeded", "failed", "abandoned")


def is_lower_better(metric: str) -> bool:
    """True for error metrics (a maximum), False for scores (a minimum).

    Raises:
        ConfigError: for a metric of unknown direction, listing the known ones.
    """
    if metric in LOWER_IS_BETTER:
        return True
    if metric in HIGHER_IS_BETTER:
        return False
    raise ConfigError(
        problem(
            f"a metric among {', '.join(sorted(LOWER_IS_BETTER | HIGHER_IS_BETTER))}",
            repr(metric),
            "use one of those (errors are maxima, scores minima)",
            subject="metric",
        )
    )


@dataclass(frozen=True)
class Triggers:
    """Parsed triggers; an absent trigger is None (or empty)."""

    schedule: str | None = None
    cron: str | None = None
    performance_threshold: dict[str, float] = field(default_factory=dict)
    data_drift_threshold: float | None = None
    min_new_data_points: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The triggers as given (JSON-safe)."""
        out: dict[str, Any] = {}
        if self.schedule is not None:
            out["schedule"] = self.schedule
        if self.performance_threshold:
            out["performance_threshold"] = dict(self.performance_threshold)
        if self.data_drift_threshold is not None:
            out["data_drift_threshold"] = self.data_drift_threshold
        if self.min_new_data_points is not None:
            out["min_new_data_points"] = self.min_new_data_points
        return out


@dataclass(frozen=True)
class FiredTrigger:
    """One trigger's evaluation.

    Attributes:
        trigger: ``schedule``, ``performance_threshold``, ``data_drift_threshold`` or
            ``min_new_data_points``.
        fired: Whether it asks for a retrain.
        value: What was measured (a metric value, a share, a row count, or for the
            schedule the time it was due, ISO 8601); None when nothing could be measured.
        limit: The limit it was held against (the cron expression for the schedule).
        detail: A readable account, e.g. ``"mape 0.31 > 0.2 (production 1.0.0)"``.
        metric: The metric of a performance trigger.
    """

    trigger: str
    fired: bool
    value: float | str | None
    limit: float | str | None
    detail: str
    metric: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe form."""
        return {
            "trigger": self.trigger,
            "fired": self.fired,
            "value": self.value,
            "limit": self.limit,
            "detail": self.detail,
            "metric": self.metric,
        }


def _real(value: object) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _cron(schedule: object, problems: list[str]) -> str | None:
    if not isinstance(schedule, str) or not schedule.strip():
        problems.append(
            problem(
                "a schedule: hourly, daily, weekly, monthly or a 5-field cron expression",
                repr(schedule),
                "e.g. 'weekly' or '0 3 * * 1' (Mondays 03:00 UTC)",
                subject="triggers['schedule']",
            )
        )
        return None
    text = schedule.strip()
    expression = SCHEDULE_SHORTHANDS.get(text.lower(), text)
    if len(expression.split()) != 5 or not croniter.is_valid(expression):
        problems.append(
            problem(
                "a schedule: hourly, daily, weekly, monthly or a 5-field cron expression",
                repr(schedule),
                "e.g. 'weekly' or '0 3 * * 1' (minute hour day-of-month month day-of-week)",
                subject="triggers['schedule']",
            )
        )
        return None
    return expression


def parse_triggers(triggers: Mapping[str, Any] | None) -> Triggers:
    """Check the guide's ``triggers`` dict as a whole; every problem is reported at once.

    Raises:
        ConfigError: listing each unknown key and bad value.
    """
    if triggers is None:
        return Triggers()
    if not isinstance(triggers, Mapping):
        raise ConfigError(
            problem(
                "triggers as a dict",
                type(triggers).__name__,
                "pass e.g. {'schedule': 'weekly', 'performance_threshold': {'mape': 0.2}}",
                subject="triggers",
            )
        )
    problems: list[str] = []
    unknown = [key for key in triggers if key not in TRIGGER_KEYS]
    if unknown:
        problems.append(
            problem(
                f"keys among {', '.join(TRIGGER_KEYS)}",
                f"unknown {', '.join(map(repr, unknown))}",
                "rename or drop them",
                subject="triggers",
            )
        )
    schedule = triggers.get("schedule")
    cron = _cron(schedule, problems) if schedule is not None else None
    thresholds: dict[str, float] = {}
    raw = triggers.get("performance_threshold")
    if raw is not None:
        if not isinstance(raw, Mapping) or not raw:
            problems.append(
                problem(
                    "a dict of metric -> limit",
                    repr(raw),
                    "pass e.g. {'mape': 0.20}",
                    subject="triggers['performance_threshold']",
                )
            )
        else:
            for metric, limit in raw.items():
                try:
                    is_lower_better(str(metric))
                except ConfigError as exc:
                    problems.append(str(exc))
                    continue
                if not _real(limit):
                    problems.append(
                        problem(
                            "a finite number as the limit",
                            f"{metric!r}: {limit!r}",
                            "pass e.g. {'mape': 0.20}",
                            subject="triggers['performance_threshold']",
                        )
                    )
                    continue
                thresholds[str(metric)] = float(limit)
    drift = triggers.get("data_drift_threshold")
    if drift is not None and (not _real(drift) or not 0 <= float(drift) < 1):
        problems.append(
            problem(
                "a share of drifted columns in [0, 1)",
                repr(drift),
                "pass e.g. 0.05 (retrain when more than 5 % of the columns drifted)",
                subject="triggers['data_drift_threshold']",
            )
        )
    rows = triggers.get("min_new_data_points")
    if rows is not None and (
        not isinstance(rows, numbers.Integral) or isinstance(rows, bool) or int(rows) < 1
    ):
        problems.append(
            problem(
                "a whole number of rows >= 1",
                repr(rows),
                "pass e.g. 1000",
                subject="triggers['min_new_data_points']",
            )
        )
    if problems:
        count = len(problems)
        raise ConfigError(
            f"{count} problem{'s' if count != 1 else ''} in triggers:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
    return Triggers(
        schedule=str(schedule).strip() if schedule is not None else None,
        cron=cron,
        performance_threshold=thresholds,
        data_drift_threshold=float(drift) if drift is not None else None,
        min_new_data_points=int(rows) if rows is not None else None,
    )


def next_due(cron: str, after: datetime) -> datetime:
    """The first time of ``cron`` strictly after ``after`` (UTC)."""
    due: datetime = croniter(cron, as_utc(after)).get_next(datetime)
    return as_utc(due)


# --- measurements ---------------------------------------------------------------------------


def last_retrain(db: PlatformDB, model_name: str) -> datetime | None:
    """When the model's latest retrain job that ran was created, or None."""
    with db.session() as session:
        created = session.scalars(
            select(TrainingJob.created_at)
            .where(
                TrainingJob.model_name == model_name,
                TrainingJob.kind == "retrain",
                TrainingJob.status.in_(_RAN),
            )
            .order_by(TrainingJob.created_at.desc())
            .limit(1)
        ).first()
    return as_utc(created) if created is not None else None


def last_retrain_data_version(db: PlatformDB, model_name: str) -> str | None:
    """The silver data version the model's latest successful retrain trained on."""
    with db.session() as session:
        inputs = session.scalars(
            select(TrainingJob.inputs)
            .where(
                TrainingJob.model_name == model_name,
                TrainingJob.kind == "retrain",
                TrainingJob.status == "succeeded",
            )
            .order_by(TrainingJob.created_at.desc())
            .limit(1)
        ).first()
    data = (inputs or {}).get("data") or {}
    version = data.get("data_version")
    return str(version) if version else None


def check_schedule(
    cron: str, schedule: str, since: datetime | None, since_what: str, now: datetime
) -> FiredTrigger:
    """Fire when a time of the schedule passed after ``since`` (always, without one)."""
    if since is None:
        return FiredTrigger(
            "schedule",
            True,
            now.isoformat(),
            cron,
            f"schedule {schedule!r}: never retrained or registered, due now",
        )
    due = next_due(cron, since)
    fired = due <= now
    when = f"{since_what} at {since:%Y-%m-%d %H:%M} UTC"
    detail = (
        f"schedule {schedule!r} was due at {due:%Y-%m-%d %H:%M} UTC ({when})"
        if fired
        else f"schedule {schedule!r} next due at {due:%Y-%m-%d %H:%M} UTC ({when})"
    )
    return FiredTrigger("schedule", fired, due.isoformat(), cron, detail)


def check_performance(
    db: PlatformDB,
    model_name: str,
    version: str | None,
    metric: str,
    limit: float,
    since: datetime | None = None,
) -> FiredTrigger:
    """Fire when the latest monitored ``metric`` of the version is worse than ``limit``.

    Only values recorded after ``since`` (the last retrain) count: older ones were
    already acted upon, so a challenger that lost does not cause a retrain every tick.
    """
    lower = is_lower_better(metric)
    if version is None:
        return FiredTrigger(
            "performance_threshold",
            False,
            None,
            limit,
            f"{metric}: no production version to monitor",
            metric,
        )
    record = ModelPerformanceRecord
    query = select(record.value, record.window_end).where(
        record.model_name == model_name,
        record.model_version == version,
        record.metric == metric,
    )
    if since is not None:
        query = query.where(record.recorded_at > since)
    with db.session() as session:
        row = session.execute(
            query.order_by(record.window_end.desc(), record.id.desc()).limit(1)
        ).first()
    if row is None or row[0] is None or not math.isfinite(row[0]):
        state = "no monitored value" if row is None else "the latest value is undefined"
        if row is None and since is not None:
            state += f" since the last retrain ({since:%Y-%m-%d %H:%M} UTC)"
        return FiredTrigger(
            "performance_threshold",
            False,
            None,
            limit,
            f"{metric}: {state} for {version}",
            metric,
        )
    value = float(row[0])
    fired = value > limit if lower else value < limit
    sign = (">" if fired else "<=") if lower else ("<" if fired else ">=")
    return FiredTrigger(
        "performance_threshold",
        fired,
        value,
        limit,
        f"{metric} {value:.4g} {sign} {limit:g} (production {version}, "
        f"window ending {as_utc(row[1]):%Y-%m-%d})",
        metric,
    )


def check_drift(
    db: PlatformDB,
    model_name: str,
    version: str | None,
    limit: float,
    since: datetime | None = None,
) -> FiredTrigger:
    """Fire when the latest drift report's ``share_drifted`` exceeds ``limit``.

    Only reports made after ``since`` (the last retrain) count.
    """
    if version is None:
        return FiredTrigger(
            "data_drift_threshold", False, None, limit, "drift: no production version"
        )
    record = DriftReportRecord
    query = select(record).where(record.model_name == model_name, record.model_version == version)
    if since is not None:
        query = query.where(record.created_at > since)
    with db.session() as session:
        row = session.scalars(query.order_by(record.created_at.desc()).limit(1)).first()
        if row is None:
            after = (
                f" since the last retrain ({since:%Y-%m-%d %H:%M} UTC)" if since is not None else ""
            )
            return FiredTrigger(
                "data_drift_threshold",
                False,
                None,
                limit,
                f"drift: no drift report for production {version}{after}",
            )
        share = float(row.share_drifted)
        columns = list((row.details or {}).get("drifted_columns", []))
        n_drifted, n_columns = row.n_drifted, row.n_columns
    fired = share > limit
    detail = (
        f"share of drifted columns {share:.3g} {'>' if fired else '<='} {limit:g} "
        f"({n_drifted}/{n_columns}"
        + (f": {', '.join(map(str, columns))}" if columns else "")
        + f"; production {version})"
    )
    return FiredTrigger("data_drift_threshold", fired, share, limit, detail)


def silver_rows_at(db: PlatformDB, version: str | None, at: datetime | None) -> int | None:
    """Silver rows of a data version, else of the version current at ``at``; None if unknown."""
    with db.session() as session:
        if version:
            rows = session.scalars(
                select(DataVersion.row_count).where(
                    DataVersion.table_name == SILVER_TABLE, DataVersion.version == version
                )
            ).first()
            if rows is not None:
                return int(rows)
        if at is not None:
            rows = session.scalars(
                select(DataVersion.row_count)
                .where(DataVersion.table_name == SILVER_TABLE, DataVersion.created_at <= at)
                .order_by(DataVersion.id.desc())
                .limit(1)
            ).first()
            return int(rows) if rows is not None else 0
    return None


def check_new_data(
    db: PlatformDB,
    limit: int,
    trained_version: str | None,
    trained_at: datetime | None,
    model_label: str,
    retrained_version: str | None = None,
) -> FiredTrigger:
    """Fire when at least ``limit`` silver rows arrived after the champion's training data
    (or after the data the last successful retrain trained on, when that is newer)."""
    latest = db.latest_data_version(SILVER_TABLE)
    current = int(latest.row_count) if latest is not None else 0
    base = silver_rows_at(db, trained_version, trained_at)
    if base is None:
        base = 0
        basis = "no recorded training data: every silver row counts"
    elif trained_version and silver_rows_at(db, trained_version, None) is not None:
        basis = f"trained on silver {trained_version[:12]}"
    else:
        basis = f"silver when {model_label} was registered"
    retrained = silver_rows_at(db, retrained_version, None) if retrained_version else None
    if retrained is not None and retrained > base:
        base = retrained
        basis = f"last retrained on silver {str(retrained_version)[:12]}"
    new = max(current - base, 0)
    fired = new >= limit
    detail = f"{new:,} new silver rows {'>=' if fired else '<'} {limit:,} ({basis})"
    return FiredTrigger("min_new_data_points", fired, float(new), float(limit), detail)
