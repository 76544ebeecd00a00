"""Kubernetes manifests of a deployment config: Deployment, Service, HorizontalPodAutoscaler.

``render_manifests(config)`` turns the guide's deployment config into three
resources that run the prediction service (``retailml serve --port 8000``):

* ``apps/v1 Deployment``: ``replicas`` pods whose container requests *and*
  is limited to ``resources`` (cpu, memory), with a liveness probe on
  ``/health`` and a readiness probe on ``/ready`` (a pod takes traffic only
  once its model is loaded);
* ``v1 Service``: ClusterIP port 80 -> the container's ``http`` port;
* ``autoscaling/v2 HorizontalPodAutoscaler`` (only with ``auto_scaling``):
  ``min_replicas`` .. ``max_replicas`` pods at ``target_cpu`` % average CPU.

Every manifest is validated against the Kubernetes OpenAPI schemas bundled
with ``kubernetes-validate`` (offline, strict: unknown fields are errors) for
:data:`KUBERNETES_VERSION` before it is returned or written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import yaml

from retailml.core.errors import ConfigError, problem
from retailml.core.io import atomic_write_text

#: The Kubernetes version whose schemas the manifests are validated against.
KUBERNETES_VERSION: Final = "1.30"
#: The port the prediction service listens on inside the container.
CONTAINER_PORT: Final = 8000


def resource_name(model_name: str) -> str:
    """A DNS-1123 name for the model's resources (``retailml-sales-forecast-prophet``)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")
    return f"retailml-{slug}"[:63].rstrip("-")


def _label(value: str) -> str:
    """A valid label value (at most 63 of ``[A-Za-z0-9._-]``, alphanumeric at both ends)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", value)[:63].strip("._-") or "none"


def render_manifests(
    config: Mapping[str, Any],
    *,
    image: str = "retailml:latest",
    namespace: str = "default",
    environment: str = "production",
    kubernetes_version: str = KUBERNETES_VERSION,
) -> list[dict[str, Any]]:
    """The Deployment, Service and (with ``auto_scaling``) HPA of a deployment config.

    Args:
        config: A deployment config, already checked (``model_name``,
            ``model_version``, ``replicas``, optional ``resources`` and
            ``auto_scaling``), as :class:`~retailml.deployment.model_server.ModelServer`
            accepts it.
        image: The container image holding retailml.
        namespace: The namespace of every resource.
        environment: ``staging`` or ``production``: a label of every resource and
            what the service serves (``RETAILML_SERVE_ENVIRONMENT``).
        kubernetes_version: Schemas to validate against.

    Raises:
        ConfigError: naming the resource, field and schema rule a manifest breaks.
    """
    name = resource_name(str(config["model_name"]))
    labels = {
        "app.kubernetes.io/name": "retailml",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "prediction-service",
        "retailml.io/environment": _label(environment),
    }
    selector = {
        "app.kubernetes.io/instance": name,
        "retailml.io/environment": labels["retailml.io/environment"],
    }
    annotations = {
        "retailml.io/model-name": str(config["model_name"]),
        "retailml.io/model-version": str(config["model_version"]),
    }
    metadata = {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations}
    container: dict[str, Any] = {
        "name": "prediction-service",
        "image": image,
        "command": ["retailml"],
        "args": ["serve", "--port", str(CONTAINER_PORT)],
        "ports": [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
        # Settings of `retailml serve` (retailml.core.settings): listen on the pod's address,
        # serve this environment's versions. Replicas are pods here, one worker each.
        "env": [
            {"name": "RETAILML_SERVE_HOST", "value": "0.0.0.0"},
            {"name": "RETAILML_SERVE_ENVIRONMENT", "value": environment},
            {"name": "RETAILML_SERVE_WORKERS", "value": "1"},
        ],
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": "http"},
            "initialDelaySeconds": 5,
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
    }
    resources = config.get("resources")
    if resources:
        quantities = {key: str(resources[key]) for key in ("cpu", "memory") if key in resources}
        container["resources"] = {"requests": dict(quantities), "limits": dict(quantities)}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": int(config.get("replicas", 1)),
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {"containers": [container]},
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    manifests: list[dict[str, Any]] = [deployment, service]
    scaling = config.get("auto_scaling")
    if scaling:
        manifests.append(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": metadata,
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    "minReplicas": int(scaling["min_replicas"]),
                    "maxReplicas": int(scaling["max_replicas"]),
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {
                                "name": "cpu",
                                "target": {
                                    "type": "Utilization",
                                    "averageUtilization": int(scaling["target_cpu"]),
                                },
                            },
                        }
                    ],
                },
            }
        )
    validate_manifests(manifests, kubernetes_version=kubernetes_version)
    return manifests


def validate_manifests(
    manifests: Sequence[Mapping[str, Any]], *, kubernetes_version: str = KUBERNETES_VERSION
) -> None:
    """Validate manifests against the Kubernetes schemas (strict: no unknown fields).

    Raises:
        ConfigError: for the first manifest that breaks its schema, naming the
            kind, name, field path and the schema's message.
    """
    import kubernetes_validate  # type: ignore[import-untyped]

    for manifest in manifests:
        kind = manifest.get("kind", "?")
        name = (manifest.get("metadata") or {}).get("name", "?")
        try:
            kubernetes_validate.validate(dict(manifest), kubernetes_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(part) for part in exc.path) or "(root)"
            raise ConfigError(
                problem(
                    f"a manifest valid for Kubernetes {kubernetes_version}",
                    f"{where}: {exc.message}",
                    "correct the deployment config (replicas, resources, auto_scaling)",
                    subject=f"{kind} {name!r}",
                )
            ) from exc
        except (kubernetes_validate.SchemaNotFoundError, KeyError) as exc:
            raise ConfigError(
                problem(
                    "a manifest with an apiVersion and kind Kubernetes knows",
                    f"{manifest.get('apiVersion')!r} {kind!r}",
                    "use apps/v1 Deployment, v1 Service or autoscaling/v2 HorizontalPodAutoscaler",
                    subject=f"{kind} {name!r}",
                )
            ) from exc


def write_manifests(manifests: Sequence[Mapping[str, Any]], output_dir: Path) -> list[Path]:
    """Write one YAML file per manifest (``deployment.yaml``, ``service.yaml``, ``hpa.yaml``)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    short = {"Deployment": "deployment", "Service": "service", "HorizontalPodAutoscaler": "hpa"}
    paths = []
    for manifest in manifests:
        kind = str(manifest["kind"])
        path = output_dir / f"{short.get(kind, kind.lower())}.yaml"
        atomic_write_text(path, yaml.safe_dump(dict(manifest), sort_keys=False))
        paths.append(path)
    return paths
