"""Request routing: which model version (and which arm) serves a prediction request.

The prediction service asks :meth:`Router.route` for every request; the answer
comes from an in-memory :class:`RoutingTable`, never from the database. The
table is rebuilt from the platform database by :meth:`Router.load` (the
service does it every ``RETAILML_SERVE_ROUTING_TTL_S`` seconds, off the
request path) and swapped in whole with :meth:`Router.publish`, so a request
sees either the old table or the new one, never half of each.

What a table holds, per model name in the service's environment:

* the ``active`` deployment's version (``deployments`` table);
* a ``running`` rollout (``rollouts`` table): traffic is split between its
  ``current_version`` (arm ``blue``) and ``new_version`` (arm ``green``) by
  ``traffic_split``; an entity key always lands on the same colour
  (SHA-256 of the rollout id and the key, modulo 10,000 buckets), so a
  customer does not flip between versions while a canary runs;
* ``running`` A/B tests whose arms serve the model: the arm is
  :meth:`ABTest.assign` of the entity key (sticky, salted per test) and the
  arm's model name and version serve the request;
* else the registry version holding the environment's alias (``production``
  or ``staging``), resolved at load time.

Precedence: an A/B test, then a rollout, then the active deployment, then
the alias. A request without an entity key is routed by its request id
(random, so not sticky).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from sqlalchemy import select

from retailml.core.db import PlatformDB
from retailml.core.db_deploy import Deployment, Rollout
from retailml.core.errors import NotFoundError, RetailMLError, problem
from retailml.core.settings import Settings, get_settings

__all__ = ["Route", "Router", "RoutingTable", "rollout_bucket"]

BUCKETS: Final = 10_000
Source = Literal["ab_test", "rollout", "deployment", "alias", "pinned"]


@dataclass(frozen=True)
class Route:
    """Where one request goes."""

    model_name: str
    version: str
    arm: str | None
    source: Source
    #: The A/B test or rollout id that chose the arm, if any.
    decided_by: str | None = None


@dataclass(frozen=True)
class _RolloutEntry:
    id: str
    current_version: str
    new_version: str
    green_buckets: int


@dataclass(frozen=True)
class _ABArm:
    arm: str
    model_name: str
    version: str
    bound: int


@dataclass(frozen=True)
class _ABEntry:
    name: str
    salt: str
    arms: tuple[_ABArm, ...]


@dataclass(frozen=True)
class RoutingTable:
    """An immutable snapshot of what serves each model in one environment."""

    environment: str
    active: Mapping[str, str] = field(default_factory=dict)
    rollouts: Mapping[str, _RolloutEntry] = field(default_factory=dict)
    ab_tests: Mapping[str, _ABEntry] = field(default_factory=dict)
    #: model name -> version holding the environment's alias (None: no such alias).
    aliases: Mapping[str, str | None] = field(default_factory=dict)
    #: model name -> why it cannot be served (unknown model), as a message.
    missing: Mapping[str, str] = field(default_factory=dict)
    loaded_at: float = 0.0

    def versions(self) -> set[tuple[str, str]]:
        """Every (model name, version) the table can route to."""
        out = {(name, version) for name, version in self.active.items()}
        for name, rollout in self.rollouts.items():
            out.add((name, rollout.current_version))
            out.add((name, rollout.new_version))
        for test in self.ab_tests.values():
            out.update((arm.model_name, arm.version) for arm in test.arms)
        out.update((name, v) for name, v in self.aliases.items() if v is not None)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (for the admin endpoint)."""
        return {
            "environment": self.environment,
            "active": dict(self.active),
            "rollouts": {
                name: {
                    "id": r.id,
                    "blue": r.current_version,
                    "green": r.new_version,
                    "green_percent": r.green_buckets * 100 / BUCKETS,
                }
                for name, r in self.rollouts.items()
            },
            "ab_tests": {
                name: [
                    {"arm": a.arm, "model_name": a.model_name, "version": a.version} for a in t.arms
                ]
                for name, t in self.ab_tests.items()
            },
            "aliases": dict(self.aliases),
        }


