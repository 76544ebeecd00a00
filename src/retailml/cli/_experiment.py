"""The ``--experiment-config`` option that ``retailml train`` and ``retailml reproduce`` share."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from retailml.cli._console import err
from retailml.core.settings import Settings
from retailml.training._experiment_config import (
    ExperimentConfig,
    check_stores,
    discover_experiment_config,
    load_experiment_config,
)


def experiment_config_for(path: Path | None, settings: Settings) -> ExperimentConfig | None:
    """The experiment config given with --experiment-config, or discovered; its notes printed.

    Returns:
        The loaded config, or None when none was given and
        ``./.mlflow/experiments/config.yaml`` does not exist.
    """
    if path is None:
        path = discover_experiment_config()
        if path is None:
            return None
    experiment = load_experiment_config(path)
    err.print(f"experiment config: {escape(str(path))} (experiment {experiment.name!r})")
    for note in experiment.notes(settings):
        err.print(f"[yellow]warning:[/yellow] {escape(note)}")
    check_stores(experiment, experiment.settings_for(settings)[0])
    return experiment
