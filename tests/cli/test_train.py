"""``retailml train`` and ``retailml validate``: configs, saved models, exit codes and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from retailml.cli import main
from retailml.core.settings import Settings
from retailml.training.model_trainer import TrainingResult

REPO = Path(__file__).resolve().parents[2]


def customers(n: int = 300, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 3, n)
    return pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            "recency": np.array([10, 120, 300])[group] * rng.lognormal(0, 0.2, n),
            "frequency": np.array([30, 5, 1])[group] * rng.lognormal(0, 0.2, n) + 1,
            "monetary": np.array([5000, 600, 50])[group] * rng.lognormal(0, 0.3, n),
        }
    )


@pytest.fixture
def config(settings: Settings, tmp_path: Path) -> Path:
    data = tmp_path / "customers.parquet"
    customers().to_parquet(data)
    path = tmp_path / "segments.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model_type": "customer_segmentation",
                "model_name": "segments",
                "hyperparameters": {"n_clusters": 3},
                "n_splits": 2,
                "data": {"source": "file", "path": str(data), "holdout": 0.25},
                "validation": {"performance_thresholds": {"silhouette_score": 0.3}},
            }
        )
    )
    return path


def test_every_shipped_config_is_a_valid_training_config() -> None:
    from retailml.cli.train import load_training_config
    from retailml.training.model_trainer import ModelTrainer

    shipped = sorted((REPO / "configs").glob("*.yaml"))
    types = set()
    for path in shipped:
        if path.name == "features.yaml":
            continue
        loaded = load_training_config(path)
        trainer = ModelTrainer(
            model_type=loaded["model_type"],
            algorithm=loaded.get("algorithm"),
            hyperparameters=loaded.get("hyperparameters"),
            validation_strategy=loaded.get("validation_strategy"),
            n_splits=loaded.get("n_splits", 5),
        )
        types.add(trainer.model_type)
    assert types == {
        "sales_forecast",
        "customer_segmentation",
        "anomaly_detection",
        "demand_prediction",
    }


def test_train_saves_the_model_and_points_latest_at_it(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "artifacts" / "models"
    assert main(["train", "--config", str(config), "--output-dir", str(output), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["model_type"] == "customer_segmentation"
    assert printed["metrics"]["silhouette_score"] > 0.3
    latest = output / "latest"
    assert latest.resolve() == (output / "segments").resolve()
    loaded = TrainingResult.load(latest)
    assert loaded.run_id == printed["run_id"]
    assert (latest / "test.parquet").is_file()
    assert len(pd.read_parquet(latest / "test.parquet")) == 75


def test_validate_passes_and_fails_with_the_exit_code(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "models"
    assert main(["train", "--config", str(config), "--output-dir", str(output)]) == 0
    capsys.readouterr()
    assert main(["validate", "--model-path", str(output / "latest")]) == 0
    assert "PASSED" in capsys.readouterr().out
    code = main(
        [
            "validate",
            "--model-path",
            str(output / "latest"),
            "--threshold",
            "silhouette_score=0.99",
            "--json",
        ]
    )
    assert code == 1
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "failed"


def test_train_and_validate_errors_are_one_clear_line(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_type: sales_forecast\nepochs: 3\n")
    assert main(["train", "--config", str(bad)]) == 1
    assert "unknown ['epochs']" in capsys.readouterr().err
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("model_type: churn\n")
    assert main(["train", "--config", str(unknown)]) == 1
    assert "'sales_forecast'" in capsys.readouterr().err
    assert main(["validate", "--model-path", str(tmp_path / "nowhere")]) == 1
    assert "result.json" in capsys.readouterr().err
    assert main(["validate", "--model-path", str(tmp_path), "--threshold", "mape"]) == 2


def test_train_without_data_says_how_to_get_it(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--config", str(REPO / "configs" / "sales_forecast.yaml")]) == 1
    message = capsys.readouterr().err
    assert "daily_sales" in message
