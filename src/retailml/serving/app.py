"""The prediction service: a FastAPI application over the registry and the deployments.

Run it with ``retailml serve --host 127.0.0.1 --port 8000 --workers 2`` (or
``uvicorn --factory retailml.serving.app:create_app``). OpenAPI docs are at
``/docs`` and ``/openapi.json``.

Endpoints (prediction ones need ``X-API-Key``; admin ones ``Authorization:
Bearer <RETAILML_ADMIN_TOKEN>``):

=====================================  ==================================================
``POST /api/v1/ml/predict``            the guide's request and response, any model type
``POST /api/v1/ml/predict/batch``      up to 1000 such requests; a result or error each
``POST /api/v1/ml/forecast``           a sales forecast of one series and horizon
``POST /api/v1/ml/segment``            a customer's segment (inline or online features)
``POST /api/v1/ml/anomaly``            anomaly scores of transaction rows
``POST /api/v1/ml/demand``             demand predictions of feature rows
``GET /health``, ``GET /ready``        liveness; readiness (routing loaded, models in memory)
``GET /metrics``                       Prometheus exposition
``GET /api/v1/admin/deployments``      deployments, running rollouts, the routing table
``GET /api/v1/admin/ab-tests``         A/B tests
``POST /api/v1/admin/deploy``          ``ModelServer.deploy_model`` (direct) or a
                                       canary / blue-green rollout from the active version
``POST /api/v1/admin/promote``         ``ModelServer.promote`` into production (not waiting)
``POST /api/v1/admin/rollback``        ``ModelServer.rollback`` of a model
``POST /api/v1/admin/routing/refresh`` reload the routing table now
=====================================  ==================================================

The hot path: the route comes from an in-memory table (deployments, rollouts
and A/B tests reloaded every ``RETAILML_SERVE_ROUTING_TTL_S`` seconds in the
background), the model from memory, a forecast from the model version's
forecast cache (a fitted forecaster is deterministic, so a forecast is
computed once per version, horizon and level: that, and skipping pandas on
the request path, is why this beats a generic pyfunc server); the response is
serialised with orjson and the prediction log row is queued for a batch
write by a background thread. A new version named by the database is loaded
in the background and only then swapped into the routing table, so the old
one serves until the new one is ready and no request fails during a swap.

Errors: 400 for missing features, 401/403 for credentials, 404 for an unknown
model, entity or online feature set, 422 naming the field and the reason
for invalid input, 409 for a state conflict (among them a production deploy,
rollout or promotion without an approved governance request: the message
names the request's status and the roles still to approve), 501 for admin
operations the deployment layer does not offer yet. Admin actions are
recorded in the audit log by the deployment layer, with the actor
``serving-admin-api`` (or ``<actor> via serving-admin-api`` when the body
names one).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import hashlib
import inspect
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import orjson
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from retailml import __version__
from retailml.core.db import PlatformDB
from retailml.core.errors import (
    ConfigError,
    DataValidationError,
    NotFoundError,
    RetailMLError,
    StateError,
    problem,
)
from retailml.core.settings import Settings, get_settings
from retailml.deployment.predictor import Prediction, Predictor
from retailml.deployment.routing import Route, Router, RoutingTable
from retailml.monitoring import monitoring_gauges
from retailml.monitoring._dashboard_routes import dashboard_router
from retailml.serving._auth import Credentials
from retailml.serving._cache import ModelCache
from retailml.serving._metrics import ServingMetrics
from retailml.serving._predlog import PredictionLogWriter

__all__ = ["ServingState", "create_app"]

logger = logging.getLogger("retailml.serving")

FeatureValue = str | int | float | bool | None
Features = dict[str, FeatureValue] | list[dict[str, FeatureValue]]
ModelName = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.\-]+$")]
#: Seconds between calls of ModelServer.evaluate_rollouts.
ROLLOUT_EVALUATION_S = 5.0
#: Most unknown model names remembered as 404s between routing reloads.
_MISSING_LIMIT = 1000


# --- request and response bodies -------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class PredictRequest(_Body):
    """The guide's prediction request, with an optional model and entity."""

    model_name: ModelName | None = Field(
        default=None, description="Registered model; default RETAILML_SERVE_DEFAULT_MODEL."
    )
    model_version: str | None = Field(
        default=None,
        max_length=128,
        description="Pin a version or alias (skips deployment routing); default: routed.",
    )
    features: Features | None = Field(
        default=None,
        description=(
            'Feature name -> value (or a list of them). A forecast takes {"series_id": ...}.'
        ),
    )
    entity_id: str | int | None = Field(
        default=None,
        description=(
            "Entity key: routes sticky A/B and canary arms; with feature_set and no "
            "features, the features are read from the online store."
        ),
    )
    feature_set: str | None = Field(
        default=None, max_length=255, description="Online feature set read for entity_id."
    )
    horizon: int | None = Field(
        default=None, ge=1, le=1000, description="Forecast periods; default the trained horizon."
    )
    confidence_interval: float = Field(
        default=0.95, gt=0, lt=100, description="Forecast interval coverage (0.95 or 95)."
    )


