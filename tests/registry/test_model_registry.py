"""ModelRegistry: the guide's registration, semantic versions, aliases, retirement, digests."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sqlalchemy import select, update

import guide
from governance.approvals import approve
from retailml.core.db import PlatformDB
from retailml.core.db_registry import ModelVersionRecord
from retailml.core.errors import ConfigError, DataValidationError, NotFoundError, StateError
from retailml.core.settings import Settings
from retailml.deployment import model_server
from retailml.registry import ArtifactIntegrityError, ModelRegistry, ModelVersion
from retailml.registry._records import Instant, json_safe
from retailml.registry._semver import parse_semver
from retailml.training.model_trainer import TrainingResult

NAME = "customer_segments"


def register(registry: ModelRegistry, source: Any, *versions: str, name: str = NAME) -> None:
    for version in versions:
        registry.register_model(name, version, source)


def predicts_segments(model: Any) -> None:
    rows = pd.DataFrame(
        {
            "customer_id": [1, 2, 3],
            "recency": [10.0, 120.0, 300.0],
            "frequency": [30.0, 5.0, 1.0],
            "monetary": [5000.0, 600.0, 50.0],
        }
    )
    out = model.predict(rows)
    assert list(out.columns) == ["segment", "segment_name"] and len(out) == 3


# --- the guide --------------------------------------------------------------------------------


def test_guide_model_registration_runs_as_written(
    registry: ModelRegistry, trained: TrainingResult, tracking: str
) -> None:
    code = guide.block("**Model Registry**:")
    namespace: dict[str, Any] = {
        "datetime": datetime,
        "model_artifact": trained,
        "validation_results": SimpleNamespace(
            metrics={"silhouette_score": np.float64(0.61), "mase": float("nan"), "n": np.int64(3)}
        ),
    }
    guide.run(code, namespace)

    version = namespace["model_version"]
    assert isinstance(version, ModelVersion)
    assert (version.model_name, version.version, version.status) == (
        "sales_forecast_prophet",
        "1.2.0",
        "active",
    )
    # Stored JSON-safely: datetimes as ISO 8601, numpy numbers as numbers, NaN as null.
    stored = registry.get_model_version("sales_forecast_prophet", "1.2.0")
    assert stored.metadata["performance_metrics"] == {
        "silhouette_score": 0.61,
        "mase": None,
        "n": 3,
    }
    assert datetime.fromisoformat(stored.metadata["training_timestamp"]) <= datetime.now()
    assert stored.metadata["features"] == ["date", "seasonality", "trend"]
    json.dumps(stored.metadata, allow_nan=False)
    assert stored.tags == {"production_ready": "true", "sales_forecasting": "true"}
    assert stored.run_id == trained.run_id and len(stored.digest) == 64

    mlflow_version = MlflowClient(tracking).get_model_version(
        "sales_forecast_prophet", str(stored.mlflow_version)
    )
    assert mlflow_version.tags["retailml.semver"] == "1.2.0"
    assert mlflow_version.tags["retailml.digest"] == stored.digest
    assert mlflow_version.tags["production_ready"] == "true"
    predicts_segments(registry.load_model("sales_forecast_prophet", "1.2.0"))


def test_guide_cleanup_script_runs_against_the_registry(
    registry: ModelRegistry, saved_model: Path
) -> None:
    """The guide's cleanup script, as written: old versions of idle models go, production stays."""
    register(registry, saved_model, *(f"1.0.{i}" for i in range(7)), name="idle")
    register(registry, saved_model, "2.0.0", "2.1.0", name="serving")
    approve(registry.settings, "serving", "2.0.0", db=registry.db)
    registry.set_alias("serving", "2.0.0", "production")
    long_ago = dt.datetime.now(dt.UTC) - timedelta(days=120)
    with registry.db.session() as session:
        session.execute(
            update(ModelVersionRecord)
            .where(ModelVersionRecord.model_name == "idle")
            .values(created_at=long_ago)
        )

    code = guide.block("#### 2. Model Cleanup")
    namespace: dict[str, Any] = {"asyncio": asyncio, "datetime": datetime, "timedelta": timedelta}
    exec(compile(guide.rewrite_imports(code), "cleanup_models.py", "exec"), namespace)

    idle = registry.get_model_versions("idle", limit=100)
    # The five newest are kept, then archived for 90 days without use.
    assert [v.version for v in idle] == ["1.0.6", "1.0.5", "1.0.4", "1.0.3", "1.0.2"]
    assert {v.status for v in idle} == {"archived"}
    assert [v.version for v in registry.get_model_versions("serving")] == ["2.1.0", "2.0.0"]
    models = {model.name: model for model in registry.list_models()}
    assert models["serving"].environment == "production"


