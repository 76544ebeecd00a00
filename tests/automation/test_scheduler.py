"""``retailml scheduler`` killed mid-retrain and restarted: no lost job, no duplicate version."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest
import yaml

from retailml.automation.scheduler import Scheduler, load_schedules, parse_schedules
from retailml.core.db import PlatformDB
from retailml.core.errors import ConfigError
from retailml.core.jobs import list_jobs
from retailml.core.settings import Settings
from retailml.deployment.model_server import ModelRegistry, ModelServer

from .conftest import MODEL, approve

SCHEDULES = {
    "models": {
        MODEL: {
            "triggers": {"min_new_data_points": 1000},
            "auto_deploy": True,
            "approvers": ["ml_engineer"],
        }
    }
}
FAST = ["--heartbeat", "0.2", "--stale-after", "1.5"]


def scheduler(settings: Settings, cwd: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RETAILML_", "MLFLOW_"))}
    env["RETAILML_HOME"] = str(settings.home)
    return subprocess.Popen(
        [sys.executable, "-m", "retailml", "scheduler", "--schedules", "retraining.yaml", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def lines(stream: IO[str]) -> queue.Queue[str]:
    found: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            found.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return found


def jobs_of(settings: Settings) -> list[Any]:
    # No migration check per call: the polling must not slow the scheduler down.
    db = PlatformDB(settings.resolved_database_url)
    try:
        return list(reversed(list_jobs(db, model_name=MODEL)))  # oldest first
    finally:
        db.dispose()


def wait_for_running_job(settings: Settings, process: subprocess.Popen[str]) -> Any:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        running = [job for job in jobs_of(settings) if job.status == "running"]
        if running:
            return running[0]
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        time.sleep(0.05)
    raise AssertionError("the scheduler never started a retrain job")


def test_a_killed_scheduler_leaves_an_abandoned_job_and_the_restart_retrains_once(
    retail: Settings, tmp_path: Path
) -> None:
    (tmp_path / "retraining.yaml").write_text(yaml.safe_dump(SCHEDULES), encoding="utf-8")
    # The inflated 1.1.0 serves production: a retrained challenger beats it.
    approve(retail, "1.1.0")
    with ModelServer("production", retail) as server:
        assert server.deploy_model_sync({"model_name": MODEL, "model_version": "1.1.0"}).active

    first = scheduler(retail, tmp_path, "--interval", "60", *FAST)
    try:
        killed = wait_for_running_job(retail, first)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert jobs_of(retail)[-1].status == "running"  # nobody finished it

    second = scheduler(retail, tmp_path, "--interval", "60", "--json", *FAST)
    try:
        ticks = lines(second.stdout)  # type: ignore[arg-type]
        report = json.loads(ticks.get(timeout=120))
        second.send_signal(signal.SIGTERM)  # stops cleanly between ticks
        assert second.wait(timeout=30) == 0
    finally:
        if second.poll() is None:
            second.kill()
    assert "scheduler stopped after 1 tick(s)" in (second.stderr.read() if second.stderr else "")
    assert report["reaped"] == [killed.id]
    assert report["released"] == [f"retrain:{MODEL}"]
    run = report["runs"][MODEL]
    assert run["decision"]["fired"][0]["trigger"] == "min_new_data_points"
    assert run["model"]["status"] == "trained"
    assert run["comparison"]["is_better"] is True
    assert run["deployment"]["status"] == "awaiting_approval"

    first_job, second_job = jobs_of(retail)
    assert first_job.id == killed.id and first_job.status == "abandoned"
    assert "stopped sending heartbeats" in (first_job.error_message or "")
    assert first_job.inputs["model_type"] == "sales_forecast"  # the record is whole
    assert second_job.status == "succeeded"
    assert second_job.trigger == "min_new_data_points"
    assert second_job.outcome["registered_version"] == "1.2.0"
    with ModelRegistry(retail) as registry:
        registered = registry.get_model_versions(MODEL, limit=100)
    assert sorted(v.version for v in registered) == ["1.0.0", "1.1.0", "1.2.0"]
    [new] = [v for v in registered if v.version == "1.2.0"]
    assert new.tags["retrain_job"] == second_job.id


def test_a_bad_schedules_file_is_reported_all_at_once(tmp_path: Path) -> None:
    path = tmp_path / "retraining.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "models": {
                    MODEL: {"triggers": {"schedule": "sometimes"}, "auto_deploy": "yes"},
                    "other": {"retrain_every": 3},
                },
                "heartbeat_seconds": -1,
            }
        )
    )
    with pytest.raises(ConfigError, match="4 problems") as caught:
        load_schedules(path)
    message = str(caught.value)
    for part in ("'sometimes'", "fix auto_deploy", "unknown ['retrain_every']", "heartbeat"):
        assert part in message
    with pytest.raises(ConfigError, match="expected an existing YAML file"):
        load_schedules(tmp_path / "missing.yaml")
    fine = parse_schedules({"models": {MODEL: {"triggers": {"schedule": "daily"}}}})
    with pytest.raises(ConfigError, match="a heartbeat shorter than the stale timeout"):
        Scheduler(fine, Settings(home=tmp_path / "ws"), stale_after_s=5, heartbeat_s=10)