class PredictResponse(BaseModel):
    """The guide's response, plus the request id, model, arm and per-row details."""

    model_config = ConfigDict(protected_namespaces=())

    request_id: str
    model_name: str
    model_version: str
    arm: str | None
    prediction: list[Any]
    confidence_lower: list[float] | None
    confidence_upper: list[float] | None
    prediction_timestamp: datetime
    dates: list[str] | None = None
    details: dict[str, list[Any]] = Field(default_factory=dict)


class BatchRequest(_Body):
    """Several prediction requests at once."""

    requests: list[PredictRequest] = Field(min_length=1, max_length=1000)


class BatchItem(BaseModel):
    """One result of a batch: a prediction or an error."""

    status: int
    result: PredictResponse | None = None
    error: str | None = None


class BatchResponse(BaseModel):
    """Results in request order."""

    predictions: list[BatchItem]


class ForecastRequest(_Body):
    """A sales forecast of one series."""

    series_id: str | int | None = Field(default=None, description="Series; optional for one.")
    horizon: int | None = Field(default=None, ge=1, le=1000)
    confidence_interval: float = Field(default=0.95, gt=0, lt=100)
    model_name: ModelName | None = None
    model_version: str | None = Field(default=None, max_length=128)


class SegmentRequest(_Body):
    """A customer's segment, from inline features or the online store."""

    customer_id: str | int | None = None
    features: dict[str, FeatureValue] | None = None
    feature_set: str = Field(default="customer_features", max_length=255)
    model_name: ModelName = "customer_segmentation"
    model_version: str | None = Field(default=None, max_length=128)


class RowsRequest(_Body):
    """Feature rows of an anomaly or demand model."""

    features: Features | None = Field(default=None, description="Rows (or one row).")
    transactions: list[dict[str, FeatureValue]] | None = Field(
        default=None, description="Alias of features for the anomaly endpoint."
    )
    entity_id: str | int | None = None
    model_name: ModelName | None = None
    model_version: str | None = Field(default=None, max_length=128)


class RollbackRequest(_Body):
    """Roll a model back to its previous version."""

    model_name: ModelName
    reason: str = Field(min_length=1, max_length=2000)
    environment: Literal["production", "staging"] | None = None


class DeployRequest(_Body):
    """Deploy a registered version, directly or as a rollout from the active version."""

    model_name: ModelName
    model_version: str = Field(min_length=1, max_length=128)
    environment: Literal["production", "staging"] | None = None
    strategy: Literal["direct", "canary", "blue-green"] = "direct"
    replicas: int | None = Field(default=None, ge=1, le=64)
    traffic_split: dict[str, float] | None = Field(
        default=None, description='A rollout\'s split, e.g. {"blue": 90, "green": 10}.'
    )
    rollback_threshold: dict[str, float] | None = Field(
        default=None, description="A rollout's limits: error_rate, latency_p95, performance_drop."
    )
    actor: str | None = Field(default=None, max_length=255, description="Who asks (audited).")


class PromoteRequest(_Body):
    """Promote a version into production (direct when nothing serves it, else a canary)."""

    model_name: ModelName
    model_version: str = Field(min_length=1, max_length=128)
    actor: str | None = Field(default=None, max_length=255, description="Who asks (audited).")


def _admin_actor(actor: str | None) -> str:
    return f"{actor} via serving-admin-api" if actor else "serving-admin-api"


# --- state -----------------------------------------------------------------------------------


def _status_of(exc: BaseException) -> int:
    if isinstance(exc, HTTPException):
        return int(exc.status_code)
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConfigError | DataValidationError):
        return 422
    if isinstance(exc, StateError):
        return 409
    if isinstance(exc, RetailMLError):
        return 422
    return 500


