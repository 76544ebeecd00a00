"""``retailml train`` and ``retailml validate`` (the guide's train_model.py, validate_model.py)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from retailml.cli._console import err, out
from retailml.cli._experiment import experiment_config_for
from retailml.core.errors import ConfigError, NotFoundError, RetailMLError, problem
from retailml.core.io import read_yaml_mapping
from retailml.core.settings import Settings, get_settings
from retailml.training._jobs import (
    CONFIG_KEYS,
    LATEST,
    default_output_dir,
    inputs_from_config,
    load_training_config,
    run_training_job,
    train_config,
)

__all__ = [
    "CONFIG_KEYS",
    "LATEST",
    "default_output_dir",
    "load_training_config",
    "print_training",
    "train",
    "train_from_config",
    "validate",
]


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

    No job is recorded (the demo's way); ``retailml train`` records one.

    Returns:
        The :class:`~retailml.training.model_trainer.TrainingResult` and its directory.
    """
    with err.status("cross-validating and fitting ..."):
        trained = train_config(
            config,
            output_dir=output_dir,
            settings=settings,
            data_window=data_window,
            validation_strategy=validation_strategy,
            n_trials=n_trials,
            progress=err.print,
        )
    return trained.result, trained.directory


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
    memory_mb: Annotated[
        int | None,
        typer.Option(
            min=16,
            help="Train in a child process limited to this much address space (MiB); "
            "running out fails the job with a MemoryError.",
        ),
    ] = None,
    cpus: Annotated[
        int | None, typer.Option(min=1, help="Threads/processes the estimator may use (n_jobs).")
    ] = None,
    experiment_config: Annotated[
        Path | None,
        typer.Option(
            "--experiment-config",
            dir_okay=False,
            help="The guide's experiment config (experiment name, tracking URI, artifact "
            "store, seed, run tags); default ./.mlflow/experiments/config.yaml if it exists.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train, cross-validate and track one model; save it and point <output-dir>/latest at it.

    The model is logged to MLflow (RETAILML_MLFLOW_TRACKING_URI, default
    <home>/mlflow.db) and saved as a directory `retailml validate` reads. The
    config's data.holdout is kept back as test.parquet beside the model.

    Every run is recorded as a training job (its id is printed): a failed one
    can be analysed and restarted with `retailml recover JOB_ID`.

    An experiment config (--experiment-config, or ./.mlflow/experiments/config.yaml)
    names the MLflow experiment, its tracking URI (RETAILML_MLFLOW_TRACKING_URI
    wins over it) and artifact store, the seed, and tags the run with the docker
    image and code version.

    Example: retailml train --config configs/sales_forecast.yaml --output-dir artifacts/models/
    """
    from retailml.core.db import PlatformDB
    from retailml.core.jobs import create_job

    settings = get_settings()
    loaded = load_training_config(config)
    inputs = inputs_from_config(
        loaded,
        config_path=config,
        data_window=data_window,
        validation_strategy=validation_strategy,
        memory_mb=memory_mb,
        cpus=cpus,
    )
    if n_trials is not None:
        inputs["n_trials"] = n_trials
    experiment = experiment_config_for(experiment_config, settings)
    if experiment is not None:
        inputs["experiment"] = experiment.to_inputs()
        if experiment.seed is not None:
            inputs["seed"] = experiment.seed
    db = PlatformDB.from_settings(settings)
    try:
        job = create_job(
            db,
            kind="train",
            model_name=inputs["model_name"],
            model_type=inputs["model_type"],
            algorithm=inputs["algorithm"],
            inputs=inputs,
        )
        err.print(f"training job {job.id}")
        try:
            with err.status("cross-validating and fitting ..."):
                record = run_training_job(
                    db,
                    job.id,
                    settings=settings,
                    output_dir=output_dir,
                    raise_errors=True,
                    progress=err.print,
                )
        except RetailMLError:
            err.print(f"training job {job.id} failed; `retailml recover {job.id}` restarts it")
            raise
        except Exception as exc:
            err.print(
                f"[bold red]error:[/bold red] training job {job.id} failed with "
                f"{type(exc).__name__}: {escape(str(exc))}\n"
                f"`retailml recover {job.id}` analyses the failure and restarts it"
            )
            raise typer.Exit(code=1) from exc
    finally:
        db.dispose()
    if record.status != "succeeded":
        err.print(
            f"[bold red]error:[/bold red] training job {job.id} failed with "
            f"{record.error_type}: {escape(str(record.error_message))}\n"
            f"`retailml recover {job.id}` analyses the failure and restarts it"
        )
        raise typer.Exit(code=1)
    outcome = record.outcome
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "job_id": job.id,
                    "model_name": outcome["model_name"],
                    "model_type": inputs["model_type"],
                    "algorithm": outcome["algorithm"],
                    "metrics": outcome["metrics"],
                    "run_id": outcome["run_id"],
                    "model_uri": outcome["model_uri"],
                    "path": outcome["model_dir"],
                    "data_version": outcome["data_version"],
                },
                default=str,
            )
        )
        return
    from retailml.training.model_trainer import TrainingResult

    directory = Path(outcome["model_dir"])
    print_training(TrainingResult.load(directory), directory)
    out.print(f"job:        {job.id}")


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
