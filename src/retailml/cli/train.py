"""``retailml train`` and ``retailml validate`` (the guide's train_model.py, validate_model.py)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final

import typer
from rich.table import Table

from retailml.cli._console import err, out
from retailml.core.errors import ConfigError, NotFoundError, problem
from retailml.core.io import atomic_write_text, read_yaml_mapping
from retailml.core.settings import Settings, get_settings

#: Keys of a training config (configs/<model type>.yaml).
CONFIG_KEYS: Final = (
    "model_type",
    "algorithm",
    "model_name",
    "target",
    "hyperparameters",
    "validation_strategy",
    "n_splits",
    "tuning",
    "data",
    "validation",
)
LATEST: Final = "latest"


def default_output_dir(settings: Settings) -> Path:
    """``<home>/artifacts/models``."""
    return Path(settings.home) / "artifacts" / "models"


def load_training_config(path: Path) -> dict[str, Any]:
    """Read and check a training config file.

    Raises:
        ConfigError: for an unreadable file, unknown keys or a missing model_type.
    """
    config = read_yaml_mapping(
        path,
        subject="--config",
        shape="training settings: model_type, algorithm, hyperparameters, data, ... "
        "(see configs/sales_forecast.yaml)",
    )
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigError(
            problem(
                f"keys among {list(CONFIG_KEYS)}",
                f"unknown {unknown}",
                "rename or drop them",
                subject=str(path),
            )
        )
    if "model_type" not in config:
        raise ConfigError(
            problem(
                "a model_type", "none", "add e.g. model_type: sales_forecast", subject=str(path)
            )
        )
    return config


def _point_latest(output_dir: Path, name: str) -> Path:
    """Make ``<output_dir>/latest`` a symlink to ``name``, replaced atomically."""
    latest = output_dir / LATEST
    staging = output_dir / f".{LATEST}.{os.getpid()}.tmp"
    staging.unlink(missing_ok=True)
    staging.symlink_to(name, target_is_directory=True)
    staging.replace(latest)
    return latest


def train_from_config(
    config: Mapping[str, Any],
    *,
    output_dir: Path | None,
    settings: Settings,
    data_window: str | None = None,
    validation_strategy: str | None = None,
    n_trials: int | None = None,
) -> tuple[Any, Path]:
    """Train the model a config describes and save it under ``output_dir/<model_name>``.

    Returns:
        The :class:`~retailml.training.model_trainer.TrainingResult` and its directory.
    """
    from retailml.training._data import load_training_data
    from retailml.training.model_trainer import ModelTrainer

    tuning = dict(config.get("tuning") or {})
    if n_trials is not None:
        tuning["n_trials"] = n_trials
    trainer = ModelTrainer(
        model_type=str(config["model_type"]),
        algorithm=config.get("algorithm"),
        hyperparameters=config.get("hyperparameters") or {},
        validation_strategy=validation_strategy or config.get("validation_strategy"),
        n_splits=int(config.get("n_splits", 5)),
        tuning=tuning or None,
        settings=settings,
    )
    target = config.get("target")
    data = load_training_data(
        config.get("data"), target=target, window=data_window, settings=settings
    )
    err.print(
        f"training {trainer.model_type} ({trainer.algorithm}) on {len(data.train):,} rows "
        f"of {data.source}; {trainer.validation_strategy} x{trainer.n_splits}"
    )
    with err.status("cross-validating and fitting ..."):
        result = trainer.train_sync(
            data.train,
            target=target,
            model_name=config.get("model_name"),
            data_version=data.data_version,
            feature_set_versions=data.feature_set_versions,
        )
    output = output_dir or default_output_dir(settings)
    directory = result.save(output / result.model_name)
    if data.test is not None and not data.test.empty:
        data.test.to_parquet(directory / "test.parquet", index=False)
    atomic_write_text(
        directory / "validation.json",
        json.dumps(dict(config.get("validation") or {}), indent=2) + "\n",
    )
    _point_latest(output, result.model_name)
    return result, directory


def print_training(result: Any, directory: Path) -> None:
    """The metrics table and where the run and model are."""
    table = Table(title=f"{result.model_name}: {result.model_type} / {result.algorithm}")
    table.add_column("metric")
    table.add_column("cross-validated mean", justify="right")
    for name, value in result.metrics.items():
        shown = "undefined" if not math.isfinite(value) else f"{value:,.4f}"
        table.add_row(name, shown)
    out.print(table)
    if result.best_params:
        out.print(f"tuned:     {result.best_params}")
    out.print(f"mlflow run: {result.run_id}   model: {result.model_uri}")
    out.print(f"saved to:   {directory}")


def train(
    config: Annotated[
        Path,
        typer.Option(
            "--config", exists=True, dir_okay=False, help="Training config (configs/*.yaml)."
        ),
    ],
    output_dir: Annotated[
        Path | None,
        typer.Option(help="Where models are saved (default <home>/artifacts/models)."),
    ] = None,
    data_window: Annotated[
        str | None, typer.Option(help="Train on the last window of data, e.g. 2y, 12M, 90d.")
    ] = None,
    validation_strategy: Annotated[
        str | None,
        typer.Option(help="time_series_split, kfold (or k-fold) or holdout; overrides the config."),
    ] = None,
    n_trials: Annotated[
        int | None, typer.Option(min=1, help="Tune with this many Optuna trials.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train, cross-validate and track one model; save it and point <output-dir>/latest at it.

    The model is logged to MLflow (RETAILML_MLFLOW_TRACKING_URI, default
    <home>/mlflow.db) and saved as a directory `retailml validate` reads. The
    config's data.holdout is kept back as test.parquet beside the model.

    Example: retailml train --config configs/sales_forecast.yaml --output-dir artifacts/models/
    """
    settings = get_settings()
    loaded = load_training_config(config)
    result, directory = train_from_config(
        loaded,
        output_dir=output_dir,
        settings=settings,
        data_window=data_window,
        validation_strategy=validation_strategy,
        n_trials=n_trials,
    )
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "model_name": result.model_name,
                    "model_type": result.model_type,
                    "algorithm": result.algorithm,
                    "metrics": result.metrics,
                    "run_id": result.run_id,
                    "model_uri": result.model_uri,
                    "path": str(directory),
                },
                default=str,
            )
        )
        return
    print_training(result, directory)