#: Request ids: a random per-process prefix and a counter. uuid4 costs a getrandom
#: system call per request, which is slow in sandboxes and under load.
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(1)


def _request_id() -> str:
    """A new request id, unique across processes (32 hex characters)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def _features_hash(features: Any) -> str:
    try:
        raw = orjson.dumps(features, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except TypeError:
        raw = repr(features).encode()
    return hashlib.sha256(raw).hexdigest()


class ServingState:
    """Everything the application holds: settings, routing, models, metrics, the log."""

    def __init__(self, settings: Settings, environment: str | None = None) -> None:
        from retailml.registry.model_registry import ModelRegistry

        self.settings = settings
        self.environment = environment or settings.serve_environment
        self.metrics = ServingMetrics()
        self.metrics.add_quality(lambda: monitoring_gauges(self.db))
        self.credentials = Credentials(settings, on_failure=self.metrics.auth_failure)
        self.registry = ModelRegistry(settings)
        self.cache = ModelCache(self.registry)
        self._db: PlatformDB | None = None
        self.router: Router | None = None
        self.log: PredictionLogWriter | None = None
        self.ready = False
        self.last_refresh_error: str | None = None
        self._feature_store: Any = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def db(self) -> PlatformDB:
        """The platform database (opened and migrated at startup)."""
        if self._db is None:
            self._db = PlatformDB.from_settings(self.settings)
        return self._db

    # --- lifecycle ------------------------------------------------------------------------

    def start_sync(self) -> None:
        """Open the database, load the routing table and its models, start the log writer."""
        db = self.db
        self.router = Router(
            self.settings, environment=self.environment, registry=self.registry, db=db
        )
        self.router.want_alias(self.settings.serve_default_model)
        self.log = PredictionLogWriter(
            db,
            max_queue=self.settings.prediction_log_queue_size,
            on_drop=lambda n: self.metrics.log_dropped.inc(n),
            on_write=lambda n: self.metrics.log_written.inc(n),
        )
        self.log.start()
        self.refresh_sync()
        self.ready = True

    def stop_sync(self) -> None:
        """Write the queued log rows and close connections."""
        self.metrics.close()
        if self.log is not None:
            self.log.close()
        if self._feature_store is not None:
            with contextlib.suppress(Exception):
                self._feature_store.close()
        self.registry.close()
        if self._db is not None:
            self._db.dispose()

    def refresh_sync(self) -> RoutingTable:
        """Reload the routing table; load new versions before publishing it (hot swap)."""
        router = self._router()
        old = router.table
        new = router.load()
        failed: set[str] = set()
        for name, version in sorted(new.versions()):
            if (name, version) in self.cache:
                continue
            try:
                self.cache.load_sync(name, version)
                self.metrics.model_swaps.labels(name).inc()
            except Exception as exc:
                logger.error(
                    "could not load %s %s; keeping the previous route: %s", name, version, exc
                )
                failed.add(name)
        if failed:
            new = _keep_old(new, old, failed)
        router.publish(new)
        self.cache.retain(new.versions())
        self.metrics.routing_age.set(0)
        return new

    def _router(self) -> Router:
        if self.router is None:
            raise StateError("the prediction service has not started")
        return self.router

    async def refresh_forever(self) -> None:
        """Reload the routing table every ``serve_routing_ttl_s`` seconds."""
        interval = self.settings.serve_routing_ttl_s
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.refresh_sync)
                self.last_refresh_error = None
            except Exception as exc:
                self.last_refresh_error = str(exc)
                logger.exception("routing refresh failed; serving the previous table")

    async def evaluate_rollouts_forever(self) -> None:
        """Call ``ModelServer.evaluate_rollouts()`` periodically, if the deployment layer has it.

        Rollout decisions read the prediction log, so the log is flushed first.
        Every worker may run this: ``evaluate_rollout`` leaves finished
        rollouts unchanged, so evaluating twice is harmless.
        """
        server = _model_server(self.settings, self.environment)
        evaluate = getattr(server, "evaluate_rollouts", None) if server is not None else None
        if not callable(evaluate):
            return
        try:
            while True:
                await asyncio.sleep(ROLLOUT_EVALUATION_S)
                try:
                    if self.log is not None:
                        await asyncio.to_thread(self.log.flush)
                    result = await asyncio.to_thread(evaluate)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    logger.exception("rollout evaluation failed")
        finally:
            _close(server)

    # --- the hot path ------------------------------------------------------------------------

    async def resolve(
        self, model_name: str, version: str | None, entity_key: str | None, request_id: str
    ) -> tuple[Route, Predictor]:
        """The route and loaded model of a request."""
        if version is not None:
            route = Route(model_name, version, None, "pinned")
            predictor = self.cache.get(model_name, version)
            if predictor is None:
                predictor = await self.cache.load(model_name, version)
                route = Route(model_name, predictor.model_version, None, "pinned")
            return route, predictor
        router = self._router()
        found = router.route(model_name, entity_key, request_id)
        if found is None:
            found = await asyncio.to_thread(self._learn_model, model_name, entity_key, request_id)
        predictor = self.cache.get(found.model_name, found.version)
        if predictor is None:
            predictor = await self.cache.load(found.model_name, found.version)
        return found, predictor

    def _learn_model(self, model_name: str, entity_key: str | None, request_id: str) -> Route:
        """Resolve a model the table does not know yet (its alias) and remember the answer."""
        router = self._router()
        router.want_alias(model_name)
        table = router.table
        aliases = dict(table.aliases)
        missing = dict(table.missing)
        try:
            aliases[model_name] = router._alias_version(model_name)
        except RetailMLError as exc:
            if len(missing) >= _MISSING_LIMIT:
                missing.clear()
            missing[model_name] = str(exc)
        version = aliases.get(model_name)
        if version is not None:
            self.cache.load_sync(model_name, version)
        router.publish(dataclasses.replace(table, aliases=aliases, missing=missing))
        found = router.route(model_name, entity_key, request_id)
        if found is None:  # pragma: no cover - the table now names the model
            raise NotFoundError(f"model {model_name!r}: not served")
        return found

    async def online_features(self, feature_set: str, entity_id: str | int) -> dict[str, Any]:
        """An entity's features from the online store (404 when absent)."""
        if self._feature_store is None:
            from retailml.feature_engineering.feature_store import FeatureStore

            self._feature_store = FeatureStore(self.settings)
        found = await self._feature_store.get_online_features(feature_set, entity_id)
        if not found.found:
            raise NotFoundError(
                f"entity {entity_id!r}: not in the online store of feature set {feature_set!r}; "
                "send the features inline or materialise the feature set"
            )
        return dict(found.values)

    async def predict(
        self,
        *,
        endpoint: str,
        model_name: str,
        version: str | None,
        features: Any,
        entity_key: str | None,
        horizon: int | None,
        confidence_interval: float | None,
    ) -> dict[str, Any]:
        """Serve one prediction: route, predict, count, log. Raises for errors (counted, logged)."""
        request_id = _request_id()
        started = time.perf_counter()
        route: Route | None = None
        try:
            route, predictor = await self.resolve(model_name, version, entity_key, request_id)
            prediction = await predictor.predict(
                features=features, horizon=horizon, confidence_interval=confidence_interval
            )
            body = _response(request_id, route, prediction)
        except BaseException as exc:
            status = _status_of(exc)
            self._record(
                endpoint,
                request_id,
                route,
                model_name,
                entity_key,
                features,
                None,
                started,
                status,
                exc,
            )
            raise
        self._record(
            endpoint, request_id, route, model_name, entity_key, features, body, started, 200, None
        )
        return body

    def _record(
        self,
        endpoint: str,
        request_id: str,
        route: Route | None,
        model_name: str,
        entity_key: str | None,
        features: Any,
        body: Mapping[str, Any] | None,
        started: float,
        status: int,
        exc: BaseException | None,
    ) -> None:
        seconds = time.perf_counter() - started
        name = route.model_name if route else model_name
        version = route.version if route else ""
        arm = route.arm if route else None
        self.metrics.observe(name, version, arm, endpoint, status, seconds)
        if self.log is None or status in (401, 403):
            return
        output: Any = None
        if body is not None:
            output = {
                "prediction": body["prediction"],
                "confidence_lower": body["confidence_lower"],
                "confidence_upper": body["confidence_upper"],
            }
        self.log.put(
            {
                "request_id": request_id,
                "model_name": name[:255],
                "model_version": version[:128],
                "environment": self.environment,
                "arm": arm,
                "entity_key": None if entity_key is None else str(entity_key)[:255],
                "features_hash": _features_hash(features),
                "output": output,
                "latency_ms": seconds * 1000,
                "status_code": status,
                "error": None if exc is None else str(exc)[:2000],
                "created_at": datetime.now(UTC),
            }
        )


