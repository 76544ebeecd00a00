"""Maintenance: the guide's cleanup script, the cleanup policy that never touches what serves,
dry runs that change nothing, and the data-freshness check that stops a retraining script."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shlex
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.exceptions import MlflowException
from sqlalchemy import select, update

import guide
from registry.conftest import (  # noqa: F401 - fixtures
    empty_mlflow_store,
    saved_model,
    tracking,
)
from retailml.automation.maintenance import (
    CleanupPolicy,
    check_freshness,
    parse_age,
    plan_cleanup,
    run_cleanup,
)
from retailml.cli import main
from retailml.core.db import DataVersion, IngestionRun
from retailml.core.db_deploy import Deployment as DeploymentRow
from retailml.core.db_deploy import PredictionLogEntry
from retailml.core.db_registry import ModelVersionRecord
from retailml.core.errors import ConfigError
from retailml.core.settings import Settings
from retailml.deployment.model_server import ModelRegistry, ModelServer

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
def registry(settings: Settings, tracking: str) -> Iterator[ModelRegistry]:  # noqa: F811
    with ModelRegistry(settings) as reg:
        yield reg


def approve(settings: Settings, model: str, version: str, *, db: Any) -> None:
    """A real, approved governance request to deploy ``version`` to production."""
    from retailml.governance.model_governance import ModelGovernance

    governance = ModelGovernance(settings, db=db)
    request = governance.request_approval(
        model, version, "production", "maintenance tests", {}, ["ml_engineer"]
    )
    assert governance.approve(request.id, "alice", "ml_engineer", "ok").status == "approved"


def register(registry: ModelRegistry, source: Path, name: str, count: int) -> list[str]:
    versions = [f"1.0.{i}" for i in range(count)]
    for version in versions:
        registry.register_model(name, version, source)
    return versions


def age(registry: ModelRegistry, name: str, days: float, *, used_days: float | None = None) -> None:
    """Make a model's versions (and deployments) ``days`` old in the platform database."""
    then = NOW - timedelta(days=days)
    used = NOW - timedelta(days=used_days) if used_days is not None else then
    with registry.db.session() as session:
        session.execute(
            update(ModelVersionRecord)
            .where(ModelVersionRecord.model_name == name)
            .values(created_at=then, last_used_at=used)
        )
        session.execute(
            update(DeploymentRow)
            .where(DeploymentRow.model_name == name)
            .values(created_at=then, updated_at=then)
        )


def state(registry: ModelRegistry) -> dict[tuple[str, str], tuple[str, str]]:
    """``(model, version) -> (status in the index, whether MLflow's registry still has it)``."""
    with registry.db.session() as session:
        rows = list(session.scalars(select(ModelVersionRecord)))
    out = {}
    for row in rows:
        try:
            registry.client.get_model_version(row.model_name, str(row.mlflow_version))
            where = "mlflow"
        except MlflowException:
            where = "gone"
        out[(row.model_name, row.semver)] = (row.status, where)
    return out


# --- the guide --------------------------------------------------------------------------------


def test_guide_cleanup_script_runs_as_written(
    registry: ModelRegistry,
    saved_model: Path,  # noqa: F811
    settings: Settings,
) -> None:
    register(registry, saved_model, "idle", 7)
    register(registry, saved_model, "busy", 7)
    registry.register_model("serving", "2.0.0", saved_model)
    approve(settings, "serving", "2.0.0", db=registry.db)
    registry.set_alias("serving", "2.0.0", "production")
    age(registry, "idle", 120)
    age(registry, "busy", 45, used_days=1)  # old, but loaded yesterday
    age(registry, "serving", 200, used_days=1)

    code = guide.block("#### 2. Model Cleanup")
    namespace: dict[str, Any] = {"asyncio": asyncio, "datetime": datetime, "timedelta": timedelta}
    exec(compile(code, "cleanup_models.py", "exec"), namespace)

    idle = registry.get_model_versions("idle", limit=100)
    assert [v.version for v in idle] == ["1.0.6", "1.0.5", "1.0.4", "1.0.3", "1.0.2"]
    assert {v.status for v in idle} == {"archived"}
    busy = registry.get_model_versions("busy", limit=100)
    assert [v.version for v in busy] == ["1.0.6", "1.0.5", "1.0.4", "1.0.3", "1.0.2"]
    assert {v.status for v in busy} == {"active"}
    (serving,) = registry.get_model_versions("serving")
    assert (serving.status, serving.aliases) == ("active", ("production",))