def _read_frame(path: Path) -> Any:
    import pandas as pd
    import pyarrow.parquet as pq

    if not path.exists():
        raise NotFoundError(
            problem("an existing Parquet/CSV file or directory", repr(str(path)), "check the path")
        )
    if path.is_dir() or path.suffix == ".parquet":
        return pq.read_table(path).to_pandas()
    if path.suffix == ".csv":
        return pd.read_csv(path)
    raise ConfigError(
        problem("a .parquet or .csv file or a Parquet directory", repr(str(path)), "convert it")
    )


def _threshold(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not sep or not name or not math.isfinite(number):
        raise typer.BadParameter(f"expected METRIC=NUMBER such as mape=0.15; got {text!r}")
    return name.strip(), number


def validate(
    model_path: Annotated[
        Path,
        typer.Option(help="A model directory written by `retailml train` (or its `latest`)."),
    ],
    validation_data: Annotated[
        Path | None,
        typer.Option(
            help="Test data: Parquet/CSV file or Parquet directory (default: "
            "the model's test.parquet)."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="YAML with the validation_config (or a training config's validation: "
            "section); default the one saved with the model.",
        ),
    ] = None,
    threshold: Annotated[
        list[str] | None,
        typer.Option(help="A performance threshold METRIC=LIMIT (repeatable), e.g. mape=0.15."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Validate a trained model on held-out data against thresholds, bias and drift.

    Exits with status 1 when a check fails, so CI can gate a deployment on it.

    Example: retailml validate --model-path artifacts/models/latest --validation-data data/test/
    """
    from retailml.training.model_trainer import ModelValidator, TrainingResult

    extra = dict(_threshold(text) for text in threshold or [])
    result = TrainingResult.load(model_path)
    if validation_data is None:
        validation_data = model_path / "test.parquet"
        if not validation_data.exists():
            raise NotFoundError(
                problem(
                    "--validation-data, or a test.parquet saved with the model",
                    f"neither ({validation_data} does not exist)",
                    "pass --validation-data PATH or set data.holdout in the training config",
                    subject="validate",
                )
            )
    test = _read_frame(validation_data)
    if config is not None:
        loaded = read_yaml_mapping(config, subject="--config", shape="a validation_config")
        settings_map = dict(loaded.get("validation", loaded))
    else:
        saved = model_path / "validation.json"
        settings_map = json.loads(saved.read_text(encoding="utf-8")) if saved.is_file() else {}
    thresholds = dict(settings_map.get("performance_thresholds") or {})
    thresholds.update(extra)
    settings_map["performance_thresholds"] = thresholds
    outcome = ModelValidator().validate_model(
        model=result, test_data=test, validation_config=settings_map
    )
    if as_json:
        out.print_json(json.dumps(outcome.to_dict(), default=str))
    else:
        out.print(str(outcome))
    if outcome.status != "passed":
        raise typer.Exit(code=1)
