"""MLOpsDashboard: the guide's snippet on live data, the HTML page, and the page in a browser."""

from __future__ import annotations

import json
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

import guide
from monitoring.dashboard_data import FEATURES, FORECAST, SEGMENTS, add_predictions, fill_platform
from retailml.core.db import utcnow
from retailml.core.errors import ConfigError
from retailml.core.settings import Settings
from retailml.monitoring._dashboard_routes import PLOTLY_JS, dashboard_router
from retailml.monitoring.enterprise_dashboard import MLOpsDashboard, Panel, parse_duration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def filled(settings: Settings) -> dict[str, Any]:
    return fill_platform(settings)


def traces(panel: Panel, figure: int) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = panel.figures[figure]["data"]
    return data


def test_the_guide_snippet_builds_three_panels_with_data(filled: dict[str, Any]) -> None:
    namespace: dict[str, Any] = {}
    guide.run(guide.block("### Performance Monitoring Dashboard"), namespace)
    dashboard: MLOpsDashboard = namespace["dashboard"]
    try:
        performance: Panel = namespace["performance_panel"]
        drift: Panel = namespace["drift_panel"]
        health: Panel = namespace["health_panel"]
        assert dashboard.panels == [performance, drift, health]
        json.dumps([p.to_dict() for p in dashboard.panels], allow_nan=False)

        # performance: accuracy = 1 - MAPE, latency p50/p95 and throughput per model
        assert performance.figures[0]["layout"]["title"]["text"].startswith("Accuracy")
        assert len(performance.figures) == 3
        accuracy = traces(performance, 0)
        assert [t["name"] for t in accuracy] == [f"{FORECAST} 1.2.0"]
        assert accuracy[0]["y"][-1] == pytest.approx(0.75)
        assert len(accuracy[0]["y"]) == 7
        assert {t["name"] for t in traces(performance, 1)} == {
            f"{FORECAST} 1.2.0 p50",
            f"{FORECAST} 1.2.0 p95",
            f"{SEGMENTS} 1.0.0 p50",
            f"{SEGMENTS} 1.0.0 p95",
        }
        rows = {r["model"]: r for r in performance.rows}
        assert rows[FORECAST]["accuracy"] == pytest.approx(0.75)
        assert rows[FORECAST]["mape"] == pytest.approx(0.25)
        assert rows[FORECAST]["requests"] == 240
        assert rows[SEGMENTS]["requests"] == 120
        assert rows[SEGMENTS]["accuracy"] is None  # no MAPE stored for a clustering model
        assert 0 < rows[FORECAST]["latency_p50_ms"] < rows[FORECAST]["latency_p95_ms"]
        minutes = 7 * 24 * 60
        assert rows[FORECAST]["throughput_rpm"] == pytest.approx(240 / minutes)
        assert rows[FORECAST]["status"] == "degraded"  # MAPE 25 % > 20 %
        assert performance.status == "degraded"

        # drift: the guide's features, trend drifting at 0.05
        by_feature = {r["feature"]: r for r in drift.rows}
        assert list(by_feature) == FEATURES
        assert by_feature["trend"]["drifted"] is True
        assert by_feature["seasonality"]["drifted"] is False
        assert drift.status == "degraded"
        assert traces(drift, 0)[0]["y"] == [pytest.approx(1 / 3)]
        assert sum(len(t["x"]) for t in traces(drift, 1)) == 3

        # health: every component of every model, the open alert listed
        components = {(r["component"], r["model"]): r for r in health.rows}
        assert components[("storage", "platform")]["database_reachable"] is True
        assert components[("storage", "platform")]["disk_free_bytes"] > 0
        assert components[("serving", FORECAST)]["active_deployments"] == ["production:1.2.0"]
        assert components[("monitoring", FORECAST)]["status"] == "healthy"
        assert components[("monitoring", SEGMENTS)]["status"] == "degraded"  # never evaluated
        assert [a["message"] for a in health.alerts] == ["Model MAPE increased to 25.00%"]
        assert health.alerts[0]["severity"] == "critical"
        assert health.status == "degraded"
        assert traces(health, 0)[0]["y"] == ["platform", SEGMENTS, FORECAST]
    finally:
        dashboard.close()


def test_health_statuses_use_the_given_indicator_names_and_error_rates(
    settings: Settings, filled: dict[str, Any]
) -> None:
    with MLOpsDashboard(settings) as dashboard:
        add_predictions(dashboard.db, "broken", "0.1.0", n=50, now=utcnow(), hours=0.1, seed=9,
                        error_share=0.5)  # fmt: skip
        panel = dashboard.create_health_panel(
            ["broken"], components=["serving"], status_indicators=["ok", "warn", "down"]
        )
        (row,) = panel.rows
        assert row["status"] == "down"
        assert row["error_rate"] > 0.05
        assert panel.status == "down"
        with pytest.raises(ConfigError):
            dashboard.create_health_panel(components=["gpu"])
        with pytest.raises(ConfigError):
            dashboard.create_performance_panel(metrics=["speed"])
        with pytest.raises(ConfigError):
            dashboard.create_performance_panel(time_window="a week")


def test_a_drift_panel_flags_at_its_own_threshold_and_names_unmonitored_features(
    settings: Settings, filled: dict[str, Any]
) -> None:
    with MLOpsDashboard(settings) as dashboard:
        strict = dashboard.create_drift_panel(
            [FORECAST], ["trend", "promo"], alert_threshold=1e-200
        )
        rows = {r["feature"]: r for r in strict.rows}
        assert rows["trend"]["drifted"] is False  # p ~ 1e-108 is not below 1e-200
        assert rows["promo"]["status"] == "not_monitored"
        assert any("promo" in note for note in strict.notes)
        nothing = dashboard.create_drift_panel(["unknown_model"])
        assert nothing.status == "unknown"


