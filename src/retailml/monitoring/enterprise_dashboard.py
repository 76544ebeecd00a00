"""The guide's MLOps dashboard: performance, data drift and health panels from live data.

::

    dashboard = MLOpsDashboard()
    performance = dashboard.create_performance_panel(
        models=["sales_forecast_prophet", "customer_segmentation_kmeans"],
        metrics=["accuracy", "latency", "throughput"], time_window="7d")
    drift = dashboard.create_drift_panel(
        models=["sales_forecast_prophet"],
        features=["seasonality", "trend", "external_factors"], alert_threshold=0.05)
    health = dashboard.create_health_panel(
        models=["all"], components=["serving", "monitoring", "storage"],
        status_indicators=["healthy", "degraded", "unhealthy"])
    html = dashboard.render_html()          # or serve it: _dashboard_routes.dashboard_router

Every ``create_*_panel`` returns a :class:`Panel`: its title, Plotly figures as
JSON-able dicts, the data rows it shows and a status. ``models=["all"]`` means
every model the platform database knows (performance, drift, prediction log,
deployments or alerts).

Where the numbers come from (the platform database):

==============  ============================================================================
``accuracy``    ``1 - MAPE`` of each stored evaluation (``model_performance``, metric
                ``mape``; MAPE is a fraction, so 0.12 MAPE is 0.88 accuracy). Forecast
                models are scored by MAPE; a model without stored MAPE has no accuracy.
``latency``     p50 and p95 of ``prediction_log.latency_ms`` per time bucket.
``throughput``  requests per minute: ``prediction_log`` rows per bucket / bucket minutes.
``error_rate``  share of ``prediction_log`` rows with status >= 500 or an error.
other names     any stored performance metric (``mape``, ``mae``, ``rmse``, ``smape``).
drift           per feature, the statistic of the stored drift runs (``drift_reports``
                details) held against ``alert_threshold``: a p-value test (KS,
                chi-square) flags a feature when ``p < alert_threshold``, a distance
                (Wasserstein, PSI, Jensen-Shannon) when ``distance > alert_threshold``
                -- the rule of :func:`retailml.validators.drift.detect_drift`.
health          ``serving``: error rate and requests over the last ``recent`` window and
                the active deployments; ``monitoring``: the age of the newest
                performance and drift records; ``storage``: the platform database
                answers and the workspace disk's free share. Open alerts are listed.
==============  ============================================================================

Statuses are ``healthy``, ``degraded`` and ``unhealthy`` (renamed by the health
panel's ``status_indicators``, best first), or ``unknown`` when there is no data.
"""

from __future__ import annotations

import contextlib
import html
import json
import math
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from sqlalchemy import case, func, select, text

from retailml.core.db import PlatformDB, UsesPlatformDB, as_utc, utcnow
from retailml.core.db_deploy import Deployment, PredictionLogEntry
from retailml.core.db_monitoring import AlertRecord, DriftReportRecord, ModelPerformanceRecord
from retailml.core.errors import ConfigError, problem
from retailml.core.settings import Settings, get_settings
from retailml.monitoring._performance import finite_or_none

__all__ = [
    "HEALTH_COMPONENTS",
    "PANEL_KINDS",
    "PERFORMANCE_METRICS",
    "STATUSES",
    "MLOpsDashboard",
    "Panel",
    "parse_duration",
]

#: Statuses, best first; ``unknown`` (no data) ranks between healthy and degraded.
STATUSES: tuple[str, ...] = ("healthy", "degraded", "unhealthy")
_LEVEL_UNKNOWN = 0.5
PANEL_KINDS: tuple[str, ...] = ("performance", "drift", "health")
#: Metrics of the performance panel besides the stored performance metrics.
PERFORMANCE_METRICS: tuple[str, ...] = ("accuracy", "latency", "throughput", "error_rate")
_STORED_METRICS: tuple[str, ...] = ("mape", "mae", "rmse", "smape")
HEALTH_COMPONENTS: tuple[str, ...] = ("serving", "monitoring", "storage")
#: MAPE above which accuracy is degraded (the guide's retraining threshold) / unhealthy.
MAPE_DEGRADED, MAPE_UNHEALTHY = 0.20, 0.50
#: Server error rate above which serving is degraded / unhealthy.
ERROR_RATE_DEGRADED, ERROR_RATE_UNHEALTHY = 0.01, 0.05
#: Free disk share below which storage is degraded / unhealthy.
DISK_FREE_DEGRADED, DISK_FREE_UNHEALTHY = 0.10, 0.02
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: Bucket sizes of the latency and throughput series, in seconds; the smallest
#: giving at most 200 buckets over the window is used.
_BUCKETS_S = (60, 300, 900, 3600, 6 * 3600, 86400)
_COLOURS = {"healthy": "#2ca02c", "degraded": "#ff7f0e", "unhealthy": "#d62728"}


def parse_duration(value: str | timedelta) -> timedelta:
    """``"30s"``, ``"15m"`` (minutes), ``"24h"``, ``"7d"`` or ``"2w"`` as a timedelta."""
    if isinstance(value, timedelta):
        return value
    match = _DURATION.match(str(value))
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(
            problem(
                "a positive duration like 15m, 24h, 7d or 2w",
                repr(value),
                "pass e.g. time_window='7d'",
                subject="dashboard time window",
            )
        )
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def _level(status: str) -> float:
    return _LEVEL_UNKNOWN if status == "unknown" else float(STATUSES.index(status))


def _worst(statuses: Sequence[str]) -> str:
    known = [s for s in statuses if s != "unknown"]
    if not known:
        return "unknown"
    return max(known, key=_level)


def _figure(fig: go.Figure) -> dict[str, Any]:
    """A figure as a JSON-able dict (numpy arrays and datetimes encoded by Plotly)."""
    data: dict[str, Any] = json.loads(fig.to_json())
    data.get("layout", {}).pop("template", None)  # the page sets one look for every chart
    return data