def _keep_old(new: RoutingTable, old: RoutingTable, failed: set[str]) -> RoutingTable:
    """``new`` with the failed models routed as in ``old``."""

    def merged(new_map: Mapping[str, Any], old_map: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in new_map.items() if k not in failed}
        out.update({k: v for k, v in old_map.items() if k in failed})
        return out

    ab = {
        k: v
        for k, v in new.ab_tests.items()
        if k not in failed and not any(a.model_name in failed for a in v.arms)
    }
    ab.update({k: v for k, v in old.ab_tests.items() if k in failed})
    return dataclasses.replace(
        new,
        active=merged(new.active, old.active),
        rollouts=merged(new.rollouts, old.rollouts),
        ab_tests=ab,
        aliases=merged(new.aliases, old.aliases),
    )


def _response(request_id: str, route: Route, prediction: Prediction) -> dict[str, Any]:
    details = dict(prediction.details)
    dates = details.pop("dates", None)
    return {
        "request_id": request_id,
        "model_name": route.model_name,
        "model_version": prediction.model_version,
        "arm": route.arm,
        "prediction": prediction.values,
        "confidence_lower": prediction.lower_bound,
        "confidence_upper": prediction.upper_bound,
        "prediction_timestamp": datetime.now(UTC),
        "dates": dates,
        "details": details,
    }


