"""Model serving: the guide's ``src.ml.deployment.model_server``.

The model registry (implemented in :mod:`retailml.registry`)::

    from retailml.deployment.model_server import ModelRegistry

and deployments, as the guide's staging and production deployments do::

    from retailml.deployment.model_server import ModelServer

    server = ModelServer(environment="staging")
    deployment = await server.deploy_model(config=deployment_config,
                                           health_checks=True, monitoring=True)

    server = ModelServer(environment="production")
    rollout = await server.blue_green_deploy(
        model_name="sales_forecast_prophet", new_version="1.2.0", current_version="1.1.0",
        traffic_split={"blue": 90, "green": 10},
        rollback_threshold={"error_rate": 0.01, "latency_p95": 1000, "performance_drop": 0.05},
    )
    rollout = await server.watch_rollout(rollout.id)      # promoted or rolled back
    server.rollback("sales_forecast_prophet", reason="errors after release")

Kubernetes manifests of a deployment config: :func:`render_manifests`.
"""

from __future__ import annotations

from retailml.deployment._kubernetes import (
    KUBERNETES_VERSION,
    render_manifests,
    validate_manifests,
    write_manifests,
)
from retailml.deployment._rollout import DEFAULT_THRESHOLDS
from retailml.deployment._server import (
    ENVIRONMENTS,
    Alert,
    Deployment,
    ModelServer,
    RollbackResult,
    Rollout,
    parse_deployment_config,
)
from retailml.deployment.predictor import Prediction, Predictor, get_model_predictor
from retailml.registry.model_registry import (
    ALIASES,
    ArtifactIntegrityError,
    ModelRegistry,
    ModelVersion,
    RegisteredModel,
)

__all__ = [
    "ALIASES",
    "DEFAULT_THRESHOLDS",
    "ENVIRONMENTS",
    "KUBERNETES_VERSION",
    "Alert",
    "ArtifactIntegrityError",
    "Deployment",
    "ModelRegistry",
    "ModelServer",
    "ModelVersion",
    "Prediction",
    "Predictor",
    "RegisteredModel",
    "RollbackResult",
    "Rollout",
    "get_model_predictor",
    "parse_deployment_config",
    "render_manifests",
    "validate_manifests",
    "write_manifests",
]