# --- the policy -------------------------------------------------------------------------------


def test_cleanup_never_touches_what_serves_even_old_and_beyond_the_keep_count(
    registry: ModelRegistry,
    saved_model: Path,  # noqa: F811
    settings: Settings,
) -> None:
    # A production model whose serving version is the oldest of eight.
    forecast = register(registry, saved_model, "forecast", 8)
    approve(settings, "forecast", "1.0.0", db=registry.db)
    with ModelServer("production", settings, registry=registry) as production:
        assert production.deploy_model_sync(
            {"model_name": "forecast", "model_version": "1.0.0"}
        ).active
    # A staging model: its oldest version deployed to staging, the next one a canary.
    segments = register(registry, saved_model, "segments", 8)
    with ModelServer("staging", settings, registry=registry) as staging:
        assert staging.deploy_model_sync(
            {"model_name": "segments", "model_version": "1.0.0"}
        ).active
    registry.set_alias("segments", "1.0.1", "canary")
    for name in ("forecast", "segments"):
        age(registry, name, 400)  # registered, loaded and deployed long ago
    before = state(registry)

    report = run_cleanup(registry, CleanupPolicy.of(keep=2, older_than="30d"))

    assert [(a.action, a.model_name, a.version, a.status) for a in report.actions] == [
        ("delete", "segments", version, "done") for version in segments[5:1:-1]
    ]
    after = state(registry)
    for version in forecast:  # a production model: nothing deleted, nothing archived
        assert after[("forecast", version)] == before[("forecast", version)] == ("active", "mlflow")
    assert after[("segments", "1.0.0")] == ("active", "mlflow")
    assert after[("segments", "1.0.1")] == ("active", "mlflow")
    assert registry.get_by_alias("forecast", "production").version == "1.0.0"
    assert registry.get_by_alias("segments", "staging").version == "1.0.0"
    assert registry.get_by_alias("segments", "canary").version == "1.0.1"
    spared = {(p.model_name, p.version): p.reasons for p in report.protected}
    assert set(spared) == {("segments", "1.0.0"), ("segments", "1.0.1")}
    assert "holds the 'canary' alias" in spared[("segments", "1.0.1")]
    assert any("deployment to staging" in r for r in spared[("segments", "1.0.0")])

    # Someone removed the production alias in the MLflow UI: the model no longer looks like
    # a production model, but its active production deployment still protects 1.0.0 -
    # even at keep=0 and a day's limits.
    registry.delete_alias("forecast", "production")
    again = run_cleanup(registry, CleanupPolicy.of(keep=0, older_than="1d", archive_unused="1d"))
    touched = {(a.action, a.model_name, a.version) for a in again.actions}
    assert touched == {("delete", "segments", "1.0.6"), ("delete", "segments", "1.0.7")} | {
        ("delete", "forecast", version) for version in forecast[1:]
    }
    assert state(registry)[("forecast", "1.0.0")] == ("active", "mlflow")
    assert state(registry)[("segments", "1.0.1")] == ("active", "mlflow")
    spared = {(p.model_name, p.version): p.reasons for p in again.protected}
    assert spared[("forecast", "1.0.0")] == ("active deployment to production",)


