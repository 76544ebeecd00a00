"""Diagnostics of a degrading model: the guide's ``src.ml.monitoring.diagnostics``.

::

    from retailml.monitoring.diagnostics import PerformanceDiagnostic

    diagnostic = PerformanceDiagnostic("sales_forecast")
    drift = await diagnostic.analyze_data_drift(time_window="30d", features="all")
    concept = await diagnostic.analyze_concept_drift(prediction_window="30d", actual_window="30d")
    health = await diagnostic.check_model_health(metrics=["accuracy", "latency", "memory_usage"])
    for step in diagnostic.generate_recommendations([drift, concept, health]):
        print(step.priority, step.action, step.reason)

Where the evidence comes from
-----------------------------
*The model*: the saved result of its newest successful training job (the
``model_dir`` a job records; ``retailml train`` records one per run), else
``<home>/artifacts/models/<model_name>`` (or ``model_path=``). Its training
inputs sample (``reference.parquet``; a forecast's training history) is the
drift reference and its cross-validated metrics are the error baseline.

*Recent data* (:meth:`~PerformanceDiagnostic.analyze_data_drift`): the last
``time_window`` of the data source the model was trained from (the job's
``data`` inputs: silver transactions, a file or a feature set, with the same
filters), prepared the way training prepared it, so reference and current
columns mean the same thing. The window ends at the newest row, so replayed
or late data is analysed like live data. Pass ``current_data=`` to compare a
frame of your own (the prediction log keeps hashes, not inputs). The
comparison is :meth:`ModelMonitor.detect_data_drift
<retailml.monitoring.model_monitor.ModelMonitor.detect_data_drift>`, and the
run is stored with the model version's drift history.

*Errors* (:meth:`~PerformanceDiagnostic.analyze_concept_drift`): the
performance time series monitoring stores (``ModelMonitor.track_performance``
/ ``performance_from_log``) compared with the training baseline, and the
Mann-Whitney test of :meth:`ModelMonitor.detect_concept_drift` between the
recent windows and the ones before.

*Health* (:meth:`~PerformanceDiagnostic.check_model_health`): the latest
recorded error against the baseline (``accuracy``), latency percentiles and
the error rate of the prediction log (``latency``), and the memory the loaded
model holds, measured as the pickled size of its state (``memory_usage``).
"""

from __future__ import annotations

import asyncio
import math
import pickle
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import pandas as pd
from sqlalchemy import select

from retailml.core.db import PlatformDB, UsesPlatformDB
from retailml.core.db_deploy import Deployment, PredictionLogEntry
from retailml.core.db_monitoring import ModelPerformanceRecord
from retailml.core.errors import ConfigError, DataValidationError, NotFoundError, problem
from retailml.core.jobs import JobRecord, list_jobs
from retailml.core.settings import Settings, get_settings
from retailml.monitoring._performance import METRICS, concept_drift, finite_or_none
from retailml.monitoring.model_monitor import ModelMonitor

__all__ = [
    "HEALTH_METRICS",
    "ConceptDriftAnalysis",
    "DataDriftAnalysis",
    "HealthCheck",
    "ModelHealth",
    "PerformanceDiagnostic",
    "Recommendation",
]

#: What :meth:`PerformanceDiagnostic.check_model_health` can check.
HEALTH_METRICS: Final = ("accuracy", "latency", "memory_usage")
#: Error metrics in the order one is picked as the model's primary metric.
_PRIMARY_ORDER: Final = ("smape", "mape", "mae", "rmse")
#: Prediction-log rows the latency check reads at most (the newest).
_LOG_ROWS: Final = 50_000
#: Version name when a model has neither a deployment nor performance records.
UNVERSIONED: Final = "unversioned"

Status = Literal["healthy", "degraded", "unknown"]


def _iso(value: datetime | pd.Timestamp | None) -> str | None:
    return None if value is None or pd.isna(value) else pd.Timestamp(value).isoformat()


# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataDriftAnalysis:
    """Drift of the model's inputs over a recent window against its training reference.

    Attributes:
        model_name: The model.
        model_version: The version the drift run is stored under.
        time_window: The window asked for.
        window_start: First row of the current data (its time column), if any.
        window_end: Last row of the current data.
        n_reference: Reference rows (training inputs sample).
        n_current: Current rows.
        drift_detected: The dataset verdict (share of drifted features >= drift_share).
        drifted_features: The drifted features, most drifted first (by PSI, else distance).
        n_features: Features compared.
        share_drifted: Share of compared features that drifted.
        features: Per feature: kind, test, statistic, threshold, drifted, psi, means.
        current_source: Where the current data came from.
    """

    model_name: str
    model_version: str
    time_window: str
    window_start: str | None
    window_end: str | None
    n_reference: int
    n_current: int
    drift_detected: bool
    drifted_features: list[str]
    n_features: int
    share_drifted: float
    features: dict[str, dict[str, Any]]
    current_source: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return asdict(self)


@dataclass(frozen=True)
class ConceptDriftAnalysis:
    """Recent errors against the training baseline and against earlier production windows.

    Attributes:
        model_name: The model.
        model_version: The version whose performance records were read.
        metric: The error metric analysed (None when nothing could be).
        baseline: Its cross-validated value at training.
        recent: Its mean over the recent windows.
        change: ``recent / baseline - 1`` (0.5 is 50 % worse).
        n_recent: Recent performance windows.
        n_earlier: Earlier windows (the test's reference).
        degraded: ``change`` above the tolerance.
        test: The Mann-Whitney test of recent against earlier windows, when
            both have at least 3 values.
        drift_detected: ``degraded`` or the test's verdict.
        metrics: ``metric -> {baseline, recent, change, degraded}`` for every
            recorded metric that has a baseline.
        tolerance: The relative worsening that counts as degraded.
        reason: Why nothing could be analysed, if so.
    """

    model_name: str
    model_version: str
    metric: str | None
    baseline: float | None
    recent: float | None
    change: float | None
    n_recent: int
    n_earlier: int
    degraded: bool
    test: dict[str, Any] | None
    drift_detected: bool
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    tolerance: float = 0.2
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return asdict(self)


@dataclass(frozen=True)
class HealthCheck:
    """One health check: its status, measured value, limit and the numbers behind it."""

    name: str
    status: Status
    value: float | None
    limit: float | None
    unit: str
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return asdict(self)


@dataclass(frozen=True)
class ModelHealth:
    """The model's health checks; ``status`` is the worst of them (unknown ranks last)."""

    model_name: str
    model_version: str
    status: Status
    checks: dict[str, HealthCheck]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "status": self.status,
            "checks": {name: check.to_dict() for name, check in self.checks.items()},
        }


@dataclass(frozen=True)
class Recommendation:
    """One action, ranked (priority 1 first), with the evidence it rests on."""

    priority: int
    action: str
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.priority}. {self.action}: {self.reason}"


# --- the diagnostic -------------------------------------------------------------------------


