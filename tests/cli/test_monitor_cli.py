"""``retailml monitor performance|drift|alerts`` and ``retailml report``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from monitoring.dashboard_data import FORECAST, SEGMENTS, fill_platform
from retailml.cli import main
from retailml.core.settings import Settings


@pytest.fixture
def filled(settings: Settings) -> dict[str, Any]:
    return fill_platform(settings)


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    assert main([*args, "--json"]) == 0, capsys.readouterr()
    return json.loads(capsys.readouterr().out)


def test_every_command_has_an_example_in_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["monitor", "performance"], ["monitor", "drift"], ["monitor", "alerts"],
                    ["report"]):  # fmt: skip
        assert main([*command, "--help"]) == 0
        assert "Example:" in capsys.readouterr().out, command


def test_monitor_performance_prints_the_history(
    filled: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    rows = run_json(capsys, "monitor", "performance", "--model", FORECAST, "--since", "7d")
    assert len(rows) == 21  # 7 windows x mape, mae, rmse
    assert {r["metric"] for r in rows} == {"mape", "mae", "rmse"}
    assert rows[-1]["model_version"] == "1.2.0"
    mape = run_json(
        capsys, "monitor", "performance", "--model", FORECAST, "--version", "1.2.0",
        "--metric", "mape", "--since", "36h",
    )  # fmt: skip
    assert [round(r["value"], 2) for r in mape] == [0.15, 0.25]
    assert main(["monitor", "performance", "--model", FORECAST]) == 0
    text = capsys.readouterr().out
    assert "mape" in text and "1.2.0" in text
    assert main(["monitor", "performance", "--model", "nobody"]) == 0
    assert "no performance records" in capsys.readouterr().out


def test_monitor_drift_compares_files_and_stores_the_run(
    filled: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reference, current = tmp_path / "ref.parquet", tmp_path / "cur.parquet"
    filled["reference"].to_parquet(reference)
    filled["current"].to_parquet(current)
    args = ["monitor", "drift", "--model", FORECAST, "--reference", str(reference)]
    args += ["--current", str(current)]
    assert main(args) == 0  # drift is a verdict, not a failure
    text = capsys.readouterr().out
    assert "1.2.0" in text  # the active deployment's version
    assert "trend" in text and "DRIFTED" in text and "stable" in text
    report = run_json(capsys, *args, "--threshold", "0.05")
    assert report["drifted_columns"] == ["trend"]
    assert report["version"] == "1.2.0"
    stable = run_json(capsys, *args[:-1], str(reference), "--model", SEGMENTS)
    assert stable["dataset_drift"] is False and stable["version"] == "unversioned"
    assert main([*args[:-1], str(tmp_path / "missing.parquet")]) == 1


def test_monitor_alerts_lists_acknowledges_and_resolves(
    filled: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    alert_id = filled["alert"].id
    (listed,) = run_json(capsys, "monitor", "alerts", "--state", "open")
    assert listed["id"] == alert_id and listed["severity"] == "critical"
    assert main(["monitor", "alerts"]) == 0
    assert "25.00%" in capsys.readouterr().out  # the table wraps the message
    assert main(["monitor", "alerts", "--ack", alert_id]) == 1  # --by is required
    capsys.readouterr()
    (acked,) = run_json(capsys, "monitor", "alerts", "--ack", alert_id, "--by", "on-call")
    assert (acked["state"], acked["acknowledged_by"]) == ("acknowledged", "on-call")
    assert run_json(capsys, "monitor", "alerts", "--state", "open") == []
    assert main(["monitor", "alerts", "--resolve", alert_id]) == 0
    assert "resolved" in capsys.readouterr().out
    assert main(["monitor", "alerts", "--state", "bogus"]) == 1
    assert main(["monitor", "alerts", "--resolve", "no-such-id"]) == 1


def test_report_writes_the_guide_report(
    filled: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], settings: Settings
) -> None:
    args = ["report", "--period", "weekly", "--models", "all"]
    args += ["--output", "reports/weekly_model_performance.html"]
    assert main(args) == 0
    out = capsys.readouterr().out
    written = tmp_path / "reports" / "weekly_model_performance.html"  # relative to the cwd
    assert written.exists() and str(written.name) in out
    assert FORECAST in written.read_text(encoding="utf-8")
    assert main(["report", "--period", "hourly"]) == 1