def test_parse_duration() -> None:
    assert parse_duration("15m").total_seconds() == 900
    assert parse_duration("7d").days == 7
    assert parse_duration("2w").days == 14


def test_render_html_is_a_full_page_loading_nothing_from_outside(
    settings: Settings, filled: dict[str, Any]
) -> None:
    with MLOpsDashboard(settings) as dashboard:
        dashboard.create_performance_panel(["all"])
        page = dashboard.render_html()
    assert page.startswith("<!DOCTYPE html>")
    assert '<script src="/dashboard/static/plotly.min.js"></script>' in page
    assert not re.search(r"""<script[^>]+src=["']?(https?:)?//""", page)
    assert not re.search(r"https?://", page)
    assert '"/dashboard/data.json"' in page
    assert FORECAST in page


def test_the_routes_serve_the_page_fresh_data_and_local_plotly(
    settings: Settings, filled: dict[str, Any]
) -> None:
    app = FastAPI()
    app.include_router(dashboard_router(settings))
    with TestClient(app) as client:
        page = client.get("/dashboard")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        first = client.get("/dashboard/data.json").json()
        assert [p["kind"] for p in first["panels"]] == ["performance", "drift", "health"]
        with MLOpsDashboard(settings) as dashboard:
            add_predictions(dashboard.db, "new_model", "1.0.0", n=5, now=utcnow(), seed=5)
        second = client.get("/dashboard/data.json").json()
        models = {r["model"] for r in second["panels"][0]["rows"]}
        assert "new_model" in models  # refreshed from live data
        script = client.get("/dashboard/static/plotly.min.js")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")
        assert len(script.content) == PLOTLY_JS.stat().st_size > 1_000_000


@pytest.fixture
def server(settings: Settings, filled: dict[str, Any]) -> Iterator[str]:
    """The dashboard on uvicorn in a thread, on a free port of 127.0.0.1."""
    app = FastAPI()
    app.include_router(dashboard_router(settings, refresh_s=1.0))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(10)


#: Every chart drew an SVG with at least one trace holding data points.
CHARTS_DRAWN = """(expected) => {
  const charts = Array.from(document.querySelectorAll('.chart'));
  return charts.length === expected && charts.every((c) =>
    c.querySelector('svg.main-svg') !== null &&
    Array.isArray(c.data) &&
    c.data.some((t) => ((t.x || t.z || t.y || []).length > 0)) &&
    c.querySelectorAll('g.trace, g.hm').length > 0);
}"""


def test_the_dashboard_renders_every_chart_in_a_real_browser_and_refreshes(
    server: str, settings: Settings, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            page = context.new_page()
            page.on(
                "console",
                lambda m: (
                    problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
                ),
            )
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(f"{server}/dashboard", wait_until="load")
            # performance (accuracy, latency, throughput) + drift (2) + health (1)
            page.wait_for_function(CHARTS_DRAWN, arg=6, timeout=20_000)
            assert page.locator("section.panel").count() == 3
            assert page.locator("#panel-1 .status").inner_text() == "degraded"
            assert "Model MAPE increased to 25.00%" in page.locator("#panel-2").inner_text()

            # live refresh: a model that starts serving appears without a reload
            with MLOpsDashboard(settings) as dashboard:
                add_predictions(dashboard.db, "live_model", "2.0.0", n=20, now=utcnow(), seed=3)
            page.wait_for_function(
                "() => Number(document.body.dataset.refreshes) >= 1 && "
                "document.querySelector('#panel-0').innerText.includes('live_model')",
                timeout=10_000,
            )
            page.wait_for_function(CHARTS_DRAWN, arg=6, timeout=10_000)
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            context.close()
    shutil.copyfile(shot, "/tmp/dashboard.png")
    assert shot.stat().st_size > 10_000
    assert problems == []
    assert all(url.startswith(server) or url.startswith("data:") for url in requests), requests
    assert time.monotonic() - started < 30


def test_the_panels_read_both_database_backends(settings: Settings, database_url: str) -> None:
    on_backend = settings.model_copy(update={"database_url": database_url})
    fill_platform(on_backend)
    with MLOpsDashboard(on_backend) as dashboard:
        assert dashboard.known_models() == [SEGMENTS, FORECAST]
        performance = dashboard.create_performance_panel(["all"], time_window="7d")
        drift = dashboard.create_drift_panel([FORECAST], FEATURES)
        health = dashboard.create_health_panel(["all"])
    rows = {r["model"]: r for r in performance.rows}
    assert rows[FORECAST]["accuracy"] == pytest.approx(0.75)
    assert rows[FORECAST]["requests"] == 240
    assert [r["drifted"] for r in drift.rows] == [False, True, False]
    serving = {r["model"]: r for r in health.rows if r["component"] == "serving"}
    assert serving[FORECAST]["active_deployments"] == ["production:1.2.0"]
    assert serving[FORECAST]["requests"] > 0
    assert len(health.alerts) == 1


def test_an_unreachable_database_makes_storage_unhealthy(settings: Settings) -> None:
    down = settings.model_copy(
        update={"database_url": "postgresql+psycopg://nobody@127.0.0.1:1/none"}
    )
    with MLOpsDashboard(down) as dashboard:
        panel = dashboard.create_health_panel(["all"])
    (storage,) = panel.rows
    assert storage["component"] == "storage" and storage["database_reachable"] is False
    assert storage["status"] == "unhealthy" and panel.status == "unhealthy"
    assert storage["disk_total_bytes"] > 0