def _layout(title: str, y_title: str, **extra: Any) -> dict[str, Any]:
    return {
        "title": {"text": title},
        "yaxis": {"title": {"text": y_title}, "rangemode": "tozero"},
        "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
        "height": 320,
        "legend": {"orientation": "h", "y": -0.25},
        **extra,
    }


@dataclass
class Panel:
    """One dashboard panel.

    Attributes:
        kind: ``performance``, ``drift`` or ``health``.
        title: What the panel shows.
        figures: Plotly figures as JSON-able dicts (``{"data": [...], "layout": {...}}``).
        rows: The data the panel shows, one dict per row (JSON-able).
        status: ``healthy``, ``degraded``, ``unhealthy`` or ``unknown`` (health
            panels use their ``status_indicators`` names).
        notes: How to read the panel (definitions, models without data).
        alerts: Open and acknowledged alerts of the panel's models (health panel).
        params: The arguments that built it, so it can be rebuilt from live data.
        generated_at: When it was built (UTC, ISO 8601).
    """

    kind: str
    title: str
    figures: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    status: str
    notes: list[str] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    generated_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields."""
        return {
            "kind": self.kind,
            "title": self.title,
            "figures": self.figures,
            "rows": self.rows,
            "status": self.status,
            "notes": self.notes,
            "alerts": self.alerts,
            "params": self.params,
            "generated_at": self.generated_at,
        }


class MLOpsDashboard(UsesPlatformDB):
    """Builds monitoring panels from the platform database and renders them as HTML.

    Args:
        settings: Database and workspace (default: the process settings).
        db: The platform database (default: the one the settings name, migrated on first use).
    """

    def __init__(self, settings: Settings | None = None, *, db: PlatformDB | None = None) -> None:
        self._use_db(settings or get_settings(), db)
        #: The panels created so far, in order (what :meth:`render_html` shows by default).
        self.panels: list[Panel] = []
        self._local = threading.local()

    def _keep(self, panel: Panel) -> None:
        """Remember a created panel, unless it is being rebuilt for a refresh."""
        if not getattr(self._local, "detached", False):
            self.panels.append(panel)

    @contextlib.contextmanager
    def _detached(self) -> Iterator[None]:
        previous = getattr(self._local, "detached", False)
        self._local.detached = True
        try:
            yield
        finally:
            self._local.detached = previous

    # --- models -------------------------------------------------------------------

    def known_models(self) -> list[str]:
        """Every model named in the performance, drift, prediction-log, deployment, alert tables."""
        names: set[str] = set()
        with self.db.session() as session:
            for column in (
                ModelPerformanceRecord.model_name,
                DriftReportRecord.model_name,
                PredictionLogEntry.model_name,
                Deployment.model_name,
                AlertRecord.model_name,
            ):
                names.update(n for n in session.scalars(select(column).distinct()) if n)
        return sorted(names)

    def resolve_models(self, models: Sequence[str] | str | None) -> list[str]:
        """``["all"]``, ``"all"`` or None: every known model; else the names, de-duplicated."""
        if models is None or isinstance(models, str):
            models = ["all"] if models is None else [m.strip() for m in models.split(",")]
        names = [str(m) for m in models if str(m).strip()]
        if not names or "all" in names:
            return self.known_models()
        return list(dict.fromkeys(names))

    # --- performance ------------------------------------------------------------------

    def create_performance_panel(
        self,
        models: Sequence[str] | str = ("all",),
        metrics: Sequence[str] = ("accuracy", "latency", "throughput"),
        time_window: str | timedelta = "7d",
        *,
        now: datetime | None = None,
    ) -> Panel:
        """Accuracy (1 - MAPE), latency (p50/p95), throughput and stored metrics over a window.

        Args:
            models: Model names, or ``["all"]``.
            metrics: Among ``accuracy``, ``latency``, ``throughput``, ``error_rate``
                and the stored ``mape``, ``mae``, ``rmse``, ``smape``.
            time_window: How far back, e.g. ``"24h"``, ``"7d"``.
            now: The window's end (default: now, UTC).

        Returns:
            A panel with one figure per metric and one row per model and version:
            the latest accuracy / stored metrics, p50 / p95 latency (ms), mean
            and peak requests per minute, requests and error rate over the window.
        """
        wanted = list(dict.fromkeys(metrics))
        unknown = [m for m in wanted if m not in (*PERFORMANCE_METRICS, *_STORED_METRICS)]
        if unknown or not wanted:
            raise ConfigError(
                problem(
                    f"metrics among {', '.join((*PERFORMANCE_METRICS, *_STORED_METRICS))}",
                    repr(unknown or wanted),
                    "pass e.g. metrics=['accuracy', 'latency', 'throughput']",
                    subject="create_performance_panel",
                )
            )
        window = parse_duration(time_window)
        end = as_utc(now) or utcnow()
        start = end - window
        names = self.resolve_models(models)
        perf = self._performance_frame(names, start, end)
        log = self._log_frame(names, start, end)
        bucket_s = next((b for b in _BUCKETS_S if window.total_seconds() / b <= 200), 86400)
        series = self._log_series(log, bucket_s)

        figures: list[dict[str, Any]] = []
        for metric in wanted:
            if metric in ("latency", "throughput", "error_rate"):
                figures.append(self._log_figure(metric, series, bucket_s))
            else:
                figures.append(self._metric_figure(metric, perf))

        rows: list[dict[str, Any]] = []
        statuses: list[str] = []
        versions = sorted(
            set(zip(perf["model_name"], perf["model_version"], strict=True))
            | set(zip(log["model_name"], log["model_version"], strict=True))
        )
        minutes = window.total_seconds() / 60
        for name in names:
            model_versions = [v for n, v in versions if n == name]
            if not model_versions:
                rows.append({"model": name, "version": None, "status": "unknown"})
                statuses.append("unknown")
                continue
            for version in model_versions:
                row = self._performance_row(name, version, perf, log, series, minutes)
                rows.append(row)
                statuses.append(row["status"])
        missing = [r["model"] for r in rows if r["version"] is None]
        notes = [
            "accuracy = 1 - MAPE of each stored evaluation (MAPE as a fraction); "
            "models without a stored MAPE have none",
            f"latency: p50/p95 of prediction_log.latency_ms per {_bucket_name(bucket_s)}; "
            f"throughput: requests per minute per {_bucket_name(bucket_s)}",
            f"status: degraded when MAPE > {MAPE_DEGRADED:.0%} or the server error rate > "
            f"{ERROR_RATE_DEGRADED:.0%}, unhealthy above {MAPE_UNHEALTHY:.0%} / "
            f"{ERROR_RATE_UNHEALTHY:.0%}",
        ]
        if missing:
            notes.append(f"no data in the window for: {', '.join(missing)}")
        panel = Panel(
            kind="performance",
            title=f"Model performance, last {_duration_name(window)}",
            figures=figures,
            rows=rows,
            status=_worst(statuses),
            notes=notes,
            params={
                "models": list(models) if not isinstance(models, str) else [models],
                "metrics": wanted,
                "time_window": _duration_name(window),
            },
            generated_at=end.isoformat(),
        )
        self._keep(panel)
        return panel

    def _performance_frame(self, names: list[str], start: datetime, end: datetime) -> pd.DataFrame:
        record = ModelPerformanceRecord
        columns = ["model_name", "model_version", "arm", "metric", "value", "n", "window_end"]
        query = select(
            record.model_name,
            record.model_version,
            record.arm,
            record.metric,
            record.value,
            record.n,
            record.window_end,
        ).where(record.model_name.in_(names), record.window_end >= start, record.window_end <= end)
        with self.db.session() as session:
            rows = [tuple(r) for r in session.execute(query.order_by(record.window_end, record.id))]
        frame = pd.DataFrame(rows, columns=columns)
        frame["value"] = pd.to_numeric(frame["value"], errors="coerce").astype(float)
        frame["window_end"] = pd.to_datetime(frame["window_end"], utc=True)
        return frame

    def _log_frame(self, names: list[str], start: datetime, end: datetime) -> pd.DataFrame:
        entry = PredictionLogEntry
        columns = [
            "model_name",
            "model_version",
            "latency_ms",
            "status_code",
            "error",
            "created_at",
        ]
        query = select(
            entry.model_name,
            entry.model_version,
            entry.latency_ms,
            entry.status_code,
            entry.error,
            entry.created_at,
        ).where(entry.model_name.in_(names), entry.created_at >= start, entry.created_at <= end)
        # Core, not the ORM: the prediction log is the large table here.
        with self.db.engine.connect() as connection:
            rows = connection.execute(query).all()
        frame = pd.DataFrame([tuple(r) for r in rows], columns=columns)
        frame["latency_ms"] = frame["latency_ms"].astype(float)
        frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
        frame["failed"] = (frame["status_code"].astype(float) >= 500) | frame["error"].notna()
        return frame

    @staticmethod
    def _log_series(log: pd.DataFrame, bucket_s: int) -> pd.DataFrame:
        """Per model, version and bucket: requests, rpm, p50, p95 latency and error rate."""
        columns = ["model_name", "model_version", "bucket", "requests", "rpm", "p50", "p95"]
        if log.empty:
            return pd.DataFrame(columns=[*columns, "error_rate"])
        frame = log.assign(bucket=log["created_at"].dt.floor(f"{bucket_s}s"))
        grouped = frame.groupby(["model_name", "model_version", "bucket"], sort=True)
        out = grouped.agg(
            requests=("latency_ms", "size"),
            p50=("latency_ms", lambda s: float(np.percentile(s, 50))),
            p95=("latency_ms", lambda s: float(np.percentile(s, 95))),
            failed=("failed", "sum"),
        ).reset_index()
        out["rpm"] = out["requests"] / (bucket_s / 60)
        out["error_rate"] = out["failed"] / out["requests"]
        return out.drop(columns=["failed"])

    @staticmethod
    def _metric_figure(metric: str, perf: pd.DataFrame) -> dict[str, Any]:
        source = "mape" if metric == "accuracy" else metric
        fig = go.Figure()
        chosen = perf[perf["metric"] == source]
        for (name, version), group in chosen.groupby(["model_name", "model_version"], sort=True):
            values = group["value"].to_numpy(np.float64)
            y = 1.0 - values if metric == "accuracy" else values
            fig.add_trace(
                go.Scatter(
                    x=group["window_end"].dt.strftime("%Y-%m-%dT%H:%M:%SZ").tolist(),
                    y=[finite_or_none(v) for v in y],
                    mode="lines+markers",
                    name=f"{name} {version}",
                )
            )
        title = "Accuracy (1 - MAPE)" if metric == "accuracy" else metric.upper()
        layout = _layout(title, "accuracy" if metric == "accuracy" else metric)
        if metric == "accuracy":
            layout["yaxis"]["tickformat"] = ".0%"
        fig.update_layout(**layout)
        return _figure(fig)

    @staticmethod
    def _log_figure(metric: str, series: pd.DataFrame, bucket_s: int) -> dict[str, Any]:
        fig = go.Figure()
        for (name, version), group in series.groupby(["model_name", "model_version"], sort=True):
            x = group["bucket"].dt.strftime("%Y-%m-%dT%H:%M:%SZ").tolist()
            label = f"{name} {version}"
            if metric == "latency":
                fig.add_trace(go.Scatter(x=x, y=group["p50"].tolist(), name=f"{label} p50"))
                fig.add_trace(
                    go.Scatter(x=x, y=group["p95"].tolist(), name=f"{label} p95", line_dash="dot")
                )
            elif metric == "throughput":
                fig.add_trace(go.Bar(x=x, y=group["rpm"].tolist(), name=label))
            else:
                fig.add_trace(go.Scatter(x=x, y=group["error_rate"].tolist(), name=label))
        every = _bucket_name(bucket_s)
        titles = {
            "latency": (f"Latency p50 / p95 per {every}", "ms"),
            "throughput": (f"Throughput per {every}", "requests / minute"),
            "error_rate": (f"Server error rate per {every}", "share of requests"),
        }
        fig.update_layout(**_layout(*titles[metric]))
        return _figure(fig)

    @staticmethod
    def _performance_row(
        name: str,
        version: str,
        perf: pd.DataFrame,
        log: pd.DataFrame,
        series: pd.DataFrame,
        minutes: float,
    ) -> dict[str, Any]:
        mine = perf[(perf["model_name"] == name) & (perf["model_version"] == version)]
        row: dict[str, Any] = {"model": name, "version": version}
        for metric in _STORED_METRICS:
            values = mine.loc[mine["metric"] == metric, "value"].dropna()
            if not values.empty:
                row[metric] = finite_or_none(values.iloc[-1])
        mape = row.get("mape")
        row["accuracy"] = None if mape is None else finite_or_none(1.0 - mape)
        served = log[(log["model_name"] == name) & (log["model_version"] == version)]
        buckets = series[(series["model_name"] == name) & (series["model_version"] == version)]
        row["requests"] = len(served)
        if served.empty:
            row.update(latency_p50_ms=None, latency_p95_ms=None, error_rate=None)
            row.update(throughput_rpm=0.0, peak_rpm=0.0)
        else:
            latency = served["latency_ms"].to_numpy(np.float64)
            row["latency_p50_ms"] = finite_or_none(np.percentile(latency, 50))
            row["latency_p95_ms"] = finite_or_none(np.percentile(latency, 95))
            row["error_rate"] = finite_or_none(served["failed"].mean())
            row["throughput_rpm"] = finite_or_none(len(served) / minutes)
            row["peak_rpm"] = finite_or_none(buckets["rpm"].max())
        statuses = ["unknown"]
        if mape is not None:
            statuses.append(
                "unhealthy"
                if mape > MAPE_UNHEALTHY
                else "degraded"
                if mape > MAPE_DEGRADED
                else "healthy"
            )
        elif mine.shape[0]:
            statuses.append("healthy")
        if row["error_rate"] is not None:
            statuses.append(_error_status(row["error_rate"]))
        row["status"] = _worst(statuses)
        return row

    # --- drift --------------------------------------------------------------------

    def create_drift_panel(
        self,
        models: Sequence[str] | str = ("all",),
        features: Sequence[str] | None = None,
        alert_threshold: float = 0.05,
        *,
        time_window: str | timedelta = "30d",
        now: datetime | None = None,
    ) -> Panel:
        """Per-feature data drift of the stored drift runs, flagged against ``alert_threshold``.

        Args:
            models: Model names, or ``["all"]``.
            features: The features to show (default: every feature a run compared).
            alert_threshold: p-value tests flag ``p < threshold``, distances
                ``distance > threshold`` (see the module docstring).
            time_window: Runs of this window (default 30 days).
            now: The window's end (default: now, UTC).

        Returns:
            A panel with the flagged share of the features per run over time, the
            latest run's statistic per feature, and one row per model, version
            and feature of the latest run (``not_monitored`` when no run compared it).
        """
        threshold = float(alert_threshold)
        if not math.isfinite(threshold) or threshold <= 0:
            raise ConfigError(
                problem(
                    "a positive alert_threshold",
                    repr(alert_threshold),
                    "pass e.g. alert_threshold=0.05",
                    subject="create_drift_panel",
                )
            )
        window = parse_duration(time_window)
        end = as_utc(now) or utcnow()
        names = self.resolve_models(models)
        wanted = list(dict.fromkeys(features)) if features else None
        record = DriftReportRecord
        query = (
            select(record)
            .where(
                record.model_name.in_(names),
                record.created_at >= end - window,
                record.created_at <= end,
            )
            .order_by(record.created_at, record.id)
        )
        with self.db.session() as session:
            runs = [
                (r.model_name, r.model_version, as_utc(r.created_at), dict(r.details or {}))
                for r in session.scalars(query)
            ]
        history: list[dict[str, Any]] = []
        latest: dict[tuple[str, str], tuple[datetime, dict[str, Any]]] = {}
        for name, version, created, details in runs:
            columns = details.get("columns", {})
            shown = wanted if wanted is not None else list(columns)
            verdicts = [_flag(columns[f], threshold) for f in shown if f in columns]
            if verdicts:
                history.append(
                    {
                        "model": name,
                        "version": version,
                        "created_at": created,
                        "share": sum(verdicts) / len(verdicts),
                    }
                )
            latest[(name, version)] = (created, columns)

        rows: list[dict[str, Any]] = []
        for (name, version), (created, columns) in sorted(latest.items()):
            shown = wanted if wanted is not None else list(columns)
            for feature in shown:
                verdict = columns.get(feature)
                if verdict is None:
                    rows.append(
                        {
                            "model": name,
                            "version": version,
                            "feature": feature,
                            "status": "not_monitored",
                            "run_at": created.isoformat() if created else None,
                        }
                    )
                    continue
                flagged = _flag(verdict, threshold)
                rows.append(
                    {
                        "model": name,
                        "version": version,
                        "feature": feature,
                        "test": verdict.get("test"),
                        "statistic": finite_or_none(verdict.get("statistic")),
                        "p_value": finite_or_none(verdict.get("p_value")),
                        "alert_threshold": threshold,
                        "drifted": flagged,
                        "status": "degraded" if flagged else "healthy",
                        "run_at": created.isoformat() if created else None,
                    }
                )
        without = [n for n in names if not any(key[0] == n for key in latest)]
        for name in without:
            rows.append({"model": name, "version": None, "feature": None, "status": "unknown"})

        share_fig = go.Figure()
        frame = pd.DataFrame(history, columns=["model", "version", "created_at", "share"])
        for key, group in frame.groupby(["model", "version"], sort=True):
            share_fig.add_trace(
                go.Scatter(
                    x=[t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in group["created_at"]],
                    y=group["share"].tolist(),
                    mode="lines+markers",
                    name=" ".join(str(part) for part in key),
                )
            )
        share_layout = _layout("Share of features drifting, per run", "share of features")
        share_layout["yaxis"].update(tickformat=".0%", range=[0, 1.05])
        share_fig.update_layout(**share_layout)

        feature_fig = go.Figure()
        scored = [r for r in rows if r.get("test")]
        for flagged in (False, True):
            chosen = [r for r in scored if r["drifted"] is flagged]
            if chosen:
                feature_fig.add_trace(
                    go.Bar(
                        x=[
                            r["feature"]
                            if len(latest) == 1
                            else f"{r['model']} {r['version']}: {r['feature']}"
                            for r in chosen
                        ],
                        y=[_drift_score(r) for r in chosen],
                        name="drifting" if flagged else "stable",
                        marker_color=_COLOURS["unhealthy" if flagged else "healthy"],
                        customdata=[[r["test"], r["statistic"]] for r in chosen],
                        hovertemplate="%{x}<br>%{customdata[0]} statistic %{customdata[1]:.4g}"
                        "<br>score %{y:.2f}<extra></extra>",
                    )
                )
        feature_fig.update_layout(
            **_layout(
                "Latest run per feature (score = statistic / threshold, or threshold / p)",
                "drift score (> 1 drifts)",
                shapes=[
                    {
                        "type": "line",
                        "xref": "paper",
                        "x0": 0,
                        "x1": 1,
                        "y0": 1,
                        "y1": 1,
                        "line": {"dash": "dash", "color": "#d62728"},
                    }
                ],
            )
        )
        statuses = [r["status"] for r in rows if r["status"] != "not_monitored"]
        status = _worst(statuses) if statuses else "unknown"
        shares = {
            (r["model"], r["version"]) for r in rows if r.get("drifted")
        }  # models drifting in the latest run
        notes = [
            f"a feature drifts when its p-value < {threshold:g} (KS, chi-square) or its distance "
            f"> {threshold:g} (Wasserstein, PSI, Jensen-Shannon)",
        ]
        missing = [r["feature"] for r in rows if r["status"] == "not_monitored"]
        if missing:
            notes.append(f"not compared by the latest run: {', '.join(sorted(set(missing)))}")
        if without:
            notes.append(f"no drift run in the window for: {', '.join(without)}")
        if shares:
            notes.append("drifting now: " + ", ".join(f"{n} {v}" for n, v in sorted(shares)))
        panel = Panel(
            kind="drift",
            title=f"Data drift, last {_duration_name(window)}",
            figures=[_figure(share_fig), _figure(feature_fig)],
            rows=rows,
            status=status,
            notes=notes,
            params={
                "models": list(models) if not isinstance(models, str) else [models],
                "features": wanted,
                "alert_threshold": threshold,
                "time_window": _duration_name(window),
            },
            generated_at=end.isoformat(),
        )
        self._keep(panel)
        return panel

    # --- health -------------------------------------------------------------------

    def create_health_panel(
        self,
        models: Sequence[str] | str = ("all",),
        components: Sequence[str] = HEALTH_COMPONENTS,
        status_indicators: Sequence[str] = STATUSES,
        *,
        recent: str | timedelta = "15m",
        stale_after: str | timedelta = "2d",
        now: datetime | None = None,
    ) -> Panel:
        """Per component and model: healthy, degraded or unhealthy, with open alerts.

        Args:
            models: Model names, or ``["all"]``.
            components: Among ``serving``, ``monitoring``, ``storage``.
            status_indicators: Names for healthy, degraded and unhealthy, best first
                (fewer names: the last one covers the worse levels).
            recent: The serving window for requests and error rate (default 15 minutes).
            stale_after: Monitoring records older than this are stale (default 2 days).
            now: The reference time (default: now, UTC).

        Returns:
            A panel with a status grid (component x model) and one row per
            component and model with the figures behind its status; ``alerts``
            lists the open and acknowledged alerts, most severe first.
        """
        chosen = list(dict.fromkeys(components))
        unknown = [c for c in chosen if c not in HEALTH_COMPONENTS]
        indicators = [str(s) for s in status_indicators]
        if unknown or not chosen or not indicators:
            raise ConfigError(
                problem(
                    f"components among {', '.join(HEALTH_COMPONENTS)} and status names",
                    f"components {chosen!r}, status_indicators {indicators!r}",
                    "pass e.g. components=['serving', 'monitoring', 'storage']",
                    subject="create_health_panel",
                )
            )
        end = as_utc(now) or utcnow()
        recent_window = parse_duration(recent)
        stale = parse_duration(stale_after)
        rows: list[dict[str, Any]] = []
        storage_ok = True
        if "storage" in chosen:
            row = self._storage_health()
            storage_ok = row["database_reachable"]
            rows.append(row)
        names: list[str] = []
        alerts: list[dict[str, Any]] = []
        if storage_ok:
            names = self.resolve_models(models)
            if "serving" in chosen:
                rows += self._serving_health(names, end, recent_window)
            if "monitoring" in chosen:
                rows += self._monitoring_health(names, end, stale)
            alerts = self._open_alerts(names)

        def label(status: str) -> str:
            if status == "unknown":
                return "unknown"
            return indicators[min(STATUSES.index(status), len(indicators) - 1)]

        overall = _worst([r["status"] for r in rows])
        if any(a["severity"] == "critical" and a["state"] == "open" for a in alerts):
            overall = _worst([overall, "degraded"])
        for row in rows:
            row["status"] = label(row["status"])

        targets = ["platform", *names]
        z: list[list[float | None]] = []
        texts: list[list[str]] = []
        for target in targets:
            z_row: list[float | None] = []
            text_row: list[str] = []
            for component in chosen:
                match = next(
                    (r for r in rows if r["component"] == component and r["model"] == target), None
                )
                if match is None:
                    z_row.append(None)
                    text_row.append("")
                else:
                    status = match["status"]
                    level = (
                        _LEVEL_UNKNOWN
                        if status == "unknown"
                        else float(min(indicators.index(status), 2))
                    )
                    z_row.append(level)
                    text_row.append(status)
            z.append(z_row)
            texts.append(text_row)
        grid = go.Figure(
            go.Heatmap(
                z=z,
                x=chosen,
                y=targets,
                text=texts,
                texttemplate="%{text}",
                zmin=0,
                zmax=2,
                showscale=False,
                colorscale=[
                    [0.0, _COLOURS["healthy"]],
                    [0.25, "#bdbdbd"],
                    [0.5, _COLOURS["degraded"]],
                    [1.0, _COLOURS["unhealthy"]],
                ],
                xgap=3,
                ygap=3,
                hovertemplate="%{y} / %{x}: %{text}<extra></extra>",
            )
        )
        grid.update_layout(
            title={"text": "Component health"},
            margin={"l": 160, "r": 20, "t": 50, "b": 40},
            height=max(220, 60 + 40 * len(targets)),
            yaxis={"autorange": "reversed"},
        )
        notes = [
            f"serving: server error rate over the last {_duration_name(recent_window)} "
            f"(degraded > {ERROR_RATE_DEGRADED:.0%}, unhealthy > {ERROR_RATE_UNHEALTHY:.0%}) "
            "and an active deployment",
            f"monitoring: newest performance and drift records (stale after "
            f"{_duration_name(stale)})",
            f"storage: platform database reachable; workspace disk free (degraded < "
            f"{DISK_FREE_DEGRADED:.0%}, unhealthy < {DISK_FREE_UNHEALTHY:.0%})",
        ]
        if alerts:
            notes.append(f"{len(alerts)} open or acknowledged alert(s)")
        panel = Panel(
            kind="health",
            title="Platform and model health",
            figures=[_figure(grid)],
            rows=rows,
            status=label(overall),
            notes=notes,
            alerts=alerts,
            params={
                "models": list(models) if not isinstance(models, str) else [models],
                "components": chosen,
                "status_indicators": indicators,
                "recent": _duration_name(recent_window),
                "stale_after": _duration_name(stale),
            },
            generated_at=end.isoformat(),
        )
        self._keep(panel)
        return panel

    def _storage_health(self) -> dict[str, Any]:
        row: dict[str, Any] = {"component": "storage", "model": "platform"}
        started = time.perf_counter()
        try:
            with self.db.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            row["database_reachable"] = True
            row["database_ms"] = round((time.perf_counter() - started) * 1000, 2)
            status = "healthy"
            detail = [f"database answered in {row['database_ms']} ms"]
        except Exception as exc:  # any driver error means unreachable
            row["database_reachable"] = False
            row["database_error"] = f"{type(exc).__name__}: {exc}"[:300]
            status = "unhealthy"
            detail = ["platform database unreachable"]
        path = Path(self.settings.home).resolve()
        while not path.exists() and path != path.parent:
            path = path.parent
        usage = shutil.disk_usage(path)
        free = usage.free / usage.total if usage.total else 0.0
        row.update(
            disk_path=str(path),
            disk_free_bytes=usage.free,
            disk_total_bytes=usage.total,
            disk_free_share=round(free, 4),
        )
        disk = (
            "unhealthy"
            if free < DISK_FREE_UNHEALTHY
            else "degraded"
            if free < DISK_FREE_DEGRADED
            else "healthy"
        )
        detail.append(f"{free:.0%} of the workspace disk free")
        row["status"] = _worst([status, disk])
        row["detail"] = "; ".join(detail)
        return row

    def _serving_health(
        self, names: list[str], end: datetime, recent: timedelta
    ) -> list[dict[str, Any]]:
        entry = PredictionLogEntry
        failed = (entry.status_code >= 500) | entry.error.is_not(None)
        with self.db.session() as session:
            counts = {
                name: (int(total), int(bad or 0))
                for name, total, bad in session.execute(
                    select(
                        entry.model_name,
                        func.count(),
                        func.sum(case((failed, 1), else_=0)),
                    )
                    .where(
                        entry.model_name.in_(names),
                        entry.created_at >= end - recent,
                        entry.created_at <= end,
                    )
                    .group_by(entry.model_name)
                )
            }
            active: dict[str, list[str]] = {}
            for name, environment, version in session.execute(
                select(Deployment.model_name, Deployment.environment, Deployment.version).where(
                    Deployment.model_name.in_(names), Deployment.status == "active"
                )
            ):
                active.setdefault(name, []).append(f"{environment}:{version}")
        rows = []
        for name in names:
            total, bad = counts.get(name, (0, 0))
            rate = bad / total if total else None
            deployments = sorted(active.get(name, []))
            detail = [f"{total} requests in the last {_duration_name(recent)}"]
            statuses: list[str] = []
            if rate is not None:
                statuses.append(_error_status(rate))
                detail.append(f"{rate:.1%} server errors")
            if deployments:
                detail.append(f"active: {', '.join(deployments)}")
            elif total:
                detail.append("serving without an active deployment record")
            else:
                statuses.append("degraded")
                detail.append("no active deployment and no traffic")
            rows.append(
                {
                    "component": "serving",
                    "model": name,
                    "status": _worst(statuses or ["healthy"]),
                    "requests": total,
                    "server_errors": bad,
                    "error_rate": finite_or_none(rate),
                    "active_deployments": deployments,
                    "detail": "; ".join(detail),
                }
            )
        return rows

    def _monitoring_health(
        self, names: list[str], end: datetime, stale: timedelta
    ) -> list[dict[str, Any]]:
        perf, drift = ModelPerformanceRecord, DriftReportRecord
        with self.db.session() as session:
            last_perf = dict(
                session.execute(
                    select(perf.model_name, func.max(perf.recorded_at))
                    .where(perf.model_name.in_(names))
                    .group_by(perf.model_name)
                ).all()
            )
            last_drift = dict(
                session.execute(
                    select(drift.model_name, func.max(drift.created_at))
                    .where(drift.model_name.in_(names))
                    .group_by(drift.model_name)
                ).all()
            )
        rows = []
        for name in names:
            row: dict[str, Any] = {"component": "monitoring", "model": name}
            statuses, detail = [], []
            for key, stamps in (("performance", last_perf), ("drift", last_drift)):
                stamp = as_utc(stamps.get(name))
                if stamp is None:
                    row[f"{key}_age_s"] = None
                    statuses.append("degraded")
                    detail.append(f"no {key} record")
                    continue
                age = max(0.0, (end - stamp).total_seconds())
                row[f"{key}_age_s"] = round(age, 1)
                statuses.append("degraded" if age > stale.total_seconds() else "healthy")
                detail.append(f"{key} {_duration_name(timedelta(seconds=age))} old")
            row["status"] = _worst(statuses)
            row["detail"] = "; ".join(detail)
            rows.append(row)
        return rows

    def _open_alerts(self, names: list[str]) -> list[dict[str, Any]]:
        record = AlertRecord
        query = select(record).where(record.state != "resolved")
        with self.db.session() as session:
            found = list(session.scalars(query.order_by(record.last_seen.desc(), record.id)))
        rank = {"critical": 0, "warning": 1, "info": 2}
        alerts = [
            {
                "id": r.id,
                "alert_type": r.alert_type,
                "severity": r.severity,
                "state": r.state,
                "model": r.model_name,
                "version": r.model_version,
                "message": r.message,
                "count": r.count,
                "last_seen": _iso(r.last_seen),
            }
            for r in found
            if r.model_name is None or r.model_name in names
        ]
        return sorted(alerts, key=lambda a: rank.get(a["severity"], 3))

    # --- refresh and HTML -----------------------------------------------------------

    def rebuild(self, panel: Panel, *, now: datetime | None = None) -> Panel:
        """The same panel built again from the current data (not added to :attr:`panels`)."""
        params = dict(panel.params)
        builders: dict[str, Callable[..., Panel]] = {
            "performance": self.create_performance_panel,
            "drift": self.create_drift_panel,
            "health": self.create_health_panel,
        }
        with self._detached():
            built: Panel = builders[panel.kind](**params, now=now)
        return built

    def default_panels(self) -> list[Panel]:
        """Performance, drift and health of every model (not added to :attr:`panels`)."""
        with self._detached():
            return [
                self.create_performance_panel(["all"]),
                self.create_drift_panel(["all"]),
                self.create_health_panel(["all"]),
            ]

    def data(self, panels: Sequence[Panel] | None = None) -> dict[str, Any]:
        """Fresh panels as the dashboard page's ``data.json``: ``{"generated_at", "panels"}``.

        Args:
            panels: Panels to rebuild (default: :attr:`panels`, or the default set
                when none was created).
        """
        source = list(panels) if panels is not None else list(self.panels)
        fresh = [self.rebuild(p) for p in source] if source else self.default_panels()
        return {
            "generated_at": utcnow().isoformat(),
            "panels": [p.to_dict() for p in fresh],
        }

    def render_html(
        self,
        panels: Sequence[Panel] | None = None,
        *,
        plotly_src: str = "/dashboard/static/plotly.min.js",
        data_url: str | None = "/dashboard/data.json",
        refresh_s: float = 30.0,
        title: str = "retailml MLOps dashboard",
    ) -> str:
        """A full HTML page drawing the panels with Plotly, refreshed from ``data_url``.

        Args:
            panels: Panels to show (default: :attr:`panels`, or the default set).
            plotly_src: Where the page loads plotly.js from: a local path the
                dashboard routes serve (no CDN).
            data_url: The JSON the page fetches every ``refresh_s`` seconds to
                redraw the charts; None for a static page.
            refresh_s: Seconds between refreshes.
            title: The page title.
        """
        shown = list(panels) if panels is not None else list(self.panels)
        if not shown:
            shown = self.default_panels()
        initial = {"generated_at": utcnow().isoformat(), "panels": [p.to_dict() for p in shown]}
        return page_html(
            initial,
            title=title,
            plotly_script=f'<script src="{html.escape(plotly_src)}"></script>',
            data_url=data_url,
            refresh_s=refresh_s,
        )


def _iso(value: datetime | None) -> str | None:
    stamp = as_utc(value)
    return None if stamp is None else stamp.isoformat()


def _flag(verdict: dict[str, Any], threshold: float) -> bool:
    """Whether a stored column verdict drifts at ``threshold`` (p-value or distance test)."""
    p_value = finite_or_none(verdict.get("p_value"))
    if p_value is not None:
        return p_value < threshold
    statistic = verdict.get("statistic")
    if statistic is None:  # a non-finite distance (constant reference column)
        return bool(verdict.get("drifted"))
    return float(statistic) > threshold


def _drift_score(row: dict[str, Any]) -> float:
    """Statistic over threshold for distances, threshold over p for p-values (> 1 drifts)."""
    threshold = float(row["alert_threshold"])
    if row.get("p_value") is not None:
        return min(100.0, threshold / max(float(row["p_value"]), 1e-12))
    if row.get("statistic") is None:
        return 100.0 if row.get("drifted") else 0.0
    return min(100.0, float(row["statistic"]) / threshold)


def _error_status(rate: float) -> str:
    if rate > ERROR_RATE_UNHEALTHY:
        return "unhealthy"
    return "degraded" if rate > ERROR_RATE_DEGRADED else "healthy"


def _bucket_name(seconds: int) -> str:
    return {60: "minute", 3600: "hour", 86400: "day"}.get(seconds) or _duration_name(
        timedelta(seconds=seconds)
    )


def _duration_name(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds >= 86400:
        return f"{seconds / 86400:.1f}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    if seconds >= 60:
        return f"{seconds / 60:.0f}m"
    return f"{seconds:.0f}s"


def _json_script(data: Any) -> str:
    """JSON safe to embed in a ``<script>`` element."""
    return (
        json.dumps(data, allow_nan=False, default=str)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<link rel="icon" href="data:,">
<style>
body { font-family: system-ui, sans-serif; margin: 0; background: #f5f6f8; color: #222; }
header { background: #1f2937; color: #fff; padding: 12px 24px; display: flex;
         justify-content: space-between; align-items: baseline; }
header h1 { font-size: 20px; margin: 0; }
main { padding: 16px 24px; }
section.panel { background: #fff; border-radius: 8px; padding: 12px 16px; margin-bottom: 16px;
                box-shadow: 0 1px 3px rgba(0,0,0,.12); }
section.panel h2 { font-size: 17px; margin: 0 0 8px 0; }
.status { display: inline-block; padding: 2px 10px; border-radius: 10px; color: #fff;
          font-size: 13px; margin-left: 8px; background: #888; }
.status.healthy { background: #2ca02c; } .status.degraded { background: #ff7f0e; }
.status.unhealthy { background: #d62728; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 8px; }
.chart { min-height: 220px; min-width: 0; }
table { border-collapse: collapse; font-size: 12px; margin-top: 8px; width: 100%; }
th, td { border-bottom: 1px solid #e5e7eb; padding: 3px 6px; text-align: left; }
ul.notes { font-size: 12px; color: #555; margin: 6px 0; }
details summary { cursor: pointer; font-size: 13px; }
</style>
__PLOTLY__
</head>
<body data-refreshes="0">
<header><h1>__TITLE__</h1><span id="generated">generated __GENERATED__</span></header>
<main id="panels"></main>
<script type="application/json" id="dashboard-data">__DATA__</script>
<script>
(function () {
  "use strict";
  var DATA_URL = __DATA_URL__;
  var REFRESH_MS = __REFRESH_MS__;
  var config = {responsive: true, displaylogo: false};

  function fmt(value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "number") {
      return Number.isInteger(value) ? String(value) : value.toPrecision(4);
    }
    if (Array.isArray(value)) return value.join(", ");
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  function table(rows) {
    var el = document.createElement("table");
    if (!rows.length) return el;
    var keys = [];
    rows.forEach(function (r) {
      Object.keys(r).forEach(function (k) { if (keys.indexOf(k) < 0) keys.push(k); });
    });
    var head = el.createTHead().insertRow();
    keys.forEach(function (k) {
      var th = document.createElement("th"); th.textContent = k; head.appendChild(th);
    });
    var body = el.createTBody();
    rows.forEach(function (r) {
      var tr = body.insertRow();
      keys.forEach(function (k) { tr.insertCell().textContent = fmt(r[k]); });
    });
    return el;
  }

  function section(panel, index) {
    var id = "panel-" + index;
    var el = document.getElementById(id);
    if (!el) {
      el = document.createElement("section");
      el.className = "panel"; el.id = id; el.dataset.kind = panel.kind;
      el.innerHTML = '<h2><span class="title"></span><span class="status"></span></h2>' +
        '<div class="charts"></div><ul class="notes"></ul>' +
        '<details open><summary>data</summary><div class="rows"></div></details>' +
        '<div class="alerts"></div>';
      document.getElementById("panels").appendChild(el);
    }
    return el;
  }

  function draw(payload) {
    payload.panels.forEach(function (panel, index) {
      var el = section(panel, index);
      el.querySelector(".title").textContent = panel.title;
      var badge = el.querySelector(".status");
      badge.textContent = panel.status;
      badge.className = "status " + panel.status;
      var charts = el.querySelector(".charts");
      // Lay out every chart's box first, so each draws at its final grid width.
      var divs = panel.figures.map(function (figure, j) {
        var div = document.getElementById("panel-" + index + "-figure-" + j);
        if (!div) {
          div = document.createElement("div");
          div.className = "chart"; div.id = "panel-" + index + "-figure-" + j;
          charts.appendChild(div);
        }
        return div;
      });
      panel.figures.forEach(function (figure, j) {
        Plotly.react(divs[j], figure.data || [], figure.layout || {}, config);
      });
      var notes = el.querySelector(".notes");
      notes.innerHTML = "";
      panel.notes.forEach(function (n) {
        var li = document.createElement("li"); li.textContent = n; notes.appendChild(li);
      });
      var rows = el.querySelector(".rows");
      rows.innerHTML = ""; rows.appendChild(table(panel.rows));
      var alerts = el.querySelector(".alerts");
      alerts.innerHTML = "";
      if (panel.alerts && panel.alerts.length) {
        var h = document.createElement("h3"); h.textContent = "Open alerts";
        alerts.appendChild(h); alerts.appendChild(table(panel.alerts));
      }
    });
    document.getElementById("generated").textContent = "generated " + payload.generated_at;
    document.body.dataset.generatedAt = payload.generated_at;
  }

  function refresh() {
    fetch(DATA_URL, {cache: "no-store"})
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (payload) {
        draw(payload);
        document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes) + 1);
      })
      .catch(function (error) { console.warn("dashboard refresh failed: " + error); })
      .finally(function () { window.setTimeout(refresh, REFRESH_MS); });
  }

  draw(JSON.parse(document.getElementById("dashboard-data").textContent));
  document.body.dataset.ready = "1";
  if (DATA_URL) window.setTimeout(refresh, REFRESH_MS);
})();
</script>
</body>
</html>
"""


def page_html(
    payload: dict[str, Any],
    *,
    title: str,
    plotly_script: str,
    data_url: str | None,
    refresh_s: float,
) -> str:
    """The dashboard page around ``payload`` (``{"generated_at", "panels"}``)."""
    replacements = {
        "__TITLE__": html.escape(title),
        "__PLOTLY__": plotly_script,
        "__GENERATED__": html.escape(str(payload.get("generated_at", ""))),
        "__DATA_URL__": json.dumps(data_url),
        "__REFRESH_MS__": str(max(250, round(refresh_s * 1000))),
    }
    page = _PAGE
    for key, value in replacements.items():
        page = page.replace(key, value)
    # The data last: it may contain any text, placeholders included.
    return page.replace("__DATA__", _json_script(payload))
