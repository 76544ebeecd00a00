"""Router: deployments, rollouts and A/B tests from the database, decided in memory."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from governance.approvals import approve
from retailml.core.db import PlatformDB, new_id, utcnow
from retailml.core.db_deploy import Rollout
from retailml.core.errors import NotFoundError
from retailml.core.settings import Settings
from retailml.deployment.ab_testing import ABTestManager
from retailml.deployment.routing import Router

from .helpers import deploy


@pytest.fixture
def local(tmp_path: Path) -> Iterator[tuple[Settings, PlatformDB]]:
    settings = Settings(home=tmp_path / "ws", database_url=f"sqlite:///{tmp_path / 'p.db'}")
    db = PlatformDB.from_settings(settings)
    yield settings, db
    db.dispose()


class _NoAliases:
    def get_model_version(self, name: str, alias: str) -> object:
        raise NotFoundError(f"model {name!r}: unknown")

    def get_model_versions(self, name: str, limit: int = 1) -> object:
        raise NotFoundError(f"model {name!r}: unknown")


def test_the_active_deployment_serves_and_db_is_not_read_per_request(
    local: tuple[Settings, PlatformDB],
) -> None:
    settings, db = local
    deploy(settings, "fc", "1.0.0")
    router = Router(settings, db=db, registry=_NoAliases())
    assert router.route("fc", None, "r1") is None  # nothing published yet
    router.refresh()
    deploy(settings, "fc", "2.0.0")
    route = router.route("fc", "s1", "r2")
    assert route is not None and route.version == "1.0.0" and route.arm is None
    router.refresh()
    route = router.route("fc", "s1", "r3")
    assert route is not None and route.version == "2.0.0"


def test_a_rollout_splits_traffic_sticky_by_entity(local: tuple[Settings, PlatformDB]) -> None:
    settings, db = local
    deploy(settings, "fc", "1.0.0")
    with db.session() as session:
        session.add(
            Rollout(
                id=new_id(),
                model_name="fc",
                environment="production",
                strategy="canary",
                current_version="1.0.0",
                new_version="1.1.0",
                traffic_split={"blue": 80, "green": 20},
                rollback_threshold={},
                healthy_window_s=60.0,
                state="running",
                observed={},
                started_at=utcnow(),
            )
        )
    router = Router(settings, db=db, registry=_NoAliases())
    router.refresh()
    routes = [router.route("fc", f"customer-{i}", "r") for i in range(4000)]
    arms = Counter(r.arm for r in routes if r is not None)
    assert abs(arms["green"] / 4000 - 0.2) < 0.03
    for i in range(50):
        first = router.route("fc", f"customer-{i}", "a")
        again = router.route("fc", f"customer-{i}", "b")
        assert first == again
    green = next(r for r in routes if r is not None and r.arm == "green")
    assert green.version == "1.1.0" and green.source == "rollout"
    assert {("fc", "1.0.0"), ("fc", "1.1.0")} <= router.table.versions()


def test_an_ab_test_routes_by_its_own_assignment(local: tuple[Settings, PlatformDB]) -> None:
    settings, db = local
    manager = ABTestManager(settings, db=db)
    approve(settings, "fc_prophet", "1.2.0", db=db)
    approve(settings, "fc_xgboost", "1.0.0", db=db)
    test = asyncio.run(
        manager.create_test(
            "prophet_vs_xgboost",
            models={
                "control": {"name": "fc_prophet", "version": "1.2.0", "traffic_percentage": 70},
                "treatment": {"name": "fc_xgboost", "version": "1.0.0", "traffic_percentage": 30},
            },
            success_metrics=["mape"],
        )
    )
    router = Router(settings, db=db, registry=_NoAliases())
    router.refresh()
    for key in ("store-1", "store-2", "store-3", "42"):
        route = router.route("fc_prophet", key, "r")
        assert route is not None
        assert route.arm == test.assign(key) == manager.assign("prophet_vs_xgboost", key)
        expected = "fc_prophet" if route.arm == "control" else "fc_xgboost"
        assert route.model_name == expected and route.source == "ab_test"


def test_an_unknown_model_is_remembered_as_not_found(local: tuple[Settings, PlatformDB]) -> None:
    settings, db = local
    router = Router(settings, db=db, registry=_NoAliases())
    router.want_alias("ghost")
    router.refresh()
    with pytest.raises(NotFoundError, match="ghost"):
        router.route("ghost", None, "r")
