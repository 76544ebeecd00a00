"""The guide's ``.mlflow/experiments/config.yaml`` is a real input of ``retailml train``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from guide import block
from retailml.cli import main
from retailml.core.errors import ConfigError
from retailml.core.settings import Settings
from retailml.training._experiment_config import (
    DEFAULT_EXPERIMENT_CONFIG,
    load_experiment_config,
)
from retailml.training._reproduce import reproduce_run
from retailml.training.model_trainer import ModelTrainer

HEADING = "### 1. Version Control and Reproducibility"


def guide_yaml() -> str:
    """The guide's experiment config block, exactly as the guide writes it."""
    return block(HEADING, language="yaml")


@pytest.fixture
def training_config(settings: Settings, tmp_path: Path) -> Path:
    """A tiny segmentation training config (trains in a second or two)."""
    rng = np.random.default_rng(5)
    group = rng.integers(0, 3, 120)
    frame = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(120)],
            "recency": np.array([10, 120, 300])[group] * rng.lognormal(0, 0.2, 120),
            "frequency": np.array([30, 5, 1])[group] * rng.lognormal(0, 0.2, 120) + 1,
            "monetary": np.array([5000, 600, 50])[group] * rng.lognormal(0, 0.3, 120),
        }
    )
    data = tmp_path / "customers.parquet"
    frame.to_parquet(data)
    path = tmp_path / "segments.yaml"
    config = {
        "model_type": "customer_segmentation",
        "model_name": "segments",
        "hyperparameters": {"n_clusters": 3},
        "n_splits": 2,
        "data": {"source": "file", "path": str(data)},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def local_copy(tmp_path: Path, store: str, **reproducibility: object) -> dict[str, object]:
    """The guide's config with its tracking and artifact stores moved into tmp_path.

    The guide's postgresql://mlflow-db and s3:// hosts do not exist on this
    machine, so a SQLite tracking store and a local artifact directory stand in;
    every other value is the guide's own.
    """
    config = yaml.safe_load(guide_yaml())
    config["experiment_config"]["tracking_uri"] = f"sqlite:///{tmp_path / store}"
    config["experiment_config"]["artifact_store"] = str(tmp_path / f"{store}-artifacts")
    config["reproducibility"].update(reproducibility)
    return config


def train_with(
    training_config: Path, experiment_file: Path, capsys: pytest.CaptureFixture[str]
) -> pytest.CaptureResult[str]:
    """``retailml train --json`` with the experiment config; what it printed (exit 0 checked)."""
    capsys.readouterr()
    code = main(
        [
            "train",
            "--config",
            str(training_config),
            "--experiment-config",
            str(experiment_file),
            "--json",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured


def git_checkout(directory: Path) -> str:
    """Make ``directory`` a git checkout with one commit; its hash."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
            cwd=directory,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    git("init", "-q")
    (directory / "README").write_text("retailml test checkout\n")
    git("add", "README")
    git("commit", "-q", "-m", "init")
    return git("rev-parse", "HEAD")


def test_the_guide_block_loads_and_validates_as_written(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(guide_yaml())
    config = load_experiment_config(path)
    assert config.name == "sales_forecasting"
    assert config.experiment_config.artifact_store == "s3://mlflow-artifacts/experiments/"
    assert config.artifact_location() == "s3://mlflow-artifacts/experiments/"
    # psycopg 3 is the installed driver.
    assert config.tracking_uri() == "postgresql+psycopg://mlflow:password@mlflow-db:5432/mlflow"
    assert config.model_config_.versioning_strategy == "semantic"
    assert config.seed == 42
    assert config.reproducibility.docker_image == "mlops/training:v1.2.0"
    assert config.reproducibility.code_version == "git_commit_hash"
    assert config.run_tags("abc123", "digest")["retailml.code_version"] == "abc123"
    notes = "\n".join(config.notes(settings))
    # The platform database is never switched implicitly: the user is told how.
    assert "RETAILML_DATABASE_URL=postgresql://models-db:5432/model_registry" in notes
    assert "mlflow:password" not in notes


def test_train_applies_the_guides_config_to_the_mlflow_run(
    training_config: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    commit = git_checkout(tmp_path)
    (tmp_path / "requirements.txt").write_text("retailml\n")
    experiment_file = tmp_path / "guide-experiment.yaml"
    experiment_file.write_text(yaml.safe_dump(local_copy(tmp_path, "mlflow.db")))
    captured = train_with(training_config, experiment_file, capsys)
    printed = captured.err.replace("\n", "")  # Rich wraps long paths
    assert f"experiment config: {experiment_file}" in printed
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sales_forecasting")
    assert experiment is not None
    assert experiment.artifact_location == (tmp_path / "mlflow.db-artifacts").as_uri()
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["seed"] == "42"
    assert run.data.tags["retailml.docker_image"] == "mlops/training:v1.2.0"
    assert run.data.tags["retailml.code_version"] == commit
    assert run.data.tags["retailml.git_commit"] == commit
    assert run.data.tags["retailml.versioning_strategy"] == "semantic"
    assert run.info.artifact_uri.startswith((tmp_path / "mlflow.db-artifacts").as_uri())
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"experiment_config.yaml", "environment"} <= logged
    env = client.list_artifacts(run.info.run_id, "environment")
    assert [a.path for a in env] == ["environment/requirements.txt"]

    # Discovered in the working directory; an explicit tracking URI setting wins over
    # the file's, and the file's seed and literal code version reach the run.
    discovered = tmp_path / DEFAULT_EXPERIMENT_CONFIG
    discovered.parent.mkdir(parents=True)
    discovered.write_text(
        yaml.safe_dump(local_copy(tmp_path, "mlflow.db", seed=7, code_version="release-2026.11"))
    )
    override = f"sqlite:///{tmp_path / 'override.db'}"
    monkeypatch.setenv("RETAILML_MLFLOW_TRACKING_URI", override)
    from retailml.core.settings import get_settings

    get_settings.cache_clear()
    code = main(["train", "--config", str(training_config), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    printed = captured.err.replace("\n", "")
    assert f"experiment config: {discovered}" in printed
    assert "wins over the experiment config's" in printed
    client = MlflowClient(tracking_uri=override)
    experiment = client.get_experiment_by_name("sales_forecasting")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["seed"] == "7"
    assert run.data.tags["retailml.code_version"] == "release-2026.11"


def test_reproduce_finds_a_run_in_its_experiments_tracking_store(
    settings: Settings, training_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    experiment_file = tmp_path / "guide-experiment.yaml"
    experiment_file.write_text(yaml.safe_dump(local_copy(tmp_path, "experiments.db")))
    store = f"sqlite:///{tmp_path / 'experiments.db'}"
    captured = train_with(training_config, experiment_file, capsys)
    run_id = json.loads(captured.out)["run_id"]
    # The run is in the experiment's store, not the workspace's default one; the
    # training job recorded the experiment config, so no option is needed to find it.
    code = main(["reproduce", run_id, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    printed = json.loads(captured.out)
    assert printed["ok"] and printed["data_source"].startswith("job ")
    reproduced = MlflowClient(tracking_uri=store).get_run(printed["reproduced_run_id"])
    assert reproduced.data.tags["retailml.reproduces"] == run_id

    # A run no job recorded (the Python API, into the same store): without the
    # experiment config it is not found; --experiment-config names its store.
    data = Path(yaml.safe_load(training_config.read_text())["data"]["path"])
    frame = pd.read_parquet(data)
    api_run = (
        ModelTrainer(
            model_type="customer_segmentation",
            n_splits=2,
            hyperparameters={"n_clusters": 3},
            settings=settings.model_copy(update={"mlflow_tracking_uri": store}),
        )
        .train_sync(frame)
        .run_id
    )
    assert api_run is not None
    capsys.readouterr()
    assert main(["reproduce", api_run, "--data", str(data)]) == 1
    printed = capsys.readouterr().err.replace("\n", "")
    assert "the id of an MLflow run in this workspace's tracking store" in printed
    assert "--experiment-config" in printed
    code = main(
        ["reproduce", api_run, "--data", str(data), "--experiment-config", str(experiment_file)]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"experiment config: {experiment_file}" in captured.err.replace("\n", "")
    outcome = reproduce_run(
        api_run, data=frame, experiment_config=load_experiment_config(experiment_file)
    )
    assert outcome.ok and outcome.data_source == "data file"

    # A job that trained without an experiment config used the workspace's store;
    # a config found in the working directory later does not send reproduce elsewhere.
    assert main(["train", "--config", str(training_config), "--json"]) == 0
    plain_run = json.loads(capsys.readouterr().out)["run_id"]
    discovered = tmp_path / DEFAULT_EXPERIMENT_CONFIG
    discovered.parent.mkdir(parents=True)
    discovered.write_text(experiment_file.read_text())
    code = main(["reproduce", plain_run])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"experiment config: {discovered}" in captured.err.replace("\n", "")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_bad_experiment_configs_are_clear_errors(
    training_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    guide = guide_yaml()
    unknown = write(tmp_path / "unknown.yaml", guide.replace("seed: 42", "seeds: 42"))
    with pytest.raises(ConfigError, match=r"unknown key 'reproducibility\.seeds' \(valid keys"):
        load_experiment_config(unknown)
    calendar = write(
        tmp_path / "calendar.yaml",
        guide.replace('versioning_strategy: "semantic"', 'versioning_strategy: "calendar"'),
    )
    with pytest.raises(ConfigError, match=r"only 'semantic' \(major\.minor\.patch\) is supported"):
        load_experiment_config(calendar)
    section = write(tmp_path / "section.yaml", guide + "\ndeployment:\n  replicas: 2\n")
    with pytest.raises(ConfigError, match=r"unknown section 'deployment' \(valid sections: exp"):
        load_experiment_config(section)
    with pytest.raises(ConfigError, match="no file at"):
        load_experiment_config(tmp_path / "missing.yaml")
    broken = write(tmp_path / "broken.yaml", "experiment_config: [name\n")
    with pytest.raises(ConfigError, match="valid UTF-8 YAML"):
        load_experiment_config(broken)
    # Through the CLI: exit 1 and the message, before any job or run is made.
    code = main(["train", "--config", str(training_config), "--experiment-config", str(calendar)])
    assert code == 1
    assert "versioning_strategy" in capsys.readouterr().err
    # An unreachable PostgreSQL tracking store fails at once (MLflow would retry for
    # minutes), password masked; nothing listens on port 1.
    unreachable = write(
        tmp_path / "unreachable.yaml",
        guide.replace("mlflow-db:5432", "127.0.0.1:1").replace(
            "s3://mlflow-artifacts/experiments/", str(tmp_path / "artifacts")
        ),
    )
    code = main(
        ["train", "--config", str(training_config), "--experiment-config", str(unreachable)]
    )
    assert code == 1
    printed = capsys.readouterr().err.replace("\n", " ")
    assert "expected a reachable MLflow tracking store" in printed
    assert "mlflow:***@127.0.0.1:1" in printed
    assert "password" not in printed
