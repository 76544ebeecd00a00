"""Training, validation and tracking: the guide's ``src.ml.training.model_trainer``.

::

    from retailml.training.model_trainer import ModelTrainer

    trainer = ModelTrainer(model_type="sales_forecast", algorithm="auto",
                           hyperparameters={"horizon": 28})
    result = await trainer.train(features=daily_sales, target="sales_amount",
                                 model_name="sales_forecast_v1")
    result.metrics["smape"], result.run_id, result.model_uri
    model, metrics = result                      # the guide's other form

Importing this module points MLflow at the workspace's tracking store
(``sqlite:///<home>/mlflow.db``) unless a tracking URI was already chosen, so
the guide's ``mlflow.set_experiment(...)`` / ``mlflow.start_run()`` code and
the trainer write to the same place.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from retailml.core.errors import RetailMLError
from retailml.training._tracking import ensure_tracking
from retailml.training._trainer import ModelTrainer, TrainingResult
from retailml.training._validation import CheckOutcome, ModelValidator, ValidationResult

if TYPE_CHECKING:
    from retailml.automation.retraining import AutoRetrainingPipeline

__all__ = [
    "AutoRetrainingPipeline",
    "CheckOutcome",
    "ModelTrainer",
    "ModelValidator",
    "TrainingResult",
    "ValidationResult",
]


def __getattr__(name: str) -> Any:
    # The guide imports AutoRetrainingPipeline from here; it lives in the automation
    # layer (it registers, governs and deploys), so it is re-exported lazily: importing
    # the trainer does not load deployment, and there is no import cycle.
    if name == "AutoRetrainingPipeline":
        from retailml.automation.retraining import AutoRetrainingPipeline

        return AutoRetrainingPipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Invalid settings are reported when a trainer is built, not on import.
with contextlib.suppress(RetailMLError):
    ensure_tracking()
