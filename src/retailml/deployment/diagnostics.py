"""Diagnostics of a running prediction service: the guide's ``src.ml.deployment.diagnostics``.

::

    from retailml.deployment.diagnostics import ServingDiagnostic

    diagnostic = ServingDiagnostic("http://127.0.0.1:8000")
    health = await diagnostic.check_endpoint_health()        # /health, /ready, loaded models
    latency = await diagnostic.analyze_latency(time_window="1h", percentiles=[50, 95, 99])
    resources = await diagnostic.check_resource_usage()      # the server process's CPU, memory
    report = await diagnostic.test_predictions(test_cases="standard_test_suite")

``endpoint`` is the base URL of ``retailml serve`` (:mod:`retailml.serving.app`).
Everything is asked of the service over HTTP (``httpx``), except what only
the machine knows:

* **Latency** comes from up to three sources, each result saying which:
  ``prediction_log`` (the platform database's log of served predictions,
  exact per request, cut to ``time_window``; read when these settings name
  the service's database), ``server_histogram`` (the service's Prometheus
  ``retailml_prediction_latency_seconds`` histogram; cumulative since the
  process started, so the window cannot be applied; percentiles interpolated
  within buckets as PromQL's ``histogram_quantile`` does) and ``probe``
  (round trips this diagnostic measures now: ``/health`` and one valid
  prediction per loaded model). The headline percentiles are the first
  source that has data, in that order.
* **Resources** are the server process's (and its worker children's) CPU,
  memory and threads, read with :mod:`psutil` when the endpoint is on this
  machine (the process listening on the port), else the standard
  ``process_*`` Prometheus metrics when the service exposes them.
* **The standard test suite** sends, for each loaded model, its recorded
  input example (from the registry: a valid forecast or prediction, checked
  for status 200, the response schema and finite values) and an invalid
  request (expected 422), and once: a request without features (400), an
  unknown model (404), no API key (401) and malformed JSON (422). Custom
  cases are dicts ``{"name", "path", "json" | "content", "expected_status",
  "headers"?}``.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import socket
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, Literal

import httpx
import numpy as np

from retailml.core.errors import ConfigError, problem
from retailml.core.settings import Settings, get_settings

__all__ = [
    "EndpointHealth",
    "LatencyAnalysis",
    "PredictionCase",
    "PredictionTestReport",
    "ResourceUsage",
    "ServingDiagnostic",
]

STANDARD_SUITE: Final = "standard_test_suite"
_LATENCY_METRIC: Final = "retailml_prediction_latency_seconds"
_RESPONSE_KEYS: Final = ("request_id", "model_name", "model_version", "prediction")
_PROBES: Final = 20
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Status = Literal["healthy", "degraded", "unreachable"]


def _duration(text: str) -> timedelta:
    match = _DURATION.match(str(text))
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(
            problem(
                "a duration such as '30m', '1h', '7d'",
                repr(text),
                "pass e.g. time_window='1h'",
                subject="time_window",
            )
        )
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def _finite(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, int | float):
        return math.isfinite(float(value))
    return value is not None


# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointHealth:
    """Liveness, readiness and the models the service holds in memory.

    Attributes:
        endpoint: The base URL.
        status: ``healthy`` (live, ready, models loaded), ``degraded`` or ``unreachable``.
        live: ``/health`` answered 200.
        ready: ``/ready`` answered 200.
        models: ``{"model_name", "version"}`` of every loaded model.
        environment: The environment the service serves.
        routing_age_s: Seconds since the routing table was reloaded.
        health_latency_ms: Round trip of ``/health``.
        issues: What is wrong, one line each.
        service_version: retailml version of the service.
    """

    endpoint: str
    status: Status
    live: bool
    ready: bool
    models: list[dict[str, str]]
    environment: str | None
    routing_age_s: float | None
    health_latency_ms: float | None
    issues: list[str]
    service_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return asdict(self)


@dataclass(frozen=True)
class LatencyAnalysis:
    """Latency percentiles (milliseconds) and where they come from.

    Attributes:
        time_window: The window asked for.
        source: The source of ``percentiles``: ``prediction_log``,
            ``server_histogram`` or ``probe`` (module docstring).
        percentiles: ``"p50" -> ms`` of that source, over every model.
        sources: Every source that had data: its percentiles, count and notes.
        per_model: ``"name:version" -> {"p50": ms, ...}`` of that source.
        slow: Percentile keys above the limit.
        limit_ms: The 95th-percentile limit of :class:`ServingDiagnostic`.
    """

    time_window: str
    source: str | None
    percentiles: dict[str, float]
    sources: dict[str, dict[str, Any]]
    per_model: dict[str, dict[str, float]]
    slow: list[str]
    limit_ms: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return asdict(self)


@dataclass(frozen=True)
class ResourceUsage:
    """CPU, memory and threads of the server process (and its worker children).

    Attributes:
        source: ``psutil`` (local process), ``metrics`` (``process_*``
            Prometheus metrics) or ``unavailable``.
        pid: The server process, when local.
        cpu_percent: CPU use over the sampling interval (100 = one core).
        memory_rss_mb: Resident memory.
        memory_percent: Of the machine's memory.
        threads: Threads.
        processes: The process and its children counted.
        uptime_s: Seconds since the process started.
        issues: What is high, one line each.
        detail: How it was measured, or why it could not be.
    """

    source: str
    pid: int | None
    cpu_percent: float | None
    memory_rss_mb: float | None
    memory_percent: float | None
    threads: int | None
    processes: int | None
    uptime_s: float | None
    issues: list[str]
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return asdict(self)


@dataclass(frozen=True)
class PredictionCase:
    """One request of a test suite and its verdict."""

    name: str
    model: str | None
    path: str
    expected_status: int | tuple[int, ...]
    status_code: int | None
    passed: bool
    reason: str
    latency_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return asdict(self)


@dataclass(frozen=True)
class PredictionTestReport:
    """The verdict of every case; ``passed`` when all passed."""

    test_cases: str
    passed: bool
    n_passed: int
    n_failed: int
    cases: list[PredictionCase] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "test_cases": self.test_cases,
            "passed": self.passed,
            "n_passed": self.n_passed,
            "n_failed": self.n_failed,
            "cases": [case.to_dict() for case in self.cases],
        }

    @property
    def failures(self) -> list[PredictionCase]:
        """The cases that failed."""
        return [case for case in self.cases if not case.passed]


# --- the diagnostic -------------------------------------------------------------------------


class ServingDiagnostic:
    """Diagnose a running prediction service (see the module docstring).

    Args:
        endpoint: Base URL of ``retailml serve``, e.g. ``http://127.0.0.1:8000``.
        api_key: Key for the prediction endpoints; default the first of
            ``RETAILML_API_KEYS``.
        settings: retailml settings: the registry (input examples) and the
            prediction log (default: the process settings).
        timeout_s: Per-request timeout.
        latency_p95_ms: The 95th-percentile latency above which serving is slow.
        probes: Round trips measured per probe target.

    Raises:
        ConfigError: for an endpoint that is not an http(s) URL.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        api_key: str | None = None,
        settings: Settings | None = None,
        timeout_s: float = 10.0,
        latency_p95_ms: float = 500.0,
        probes: int = _PROBES,
    ) -> None:
        parsed = urllib.parse.urlparse(str(endpoint))
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ConfigError(
                problem(
                    "the base URL of a running `retailml serve`",
                    repr(endpoint),
                    "pass e.g. ServingDiagnostic('http://127.0.0.1:8000')",
                    subject="endpoint",
                )
            )
        self.endpoint = str(endpoint).rstrip("/")
        self.settings = settings or get_settings()
        keys = [k.get_secret_value() for k in self.settings.api_keys if k.get_secret_value()]
        self.api_key = api_key if api_key is not None else (keys[0] if keys else None)
        self.timeout_s = float(timeout_s)
        self.latency_p95_ms = float(latency_p95_ms)
        self.probes = int(probes)
        self._host = parsed.hostname
        self._port = parsed.port or (443 if parsed.scheme == "https" else 80)

    def __repr__(self) -> str:
        return f"ServingDiagnostic({self.endpoint!r})"

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.endpoint, timeout=self.timeout_s)

    @property
    def _auth(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key} if self.api_key else {}

    # --- health -------------------------------------------------------------------------------

    async def check_endpoint_health(self) -> EndpointHealth:
        """Ask ``/health`` and ``/ready``: is the service live, ready, and with which models?"""
        issues: list[str] = []
        async with self._client() as client:
            try:
                started = time.perf_counter()
                live_response = await client.get("/health")
                latency = (time.perf_counter() - started) * 1000
                ready_response = await client.get("/ready")
            except httpx.HTTPError as exc:
                return EndpointHealth(
                    self.endpoint,
                    "unreachable",
                    False,
                    False,
                    [],
                    None,
                    None,
                    None,
                    [f"no answer from {self.endpoint}: {type(exc).__name__}: {exc}"],
                )
        live = live_response.status_code == 200
        if not live:
            issues.append(f"/health answered {live_response.status_code}")
        body = _json(ready_response)
        ready = ready_response.status_code == 200
        if not ready:
            issues.append(
                f"/ready answered {ready_response.status_code} (status {body.get('status')!r})"
            )
        models = []
        for text in body.get("models") or []:
            name, _, version = str(text).rpartition(":")
            models.append({"model_name": name, "version": version})
        if ready and not models:
            issues.append("ready, but no model is loaded (deploy one or set an alias)")
        if body.get("last_refresh_error"):
            issues.append(f"last routing refresh failed: {body['last_refresh_error']}")
        status: Status = "healthy" if live and ready and not issues else "degraded"
        return EndpointHealth(
            endpoint=self.endpoint,
            status=status,
            live=live,
            ready=ready,
            models=models,
            environment=body.get("environment"),
            routing_age_s=body.get("routing_age_s"),
            health_latency_ms=latency,
            issues=issues,
            service_version=_json(live_response).get("version"),
        )

    # --- latency ------------------------------------------------------------------------------

    async def analyze_latency(
        self, time_window: str = "1h", percentiles: Sequence[float] = (50, 95, 99)
    ) -> LatencyAnalysis:
        """Latency percentiles from the prediction log, the server's histogram and probes.

        Raises:
            ConfigError: for a bad window or a percentile outside (0, 100].
        """
        window = _duration(time_window)
        wanted = [float(p) for p in percentiles]
        if not wanted or any(not 0 < p <= 100 for p in wanted):
            raise ConfigError(
                problem(
                    "percentiles in (0, 100]",
                    repr(list(percentiles)),
                    "pass e.g. percentiles=[50, 95, 99]",
                    subject="analyze_latency",
                )
            )
        keys = [f"p{p:g}" for p in wanted]
        health = await self.check_endpoint_health()
        models = [(m["model_name"], m["version"]) for m in health.models]
        sources: dict[str, dict[str, Any]] = {}
        per_model: dict[str, dict[str, dict[str, float]]] = {}

        logged = await asyncio.to_thread(self._logged_latencies, models, window)
        if logged:
            values = np.concatenate(list(logged.values()))
            sources["prediction_log"] = {
                "percentiles": _percentiles(values, wanted, keys),
                "n": int(values.size),
                "note": f"served predictions of the last {time_window}, from the platform "
                "database's prediction log",
            }
            per_model["prediction_log"] = {
                name: _percentiles(v, wanted, keys) for name, v in logged.items()
            }
        async with self._client() as client:
            text = await _text(client, "/metrics")
            histogram = _histograms(text or "", _LATENCY_METRIC)
            if histogram:
                merged = _merge(list(histogram.values()))
                sources["server_histogram"] = {
                    "percentiles": {
                        k: _bucket_quantile(merged, p / 100) * 1000
                        for k, p in zip(keys, wanted, strict=True)
                    },
                    "n": int(merged[-1][1]) if merged else 0,
                    "note": "the service's Prometheus histogram, cumulative since the process "
                    "started (the window cannot be applied); interpolated within buckets",
                }
                per_model["server_histogram"] = {
                    name: {
                        k: _bucket_quantile(buckets, p / 100) * 1000
                        for k, p in zip(keys, wanted, strict=True)
                    }
                    for name, buckets in histogram.items()
                }
            probes = await self._probe(client, models)
        if probes:
            values = np.concatenate(list(probes.values()))
            sources["probe"] = {
                "percentiles": _percentiles(values, wanted, keys),
                "n": int(values.size),
                "note": f"round trips measured now from this machine ({self.probes} per target: "
                "/health and one valid prediction per loaded model)",
            }
            per_model["probe"] = {name: _percentiles(v, wanted, keys) for name, v in probes.items()}
        order = ("prediction_log", "server_histogram", "probe")
        source = next((s for s in order if s in sources), None)
        chosen = sources[source]["percentiles"] if source else {}
        slow = [
            key
            for key, p in zip(keys, wanted, strict=True)
            if p >= 95 and chosen.get(key, 0.0) > self.latency_p95_ms
        ]
        return LatencyAnalysis(
            time_window=str(time_window),
            source=source,
            percentiles=chosen,
            sources=sources,
            per_model=per_model.get(source, {}) if source else {},
            slow=slow,
            limit_ms=self.latency_p95_ms,
        )

    def _logged_latencies(
        self, models: list[tuple[str, str]], window: timedelta
    ) -> dict[str, np.ndarray]:
        from sqlalchemy import select

        from retailml.core.db import PlatformDB, utcnow
        from retailml.core.db_deploy import PredictionLogEntry as Entry

        url = self.settings.resolved_database_url
        if url.startswith("sqlite") and not Path(url.split("///", 1)[-1]).is_file():
            return {}  # no database here: do not create an empty one
        try:
            db = PlatformDB.from_settings(self.settings, migrate=False)
        except ConfigError:
            return {}
        try:
            with db.session() as session:
                rows = session.execute(
                    select(Entry.model_name, Entry.model_version, Entry.latency_ms).where(
                        Entry.created_at >= utcnow() - window, Entry.status_code < 400
                    )
                ).all()
        except Exception:  # another service's database, or none: not this source's data
            return {}
        finally:
            db.dispose()
        served = set(models)
        found: dict[str, list[float]] = {}
        for name, version, latency in rows:
            if not served or (name, version) in served:
                found.setdefault(f"{name}:{version}", []).append(float(latency))
        return {name: np.asarray(values) for name, values in found.items()}

    async def _probe(
        self, client: httpx.AsyncClient, models: list[tuple[str, str]]
    ) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        targets: list[tuple[str, str, dict[str, Any] | None]] = [("health", "/health", None)]
        for name, version in models:
            request = await asyncio.to_thread(self._valid_request, name, version)
            if request is not None:
                targets.append((f"{name}:{version}", request[0], request[1]))
        for label, path, body in targets:
            times = []
            for _ in range(self.probes):
                started = time.perf_counter()
                try:
                    if body is None:
                        response = await client.get(path)
                    else:
                        response = await client.post(path, json=body, headers=self._auth)
                except httpx.HTTPError:
                    continue
                if response.status_code < 400:
                    times.append((time.perf_counter() - started) * 1000)
            if times:
                found[label] = np.asarray(times)
        return found

    # --- resources ----------------------------------------------------------------------------

    async def check_resource_usage(self, interval_s: float = 0.5) -> ResourceUsage:
        """CPU, memory and threads of the server process (module docstring)."""
        local = await asyncio.to_thread(self._local_usage, interval_s)
        if local is not None:
            return local
        async with self._client() as client:
            text = await _text(client, "/metrics")
        values = _samples(text or "")
        rss = values.get("process_resident_memory_bytes")
        if rss is None:
            return ResourceUsage(
                "unavailable",
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                [],
                f"{self._host} is not this machine and the service exposes no process_* "
                "metrics: read the container's metrics (kubectl top pod) instead",
            )
        cpu_seconds = values.get("process_cpu_seconds_total")
        start = values.get("process_start_time_seconds")
        uptime = time.time() - start if start else None
        cpu = 100 * cpu_seconds / uptime if cpu_seconds is not None and uptime else None
        return ResourceUsage(
            "metrics",
            None,
            cpu,
            rss / 2**20,
            None,
            None,
            1,
            uptime,
            [],
            "process_* Prometheus metrics (CPU is the average since the process started)",
        )

    def _local_usage(self, interval_s: float) -> ResourceUsage | None:
        import psutil

        if not _is_local(self._host):
            return None
        pid = _listening_pid(self._port)
        if pid is None:
            return None
        process = psutil.Process(pid)
        family = [process, *process.children(recursive=True)]
        for member in family:
            member.cpu_percent(None)
        time.sleep(interval_s)
        cpu = 0.0
        rss = 0
        threads = 0
        memory = 0.0
        for member in family:
            try:
                cpu += member.cpu_percent(None)
                rss += member.memory_info().rss
                memory += member.memory_percent()
                threads += member.num_threads()
            except psutil.NoSuchProcess:
                continue
        issues = []
        cores = psutil.cpu_count() or 1
        if cpu > 90 * cores:
            issues.append(f"CPU at {cpu:.0f} % of {cores} cores: add workers or replicas")
        if memory > 80:
            issues.append(f"memory at {memory:.0f} % of the machine")
        return ResourceUsage(
            source="psutil",
            pid=pid,
            cpu_percent=cpu,
            memory_rss_mb=rss / 2**20,
            memory_percent=memory,
            threads=threads,
            processes=len(family),
            uptime_s=time.time() - process.create_time(),
            issues=issues,
            detail=f"process {pid} listening on port {self._port} and its {len(family) - 1} "
            f"children, CPU sampled over {interval_s:g} s"
            + (" (the diagnostic runs in the same process)" if pid == os.getpid() else ""),
        )

    # --- prediction tests ---------------------------------------------------------------------

    async def test_predictions(
        self, test_cases: str | Sequence[Mapping[str, Any]] = STANDARD_SUITE
    ) -> PredictionTestReport:
        """Run the standard test suite (module docstring) or custom cases; pass/fail per case.

        Raises:
            ConfigError: for an unknown suite name or a malformed custom case.
        """
        if isinstance(test_cases, str):
            if test_cases != STANDARD_SUITE:
                raise ConfigError(
                    problem(
                        f"test_cases={STANDARD_SUITE!r} or a list of case dicts",
                        repr(test_cases),
                        "pass the standard suite's name or your own cases",
                        subject="test_predictions",
                    )
                )
            cases = await self._standard_cases()
            label = STANDARD_SUITE
        else:
            cases = [_custom_case(case) for case in test_cases]
            label = "custom"
        results: list[PredictionCase] = []
        async with self._client() as client:
            for case in cases:
                results.append(await self._run_case(client, case))
        failed = sum(not r.passed for r in results)
        return PredictionTestReport(label, failed == 0, len(results) - failed, failed, results)

    async def _standard_cases(self) -> list[dict[str, Any]]:
        health = await self.check_endpoint_health()
        cases: list[dict[str, Any]] = []
        for model in health.models:
            name, version = model["model_name"], model["version"]
            request = await asyncio.to_thread(self._valid_request, name, version)
            if request is None:
                cases.append(
                    {
                        "name": f"{name}:{version} input example",
                        "model": name,
                        "missing": "no input example recorded for this version in the registry "
                        "these settings name",
                    }
                )
                continue
            path, body, rows = request
            cases.append(
                {
                    "name": f"{name}:{version} input example",
                    "model": name,
                    "path": path,
                    "json": body,
                    "expected_status": 200,
                    "rows": rows,
                }
            )
            if path.endswith("/forecast"):
                invalid = {**body, "horizon": 0}
                what = "horizon 0"
            else:
                invalid = {
                    "model_name": name,
                    "model_version": version,
                    "features": {"retailml_not_a_feature": "x"},
                }
                what = "unknown feature"
            cases.append(
                {
                    "name": f"{name}:{version} invalid ({what})",
                    "model": name,
                    "path": path,
                    "json": invalid,
                    "expected_status": 422,
                }
            )
        first = health.models[0]["model_name"] if health.models else "retailml_model"
        predict = "/api/v1/ml/predict"
        cases += [
            {
                "name": "no features",
                "model": first,
                "path": predict,
                "json": {"model_name": first},
                "expected_status": 400,
            },
            {
                "name": "unknown model",
                "model": None,
                "path": predict,
                "json": {"model_name": "retailml_no_such_model", "features": {"x": 1}},
                "expected_status": 404,
            },
            {
                "name": "malformed JSON",
                "model": None,
                "path": predict,
                "content": b'{"features": ',
                "expected_status": 422,
            },
        ]
        if self.api_key:
            cases.append(
                {
                    "name": "no API key",
                    "model": first,
                    "path": predict,
                    "json": {"model_name": first, "features": {"x": 1}},
                    "expected_status": 401,
                    "headers": {},
                }
            )
        return cases

    def _valid_request(self, name: str, version: str) -> tuple[str, dict[str, Any], int] | None:
        """``(path, body, rows)`` of the version's recorded input example, or None."""
        example = _input_example(name, version, self.settings)
        if example is None or example.empty:
            return None
        if "horizon" in example.columns:
            horizon = int(example["horizon"].iloc[0])
            body: dict[str, Any] = {"model_name": name, "model_version": version}
            body["horizon"] = horizon
            if "series_id" in example.columns:
                body["series_id"] = _plain(example["series_id"].iloc[0])
            return "/api/v1/ml/forecast", body, horizon
        rows = [{str(k): _plain(v) for k, v in row.items()} for row in example.to_dict("records")]
        body = {"model_name": name, "model_version": version, "features": rows}
        return "/api/v1/ml/predict", body, len(rows)

    async def _run_case(self, client: httpx.AsyncClient, case: Mapping[str, Any]) -> PredictionCase:
        expected = case.get("expected_status", 200)
        allowed = tuple(expected) if isinstance(expected, list | tuple) else (int(expected),)
        name = str(case["name"])
        if "missing" in case:
            return PredictionCase(
                name, case.get("model"), "", expected, None, False, str(case["missing"])
            )
        headers = dict(case["headers"]) if "headers" in case else dict(self._auth)
        started = time.perf_counter()
        try:
            if "content" in case:
                headers["Content-Type"] = "application/json"
                response = await client.post(case["path"], content=case["content"], headers=headers)
            else:
                response = await client.post(case["path"], json=case.get("json"), headers=headers)
        except httpx.HTTPError as exc:
            return PredictionCase(
                name, case.get("model"), case["path"], expected, None, False, f"no answer: {exc}"
            )
        latency = (time.perf_counter() - started) * 1000
        status = response.status_code
        if status not in allowed:
            detail = _json(response).get("detail") or response.text[:200]
            reason = f"expected {expected}, got {status}: {str(detail)[:300]}"
            return PredictionCase(
                name, case.get("model"), case["path"], expected, status, False, reason, latency
            )
        reason = f"status {status} as expected"
        if status == 200:
            problem_text = _check_prediction(_json(response), case.get("rows"))
            if problem_text:
                return PredictionCase(
                    name,
                    case.get("model"),
                    case["path"],
                    expected,
                    status,
                    False,
                    problem_text,
                    latency,
                )
            reason += "; response schema and values checked"
        return PredictionCase(
            name, case.get("model"), case["path"], expected, status, True, reason, latency
        )


