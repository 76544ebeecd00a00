"""PerformanceDiagnostic: data drift, concept drift, model health and ranked recommendations."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest

from guide import block, run
from retailml.cli import main
from retailml.core.db import PlatformDB, new_id, utcnow
from retailml.core.db_deploy import Deployment, PredictionLogEntry
from retailml.core.errors import ConfigError, DataValidationError, NotFoundError
from retailml.core.jobs import create_job
from retailml.core.settings import Settings
from retailml.monitoring.diagnostics import (
    ConceptDriftAnalysis,
    DataDriftAnalysis,
    ModelHealth,
    PerformanceDiagnostic,
)
from retailml.monitoring.model_monitor import ModelMonitor
from retailml.training._jobs import run_training_job

MODEL = "store_forecast"
VERSION = "1.0.0"
DAYS = 150
SHIFT_DAYS = 30


def panel(shifted: bool) -> pd.DataFrame:
    """Two daily series with a weekly pattern; the last 30 days 80 % higher when shifted."""
    rng = np.random.default_rng(0)
    dates = pd.date_range("2024-01-01", periods=DAYS, freq="D")
    frames = []
    for i in range(2):
        weekly = np.array([1.0, 1.1, 1.2, 1.15, 1.3, 0.4, 0.6])[dates.dayofweek]
        level = np.where(np.arange(DAYS) >= DAYS - SHIFT_DAYS, 1.8 if shifted else 1.0, 1.0)
        y = 1000 * (i + 1) * weekly * level * rng.lognormal(0, 0.05, DAYS)
        frames.append(pd.DataFrame({"series_id": f"s{i}", "date": dates, "sales_amount": y}))
    return pd.concat(frames, ignore_index=True)


def train_job(settings: Settings, db: PlatformDB, path: Path) -> dict[str, Any]:
    inputs = {
        "model_name": MODEL,
        "model_type": "sales_forecast",
        "algorithm": "seasonal_naive",
        "hyperparameters": {"horizon": 7},
        "target": "sales_amount",
        "validation_strategy": "holdout",
        "n_splits": 1,
        "seed": 0,
        "data": {"source": "path", "path": str(path), "window": None, "data_version": None},
        "config": None,
        "register": False,
        "resources": {"memory_mb": None, "cpus": None},
    }
    job = create_job(db, kind="train", model_name=MODEL, inputs=inputs)
    record = run_training_job(db, job.id, settings=settings)
    while mlflow.active_run() is not None:
        mlflow.end_run()
    assert record.status == "succeeded", record.error_message
    return record.outcome


def record_errors(settings: Settings, db: PlatformDB, baseline: float, worse: bool) -> None:
    """Twelve daily evaluations: eight near the training error, the last four as told."""
    rng = np.random.default_rng(1)
    monitor = ModelMonitor(MODEL, VERSION, settings, db=db)
    start = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    for day in range(12):
        factor = 3.0 if worse and day >= 8 else 1.0
        actual = rng.uniform(900, 1100, 50)
        error = actual * baseline * factor * rng.choice([-1, 1], 50)
        monitor.track_performance(
            actual + error,
            actual,
            metrics=["mape", "mae", "rmse"],
            timestamp=start + dt.timedelta(days=day),
            window_start=start + dt.timedelta(days=day - 1),
        )


def log_latencies(db: PlatformDB, latencies_ms: np.ndarray, failed: int) -> None:
    with db.session() as session:
        for index, latency in enumerate(latencies_ms):
            session.add(
                PredictionLogEntry(
                    request_id=new_id(),
                    model_name=MODEL,
                    model_version=VERSION,
                    environment="production",
                    arm=None,
                    entity_key="s0",
                    features_hash="0" * 64,
                    output={"prediction": [1.0]},
                    latency_ms=float(latency),
                    status_code=500 if index < failed else 200,
                    error="boom" if index < failed else None,
                )
            )


@pytest.fixture
def db(settings: Settings) -> Any:
    platform = PlatformDB.from_settings(settings)
    yield platform
    platform.dispose()


def deploy(db: PlatformDB) -> None:
    with db.session() as session:
        session.add(
            Deployment(
                id=new_id(),
                model_name=MODEL,
                environment="production",
                version=VERSION,
                status="active",
                replicas=1,
                config={},
                health={},
                created_by="tests",
                created_at=utcnow(),
                updated_at=utcnow(),
            )
        )


def test_a_shifted_level_and_worse_errors_lead_to_a_ranked_retrain(
    settings: Settings, db: PlatformDB, tmp_path: Path
) -> None:
    path = tmp_path / "sales.parquet"
    panel(shifted=True).to_parquet(path)
    outcome = train_job(settings, db, path)
    baseline = outcome["metrics"]["mape"]
    record_errors(settings, db, baseline, worse=True)
    latencies = np.arange(1, 101, dtype=np.float64)  # 1 .. 100 ms
    log_latencies(db, latencies, failed=2)

    diagnostic = PerformanceDiagnostic(MODEL, VERSION, settings=settings, db=db)
    drift = asyncio.run(diagnostic.analyze_data_drift(time_window="30d", features="all"))
    assert isinstance(drift, DataDriftAnalysis)
    assert drift.drift_detected and drift.drifted_features == ["sales_amount"]
    assert drift.n_current == 2 * SHIFT_DAYS
    assert drift.window_end is not None and drift.window_end.startswith("2024-05-29")
    assert drift.features["sales_amount"]["psi"] > 0.25
    assert drift.features["series_id"]["drifted"] is False
    # The run is stored with the version's drift history.
    history = ModelMonitor(MODEL, VERSION, settings, db=db).drift_history()
    assert len(history) == 1 and history["dataset_drift"].iloc[0]

    concept = asyncio.run(diagnostic.analyze_concept_drift("4d", "5d"))
    assert isinstance(concept, ConceptDriftAnalysis)
    assert concept.metric == "mape" and concept.n_recent == 4 and concept.n_earlier == 8
    assert concept.baseline == pytest.approx(baseline)
    assert concept.change == pytest.approx(2.0, rel=0.1)  # three times the baseline
    assert concept.degraded and concept.test is not None and concept.test["drifted"]

    health = asyncio.run(diagnostic.check_model_health(["accuracy", "latency", "memory_usage"]))
    assert isinstance(health, ModelHealth) and health.status == "degraded"
    assert health.checks["accuracy"].status == "degraded"
    latency = health.checks["latency"]
    ok = latencies[2:]
    assert latency.data["p50_ms"] == pytest.approx(np.percentile(ok, 50))
    assert latency.data["p99_ms"] == pytest.approx(np.percentile(ok, 99))
    assert latency.data["error_rate"] == pytest.approx(0.02)
    assert latency.status == "healthy"  # p95 under 500 ms, 2 % errors under 5 %
    memory = health.checks["memory_usage"]
    assert memory.status == "healthy" and 0 < memory.value < 200  # type: ignore[operator]

    steps = diagnostic.generate_recommendations([drift, concept, health])
    assert steps[0].priority == 1 and steps[0].action == "retrain"
    assert [s.action for s in steps].count("retrain") == 1
    assert "1 of 2 inputs drifted (sales_amount PSI" in steps[0].reason
    assert "mape" in steps[0].reason and "+200%" in steps[0].reason
    assert steps[0].to_dict()["evidence"]["drifted_features"] == ["sales_amount"]

    # The guide's diagnostic script, as written: the version is the production deployment's.
    deploy(db)
    namespace: dict[str, Any] = {}
    run(block("#### 1. Model Performance Degradation"), namespace)
    report = asyncio.run(namespace["diagnose_performance_issue"](MODEL))
    assert set(report) == {"data_drift", "concept_drift", "model_health", "recommendations"}
    assert report["data_drift"].model_version == VERSION
    assert report["data_drift"].drift_detected and report["concept_drift"].drift_detected
    assert report["model_health"].checks["latency"].data["n"] == 100
    assert report["recommendations"][0].action == "retrain"


def test_a_stable_model_gets_no_retrain_and_unknowns_are_said(
    settings: Settings, db: PlatformDB, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sales.parquet"
    panel(shifted=False).to_parquet(path)
    train_job(settings, db, path)
    diagnostic = PerformanceDiagnostic(MODEL, settings=settings, db=db)
    assert diagnostic.model_version == "unversioned"
    drift = asyncio.run(diagnostic.analyze_data_drift("30d"))
    assert not drift.drift_detected
    concept = asyncio.run(diagnostic.analyze_concept_drift())
    assert concept.metric is None and "no performance recorded" in str(concept.reason)
    health = asyncio.run(diagnostic.check_model_health(["accuracy", "latency"]))
    assert health.status == "unknown"
    actions = [s.action for s in diagnostic.generate_recommendations([drift, concept, health])]
    assert "retrain" not in actions and actions[0] == "record_performance"
    capsys.readouterr()
    assert main(["diagnose", "model", MODEL, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["data_drift"]["drift_detected"] is False
    assert printed["recommendations"][0]["action"] == "record_performance"
    with pytest.raises(ConfigError, match="health metrics among"):
        asyncio.run(diagnostic.check_model_health(["cpu"]))
    with pytest.raises(ConfigError, match="unknown \\['price'\\]"):
        asyncio.run(diagnostic.analyze_data_drift("30d", features=["price"]))
    # A damaged source is a data problem, said as one.
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataValidationError, match="repair or re-ingest"):
        asyncio.run(diagnostic.analyze_data_drift("30d"))


def test_an_unknown_model_says_how_to_train_it(settings: Settings, db: PlatformDB) -> None:
    diagnostic = PerformanceDiagnostic("nothing_here", settings=settings, db=db)
    with pytest.raises(NotFoundError, match="retailml train"):
        asyncio.run(diagnostic.analyze_data_drift())
