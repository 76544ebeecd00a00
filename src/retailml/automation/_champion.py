"""The champion: the version serving production, and how it was trained.

The training configuration of a registered version is read, in order, from

1. its registry metadata ``training_config`` (written by the retraining
   pipeline when it registers a challenger: exact values), else
2. its MLflow training run's params (``model_type``, ``algorithm``,
   ``validation_strategy``, ``n_splits``, ``target``, ``seed``, ``hp.<name>``
   for each hyperparameter, JSON-encoded by the trainer) and its tag
   ``retailml.data_version``.

Its training data (``data:`` section of a training config) comes from the
metadata ``training_data`` when recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mlflow.exceptions import MlflowException

from retailml.core.errors import NotFoundError, StateError, problem
from retailml.registry.model_registry import ModelRegistry, ModelVersion

__all__ = ["Champion", "champion_of", "recorded_config"]


@dataclass(frozen=True)
class Champion:
    """A registered version and its recorded training configuration."""

    model_name: str
    version: ModelVersion
    model_type: str
    algorithm: str | None
    hyperparameters: dict[str, Any]
    target: str | None
    validation_strategy: str | None = None
    n_splits: int | None = None
    seed: int | None = None
    data_version: str | None = None
    data_spec: dict[str, Any] | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)

    @property
    def semver(self) -> str:
        """The registry's semantic version."""
        return self.version.version

    @property
    def registered_at(self) -> datetime:
        """When the version was registered (UTC)."""
        return self.version.created_at


def _param(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def recorded_config(registry: ModelRegistry, version: ModelVersion) -> dict[str, Any]:
    """The training configuration recorded for a version (see the module docstring).

    Raises:
        StateError: when neither the metadata nor an MLflow run records the model type.
    """
    meta = dict(version.metadata or {})
    config = dict(meta.get("training_config") or {})
    if config.get("model_type"):
        return config
    params: dict[str, str] = {}
    tags: dict[str, str] = {}
    if version.run_id:
        try:
            run = registry.client.get_run(version.run_id)
        except MlflowException:
            run = None
        if run is not None:
            params = dict(run.data.params)
            tags = dict(run.data.tags)
    model_type = params.get("model_type") or meta.get("model_type")
    if not model_type:
        raise StateError(
            problem(
                "a version whose training configuration is recorded (an MLflow run with "
                "model_type, or registry metadata training_config)",
                f"{version.model_name} {version.version} (run {version.run_id!r}) without one",
                "register versions from a TrainingResult (retailml train / ModelTrainer), or "
                "retrain from a training config: retailml retrain --config configs/<model>.yaml",
                subject=f"model {version.model_name!r}",
            )
        )
    target = params.get("target")
    return {
        "model_type": model_type,
        "algorithm": params.get("algorithm") or meta.get("algorithm"),
        "hyperparameters": {
            key.removeprefix("hp."): _param(value)
            for key, value in params.items()
            if key.startswith("hp.")
        },
        "target": None if target in (None, "None", "null") else target,
        "validation_strategy": params.get("validation_strategy"),
        "n_splits": int(params["n_splits"]) if params.get("n_splits", "").isdigit() else None,
        "seed": int(params["seed"]) if params.get("seed", "").isdigit() else None,
        "data_version": tags.get("retailml.data_version") or meta.get("data_version"),
    }


def champion_of(registry: ModelRegistry, model_name: str) -> Champion | None:
    """The production version of a model (else its latest active one) and its training config.

    Returns None when the model has no registered version.
    """
    try:
        version = registry.get_model_version(model_name, None)
    except NotFoundError:
        return None
    config = recorded_config(registry, version)
    meta = dict(version.metadata or {})
    return Champion(
        model_name=model_name,
        version=version,
        model_type=str(config["model_type"]),
        algorithm=config.get("algorithm"),
        hyperparameters=dict(config.get("hyperparameters") or {}),
        target=config.get("target"),
        validation_strategy=config.get("validation_strategy"),
        n_splits=config.get("n_splits"),
        seed=config.get("seed"),
        data_version=config.get("data_version"),
        data_spec=dict(meta["training_data"]) if meta.get("training_data") else None,
        aliases=version.aliases,
    )