# --- helpers --------------------------------------------------------------------------------


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


async def _text(client: httpx.AsyncClient, path: str) -> str | None:
    try:
        response = await client.get(path)
    except httpx.HTTPError:
        return None
    return response.text if response.status_code == 200 else None


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _check_prediction(body: Mapping[str, Any], rows: int | None) -> str | None:
    """What is wrong with a 200 prediction response, or None."""
    missing = [key for key in _RESPONSE_KEYS if key not in body]
    if missing:
        return f"response lacks {missing}"
    prediction = body["prediction"]
    if not isinstance(prediction, list) or not prediction:
        return f"prediction is not a non-empty list: {prediction!r}"[:300]
    if rows is not None and len(prediction) != rows:
        return f"expected {rows} predictions, got {len(prediction)}"
    bad = [value for value in prediction if not _finite(value)]
    if bad:
        return f"{len(bad)} prediction(s) not finite, e.g. {bad[0]!r}"
    lower, upper = body.get("confidence_lower"), body.get("confidence_upper")
    if lower is not None and upper is not None:
        if len(lower) != len(prediction) or len(upper) != len(prediction):
            return "interval bounds do not match the predictions in length"
        if any(
            not (_finite(lo) and _finite(hi) and lo <= hi)
            for lo, hi in zip(lower, upper, strict=True)
        ):
            return "an interval bound is not finite or lower > upper"
    return None