def _json(body: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS),
        status_code=status,
        media_type="application/json",
    )


def _model_server(settings: Settings, environment: str) -> Any:
    """A ``ModelServer`` of the deployment layer, or None where it does not exist yet."""
    try:
        from retailml.deployment import model_server
    except ImportError:  # pragma: no cover
        return None
    cls = getattr(model_server, "ModelServer", None)
    if cls is None:
        return None
    attempts: list[Callable[[], Any]] = [
        lambda: cls(environment=environment, settings=settings),
        lambda: cls(settings=settings),
        lambda: cls(environment),
        lambda: cls(),
    ]
    for attempt in attempts:
        try:
            return attempt()
        except TypeError:
            continue
    return None


_B = TypeVar("_B", bound=BaseModel)
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "dict", "list"})


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI of a body parsed by hand: its schema, and the API key it needs."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        },
        "parameters": [
            {
                "name": "X-API-Key",
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
                "description": "One of RETAILML_API_KEYS.",
            }
        ],
    }


def _close(server: Any) -> None:
    close = getattr(server, "close", None)
    if callable(close):
        with contextlib.suppress(Exception):
            close()


def _entity_key(features: Any, entity_id: str | int | None) -> str | None:
    if entity_id is not None:
        return str(entity_id)
    if isinstance(features, Mapping):
        for name in ("series_id", "entity_id", "customer_id", "store_id"):
            value = features.get(name)
            if value is not None:
                return str(value)
    return None


# --- the application -------------------------------------------------------------------------