class PerformanceDiagnostic(UsesPlatformDB):
    """Why is a model degrading? Data drift, concept drift, health, and what to do.

    Args:
        model_name: The model (its training jobs, saved result and monitoring records).
        model_version: The version whose monitoring records are read (default:
            the production deployment's, else staging's, else the newest with
            performance records).
        settings: retailml settings (default: the process settings).
        db: The platform database (default: the one the settings name).
        model_path: A saved model directory (default: see the module docstring).
        current_data: Recent model inputs to compare (default: the last
            window of the model's training source).
        error_tolerance: Relative worsening of an error over its training
            baseline that counts as degraded (0.2: 20 % worse).
        latency_p95_ms: The 95th-percentile latency above which serving is degraded.
        error_rate_limit: The share of failed predictions above which serving is degraded.
        memory_limit_mb: The loaded-model size above which memory is a concern.
    """

    def __init__(
        self,
        model_name: str,
        model_version: str | None = None,
        *,
        settings: Settings | None = None,
        db: PlatformDB | None = None,
        model_path: str | Path | None = None,
        current_data: pd.DataFrame | None = None,
        error_tolerance: float = 0.2,
        latency_p95_ms: float = 500.0,
        error_rate_limit: float = 0.05,
        memory_limit_mb: float = 1024.0,
    ) -> None:
        if not model_name:
            raise ConfigError(
                problem("a model name", repr(model_name), "pass e.g. PerformanceDiagnostic('x')")
            )
        self.model_name = str(model_name)
        self._use_db(settings or get_settings(), db)
        self._version = model_version
        self._model_path = Path(model_path) if model_path is not None else None
        self._current = current_data
        self.error_tolerance = float(error_tolerance)
        self.latency_p95_ms = float(latency_p95_ms)
        self.error_rate_limit = float(error_rate_limit)
        self.memory_limit_mb = float(memory_limit_mb)
        self._result: Any = None
        self._job: JobRecord | None = None

    def __repr__(self) -> str:
        return f"PerformanceDiagnostic({self.model_name!r})"

    # --- what the model is --------------------------------------------------------------------

    @property
    def model_version(self) -> str:
        """The version whose monitoring records are read (see the class docstring)."""
        if self._version is None:
            self._version = self._find_version()
        return self._version

    def _find_version(self) -> str:
        with self.db.session() as session:
            rows = session.execute(
                select(Deployment.environment, Deployment.version).where(
                    Deployment.model_name == self.model_name, Deployment.status == "active"
                )
            ).all()
            active = {environment: version for environment, version in rows}
            if "production" in active or "staging" in active:
                return str(active.get("production") or active["staging"])
            newest = session.scalars(
                select(ModelPerformanceRecord.model_version)
                .where(ModelPerformanceRecord.model_name == self.model_name)
                .order_by(ModelPerformanceRecord.window_end.desc())
                .limit(1)
            ).first()
        return str(newest) if newest else UNVERSIONED

    def _training_job(self) -> JobRecord | None:
        if self._job is None:
            for job in list_jobs(self.db, model_name=self.model_name, status="succeeded"):
                if (job.outcome or {}).get("model_dir"):
                    self._job = job
                    break
        return self._job

    def _model_dir(self) -> Path:
        if self._model_path is not None:
            return self._model_path
        job = self._training_job()
        if job is not None and Path(job.outcome["model_dir"], "result.json").is_file():
            return Path(job.outcome["model_dir"])
        default = Path(self.settings.home) / "artifacts" / "models" / self.model_name
        if (default / "result.json").is_file():
            return default
        raise NotFoundError(
            problem(
                f"a saved model of {self.model_name!r} (a succeeded training job's model_dir, "
                f"or {default})",
                "none",
                "train it with `retailml train --config ...` or pass model_path=",
                subject="PerformanceDiagnostic",
            )
        )

    def _model(self) -> Any:
        if self._result is None:
            from retailml.training.model_trainer import TrainingResult

            self._result = TrainingResult.load(self._model_dir())
        return self._result

    def _reference(self) -> pd.DataFrame:
        result = self._model()
        if result.model_type == "sales_forecast" and result.history is not None:
            frame = result.history
        elif result.reference_data is not None:
            frame = result.reference_data
        else:
            raise NotFoundError(
                problem(
                    "a drift reference saved with the model (reference.parquet)",
                    "none",
                    "retrain the model with this version of retailml",
                    subject=self.model_name,
                )
            )
        return _comparable(frame)

    def _recent(self, time_window: str) -> tuple[pd.DataFrame, str, Any, Any]:
        """The current model inputs: the last window of the training source, prepared."""
        if self._current is not None:
            frame = self._current
            return _comparable(frame), "current_data", *_span(frame)
        from retailml.training._data import load_training_data
        from retailml.training._jobs import config_from_inputs

        result = self._model()
        job = self._training_job()
        if job is not None:
            config = config_from_inputs(job.inputs)
            data_config = {k: v for k, v in (config.get("data") or {}).items() if k != "holdout"}
        else:
            data_config = {"source": "silver"}
        try:
            data = load_training_data(
                data_config, target=result.target, window=time_window, settings=self.settings
            )
        except (OSError, ValueError) as exc:  # pyarrow's read errors are ValueError/OSError
            raise DataValidationError(
                problem(
                    f"readable recent data of the source {self.model_name} was trained on",
                    f"{type(exc).__name__}: {exc}",
                    "repair or re-ingest the damaged file, or pass current_data=",
                    subject="analyze_data_drift",
                )
            ) from exc
        task = result.task()
        frame = data.train
        try:
            prepared = task.prepare(frame)
        except DataValidationError as exc:
            raise DataValidationError(
                problem(
                    f"recent data of {data.source} with the inputs {self.model_name} was "
                    "trained on",
                    str(exc),
                    "pass current_data= with the model's input columns",
                    subject="analyze_data_drift",
                )
            ) from exc
        forecast = result.model_type == "sales_forecast"
        current = prepared if forecast else task.inputs(prepared)
        return _comparable(current), f"last {time_window} of {data.source}", *_span(frame)

    # --- data drift ---------------------------------------------------------------------------

    async def analyze_data_drift(
        self, time_window: str = "30d", features: str | Sequence[str] = "all"
    ) -> DataDriftAnalysis:
        """Compare the model's recent inputs with its training reference, feature by feature.

        Args:
            time_window: How much recent data: ``"30d"``, ``"8w"``, ``"6m"``, ``"1y"``.
            features: ``"all"`` (every input column both frames have) or names.

        Raises:
            NotFoundError: when the model or its reference cannot be found.
            ConfigError: for a feature the model does not have.
        """
        return await asyncio.to_thread(self._data_drift, time_window, features)

    def _data_drift(self, time_window: str, features: str | Sequence[str]) -> DataDriftAnalysis:
        reference = self._reference()
        current, source, start, end = self._recent(time_window)
        shared = [c for c in reference.columns if c in current.columns]
        if isinstance(features, str) and features == "all":
            columns = shared
        else:
            wanted = [features] if isinstance(features, str) else list(features)
            unknown = [c for c in wanted if c not in shared]
            if unknown:
                raise ConfigError(
                    problem(
                        f"features among the model's inputs {shared}",
                        f"unknown {unknown}",
                        "pass features='all' or names from that list",
                        subject="analyze_data_drift",
                    )
                )
            columns = wanted
        if not columns:
            raise DataValidationError(
                problem(
                    f"recent data sharing input columns with the reference {list(reference)}",
                    f"columns {list(current.columns)}",
                    "pass current_data= with the model's input columns",
                    subject="analyze_data_drift",
                )
            )
        monitor = ModelMonitor(self.model_name, self.model_version, self.settings, db=self.db)
        report = monitor.detect_data_drift(reference, current, columns=columns)
        details: dict[str, dict[str, Any]] = {}
        for name, verdict in report.columns.items():
            stats = verdict.statistics
            details[name] = {
                "kind": verdict.kind,
                "test": verdict.test,
                "statistic": finite_or_none(verdict.statistic),
                "threshold": verdict.threshold,
                "drifted": verdict.drifted,
                "psi": finite_or_none(stats.get("psi")),
                "reference_mean": finite_or_none(stats.get("reference_mean")),
                "current_mean": finite_or_none(stats.get("current_mean")),
                "unseen_categories": list(verdict.unseen_categories),
            }

        def strength(name: str) -> float:
            psi = details[name]["psi"]
            return psi if psi is not None else (details[name]["statistic"] or 0.0)

        drifted = sorted(report.drifted_columns, key=strength, reverse=True)
        return DataDriftAnalysis(
            model_name=self.model_name,
            model_version=self.model_version,
            time_window=str(time_window),
            window_start=_iso(start),
            window_end=_iso(end),
            n_reference=len(reference),
            n_current=len(current),
            drift_detected=report.dataset_drift,
            drifted_features=drifted,
            n_features=report.n_columns,
            share_drifted=report.share_drifted,
            features=details,
            current_source=source,
        )

    # --- concept drift ------------------------------------------------------------------------

    async def analyze_concept_drift(
        self, prediction_window: str = "30d", actual_window: str = "30d"
    ) -> ConceptDriftAnalysis:
        """Recent errors against the training baseline and against earlier production errors.

        Args:
            prediction_window: Performance windows whose predictions end within
                this span of the newest record count as recent.
            actual_window: ... and whose actual values start within this span
                (older actuals are left out of the recent errors).
        """
        return await asyncio.to_thread(self._concept_drift, prediction_window, actual_window)

    def _concept_drift(self, prediction_window: str, actual_window: str) -> ConceptDriftAnalysis:
        from retailml.monitoring.enterprise_dashboard import parse_duration

        predictions = parse_duration(prediction_window)
        actuals = parse_duration(actual_window)
        baseline = self._baseline()
        monitor = ModelMonitor(self.model_name, self.model_version, self.settings, db=self.db)
        history = monitor.performance_history()
        history = history[np.isfinite(history["value"].to_numpy(np.float64))]
        empty = ConceptDriftAnalysis(
            model_name=self.model_name,
            model_version=self.model_version,
            metric=None,
            baseline=None,
            recent=None,
            change=None,
            n_recent=0,
            n_earlier=0,
            degraded=False,
            test=None,
            drift_detected=False,
            tolerance=self.error_tolerance,
        )
        if history.empty:
            return _replace(
                empty,
                reason=f"no performance recorded for {self.model_name} {self.model_version}: "
                "record it with ModelMonitor.track_performance or performance_from_log",
            )
        anchor = history["window_end"].max()
        recent_mask = (history["window_end"] > anchor - predictions) & (
            history["window_start"] > anchor - actuals - timedelta(microseconds=1)
        )
        per_metric: dict[str, dict[str, Any]] = {}
        for metric, rows in history.groupby("metric", sort=False):
            recent = rows[recent_mask.loc[rows.index]]["value"]
            if recent.empty:
                continue
            base = baseline.get(str(metric))
            mean = float(recent.mean())
            change = mean / base - 1 if base else None
            per_metric[str(metric)] = {
                "baseline": base,
                "recent": mean,
                "change": change,
                "degraded": bool(change is not None and change > self.error_tolerance),
                "n_recent": len(recent),
            }
        ranked: list[str] = [m for m in _PRIMARY_ORDER if m in per_metric] + list(per_metric)
        chosen = ranked[0] if ranked else None
        if chosen is None:
            return _replace(
                empty,
                reason=f"no performance recorded within {prediction_window} of the newest "
                f"record ({anchor:%Y-%m-%d})",
            )
        rows = history[history["metric"] == chosen]
        recent_rows = rows[recent_mask.loc[rows.index]]
        earlier = rows[rows["window_end"] <= anchor - predictions]
        test: dict[str, Any] | None = None
        if len(recent_rows) >= 3 and len(earlier) >= 3:
            values = np.concatenate(
                [earlier["value"].to_numpy(np.float64), recent_rows["value"].to_numpy(np.float64)]
            )
            result = concept_drift(
                values,
                metric=chosen,
                window=len(recent_rows),
                reference_window=None,
                method="mannwhitney",
                threshold=None,
            )
            test = result.to_dict()
        info = per_metric[chosen]
        degraded = bool(info["degraded"])
        return ConceptDriftAnalysis(
            model_name=self.model_name,
            model_version=self.model_version,
            metric=chosen,
            baseline=info["baseline"],
            recent=info["recent"],
            change=info["change"],
            n_recent=len(recent_rows),
            n_earlier=len(earlier),
            degraded=degraded,
            test=test,
            drift_detected=degraded or bool(test and test["drifted"]),
            metrics=per_metric,
            tolerance=self.error_tolerance,
            reason=None
            if info["baseline"] is not None
            else "no training baseline for "
            f"{chosen}; judged by the test against earlier windows only",
        )

    def _baseline(self) -> dict[str, float]:
        """The model's cross-validated error metrics (only those monitoring records)."""
        try:
            metrics = dict(self._model().metrics)
        except NotFoundError:
            job = self._training_job()
            metrics = dict((job.outcome or {}).get("metrics") or {}) if job else {}
        return {
            name: float(value)
            for name, value in metrics.items()
            if name in METRICS and value is not None and math.isfinite(float(value))
        }

    # --- health -------------------------------------------------------------------------------

    async def check_model_health(self, metrics: Sequence[str] = HEALTH_METRICS) -> ModelHealth:
        """Check accuracy, latency and memory (see the module docstring for the sources).

        Raises:
            ConfigError: for a check not in :data:`HEALTH_METRICS`.
        """
        unknown = [m for m in metrics if m not in HEALTH_METRICS]
        if unknown or not metrics:
            raise ConfigError(
                problem(
                    f"health metrics among {list(HEALTH_METRICS)}",
                    repr(list(metrics)),
                    "pass e.g. metrics=['accuracy', 'latency', 'memory_usage']",
                    subject="check_model_health",
                )
            )
        return await asyncio.to_thread(self._health, list(metrics))

    def _health(self, metrics: list[str]) -> ModelHealth:
        checks: dict[str, HealthCheck] = {}
        for name in metrics:
            if name == "accuracy":
                checks[name] = self._accuracy()
            elif name == "latency":
                checks[name] = self._latency()
            else:
                checks[name] = self._memory()
        statuses = [check.status for check in checks.values()]
        status: Status = (
            "degraded"
            if "degraded" in statuses
            else "healthy"
            if "healthy" in statuses
            else "unknown"
        )
        return ModelHealth(self.model_name, self.model_version, status, checks)

    def _accuracy(self) -> HealthCheck:
        baseline = self._baseline()
        monitor = ModelMonitor(self.model_name, self.model_version, self.settings, db=self.db)
        history = monitor.performance_history()
        history = history[np.isfinite(history["value"].to_numpy(np.float64))]
        recorded = [m for m in _PRIMARY_ORDER if m in set(history["metric"])]
        metric = next((m for m in recorded if m in baseline), recorded[0] if recorded else None)
        if metric is None:
            return HealthCheck(
                "accuracy",
                "unknown",
                None,
                None,
                "",
                f"no performance recorded for {self.model_name} {self.model_version}",
            )
        latest = history[history["metric"] == metric].iloc[-1]
        value = float(latest["value"])
        base = baseline.get(metric)
        limit = base * (1 + self.error_tolerance) if base is not None else None
        status: Status = "unknown" if limit is None else "degraded" if value > limit else "healthy"
        detail = f"latest {metric} {value:.4g} (window ending {latest['window_end']:%Y-%m-%d})" + (
            f" vs {base:.4g} at training; limit {limit:.4g}"
            if base is not None and limit is not None
            else "; no training baseline"
        )
        return HealthCheck(
            "accuracy",
            status,
            value,
            limit,
            metric,
            detail,
            {"metric": metric, "baseline": base, "n": int(latest["n"])},
        )

    def _latency(self) -> HealthCheck:
        entry = PredictionLogEntry
        query = select(entry.latency_ms, entry.status_code).where(
            entry.model_name == self.model_name
        )
        if self.model_version != UNVERSIONED:
            query = query.where(entry.model_version == self.model_version)
        with self.db.session() as session:
            rows = session.execute(query.order_by(entry.created_at.desc()).limit(_LOG_ROWS)).all()
        if not rows:
            return HealthCheck(
                "latency",
                "unknown",
                None,
                self.latency_p95_ms,
                "ms",
                f"no predictions of {self.model_name} {self.model_version} in the prediction log",
            )
        latency = np.array([row[0] for row in rows], dtype=np.float64)
        failed = np.array([row[1] >= 400 for row in rows])
        ok = latency[~failed]
        p50, p95, p99 = (
            (float(v) for v in np.percentile(ok, [50, 95, 99])) if ok.size else (math.nan,) * 3
        )
        error_rate = float(failed.mean())
        slow = ok.size > 0 and p95 > self.latency_p95_ms
        failing = error_rate > self.error_rate_limit
        status: Status = "degraded" if slow or failing else "healthy"
        detail = (
            f"p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms over the last {len(rows):,} "
            f"predictions; {error_rate:.1%} failed (limits: p95 {self.latency_p95_ms:g} ms, "
            f"{self.error_rate_limit:.0%} errors)"
        )
        return HealthCheck(
            "latency",
            status,
            finite_or_none(p95),
            self.latency_p95_ms,
            "ms",
            detail,
            {
                "p50_ms": finite_or_none(p50),
                "p95_ms": finite_or_none(p95),
                "p99_ms": finite_or_none(p99),
                "error_rate": error_rate,
                "n": len(rows),
            },
        )

    def _memory(self) -> HealthCheck:
        from retailml.training.model_trainer import TrainingResult

        directory = self._model_dir()
        on_disk = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
        loaded = TrainingResult.load(directory)
        # The loaded model's state, measured as its pickled size: what the model holds,
        # without tracing every allocation (tracemalloc's hooks can crash CPython 3.11
        # when other threads allocate while tracing stops).
        held_mb = len(pickle.dumps(loaded.model, protocol=pickle.HIGHEST_PROTOCOL)) / 2**20
        del loaded
        status: Status = "degraded" if held_mb > self.memory_limit_mb else "healthy"
        return HealthCheck(
            "memory_usage",
            status,
            held_mb,
            self.memory_limit_mb,
            "MiB",
            f"the loaded model holds {held_mb:.1f} MiB of state (its pickled size; "
            f"{on_disk / 2**20:.1f} MiB on disk)",
            {"held_mb": held_mb, "on_disk_mb": on_disk / 2**20},
        )

    # --- recommendations ----------------------------------------------------------------------

    def generate_recommendations(
        self, results: Sequence[DataDriftAnalysis | ConceptDriftAnalysis | ModelHealth]
    ) -> list[Recommendation]:
        """Concrete actions, most urgent first, derived from the analyses given.

        Raises:
            ConfigError: for a result that is none of this class's analyses.
        """
        drift = concept = health = None
        for result in results:
            if isinstance(result, DataDriftAnalysis):
                drift = result
            elif isinstance(result, ConceptDriftAnalysis):
                concept = result
            elif isinstance(result, ModelHealth):
                health = result
            else:
                raise ConfigError(
                    problem(
                        "results of analyze_data_drift, analyze_concept_drift or "
                        "check_model_health",
                        f"{type(result).__name__}",
                        "pass the three results as the guide does",
                        subject="generate_recommendations",
                    )
                )
        found: list[Recommendation] = []
        if drift is not None:
            found += _drift_steps(drift)
        if concept is not None:
            found += _concept_steps(concept)
        if health is not None:
            found += _health_steps(health)
        # One step per action, for every reason at once, ranked by the most urgent.
        merged: dict[str, Recommendation] = {}
        for step in found:
            seen = merged.get(step.action)
            if seen is None:
                merged[step.action] = step
            elif step.action == "retrain":
                merged[step.action] = Recommendation(
                    min(seen.priority, step.priority),
                    step.action,
                    f"{seen.reason}; {step.reason}",
                    {**seen.evidence, **step.evidence},
                )
            elif step.priority < seen.priority:
                merged[step.action] = step
        found = list(merged.values())
        if not found:
            found.append(
                Recommendation(
                    5,
                    "none",
                    f"{self.model_name} shows no drift and no degradation in the analyses given",
                )
            )
        return sorted(found, key=lambda r: r.priority)