def _custom_case(case: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(case, Mapping) or "name" not in case or "path" not in case:
        raise ConfigError(
            problem(
                "a test case dict with 'name', 'path', 'json' (or 'content') and 'expected_status'",
                repr(case)[:200],
                "see ServingDiagnostic.test_predictions",
                subject="test_cases",
            )
        )
    return {"expected_status": 200, "model": case.get("json", {}).get("model_name"), **case}


def _input_example(name: str, version: str, settings: Settings) -> Any:
    """The registered version's recorded input example (a DataFrame), or None."""
    from mlflow.models import Model

    from retailml.core.errors import RetailMLError
    from retailml.registry.model_registry import ModelRegistry

    try:
        with ModelRegistry(settings) as registry:
            path = registry.download_model(name, version)
        model = Model.load(str(path))
        return model.load_input_example(str(path))
    except (RetailMLError, OSError, ValueError):
        return None


def _is_local(host: str) -> bool:
    if host in ("localhost", "127.0.0.1", "::1", "0.0.0.0"):
        return True
    try:
        address = socket.gethostbyname(host)
    except OSError:
        return False
    return address.startswith("127.") or address in {
        socket.gethostbyname(socket.gethostname()),
    }


def _listening_pid(port: int) -> int | None:
    import psutil

    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, PermissionError):
        return None
    for connection in connections:
        if (
            connection.status == psutil.CONN_LISTEN
            and connection.laddr
            and connection.laddr.port == port
            and connection.pid
        ):
            return int(connection.pid)
    return None


