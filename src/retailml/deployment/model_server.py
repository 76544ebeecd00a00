"""Model serving: the guide's ``src.ml.deployment.model_server``.

Today it offers the model registry (implemented in :mod:`retailml.registry`)::

    from retailml.deployment.model_server import ModelRegistry
"""

from __future__ import annotations

from retailml.registry.model_registry import (
    ALIASES,
    ArtifactIntegrityError,
    ModelRegistry,
    ModelVersion,
    RegisteredModel,
)

__all__ = ["ALIASES", "ArtifactIntegrityError", "ModelRegistry", "ModelVersion", "RegisteredModel"]
