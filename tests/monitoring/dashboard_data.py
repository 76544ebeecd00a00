"""Synthetic platform data for the dashboard, report and monitor CLI tests.

Two models as in the guide: ``sales_forecast_prophet`` 1.2.0 (a week of daily MAPE
evaluations, a drift run over the guide's features, an open alert, an active
deployment) and ``customer_segmentation_kmeans`` 1.0.0 (served, no MAPE); both
with prediction-log rows over the last six hours.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from retailml.core.db import PlatformDB, utcnow
from retailml.core.db_deploy import Deployment, PredictionLogEntry
from retailml.core.settings import Settings
from retailml.monitoring.model_monitor import ModelMonitor

FORECAST = "sales_forecast_prophet"
SEGMENTS = "customer_segmentation_kmeans"
FEATURES = ["seasonality", "trend", "external_factors"]


def add_predictions(
    db: PlatformDB,
    model: str,
    version: str,
    *,
    n: int,
    now: datetime,
    seed: int = 0,
    hours: float = 6.0,
    error_share: float = 0.0,
) -> None:
    """``n`` prediction-log rows spread over the last ``hours`` hours."""
    rng = np.random.default_rng(seed)
    with db.session() as session:
        for i in range(n):
            failed = rng.random() < error_share
            session.add(
                PredictionLogEntry(
                    request_id=f"{model}-{seed}-{i}",
                    model_name=model,
                    model_version=version,
                    environment="production",
                    arm=None,
                    entity_key=f"customer-{i % 17}",
                    features_hash="0" * 64,
                    output={"prediction": float(rng.uniform(10, 100))},
                    latency_ms=float(rng.lognormal(np.log(12), 0.4)),
                    status_code=500 if failed else 200,
                    error="boom" if failed else None,
                    created_at=now - timedelta(seconds=float(rng.uniform(0, hours * 3600))),
                )
            )


def fill_platform(settings: Settings) -> dict[str, object]:
    """Fill the settings' platform database; returns what was written (ids, the drift report)."""
    now = utcnow()
    rng = np.random.default_rng(42)
    with ModelMonitor(FORECAST, "1.2.0", settings) as monitor:
        actual = rng.uniform(50, 150, 100)
        for day, error in enumerate([0.08, 0.09, 0.07, 0.10, 0.12, 0.15, 0.25]):
            monitor.track_performance(
                actual * (1 + error),
                actual,
                metrics=["mape", "mae", "rmse"],
                timestamp=now - timedelta(days=6 - day, minutes=5),
                window_start=now - timedelta(days=7 - day, minutes=5),
            )
        reference = pd.DataFrame(
            {
                "seasonality": rng.normal(0, 1, 400),
                "trend": rng.normal(100, 5, 400),
                "external_factors": rng.normal(3, 1, 400),
            }
        )
        current = reference.copy()
        current["trend"] = rng.normal(112, 5, 400)  # trend drifts
        report = monitor.detect_data_drift(reference, current, threshold=0.05)
        alert = monitor.send_alert(
            alert_type="performance_degradation",
            severity="high",
            message="Model MAPE increased to 25.00%",
        )
        db = monitor.db
        add_predictions(db, FORECAST, "1.2.0", n=240, now=now, seed=1, error_share=0.02)
        add_predictions(db, SEGMENTS, "1.0.0", n=120, now=now, seed=2)
        with db.session() as session:
            session.add(
                Deployment(
                    id="dep-forecast",
                    model_name=FORECAST,
                    environment="production",
                    version="1.2.0",
                    status="active",
                    replicas=1,
                    config={},
                    health={},
                    created_by="test",
                    created_at=now - timedelta(days=8),
                    updated_at=now - timedelta(days=8),
                )
            )
    return {"alert": alert, "drift": report, "reference": reference, "current": current}
