"""Registry fixtures: MLflow in the test's workspace, a quickly trained model, a registry."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from retailml.core.settings import Settings
from retailml.registry import ModelRegistry
from retailml.training._tracking import ensure_tracking
from retailml.training.model_trainer import ModelTrainer, TrainingResult


@pytest.fixture(scope="session")
def empty_mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite store with its schema created (MLflow's migrations take seconds)."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracking(settings: Settings, empty_mlflow_store: Path) -> Iterator[str]:
    """MLflow's tracking URI for the test's workspace (as importing the trainer sets it).

    The workspace starts from a copy of an empty, migrated store, so each test
    gets its own MLflow database without paying for MLflow's migrations.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(empty_mlflow_store, settings.home / "mlflow.db")
    uri = ensure_tracking(settings)
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()


def customers(n: int = 150, seed: int = 0) -> pd.DataFrame:
    """RFM-like customers in three well-separated groups."""
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


@pytest.fixture
def trained(tracking: str) -> TrainingResult:
    """A customer segmentation trained and tracked in the test's workspace (about 0.5 s)."""
    return ModelTrainer(
        model_type="customer_segmentation", n_splits=2, hyperparameters={"n_clusters": 3}
    ).train_sync(customers())


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A segmentation model written by TrainingResult.save (the MLflow model is in ``model/``).

    Trained and saved once per session in a workspace of its own: saving infers
    the model's pip requirements, which takes seconds. Tests only read it.
    """
    home = tmp_path_factory.mktemp("saved-model-workspace")
    settings = Settings(home=home / "workspace")
    result = ModelTrainer(
        model_type="customer_segmentation",
        n_splits=2,
        hyperparameters={"n_clusters": 3},
        settings=settings,
    ).train_sync(customers())
    return result.save(home / "saved" / "segments")


@pytest.fixture
def registry(settings: Settings, tracking: str) -> Iterator[ModelRegistry]:
    """A registry on the test's workspace (SQLite platform database unless the test sets one)."""
    with ModelRegistry(settings) as reg:
        yield reg
