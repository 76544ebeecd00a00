"""Hyperparameter tuning with Optuna: search spaces, nested MLflow runs, shared studies.

``ModelTrainer(..., tuning={...})`` takes:

============== ================================================================
key            meaning
============== ================================================================
n_trials       trials this process runs (default 20)
timeout        seconds this process tunes at most (default none)
metric         the cross-validated metric to optimise (default: the model
               type's, e.g. ``smape`` for forecasts, ``silhouette_score``)
direction      ``minimize`` or ``maximize`` (default: the metric's)
search_space   ``{param: spec}``; a spec is ``{"type": "int"|"float", "low":
               ..., "high": ..., "log": bool}`` or ``{"type": "categorical",
               "choices": [...]}``; default :data:`SEARCH_SPACES`
storage        an Optuna RDB URL (PostgreSQL) shared by every worker; default
               the ``optuna_storage`` setting, else in-process
study_name     the study workers share (default ``<model_name>``)
pruning        prune trials whose early folds are worse than the median of
               earlier trials at the same fold (default True)
============== ================================================================

Each trial cross-validates its parameters with the trainer's strategy inside
a nested MLflow run (params, per-fold and mean metrics, ``optuna.trial``
tags). After every fold the running mean is reported to Optuna; with pruning
on, a :class:`optuna.pruners.MedianPruner` stops a trial whose running mean is
worse than the median of previous trials at that fold. Every algorithm is
cross-validated fold by fold, so every algorithm can be pruned.

Several processes tune one study by pointing at the same ``storage`` and
``study_name`` (``load_if_exists``): Optuna's RDB storage hands out trial
numbers and records results transactionally, and the sampler sees every
worker's finished trials.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import mlflow
import optuna

from retailml.core.errors import ConfigError, problem
from retailml.training._tracking import loggable_metrics, loggable_params

__all__ = ["SEARCH_SPACES", "TuningConfig", "parse_tuning", "run_study"]

Spec = Mapping[str, Any]

#: Default search space of each ``(model type, algorithm)``.
SEARCH_SPACES: Final[Mapping[tuple[str, str], Mapping[str, Spec]]] = {
    ("sales_forecast", "prophet"): {
        "changepoint_prior_scale": {"type": "float", "low": 0.001, "high": 0.5, "log": True},
        "seasonality_prior_scale": {"type": "float", "low": 0.01, "high": 10.0, "log": True},
        "seasonality_mode": {"type": "categorical", "choices": ["additive", "multiplicative"]},
    },
    ("sales_forecast", "xgboost"): {
        "n_estimators": {"type": "int", "low": 100, "high": 600},
        "learning_rate": {"type": "float", "low": 0.01, "high": 0.3, "log": True},
        "max_depth": {"type": "int", "low": 3, "high": 10},
    },
    ("sales_forecast", "lightgbm"): {
        "n_estimators": {"type": "int", "low": 100, "high": 600},
        "learning_rate": {"type": "float", "low": 0.01, "high": 0.3, "log": True},
        "max_depth": {"type": "int", "low": 3, "high": 10},
    },
    ("customer_segmentation", "kmeans"): {
        "n_clusters": {"type": "int", "low": 3, "high": 8},
        "scaling": {"type": "categorical", "choices": ["standard", "robust", "minmax"]},
    },
    ("customer_segmentation", "hierarchical"): {
        "n_clusters": {"type": "int", "low": 3, "high": 8},
        "linkage": {"type": "categorical", "choices": ["ward", "complete", "average"]},
    },
    ("customer_segmentation", "dbscan"): {
        "eps": {"type": "float", "low": 0.1, "high": 2.0, "log": True},
        "min_samples": {"type": "int", "low": 3, "high": 30},
    },
    ("anomaly_detection", "isolation_forest"): {
        "n_estimators": {"type": "int", "low": 50, "high": 400},
    },
    ("anomaly_detection", "one_class_svm"): {
        "svm_max_samples": {"type": "int", "low": 1000, "high": 10000, "log": True},
    },
    ("anomaly_detection", "autoencoder"): {
        "learning_rate": {"type": "float", "low": 0.0005, "high": 0.02, "log": True},
        "epochs": {"type": "int", "low": 5, "high": 30},
    },
    ("demand_prediction", "random_forest"): {
        "n_estimators": {"type": "int", "low": 100, "high": 400},
        "min_samples_leaf": {"type": "int", "low": 1, "high": 20},
        "max_features": {"type": "float", "low": 0.2, "high": 1.0},
    },
    ("demand_prediction", "xgboost"): {
        "n_estimators": {"type": "int", "low": 100, "high": 600},
        "learning_rate": {"type": "float", "low": 0.01, "high": 0.3, "log": True},
        "max_depth": {"type": "int", "low": 3, "high": 10},
    },
    ("demand_prediction", "neural_network"): {
        "learning_rate": {"type": "float", "low": 0.0001, "high": 0.01, "log": True},
        "max_iter": {"type": "int", "low": 100, "high": 400},
    },
}

_KEYS: Final = (
    "n_trials",
    "timeout",
    "metric",
    "direction",
    "search_space",
    "storage",
    "study_name",
    "pruning",
)


@dataclass(frozen=True)
class TuningConfig:
    """A validated ``tuning`` mapping (see the module docstring)."""

    n_trials: int = 20
    timeout: float | None = None
    metric: str | None = None
    direction: str | None = None
    search_space: Mapping[str, Spec] = field(default_factory=dict)
    storage: str | None = None
    study_name: str | None = None
    pruning: bool = True


def _bad(key: str, expected: str, got: object, fix: str) -> ConfigError:
    return ConfigError(problem(expected, repr(got), fix, subject=f"tuning[{key!r}]"))


def _check_spec(name: str, spec: object) -> Spec:
    if not isinstance(spec, Mapping) or spec.get("type") not in {"int", "float", "categorical"}:
        raise _bad(
            "search_space",
            f"for {name!r} a mapping with type 'int', 'float' or 'categorical'",
            spec,
            "e.g. {'type': 'int', 'low': 2, 'high': 8} or {'type': 'categorical', "
            "'choices': ['a', 'b']}",
        )
    if spec["type"] == "categorical":
        if not isinstance(spec.get("choices"), Sequence) or not spec["choices"]:
            raise _bad("search_space", f"non-empty 'choices' for {name!r}", spec, "list them")
        return spec
    low, high = spec.get("low"), spec.get("high")
    if not isinstance(low, int | float) or not isinstance(high, int | float) or low > high:
        raise _bad("search_space", f"numbers low <= high for {name!r}", spec, "set low and high")
    return spec


def parse_tuning(
    tuning: Mapping[str, Any], model_type: str, algorithm: str, default_storage: str | None
) -> TuningConfig:
    """Validate a ``tuning`` mapping and fill in the defaults.

    Raises:
        ConfigError: for an unknown key, a bad value, or an algorithm without
            a default search space when none is given.
    """
    if not isinstance(tuning, Mapping):
        raise _bad("", "a mapping such as {'n_trials': 20}", tuning, "pass a dict")
    unknown = sorted(set(tuning) - set(_KEYS))
    if unknown:
        raise ConfigError(
            problem(
                f"tuning keys among {list(_KEYS)!r}",
                f"unknown {unknown!r}",
                "rename or drop them",
                subject="tuning",
            )
        )
    n_trials = tuning.get("n_trials", 20)
    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        raise _bad("n_trials", "an int >= 1", n_trials, "pass e.g. n_trials=20")
    timeout = tuning.get("timeout")
    if timeout is not None and (
        not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0
    ):
        raise _bad("timeout", "seconds > 0 or None", timeout, "pass e.g. timeout=600")
    direction = tuning.get("direction")
    if direction not in (None, "minimize", "maximize"):
        raise _bad("direction", "'minimize' or 'maximize'", direction, "or leave it out")
    space = tuning.get("search_space")
    if space is None:
        space = SEARCH_SPACES.get((model_type, algorithm))
        tunable = sorted(a for t, a in SEARCH_SPACES if t == model_type)
        if space is None:
            raise ConfigError(
                problem(
                    f"a search_space: {model_type} algorithm {algorithm!r} has no default one",
                    "none",
                    "pass tuning={'search_space': {...}} or tune another algorithm "
                    f"(defaults exist for {tunable})",
                    subject="tuning",
                )
            )
    if not isinstance(space, Mapping) or not space:
        raise _bad("search_space", "a non-empty mapping", space, "name the parameters to tune")
    checked = {str(name): _check_spec(str(name), spec) for name, spec in space.items()}
    return TuningConfig(
        n_trials=n_trials,
        timeout=float(timeout) if timeout is not None else None,
        metric=tuning.get("metric"),
        direction=direction,
        search_space=checked,
        storage=tuning.get("storage", default_storage),
        study_name=tuning.get("study_name"),
        pruning=bool(tuning.get("pruning", True)),
    )


def suggest(trial: optuna.Trial, space: Mapping[str, Spec]) -> dict[str, Any]:
    """One value per parameter of ``space`` from the trial."""
    params: dict[str, Any] = {}
    for name, spec in space.items():
        if spec["type"] == "categorical":
            params[name] = trial.suggest_categorical(name, list(spec["choices"]))
        elif spec["type"] == "int":
            params[name] = trial.suggest_int(
                name, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False))
            )
        else:
            params[name] = trial.suggest_float(
                name, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False))
            )
    return params


#: ``evaluate(params, on_fold) -> per-fold metrics``.
Evaluate = Callable[
    [Mapping[str, Any], Callable[[int, Mapping[str, float]], None]], list[dict[str, float]]
]


def run_study(
    config: TuningConfig,
    *,
    study_name: str,
    metric: str,
    greater_is_better: bool,
    evaluate: Evaluate,
    seed: int | None,
) -> optuna.Study:
    """Run this process's trials of a (possibly shared) study; returns the study.

    Must run inside an active MLflow run: each trial is a nested run under it.
    """
    direction: Literal["minimize", "maximize"] = "maximize" if greater_is_better else "minimize"
    if config.direction == "maximize":
        direction = "maximize"
    elif config.direction == "minimize":
        direction = "minimize"
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
        if config.pruning
        else optuna.pruners.NopPruner()
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=config.study_name or study_name,
        storage=config.storage,
        direction=direction,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=pruner,
        load_if_exists=True,
    )
    worker = f"{socket.gethostname()}:{os.getpid()}"
    parent = mlflow.active_run()
    experiment = parent.info.experiment_id if parent is not None else None

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, config.search_space)
        trial.set_user_attr("worker", worker)
        seen: list[float] = []

        def on_fold(index: int, metrics: Mapping[str, float]) -> None:
            value = float(metrics.get(metric, math.nan))
            if math.isfinite(value):
                seen.append(value)
            if seen:
                trial.report(sum(seen) / len(seen), index)
            if trial.should_prune():
                mlflow.set_tag("optuna.state", "pruned")
                raise optuna.TrialPruned(f"pruned after fold {index}")

        with mlflow.start_run(
            nested=True, run_name=f"trial-{trial.number}", experiment_id=experiment
        ):
            mlflow.log_params(loggable_params(params))
            mlflow.set_tags({"optuna.study": study.study_name, "optuna.trial": str(trial.number)})
            folds = evaluate(params, on_fold)
            for index, fold in enumerate(folds):
                mlflow.log_metrics(
                    {f"fold_{k}": v for k, v in loggable_metrics(fold).items()}, step=index
                )
            values = [float(f.get(metric, math.nan)) for f in folds]
            finite = [v for v in values if math.isfinite(v)]
            if not finite:
                mlflow.set_tag("optuna.state", "failed")
                raise optuna.TrialPruned(f"{metric} undefined in every fold")
            score = sum(finite) / len(finite)
            mlflow.log_metric(metric, score)
            mlflow.set_tag("optuna.state", "complete")
            return score

    study.optimize(
        objective,
        n_trials=config.n_trials,
        timeout=config.timeout,
        catch=(),
        gc_after_trial=False,
    )
    return study