def test_dry_run_lists_exactly_what_cleanup_then_does_and_changes_nothing(
    registry: ModelRegistry,
    saved_model: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    register(registry, saved_model, "old", 7)
    register(registry, saved_model, "recent", 7)
    age(registry, "old", 100)
    age(registry, "recent", 10)
    before = state(registry)

    assert main(["maintenance", "cleanup", "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["dry_run"] is True
    planned = [(a["action"], a["model_name"], a["version"]) for a in plan["actions"]]
    assert planned == [("delete", "old", "1.0.1"), ("delete", "old", "1.0.0")] + [
        ("archive", "old", f"1.0.{i}") for i in range(6, 1, -1)
    ]
    assert {a["status"] for a in plan["actions"]} == {"planned"}
    assert state(registry) == before

    assert main(["maintenance", "cleanup"]) == 0
    printed = capsys.readouterr().out
    assert "deleted 2 versions, archived 5" in printed
    after = state(registry)
    assert after[("old", "1.0.0")] == ("deleted", "gone")
    assert after[("old", "1.0.6")] == ("archived", "mlflow")
    assert {k: v for k, v in after.items() if k[0] == "recent"} == {
        k: v for k, v in before.items() if k[0] == "recent"
    }
    # Nothing left to do: the plan is empty.
    assert plan_cleanup(registry).actions == []


def test_served_predictions_count_as_use(
    settings: Settings,
    tracking: str,  # noqa: F811
    database_url: str,
    saved_model: Path,  # noqa: F811
) -> None:
    with ModelRegistry(settings.model_copy(update={"database_url": database_url})) as registry:
        assert registry.db.dialect == database_url.split(":", 1)[0].split("+", 1)[0]
        served_and_idle(registry, saved_model)


def served_and_idle(registry: ModelRegistry, saved_model: Path) -> None:  # noqa: F811
    register(registry, saved_model, "quiet", 1)
    register(registry, saved_model, "answering", 1)
    age(registry, "quiet", 100)
    age(registry, "answering", 100)
    with registry.db.session() as session:
        session.add(
            PredictionLogEntry(
                request_id="r1",
                model_name="answering",
                model_version="1.0.0",
                environment="production",
                features_hash="0" * 64,
                output={"prediction": 1.0},
                latency_ms=3.0,
                status_code=200,
                created_at=NOW - timedelta(days=2),
            )
        )
    report = run_cleanup(registry)
    assert [(a.action, a.model_name) for a in report.actions] == [("archive", "quiet")]
    assert "unused for 100d" in report.actions[0].reason
    assert registry.get_model_version("answering", "1.0.0").status == "active"


def test_policy_values_are_checked() -> None:
    assert CleanupPolicy.of(keep=3, older_than="12h").older_than == timedelta(hours=12)
    assert parse_age("2w") == timedelta(weeks=2)
    with pytest.raises(ConfigError, match=r"older_than: expected an age such as '30d'.*got '30'"):
        CleanupPolicy.of(older_than="30")
    with pytest.raises(ConfigError, match="keep: expected an int >= 0"):
        CleanupPolicy.of(keep=-1)


# --- freshness --------------------------------------------------------------------------------


def ingest(tmp_path: Path, name: str, start: str, end: str) -> None:
    landing = tmp_path / "landing" / f"{name}.csv"
    generate = ["data", "generate", "--rows", "1500", "--output", str(landing)]
    assert main([*generate, "--start", start, "--end", end]) == 0
    assert main(["data", "ingest", str(landing)]) == 0


def test_freshness_reports_ages_and_fails_when_nothing_new_arrived(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["maintenance", "check-freshness", "--json"]) == 1
    (silver,) = json.loads(capsys.readouterr().out)["items"]
    assert (silver["kind"], silver["status"]) == ("silver", "missing")

    ingest(tmp_path, "first", "2023-01-01", "2023-03-31")
    capsys.readouterr()
    assert main(["maintenance", "check-freshness", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (silver,) = report["items"]
    assert silver["status"] == "fresh" and silver["ingestion_age_s"] < 600
    assert silver["newest_event"].startswith("2023-03-3")
    # The sample data is historical: only an explicit event-age limit judges it.
    assert main(["maintenance", "check-freshness", "--max-event-age", "30d"]) == 1
    assert "newest event" in capsys.readouterr().out

    # Three days without an ingestion: stale at the default 2 days, fresh at 4.
    three_days_ago = NOW - timedelta(days=3)
    from retailml.core.db import PlatformDB

    db = PlatformDB.from_settings(settings)
    with db.session() as session:
        session.execute(update(IngestionRun).values(finished_at=three_days_ago))
        session.execute(update(DataVersion).values(created_at=three_days_ago))
    db.dispose()
    capsys.readouterr()
    assert main(["maintenance", "check-freshness"]) == 1
    printed = capsys.readouterr().out
    assert "nothing new for 3d" in printed and "STALE" in printed
    assert main(["maintenance", "check-freshness", "--max-age", "4d"]) == 0
    assert check_freshness(timedelta(days=4)).stale is False


def test_freshness_of_feature_sets_and_the_production_models_training_data(
    settings: Settings,
    tracking: str,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ingest(tmp_path, "first", "2023-01-01", "2023-03-31")
    features = tmp_path / "features.yaml"
    features.write_text(
        yaml.safe_dump(
            {
                "feature_sets": ["customer_rfm"],
                "validation_rules": {"missing_threshold": 0.5, "outlier_detection": False},
                "on_validation_failure": "warn",
            }
        )
    )
    assert main(["features", "build", "--config", str(features)]) == 0
    config = tmp_path / "segments.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_type": "customer_segmentation",
                "model_name": "segments",
                "hyperparameters": {"n_clusters": 2},
                "validation_strategy": "kfold",
                "n_splits": 2,
                "data": {"source": "feature_set", "name": "customer_rfm"},
            }
        )
    )
    capsys.readouterr()
    assert main(["train", "--config", str(config), "--json"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    with ModelRegistry(settings) as registry:
        registry.register_model("segments", "1.0.0", f"runs:/{run_id}/model")
        approve(settings, "segments", "1.0.0", db=registry.db)
        registry.set_alias("segments", "1.0.0", "production")

    report = check_freshness()
    kinds = {(i.kind, i.name): i for i in report.items}
    assert kinds[("feature_set", "customer_rfm")].status == "fresh"
    model = kinds[("model", "segments")]
    assert (model.status, model.version) == ("current", "1.0.0")
    assert not report.stale

    ingest(tmp_path, "second", "2023-04-01", "2023-04-30")
    report = check_freshness()
    kinds = {(i.kind, i.name): i for i in report.items}
    behind = kinds[("feature_set", "customer_rfm")]
    assert behind.status == "behind" and "retailml features build" in behind.detail
    model = kinds[("model", "segments")]
    assert model.status == "outdated" and "1 newer ingestion" in model.detail
    assert not model.blocking  # the reason to retrain, not to stop
    assert report.stale
    capsys.readouterr()
    assert main(["maintenance", "check-freshness"]) == 1
    assert "feature_set customer_rfm (behind)" in capsys.readouterr().out


def guide_command(script: str, marker: str) -> list[str]:
    """The arguments after ``marker`` (a guide script path) of a command of the guide's script,
    its continuation lines joined."""
    joined = script.replace("\\\n", " ")
    line = next(line for line in joined.splitlines() if marker in line)
    words = shlex.split(line)
    return words[words.index(next(w for w in words if marker in w)) + 1 :]


def test_guide_weekly_script_freshness_and_report_steps_are_cli_commands(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """scripts/retrain_models.sh: `check_data_freshness.py` is `retailml maintenance
    check-freshness` (non-zero when stale, so the script stops), and the report step's
    arguments are `retailml report`'s, as written."""
    script = guide.block("#### 1. Regular Model Retraining", language="bash")
    assert guide_command(script, "check_data_freshness.py") == []
    assert main(["maintenance", "check-freshness"]) == 1  # nothing ingested: stop
    assert "silver silver.transactions (missing)" in capsys.readouterr().out

    arguments = guide_command(script, "generate_performance_report.py")
    assert arguments == [
        "--period",
        "weekly",
        "--models",
        "all",
        "--output",
        "reports/weekly_model_performance.html",
    ]
    assert main(["report", *arguments, "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written["period"] == "weekly"
    report = tmp_path / "reports" / "weekly_model_performance.html"
    assert Path(written["path"]).resolve() == report.resolve() and report.stat().st_size > 0
