"""The ``retailml`` command line: help, exit codes, and the demo."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from retailml.cli import main
from retailml.core.settings import Settings
from retailml.core.workspace import Workspace


def _leaf_commands() -> list[list[str]]:
    """Every runnable command path of the CLI, read from the Typer app itself."""
    import typer

    from retailml.cli.main import app

    def walk(command: object, path: list[str]) -> Iterator[list[str]]:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                yield from walk(sub, [*path, name])
        else:
            yield path

    return list(walk(typer.main.get_command(app), []))


#: Every command, so a new one cannot ship without help and an example.
COMMANDS = _leaf_commands()


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
    assert re.search(r"Examples?:", capsys.readouterr().out)


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
    commands = ("MLflow runs", "dashboard", "predict", "lineage", "retrain jobs", "audit log")
    paths = {
        line.strip().split(":")[0]: line.split(":", 1)[1].split("   (")[0].strip()
        for line in tail.splitlines()[1:]
        if ":" in line and line.strip().split(":")[0] not in commands
    }
    assert len(paths) == 6
    for path in paths.values():
        assert Path(path).exists(), path
    # One model of each type was trained, validated and saved.
    models = Path(paths["models"])
    for name in (
        "sales_forecast",
        "customer_segmentation",
        "anomaly_detection",
        "demand_prediction",
    ):
        assert (models / name / "result.json").is_file(), name
    assert "mlflow ui --backend-store-uri sqlite:///" in tail
    assert "sales_forecast 1.1.0 for production approved by dana (demo)" in text
    assert "canary:     promoted" in text
    assert "alert:      data_drift raised" in text
    assert main(["monitor", "alerts", "--state", "open", "--json"]) == 0
    assert "data_drift" in capsys.readouterr().out
    assert "/dashboard" in tail and "X-API-Key" in tail
    _assert_the_demo_closed_the_loop(settings, text, capsys)


def _assert_the_demo_closed_the_loop(
    settings: Settings, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Step 8 of the demo: drift -> retrain job -> champion vs challenger -> governed
    canary (or refusal); lineage answers both directions; the audit chain holds."""
    from retailml.core.db import PlatformDB
    from retailml.core.jobs import list_jobs
    from retailml.deployment.model_server import ModelServer
    from retailml.governance.model_governance import ModelGovernance
    from retailml.registry.model_registry import ModelRegistry

    loop = text[text.index("8/8 closing the loop") : text.index("Open these:")]
    assert "new data:   January 2024 arrives" in loop
    assert "trigger:    fired: share of drifted columns" in loop
    db = PlatformDB.from_settings(settings)
    try:
        retrains = [j for j in list_jobs(db, model_name="sales_forecast") if j.kind == "retrain"]
    finally:
        db.dispose()
    assert len(retrains) == 1
    job = retrains[0]
    assert job.status == "succeeded"
    assert "drift" in job.trigger
    assert f"job {job.id[:8]} (trigger: {job.trigger})" in loop
    comparison = job.outcome["comparison"]
    assert comparison["baseline"] == "production 1.1.0"
    assert comparison["n_rows"] == 14  # the challenger's holdout, both scored on it
    assert f"is_better:  {comparison['is_better']}" in loop
    for metric, delta in comparison["deltas"].items():
        assert re.search(rf"{metric}\s.* delta {re.escape(f'{delta:+.4g}')}", loop), metric
    decision = job.outcome["deployment"]
    with ModelServer("production", settings) as production:
        active = production.active_deployment("sales_forecast")
    assert active is not None
    if comparison["is_better"]:
        version = job.outcome["registered_version"]
        assert version == "1.2.0"
        # Governed: the pipeline's request waited for the demo approvers, then rolled out.
        assert decision["status"] == "rollout_started"
        governance = ModelGovernance(settings)
        requests = [
            r for r in governance.list_requests("sales_forecast") if r.model_version == version
        ]
        governance.db.dispose()
        assert [r.status for r in requests] == ["approved"]
        assert "awaiting approval by lead_data_scientist, ml_engineer, business_owner" in loop
        assert f"approval:   sales_forecast {version} for production approved by dana" in loop
        promoted = "canary:     promoted" in loop.split("canary:     1.2.0 takes 20 %")[1]
        assert active.version == (version if promoted else "1.1.0")
    else:
        # A challenger that is not better never leaves the registry.
        assert decision["status"] == "refused"
        assert job.outcome["registered_version"] is None
        assert "refused: the challenger stays out of production" in loop
        assert active.version == "1.1.0"
    # Lineage, upstream: the production version <- its training run <- the feature set
    # <- silver <- the ingested files (the drifted January among them when retrained).
    with ModelRegistry(settings) as registry:
        run_id = registry.get_model_version("sales_forecast", active.version).run_id
    assert (
        main(
            ["lineage", "show", "--model", "sales_forecast", "--version", active.version, "--json"]
        )
        == 0
    )
    upstream = json.loads(capsys.readouterr().out)
    assert f"run.{run_id}" in upstream["datasets"]
    assert {"feature_set.daily_sales", "silver.transactions"} <= set(upstream["datasets"])
    assert "file.online_retail_demo.csv" in upstream["datasets"]
    jobs = {step["job"] for step in upstream["steps"]}
    assert {"ingest", "features.daily_sales", "register.sales_forecast"} <= jobs
    assert any(name.startswith("train.") for name in jobs)
    if comparison["is_better"]:
        assert "file.online_retail_2024_01.parquet" in upstream["datasets"]
    assert f"lineage:    sales_forecast {active.version} (production) <- run {run_id[:8]}" in loop
    # Lineage, downstream: silver feeds every feature set and every demo model.
    assert main(["lineage", "show", "silver.transactions", "--downstream", "--json"]) == 0
    downstream = set(json.loads(capsys.readouterr().out)["datasets"])
    for feature_set in (
        "customer_rfm",
        "product_popularity",
        "seasonal_trends",
        "temporal",
        "daily_sales",
    ):
        assert f"feature_set.{feature_set}" in downstream
    for model in (
        "sales_forecast",
        "customer_segmentation",
        "anomaly_detection",
        "demand_prediction",
    ):
        assert f"model.{model}" in downstream
    # The audit log's hash chain holds over everything the demo did.
    assert "audit:      audit log intact" in loop
    assert main(["audit", "verify"]) == 0
    assert "audit log intact" in capsys.readouterr().out


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
