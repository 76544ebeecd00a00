"""The ``retailml`` command line: help, exit codes, and the demo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from retailml.cli import main
from retailml.core.settings import Settings
from retailml.core.workspace import Workspace

COMMANDS = [
    ["init"],
    ["features", "build"],
    ["features", "materialize"],
    ["features", "get"],
    ["features", "versions"],
    ["features", "rollback"],
    ["demo"],
    ["config", "show"],
    ["data", "generate"],
    ["data", "ingest"],
    ["train"],
    ["validate"],
    ["lineage", "show"],
    ["governance", "request"],
    ["governance", "approve"],
    ["governance", "status"],
    ["audit", "verify"],
    ["audit", "show"],
]


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for name in ("init", "demo", "data", "config"):
        assert name in text


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_each_command_explains_itself_with_an_example(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*command, "--help"]) == 0
    assert "Example:" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("retailml 0.")


def test_console_script_and_module_entry_points_run() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "retailml", "--version"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("retailml ")
    script = Path(sys.executable).with_name("retailml")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_init_creates_the_workspace(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init"]) == 0
    assert Workspace.from_settings(settings).exists()
    assert (settings.home / "platform.db").exists()
    assert main(["init"]) == 0
    assert "already initialised" in capsys.readouterr().out


def test_config_show_prints_every_setting(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config", "show"]) == 0
    text = capsys.readouterr().out
    for name in Settings.model_fields:
        assert f"RETAILML_{name.upper()}=" in text


def test_invalid_settings_exit_non_zero_listing_every_problem(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RETAILML_SEED", "minus one")
    monkeypatch.setenv("RETAILML_LOG_LEVEL", "LOUD")
    assert main(["init"]) == 1
    text = capsys.readouterr().err
    assert "2 invalid settings" in text
    assert "RETAILML_SEED" in text
    assert "RETAILML_LOG_LEVEL" in text
    assert not settings.home.exists()


def test_generate_writes_the_requested_rows(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "sales.parquet"
    assert main(["data", "generate", "--rows", "2500", "--seed", "3", "--output", str(output)]) == 0
    assert pq.read_metadata(output).num_rows == 2500
    assert "wrote 2,500 rows" in capsys.readouterr().out


def test_generate_rejects_an_unknown_extension(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "sales.json"
    assert main(["data", "generate", "--rows", "10", "--output", str(output)]) == 1
    text = capsys.readouterr().err
    assert ".json" in text
    assert ".csv" in text
    assert not output.exists()


def test_generate_drift_options_need_a_start_date(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "generate", "--rows", "10", "--price-shift", "0.2"]) == 2
    assert "--drift-start" in capsys.readouterr().err


def test_ingest_json_prints_a_reconciling_report(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "sales.csv"
    assert main(["data", "generate", "--rows", "3000", "--output", str(source)]) == 0
    capsys.readouterr()
    assert main(["data", "ingest", str(source), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows_read"] == 3000
    assert report["reconciles"] is True
    assert (
        report["silver_rows"] + report["quarantined_rows"] + report["duplicates_removed"]
        == report["rows_read"]
    )


def test_ingest_of_a_missing_file_fails_clearly(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "ingest", str(tmp_path / "nope.csv")]) == 1
    assert "nope.csv" in capsys.readouterr().err


def test_ingest_with_a_bad_mapping_file_lists_the_canonical_columns(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "sales.csv"
    source.write_text("a,b\n1,2\n")
    mapping = tmp_path / "map.yaml"
    mapping.write_text("when: a\nquantity: b\n")
    assert main(["data", "ingest", str(source), "--mapping", str(mapping)]) == 1
    text = capsys.readouterr().err
    assert "'when' is not a canonical column" in text
    assert "invoice_date" in text


def test_demo_ends_with_the_paths_to_open(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--rows", "5000", "--no-serve"]) == 0
    text = capsys.readouterr().out
    assert "customer_features" in text
    command = next(line for line in text.splitlines() if "retailml features get" in line)
    customer = command.rsplit(" ", 1)[1]
    assert (
        main(["features", "get", "--set", "customer_features", "--entity", customer, "--json"]) == 0
    )
    looked_up = json.loads(capsys.readouterr().out)
    assert looked_up["found"] is True
    assert looked_up["features"]["monetary_total"] > 0
    tail = text[text.index("Open these:") :]
    paths = [
        line.split(":", 1)[1].split("   (")[0].strip()
        for line in tail.splitlines()[1:]
        if ":" in line and line.strip().split(":")[0] not in ("MLflow runs", "dashboard", "predict")
    ]
    assert len(paths) == 5
    for path in paths:
        assert Path(path).exists(), path
    # One model of each type was trained, validated and saved.
    models = Path(paths[-1])
    for name in (
        "sales_forecast",
        "customer_segmentation",
        "anomaly_detection",
        "demand_prediction",
    ):
        assert (models / name / "result.json").is_file(), name
    assert "mlflow ui --backend-store-uri sqlite:///" in tail
    assert "canary:     promoted" in text
    assert "alert:      data_drift raised" in text
    assert main(["monitor", "alerts", "--state", "open", "--json"]) == 0
    assert "data_drift" in capsys.readouterr().out
    assert "/dashboard" in tail and "X-API-Key" in tail


def test_commands_log_to_the_workspace_log_file(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "sales.csv"
    assert main(["data", "generate", "--rows", "500", "--output", str(source)]) == 0
    assert main(["data", "ingest", str(source)]) == 0
    log = (settings.home / "logs" / "retailml.log").read_text()
    assert "INFO retailml.data.ingest" in log
    assert "500 read" in log


def test_help_does_not_create_a_workspace(settings: Settings) -> None:
    assert main(["--help"]) == 0
    assert not settings.home.exists()


def test_features_build_publishes_every_set_of_the_shipped_config(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "sales.parquet"
    assert main(["data", "generate", "--rows", "20000", "--output", str(source)]) == 0
    assert main(["data", "ingest", str(source)]) == 0
    capsys.readouterr()
    config = Path(__file__).resolve().parents[2] / "configs" / "features.yaml"
    assert main(["features", "build", "--config", str(config)]) == 0
    text = capsys.readouterr().out
    for name in (
        "customer_rfm",
        "product_popularity",
        "seasonal_trends",
        "temporal",
        "daily_sales",
    ):
        assert name in text
        assert (settings.home / "features" / name / "_latest").is_file()
    assert main(["features", "build", "--config", str(config)]) == 0
    assert "(reused)" in capsys.readouterr().out


def test_features_build_before_ingestion_says_what_to_run(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["features", "build"]) == 1
    assert "retailml data ingest" in capsys.readouterr().err


def test_features_build_with_a_missing_config_file_fails_clearly(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["features", "build", "--config", str(tmp_path / "nope.yaml")]) == 1
    assert "nope.yaml" in capsys.readouterr().err


def test_materialize_before_any_build_says_what_to_run(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["features", "materialize"]) == 1
    assert "retailml features build" in capsys.readouterr().err


def test_get_of_an_unknown_entity_exits_non_zero(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "sales.parquet"
    assert main(["data", "generate", "--rows", "5000", "--output", str(source)]) == 0
    assert main(["data", "ingest", str(source)]) == 0
    assert main(["features", "build"]) == 0
    assert main(["features", "materialize", "--set", "customer_features"]) == 0
    capsys.readouterr()
    assert main(["features", "get", "--set", "customer_features", "--entity", "nobody"]) == 1
    assert "'nobody' is not in the online store" in capsys.readouterr().err
    assert main(["features", "get", "--set", "nope", "--entity", "1"]) == 1
    assert "nope" in capsys.readouterr().err
