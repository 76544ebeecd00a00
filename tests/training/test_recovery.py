"""TrainingRecovery: failed jobs are classified from their real errors and restarted with a fix."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pyarrow.parquet as pq
import pytest

from guide import block, run
from retailml.cli import main
from retailml.core.db import PlatformDB
from retailml.core.errors import NotFoundError, StateError
from retailml.core.jobs import JobRecord, create_job, fail_job, get_job, list_jobs, start_job
from retailml.core.settings import Settings, get_settings
from retailml.data.generate import GeneratorConfig, generate_transactions, write_transactions
from retailml.data.ingest import ingest_file
from retailml.training._jobs import (
    config_from_inputs,
    inputs_from_config,
    load_training_config,
    run_training_job,
    silver_versions,
)
from retailml.training.recovery import TrainingRecovery

MODEL = "basket_anomalies"
#: Enough for the trainer's libraries and threads (the good job measures what it needs).
ROOMY_MB = 8192


@dataclass
class Workspace:
    settings: Settings
    db: PlatformDB
    parts: list[Path]
    good: JobRecord
    inputs: dict[str, Any]


def ingest(settings: Settings, seed: int, start: dt.date, end: dt.date, tmp: Path) -> Path:
    table = generate_transactions(
        GeneratorConfig(rows=1200, seed=seed, start=start, end=end, anomaly_rate=0.02)
    )
    path = write_transactions(table, tmp / f"transactions-{seed}.csv")
    return ingest_file(path, settings=settings).silver_path


def job(ws: Workspace, inputs: dict[str, Any]) -> JobRecord:
    record = create_job(ws.db, kind="train", model_name=MODEL, inputs=inputs)
    finished = run_training_job(ws.db, record.id, settings=ws.settings)
    while mlflow.active_run() is not None:
        mlflow.end_run()
    return finished


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """Two ingested files and one successful, memory-limited training job on them."""
    tmp = tmp_path_factory.mktemp("recovery")
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("RETAILML_") and name != "RETAILML_TEST_POSTGRES_URL":
                patch.delenv(name)
        patch.setenv("RETAILML_HOME", str(tmp / "workspace"))
        get_settings.cache_clear()
        settings = get_settings()
        parts = [
            ingest(settings, 1, dt.date(2023, 1, 1), dt.date(2023, 3, 31), tmp),
            ingest(settings, 2, dt.date(2023, 4, 1), dt.date(2023, 5, 31), tmp),
        ]
        db = PlatformDB.from_settings(settings)
        inputs = {
            "model_name": MODEL,
            "model_type": "anomaly_detection",
            "algorithm": "isolation_forest",
            "hyperparameters": {"n_estimators": 20, "contamination": 0.02},
            "target": "is_anomaly",
            "validation_strategy": "kfold",
            "n_splits": 2,
            "seed": 7,
            "data": {"source": "silver", "path": None, "window": None, "data_version": None},
            "config": None,
            "register": False,
            "resources": {"memory_mb": ROOMY_MB, "cpus": 1},
        }
        state = Workspace(settings, db, parts, None, inputs)  # type: ignore[arg-type]
        state.good = job(state, inputs)
        assert state.good.status == "succeeded", state.good.error_message
        # Later jobs train in this process unless a test gives them a limit.
        state.inputs = {**inputs, "resources": {"memory_mb": None, "cpus": None}}
        yield state
        db.dispose()
    get_settings.cache_clear()


def test_a_good_job_records_its_data_version_and_measured_memory(ws: Workspace) -> None:
    outcome = ws.good.outcome
    latest = silver_versions(ws.db, ws.settings)[-1]
    assert outcome["data_version"] == latest.version and latest.consistent
    assert outcome["n_rows"] > 0 and outcome["metrics"]["f1"] is not None
    assert outcome["memory_limit_mb"] == ROOMY_MB
    assert outcome["baseline_address_space_mb"] < outcome["peak_address_space_mb"] <= ROOMY_MB
    assert outcome["hyperparameters"]["n_jobs"] == 1  # resources.cpus
    assert Path(outcome["model_dir"], "result.json").is_file()


def test_a_bad_hyperparameter_is_rolled_back_and_the_restart_succeeds(ws: Workspace) -> None:
    bad = copy.deepcopy(ws.inputs)
    bad["hyperparameters"]["contamination"] = 5.0
    failed = job(ws, bad)
    assert failed.status == "failed"
    assert failed.error_type == "retailml.core.errors.ConfigError"
    assert "'contamination' parameter" in str(failed.error_message)

    recovery = TrainingRecovery(failed.id, settings=ws.settings, db=ws.db)
    analysis = recovery.analyze_failure()
    assert analysis.failure_type == "hyperparameter_error"
    assert analysis.last_good_job_id == ws.good.id
    assert any("'contamination' parameter" in line for line in analysis.evidence)
    assert "rollback_hyperparameters" in analysis.recommended_action
    assert recovery.rollback_hyperparameters() == ws.good.inputs["hyperparameters"]
    restarted = recovery.restart_training()
    assert restarted.status == "succeeded", restarted.error_message
    assert restarted.kind == "restart" and restarted.parent_job_id == failed.id
    assert restarted.inputs["hyperparameters"]["contamination"] == 0.02
    assert restarted.inputs["recovery"]["failure_type"] == "hyperparameter_error"
    assert get_job(ws.db, failed.id).status == "failed"  # the record of the failure stays


def test_too_little_memory_is_raised_from_the_measured_peak_and_the_restart_succeeds(
    ws: Workspace,
) -> None:
    peak = ws.good.outcome["peak_address_space_mb"]
    tight = copy.deepcopy(ws.inputs)
    tight["resources"] = {"memory_mb": int(peak * 0.5), "cpus": 1}
    failed = job(ws, tight)
    assert failed.status == "failed"
    # A real failure: a MemoryError, a failed mapping, or glibc aborting a thread start.
    recovery = TrainingRecovery(failed.id, settings=ws.settings, db=ws.db)
    analysis = recovery.analyze_failure()
    assert analysis.failure_type == "resource_exhaustion", analysis.evidence
    assert f"{int(peak * 0.5)} MiB" in "\n".join(analysis.evidence)
    adjusted = recovery.adjust_training_resources(memory_multiplier=1.5, cpu_multiplier=1.2)
    assert adjusted.previous_memory_mb == int(peak * 0.5)
    assert adjusted.memory_mb is not None and adjusted.memory_mb >= 1.3 * peak
    assert adjusted.cpus == min(2, os.cpu_count() or 1)
    restarted = recovery.restart_training()
    assert restarted.status == "succeeded", restarted.error_message
    assert restarted.outcome["memory_limit_mb"] == adjusted.memory_mb


def test_a_corrupted_part_is_skipped_for_the_newest_intact_version(
    ws: Workspace, tmp_path: Path
) -> None:
    good_version = ws.good.outcome["data_version"]
    third = ingest(ws.settings, 3, dt.date(2023, 6, 1), dt.date(2023, 6, 30), tmp_path)
    original = third.read_bytes()
    try:
        third.write_bytes(original[: len(original) // 2])  # a truncated write
        failed = job(ws, ws.inputs)
        assert failed.status == "failed" and str(failed.error_type).startswith("pyarrow.")

        recovery = TrainingRecovery(failed.id, settings=ws.settings, db=ws.db)
        analysis = recovery.analyze_failure()
        assert analysis.failure_type == "data_corruption"
        assert analysis.last_known_good is not None
        # The newest version (with the damaged part) is passed over for the last good one.
        restored = recovery.restore_training_data(backup_date=dt.datetime.now(dt.UTC))
        assert restored.data_version == good_version
        assert len(restored.skipped) == 1 and "damaged" in next(iter(restored.skipped.values()))
        assert [Path(p) for p in restored.parts] == ws.parts
        restarted = recovery.restart_training()
        assert restarted.status == "succeeded", restarted.error_message
        assert restarted.outcome["data_version"] == good_version
        assert restarted.outcome["n_rows"] == ws.good.outcome["n_rows"]
        # Nothing intact before the first ingestion.
        with pytest.raises(NotFoundError, match="re-ingest"):
            recovery.restore_training_data(backup_date="2000-01-01T00:00:00+00:00")
    finally:
        third.write_bytes(original)


def test_the_guide_recovery_script_runs_as_written(ws: Workspace) -> None:
    bad = copy.deepcopy(ws.inputs)
    bad["hyperparameters"] = {"n_estimators": 20, "contamination": 0.02, "n_estimatorz": 5}
    failed = job(ws, bad)
    assert failed.status == "failed" and "n_estimatorz" in str(failed.error_message)
    namespace: dict[str, Any] = {}
    run(block("#### 2. Training Pipeline Failures"), namespace)
    new_job = asyncio.run(namespace["recover_failed_training"](failed.id))
    assert new_job.status == "succeeded" and new_job.parent_job_id == failed.id
    assert new_job.inputs["recovery"]["failure_type"] == "hyperparameter_error"
    assert "n_estimatorz" not in new_job.inputs["hyperparameters"]


def test_retailml_recover_dry_run_shows_the_fix_without_restarting(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = copy.deepcopy(ws.inputs)
    bad["hyperparameters"] = {"n_estimators": 0}
    failed = job(ws, bad)
    assert failed.status == "failed"
    capsys.readouterr()
    assert main(["recover", failed.id, "--dry-run", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["analysis"]["failure_type"] == "hyperparameter_error"
    assert printed["changes"][0].startswith("hyperparameters {'n_estimators': 0} -> ")
    assert printed["new_job"] is None
    assert list_jobs(ws.db, model_name=MODEL, limit=1)[0].id == failed.id  # no restart


def test_without_a_successful_job_the_last_mlflow_run_gives_the_hyperparameters(
    ws: Workspace,
) -> None:
    from retailml.training.recovery import _mlflow_params

    found = _mlflow_params(MODEL, ws.settings)
    assert found is not None
    params, algorithm, source = found
    assert algorithm == "isolation_forest" and source.startswith("MLflow run ")
    assert params["contamination"] == 0.02 and params["n_estimators"] == 20
    assert _mlflow_params("never_trained", ws.settings) is None


def test_only_failed_jobs_are_analysed(ws: Workspace) -> None:
    with pytest.raises(StateError, match="status 'succeeded'"):
        TrainingRecovery(ws.good.id, settings=ws.settings, db=ws.db).analyze_failure()
    with pytest.raises(NotFoundError, match="training job"):
        TrainingRecovery("nope", settings=ws.settings, db=ws.db)


def test_retailml_train_records_a_job_per_run(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    config = tmp_path / "bad.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_type": "customer_segmentation",
                "model_name": "segments",
                "hyperparameters": {"n_clusters": 1},
                "data": {"source": "file", "path": str(tmp_path / "missing.parquet")},
            }
        )
    )
    assert main(["train", "--config", str(config)]) == 1
    message = capsys.readouterr().err
    db = PlatformDB.from_settings(settings)
    try:
        [recorded] = list_jobs(db, model_name="segments")
    finally:
        db.dispose()
    assert recorded.kind == "train" and recorded.status == "failed"
    assert f"retailml recover {recorded.id}" in " ".join(message.split())
    assert recorded.inputs["data"] == {
        "source": "path",
        "path": str(tmp_path / "missing.parquet"),
        "window": None,
        "data_version": None,
    }
    assert recorded.inputs["config"] == str(config.resolve())


def test_failures_are_classified_from_recorded_errors_on_both_databases(
    platform_db: PlatformDB, tmp_path: Path
) -> None:
    garbage = tmp_path / "part.parquet"
    garbage.write_bytes(b"not parquet at all")
    cases: list[tuple[BaseException, str]] = []
    try:
        pq.read_table(garbage)
    except Exception as exc:
        cases.append((exc, "data_corruption"))
    try:
        bytearray(2**62)
    except MemoryError as exc:
        cases.append((exc, "resource_exhaustion"))
    cases.append((OSError(28, "No space left on device"), "resource_exhaustion"))
    cases.append((KeyError("series_id"), "unknown"))
    settings = Settings(home=tmp_path / "workspace", database_url=platform_db.url)
    for error, expected in cases:
        record = create_job(platform_db, kind="train", model_name="m", inputs={})
        start_job(platform_db, record.id)
        fail_job(platform_db, record.id, error)
        analysis = TrainingRecovery(record.id, settings=settings, db=platform_db).analyze_failure()
        assert analysis.failure_type == expected, (error, analysis.evidence)
        assert analysis.last_known_good is None


def test_job_inputs_become_the_training_config_they_describe(tmp_path: Path) -> None:
    config = tmp_path / "forecast.yaml"
    config.write_text(
        "model_type: sales_forecast\nmodel_name: f\nhyperparameters: {horizon: 7}\n"
        "tuning: {n_trials: 3}\ndata: {source: feature_set, name: daily_sales, holdout: 28}\n"
    )
    inputs = inputs_from_config(load_training_config(config), config_path=config, data_window="1y")
    assert inputs["data"] == {
        "source": "feature_set",
        "path": None,
        "window": "1y",
        "data_version": None,
        "name": "daily_sales",
        "holdout": 28,
    }
    # Explicit inputs win over the file; tuning comes from the file.
    inputs["hyperparameters"] = {"horizon": 14}
    resolved = config_from_inputs(inputs)
    assert resolved["hyperparameters"] == {"horizon": 14} and resolved["tuning"] == {"n_trials": 3}
    assert resolved["data"] == {
        "source": "feature_set",
        "name": "daily_sales",
        "holdout": 28,
        "window": "1y",
    }
    # A path input reads the file; a retrain job's "spec" is its exact data section.
    as_path = {**inputs, "data": {"source": "path", "path": "/x.parquet", "window": None}}
    assert config_from_inputs(as_path)["data"] == {
        "source": "file",
        "path": "/x.parquet",
        "holdout": 28,
    }
    spec = {"source": "feature_set", "name": "daily_sales", "filter": {"level": "total"}}
    retrain = {"model_type": "sales_forecast", "data": {"source": "silver", "spec": spec}}
    assert config_from_inputs(retrain)["data"] == spec