def create_app(settings: Settings | None = None, *, environment: str | None = None) -> FastAPI:
    """Build the prediction service.

    Args:
        settings: retailml settings; default the process settings (``RETAILML_*``).
        environment: ``production`` or ``staging``; default ``RETAILML_SERVE_ENVIRONMENT``.
    """
    settings = settings or get_settings()
    state = ServingState(settings, environment)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(state.start_sync)
        # The models, MLflow, pandas and friends are loaded: move them out of the
        # garbage collector's sight, so its full collections stay short (p99).
        gc.collect()
        gc.freeze()
        tasks = [
            asyncio.create_task(state.refresh_forever(), name="retailml-routing-refresh"),
            asyncio.create_task(state.evaluate_rollouts_forever(), name="retailml-rollouts"),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await asyncio.to_thread(state.stop_sync)

    extra: dict[str, Any] = {}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        # FastAPI's OpenTelemetry hooks look for providers on every request;
        # the service exports its own Prometheus metrics instead.
        extra["telemetry"] = {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(
        title="retailml prediction service",
        version=__version__,
        description=(__doc__ or "").split("Endpoints", 1)[0].strip(),
        lifespan=lifespan,
        **extra,
    )
    app.state.serving = state

    api_key = Depends(state.credentials.require_api_key)
    admin = Depends(state.credentials.require_admin)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for error in exc.errors():
            # Drop "body" and pydantic's union-member tags (``dict[str,...]``, ``int``).
            loc = [
                str(p)
                for p in error.get("loc", ())
                if p != "body" and "[" not in str(p) and str(p) not in _TYPE_TAGS
            ]
            problems.append(
                {
                    "field": ".".join(loc) or "body",
                    "reason": str(error.get("msg", "invalid")),
                    "type": str(error.get("type", "")),
                }
            )
        summary = "; ".join(f"{p['field']}: {p['reason']}" for p in problems)
        return _json({"detail": problems, "error": f"invalid request: {summary}"}, 422)

    @app.exception_handler(RetailMLError)
    async def _retailml_error(request: Request, exc: RetailMLError) -> Response:
        return _json({"detail": str(exc)}, _status_of(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unexpected error serving %s %s", request.method, request.url.path)
        return _json({"detail": f"internal error ({type(exc).__name__}); see the server log"}, 500)

    # --- probes ----------------------------------------------------------------------------

    @app.get("/health", tags=["probes"])
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok", "version": __version__}

    @app.get("/ready", tags=["probes"])
    async def ready() -> Response:
        """Readiness: the routing table is loaded and its models are in memory."""
        if not state.ready or state.router is None:
            return _json({"status": "starting"}, 503)
        age = state.router.age_s
        stale = age > max(30.0, 10 * settings.serve_routing_ttl_s)
        body = {
            "status": "stale" if stale else "ready",
            "environment": state.environment,
            "routing_age_s": round(age, 3),
            "models": [f"{name}:{version}" for name, version in state.cache.loaded()],
            "last_refresh_error": state.last_refresh_error,
        }
        return _json(body, 503 if stale else 200)

    @app.get("/metrics", tags=["probes"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus exposition: requests, latency and errors per model version and arm,
        and the model-quality gauges of monitoring (latest metrics, drift, open alerts)."""
        if state.router is not None:
            state.metrics.routing_age.set(state.router.age_s)
        # The quality gauges read the platform database: off the event loop.
        body = await asyncio.to_thread(state.metrics.render)
        return Response(body, media_type=state.metrics.content_type)

    # The MLOps dashboard (monitoring) at /dashboard, with plotly.js served locally.
    app.include_router(dashboard_router(settings))

    # --- predictions ----------------------------------------------------------------------

    async def _parse(http: Request, model: type[_B]) -> _B:
        """Check the API key, then parse the body with pydantic's JSON parser (no json.loads,
        no dependency solving: the cheapest path FastAPI offers)."""
        await state.credentials.require_api_key(http)
        try:
            return model.model_validate_json(await http.body())
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from None

    async def _one(request: PredictRequest, endpoint: str) -> dict[str, Any]:
        features: Any = request.features
        if request.features is not None and not request.features:
            raise HTTPException(400, "Features required: features is empty")
        if features is None and request.entity_id is None:
            raise HTTPException(
                400, "Features required: send features (name -> value) or an entity_id"
            )
        if features is None and request.feature_set is not None and request.entity_id is not None:
            features = await state.online_features(request.feature_set, request.entity_id)
        elif features is None:
            features = {"entity_id": request.entity_id}
        return await state.predict(
            endpoint=endpoint,
            model_name=request.model_name or settings.serve_default_model,
            version=request.model_version,
            features=features,
            entity_key=_entity_key(features, request.entity_id),
            horizon=request.horizon,
            confidence_interval=request.confidence_interval,
        )

    @app.post(
        "/api/v1/ml/predict",
        response_model=PredictResponse,
        openapi_extra=_body_doc(PredictRequest),
        tags=["predictions"],
    )
    async def predict(http: Request) -> Response:
        """Predict with the model the deployment routes to (the guide's endpoint)."""
        return _json(await _one(await _parse(http, PredictRequest), "predict"))

    @app.post(
        "/api/v1/ml/predict/batch",
        response_model=BatchResponse,
        openapi_extra=_body_doc(ForecastRequest),
        tags=["predictions"],
    )
    async def predict_batch(batch: BatchRequest) -> Response:
        """Up to 1000 prediction requests; each gets a result or its own error."""
        items: list[dict[str, Any]] = []
        for item in batch.requests:
            try:
                items.append({"status": 200, "result": await _one(item, "predict_batch")})
            except HTTPException as exc:
                items.append({"status": exc.status_code, "error": str(exc.detail)})
            except RetailMLError as exc:
                items.append({"status": _status_of(exc), "error": str(exc)})
        return _json({"predictions": items})

    @app.post(
        "/api/v1/ml/forecast",
        response_model=PredictResponse,
        openapi_extra=_body_doc(SegmentRequest),
        tags=["predictions"],
    )
    async def forecast(http: Request) -> Response:
        """A sales forecast of one series (``series_id``) and ``horizon``."""
        request = await _parse(http, ForecastRequest)
        features = {"series_id": request.series_id} if request.series_id is not None else {}
        body = await state.predict(
            endpoint="forecast",
            model_name=request.model_name or settings.serve_default_model,
            version=request.model_version,
            features=features,
            entity_key=None if request.series_id is None else str(request.series_id),
            horizon=request.horizon,
            confidence_interval=request.confidence_interval,
        )
        return _json(body)

    @app.post(
        "/api/v1/ml/segment",
        response_model=PredictResponse,
        openapi_extra=_body_doc(RowsRequest),
        tags=["predictions"],
    )
    async def segment(http: Request) -> Response:
        """A customer's segment: inline ``features`` or the online store by ``customer_id``."""
        request = await _parse(http, SegmentRequest)
        features: Any = request.features
        if features is not None and not features:
            raise HTTPException(400, "Features required: features is empty")
        if features is None:
            if request.customer_id is None:
                raise HTTPException(400, "Features required: send features or a customer_id")
            features = await state.online_features(request.feature_set, request.customer_id)
        key = None if request.customer_id is None else str(request.customer_id)
        body = await state.predict(
            endpoint="segment",
            model_name=request.model_name,
            version=request.model_version,
            features=features,
            entity_key=key,
            horizon=None,
            confidence_interval=None,
        )
        return _json(body)

    async def _rows(request: RowsRequest, endpoint: str, default_model: str) -> Response:
        features: Any = request.features if request.features is not None else request.transactions
        if not features:
            raise HTTPException(400, "Features required: send feature rows in features")
        body = await state.predict(
            endpoint=endpoint,
            model_name=request.model_name or default_model,
            version=request.model_version,
            features=features,
            entity_key=None if request.entity_id is None else str(request.entity_id),
            horizon=None,
            confidence_interval=None,
        )
        return _json(body)

    @app.post(
        "/api/v1/ml/anomaly",
        response_model=PredictResponse,
        openapi_extra=_body_doc(RowsRequest),
        tags=["predictions"],
    )
    async def anomaly(http: Request) -> Response:
        """Anomaly scores (and flags in ``details.is_anomaly``) of transaction rows."""
        return await _rows(await _parse(http, RowsRequest), "anomaly", "anomaly_detection")

    @app.post(
        "/api/v1/ml/demand",
        response_model=PredictResponse,
        dependencies=[api_key],
        tags=["predictions"],
    )
    async def demand(http: Request) -> Response:
        """Demand predictions of feature rows."""
        return await _rows(await _parse(http, RowsRequest), "demand", "demand_prediction")

    # --- admin ------------------------------------------------------------------------------

    @app.get("/api/v1/admin/deployments", dependencies=[admin], tags=["admin"])
    async def deployments() -> Response:
        """Deployments of every environment, running rollouts and this worker's routing table."""

        def read() -> dict[str, Any]:
            from sqlalchemy import select

            from retailml.core.db_deploy import Deployment, Rollout

            with state.db.session() as session:
                rows = list(session.scalars(select(Deployment).order_by(Deployment.created_at)))
                rollouts = list(session.scalars(select(Rollout).where(Rollout.state == "running")))
                return {
                    "deployments": [
                        {
                            "id": d.id,
                            "model_name": d.model_name,
                            "environment": d.environment,
                            "version": d.version,
                            "status": d.status,
                            "created_at": d.created_at,
                            "reason": d.reason,
                        }
                        for d in rows
                    ],
                    "rollouts": [
                        {
                            "id": r.id,
                            "model_name": r.model_name,
                            "environment": r.environment,
                            "strategy": r.strategy,
                            "current_version": r.current_version,
                            "new_version": r.new_version,
                            "traffic_split": r.traffic_split,
                        }
                        for r in rollouts
                    ],
                    "routing": state._router().table.to_dict(),
                }

        return _json(await asyncio.to_thread(read))

    @app.get("/api/v1/admin/ab-tests", dependencies=[admin], tags=["admin"])
    async def ab_tests() -> Response:
        """Every A/B test."""

        def read() -> list[dict[str, Any]]:
            from retailml.deployment.ab_testing import ABTestManager

            manager = ABTestManager(settings, db=state.db)
            return [test.to_dict() for test in manager.list_tests()]

        return _json({"ab_tests": await asyncio.to_thread(read)})

    @app.post("/api/v1/admin/deploy", dependencies=[admin], tags=["admin"])
    async def deploy(request: DeployRequest) -> Response:
        """Deploy a version; production needs an approved governance request (else 409)."""
        from retailml.deployment.model_server import ModelServer

        env = request.environment or state.environment
        actor = _admin_actor(request.actor)

        def run() -> dict[str, Any]:
            with ModelServer(env, settings) as server:
                if request.strategy == "direct":
                    config: dict[str, Any] = {
                        "model_name": request.model_name,
                        "model_version": request.model_version,
                    }
                    if request.replicas is not None:
                        config["replicas"] = request.replicas
                    return {"deployment": server.deploy_model_sync(config, actor=actor).to_dict()}
                active = server.active_deployment(request.model_name)
                if active is None:
                    raise StateError(
                        problem(
                            f"a version serving {env} to roll out from",
                            "none",
                            "deploy the first version with strategy 'direct'",
                            subject=f"model {request.model_name!r}",
                        )
                    )
                rollout = server.blue_green_deploy_sync(
                    request.model_name,
                    request.model_version,
                    active.version,
                    request.traffic_split,
                    request.rollback_threshold,
                    strategy="canary" if request.strategy == "canary" else "blue_green",
                    actor=actor,
                )
                return {"rollout": rollout.to_dict()}

        result = await asyncio.to_thread(run)
        await asyncio.to_thread(state.refresh_sync)
        return _json(result)

    @app.post("/api/v1/admin/promote", dependencies=[admin], tags=["admin"])
    async def promote(request: PromoteRequest) -> Response:
        """Promote a version into production without waiting for its canary to be decided.

        Needs an approved governance request for production (else 409).
        """
        from retailml.deployment.model_server import ModelServer

        with ModelServer("production", settings) as server:
            outcome = await server.promote(
                request.model_name,
                request.model_version,
                wait=False,
                actor=_admin_actor(request.actor),
            )
        await asyncio.to_thread(state.refresh_sync)
        key = "rollout" if hasattr(outcome, "state") else "deployment"
        return _json({key: outcome.to_dict()})

    @app.post("/api/v1/admin/rollback", dependencies=[admin], tags=["admin"])
    async def rollback(request: RollbackRequest) -> Response:
        """Roll a model back with the deployment layer's ``ModelServer.rollback``."""
        env = request.environment or state.environment
        server = _model_server(settings, env)
        method = getattr(server, "rollback", None) if server is not None else None
        if not callable(method):
            return _json(
                {
                    "detail": "rollback is not available: retailml.deployment.model_server has no "
                    "ModelServer.rollback in this build; roll back with the registry alias or "
                    "the deployments table meanwhile"
                },
                501,
            )
        kwargs: dict[str, Any] = {"reason": request.reason}
        with contextlib.suppress(TypeError, ValueError):
            if "actor" in inspect.signature(method).parameters:
                kwargs["actor"] = "serving-admin-api"
        try:
            result = await asyncio.to_thread(method, request.model_name, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        finally:
            _close(server)
        await asyncio.to_thread(state.refresh_sync)
        out = result.to_dict() if hasattr(result, "to_dict") else result
        if dataclasses.is_dataclass(out) and not isinstance(out, type):
            out = dataclasses.asdict(out)
        return _json({"status": "rolled_back", "result": _plainish(out)})

    @app.post("/api/v1/admin/routing/refresh", dependencies=[admin], tags=["admin"])
    async def refresh() -> Response:
        """Reload deployments, rollouts and A/B tests now (new versions load first)."""
        table = await asyncio.to_thread(state.refresh_sync)
        return _json(table.to_dict())

    return app


def _plainish(value: Any) -> Any:
    """Something orjson can write."""
    try:
        orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
        return value
    except TypeError:
        return repr(value)
