"""ModelServer deployments: the guide's staging deployment, health checks, config, Kubernetes."""

from __future__ import annotations

import asyncio
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
import pytest
import yaml
from sqlalchemy import select

import guide
from governance.approvals import approve
from registry.conftest import (  # noqa: F401 - fixtures
    empty_mlflow_store,
    saved_model,
    tracking,
    trained,
)
from retailml.core.db import PlatformDB
from retailml.core.db_deploy import Deployment as DeploymentRow
from retailml.core.errors import ConfigError, NotFoundError
from retailml.core.settings import Settings
from retailml.deployment import model_server
from retailml.deployment.model_server import (
    Deployment,
    ModelRegistry,
    ModelServer,
    parse_deployment_config,
    render_manifests,
    validate_manifests,
    write_manifests,
)
from retailml.training.model_trainer import TrainingResult

NAME = "sales_forecast_prophet"
GUIDE_CONFIG: dict[str, Any] = {
    "model_name": NAME,
    "model_version": "1.2.0",
    "replicas": 2,
    "resources": {"cpu": "1000m", "memory": "2Gi"},
    "auto_scaling": {"min_replicas": 1, "max_replicas": 5, "target_cpu": 70},
}


@pytest.fixture
def registry(settings: Settings, tracking: str) -> Iterator[ModelRegistry]:  # noqa: F811
    with ModelRegistry(settings) as reg:
        yield reg


def deploy(server: ModelServer, version: str, **config: Any) -> Deployment:
    return asyncio.run(
        server.deploy_model(config={"model_name": NAME, "model_version": version, **config})
    )


# --- the guide --------------------------------------------------------------------------------


def test_guide_staging_deployment_runs_as_written(
    registry: ModelRegistry,
    trained: TrainingResult,  # noqa: F811
) -> None:
    registry.register_model(NAME, "1.2.0", trained)
    code = guide.block("### Staging Deployment")
    namespace: dict[str, Any] = {}
    guide.run(code + "\nresult = await deploy_to_staging()", namespace)

    deployment = namespace["result"]
    assert isinstance(deployment, Deployment)
    assert (deployment.model_name, deployment.version, deployment.environment) == (
        NAME,
        "1.2.0",
        "staging",
    )
    assert deployment.status == "active" and deployment.active
    assert deployment.replicas == 2
    assert deployment.config["resources"] == {"cpu": "1000m", "memory": "2Gi"}
    assert deployment.config["monitoring"] is True
    assert deployment.health["passed"] is True
    assert [c["name"] for c in deployment.health["checks"]] == [
        "artifact",
        "load",
        "input_example",
        "smoke_prediction",
    ]
    assert not any(check["skipped"] for check in deployment.health["checks"])
    assert deployment.health["checks"][-1]["detail"] == "predicted 5 row(s)"
    assert registry.get_by_alias(NAME, "staging").version == "1.2.0"
    with ModelServer("staging") as server:
        assert server.active_deployment(NAME) == deployment


# --- health checks ----------------------------------------------------------------------------


def test_a_tampered_artifact_fails_its_health_checks_and_takes_no_traffic(
    registry: ModelRegistry,
    trained: TrainingResult,  # noqa: F811
    settings: Settings,
) -> None:
    version = registry.register_model(NAME, "1.0.0", trained)
    (stored,) = sorted((settings.home / "mlartifacts").rglob("python_model.pkl"))
    with stored.open("ab") as handle:
        handle.write(b"tampered")
    shutil.rmtree(registry.cache_dir)
    alerts: list[Any] = []
    with ModelServer("staging", registry=registry, alerts=[alerts.append]) as server:
        deployment = deploy(server, "1.0.0")
        assert deployment.status == "failed" and not deployment.active
        assert deployment.health["passed"] is False
        assert deployment.health["checks"][0]["name"] == "artifact"
        assert version.digest in deployment.reason  # type: ignore[operator]
        assert "takes no traffic" in deployment.reason  # type: ignore[operator]
        assert server.active_deployment(NAME) is None
    with pytest.raises(NotFoundError):
        registry.get_by_alias(NAME, "staging")
    assert alerts and "failed" in alerts[0].title