# --- registration -----------------------------------------------------------------------------


def test_every_kind_of_artifact_registers_and_loads(
    registry: ModelRegistry, trained: TrainingResult, saved_model: Path
) -> None:
    sources: list[Any] = [
        trained,
        trained.model_uri,
        f"runs:/{trained.run_id}/model",
        saved_model,  # a TrainingResult.save directory
        str(saved_model / "model"),  # an MLflow model directory
    ]
    for i, source in enumerate(sources):
        registry.register_model(NAME, f"1.{i}.0", source)
    registry.register_model(NAME, "2.0.0", f"models:/{NAME}/1")
    versions = registry.get_model_versions(NAME)
    assert [v.version for v in versions] == ["2.0.0", "1.4.0", "1.3.0", "1.2.0", "1.1.0", "1.0.0"]
    assert [v.mlflow_version for v in versions] == [6, 5, 4, 3, 2, 1]
    # The trainer's logged model is one artifact, whichever way it is named.
    logged = {v.digest for v in versions if v.version in {"1.0.0", "1.1.0", "1.2.0", "2.0.0"}}
    assert len(logged) == 1
    for version in versions:
        predicts_segments(registry.load_model(NAME, version.version))
        assert (registry.cache_dir / NAME / version.version / "MLmodel").is_file()


def test_a_training_result_without_tracking_is_saved_and_uploaded(
    registry: ModelRegistry, trained: TrainingResult
) -> None:
    untracked = TrainingResult(
        model=trained.model,
        metrics=trained.metrics,
        run_id=None,
        model_uri=None,
        model_name="segments",
        model_type="customer_segmentation",
        algorithm="kmeans",
        hyperparameters={},
        target=None,
    )
    version = registry.register_model(NAME, "0.1.0", untracked)
    assert version.run_id is None and version.model_uri.startswith("file://")
    predicts_segments(registry.load_model(NAME))


@pytest.mark.parametrize(
    ("artifact", "error", "message"),
    [
        (42, ConfigError, r"model_artifact: expected a TrainingResult.*got int 42"),
        ("no/such/dir", ConfigError, r"neither a URI nor an existing directory"),
        ("models:/m-0123456789abcdef0123456789abcdef", NotFoundError, r"exists in the tracking"),
        ("runs:/0123456789abcdef/model", NotFoundError, r"exists in the tracking"),
    ],
)
def test_an_artifact_that_is_not_a_model_is_refused(
    registry: ModelRegistry, artifact: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        registry.register_model(NAME, "1.0.0", artifact)
    assert registry.list_models() == []


def test_a_directory_without_an_mlflow_model_is_refused(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"holds no MLmodel file"):
        registry.register_model(NAME, "1.0.0", tmp_path / "empty")


# --- semantic versions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "fix"),
    [
        ("1.2", r"pass e.g. model_version='1.2.0'"),
        ("01.2.0", r"pass e.g."),
        ("1.2.0-", r"pass e.g."),
        ("1.2.0-rc.01", r"pass e.g."),
        ("", r"pass e.g."),
        (120, r"pass e.g."),
        ("v1.2.0", r"drop the leading 'v': model_version='1.2.0'"),
        ("1.2.0+build.5", r"drop the build metadata"),
    ],
)
def test_a_version_that_is_not_semantic_is_refused(
    registry: ModelRegistry, saved_model: Path, version: Any, fix: str
) -> None:
    with pytest.raises(ConfigError, match=rf"model_version: expected a semantic version.*{fix}"):
        registry.register_model(NAME, version, saved_model)