def _drift_steps(drift: DataDriftAnalysis) -> list[Recommendation]:
    if not drift.drifted_features:
        return []

    def described(name: str) -> str:
        info = drift.features[name]
        if info.get("psi") is not None:
            return f"{name} PSI {info['psi']:.2f}"
        return f"{name} {info['test']} {info['statistic']:.3g}"

    shown = ", ".join(described(name) for name in drift.drifted_features[:3])
    summary = f"{len(drift.drifted_features)} of {drift.n_features} inputs drifted ({shown})"
    evidence = {"drifted_features": drift.drifted_features, "share_drifted": drift.share_drifted}
    if drift.drift_detected:
        return [
            Recommendation(
                2,
                "retrain",
                f"{summary} over the {drift.current_source}: retrain on recent data",
                evidence,
            )
        ]
    return [
        Recommendation(
            3,
            "investigate_data",
            f"{summary}; below the dataset drift share: check the upstream data of "
            f"{', '.join(drift.drifted_features[:3])}",
            evidence,
        )
    ]


def _concept_steps(concept: ConceptDriftAnalysis) -> list[Recommendation]:
    if concept.metric is None:
        return [
            Recommendation(
                4,
                "record_performance",
                concept.reason or "no performance recorded",
                {},
            )
        ]
    if not concept.drift_detected:
        return []
    parts = []
    if concept.degraded and concept.baseline is not None and concept.change is not None:
        parts.append(
            f"{concept.metric} {concept.recent:.3g} vs {concept.baseline:.3g} at training "
            f"({concept.change:+.0%})"
        )
    if concept.test and concept.test.get("drifted"):
        parts.append(
            f"recent {concept.metric} significantly worse than earlier windows "
            f"(Mann-Whitney p={concept.test['statistic']:.2g})"
        )
    return [
        Recommendation(
            1,
            "retrain",
            "concept drift: " + "; ".join(parts),
            {"metric": concept.metric, "change": concept.change, "test": concept.test},
        )
    ]


