"""Tuning with Optuna: nested MLflow runs per trial, pruning, and a study shared by processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from retailml.core.errors import ConfigError
from retailml.core.settings import Settings
from retailml.training._tuning import parse_tuning
from retailml.training.model_trainer import ModelTrainer

CUSTOMERS = """
import numpy as np, pandas as pd
rng = np.random.default_rng(7)
group = rng.integers(0, 3, 400)
data = pd.DataFrame({
    "recency": np.array([10, 120, 300])[group] * rng.lognormal(0, 0.2, 400),
    "frequency": np.array([30, 5, 1])[group] * rng.lognormal(0, 0.2, 400) + 1,
    "monetary": np.array([5000, 600, 50])[group] * rng.lognormal(0, 0.3, 400),
})
"""


def customers() -> pd.DataFrame:
    namespace: dict[str, object] = {}
    exec(CUSTOMERS, namespace)
    data = namespace["data"]
    assert isinstance(data, pd.DataFrame)
    return data


def test_each_trial_is_a_nested_run_and_the_best_parameters_are_used(settings: Settings) -> None:
    trainer = ModelTrainer(
        model_type="customer_segmentation",
        n_splits=3,
        tuning={
            "n_trials": 4,
            "search_space": {"n_clusters": {"type": "int", "low": 2, "high": 5}},
        },
    )
    result = trainer.train_sync(customers(), model_name="tuned")
    assert result.best_params is not None
    assert result.hyperparameters["n_clusters"] == result.best_params["n_clusters"]
    client = MlflowClient()
    run = client.get_run(result.run_id)
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    assert len(children) == 4
    assert {c.data.tags["optuna.state"] for c in children} <= {"complete", "pruned"}
    assert all("n_clusters" in c.data.params for c in children)
    assert run.data.params["best.n_clusters"] == str(result.best_params["n_clusters"])
    best = max(
        (c for c in children if "silhouette_score" in c.data.metrics),
        key=lambda c: c.data.metrics["silhouette_score"],
    )
    assert best.data.params["n_clusters"] == str(result.best_params["n_clusters"])


def test_a_poor_trial_is_pruned_after_its_first_fold(settings: Settings, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="pruning", storage=storage, direction="maximize")
    space = {"n_clusters": optuna.distributions.IntDistribution(2, 9)}
    for _ in range(3):  # three earlier trials far better at every fold
        study.add_trial(
            optuna.trial.create_trial(
                params={"n_clusters": 3},
                distributions=space,
                value=0.99,
                intermediate_values={0: 0.99, 1: 0.99, 2: 0.99},
            )
        )
    trainer = ModelTrainer(
        model_type="customer_segmentation",
        n_splits=3,
        tuning={
            "n_trials": 1,
            "storage": storage,
            "study_name": "pruning",
            "search_space": {"n_clusters": {"type": "int", "low": 2, "high": 2}},
        },
    )
    result = trainer.train_sync(customers(), model_name="pruned")
    trials = optuna.load_study(study_name="pruning", storage=storage).trials
    assert trials[-1].state == optuna.trial.TrialState.PRUNED
    assert list(trials[-1].intermediate_values) == [0]  # stopped after the first fold
    client = MlflowClient()
    run = client.get_run(result.run_id)
    (child,) = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    assert child.data.tags["optuna.state"] == "pruned"


def test_tuning_errors_name_what_is_wrong(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="n_trials"):
        parse_tuning({"n_trials": 0}, "customer_segmentation", "kmeans", None)
    with pytest.raises(ConfigError, match="low <= high"):
        parse_tuning(
            {"search_space": {"n_clusters": {"type": "int", "low": 5, "high": 2}}},
            "customer_segmentation",
            "kmeans",
            None,
        )
    with pytest.raises(ConfigError, match="unknown 'n_cluster'"):
        ModelTrainer(
            model_type="customer_segmentation",
            tuning={"search_space": {"n_cluster": {"type": "int", "low": 2, "high": 5}}},
        )


@pytest.mark.postgres
def test_two_processes_tune_one_study_in_postgresql(postgres_url: str, tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(
        CUSTOMERS
        + textwrap.dedent(
            f"""
            from retailml.training.model_trainer import ModelTrainer
            trainer = ModelTrainer(
                model_type="customer_segmentation",
                n_splits=2,
                tuning={{"n_trials": 4, "storage": {postgres_url!r}, "study_name": "shared"}},
            )
            result = trainer.train_sync(data, model_name="shared")
            print("best", result.best_params)
            """
        ),
        encoding="utf-8",
    )
    # Create the study once, so the two workers only ever load it.
    optuna.create_study(study_name="shared", storage=postgres_url, direction="maximize")
    workers = []
    for index in range(2):
        env = {**os.environ, "RETAILML_HOME": str(tmp_path / f"ws{index}")}
        env.pop("MLFLOW_TRACKING_URI", None)
        workers.append(
            subprocess.Popen(
                [sys.executable, str(script)],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for worker in workers:
        out, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-3000:]
        assert "best" in out
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 8
    assert sorted(t.number for t in trials) == list(range(8))
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    assert all(t.state.is_finished() for t in trials)
    # Each worker's MLflow run has its own trials as nested runs.
    for index in range(2):
        client = MlflowClient(f"sqlite:///{tmp_path / f'ws{index}' / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("customer_segmentation")
        assert experiment is not None
        assert len(client.search_runs([experiment.experiment_id])) == 5
    assert np.isfinite(study.best_value)