def test_semantic_versions_order_as_semver_org_says() -> None:
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.2.0",
        "1.10.0",
        "2.0.0",
    ]
    assert sorted(ordered[::-1], key=parse_semver) == ordered


def test_versions_only_increase_and_the_error_names_the_latest(
    registry: ModelRegistry, saved_model: Path
) -> None:
    register(registry, saved_model, "1.2.0")
    with pytest.raises(
        StateError, match=r"above the latest of model 'customer_segments', '1.2.0'.*'1.2.0', alr"
    ):
        registry.register_model(NAME, "1.2.0", saved_model)
    with pytest.raises(
        StateError,
        match=r"got '1.1.9', lower than the latest '1.2.0'. Fix: register it as '1.2.1' or "
        r"'1.3.0' or '2.0.0'",
    ):
        registry.register_model(NAME, "1.1.9", saved_model)
    register(registry, saved_model, "1.3.0-rc.1")
    with pytest.raises(StateError, match=r"'1.3.0-beta', lower.*register it as '1.3.0'"):
        registry.register_model(NAME, "1.3.0-beta", saved_model)
    register(registry, saved_model, "1.3.0")
    registry.delete_model_version(NAME, "1.3.0")
    # A deleted version's number is never reused.
    with pytest.raises(StateError, match=r"'1.3.0', already registered \(deleted"):
        registry.register_model(NAME, "1.3.0", saved_model)
    register(registry, saved_model, "1.3.1")
    assert [v.version for v in registry.get_model_versions(NAME)] == [
        "1.3.1",
        "1.3.0-rc.1",
        "1.2.0",
    ]
    # Another model's versions are its own.
    register(registry, saved_model, "0.1.0", name="other")


def test_bad_names_tags_and_metadata_are_refused(
    registry: ModelRegistry, saved_model: Path
) -> None:
    with pytest.raises(ConfigError, match=r"model_name: expected a model name.*'sales forecast'"):
        registry.register_model("sales forecast", "1.0.0", saved_model)
    with pytest.raises(ConfigError, match=r"tags: .*got 'production_ready'.*tags=\['production"):
        registry.register_model(NAME, "1.0.0", saved_model, tags="production_ready")
    with pytest.raises(ConfigError, match=r"not starting with 'retailml.'.*'retailml.semver'"):
        registry.register_model(NAME, "1.0.0", saved_model, tags={"retailml.semver": "9.9.9"})
    with pytest.raises(DataValidationError, match=r"metadata\['model'\]: expected JSON"):
        registry.register_model(NAME, "1.0.0", saved_model, metadata={"model": object()})
    assert registry.list_models() == []


def test_metadata_becomes_plain_json() -> None:
    when = datetime(2024, 1, 31, 12, 30)
    converted = json_safe(
        {
            "when": when,
            "day": dt.date(2024, 1, 31),
            "took": timedelta(minutes=2),
            "scores": np.array([0.5, np.nan]),
            "count": np.int64(7),
            "ok": np.bool_(True),
            "path": Path("/tmp/x"),
            "stamp": pd.Timestamp("2024-01-31"),
            "series": pd.Series({"a": 1.5}),
            "labels": {"b", "a"},
            1: ("x", float("inf")),
        }
    )
    assert converted == {
        "when": "2024-01-31T12:30:00",
        "day": "2024-01-31",
        "took": 120.0,
        "scores": [0.5, None],
        "count": 7,
        "ok": True,
        "path": "/tmp/x",
        "stamp": "2024-01-31T00:00:00",
        "series": {"a": 1.5},
        "labels": ["a", "b"],
        "1": ["x", None],
    }
    json.dumps(converted, allow_nan=False)
    with pytest.raises(DataValidationError, match=r"metadata\['a'\]\[0\]: expected JSON"):
        json_safe({"a": [object()]})


