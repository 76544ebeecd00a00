"""Blue-green rollouts and rollback: thresholds, promotion, resumption; SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import guide
from governance.approvals import approve
from registry.conftest import (  # noqa: F401 - fixtures
    empty_mlflow_store,
    saved_model,
    tracking,
)
from retailml.core.db import new_id, utcnow
from retailml.core.db_deploy import Deployment as DeploymentRow
from retailml.core.db_deploy import PredictionLogEntry
from retailml.core.errors import ConfigError, NotFoundError, StateError
from retailml.core.settings import Settings
from retailml.deployment._rollout import arm_stats, decide, parse_split, parse_thresholds
from retailml.deployment.ab_testing import ABTestManager
from retailml.deployment.model_server import ModelRegistry, ModelServer, Rollout

NAME = "sales_forecast_prophet"
GUIDE_THRESHOLDS = {"error_rate": 0.01, "latency_p95": 1000, "performance_drop": 0.05}
FAST = {**GUIDE_THRESHOLDS, "window_seconds": 1, "min_requests": 20}


@pytest.fixture
def db_settings(settings: Settings, tracking: str, database_url: str) -> Settings:  # noqa: F811
    return settings.model_copy(update={"database_url": database_url})


@pytest.fixture
def registry(db_settings: Settings, saved_model: Path) -> Iterator[ModelRegistry]:  # noqa: F811
    """1.1.0 serving production, 1.2.0 registered."""
    with ModelRegistry(db_settings) as reg:
        reg.register_model(NAME, "1.1.0", saved_model)
        reg.register_model(NAME, "1.2.0", saved_model)
        for version in ("1.1.0", "1.2.0"):
            approve(db_settings, NAME, version, db=reg.db)
        with ModelServer("production", registry=reg) as server:
            asyncio.run(server.deploy_model({"model_name": NAME, "model_version": "1.1.0"}))
        yield reg


@pytest.fixture
def alerts() -> list[Any]:
    return []


@pytest.fixture
def server(registry: ModelRegistry, alerts: list[Any]) -> Iterator[ModelServer]:
    with ModelServer("production", registry=registry, alerts=[alerts.append]) as srv:
        yield srv


def start(server: ModelServer, thresholds: dict[str, Any] | None = None) -> Rollout:
    return asyncio.run(
        server.blue_green_deploy(
            NAME, "1.2.0", "1.1.0", {"blue": 90, "green": 10}, thresholds or FAST
        )
    )


def log_requests(
    server: ModelServer,
    version: str,
    n: int,
    *,
    latency_ms: float = 20.0,
    errors: int = 0,
    arm: str | None = None,
) -> None:
    now = utcnow()
    with server.db.session() as session:
        for i in range(n):
            failed = i < errors
            session.add(
                PredictionLogEntry(
                    request_id=new_id(),
                    model_name=NAME,
                    model_version=version,
                    environment="production",
                    arm=arm or ("green" if version == "1.2.0" else "blue"),
                    entity_key=None,
                    features_hash="0" * 64,
                    output=None if failed else [1.0],
                    latency_ms=latency_ms,
                    status_code=500 if failed else 200,
                    error="boom" if failed else None,
                    created_at=now,
                )
            )


def aliases(registry: ModelRegistry) -> dict[str, str]:
    return {
        alias: version
        for model in registry.list_models()
        if model.name == NAME
        for alias, version in model.aliases.items()
    }


def statuses(server: ModelServer) -> list[tuple[str, str]]:
    return [(d.version, d.status) for d in reversed(server.list_deployments(NAME))]


# --- the guide --------------------------------------------------------------------------------


def test_guide_production_and_ab_deployments_run_as_written(
    registry: ModelRegistry, db_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The guide's ModelServer() and ABTestManager() use the process settings.
    monkeypatch.setenv("RETAILML_DATABASE_URL", db_settings.resolved_database_url)
    from retailml.core.settings import get_settings

    get_settings.cache_clear()
    approve(get_settings(), "sales_forecast_xgboost", "1.0.0")  # the A/B test's treatment
    # The production block continues the staging one, which imports ModelServer.
    code = guide.block("### Staging Deployment") + guide.block("### Production Deployment")
    namespace: dict[str, Any] = {}
    guide.run(
        code + "\nrollout = await deploy_to_production()\nab_test = await deploy_ab_test()",
        namespace,
    )
    rollout = namespace["rollout"]
    assert isinstance(rollout, Rollout)
    assert (rollout.state, rollout.strategy) == ("running", "blue_green")
    assert (rollout.current_version, rollout.new_version) == ("1.1.0", "1.2.0")
    assert rollout.traffic_split == {"blue": 90.0, "green": 10.0}
    assert rollout.rollback_threshold == {
        **GUIDE_THRESHOLDS,
        "window_seconds": 300.0,
        "min_requests": 50.0,
    }
    assert aliases(registry) == {"production": "1.1.0", "canary": "1.2.0"}
    ab_test = namespace["ab_test"]
    assert ab_test.name == "prophet_vs_xgboost" and ab_test.status == "running"
    with ABTestManager() as ab:
        assert ab.get_test("prophet_vs_xgboost").control.model_name == NAME
    get_settings.cache_clear()


# --- automatic rollback and promotion -----------------------------------------------------------


@pytest.mark.parametrize("threshold", ["error_rate", "latency_p95", "performance_drop"])
def test_a_bad_version_crossing_a_threshold_is_rolled_back_with_an_alert(
    server: ModelServer, registry: ModelRegistry, alerts: list[Any], threshold: str
) -> None:
    rollout = start(server)
    assert aliases(registry) == {"production": "1.1.0", "canary": "1.2.0"}
    log_requests(server, "1.1.0", 200)
    if threshold == "error_rate":
        log_requests(server, "1.2.0", 25, errors=3)  # 12 % > 1 %
        expected = "error_rate 0.12 crossed the threshold 0.01"
    elif threshold == "latency_p95":
        log_requests(server, "1.2.0", 25, latency_ms=1500)  # p95 1500 ms > 1000 ms
        expected = "latency_p95 1500 ms crossed the threshold 1000 ms"
    else:
        log_requests(server, "1.2.0", 25)
        server.record_performance(rollout.id, "blue", 0.10)
        server.record_performance(rollout.id, "green", 0.12)  # 20 % worse > 5 %
        expected = "performance_drop 0.2 crossed the threshold 0.05"

    (decided,) = server.evaluate_rollouts()
    assert decided.state == "rolled_back" and decided.ended_at is not None
    assert decided.reason is not None and decided.reason.startswith(expected)
    assert decided.observed["green"]["requests"] == 25
    assert decided.observed["blue"]["requests"] == 200
    # Blue never stopped serving; green is out and holds no alias.
    assert aliases(registry) == {"production": "1.1.0"}
    assert statuses(server) == [("1.1.0", "active"), ("1.2.0", "rolled_back")]
    assert server.active_deployment(NAME).version == "1.1.0"  # type: ignore[union-attr]
    (alert,) = alerts
    assert alert.severity == "critical" and alert.rollout_id == rollout.id
    assert expected in alert.message and "rolled back automatically" in alert.title
    # Deciding again changes nothing.
    assert server.evaluate_rollout(rollout.id) == decided
    assert len(alerts) == 1


def test_a_healthy_version_is_promoted_after_the_window(
    server: ModelServer, registry: ModelRegistry, alerts: list[Any]
) -> None:
    rollout = start(server)
    log_requests(server, "1.1.0", 100, latency_ms=30)
    log_requests(server, "1.2.0", 30, latency_ms=25)
    server.record_performance(rollout.id, "blue", 0.10)
    server.record_performance(rollout.id, "green", 0.102)  # 2 % worse: within 5 %
    # Healthy, but the window has not passed: still running, observations stored.
    waiting = server.evaluate_rollout(rollout.id, now=rollout.started_at + timedelta(seconds=0.5))
    assert waiting.state == "running" and "healthy for 0 s of the 1 s window" in str(
        waiting.observed["decision"]
    )
    assert waiting.observed["green"]["latency_p95"] == 25.0

    promoted = server.evaluate_rollout(rollout.id, now=utcnow() + timedelta(seconds=2))
    assert promoted.state == "promoted", promoted.observed
    assert promoted.reason is not None and promoted.reason.startswith("healthy for")
    assert aliases(registry) == {"production": "1.2.0"}
    assert statuses(server) == [("1.1.0", "superseded"), ("1.2.0", "active")]
    assert alerts == []


def test_too_little_evidence_neither_promotes_nor_rolls_back(server: ModelServer) -> None:
    rollout = start(server)
    log_requests(server, "1.2.0", 19, errors=19)  # every request failed, but only 19 of 20
    later = utcnow() + timedelta(hours=1)
    judged = server.evaluate_rollout(rollout.id, now=later)
    assert judged.state == "running"
    assert judged.observed["decision"] == "green has served 19 of the 20 requests needed"
    log_requests(server, "1.2.0", 1)
    assert server.evaluate_rollout(rollout.id, now=later).state == "rolled_back"


def test_a_restarted_server_resumes_the_running_rollout(
    server: ModelServer, registry: ModelRegistry, db_settings: Settings
) -> None:
    rollout = start(server)
    server.close()  # the service stops
    log_requests(server, "1.2.0", 30)
    with ModelServer("production", db_settings) as restarted:
        assert restarted.running_rollout(NAME) == rollout
        # Starting the same rollout again returns it rather than a second one.
        assert start(restarted).id == rollout.id
        (promoted,) = restarted.evaluate_rollouts(now=utcnow() + timedelta(seconds=2))
        assert promoted.id == rollout.id and promoted.state == "promoted"
    with ModelServer("staging", db_settings) as staging:
        assert staging.evaluate_rollouts() == []  # other environments are not touched


def test_watch_rollout_waits_until_the_rollout_is_decided(server: ModelServer) -> None:
    rollout = start(server, {**FAST, "window_seconds": 0.3})
    log_requests(server, "1.2.0", 30)
    decided = asyncio.run(server.watch_rollout(rollout.id, interval_s=0.05, timeout_s=30))
    assert decided.state == "promoted"
    # A timeout returns the rollout still running.
    assert asyncio.run(server.watch_rollout(decided.id, interval_s=0.05)).state == "promoted"


def test_rollouts_need_the_active_version_and_a_valid_split(server: ModelServer) -> None:
    with pytest.raises(StateError, match=r"got '1\.2\.0'; active: '1\.1\.0'"):
        asyncio.run(server.blue_green_deploy(NAME, "1.1.0", "1.2.0", {"blue": 90, "green": 10}))
    with pytest.raises(ConfigError, match="summing to 100"):
        asyncio.run(server.blue_green_deploy(NAME, "1.2.0", "1.1.0", {"blue": 90, "green": 20}))
    with pytest.raises(ConfigError, match=r"unknown \['latency_p99'\]"):
        asyncio.run(server.blue_green_deploy(NAME, "1.2.0", "1.1.0", None, {"latency_p99": 5}))
    with pytest.raises(NotFoundError):
        asyncio.run(server.blue_green_deploy(NAME, "2.0.0", "1.1.0"))
    rollout = start(server)
    with pytest.raises(StateError, match="no rollout of 'sales_forecast_prophet' running"):
        asyncio.run(server.deploy_model({"model_name": NAME, "model_version": "1.2.0"}))
    with pytest.raises(ConfigError, match="arm 'blue' or 'green'"):
        server.record_performance(rollout.id, "red", 0.1)


# --- rollback -----------------------------------------------------------------------------------


def test_rollback_restores_the_previous_version_once_and_is_safe_to_repeat(
    server: ModelServer, registry: ModelRegistry, db_settings: Settings
) -> None:
    rollout = start(server)
    log_requests(server, "1.2.0", 30)
    assert server.evaluate_rollout(rollout.id, now=utcnow() + timedelta(seconds=2)).state == (
        "promoted"
    )
    first = server.rollback(NAME, reason="orders forecast doubled", actor="alice")
    assert first.changed and first.action == "restored_previous"
    assert (first.active_version, first.rolled_back_version) == ("1.1.0", "1.2.0")
    assert aliases(registry) == {"production": "1.1.0"}
    assert statuses(server) == [
        ("1.1.0", "superseded"),
        ("1.2.0", "rolled_back"),
        ("1.1.0", "active"),
    ]
    # Who and why are in the deployment rows.
    with server.db.session() as session:
        rows = {
            (r.version, r.status): r
            for r in session.scalars(select(DeploymentRow).where(DeploymentRow.model_name == NAME))
        }
    restored = rows[("1.1.0", "active")]
    assert restored.created_by == "alice"
    assert restored.reason == "rollback from 1.2.0: orders forecast doubled"
    assert rows[("1.2.0", "rolled_back")].reason == "rolled back by alice: orders forecast doubled"

    # Twice (another operator, another process): nothing moves further back.
    with ModelServer("production", db_settings) as other:
        second = other.rollback(NAME, reason="orders forecast doubled", actor="bob")
    assert not second.changed and second.action == "none"
    assert second.active_version == "1.1.0" and second.rolled_back_version == "1.2.0"
    assert "already rolled back" in second.message
    assert aliases(registry) == {"production": "1.1.0"}
    assert len(server.list_deployments(NAME)) == 3


def test_rollback_during_a_rollout_stops_it_and_a_repeat_is_a_no_op(
    server: ModelServer, registry: ModelRegistry, alerts: list[Any]
) -> None:
    rollout = start(server)
    result = server.rollback(NAME, reason="canary looks wrong", actor="alice")
    assert result.changed and result.action == "rollout_rolled_back"
    assert result.active_version == "1.1.0"
    stopped = server.get_rollout(rollout.id)
    assert stopped.state == "rolled_back"
    assert stopped.reason == "manual rollback by alice: canary looks wrong"
    assert aliases(registry) == {"production": "1.1.0"}
    assert alerts == []  # a manual rollback is not an alert
    again = server.rollback(NAME, reason="canary looks wrong")
    assert not again.changed and again.active_version == "1.1.0"
    assert statuses(server) == [("1.1.0", "active"), ("1.2.0", "rolled_back")]


def test_rollback_without_a_previous_version_says_so(server: ModelServer) -> None:
    with pytest.raises(StateError, match=r"earlier production version .* none before '1\.1\.0'"):
        server.rollback(NAME, reason="test")
    with pytest.raises(ConfigError, match="a reason"):
        server.rollback(NAME, reason=" ")
    with (
        ModelServer("staging", registry=server.registry) as staging,
        pytest.raises(StateError, match="serving staging"),
    ):
        staging.rollback(NAME, reason="test")


# --- the rules ----------------------------------------------------------------------------------


def test_split_and_threshold_rules() -> None:
    assert parse_split({"blue": 90, "green": 10}) == {"blue": 90.0, "green": 10.0}
    for bad in ({"blue": 100, "green": 0}, {"a": 50, "b": 50}, {"blue": -10, "green": 110}, None):
        with pytest.raises(ConfigError):
            parse_split(bad)
    assert parse_thresholds(None)["latency_p95"] == 1000.0
    for bad_thresholds in ({"error_rate": -1}, {"error_rate": "x"}, {"min_requests": 2.5}):
        with pytest.raises(ConfigError):
            parse_thresholds(bad_thresholds)


def test_arm_statistics_and_decisions() -> None:
    rows = [(float(ms), 200, None) for ms in range(1, 101)] + [(5.0, 503, None), (5.0, 200, "x")]
    stats = arm_stats("1.2.0", rows)
    assert (stats.requests, stats.errors) == (102, 2)
    assert stats.error_rate == pytest.approx(2 / 102)
    assert stats.latency_p95 == pytest.approx(95.0, abs=1.0)
    empty = arm_stats("1.2.0", [])
    assert empty.requests == 0 and empty.latency_p95 is None
    limits = {**GUIDE_THRESHOLDS, "window_seconds": 60.0, "min_requests": 50.0}
    assert decide(stats, None, limits, elapsed_s=10).action == "rollback"  # 1.96 % > 1 %
    healthy = arm_stats("1.2.0", [(10.0, 200, None)] * 60)
    assert decide(healthy, 0.01, limits, elapsed_s=10).action == "wait"
    assert decide(healthy, 0.01, limits, elapsed_s=61).action == "promote"
    crossed = decide(healthy, 0.5, limits, elapsed_s=61)
    assert (crossed.action, crossed.threshold, crossed.value) == (
        "rollback",
        "performance_drop",
        0.5,
    )


def test_of_two_rollouts_started_at_once_the_first_wins(
    server: ModelServer, registry: ModelRegistry, db_settings: Settings, monkeypatch: Any
) -> None:
    first = start(server)
    with ModelServer("production", db_settings) as racer:
        # The racer checked for a running rollout before the first one was stored.
        monkeypatch.setattr(racer, "running_rollout", lambda name: None)
        with pytest.raises(StateError, match=f"rollout {first.id} .* started concurrently"):
            start(racer)
    (running,) = server.list_rollouts("running")
    assert running.id == first.id
    (lost,) = server.list_rollouts("rolled_back")
    assert "started at the same time" in str(lost.reason)
    assert aliases(registry) == {"production": "1.1.0", "canary": "1.2.0"}
