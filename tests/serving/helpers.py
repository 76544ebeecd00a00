"""Serving test helpers: credentials, small training data, deployments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from retailml.core.db import PlatformDB, new_id, utcnow
from retailml.core.db_deploy import Deployment
from retailml.core.settings import Settings

API_KEY = "test-key-123"
ADMIN_TOKEN = "admin-token-456"
AUTH = {"X-API-Key": API_KEY}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def daily_panel(n_series: int = 2, days: int = 120, seed: int = 0) -> pd.DataFrame:
    """Daily sales with a weekly pattern, one row per series and day."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2024-01-01", periods=days, freq="D")
    frames = []
    for i in range(n_series):
        weekly = np.array([1.0, 1.1, 1.2, 1.15, 1.3, 0.4, 0.6])[dates.dayofweek]
        y = 1000 * (i + 1) * weekly * rng.lognormal(0, 0.08, days)
        frames.append(pd.DataFrame({"series_id": f"s{i}", "date": dates, "sales_amount": y}))
    return pd.concat(frames, ignore_index=True)


def customers(n: int = 150, seed: int = 0) -> pd.DataFrame:
    """RFM-like customers in three groups."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 3, n)
    return pd.DataFrame(
        {
            "customer_id": np.arange(n) + 10000,
            "recency": np.array([10, 120, 300])[group] * rng.lognormal(0, 0.2, n),
            "frequency": np.array([30, 5, 1])[group] * rng.lognormal(0, 0.2, n) + 1,
            "monetary": np.array([5000, 600, 50])[group] * rng.lognormal(0, 0.3, n),
        }
    )


def deploy(
    settings: Settings, model_name: str, version: str, environment: str = "production"
) -> None:
    """Make ``version`` the active deployment (what ModelServer.deploy_model records)."""
    db = PlatformDB.from_settings(settings)
    try:
        with db.session() as session:
            for row in session.query(Deployment).filter_by(
                model_name=model_name, environment=environment, status="active"
            ):
                row.status = "superseded"
                row.updated_at = utcnow()
            session.add(
                Deployment(
                    id=new_id(),
                    model_name=model_name,
                    environment=environment,
                    version=version,
                    status="active",
                    replicas=1,
                    config={},
                    health={},
                    created_by="tests",
                    created_at=utcnow(),
                    updated_at=utcnow(),
                )
            )
    finally:
        db.dispose()


def serving_settings(home: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "home": home,
        "api_keys": [API_KEY, "second-key"],
        "admin_token": ADMIN_TOKEN,
        "serve_routing_ttl_s": 0.2,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def deployed_forecast(settings: Settings, horizon: int = 7) -> object:
    """Train a seasonal-naive ``sales_forecast``, register it as 1.0.0, deploy it to production.

    Returns:
        The training result (other models can be registered beside it).
    """
    from retailml.training.model_trainer import ModelTrainer

    forecast = ModelTrainer(
        model_type="sales_forecast",
        algorithm="seasonal_naive",
        hyperparameters={"horizon": horizon},
        validation_strategy="holdout",
        settings=settings,
    ).train_sync(daily_panel(days=60), target="sales_amount", model_name="sales_forecast")
    register_and_deploy(settings, "sales_forecast", forecast)
    return forecast


def register_and_deploy(
    settings: Settings, name: str, model: object, version: str = "1.0.0"
) -> None:
    """Register a trained ``model`` as ``name`` ``version`` and deploy it to production."""
    import mlflow

    from retailml.registry import ModelRegistry

    while mlflow.active_run() is not None:
        mlflow.end_run()
    with ModelRegistry(settings) as registry:
        registry.register_model(name, version, model)
    deploy(settings, name, version)
