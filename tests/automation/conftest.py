"""Retraining fixtures: one small workspace with a champion in production, copied per test.

The base workspace is built once per session (about 15 s): synthetic
transactions for January to March ingested, the ``daily_sales`` feature set
built, a seasonal-naive forecast of the total series trained on it and
registered as ``sales_forecast`` 1.0.0 (approved and deployed to production),
a deliberately bad forecast (trained on sales inflated tenfold) registered as
1.1.0, then April's transactions ingested (new data since the champion
trained) and the feature set rebuilt. Each test works on its own copy.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from retailml.core.settings import Settings
from retailml.data.generate import GeneratorConfig, generate_transactions, write_transactions
from retailml.data.ingest import ingest_file
from retailml.feature_engineering.feature_pipeline import FeatureEngineeringPipeline
from retailml.training._data import load_training_data
from retailml.training._tracking import ensure_tracking

MODEL = "sales_forecast"
HORIZON = 7
SPEC = {"source": "feature_set", "name": "daily_sales", "filter": {"level": "total"}}


@dataclass(frozen=True)
class Base:
    """The session's base workspace and the files beside it."""

    home: Path
    inflated: Path  # the whole panel (January to April), sales x10
    april: Path  # April's transactions (already ingested in the base)


def approve(settings: Settings, version: str, model: str = MODEL) -> str:
    """A real, approved governance request for production; returns its id."""
    from retailml.governance.model_governance import ModelGovernance

    governance = ModelGovernance(settings)
    request = governance.request_approval(
        model, version, "production", "tests", {}, approvers=["ml_engineer"]
    )
    governance.approve(request.id, approver="alice", role="ml_engineer", comment="ok")
    governance.db.dispose()
    return request.id


def panel(settings: Settings) -> pd.DataFrame:
    """The current daily total sales (series_id, date, sales_amount)."""
    return load_training_data(SPEC, target="sales_amount", settings=settings).train


def train_forecast(settings: Settings, frame: pd.DataFrame, data_version: str | None) -> object:
    from retailml.training.model_trainer import ModelTrainer

    trainer = ModelTrainer(
        "sales_forecast",
        "seasonal_naive",
        {"horizon": HORIZON},
        validation_strategy="holdout",
        n_splits=1,
        settings=settings,
    )
    return trainer.train_sync(
        frame, target="sales_amount", model_name=MODEL, data_version=data_version
    )


@pytest.fixture(scope="session")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    from retailml.deployment.model_server import ModelRegistry, ModelServer

    root = tmp_path_factory.mktemp("retrain-base")
    settings = Settings(home=root / "workspace", database_url=None, mlflow_tracking_uri=None)
    ensure_tracking(settings)
    march = generate_transactions(
        GeneratorConfig(rows=12_000, seed=7, start=dt.date(2023, 1, 1), end=dt.date(2023, 3, 31))
    )
    april = generate_transactions(
        GeneratorConfig(rows=4_000, seed=8, start=dt.date(2023, 4, 1), end=dt.date(2023, 4, 30))
    )
    write_transactions(march, root / "march.parquet")
    write_transactions(april, root / "april.parquet")
    first = ingest_file(root / "march.parquet", settings=settings)
    FeatureEngineeringPipeline({"feature_sets": ["daily_sales"]}, settings=settings).run()
    history = panel(settings)
    cut = history["date"].max() - pd.Timedelta(days=HORIZON)
    good = train_forecast(settings, history[history["date"] <= cut], first.data_version)
    inflated = history.assign(sales_amount=history["sales_amount"] * 10)
    bad = train_forecast(settings, inflated, None)
    with ModelRegistry(settings) as registry:
        registry.register_model(MODEL, "1.0.0", good, metadata={"source": "tests"})
        registry.register_model(MODEL, "1.1.0", bad, metadata={"source": "tests"})
    approve(settings, "1.0.0")
    with ModelServer("production", settings) as server:
        deployed = server.deploy_model_sync({"model_name": MODEL, "model_version": "1.0.0"})
        assert deployed.status == "active", deployed.health
    ingest_file(root / "april.parquet", settings=settings)
    FeatureEngineeringPipeline({"feature_sets": ["daily_sales"]}, settings=settings).run()
    current = panel(settings)
    current.assign(sales_amount=current["sales_amount"] * 10).to_parquet(
        root / "inflated.parquet", index=False
    )
    while mlflow.active_run() is not None:
        mlflow.end_run()
    return Base(
        home=settings.home, inflated=root / "inflated.parquet", april=root / "april.parquet"
    )


@pytest.fixture
def retail(settings: Settings, base: Base) -> Iterator[Settings]:
    """The test's own copy of the base workspace, with MLflow pointed at it."""
    shutil.copytree(base.home, settings.home)
    ensure_tracking(settings)
    yield settings
    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture
def holdout(retail: Settings) -> pd.DataFrame:
    """The last week of the real daily totals: neither model trained on it."""
    current = panel(retail)
    return current[current["date"] > current["date"].max() - pd.Timedelta(days=HORIZON)]