def test_registry_times_compare_with_naive_local_datetimes() -> None:
    now = Instant.of(dt.datetime.now(dt.UTC))
    assert now.tzinfo is dt.UTC
    assert now < datetime.now() + timedelta(minutes=1)
    assert now > datetime.now() - timedelta(minutes=1)
    assert datetime.now() - timedelta(days=30) < now
    assert now - timedelta(days=1) < datetime.now()
    assert now == now.astimezone(dt.timezone(timedelta(hours=5)))


# --- lookup and pagination --------------------------------------------------------------------


def test_versions_page_newest_first(registry: ModelRegistry, saved_model: Path) -> None:
    register(registry, saved_model, "1.0.0", "1.0.1", "1.1.0", "2.0.0-rc.1", "2.0.0")

    def page(limit: int, offset: int) -> list[str]:
        versions = registry.get_model_versions(model_name=NAME, limit=limit, offset=offset)
        return [v.version for v in versions]

    assert page(2, 0) == ["2.0.0", "2.0.0-rc.1"]
    assert page(2, 2) == ["1.1.0", "1.0.1"]
    assert page(2, 4) == ["1.0.0"]
    assert page(2, 5) == []
    assert page(100, 0) == ["2.0.0", "2.0.0-rc.1", "1.1.0", "1.0.1", "1.0.0"]
    newest = registry.get_model_versions(NAME)[0]
    assert newest.created_at < datetime.now() + timedelta(minutes=1)
    assert newest.created_by and newest.last_used == newest.created_at
    with pytest.raises(ConfigError, match=r"limit: expected an int >= 1; got 0"):
        registry.get_model_versions(NAME, limit=0)
    with pytest.raises(ConfigError, match=r"offset: expected an int >= 0; got -1"):
        registry.get_model_versions(NAME, offset=-1)


def test_unknown_models_versions_and_aliases_list_what_exists(
    registry: ModelRegistry, saved_model: Path
) -> None:
    register(registry, saved_model, "1.0.0", "1.1.0")
    registry.set_alias(NAME, "1.0.0", "staging")
    with pytest.raises(NotFoundError, match=r"got 'churn'; registered: customer_segments"):
        registry.get_model_versions("churn")
    with pytest.raises(
        NotFoundError,
        match=r"got '3.0.0'; versions: 1.1.0, 1.0.0; aliases: staging -> 1.0.0",
    ):
        registry.load_model(NAME, "3.0.0")
    with pytest.raises(NotFoundError, match=r"got 'production'; versions: 1.1.0, 1.0.0"):
        registry.get_by_alias(NAME, "production")
    with pytest.raises(ConfigError, match=r"alias: expected an alias among production, staging"):
        registry.get_by_alias(NAME, "prod")


def test_aliases_promote_versions_and_set_the_environment(
    registry: ModelRegistry, saved_model: Path
) -> None:
    register(registry, saved_model, "1.0.0", "1.1.0")
    (model,) = registry.list_models()
    assert (model.name, model.environment, model.latest_version) == (NAME, "none", "1.1.0")
    assert model.versions == ("1.1.0", "1.0.0") and model.aliases == {}

    assert registry.set_alias(NAME, "1.1.0", "staging").aliases == ("staging",)
    assert registry.list_models()[0].environment == "staging"
    # Promote whatever staging holds.
    approve(registry.settings, NAME, "1.1.0", db=registry.db)
    registry.set_alias(NAME, "staging", "production")
    registry.set_alias(NAME, "1.0.0", "canary")
    (model,) = registry.list_models()
    assert model.environment == "production"
    assert model.aliases == {"production": "1.1.0", "staging": "1.1.0", "canary": "1.0.0"}
    assert registry.get_by_alias(NAME, "production").version == "1.1.0"
    versions = {v.version: v.aliases for v in registry.get_model_versions(NAME)}
    assert versions == {"1.1.0": ("production", "staging"), "1.0.0": ("canary",)}

    # None loads production; an alias loads its version.
    assert registry.get_model_version(NAME).version == "1.1.0"
    predicts_segments(registry.load_model(NAME))
    predicts_segments(registry.load_model(NAME, "canary"))
    assert registry.get_model_version(NAME, "canary").last_used_at is not None
    registry.delete_alias(NAME, "canary")
    with pytest.raises(NotFoundError, match=r"aliases: production -> 1.1.0, staging -> 1.1.0"):
        registry.get_by_alias(NAME, "canary")


