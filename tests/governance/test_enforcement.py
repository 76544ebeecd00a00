"""Governance enforcement: nothing serves production without an approved request, and the
audit log records every deployment, rollout, promotion, rollback, registry change and setting.

The Python API, the CLI and the HTTP admin API are each tried on every path that makes a
version serve production: a direct deployment, a blue-green rollout, a canary rollout, a
promotion (and the registry's ``production`` alias).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select, text

from governance.approvals import APPROVERS, approve
from registry.conftest import empty_mlflow_store, saved_model, tracking  # noqa: F401 - fixtures
from retailml.cli import main
from retailml.core.db import new_id, utcnow
from retailml.core.db_deploy import Deployment as DeploymentRow
from retailml.core.db_deploy import PredictionLogEntry
from retailml.core.db_deploy import Rollout as RolloutRow
from retailml.core.errors import ConfigError, NotFoundError, StateError
from retailml.core.settings import Settings
from retailml.deployment.ab_testing import ABTestManager
from retailml.deployment.model_server import ModelRegistry, ModelServer, Rollout
from retailml.governance.model_governance import ModelGovernance
from retailml.serving.app import create_app

NAME = "sales_forecast_prophet"
FAST = {"window_seconds": 1, "min_requests": 5}
ADMIN = {"Authorization": "Bearer admin-secret"}
NO_REQUEST = r"expected an approved request to deploy sales_forecast_prophet 1\.1\.0 to production; got no approval request"  # noqa: E501


@pytest.fixture
def db_settings(settings: Settings, tracking: str, database_url: str) -> Settings:  # noqa: F811
    return settings.model_copy(update={"database_url": database_url})


@pytest.fixture
def registry(db_settings: Settings, saved_model: Path) -> Iterator[ModelRegistry]:  # noqa: F811
    """1.0.0 and 1.1.0 registered; nothing approved or deployed."""
    with ModelRegistry(db_settings) as reg:
        reg.register_model(NAME, "1.0.0", saved_model)
        reg.register_model(NAME, "1.1.0", saved_model)
        yield reg


def deploy(server: ModelServer, version: str) -> Any:
    return asyncio.run(server.deploy_model(config={"model_name": NAME, "model_version": version}))


def rollout(server: ModelServer, strategy: str) -> Any:
    return asyncio.run(
        server.blue_green_deploy(
            NAME, "1.1.0", "1.0.0", {"blue": 90, "green": 10}, FAST, strategy=strategy
        )
    )


def actions(registry: ModelRegistry) -> list[tuple[str, str]]:
    """(action, subject) of every audit entry, oldest first."""
    entries = ModelGovernance(registry.settings, db=registry.db).audit_log(1000)
    return [(e["action"], e["subject"]) for e in reversed(entries)]


def aliases(registry: ModelRegistry) -> dict[str, str]:
    return next(m.aliases for m in registry.list_models() if m.name == NAME)


def log_green_requests(server: ModelServer, n: int) -> None:
    with server.db.session() as session:
        for _ in range(n):
            session.add(
                PredictionLogEntry(
                    request_id=new_id(),
                    model_name=NAME,
                    model_version="1.1.0",
                    environment="production",
                    arm="green",
                    entity_key=None,
                    features_hash="0" * 64,
                    output=[1.0],
                    latency_ms=5.0,
                    status_code=200,
                    error=None,
                    created_at=utcnow(),
                )
            )


# --- the Python API ----------------------------------------------------------------------------


def test_every_python_path_to_production_is_refused_without_an_approved_request(
    registry: ModelRegistry,
) -> None:
    with ModelServer("production", registry=registry) as server:
        with pytest.raises(StateError, match=NO_REQUEST.replace("1\\.1\\.0", "1\\.0\\.0")):
            deploy(server, "1.0.0")
        assert server.list_deployments() == []  # refused before anything was recorded
        approve(registry.settings, NAME, "1.0.0", db=registry.db)
        assert deploy(server, "1.0.0").active

        for strategy in ("blue_green", "canary"):
            with pytest.raises(StateError, match=NO_REQUEST):
                rollout(server, strategy)
        with pytest.raises(StateError, match=NO_REQUEST):
            asyncio.run(server.promote(NAME, "1.1.0", wait=False))
        with pytest.raises(StateError, match=NO_REQUEST):
            deploy(server, "1.1.0")
        assert server.list_rollouts() == []
        assert [(d.version, d.status) for d in server.list_deployments()] == [("1.0.0", "active")]
    # The registry is no way around it: the production alias needs the approval too.
    with pytest.raises(StateError, match="before it holds the 'production' alias"):
        registry.set_alias(NAME, "1.1.0", "production")
    assert aliases(registry) == {"production": "1.0.0"}

    # An A/B test splits production traffic: its unapproved arm is refused too.
    arms = {
        "control": {"name": NAME, "version": "1.0.0", "traffic_percentage": 50},
        "treatment": {"name": NAME, "version": "1.1.0", "traffic_percentage": 50},
    }
    with ABTestManager(registry.settings, db=registry.db) as ab:
        with pytest.raises(StateError, match=NO_REQUEST):
            asyncio.run(ab.create_test("v10_vs_v11", arms, ["mape"]))
        assert ab.list_tests() == []

    # Staging needs no approval.
    with ModelServer("staging", registry=registry) as staging:
        assert deploy(staging, "1.1.0").active
    refused = [subject for action, subject in actions(registry) if action == "deployment.refused"]
    assert refused == [f"{NAME}@1.0.0"] + [f"{NAME}@1.1.0"] * 4
    assert ("alias.refused", f"{NAME}@1.1.0") in actions(registry)


def test_pending_rejected_and_other_target_requests_are_refused_naming_the_roles(
    registry: ModelRegistry,
) -> None:
    governance = ModelGovernance(registry.settings, db=registry.db)
    approve(registry.settings, NAME, "1.0.0", db=registry.db)
    with ModelServer("production", registry=registry) as server:
        deploy(server, "1.0.0")
        # Approved for staging only: production still refuses.
        approve(registry.settings, NAME, "1.1.0", db=registry.db, target="staging")
        with pytest.raises(StateError, match=NO_REQUEST):
            rollout(server, "canary")

        request = governance.request_approval(NAME, "1.1.0", "production", "better", {}, APPROVERS)
        governance.approve(request.id, "alice", "lead_data_scientist", "fine by me")
        pending = f"request {request.id} is pending, waiting for ml_engineer, business_owner"
        with pytest.raises(StateError, match=pending):
            rollout(server, "blue_green")
        governance.reject(request.id, "bob", "ml_engineer", "worse on December")
        rejected = (
            f"request {request.id} is rejected \\(rejected by bob for ml_engineer: worse on "
            "December\\), waiting for ml_engineer, business_owner"
        )
        with pytest.raises(StateError, match=rejected):
            asyncio.run(server.promote(NAME, "1.1.0", wait=False))
        assert server.list_rollouts() == []

        # A new request, approved by every listed role, lets it through.
        approve(registry.settings, NAME, "1.1.0", db=registry.db)
        started = rollout(server, "canary")
        assert started.running and started.new_version == "1.1.0"


def test_approved_rollout_promotion_and_rollback_pass_and_are_audited(
    registry: ModelRegistry,
) -> None:
    for version in ("1.0.0", "1.1.0"):
        approve(registry.settings, NAME, version, db=registry.db)
    with ModelServer("production", registry=registry) as server:
        first = deploy(server, "1.0.0")
        assert first.config["approval_request"]  # the deployment names its approval
        started = asyncio.run(
            server.promote(NAME, "1.1.0", wait=False, rollback_threshold=FAST, actor="carol")
        )
        assert isinstance(started, Rollout)
        assert started.running and started.strategy == "canary"
        log_green_requests(server, 10)
        done = server.evaluate_rollout(started.id, now=utcnow() + timedelta(seconds=2))
        assert done.state == "promoted" and aliases(registry)["production"] == "1.1.0"
        # A rollback restores the version that served before: no new approval needed.
        back = server.rollback(NAME, reason="forecast doubled", actor="dave")
        assert back.changed and back.active_version == "1.0.0"
    assert aliases(registry) == {"production": "1.0.0"}
    log = actions(registry)
    subject = f"{NAME}@1.1.0"
    for expected in [
        ("deployment.activated", f"{NAME}@1.0.0"),
        ("promotion.started", subject),
        ("rollout.started", subject),
        ("rollout.promoted", subject),
        ("deployment.rolled_back", subject),
        ("alias.set", subject),
        ("alias.deleted", subject),  # the canary alias, after promotion
    ]:
        assert expected in log, expected
    entries = ModelGovernance(registry.settings, db=registry.db).audit_log(1000)
    rolled = next(e for e in entries if e["action"] == "deployment.rolled_back")
    assert rolled["actor"] == "dave"
    assert rolled["details"] == {
        "environment": "production",
        "restored_version": "1.0.0",
        "reason": "forecast doubled",
    }
    assert next(e for e in entries if e["action"] == "promotion.started")["actor"] == "carol"
    assert ModelGovernance(registry.settings, db=registry.db).verify_audit().ok


def test_a_revoked_approval_refuses_deployment_and_rollback_to_the_version(
    registry: ModelRegistry,
) -> None:
    governance = ModelGovernance(registry.settings, db=registry.db)
    first = approve(registry.settings, NAME, "1.0.0", db=registry.db)
    second = approve(registry.settings, NAME, "1.1.0", db=registry.db)
    with ModelServer("production", registry=registry) as server:
        deploy(server, "1.0.0")
        deploy(server, "1.1.0")

        # Revoking 1.0.0's approval: a rollback may no longer restore it.
        revoked = governance.revoke(first.id, "carol", "business_owner", "biased on new customers")
        assert revoked.status == "revoked"
        assert not governance.is_approved(NAME, "1.0.0")
        with pytest.raises(StateError, match="revoked by carol for business_owner: biased"):
            server.rollback(NAME, reason="1.1.0 misbehaves", actor="dave")
        assert server.active_deployment(NAME).version == "1.1.0"  # type: ignore[union-attr]

        # Nor may a deployment or a rollout bring it back.
        refused = (
            f"request {first.id} is revoked \\(revoked by carol for business_owner: "
            "biased on new customers\\)"
        )
        with pytest.raises(StateError, match=refused):
            deploy(server, "1.0.0")

        # The version serving keeps serving when its own approval is revoked.
        governance.revoke(second.id, "erin", "ml_engineer", "found a leak")
        assert server.active_deployment(NAME).version == "1.1.0"  # type: ignore[union-attr]
        # A new approval lets 1.0.0 through again.
        approve(registry.settings, NAME, "1.0.0", db=registry.db)
        assert governance.revoked_request(NAME, "1.0.0") is None
        deploy(server, "1.0.0")

    log = actions(registry)
    assert ("approval.revoked", f"{NAME}@1.0.0") in log
    assert ("approval.revoked", f"{NAME}@1.1.0") in log
    entries = ModelGovernance(registry.settings, db=registry.db).audit_log(1000)
    refusal = next(e for e in entries if e["action"] == "deployment.refused")
    assert refusal["details"]["attempt"] in ("rollback", "deploy")
    assert any(
        e["action"] == "deployment.refused" and e["details"]["attempt"] == "rollback"
        for e in entries
    )
    assert ModelGovernance(registry.settings, db=registry.db).verify_audit().ok


def test_only_an_approved_request_is_revoked_by_a_listed_role_with_a_reason(
    registry: ModelRegistry,
) -> None:
    governance = ModelGovernance(registry.settings, db=registry.db)
    pending = governance.request_approval(NAME, "1.0.0", "production", "better", {}, APPROVERS)
    with pytest.raises(StateError, match=f"request {pending.id} is pending"):
        governance.revoke(pending.id, "carol", "business_owner", "changed my mind")
    approved = approve(registry.settings, NAME, "1.0.0", db=registry.db)
    with pytest.raises(ConfigError, match="'auditor'"):
        governance.revoke(approved.id, "carol", "auditor", "not listed")
    with pytest.raises(ConfigError, match="a reason"):
        governance.revoke(approved.id, "carol", "business_owner", "  ")
    with pytest.raises(NotFoundError):
        governance.revoke("no-such-request", "carol", "business_owner", "why")
    governance.revoke(approved.id, "carol", "business_owner", "biased")
    with pytest.raises(StateError, match="is revoked"):
        governance.revoke(approved.id, "carol", "business_owner", "again")


def test_registration_deletion_archive_and_restore_are_audited(registry: ModelRegistry) -> None:
    registry.archive_model(NAME, "1.0.0")
    registry.restore_model_version(NAME, "1.0.0")
    registry.delete_model_version(NAME, "1.0.0")
    log = actions(registry)
    assert [a for a in log if a[0].startswith("registry.")] == [
        ("registry.registered", f"{NAME}@1.0.0"),
        ("registry.registered", f"{NAME}@1.1.0"),
        ("registry.archived", f"{NAME}@1.0.0"),
        ("registry.restored", f"{NAME}@1.0.0"),
        ("registry.deleted", f"{NAME}@1.0.0"),
    ]
    entries = ModelGovernance(registry.settings, db=registry.db).audit_log(1000)
    registered = next(e for e in entries if e["subject"] == f"{NAME}@1.1.0")
    assert registered["action"] == "registry.registered"
    assert registered["actor"] == registry.get_model_version(NAME, "1.1.0").created_by
    assert set(registered["details"]) == {"mlflow_version", "digest", "run_id", "model_uri"}
    assert ModelGovernance(registry.settings, db=registry.db).verify_audit().ok


# --- the CLI -----------------------------------------------------------------------------------


def refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(list(args)) == 1
    message = " ".join(capsys.readouterr().err.split())
    assert message.startswith("error:") and "Traceback" not in message
    return message


def test_the_cli_refuses_unapproved_production_deploys_on_every_path(
    settings: Settings,
    tracking: str,  # noqa: F811
    saved_model: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    with ModelRegistry(settings) as registry:
        registry.register_model(NAME, "1.0.0", saved_model)
        registry.register_model(NAME, "1.1.0", saved_model)
    production = ["deploy", "--environment", "production", "--model", NAME]
    message = refused(capsys, *production, "--version", "1.0.0")
    assert "1.0.0 to production; got no approval request" in message
    assert "retailml governance request" in message

    # Approval from the command line: a request and every listed role's decision.
    roles = [arg for role in APPROVERS for arg in ("--approver", role)]
    request = ["governance", "request", "--model", NAME, "--version", "1.0.0", *roles]
    assert main([*request, "--justification", "first forecast"]) == 0
    request_id = capsys.readouterr().out.split()[1].rstrip(":")
    for role in APPROVERS:
        assert main(["governance", "approve", request_id, "--role", role, "--approver", "x"]) == 0
    assert "approved" in capsys.readouterr().out
    assert main([*production, "--version", "1.0.0"]) == 0
    assert "1.0.0 -> production: active" in capsys.readouterr().out

    for strategy in ("canary", "blue-green"):
        message = refused(capsys, *production, "--version", "1.1.0", "--strategy", strategy)
        assert "1.1.0 to production; got no approval request" in message
    k8s = ["--target", "kubernetes", "--output", str(tmp_path / "k8s")]
    assert "got no approval request" in refused(capsys, *production, "--version", "1.1.0", *k8s)
    assert not (tmp_path / "k8s").exists()
    assert main(["deploy", "--environment", "staging", "--model", NAME, "--version", "1.1.0"]) == 0
    capsys.readouterr()
    message = refused(capsys, "promote", "--model", NAME, "--timeout", "0.1")
    assert "1.1.0 to production; got no approval request" in message
    ab = ["ab", "create", "--name", "t", "--control", f"{NAME}:1.0.0:50"]
    message = refused(capsys, *ab, "--treatment", f"{NAME}:1.1.0:50")
    assert "1.1.0 to production; got no approval request" in message
    with ModelServer("production") as server:
        assert server.list_rollouts() == []
        assert server.active_deployment(NAME).version == "1.0.0"  # type: ignore[union-attr]

    # Revoking from the command line: 1.0.0 may not be deployed again on that request.
    revoke = ["governance", "revoke", request_id, "--role", "business_owner", "--approver", "carol"]
    assert main([*revoke, "--reason", "biased on new customers"]) == 0
    assert f"request {request_id}: revoked" in capsys.readouterr().out
    message = refused(capsys, *production, "--version", "1.0.0")
    assert "revoked by carol for business_owner: biased on new customers" in message
    assert "is revoked" in refused(capsys, *revoke, "--reason", "again")


# --- the HTTP admin API --------------------------------------------------------------------------


def test_the_http_admin_api_refuses_unapproved_production_deploys_with_409(
    settings: Settings,
    tracking: str,  # noqa: F811
    saved_model: Path,  # noqa: F811
) -> None:
    with ModelRegistry(settings) as registry:
        registry.register_model(NAME, "1.0.0", saved_model)
        registry.register_model(NAME, "1.1.0", saved_model)
    served = settings.model_copy(update={"admin_token": SecretStr("admin-secret")})
    body = {"model_name": NAME, "model_version": "1.0.0", "environment": "production"}
    with TestClient(create_app(served)) as client:
        assert client.post("/api/v1/admin/deploy", json=body).status_code == 401
        answer = client.post("/api/v1/admin/deploy", json=body, headers=ADMIN)
        assert answer.status_code == 409
        assert "1.0.0 to production; got no approval request" in answer.json()["detail"]
        approve(settings, NAME, "1.0.0")
        answer = client.post("/api/v1/admin/deploy", json=body, headers=ADMIN)
        assert answer.status_code == 200 and answer.json()["deployment"]["status"] == "active"

        newer = {**body, "model_version": "1.1.0"}
        for strategy in ("canary", "blue-green"):
            answer = client.post(
                "/api/v1/admin/deploy", json={**newer, "strategy": strategy}, headers=ADMIN
            )
            assert answer.status_code == 409, answer.text
            assert "1.1.0 to production; got no approval request" in answer.json()["detail"]
        promote = {"model_name": NAME, "model_version": "1.1.0", "actor": "erin"}
        answer = client.post("/api/v1/admin/promote", json=promote, headers=ADMIN)
        assert answer.status_code == 409
        assert "waiting for" not in answer.json()["detail"]
        staged = {**newer, "environment": "staging"}
        assert client.post("/api/v1/admin/deploy", json=staged, headers=ADMIN).status_code == 200

        approve(settings, NAME, "1.1.0")
        answer = client.post("/api/v1/admin/promote", json=promote, headers=ADMIN)
        assert answer.status_code == 200, answer.text
        assert answer.json()["rollout"]["state"] == "running"
    with ModelServer("production", settings) as server:
        rows = [r.created_by for r in server.list_deployments(NAME)]
    assert rows == ["erin via serving-admin-api", "serving-admin-api"]


# --- settings and the audit log ----------------------------------------------------------------


def test_config_set_is_validated_written_and_audited_and_audit_verify_detects_tampering(
    settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["config", "set", "serve_port", "8001"]) == 0
    assert "serve_port: 8000 -> 8001" in capsys.readouterr().out
    assert main(["config", "set", "RETAILML_ADMIN_TOKEN", "s3cret"]) == 0
    assert "s3cret" not in capsys.readouterr().out
    written = yaml.safe_load((tmp_path / "retailml.yaml").read_text())
    assert written == {"serve_port": 8001, "admin_token": "s3cret"}
    assert not list(tmp_path.glob(".retailml.yaml.*"))  # no temporary file left behind

    message = refused(capsys, "config", "set", "serve_port", "eighty")
    assert "expected a valid value for serve_port" in message and "'eighty'" in message
    message = refused(capsys, "config", "set", "colour", "blue")
    assert "expected a setting among admin_token," in message and "serve_port" in message
    assert yaml.safe_load((tmp_path / "retailml.yaml").read_text()) == written

    governance = ModelGovernance()
    changes = [e for e in reversed(governance.audit_log()) if e["action"] == "setting.changed"]
    assert [(e["subject"], e["details"]["old"], e["details"]["new"]) for e in changes] == [
        ("setting serve_port", 8000, 8001),
        ("setting admin_token", None, "***"),
    ]
    assert main(["audit", "verify"]) == 0
    assert "every link verified" in capsys.readouterr().out

    with governance.db.engine.begin() as connection:
        connection.execute(
            text("UPDATE audit_log SET details = :d WHERE action = 'setting.changed' AND seq = 1"),
            {"d": '{"old": 8000, "new": 80}'},
        )
    assert main(["audit", "verify"]) == 1
    assert "audit log BROKEN at entry 1" in capsys.readouterr().out


def test_a_rollout_rolled_back_by_hand_is_audited_with_who_and_why(
    registry: ModelRegistry,
) -> None:
    for version in ("1.0.0", "1.1.0"):
        approve(registry.settings, NAME, version, db=registry.db)
    with ModelServer("production", registry=registry) as server:
        deploy(server, "1.0.0")
        started = rollout(server, "blue_green")
        server.rollback(NAME, reason="latency spike", actor="frank")
        with server.db.session() as session:
            state = session.scalars(select(RolloutRow.state)).one()
            statuses = sorted(session.scalars(select(DeploymentRow.status)))
    assert state == "rolled_back" and statuses == ["active", "rolled_back"]
    entries = ModelGovernance(registry.settings, db=registry.db).audit_log(1000)
    stopped = next(e for e in entries if e["action"] == "rollout.rolled_back")
    assert stopped["actor"] == "frank" and stopped["details"]["rollout"] == started.id
    assert "latency spike" in stopped["details"]["reason"]
    assert stopped["details"]["automatic"] is False
