"""Serving fixtures: one workspace with registered models and deployments, an app on it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from fastapi.testclient import TestClient

from governance.approvals import approve
from retailml.core.settings import Settings
from retailml.registry import ModelRegistry
from retailml.serving.app import create_app
from retailml.training.model_trainer import ModelTrainer

from .helpers import customers, daily_panel, deploy, serving_settings


@pytest.fixture(scope="session")
def serving_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with forecasts and a segmentation model registered, some deployed.

    * ``sales_forecast`` 1.0.0 and 1.1.0, 1.0.0 deployed to production;
    * ``swap_forecast`` 1.0.0 and 1.1.0, 1.0.0 deployed (the hot-swap test moves it);
    * ``sales_forecast_prophet`` 1.2.0 (the guide's snippet), no deployment;
    * ``customer_segmentation`` 1.0.0 holding the ``production`` alias, no deployment;
    * ``demand_prediction`` 1.0.0 holding the ``production`` alias.
    """
    home = tmp_path_factory.mktemp("serving") / "workspace"
    settings = Settings(home=home)
    forecast = ModelTrainer(
        model_type="sales_forecast",
        algorithm="seasonal_naive",
        hyperparameters={"horizon": 14},
        validation_strategy="holdout",
        settings=settings,
    ).train_sync(daily_panel(), target="sales_amount", model_name="sales_forecast")
    segments = ModelTrainer(
        model_type="customer_segmentation",
        n_splits=2,
        hyperparameters={"n_clusters": 3},
        settings=settings,
    ).train_sync(customers())
    demand = ModelTrainer(
        model_type="demand_prediction",
        hyperparameters={"n_estimators": 20},
        n_splits=2,
        settings=settings,
    ).train_sync(daily_panel().rename(columns={"sales_amount": "quantity"}), target="quantity")
    while mlflow.active_run() is not None:
        mlflow.end_run()
    with ModelRegistry(settings) as registry:
        for name, version in (
            ("sales_forecast", "1.0.0"),
            ("sales_forecast", "1.1.0"),
            ("swap_forecast", "1.0.0"),
            ("swap_forecast", "1.1.0"),
            ("sales_forecast_prophet", "1.2.0"),
        ):
            registry.register_model(name, version, forecast)
        registry.register_model("customer_segmentation", "1.0.0", segments)
        approve(settings, "customer_segmentation", "1.0.0")
        registry.set_alias("customer_segmentation", "1.0.0", "production")
        registry.register_model("demand_prediction", "1.0.0", demand)
        approve(settings, "demand_prediction", "1.0.0")
        registry.set_alias("demand_prediction", "1.0.0", "production")
    deploy(settings, "sales_forecast", "1.0.0")
    deploy(settings, "swap_forecast", "1.0.0")
    return home


@pytest.fixture(scope="module")
def client(serving_home: Path) -> Iterator[TestClient]:
    """The service on the serving workspace, started (lifespan run)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("RETAILML_")}
    for name in saved:
        if name != "RETAILML_TEST_POSTGRES_URL":
            del os.environ[name]
    try:
        app = create_app(serving_settings(serving_home))
        with TestClient(app) as test_client:
            yield test_client
    finally:
        os.environ.update(saved)