# --- retirement -------------------------------------------------------------------------------


def test_the_production_version_cannot_be_deleted_or_archived(
    registry: ModelRegistry, saved_model: Path
) -> None:
    register(registry, saved_model, "1.0.0", "1.1.0")
    approve(registry.settings, NAME, "1.0.0", db=registry.db)
    registry.set_alias(NAME, "1.0.0", "production")
    refused = r"does not serve production; got '1.0.0', which holds the 'production' alias. "
    refused += r"Fix: promote another version or roll back first"
    with pytest.raises(StateError, match=refused):
        registry.delete_model_version(NAME, "1.0.0")
    with pytest.raises(StateError, match=refused):
        registry.delete_model_version(NAME, "production")
    with pytest.raises(StateError, match=refused):
        registry.archive_model(NAME, "1.0.0")
    with pytest.raises(StateError, match=refused):
        registry.archive_model(NAME)  # every version, production among them
    assert {v.status for v in registry.get_model_versions(NAME)} == {"active"}

    approve(registry.settings, NAME, "1.1.0", db=registry.db)
    registry.set_alias(NAME, "1.1.0", "production")  # promote another version
    assert registry.delete_model_version(NAME, "1.0.0").status == "deleted"
    assert [v.version for v in registry.get_model_versions(NAME)] == ["1.1.0"]


def test_deleted_and_archived_versions_are_not_served(
    registry: ModelRegistry, saved_model: Path, tracking: str
) -> None:
    register(registry, saved_model, "1.0.0", "1.1.0", "1.2.0")
    approve(registry.settings, NAME, "1.2.0", db=registry.db)
    registry.set_alias(NAME, "1.2.0", "production")
    registry.set_alias(NAME, "1.1.0", "staging")

    deleted = registry.delete_model_version(NAME, "1.0.0")
    client = MlflowClient(tracking)
    assert [int(v.version) for v in client.search_model_versions(f"name = '{NAME}'")] == [3, 2]
    assert not (registry.cache_dir / NAME / "1.0.0").exists()
    with pytest.raises(NotFoundError, match=r"got '1.0.0'; versions: 1.2.0, 1.1.0"):
        registry.load_model(NAME, deleted.version)

    (archived,) = registry.archive_model(NAME, "1.1.0")
    assert (archived.status, archived.aliases) == ("archived", ())
    assert client.get_model_version(NAME, "2").tags["retailml.status"] == "archived"
    assert "staging" not in client.get_registered_model(NAME).aliases
    with pytest.raises(StateError, match=r"got '1.1.0', which is archived. Fix: restore it"):
        registry.load_model(NAME, "1.1.0")
    with pytest.raises(StateError, match=r"hold alias 'staging'; got '1.1.0', which is archived"):
        registry.set_alias(NAME, "1.1.0", "staging")
    assert registry.archive_model(NAME, "1.1.0")[0].status == "archived"  # idempotent

    assert registry.restore_model_version(NAME, "1.1.0").status == "active"
    predicts_segments(registry.load_model(NAME, "1.1.0"))
    (model,) = registry.list_models()
    assert model.versions == ("1.2.0", "1.1.0")


# --- digests ----------------------------------------------------------------------------------


def _stored_files(settings: Settings) -> list[Path]:
    return sorted((settings.home / "mlartifacts").rglob("python_model.pkl"))


