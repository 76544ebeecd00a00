"""Model monitoring: performance over time, concept drift, data drift and alerts.

The guide's monitor, per model version::

    monitor = ModelMonitor(model_name="sales_forecast_prophet", model_version="1.2.0")
    metrics = monitor.track_performance(predictions, actual_values,
                                        metrics=["mape", "mae", "rmse"])
    report = monitor.detect_data_drift(training_features, production_features,
                                       threshold=0.05)
    if metrics["mape"] > 0.20:
        monitor.send_alert(alert_type="performance_degradation", severity="high",
                           message=f"Model MAPE increased to {metrics['mape']:.2%}")

The guide calls these methods without ``await``, so they are plain methods;
from async code wrap them in :func:`asyncio.to_thread`.

Performance (``model_performance`` table): every evaluation stores one row per
metric with its value, the number of pairs ``n``, the A/B or rollout ``arm``
and the time window of the predictions; :meth:`ModelMonitor.performance_history`
reads the series back and :meth:`ModelMonitor.detect_concept_drift` tests it.
Metrics: ``mape``, ``mae``, ``rmse``, ``smape`` from
:mod:`retailml.training._metrics` (percentage errors as fractions: 0.15 is 15 %).

Performance from the prediction log (:meth:`ModelMonitor.performance_from_log`):
the serving layer logs every prediction (``prediction_log``); once the actual
values are known, pass them as a frame and the monitor joins them to the log:

=======================  ===============================================================
``join``                 ``actuals`` columns
=======================  ===============================================================
``"request_id"``         ``request_id``, ``actual`` (and optionally ``step``)
``("entity_key","date")``  ``entity_key``, ``date``, ``actual`` (and optionally ``step``)
=======================  ===============================================================

A log ``output`` is a number, ``{"prediction": number}`` or ``{"prediction":
[numbers]}`` (a multi-step forecast, step 1 first); other outputs are skipped.
With a ``step`` column (1-based) each actual pairs with that step of a
multi-step prediction; without one, only step 1 is evaluated. For the
``("entity_key", "date")`` join, a log row's date is its output's ``"date"``
(when the output is a dict that has one: the day the prediction is for), else
the UTC day it was served. Only successful predictions (status code below 400,
no error) of this model version count, grouped by arm.

Concept drift (:meth:`ModelMonitor.detect_concept_drift`): the default test is
a one-sided Mann-Whitney U test of the last ``window`` stored values of a
metric against the values before them (``reference_window`` of them, default
all): drift when the recent errors are stochastically larger, at p < 0.01. It
is a rank test, so it needs no assumption about the metric's distribution or
scale (MAPE and MAE alike), one outlying day does not decide it, and its
threshold is a false-alarm rate. ``method="page_hinkley"`` is the sequential
alternative (cumulative sum of standardised excess over the reference mean,
tolerance 0.5 standard deviations, drift above 5): it reacts to a small
persistent rise sooner but its threshold is in standard deviations, not a
probability.

Data drift (:meth:`ModelMonitor.detect_data_drift`) wraps
:func:`retailml.validators.drift.detect_drift` (per-column KS / chi-square on
small samples, normed Wasserstein / Jensen-Shannon on large ones) and stores a
summary row per run in ``drift_reports``.

Alerts (:meth:`ModelMonitor.send_alert`) go through
:class:`~retailml.monitoring.alerts.AlertManager`, tagged with this model and
version.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select

from retailml.core.db import PlatformDB, UsesPlatformDB, as_utc, utcnow
from retailml.core.db_deploy import PredictionLogEntry
from retailml.core.db_monitoring import DriftReportRecord, ModelPerformanceRecord
from retailml.core.errors import ConfigError, DataValidationError, problem
from retailml.core.settings import Settings, get_settings
from retailml.monitoring._performance import (
    CONCEPT_DRIFT_METHODS,
    DEFAULT_METRICS,
    METRICS,
    ConceptDriftResult,
    check_metrics,
    compute_metrics,
    concept_drift,
    explode_outputs,
    paired_values,
)
from retailml.monitoring.alerts import Alert, AlertManager, _parse_channels
from retailml.validators.drift import DriftReport, detect_drift

__all__ = [
    "CONCEPT_DRIFT_METHODS",
    "METRICS",
    "ConceptDriftResult",
    "ModelMonitor",
]

#: Columns of :meth:`ModelMonitor.performance_history` and ``performance_from_log``.
PERFORMANCE_COLUMNS = (
    "model_version",
    "arm",
    "metric",
    "value",
    "n",
    "window_start",
    "window_end",
    "recorded_at",
)
_IN_CHUNK = 500


class ModelMonitor(UsesPlatformDB):
    """Watches one model version in production.

    Args:
        model_name: The registered model.
        model_version: Its version.
        settings: Database, alert channels and cool-down (default: the process settings).
        db: The platform database (default: the one the settings name, migrated on first use).
        alerts: The alert manager (default: one built from the settings, sharing ``db``).
    """

    def __init__(
        self,
        model_name: str,
        model_version: str,
        settings: Settings | None = None,
        *,
        db: PlatformDB | None = None,
        alerts: AlertManager | None = None,
    ) -> None:
        if not model_name or not model_version:
            raise ConfigError(
                problem(
                    "a model_name and a model_version",
                    f"{model_name!r} and {model_version!r}",
                    "name the model version to monitor",
                    subject="ModelMonitor",
                )
            )
        self.model_name = str(model_name)
        self.model_version = str(model_version)
        self._use_db(settings or get_settings(), db)
        self._alerts = alerts
        self._owns_alerts = alerts is None

    def close(self) -> None:
        """Deliver pending alerts (up to 10 s) and release what the monitor opened itself."""
        if self._alerts is not None and self._owns_alerts:
            self._alerts.close()
            self._alerts = None
        super().close()

    @property
    def alerts(self) -> AlertManager:
        """The alert manager (built on first use)."""
        if self._alerts is None:
            stored = "database" in _parse_channels(self.settings.alert_channels)
            self._alerts = AlertManager(self.settings, db=self.db if stored else None)
        return self._alerts

    # --- performance ---------------------------------------------------------------

    def track_performance(
        self,
        predictions: Any,
        actual_values: Any,
        metrics: Sequence[str] = DEFAULT_METRICS,
        *,
        arm: str | None = None,
        timestamp: datetime | None = None,
        window_start: datetime | None = None,
    ) -> dict[str, float]:
        """Compute error metrics of predictions against actual values and store them.

        Args:
            predictions: Predicted values (array-like).
            actual_values: Actual values of the same periods, same length.
                Pairs where either value is missing are left out.
            metrics: Names among ``mape``, ``mae``, ``rmse``, ``smape``.
            arm: The A/B or rollout arm that served the predictions, if any.
            timestamp: End of the evaluated window (default now, UTC).
            window_start: Start of the window (default ``timestamp``).

        Returns:
            ``metric -> value``; percentage errors are fractions; NaN where a
            metric is undefined (MAPE when every actual is 0; stored as null).
        """
        names = check_metrics(metrics)
        predicted, actual = paired_values(predictions, actual_values)
        values = compute_metrics(predicted, actual, names)
        end = as_utc(timestamp) or utcnow()
        start = as_utc(window_start) or end
        self._store(values, n=int(actual.size), arm=arm, start=start, end=end)
        return values

    def _store(
        self,
        values: dict[str, float],
        *,
        n: int,
        arm: str | None,
        start: datetime,
        end: datetime,
    ) -> None:
        now = utcnow()
        with self.db.session() as session:
            session.add_all(
                ModelPerformanceRecord(
                    model_name=self.model_name,
                    model_version=self.model_version,
                    arm=arm,
                    metric=name,
                    value=value if math.isfinite(value) else None,
                    n=n,
                    window_start=start,
                    window_end=end,
                    recorded_at=now,
                )
                for name, value in values.items()
            )

    def performance_from_log(
        self,
        actuals: pd.DataFrame,
        *,
        join: str | tuple[str, str] = "request_id",
        since: datetime | None = None,
        metrics: Sequence[str] = DEFAULT_METRICS,
        actual_column: str = "actual",
        record: bool = True,
    ) -> pd.DataFrame:
        """Join actual values to this version's prediction log and compute its metrics per arm.

        Args:
            actuals: The actual values; columns as in the module docstring.
            join: ``"request_id"`` or ``("entity_key", "date")``.
            since: Only predictions served at or after this time.
            metrics: Metric names, as for :meth:`track_performance`.
            actual_column: The column of ``actuals`` holding the values.
            record: Store the results in the performance time series.

        Returns:
            One row per arm and metric: ``model_version``, ``arm`` (None outside
            A/B tests and rollouts), ``metric``, ``value``, ``n`` (matched
            pairs), ``window_start`` / ``window_end`` (first and last matched
            prediction's time), ``recorded_at``. Empty when nothing matched.
        """
        names = check_metrics(metrics)
        keys = self._join_keys(join)
        frame = self._actuals_frame(actuals, keys, actual_column)
        log = self._read_log(keys, frame, since)
        empty = pd.DataFrame(columns=list(PERFORMANCE_COLUMNS))
        if log.empty:
            return empty
        exploded = explode_outputs(log)
        on = list(keys)
        if "step" in frame.columns:
            on.append("step")
        else:
            exploded = exploded[exploded["step"] == 1]
        if keys == ("entity_key", "date"):
            exploded["entity_key"] = exploded["entity_key"].astype(str)
        matched = exploded.merge(frame, on=on, how="inner")
        matched = matched[np.isfinite(matched["prediction"]) & np.isfinite(matched["_actual"])]
        if matched.empty:
            return empty
        now = utcnow()
        rows: list[dict[str, Any]] = []
        for arm, group in matched.groupby(matched["arm"].fillna("\x00"), sort=True):
            arm_name = None if arm == "\x00" else str(arm)
            values = compute_metrics(
                group["prediction"].to_numpy(np.float64),
                group["_actual"].to_numpy(np.float64),
                names,
            )
            start = group["created_at"].min().to_pydatetime()
            end = group["created_at"].max().to_pydatetime()
            if record:
                self._store(values, n=len(group), arm=arm_name, start=start, end=end)
            rows += [
                {
                    "model_version": self.model_version,
                    "arm": arm_name,
                    "metric": name,
                    "value": value,
                    "n": len(group),
                    "window_start": start,
                    "window_end": end,
                    "recorded_at": now,
                }
                for name, value in values.items()
            ]
        return pd.DataFrame(rows, columns=list(PERFORMANCE_COLUMNS))

    @staticmethod
    def _join_keys(join: str | tuple[str, str]) -> tuple[str, ...]:
        if join == "request_id":
            return ("request_id",)
        if isinstance(join, tuple | list) and tuple(join) == ("entity_key", "date"):
            return ("entity_key", "date")
        raise ConfigError(
            problem(
                "join='request_id' or join=('entity_key', 'date')",
                repr(join),
                "join by the request id the service returned, or by entity and day",
                subject="performance_from_log",
            )
        )

    @staticmethod
    def _actuals_frame(
        actuals: pd.DataFrame, keys: tuple[str, ...], actual_column: str
    ) -> pd.DataFrame:
        needed = [*keys, actual_column]
        if not isinstance(actuals, pd.DataFrame) or any(c not in actuals.columns for c in needed):
            got = list(actuals.columns) if isinstance(actuals, pd.DataFrame) else type(actuals)
            raise DataValidationError(
                problem(
                    f"a DataFrame with columns {needed!r} (and optionally 'step')",
                    repr(got),
                    "rename the columns, or pass join= / actual_column=",
                    subject="performance_from_log",
                )
            )
        columns = [*keys, *(["step"] if "step" in actuals.columns else [])]
        frame = actuals[columns].copy()
        frame["_actual"] = pd.to_numeric(actuals[actual_column], errors="coerce").astype(float)
        for key in keys:
            if key == "date":
                dates = pd.to_datetime(frame["date"], utc=True)
                frame["date"] = dates.dt.tz_convert(None).dt.normalize()
            else:
                frame[key] = frame[key].astype(str)
        if "step" in frame.columns:
            frame["step"] = frame["step"].astype(np.int64)
        return frame.drop_duplicates(subset=columns, keep="last")

    def _read_log(
        self, keys: tuple[str, ...], frame: pd.DataFrame, since: datetime | None
    ) -> pd.DataFrame:
        entry = PredictionLogEntry
        base = select(
            entry.request_id, entry.arm, entry.entity_key, entry.output, entry.created_at
        ).where(
            entry.model_name == self.model_name,
            entry.model_version == self.model_version,
            entry.status_code < 400,
            entry.error.is_(None),
        )
        if since is not None:
            base = base.where(entry.created_at >= as_utc(since))
        column = entry.request_id if keys == ("request_id",) else entry.entity_key
        wanted = sorted(set(frame[keys[0]]))
        rows: list[Any] = []
        with self.db.session() as session:
            for offset in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[offset : offset + _IN_CHUNK]
                rows += session.execute(base.where(column.in_(chunk))).all()
        return pd.DataFrame(
            [tuple(row) for row in rows],
            columns=["request_id", "arm", "entity_key", "output", "created_at"],
        )

    def performance_history(
        self,
        metric: str | None = None,
        since: datetime | None = None,
        *,
        arm: str | None = None,
        all_versions: bool = False,
    ) -> pd.DataFrame:
        """The stored performance time series, oldest window first.

        Args:
            metric: One metric (default: every metric).
            since: Only windows ending at or after this time.
            arm: Only this arm (default: every arm, including none).
            all_versions: Every version of the model, not only this one.

        Returns:
            Columns ``model_version``, ``arm``, ``metric``, ``value`` (NaN when
            undefined), ``n``, ``window_start``, ``window_end``,
            ``recorded_at`` (timezone-aware UTC).
        """
        record = ModelPerformanceRecord
        query = select(
            record.model_version,
            record.arm,
            record.metric,
            record.value,
            record.n,
            record.window_start,
            record.window_end,
            record.recorded_at,
        ).where(record.model_name == self.model_name)
        if not all_versions:
            query = query.where(record.model_version == self.model_version)
        if metric is not None:
            query = query.where(record.metric == metric)
        if since is not None:
            query = query.where(record.window_end >= as_utc(since))
        if arm is not None:
            query = query.where(record.arm == arm)
        query = query.order_by(record.window_end, record.id)
        with self.db.session() as session:
            rows = [tuple(row) for row in session.execute(query).all()]
        frame = pd.DataFrame(rows, columns=list(PERFORMANCE_COLUMNS))
        frame["value"] = frame["value"].astype(float)
        for name in ("window_start", "window_end", "recorded_at"):
            frame[name] = pd.to_datetime(frame[name], utc=True)
        return frame

    def detect_concept_drift(
        self,
        metric: str = "mape",
        window: int = 7,
        method: str = "mannwhitney",
        *,
        reference_window: int | None = None,
        threshold: float | None = None,
        arm: str | None = None,
    ) -> ConceptDriftResult:
        """Test whether the metric's recent values are worse than before (concept drift).

        Args:
            metric: A stored metric (all are errors: higher is worse).
            window: The most recent stored values tested (at least 3).
            method: ``"mannwhitney"`` (default) or ``"page_hinkley"``; see the
                module docstring for why.
            reference_window: How many values before the window form the
                reference (default: all of them).
            threshold: p-value limit for Mann-Whitney (default 0.01), statistic
                limit for Page-Hinkley (default 5 standard deviations).
            arm: Only this arm's series (default: every row of the version).

        Raises:
            DataValidationError: Fewer than ``window`` recent or 3 reference values.
        """
        history = self.performance_history(metric, arm=arm)
        values = history["value"].to_numpy(np.float64)
        values = values[np.isfinite(values)]
        return concept_drift(
            values,
            metric=metric,
            window=window,
            reference_window=reference_window,
            method=method,
            threshold=threshold,
        )

    # --- data drift ----------------------------------------------------------------

    def detect_data_drift(
        self,
        reference_data: pd.DataFrame,
        current_data: pd.DataFrame,
        threshold: float | None = None,
        *,
        columns: Sequence[str] | None = None,
        method: str = "auto",
        drift_share: float = 0.5,
        categorical: Sequence[str] | None = None,
        record: bool = True,
    ) -> DriftReport:
        """Compare serving features with the training features, column by column.

        Arguments as in :func:`retailml.validators.drift.detect_drift` (with
        ``method="auto"`` one ``threshold`` is both the p-value limit of small
        samples and the distance limit of large ones). A summary row is stored
        in ``drift_reports`` unless ``record`` is False.

        Returns:
            The :class:`~retailml.validators.drift.DriftReport`:
            ``dataset_drift``, ``drifted_columns``, ``share_drifted``, and per
            column the test, statistic, threshold and verdict.
        """
        report = detect_drift(
            reference_data,
            current_data,
            columns=columns,
            threshold=threshold,
            method=method,
            drift_share=drift_share,
            categorical=categorical,
        )
        if record:
            with self.db.session() as session:
                session.add(
                    DriftReportRecord(
                        model_name=self.model_name,
                        model_version=self.model_version,
                        share_drifted=report.share_drifted,
                        n_drifted=report.n_drifted,
                        n_columns=report.n_columns,
                        dataset_drift=report.dataset_drift,
                        details=report.to_dict(),
                        created_at=utcnow(),
                    )
                )
        return report

    def drift_history(self, since: datetime | None = None) -> pd.DataFrame:
        """Stored data-drift runs of this version, oldest first.

        Returns:
            Columns ``created_at``, ``share_drifted``, ``n_drifted``,
            ``n_columns``, ``dataset_drift``, ``drifted_columns`` (a list).
        """
        record = DriftReportRecord
        query = select(record).where(
            record.model_name == self.model_name, record.model_version == self.model_version
        )
        if since is not None:
            query = query.where(record.created_at >= as_utc(since))
        with self.db.session() as session:
            rows = [
                {
                    "created_at": as_utc(row.created_at),
                    "share_drifted": row.share_drifted,
                    "n_drifted": row.n_drifted,
                    "n_columns": row.n_columns,
                    "dataset_drift": row.dataset_drift,
                    "drifted_columns": list(row.details.get("drifted_columns", [])),
                }
                for row in session.scalars(query.order_by(record.created_at))
            ]
        columns = ["created_at", "share_drifted", "n_drifted", "n_columns", "dataset_drift"]
        return pd.DataFrame(rows, columns=[*columns, "drifted_columns"])

    # --- alerts --------------------------------------------------------------------

    def send_alert(
        self,
        alert_type: str,
        severity: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
    ) -> Alert:
        """Send an alert about this model version; see :class:`AlertManager.send`.

        ``severity`` is ``info``, ``warning`` or ``critical`` (``high`` means
        critical). Returns at once: webhook and e-mail deliveries run in the
        background.
        """
        return self.alerts.send(
            alert_type,
            severity,
            message,
            model_name=self.model_name,
            model_version=self.model_version,
            details=details,
        )
