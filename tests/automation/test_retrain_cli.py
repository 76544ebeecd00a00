"""``retailml retrain --check``, ``retrain --config ... --auto-deploy-if-better``, ``jobs``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from retailml.cli import main
from retailml.core.settings import Settings
from retailml.deployment.model_server import ModelRegistry, ModelServer
from retailml.governance.model_governance import ModelGovernance

from .conftest import MODEL, approve


def err(capsys: pytest.CaptureFixture[str]) -> str:
    """stderr as one line (Rich wraps long messages)."""
    return " ".join(capsys.readouterr().err.split())


CONFIG = {
    "model_type": "sales_forecast",
    "algorithm": "seasonal_naive",
    "model_name": MODEL,
    "target": "sales_amount",
    "hyperparameters": {"horizon": 7},
    "validation_strategy": "time_series_split",
    "n_splits": 2,
    "data": {
        "source": "feature_set",
        "name": "daily_sales",
        "filter": {"level": "total"},
        "holdout": 7,
    },
    "validation": {"performance_thresholds": {"smape": 5.0}},
}


def test_retrain_check_prints_the_decision_and_exits_0(
    retail: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["retrain", "--check", "--model", MODEL, "--min-new-data", "1000", "--schedule", "weekly"]
    )
    assert code == 0
    shown = capsys.readouterr().out
    assert f"{MODEL} (production 1.0.0): retrain" in shown
    assert "FIRED min_new_data_points" in shown
    assert "ok    schedule" in shown
    (tmp_path / "retraining.yaml").write_text(
        yaml.safe_dump({"models": {MODEL: {"triggers": {"min_new_data_points": 50_000}}}})
    )
    assert main(["retrain", "--check", "--json"]) == 0
    [decision] = json.loads(capsys.readouterr().out)
    assert decision["should_retrain"] is False
    assert decision["checks"][0]["limit"] == 50_000
    assert main(["retrain", "--check", "--model", "nope"]) == 1
    assert "models listed in retraining.yaml" in err(capsys)


def test_retrain_from_a_config_deploys_if_better_through_governance(
    retail: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    approve(retail, "1.1.0")  # the inflated version serves production
    with ModelServer("production", retail) as server:
        assert server.deploy_model_sync({"model_name": MODEL, "model_version": "1.1.0"}).active
    config = tmp_path / "sales_forecast.yaml"
    config.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    code = main(
        [
            "retrain",
            "--config",
            str(config),
            "--data-window",
            "2y",
            "--auto-deploy-if-better",
            "--validation-strategy",
            "holdout",
            "--approver",
            "ml_engineer",
            "--json",
        ]
    )
    assert code == 0
    run = json.loads(capsys.readouterr().out)
    assert run["decision"] is None  # run on demand, not by a trigger
    assert run["model"]["status"] == "trained"
    assert run["comparison"]["is_better"] is True
    assert run["deployment"]["status"] == "awaiting_approval"
    assert run["deployment"]["pending_approvers"] == ["ml_engineer"]
    job_id = run["model"]["job_id"]

    assert main(["jobs", "show", job_id, "--json"]) == 0
    job = json.loads(capsys.readouterr().out)
    assert job["inputs"]["config"] == str(config)
    assert job["inputs"]["data"]["window"] == "2y"
    assert job["inputs"]["validation_strategy"] == "holdout"
    assert job["inputs"]["register"] is False
    assert job["outcome"]["registered_version"] == "1.2.0"
    assert job["trigger"] == "manual"

    assert main(["jobs", "--model", MODEL]) == 0
    listed = capsys.readouterr().out
    assert job_id in listed and "succeeded" in listed and "awaiting_approval" in listed
    assert main(["jobs", "--status", "succeeded", "--json"]) == 0
    assert [j["id"] for j in json.loads(capsys.readouterr().out)] == [job_id]
    with ModelRegistry(retail) as registry:
        assert registry.get_model_version(MODEL, "1.2.0").tags["retrain_job"] == job_id

    # Once approved, the next scheduler tick rolls the waiting challenger out.
    request = run["deployment"]["approval_request_id"]
    ModelGovernance(retail).approve(request, approver="carol", role="ml_engineer", comment="ok")
    (tmp_path / "retraining.yaml").write_text(
        yaml.safe_dump({"models": {MODEL: {"triggers": {"min_new_data_points": 50_000}}}})
    )
    assert main(["scheduler", "--once", "--json"]) == 0
    tick = json.loads(capsys.readouterr().out)
    resumed = tick["resumed"][MODEL]
    assert (resumed["status"], resumed["version"]) == ("rollout_started", "1.2.0")
    assert tick["runs"][MODEL]["decision"]["should_retrain"] is False
    assert main(["jobs", "show", job_id, "--json"]) == 0
    deployment = json.loads(capsys.readouterr().out)["outcome"]["deployment"]
    assert deployment["rollout_id"] == resumed["rollout_id"]
    with ModelServer("production", retail) as server:
        assert server.get_rollout(resumed["rollout_id"]).new_version == "1.2.0"


def test_retrain_and_jobs_errors_are_one_clear_line(
    retail: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["retrain"]) == 1
    assert "--config PATH (retrain from a training config) or --check" in err(capsys)
    assert main(["jobs", "--status", "exploded"]) == 1
    assert "a status among queued, running" in err(capsys)
    assert main(["jobs", "show", "nope"]) == 1
    assert "the id of a recorded training job" in err(capsys)
    assert main(["retrain", "--check", "--performance-threshold", "mape=0.2"]) == 1
    assert "--model NAME with trigger options" in err(capsys)


def test_jobs_show_never_prints_a_password_from_the_inputs(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    from retailml.core.db import PlatformDB
    from retailml.core.jobs import create_job

    db = PlatformDB.from_settings(settings)
    try:
        job = create_job(
            db,
            kind="train",
            model_name="m",
            inputs={
                "experiment": {"tracking_uri": "postgresql+psycopg://ml:s3cret@db:5432/mlflow"}
            },
        )
    finally:
        db.dispose()
    assert main(["jobs", "show", job.id, "--json"]) == 0
    shown = capsys.readouterr().out
    assert "s3cret" not in shown
    assert "ml:***@db:5432" in shown
    assert main(["jobs", "show", job.id]) == 0
    assert "s3cret" not in capsys.readouterr().out
