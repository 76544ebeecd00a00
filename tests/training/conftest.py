"""Training fixtures: MLflow points at the test's workspace, and no run leaks between tests."""

from __future__ import annotations

from collections.abc import Iterator

import mlflow
import pytest

from retailml.core.settings import Settings
from retailml.training._tracking import ensure_tracking


@pytest.fixture
def tracking(settings: Settings) -> Iterator[str]:
    """MLflow's tracking URI for the test's workspace (as importing the trainer sets it)."""
    uri = ensure_tracking(settings)
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()