def rollout_bucket(rollout_id: str, key: str) -> int:
    """The bucket (0..9999) of an entity key in a rollout: sticky for the rollout's life."""
    digest = hashlib.sha256(f"{rollout_id}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def _green_buckets(split: Mapping[str, Any]) -> int:
    try:
        green = float(split.get("green", 0))
    except (TypeError, ValueError):
        green = 0.0
    return max(0, min(BUCKETS, round(green * BUCKETS / 100)))


class Router:
    """Routes requests of one environment from a cached :class:`RoutingTable`.

    Args:
        settings: retailml settings (platform database, environment).
        environment: ``production`` or ``staging``; default ``serve_environment``.
        registry: Anything with ``get_model_version(name, alias)`` returning an
            object with ``.version``; used for models with no deployment.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        environment: str | None = None,
        registry: Any = None,
        db: PlatformDB | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.environment = environment or self.settings.serve_environment
        self._registry = registry
        self._db = db
        self._table = RoutingTable(environment=self.environment)
        self._wanted_aliases: set[str] = set()
        self._lock = threading.Lock()

    @property
    def db(self) -> PlatformDB:
        """The platform database (migrated on first use)."""
        if self._db is None:
            self._db = PlatformDB.from_settings(self.settings)
        return self._db

    @property
    def table(self) -> RoutingTable:
        """The published table."""
        return self._table

    @property
    def age_s(self) -> float:
        """Seconds since the published table was loaded."""
        return time.monotonic() - self._table.loaded_at

    def want_alias(self, model_name: str) -> None:
        """Resolve ``model_name``'s environment alias at every load from now on."""
        with self._lock:
            self._wanted_aliases.add(model_name)

    # --- building a table (off the request path) ---------------------------------------------

    def load(self, extra_models: Iterable[str] = ()) -> RoutingTable:
        """Read deployments, rollouts, A/B tests and aliases into a new table (not published)."""
        from retailml.deployment.ab_testing import ABTestManager

        env = self.environment
        with self.db.session() as session:
            deployments = list(
                session.scalars(
                    select(Deployment)
                    .where(Deployment.environment == env, Deployment.status == "active")
                    .order_by(Deployment.updated_at)
                )
            )
            rollouts = list(
                session.scalars(
                    select(Rollout)
                    .where(Rollout.environment == env, Rollout.state == "running")
                    .order_by(Rollout.started_at)
                )
            )
        active = {d.model_name: d.version for d in deployments}  # the newest wins
        rollout_map = {
            r.model_name: _RolloutEntry(
                r.id, r.current_version, r.new_version, _green_buckets(r.traffic_split)
            )
            for r in rollouts
        }
        ab: dict[str, _ABEntry] = {}
        if env == "production":  # A/B tests split live traffic
            manager = ABTestManager(self.settings, db=self.db)
            for test in manager.list_tests(status="running"):
                bound = 0
                arms = []
                for arm in test.arms:
                    bound += round(arm.traffic_percentage * BUCKETS / 100)
                    arms.append(_ABArm(arm.arm, arm.model_name, arm.model_version, bound))
                entry = _ABEntry(test.name, test.salt, tuple(arms))
                for arm in test.arms:
                    ab.setdefault(arm.model_name, entry)
        with self._lock:
            wanted = set(self._wanted_aliases) | set(extra_models)
        aliases: dict[str, str | None] = {}
        missing: dict[str, str] = {}
        for name in sorted(wanted - set(active) - set(rollout_map) - set(ab)):
            try:
                aliases[name] = self._alias_version(name)
            except NotFoundError as exc:
                missing[name] = str(exc)
            except RetailMLError as exc:
                missing[name] = str(exc)
        return RoutingTable(
            environment=env,
            active=active,
            rollouts=rollout_map,
            ab_tests=ab,
            aliases=aliases,
            missing=missing,
            loaded_at=time.monotonic(),
        )

    def _alias_version(self, model_name: str) -> str | None:
        if self._registry is None:
            from retailml.registry.model_registry import ModelRegistry

            self._registry = ModelRegistry(self.settings)
        try:
            return str(self._registry.get_model_version(model_name, self.environment).version)
        except NotFoundError:
            # The model exists (else get_model_versions raises below) but holds no alias.
            self._registry.get_model_versions(model_name, limit=1)
            return None

    def publish(self, table: RoutingTable) -> None:
        """Make ``table`` the one requests are routed by (an atomic reference swap)."""
        self._table = table

    def refresh(self) -> RoutingTable:
        """Load and publish a new table."""
        table = self.load()
        self.publish(table)
        return table

    # --- the hot path -----------------------------------------------------------------------

    def route(self, model_name: str, entity_key: str | None, request_id: str) -> Route | None:
        """Where a request for ``model_name`` goes; None when the table does not know it yet.

        Raises:
            NotFoundError: when the last load found the model unknown or unserved.
        """
        table = self._table
        key = entity_key if entity_key is not None else request_id
        test = table.ab_tests.get(model_name)
        if test is not None:
            from retailml.deployment.ab_testing import assign_bucket

            bucket = assign_bucket(test.salt, key)
            chosen = next((a for a in test.arms if bucket < a.bound), test.arms[-1])
            return Route(chosen.model_name, chosen.version, chosen.arm, "ab_test", test.name)
        rollout = table.rollouts.get(model_name)
        if rollout is not None:
            green = rollout_bucket(rollout.id, key) < rollout.green_buckets
            if green:
                return Route(model_name, rollout.new_version, "green", "rollout", rollout.id)
            return Route(model_name, rollout.current_version, "blue", "rollout", rollout.id)
        version = table.active.get(model_name)
        if version is not None:
            return Route(model_name, version, None, "deployment")
        if model_name in table.aliases:
            alias_version = table.aliases[model_name]
            if alias_version is None:
                raise NotFoundError(
                    problem(
                        f"an active {self.environment} deployment or a {self.environment!r} "
                        "alias of the model",
                        "neither",
                        f"deploy a version (retailml deploy) or set the alias: "
                        f"registry.set_alias({model_name!r}, VERSION, {self.environment!r})",
                        subject=f"model {model_name!r}",
                    )
                )
            return Route(model_name, alias_version, None, "alias")
        if model_name in table.missing:
            raise NotFoundError(table.missing[model_name])
        return None