def _samples(text: str) -> dict[str, float]:
    """Unlabelled samples of an exposition (``name value``)."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and not match.group("labels"):
            try:
                found[match.group("name")] = float(match.group("value"))
            except ValueError:
                continue
    return found


def _histograms(text: str, name: str) -> dict[str, list[tuple[float, float]]]:
    """``"model:version" -> [(le, cumulative count), ...]`` of a histogram, buckets merged
    over the other labels (arm, endpoint)."""
    series: dict[str, dict[float, float]] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or match.group("name") != f"{name}_bucket":
            continue
        labels = dict(_LABEL.findall(match.group("labels") or ""))
        bound = float("inf") if labels.get("le") == "+Inf" else float(labels.get("le", "nan"))
        key = f"{labels.get('model', '?')}:{labels.get('version', '?')}"
        buckets = series.setdefault(key, {})
        buckets[bound] = buckets.get(bound, 0.0) + float(match.group("value"))
    return {
        key: sorted(buckets.items()) for key, buckets in series.items() if max(buckets.values()) > 0
    }


def _merge(histograms: list[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    total: dict[float, float] = {}
    for buckets in histograms:
        for bound, count in buckets:
            total[bound] = total.get(bound, 0.0) + count
    return sorted(total.items())


def _bucket_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """PromQL's histogram_quantile: linear interpolation within the bucket holding rank q."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # above the highest finite bucket: its bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return buckets[-1][0]


def _percentiles(values: np.ndarray, wanted: list[float], keys: list[str]) -> dict[str, float]:
    return {key: float(np.percentile(values, p)) for key, p in zip(keys, wanted, strict=True)}