def save_broken_model(path: Path) -> None:
    """An MLflow model with an input example whose every prediction raises."""
    with warnings.catch_warnings():  # MLflow asks for type hints on predict
        warnings.simplefilter("ignore", UserWarning)

        class Broken(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
            def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
                raise RuntimeError("this model is broken")

        mlflow.pyfunc.save_model(
            str(path),
            python_model=Broken(),
            input_example=pd.DataFrame({"x": [1.0, 2.0]}),
            pip_requirements=[],
        )


def test_a_model_whose_smoke_prediction_fails_is_not_activated(
    registry: ModelRegistry,
    tmp_path: Path,
    saved_model: Path,  # noqa: F811
) -> None:
    broken = tmp_path / "broken"
    save_broken_model(broken)
    registry.register_model(NAME, "1.0.0", saved_model)
    registry.register_model(NAME, "1.1.0", broken)
    with ModelServer("staging", registry=registry) as server:
        good = deploy(server, "1.0.0")
        bad = deploy(server, "1.1.0")
        assert good.active
        assert bad.status == "failed"
        assert bad.health["checks"][-1]["name"] == "smoke_prediction"
        assert "this model is broken" in bad.health["reason"]
        # The healthy version keeps serving.
        assert server.active_deployment(NAME) == server.get_deployment(good.id)
        assert server.get_deployment(good.id).status == "active"
    assert registry.get_by_alias(NAME, "staging").version == "1.0.0"


def test_a_new_deployment_supersedes_the_active_one(
    registry: ModelRegistry,
    saved_model: Path,  # noqa: F811
) -> None:
    registry.register_model(NAME, "1.0.0", saved_model)
    registry.register_model(NAME, "1.1.0", saved_model)
    for version in ("1.0.0", "1.1.0"):
        approve(registry.settings, NAME, version)
    with ModelServer("production", registry=registry) as server:
        first = deploy(server, "1.0.0", replicas=3)
        second = deploy(server, "1.1.0")
        assert server.get_deployment(first.id).status == "superseded"
        assert second.active and second.replicas == 1
        assert [d.version for d in server.list_deployments(NAME)] == ["1.1.0", "1.0.0"]
        # Unchecked deployments are allowed and recorded as such.
        third = asyncio.run(
            server.deploy_model(
                config={"model_name": NAME, "model_version": "1.0.0"}, health_checks=False
            )
        )
        assert third.active and third.health["skipped"] is True
    assert registry.get_by_alias(NAME, "production").version == "1.0.0"


def test_unregistered_versions_are_refused_before_anything_is_recorded(
    registry: ModelRegistry,
    saved_model: Path,  # noqa: F811
) -> None:
    registry.register_model(NAME, "1.0.0", saved_model)
    with ModelServer("staging", registry=registry) as server:
        with pytest.raises(NotFoundError, match=r"'9\.9\.9'.*versions: 1\.0\.0"):
            deploy(server, "9.9.9")
        assert server.list_deployments() == []


# --- config -----------------------------------------------------------------------------------


def test_the_guide_config_is_valid_and_defaults_replicas() -> None:
    assert parse_deployment_config(GUIDE_CONFIG) == GUIDE_CONFIG
    assert parse_deployment_config({"model_name": "m", "model_version": "1.0.0"})["replicas"] == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"replica": 2}, r"keys among \['model_name', 'model_version', 'replicas', 'resources'"),
        ({"model_version": None}, r"config\['model_version'\]: expected a non-empty string"),
        ({"replicas": 0}, r"config\['replicas'\]: expected a whole number >= 1"),
        ({"replicas": 9}, r"replicas within auto_scaling's 1\.\.5"),
        ({"resources": {"cpu": "1000x"}}, r"resources'\]\['cpu'\]: expected a positive Kubernetes"),
        ({"resources": {"cpu": "0m"}}, r"positive Kubernetes quantity"),
        ({"resources": {"memory": "2GB"}}, r"\['memory'\]: expected a positive Kubernetes"),
        ({"resources": {"gpu": 1}}, r"keys among \['cpu', 'memory'\]; got unknown \['gpu'\]"),
        ({"auto_scaling": {"min_replicas": 1}}, r"no \['max_replicas', 'target_cpu'\]"),
        (
            {"auto_scaling": {"min_replicas": 3, "max_replicas": 2, "target_cpu": 70}},
            r"min_replicas <= max_replicas",
        ),
        (
            {"auto_scaling": {"min_replicas": 1, "max_replicas": 5, "target_cpu": 170}},
            r"target_cpu a percentage",
        ),
    ],
)
def test_bad_configs_are_refused_with_the_valid_keys(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_deployment_config({**GUIDE_CONFIG, **change})


def test_an_unknown_environment_is_refused(settings: Settings) -> None:
    with pytest.raises(ConfigError, match=r"environment among \['staging', 'production'\]"):
        ModelServer("prod")


# --- Kubernetes -------------------------------------------------------------------------------


def test_kubernetes_manifests_of_the_guide_config_validate(tmp_path: Path) -> None:
    manifests = render_manifests(parse_deployment_config(GUIDE_CONFIG), namespace="ml")
    deployment, service, hpa = manifests
    assert [m["kind"] for m in manifests] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
    assert deployment["metadata"]["name"] == "retailml-sales-forecast-prophet"
    assert deployment["metadata"]["namespace"] == "ml"
    assert deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["serve", "--port", "8000"]
    assert container["resources"] == {
        "requests": {"cpu": "1000m", "memory": "2Gi"},
        "limits": {"cpu": "1000m", "memory": "2Gi"},
    }
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 5)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70

    paths = write_manifests(manifests, tmp_path / "k8s")
    assert [p.name for p in paths] == ["deployment.yaml", "service.yaml", "hpa.yaml"]
    reread = [yaml.safe_load(p.read_text()) for p in paths]
    assert reread == manifests
    validate_manifests(reread)
    # Without auto_scaling there is no autoscaler.
    plain = render_manifests({"model_name": "m", "model_version": "1.0.0", "replicas": 1})
    assert [m["kind"] for m in plain] == ["Deployment", "Service"]


