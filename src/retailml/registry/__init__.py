"""Layer 5: the model registry (MLflow's Model Registry, semantic versions, artifact digests).

The guide imports it as ``retailml.deployment.model_server.ModelRegistry``.
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