def test_a_tampered_stored_artifact_is_refused_naming_both_digests(
    registry: ModelRegistry, trained: TrainingResult, settings: Settings
) -> None:
    version = registry.register_model(NAME, "1.0.0", trained)
    (stored,) = _stored_files(settings)
    # Pickle ignores bytes after its STOP opcode: this copy would still load.
    with stored.open("ab") as handle:
        handle.write(b"tampered")
    shutil.rmtree(registry.cache_dir)  # a fresh server: nothing cached yet

    with pytest.raises(
        ArtifactIntegrityError, match=r"model 'customer_segments' version '1.0.0'"
    ) as e:
        registry.load_model(NAME, "1.0.0")
    message = str(e.value)
    assert f"registered with SHA-256 digest {version.digest}" in message
    assert "will not be served" in message
    actual = message.split("got digest ", 1)[1].split(" ", 1)[0]
    assert len(actual) == 64 and actual != version.digest
    assert isinstance(e.value, StateError)
    # Nothing of the refused copy is left to serve.
    assert not (registry.cache_dir / NAME / "1.0.0").exists()
    with pytest.raises(ArtifactIntegrityError):
        registry.download_model(NAME)


def test_a_changed_cached_copy_is_never_served(
    registry: ModelRegistry, trained: TrainingResult, settings: Settings, caplog: Any
) -> None:
    version = registry.register_model(NAME, "1.0.0", trained)
    cached = registry.cache_dir / NAME / "1.0.0" / "python_model.pkl"
    original = cached.read_bytes()
    cached.write_bytes(original + b"tampered")
    # The cached copy is discarded and the stored artifact, which still matches, downloaded.
    predicts_segments(registry.load_model(NAME, "1.0.0"))
    assert cached.read_bytes() == original
    assert "cached copy of customer_segments 1.0.0 changed" in caplog.text

    # With the stored artifact changed too, the load is refused.
    cached.write_bytes(original + b"tampered")
    (stored,) = _stored_files(settings)
    stored.write_bytes(original + b"tampered")
    with pytest.raises(ArtifactIntegrityError, match=version.digest):
        registry.load_model(NAME, "1.0.0")


# --- the platform database, on SQLite and PostgreSQL --------------------------------------------


def test_the_index_lives_in_the_platform_database(
    settings: Settings, tracking: str, database_url: str, saved_model: Path
) -> None:
    on_db = settings.model_copy(update={"database_url": database_url})
    with ModelRegistry(on_db) as registry:
        assert registry.db.dialect == database_url.split(":", 1)[0].split("+", 1)[0]
        for i in range(3):
            registry.register_model(
                NAME,
                f"1.{i}.0",
                saved_model,
                metadata={"at": datetime.now(), "metrics": {"mase": np.float64("nan")}},
                tags={"team": "ds", "fold_count": 2},
            )
        registry.delete_model_version(NAME, "1.0.0")
        registry.archive_model(NAME, "1.1.0")
        assert [v.version for v in registry.get_model_versions(NAME, limit=1, offset=1)] == [
            "1.1.0"
        ]
        predicts_segments(registry.load_model(NAME))

    db = PlatformDB(database_url)
    try:
        with db.session() as session:
            rows = list(session.scalars(select(ModelVersionRecord).order_by(ModelVersionRecord.id)))
    finally:
        db.dispose()
    assert [(r.semver, r.mlflow_version, r.status) for r in rows] == [
        ("1.0.0", 1, "deleted"),
        ("1.1.0", 2, "archived"),
        ("1.2.0", 3, "active"),
    ]
    assert len({r.digest for r in rows}) == 1 and len(rows[0].digest) == 64
    assert rows[2].meta["metrics"] == {"mase": None}
    assert rows[2].tags == {"team": "ds", "fold_count": "2"}
    assert rows[2].last_used_at is not None and rows[0].last_used_at is None


def test_the_guide_module_reexports_the_registry() -> None:
    assert model_server.ModelRegistry is ModelRegistry
    assert set(model_server.__all__) >= {"ModelRegistry", "ModelVersion", "ArtifactIntegrityError"}
