"""The current monitoring state as gauge samples, for a Prometheus collector or a dashboard.

:func:`monitoring_gauges` reads the platform database (three grouped queries,
whatever the number of models) and returns one :class:`GaugeSample` per time
series:

====================================  ==============================  =====================
name                                  labels                          value
====================================  ==============================  =====================
``retailml_model_performance``        model, version, arm, metric     latest window's value
``retailml_model_performance_pairs``  model, version, arm, metric     its pair count ``n``
``retailml_data_drift_share``         model, version                  latest run's share
``retailml_data_drift_detected``      model, version                  1 if it drifted, or 0
``retailml_alerts_active``            model, severity, state          alerts not resolved
====================================  ==============================  =====================

An arm or model that is null is the empty string, as in the serving metrics;
an undefined metric value (MAPE over zero actuals) is NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import func, select

from retailml.core.db import PlatformDB
from retailml.core.db_monitoring import AlertRecord, DriftReportRecord, ModelPerformanceRecord

__all__ = ["GaugeSample", "monitoring_gauges"]


@dataclass(frozen=True)
class GaugeSample:
    """One gauge time series: its metric name, its labels and its current value."""

    name: str
    labels: dict[str, str]
    value: float


def monitoring_gauges(db: PlatformDB) -> list[GaugeSample]:
    """The latest performance, drift and alert state of every model, as gauge samples."""
    samples: list[GaugeSample] = []
    perf = ModelPerformanceRecord
    rank = (
        func.row_number()
        .over(
            partition_by=(perf.model_name, perf.model_version, perf.arm, perf.metric),
            order_by=(perf.window_end.desc(), perf.id.desc()),
        )
        .label("rank")
    )
    latest = select(
        perf.model_name, perf.model_version, perf.arm, perf.metric, perf.value, perf.n, rank
    ).subquery()
    drift = DriftReportRecord
    drift_rank = (
        func.row_number()
        .over(
            partition_by=(drift.model_name, drift.model_version),
            order_by=(drift.created_at.desc(), drift.id.desc()),
        )
        .label("rank")
    )
    latest_drift = select(
        drift.model_name, drift.model_version, drift.share_drifted, drift.dataset_drift, drift_rank
    ).subquery()
    alert = AlertRecord
    with db.session() as session:
        for model, version, arm, metric, value, n, _ in session.execute(
            select(latest).where(latest.c.rank == 1)
        ):
            labels = {"model": model, "version": version, "arm": arm or "", "metric": metric}
            samples.append(
                GaugeSample(
                    "retailml_model_performance",
                    labels,
                    math.nan if value is None else float(value),
                )
            )
            samples.append(GaugeSample("retailml_model_performance_pairs", dict(labels), float(n)))
        for model, version, share, drifted, _ in session.execute(
            select(latest_drift).where(latest_drift.c.rank == 1)
        ):
            labels = {"model": model, "version": version}
            samples.append(GaugeSample("retailml_data_drift_share", labels, float(share)))
            samples.append(
                GaugeSample("retailml_data_drift_detected", dict(labels), float(bool(drifted)))
            )
        for model, severity, state, count in session.execute(
            select(alert.model_name, alert.severity, alert.state, func.count())
            .where(alert.state != "resolved")
            .group_by(alert.model_name, alert.severity, alert.state)
        ):
            labels = {"model": model or "", "severity": severity, "state": state}
            samples.append(GaugeSample("retailml_alerts_active", labels, float(count)))
    return sorted(samples, key=lambda s: (s.name, sorted(s.labels.items())))
