"""write_report: a self-contained HTML report of each model's performance, drift and alerts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from monitoring.dashboard_data import FORECAST, SEGMENTS, fill_platform
from retailml.core.errors import ConfigError
from retailml.core.settings import Settings
from retailml.monitoring._dashboard_routes import PLOTLY_JS
from retailml.monitoring.reports import write_report


@pytest.fixture
def filled(settings: Settings) -> dict[str, Any]:
    return fill_platform(settings)


def test_the_weekly_report_of_all_models_is_self_contained(
    settings: Settings, filled: dict[str, Any], tmp_path: Path
) -> None:
    output = tmp_path / "reports" / "weekly_model_performance.html"
    result = write_report("weekly", "all", output, settings)
    assert result.path == output and output.exists()
    assert result.models == (SEGMENTS, FORECAST)
    assert result.charts >= 6
    page = output.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    # plotly.js inline, exactly once; no script loaded from anywhere
    assert page.count("plotly.js v") >= 1
    assert len(page) > PLOTLY_JS.stat().st_size
    assert page.count(PLOTLY_JS.read_text(encoding="utf-8")[:200]) == 1
    assert not re.search(r"<script[^>]*\ssrc=", page)
    for name in (FORECAST, SEGMENTS):
        assert f'id="model-{name}"' in page
    assert "Model MAPE increased to 25.00%" in page  # the alert of the period
    assert "trend" in page  # the drift run's features
    assert page.count('class="plotly-graph-div"') == result.charts
    assert not list(output.parent.glob(".*.tmp"))  # written atomically


def test_a_report_of_named_models_mentions_models_without_data(
    settings: Settings, filled: dict[str, Any], tmp_path: Path
) -> None:
    output = tmp_path / "daily.html"
    result = write_report("daily", f"{FORECAST},ghost_model", output, settings)
    assert result.models == (FORECAST, "ghost_model")
    page = output.read_text(encoding="utf-8")
    assert "ghost_model" in page and "no data in the period" in page
    with pytest.raises(ConfigError):
        write_report("yearly", "all", output, settings)


def test_an_empty_platform_still_writes_a_report(settings: Settings, tmp_path: Path) -> None:
    result = write_report("monthly", "all", tmp_path / "empty.html", settings)
    assert result.models == () and result.charts == 0
    assert "No model has" in result.path.read_text(encoding="utf-8")
