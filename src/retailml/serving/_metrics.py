"""Prometheus metrics of the prediction service (one registry per application).

Besides its own series the registry carries the standard ``process_*``,
``python_gc_*`` and ``python_info`` series of the worker.

Several worker processes (``retailml serve --workers N``) share their
counters and histograms through prometheus_client's multiprocess mode: with
``PROMETHEUS_MULTIPROC_DIR`` set (``retailml serve`` sets it to a fresh
directory when it starts more than one worker), every worker writes its
values to files there and a scrape, whichever worker answers it, adds up
every worker's, those that have exited included. The routing-table age is
the oldest among live workers; ``process_*`` and ``python_info`` are those
of the worker that answered (prometheus_client has no multiprocess ``python_gc_*``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from retailml.monitoring import GaugeSample

logger = logging.getLogger(__name__)

#: The environment variable that switches prometheus_client to multiprocess mode.
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Latency buckets in seconds: the service targets milliseconds.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


def multiprocess_dir() -> str | None:
    """The directory this process's metric values are kept in, in multiprocess mode; else None.

    prometheus_client fixes the mode when it is first imported, by whether
    ``PROMETHEUS_MULTIPROC_DIR`` is set then; the variable appearing later
    (importing ``feast.metrics`` sets it) does not switch it, so the mode is
    read from the value class in use, not from the environment alone.
    """
    if values.ValueClass is values.MutexValue:
        return None
    return os.environ.get(MULTIPROCESS_ENV) or os.environ.get(MULTIPROCESS_ENV.lower()) or None


class ServingMetrics:
    """Requests, latency and errors per model version and arm; auth failures; log drops."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        #: The directory the workers share their values through, or None (one process).
        self.multiprocess_dir = multiprocess_dir()
        self.registry = CollectorRegistry(auto_describe=True)
        # What a scrape reads: the metrics' own registry, or in multiprocess
        # mode one that adds up every worker's files.
        self.exposed = self.registry
        if self.multiprocess_dir is not None:
            self.exposed = CollectorRegistry(auto_describe=True)
            MultiProcessCollector(self.exposed, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        # The worker's own CPU, memory, open files and start time (process_*),
        # its garbage collector (python_gc_*, not in multiprocess mode) and
        # interpreter (python_info), as on prometheus_client's default registry.
        ProcessCollector(registry=self.exposed)
        PlatformCollector(registry=self.exposed)
        GCCollector(registry=self.exposed)
        labels = ("model", "version", "arm", "endpoint")
        self.requests = Counter(
            "retailml_prediction_requests",
            "Prediction requests served, by model version, arm, endpoint and status code.",
            (*labels, "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "retailml_prediction_latency_seconds",
            "Time to serve a prediction, by model version and arm.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "retailml_prediction_errors",
            "Prediction requests that failed, by model version, arm and status code.",
            (*labels, "status"),
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "retailml_auth_failures",
            "Requests refused for missing (401) or wrong (403) credentials.",
            ("kind", "status"),
            registry=self.registry,
        )
        self.log_dropped = Counter(
            "retailml_prediction_log_dropped",
            "Prediction-log entries dropped because the queue was full.",
            registry=self.registry,
        )
        self.log_written = Counter(
            "retailml_prediction_log_written",
            "Prediction-log entries written to the platform database.",
            registry=self.registry,
        )
        self.model_swaps = Counter(
            "retailml_model_swaps",
            "Model versions loaded and swapped into the routing table.",
            ("model",),
            registry=self.registry,
        )
        self.routing_age = Gauge(
            "retailml_routing_table_age_seconds",
            "Seconds since the routing table was reloaded from the database.",
            registry=self.registry,
            multiprocess_mode="livemax",
        )

    def auth_failure(self, kind: str, status: int) -> None:
        """Count a refused credential."""
        self.auth_failures.labels(kind, str(status)).inc()

    def observe(
        self,
        model: str,
        version: str,
        arm: str | None,
        endpoint: str,
        status: int,
        seconds: float,
    ) -> None:
        """Count one prediction request."""
        arm_label = arm or ""
        self.requests.labels(model, version, arm_label, endpoint, str(status)).inc()
        if status < 400:
            self.latency.labels(model, version, arm_label, endpoint).observe(seconds)
        else:
            self.errors.labels(model, version, arm_label, endpoint, str(status)).inc()

    def add_quality(self, read: Callable[[], list[GaugeSample]], ttl_s: float = 15.0) -> None:
        """Expose the monitoring gauges (latest MAPE, drift share, open alerts) too."""
        self._quality = _QualityCollector(read, ttl_s)
        self.exposed.register(self._quality)

    def refresh_quality(self) -> None:
        """Read the model-quality gauges again at the next scrape."""
        if getattr(self, "_quality", None) is not None:
            self._quality.expire()

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.exposed)

    def close(self) -> None:
        """In multiprocess mode, drop this worker's live-only gauge (it is exiting)."""
        if self.multiprocess_dir is not None:
            mark_process_dead(os.getpid(), self.multiprocess_dir)  # type: ignore[no-untyped-call]


class _QualityCollector(Collector):
    """Model-quality gauges read from the platform database, cached for ``ttl_s``."""

    def __init__(self, read: Callable[[], list[GaugeSample]], ttl_s: float) -> None:
        self._read = read
        self._ttl_s = ttl_s
        self._at = -math.inf
        self._samples: list[GaugeSample] = []

    def expire(self) -> None:
        self._at = -math.inf

    def describe(self) -> list[Metric]:
        return []  # dynamic: families depend on what is recorded

    def collect(self) -> Iterator[Metric]:
        now = time.monotonic()
        if now - self._at > self._ttl_s:
            try:
                self._samples = self._read()
            except Exception:  # a scrape must not fail because the database is away
                logger.warning("model-quality gauges unavailable", exc_info=True)
            self._at = now
        families: dict[str, GaugeMetricFamily] = {}
        for sample in self._samples:
            labels = sorted(sample.labels)
            family = families.get(sample.name)
            if family is None:
                family = GaugeMetricFamily(
                    sample.name, _QUALITY_HELP.get(sample.name, sample.name), labels=labels
                )
                families[sample.name] = family
            family.add_metric([sample.labels[k] for k in labels], sample.value)
        yield from families.values()


_QUALITY_HELP = {
    "retailml_model_performance": "Latest monitored value of a model-quality metric.",
    "retailml_model_performance_pairs": "Prediction/actual pairs behind that value.",
    "retailml_data_drift_share": "Share of features drifting in the latest drift run.",
    "retailml_data_drift_detected": "1 when the latest drift run found dataset drift.",
    "retailml_alerts_active": "Alerts not resolved, by model, severity and state.",
}