def test_a_broken_manifest_is_rejected_with_the_schema_error() -> None:
    deployment, *_ = render_manifests(parse_deployment_config(GUIDE_CONFIG))
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(
        ConfigError,
        match=r"Deployment 'retailml-sales-forecast-prophet': expected a manifest valid for "
        r"Kubernetes 1\.30; got spec\.replicas: 'two' is not of type",
    ):
        validate_manifests([deployment])
    deployment["spec"]["replicas"] = 2
    deployment["spec"]["template"]["spec"]["containers"][0]["cpu"] = "1"  # unknown field
    with pytest.raises(ConfigError, match=r"containers\.0: Additional properties"):
        validate_manifests([deployment])
    with pytest.raises(ConfigError, match="apiVersion and kind Kubernetes knows"):
        validate_manifests([{"apiVersion": "v1", "kind": "Nonsense", "metadata": {"name": "x"}}])


# --- the platform database, on SQLite and PostgreSQL --------------------------------------------


def test_deployments_live_in_the_platform_database(
    settings: Settings,
    tracking: str,  # noqa: F811
    database_url: str,
    saved_model: Path,  # noqa: F811
) -> None:
    on_db = settings.model_copy(update={"database_url": database_url})
    with ModelRegistry(on_db) as registry:
        registry.register_model(NAME, "1.0.0", saved_model)
        registry.register_model(NAME, "1.1.0", saved_model)
        with ModelServer("staging", registry=registry) as server:
            deploy(server, "1.0.0")
            latest = deploy(server, "1.1.0", replicas=2)
    db = PlatformDB(database_url)
    try:
        with db.session() as session:
            rows = list(session.scalars(select(DeploymentRow).order_by(DeploymentRow.created_at)))
    finally:
        db.dispose()
    assert [(r.version, r.status, r.environment, r.replicas) for r in rows] == [
        ("1.0.0", "superseded", "staging", 1),
        ("1.1.0", "active", "staging", 2),
    ]
    assert rows[1].id == latest.id and rows[1].health["passed"] is True
    assert rows[1].created_by


def test_the_guide_module_exports_the_server() -> None:
    assert model_server.ModelServer is ModelServer
    assert {"ModelServer", "ModelRegistry", "render_manifests"} <= set(model_server.__all__)
