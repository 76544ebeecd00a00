"""ServingDiagnostic against a real `retailml serve` app on uvicorn, on a free local port."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import func, select

from guide import block, run
from retailml.cli import main
from retailml.core.db import PlatformDB
from retailml.core.db_deploy import PredictionLogEntry
from retailml.core.errors import ConfigError
from retailml.core.settings import Settings, get_settings
from retailml.deployment.diagnostics import (
    EndpointHealth,
    LatencyAnalysis,
    PredictionTestReport,
    ResourceUsage,
    ServingDiagnostic,
)
from retailml.serving.app import create_app
from retailml.training.model_trainer import ModelTrainer
from serving.helpers import (
    API_KEY,
    customers,
    deployed_forecast,
    register_and_deploy,
    serving_settings,
)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A forecast and a segmentation model, both deployed to production."""
    home = tmp_path_factory.mktemp("diagnostics") / "workspace"
    settings = Settings(home=home)
    deployed_forecast(settings)
    segments = ModelTrainer(
        model_type="customer_segmentation",
        n_splits=2,
        hyperparameters={"n_clusters": 3},
        settings=settings,
    ).train_sync(customers(), model_name="customer_segmentation")
    register_and_deploy(settings, "customer_segmentation", segments)
    return home


@pytest.fixture(scope="module")
def endpoint(home: Path) -> Iterator[str]:
    """The prediction service on uvicorn in a thread (this process), on a free port."""
    app = create_app(serving_settings(home))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(15)


@pytest.fixture
def diagnostic(home: Path, endpoint: str) -> ServingDiagnostic:
    return ServingDiagnostic(endpoint, settings=serving_settings(home), probes=5)


def logged(home: Path) -> int:
    db = PlatformDB.from_settings(serving_settings(home), migrate=False)
    try:
        with db.session() as session:
            return int(
                session.scalar(select(func.count()).where(PredictionLogEntry.status_code < 400))
                or 0
            )
    finally:
        db.dispose()


def test_health_names_the_loaded_models(diagnostic: ServingDiagnostic) -> None:
    health = asyncio.run(diagnostic.check_endpoint_health())
    assert isinstance(health, EndpointHealth)
    assert health.status == "healthy" and health.live and health.ready, health.issues
    assert {(m["model_name"], m["version"]) for m in health.models} == {
        ("sales_forecast", "1.0.0"),
        ("customer_segmentation", "1.0.0"),
    }
    assert health.environment == "production" and health.health_latency_ms is not None


def test_standard_suite_passes_and_a_broken_expectation_fails(
    diagnostic: ServingDiagnostic,
) -> None:
    report = asyncio.run(diagnostic.test_predictions(test_cases="standard_test_suite"))
    assert isinstance(report, PredictionTestReport)
    assert report.passed, [case.to_dict() for case in report.failures]
    names = {case.name for case in report.cases}
    assert {
        "sales_forecast:1.0.0 input example",
        "sales_forecast:1.0.0 invalid (horizon 0)",
        "customer_segmentation:1.0.0 input example",
        "customer_segmentation:1.0.0 invalid (unknown feature)",
        "no features",
        "unknown model",
        "malformed JSON",
        "no API key",
    } == names
    statuses = {case.name: case.status_code for case in report.cases}
    assert statuses["no API key"] == 401 and statuses["unknown model"] == 404
    # A case whose expectation is wrong fails, with the reason.
    custom = asyncio.run(
        diagnostic.test_predictions(
            [
                {
                    "name": "forecast expected to be refused",
                    "path": "/api/v1/ml/forecast",
                    "json": {"model_name": "sales_forecast", "series_id": "s0", "horizon": 3},
                    "expected_status": 422,
                }
            ]
        )
    )
    assert not custom.passed and custom.n_failed == 1
    assert "expected 422, got 200" in custom.cases[0].reason
    with pytest.raises(ConfigError, match="standard_test_suite"):
        asyncio.run(diagnostic.test_predictions("smoke"))


def test_latency_comes_from_the_log_the_histogram_and_probes(
    diagnostic: ServingDiagnostic, home: Path
) -> None:
    asyncio.run(diagnostic.test_predictions())
    deadline = time.monotonic() + 10
    while logged(home) == 0:  # the service writes its prediction log in batches
        assert time.monotonic() < deadline, "no prediction was logged"
        time.sleep(0.2)
    latency = asyncio.run(diagnostic.analyze_latency(time_window="1h", percentiles=[50, 95, 99]))
    assert isinstance(latency, LatencyAnalysis)
    assert latency.source == "prediction_log"
    assert set(latency.percentiles) == {"p50", "p95", "p99"}
    assert (
        0 < latency.percentiles["p50"] <= latency.percentiles["p95"] <= latency.percentiles["p99"]
    )
    assert set(latency.sources) == {"prediction_log", "server_histogram", "probe"}
    assert latency.sources["server_histogram"]["n"] >= 2
    assert latency.sources["probe"]["n"] == 3 * 5  # /health and one prediction per model
    assert "sales_forecast:1.0.0" in latency.per_model
    assert latency.slow == []
    with pytest.raises(ConfigError, match="percentiles in"):
        asyncio.run(diagnostic.analyze_latency(percentiles=[0]))


def test_resources_are_measured_on_the_serving_process(diagnostic: ServingDiagnostic) -> None:
    usage = asyncio.run(diagnostic.check_resource_usage(interval_s=0.2))
    assert isinstance(usage, ResourceUsage)
    assert usage.source == "psutil" and usage.pid == os.getpid()  # uvicorn runs in a thread here
    assert usage.memory_rss_mb is not None and usage.memory_rss_mb > 50
    assert usage.threads is not None and usage.threads > 1
    assert usage.cpu_percent is not None and usage.cpu_percent >= 0


def test_an_unreachable_endpoint_is_reported_not_raised(home: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    health = asyncio.run(
        ServingDiagnostic(
            f"http://127.0.0.1:{port}", settings=serving_settings(home)
        ).check_endpoint_health()
    )
    assert health.status == "unreachable" and "no answer" in health.issues[0]
    with pytest.raises(ConfigError, match="base URL"):
        ServingDiagnostic("127.0.0.1:8000")


def test_the_guide_serving_diagnostics_run_as_written(
    home: Path, endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RETAILML_HOME", str(home))
    monkeypatch.setenv("RETAILML_API_KEYS", API_KEY)
    get_settings.cache_clear()
    try:
        namespace: dict[str, Any] = {}
        run(block("#### 3. Model Serving Issues"), namespace)
        report = asyncio.run(namespace["diagnose_serving_issues"](endpoint))
        assert main(["diagnose", "serving", endpoint, "--json"]) == 0
        printed = json.loads(capsys.readouterr().out)
    finally:
        get_settings.cache_clear()
    assert set(report) == {"health", "latency", "resources", "predictions"}
    assert report["health"].status == "healthy"
    assert report["latency"].percentiles["p95"] > 0
    assert report["resources"].source == "psutil"
    assert report["predictions"].passed, report["predictions"].failures
    # `retailml diagnose serving` runs the same four steps.
    assert printed["health"]["status"] == "healthy" and printed["predictions"]["passed"]
    assert printed["resources"]["source"] == "psutil"
