"""``retailml register``, ``deploy``, ``promote``, ``rollback`` and ``ab``: the deployment path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from governance.approvals import approve
from registry.conftest import empty_mlflow_store, tracking, trained  # noqa: F401 - fixtures
from retailml.cli import main
from retailml.core.settings import Settings
from retailml.deployment.ab_testing import ABTestManager
from retailml.deployment.model_server import ModelServer
from retailml.training.model_trainer import TrainingResult

NAME = "segments"


@pytest.fixture
def model_path(trained: TrainingResult, tmp_path: Path) -> Path:  # noqa: F811
    return trained.save(tmp_path / "models" / "segments")


def run_json(capsys: pytest.CaptureFixture[str], *args: str, code: int = 0) -> Any:
    assert main([*args, "--json"]) == code, capsys.readouterr()
    return json.loads(capsys.readouterr().out)


def fails(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(list(args)) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and "Traceback" not in error
    return " ".join(error.split())


def test_every_command_has_an_example_in_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    commands = [
        ["register"],
        ["deploy"],
        ["promote"],
        ["rollback"],
        ["ab", "create"],
        ["ab", "results"],
        ["ab", "conclude"],
    ]
    for command in commands:
        assert main([*command, "--help"]) == 0
        assert "Example:" in capsys.readouterr().out, command


def test_register_deploy_promote_rollback_and_ab_from_the_command_line(
    settings: Settings, model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(model_path)
    first = run_json(capsys, "register", "--model-path", path, "--name", NAME, "--version", "1.0.0")
    assert (first["model_name"], first["version"], len(first["digest"])) == (NAME, "1.0.0", 64)
    assert main(["register", "--model-path", path, "--name", NAME, "--version", "1.1.0"]) == 0
    assert "registered segments 1.1.0" in capsys.readouterr().out
    for version in ("1.0.0", "1.1.0"):
        approve(settings, NAME, version)

    staged = run_json(
        capsys, "deploy", "--environment", "staging", "--model", NAME, "--version", "1.0.0"
    )
    assert staged["status"] == "active" and staged["health"]["passed"] is True
    code = main(["deploy", "--environment", "production", "--model", NAME, "--version", "1.0.0"])
    assert code == 0
    out = capsys.readouterr().out
    assert "segments 1.0.0 -> production: active" in out and "smoke_prediction" in out
    assert main(["deploy", "--environment", "staging", "--model", NAME, "--version", "1.1.0"]) == 0
    capsys.readouterr()

    # Staging -> production as a canary; nothing serves it, so the watch times out running.
    rollout = run_json(
        capsys,
        "promote",
        "--model",
        NAME,
        "--window",
        "0.1",
        "--min-requests",
        "5",
        "--timeout",
        "0.3",
    )
    assert (rollout["state"], rollout["strategy"]) == ("running", "canary")
    assert (rollout["current_version"], rollout["new_version"]) == ("1.0.0", "1.1.0")
    assert rollout["rollback_threshold"]["window_seconds"] == 0.1

    # The guide's emergency procedure, run twice.
    stopped = run_json(
        capsys, "rollback", "--model", NAME, "--environment", "production", "--reason", "bad"
    )
    assert stopped["changed"] and stopped["action"] == "rollout_rolled_back"
    assert main(["rollback", "--model", NAME, "--reason", "bad", "--actor", "bob"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    with ModelServer("production") as server:
        assert server.active_deployment(NAME).version == "1.0.0"  # type: ignore[union-attr]
        assert server.get_rollout(rollout["id"]).state == "rolled_back"

    # Kubernetes manifests from a deployment config file.
    config = tmp_path / "deploy.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_name": NAME,
                "model_version": "1.1.0",
                "replicas": 2,
                "resources": {"cpu": "500m", "memory": "1Gi"},
                "auto_scaling": {"min_replicas": 1, "max_replicas": 4, "target_cpu": 60},
            }
        )
    )
    k8s = tmp_path / "k8s"
    written = run_json(
        capsys,
        "deploy",
        "--environment",
        "production",
        "--config",
        str(config),
        "--target",
        "kubernetes",
        "--output",
        str(k8s),
    )
    assert sorted(Path(p).name for p in written["manifests"]) == [
        "deployment.yaml",
        "hpa.yaml",
        "service.yaml",
    ]
    manifest = yaml.safe_load((k8s / "deployment.yaml").read_text())
    assert manifest["spec"]["replicas"] == 2
    assert manifest["metadata"]["annotations"]["retailml.io/model-version"] == "1.1.0"

    # A blue-green rollout with explicit split and thresholds, stopped by a rollback.
    rollout_args = ["deploy", "--environment", "production", "--model", NAME, "--version", "1.1.0"]
    rollout_args += ["--strategy", "blue-green", "--split", "80/20", "--window", "60"]
    message = fails(capsys, *rollout_args, "--threshold", "error_rate")
    assert "NAME=NUMBER such as error_rate=0.01" in message
    started = run_json(capsys, *rollout_args, "--threshold", "error_rate=0.05")
    assert (started["state"], started["strategy"]) == ("running", "blue_green")
    assert started["traffic_split"] == {"blue": 80.0, "green": 20.0}
    assert started["rollback_threshold"]["error_rate"] == 0.05
    assert started["rollback_threshold"]["latency_p95"] == 1000.0
    assert main(["rollback", "--model", NAME, "--reason", "not today"]) == 0
    assert "rolled back: rollout" in capsys.readouterr().out

    # A/B test: the treatment wins and is rolled out to production through the same path.
    created = run_json(
        capsys,
        "ab",
        "create",
        "--name",
        "v10_vs_v11",
        "--control",
        f"{NAME}:1.0.0:50",
        "--treatment",
        f"{NAME}:1.1.0:50",
        "--metrics",
        "mape,mae",
        "--days",
        "1",
    )
    assert [arm["arm"] for arm in created["arms"]] == ["control", "treatment"]
    with ABTestManager() as ab:
        ab.record_many(
            "v10_vs_v11",
            [
                {"arm": arm, "metric": metric, "value": base + 0.001 * (i % 7)}
                for i in range(40)
                for arm, base in (("control", 0.20), ("treatment", 0.10))
                for metric in ("mape", "mae")
            ],
        )
    results = run_json(capsys, "ab", "results", "v10_vs_v11")
    assert results["winner"] == "treatment"
    assert main(["ab", "results", "v10_vs_v11"]) == 0
    assert "winner: treatment" in capsys.readouterr().out
    concluded = run_json(capsys, "ab", "conclude", "v10_vs_v11", "--force")
    assert concluded["winner"] == "treatment" and concluded["promoted"] is True
    assert concluded["deployment"]["state"] == "running"
    assert concluded["deployment"]["new_version"] == "1.1.0"


def test_errors_are_one_line_with_exit_code_1(
    settings: Settings,
    tracking: str,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    message = fails(capsys, "deploy", "--environment", "qa", "--model", NAME, "--version", "1")
    assert "--environment: expected one of staging, production; got 'qa'" in message
    message = fails(capsys, "deploy", "--environment", "staging", "--model", NAME)
    assert "--version" in message
    message = fails(
        capsys, "deploy", "--environment", "staging", "--model", NAME, "--version", "1.0.0"
    )
    assert "expected a registered model" in message
    message = fails(
        capsys,
        "deploy",
        "--environment",
        "staging",
        "--model",
        NAME,
        "--version",
        "1.0.0",
        "--strategy",
        "yolo",
    )
    assert "--strategy: expected one of direct, canary, blue-green" in message
    message = fails(capsys, "rollback", "--model", NAME, "--reason", "x")
    assert "serving production" in message
    message = fails(capsys, "promote", "--model", NAME)
    assert "serving staging" in message
    message = fails(
        capsys, "ab", "create", "--name", "t", "--control", "a:1", "--treatment", "b:1:50"
    )
    assert "NAME:VERSION:PERCENT" in message