def _health_steps(health: ModelHealth) -> list[Recommendation]:
    steps: list[Recommendation] = []
    latency = health.checks.get("latency")
    if latency is not None and latency.status == "degraded":
        steps.append(
            Recommendation(
                2,
                "check_serving",
                f"serving is degraded: {latency.detail}; run ServingDiagnostic on the "
                "endpoint, add replicas or workers",
                latency.data,
            )
        )
    memory = health.checks.get("memory_usage")
    if memory is not None and memory.status == "degraded":
        steps.append(
            Recommendation(
                3,
                "reduce_model_size",
                f"{memory.detail}, above {memory.limit:g} MiB: fewer trees/estimators, or a "
                "larger serving memory limit",
                memory.data,
            )
        )
    accuracy = health.checks.get("accuracy")
    if accuracy is not None and accuracy.status == "degraded":
        steps.append(Recommendation(1, "retrain", f"accuracy: {accuracy.detail}", accuracy.data))
    if accuracy is not None and accuracy.status == "unknown":
        steps.append(
            Recommendation(
                4,
                "record_performance",
                f"accuracy unknown ({accuracy.detail}): join actual values to the prediction "
                "log with ModelMonitor.performance_from_log",
                {},
            )
        )
    return steps


def _replace(analysis: ConceptDriftAnalysis, **changes: Any) -> ConceptDriftAnalysis:
    import dataclasses

    return dataclasses.replace(analysis, **changes)


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """Input columns drift can compare: no datetimes, no all-missing columns."""
    keep = [
        c
        for c in frame.columns
        if not pd.api.types.is_datetime64_any_dtype(frame[c]) and frame[c].notna().any()
    ]
    return frame[keep].reset_index(drop=True)


def _span(frame: pd.DataFrame) -> tuple[Any, Any]:
    for column in ("date", "invoice_date", "event_timestamp"):
        if column in frame.columns and len(frame):
            times = pd.to_datetime(frame[column])
            return times.min(), times.max()
    return None, None
