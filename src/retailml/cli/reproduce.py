"""``retailml reproduce RUN_ID``: retrain a run from its recorded inputs and compare metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from retailml.cli._console import err, out
from retailml.cli._experiment import experiment_config_for
from retailml.core.settings import get_settings


def _tolerances(values: list[str] | None) -> tuple[float, dict[str, float]]:
    """``["1e-4", "mape=0.01"]`` -> (default, per metric)."""
    from retailml.training._reproduce import DEFAULT_TOLERANCE

    default, per_metric = DEFAULT_TOLERANCE, {}
    for text in values or []:
        name, sep, value = text.rpartition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or number < 0 or (sep and not name):
            raise typer.BadParameter(
                f"expected a relative tolerance such as 1e-6 or METRIC=NUMBER such as "
                f"mape=0.01; got {text!r}",
                param_hint="--tolerance",
            )
        if sep:
            per_metric[name.strip()] = number
        else:
            default = number
    return default, per_metric


def reproduce(
    run_id: Annotated[str, typer.Argument(help="The MLflow run id to reproduce.")],
    tolerance: Annotated[
        list[str] | None,
        typer.Option(
            help="Relative tolerance of the metrics (default 1e-6), or METRIC=NUMBER for one "
            "metric (repeatable), e.g. --tolerance 0.001 --tolerance mape=0.01."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="The training config the run used, when no training job recorded it "
            "(runs of the demo or the Python API).",
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="The training rows (Parquet/CSV), for runs trained on a DataFrame."),
    ] = None,
    experiment_config: Annotated[
        Path | None,
        typer.Option(
            "--experiment-config",
            dir_okay=False,
            help="The experiment config whose tracking store holds the run, for runs no "
            "training job recorded; default ./.mlflow/experiments/config.yaml if it exists.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Retrain a run from its recorded inputs and compare its metrics with the recorded ones.

    Reads the run's model type, algorithm, hyperparameters, validation strategy,
    seed and data versions from MLflow, retrains on exactly those data versions
    (an error names the files if they are gone), and prints recorded vs
    reproduced metrics. Warns when package versions or the git commit differ.
    Exits with status 1 when a metric differs beyond the tolerance or an
    input file changed since the run.

    The run is looked up in the tracking store that `retailml train` used: the
    experiment config its training job recorded, else --experiment-config (or
    ./.mlflow/experiments/config.yaml), else RETAILML_MLFLOW_TRACKING_URI or
    <home>/mlflow.db.

    Example: retailml reproduce 3f2a9c... --tolerance 1e-6
    """
    from retailml.core.io import read_yaml_mapping
    from retailml.training._reproduce import reproduce_run

    default, per_metric = _tolerances(tolerance)
    loaded: dict[str, Any] | None = None
    if config is not None:
        loaded = dict(read_yaml_mapping(config, subject="--config", shape="a training config"))
    frame = _read_rows(data) if data is not None else None
    settings = get_settings()
    experiment = experiment_config_for(experiment_config, settings)
    with err.status(f"reproducing run {run_id} ..."):
        outcome = reproduce_run(
            run_id,
            tolerance=default,
            metric_tolerances=per_metric,
            config=loaded,
            data=frame,
            settings=settings,
            experiment_config=experiment,
        )
    if as_json:
        out.print_json(json.dumps(outcome.to_dict(), default=str))
    else:
        _print(outcome)
    if not outcome.ok:
        raise typer.Exit(code=1)


def _read_rows(path: Path) -> Any:
    import pandas as pd
    import pyarrow.parquet as pq

    from retailml.core.errors import ConfigError, NotFoundError, problem

    if not path.exists():
        raise NotFoundError(problem("an existing file", repr(str(path)), "check --data"))
    if path.is_dir() or path.suffix == ".parquet":
        return pq.read_table(path).to_pandas()
    if path.suffix == ".csv":
        return pd.read_csv(path)
    raise ConfigError(
        problem("a .parquet or .csv file or a Parquet directory", repr(str(path)), "convert it")
    )


def _print(outcome: Any) -> None:
    versions = ", ".join(f"{k} {v}" for k, v in outcome.feature_set_versions.items())
    out.print(
        f"run {outcome.run_id}: {outcome.model_type} / {outcome.algorithm}; rows from "
        f"{outcome.data_source}; silver {(outcome.data_version or 'not recorded')[:12]}"
        + (f"; feature sets {versions}" if versions else "")
    )
    table = Table(title=f"recorded vs reproduced (run {outcome.reproduced_run_id})")
    for column in ("metric", "recorded", "reproduced", "delta", "tolerance", "within"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for m in outcome.metrics:
        table.add_row(
            m.name,
            f"{m.recorded:.6g}",
            "-" if m.reproduced is None else f"{m.reproduced:.6g}",
            "-" if m.delta is None else f"{m.delta:+.3g}",
            f"{m.tolerance:g}",
            "yes" if m.within else "[bold red]NO[/bold red]",
        )
    out.print(table)
    recorded, reproduced = outcome.rows
    if recorded is not None and recorded != reproduced:
        out.print(f"[bold red]rows differ[/bold red]: recorded {recorded}, now {reproduced}")
    for check in outcome.inputs:
        if check.status == "changed":
            files = ", ".join([*check.changed, *(f"{f} (new)" for f in check.added)])
            out.print(f"[bold red]input changed[/bold red]: {check.name}: {files}")
        elif check.status == "unrecorded":
            out.print(f"note: the run kept no digests of {check.name}; not checked")
    for warning in outcome.warnings:
        out.print(f"[yellow]warning[/yellow]: {warning}")
    verdict = "REPRODUCED" if outcome.ok else "NOT REPRODUCED"
    out.print(f"[bold]{verdict}[/bold]")
