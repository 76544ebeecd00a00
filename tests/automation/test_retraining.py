"""Retrain, compare on the same holdout, deploy only a better challenger, through governance."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retailml.automation.retraining import AutoRetrainingPipeline
from retailml.core.db import PlatformDB
from retailml.core.errors import DataValidationError
from retailml.core.jobs import get_job, list_jobs
from retailml.core.settings import Settings
from retailml.deployment.model_server import ModelRegistry, ModelServer
from retailml.governance.model_governance import ModelGovernance
from retailml.monitoring.model_monitor import ModelMonitor

from .conftest import MODEL, Base, approve


def versions(settings: Settings) -> list[str]:
    with ModelRegistry(settings) as registry:
        return sorted(v.version for v in registry.get_model_versions(MODEL, limit=100))


def job_of(settings: Settings, job_id: str) -> object:
    db = PlatformDB.from_settings(settings)
    try:
        return get_job(db, job_id)
    finally:
        db.dispose()


def test_a_better_challenger_waits_for_approval_then_rolls_out_by_canary(
    retail: Settings,
) -> None:
    # The inflated 1.1.0 serves production, and monitoring shows it.
    approve(retail, "1.1.0")
    with ModelServer("production", retail) as server:
        assert server.deploy_model_sync({"model_name": MODEL, "model_version": "1.1.0"}).active
    with ModelMonitor(MODEL, "1.1.0", settings=retail) as monitor:
        monitor.track_performance(np.full(7, 900.0), np.full(7, 100.0), metrics=["mape"])

    async def scenario() -> tuple[object, ...]:
        with AutoRetrainingPipeline(
            MODEL,
            {"performance_threshold": {"mape": 0.2}},
            approvers=["ml_engineer", "business_owner"],
            settings=retail,
        ) as pipeline:
            run = await pipeline.run(deployment_strategy="canary")
            again = await pipeline.deploy_new_model(run.model, "canary")
            request = run.deployment.approval_request_id
            governance = ModelGovernance(retail)
            governance.approve(request, approver="alice", role="ml_engineer", comment="ok")
            governance.approve(request, approver="bob", role="business_owner", comment="ship")
            deployed = await pipeline.deploy_new_model(run.model, "canary")
            # As after a restart, only the job id is known: the version is found, not re-made.
            run.model.registered_version = None
            assert await asyncio.to_thread(pipeline._register, run.model) == "1.2.0"
            return run, again, deployed

    run, again, deployed = asyncio.run(scenario())
    assert run.decision.should_retrain and "mape 8 > 0.2" in run.decision.reason
    model = run.model
    assert model.trained and model.champion_version == "1.1.0"
    assert model.result.algorithm == "seasonal_naive"  # the champion's configuration
    assert model.result.hyperparameters["horizon"] == 7
    comparison = run.comparison
    assert comparison.is_better, comparison.reason
    assert comparison.baseline == "production 1.1.0"
    assert comparison.decided_on == ("smape",)
    assert comparison.deltas["smape"] < 0
    assert comparison.n_rows == len(model.test_data)
    assert run.deployment.status == "awaiting_approval"
    assert run.deployment.pending_approvers == ("ml_engineer", "business_owner")
    assert again.approval_request_id == run.deployment.approval_request_id  # reused
    assert deployed.status == "rollout_started", deployed.reason
    assert deployed.version == "1.2.0"
    assert versions(retail) == ["1.0.0", "1.1.0", "1.2.0"]  # registered once
    with ModelServer("production", retail) as server:
        rollout = server.get_rollout(deployed.rollout_id)
        assert (rollout.strategy, rollout.current_version, rollout.new_version) == (
            "canary",
            "1.1.0",
            "1.2.0",
        )
        assert rollout.running
    with ModelRegistry(retail) as registry:
        registered = registry.get_model_version(MODEL, "1.2.0")
    assert registered.tags["retrain_job"] == model.job_id
    assert registered.metadata["training_config"]["algorithm"] == "seasonal_naive"
    job = job_of(retail, model.job_id)
    assert (job.kind, job.status, job.trigger) == ("retrain", "succeeded", "performance_threshold")
    assert job.inputs["data"]["source"] == "silver"
    assert job.inputs["data"]["data_version"]
    assert job.inputs["hyperparameters"]["horizon"] == 7
    assert job.outcome["registered_version"] == "1.2.0"
    assert job.outcome["comparison"]["is_better"] is True
    assert job.outcome["deployment"]["status"] == "rollout_started"
    assert job.outcome["run_id"] == model.result.run_id
    assert job.duration_s is not None and job.duration_s > 0


def test_a_worse_challenger_is_never_deployed(
    retail: Settings, base: Base, holdout: pd.DataFrame
) -> None:
    async def scenario() -> tuple[object, object, object, object]:
        with AutoRetrainingPipeline(MODEL, settings=retail) as pipeline:
            challenger = await pipeline.retrain(data_source=base.inflated)
            comparison = await pipeline.validate_new_model(challenger, "production", holdout)
            outcome = await pipeline.deploy_new_model(challenger, "direct")
            strict = await pipeline.validate_new_model(
                challenger, None, holdout, thresholds={"smape": 0.0001}
            )
            return challenger, comparison, outcome, strict

    challenger, comparison, outcome, strict = asyncio.run(scenario())
    # Without a champion, the auto-deploy threshold alone decides.
    assert not strict.is_better and not strict.meets_threshold
    assert "no champion to compare with; misses smape" in strict.reason
    assert not comparison.is_better
    assert comparison.reason.startswith("worse than production 1.0.0: smape")
    assert comparison.metrics_new["smape"] > comparison.metrics_baseline["smape"]
    assert comparison.n_rows == len(holdout)
    assert outcome.status == "refused" and outcome.version is None
    assert versions(retail) == ["1.0.0", "1.1.0"]
    with ModelServer("production", retail) as server:
        assert server.active_deployment(MODEL).version == "1.0.0"
    job = job_of(retail, challenger.job_id)
    assert job.inputs["data"] == {
        **job.inputs["data"],
        "source": "path",
        "path": str(base.inflated),
    }
    assert job.outcome["deployment"]["status"] == "refused"


def test_a_failed_retrain_is_recorded_with_its_real_error(retail: Settings, tmp_path: Path) -> None:
    broken = tmp_path / "broken.parquet"
    days = pd.date_range("2023-01-01", periods=30, freq="D")
    pd.DataFrame({"day": days, "value": np.arange(30.0)}).to_parquet(broken)  # no date, no target
    with (
        AutoRetrainingPipeline(MODEL, settings=retail) as pipeline,
        pytest.raises(DataValidationError, match="sales_forecast features"),
    ):
        asyncio.run(pipeline.retrain(data_source=broken))
    db = PlatformDB.from_settings(retail)
    [job] = list_jobs(db, model_name=MODEL)
    db.dispose()
    assert job.status == "failed"
    assert job.error_type == "retailml.core.errors.DataValidationError"
    assert "sales_forecast features" in (job.error_message or "")
    assert "Traceback" in (job.error_traceback or "")
    assert job.outcome == {"stage": "training"}
