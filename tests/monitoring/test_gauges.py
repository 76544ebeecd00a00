"""The monitoring package's public surface and its gauge samples, on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

import retailml.monitoring
from retailml.core.settings import Settings
from retailml.monitoring import GaugeSample, ModelMonitor, monitoring_gauges

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def test_the_package_exports_exactly_its_public_names() -> None:
    assert retailml.monitoring.__all__ == [
        "Alert",
        "AlertManager",
        "ConceptDriftResult",
        "GaugeSample",
        "ModelMonitor",
        "monitoring_gauges",
    ]


@pytest.fixture
def monitor(settings: Settings, database_url: str) -> Iterator[ModelMonitor]:
    mon = ModelMonitor("sales", "2.0.0", settings.model_copy(update={"database_url": database_url}))
    yield mon
    mon.db.dispose()


def by_key(samples: list[GaugeSample]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples}


def test_gauges_hold_the_latest_window_drift_run_and_active_alerts(monitor: ModelMonitor) -> None:
    assert monitoring_gauges(monitor.db) == []
    monitor.track_performance([2.0], [1.0], metrics=["mae"], timestamp=T0 + timedelta(days=1))
    monitor.track_performance([5.0], [1.0], metrics=["mae"], timestamp=T0)  # older window
    monitor.track_performance([1.0, 1.0], [0.0, 0.0], metrics=["mape"], arm="green")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(0, 1, 200)})
    monitor.detect_data_drift(frame, frame + 3)
    monitor.detect_data_drift(frame, frame.copy())  # the latest run: no drift
    first = monitor.send_alert("perf", "warning", "x", details={"mape": float("nan")})
    assert first.details == {"mape": None}  # PostgreSQL's JSON has no NaN
    monitor.send_alert("perf", "warning", "y")
    ack = monitor.send_alert("drift", "critical", "z")
    assert ack.id is not None
    monitor.alerts.acknowledge(ack.id, by="ops")
    resolved = monitor.send_alert("old", "info", "gone")
    assert resolved.id is not None
    monitor.alerts.resolve(resolved.id)

    gauges = by_key(monitoring_gauges(monitor.db))
    perf = (("arm", ""), ("metric", "mae"), ("model", "sales"), ("version", "2.0.0"))
    assert gauges[("retailml_model_performance", perf)] == 1.0
    assert gauges[("retailml_model_performance_pairs", perf)] == 1.0
    green = (("arm", "green"), ("metric", "mape"), ("model", "sales"), ("version", "2.0.0"))
    assert math.isnan(gauges[("retailml_model_performance", green)])
    version = (("model", "sales"), ("version", "2.0.0"))
    assert gauges[("retailml_data_drift_share", version)] == 0.0
    assert gauges[("retailml_data_drift_detected", version)] == 0.0
    alerts = {k[1]: v for k, v in gauges.items() if k[0] == "retailml_alerts_active"}
    assert alerts == {
        (("model", "sales"), ("severity", "warning"), ("state", "open")): 1.0,
        (("model", "sales"), ("severity", "critical"), ("state", "acknowledged")): 1.0,
    }
    assert monitor.alerts.list_alerts(state="open")[0].count == 2
