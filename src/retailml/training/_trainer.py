"""ModelTrainer: cross-validate, tune, fit and track one model of the guide's model types."""

from __future__ import annotations

import asyncio
import difflib
import json
import math
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from retailml import __version__
from retailml.core.errors import ConfigError, NotFoundError, problem
from retailml.core.io import atomic_path
from retailml.core.lineage import Dataset, emit_run
from retailml.core.settings import Settings, get_settings
from retailml.data.ingest import SILVER_TABLE
from retailml.training._registry import ALGORITHMS, make_estimator
from retailml.training._tasks import (
    DEFAULT_ALGORITHMS,
    Task,
    make_task,
    mean_metrics,
)
from retailml.training._tracking import (
    RetailMLModel,
    ensure_tracking,
    experiment_id,
    git_commit,
    log_pyfunc,
    loggable_metrics,
    loggable_params,
    pip_requirements,
    provenance_tags,
    quiet_mlflow,
)
from retailml.training._tuning import parse_tuning, run_study

__all__ = ["ModelTrainer", "TrainingResult"]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray | tuple):
        return list(value)
    return str(value)


#: Rows of the training inputs kept with a result as the drift reference.
REFERENCE_ROWS: Final = 5_000
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass
class TrainingResult:
    """What :meth:`ModelTrainer.train` returns.

    It also unpacks as ``model, metrics = await trainer.train(...)``.

    Attributes:
        model: The estimator fitted on all the training data.
        metrics: Mean cross-validated metrics (``mape``, ``smape``, ``mae``,
            ``rmse``, ``mase`` for forecasts and demand; ``silhouette_score``,
            ``calinski_harabasz_score``, ``davies_bouldin_score`` for segments;
            ``precision``, ``recall``, ``f1`` and ``anomaly_rate`` for anomalies).
            Percentage errors are fractions (0.15 is 15 %).
        run_id: The MLflow run.
        model_uri: The logged pyfunc model (``mlflow.pyfunc.load_model(model_uri)``).
        model_name: The name given to ``train``.
        model_type: The guide's model type.
        algorithm: The algorithm.
        hyperparameters: The estimator's parameters (after tuning).
        target: The target column (None for segmentation).
        fold_metrics: Each fold's metrics, oldest first.
        best_params: The tuned parameters, when tuning ran.
        reference_data: A sample of the training inputs (drift reference).
        n_rows: Rows trained on (after preparation).
        training_seconds: Wall time of ``train``.
        validation_strategy: The strategy the metrics come from.
        id_col: Series column (forecasts).
        time_col: Time column.
        history: The training panel (``id_col, time_col, target``) of a
            forecast or demand model, so validation can scale MASE, find where
            the forecast starts and derive the first test days' lags without
            the caller passing the training data.
    """

    model: Any
    metrics: dict[str, float]
    run_id: str | None
    model_uri: str | None
    model_name: str
    model_type: str
    algorithm: str
    hyperparameters: dict[str, Any]
    target: str | None
    fold_metrics: list[dict[str, float]] = field(default_factory=list)
    best_params: dict[str, Any] | None = None
    reference_data: pd.DataFrame | None = field(default=None, repr=False)
    n_rows: int = 0
    training_seconds: float = 0.0
    validation_strategy: str = ""
    id_col: str = "series_id"
    time_col: str = "date"
    history: pd.DataFrame | None = field(default=None, repr=False)

    def __iter__(self) -> Iterator[Any]:
        yield self.model
        yield self.metrics

    def task(self) -> Task:
        """The model type's task (how its inputs, scores and predictions look)."""
        return make_task(self.model_type, self.target, id_col=self.id_col, time_col=self.time_col)

    def save(self, directory: str | Path) -> Path:
        """Write the result to a directory, atomically: the MLflow model, ``result.json``
        and ``reference.parquet`` (the drift reference).

        The model is saved from the fitted estimator with the same pyfunc
        wrapper the run logged, so the directory loads without the tracking
        server.

        Returns:
            The directory.
        """
        target = Path(directory)
        wrapper = RetailMLModel(
            self.model, self.model_type, self.target, self.id_col, self.time_col
        )
        example = self.input_example()
        with atomic_path(target, directory=True) as staging:
            with quiet_mlflow():
                mlflow.pyfunc.save_model(
                    staging / "model",
                    python_model=wrapper,
                    pip_requirements=pip_requirements(),
                    input_example=example,
                    signature=(
                        infer_signature(example, wrapper.predict(None, example))
                        if example is not None
                        else None
                    ),
                )
            if self.reference_data is not None:
                self.reference_data.to_parquet(staging / "reference.parquet", index=False)
            if self.history is not None:
                self.history.to_parquet(staging / "history.parquet", index=False)
            frames = {"model", "reference_data", "history"}
            meta = {k: v for k, v in vars(self).items() if k not in frames}
            meta["retailml_version"] = __version__
            (staging / "result.json").write_text(
                json.dumps(meta, indent=2, default=_json_default, allow_nan=True) + "\n",
                encoding="utf-8",
            )
        return target

    def input_example(self) -> pd.DataFrame | None:
        """A few rows of what the pyfunc model takes (for signatures and smoke tests)."""
        if self.model_type == "sales_forecast":
            horizon = int(getattr(self.model, "horizon_", 1))
            first = (
                self.history[self.id_col].iloc[0]
                if self.history is not None and len(self.history)
                else None
            )
            frame = pd.DataFrame({"horizon": [horizon]})
            return (
                frame
                if first is None
                else frame.assign(series_id=[first])[["series_id", "horizon"]]
            )
        if self.reference_data is None or self.reference_data.empty:
            return None
        return self.reference_data.head(5).reset_index(drop=True)

    @classmethod
    def load(cls, directory: str | Path) -> TrainingResult:
        """Read a result written by :meth:`save`.

        Raises:
            NotFoundError: when the directory holds no saved result.
        """
        root = Path(directory)
        meta_path = root / "result.json"
        if not meta_path.is_file():
            raise NotFoundError(
                problem(
                    "a model directory written by 'retailml train' (with result.json)",
                    repr(str(root)),
                    "pass --model-path <output-dir>/<model_name> or <output-dir>/latest",
                    subject="model path",
                )
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        meta.pop("retailml_version", None)
        with quiet_mlflow():
            wrapper = mlflow.pyfunc.load_model(str(root / "model")).unwrap_python_model()
        reference = root / "reference.parquet"
        history = root / "history.parquet"
        return cls(
            model=wrapper.model,
            reference_data=pd.read_parquet(reference) if reference.is_file() else None,
            history=pd.read_parquet(history) if history.is_file() else None,
            **meta,
        )


class ModelTrainer:
    """Train one model of the guide's model types, with cross-validation, tuning and tracking.

    Args:
        model_type: ``"sales_forecast"``, ``"customer_segmentation"``,
            ``"anomaly_detection"`` or ``"demand_prediction"``.
        algorithm: One of the type's algorithms; None picks the type's default
            (``auto``, ``kmeans``, ``isolation_forest``, ``random_forest``).
        hyperparameters: The estimator's parameters (checked against its
            constructor: an unknown name is an error listing the valid ones).
        validation_strategy: ``"time_series_split"`` (expanding windows),
            ``"kfold"`` or ``"holdout"``; None picks the type's default.
        n_splits: Folds or windows.
        tuning: Optuna settings (see :mod:`retailml.training._tuning`), or None.
        test_size: Share of rows (or periods) the holdout keeps back.
        experiment_name: MLflow experiment; default the model type.
        random_state: Seed of splits and tuning; default the ``seed`` setting.
        settings: retailml settings; default the process settings.

    Raises:
        ConfigError: for an unknown model type, algorithm, hyperparameter or
            validation strategy, each listing the valid ones.
    """

    def __init__(
        self,
        model_type: str,
        algorithm: str | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
        validation_strategy: str | None = None,
        n_splits: int = 5,
        *,
        tuning: Mapping[str, Any] | None = None,
        test_size: float = 0.2,
        experiment_name: str | None = None,
        random_state: int | None = None,
        settings: Settings | None = None,
    ) -> None:
        task = make_task(model_type)
        self.settings = settings or get_settings()
        self.model_type = model_type
        self.algorithm = algorithm or DEFAULT_ALGORITHMS[model_type]
        self.hyperparameters = dict(hyperparameters or {})
        self.validation_strategy = task.strategy(validation_strategy or task.default_strategy)
        if not isinstance(n_splits, int) or isinstance(n_splits, bool) or n_splits < 1:
            raise ConfigError(
                problem("n_splits an int >= 1", repr(n_splits), "pass e.g. n_splits=5")
            )
        if self.validation_strategy == "kfold" and n_splits < 2:
            raise ConfigError(
                problem("n_splits >= 2 for kfold", repr(n_splits), "pass e.g. n_splits=5")
            )
        self.n_splits = n_splits
        if not 0 < test_size < 1:
            raise ConfigError(problem("test_size in (0, 1)", repr(test_size), "pass e.g. 0.2"))
        self.test_size = test_size
        self.experiment_name = experiment_name or model_type
        self.random_state = self.settings.seed if random_state is None else random_state
        # Fail fast on names: unknown algorithm or hyperparameter.
        self._estimator(self.hyperparameters)
        self.tuning = (
            parse_tuning(tuning, model_type, self.algorithm, self.settings.optuna_storage)
            if tuning
            else None
        )
        if self.tuning is not None:
            self._estimator({**self.hyperparameters, **dict.fromkeys(self.tuning.search_space)})

    def __repr__(self) -> str:
        return (
            f"ModelTrainer(model_type={self.model_type!r}, algorithm={self.algorithm!r}, "
            f"validation_strategy={self.validation_strategy!r}, n_splits={self.n_splits})"
        )

    # --- estimator ------------------------------------------------------------------------

    def _estimator(self, params: Mapping[str, Any]) -> Any:
        factory = ALGORITHMS.get(self.model_type, {}).get(self.algorithm)
        if factory is None:
            return make_estimator(self.model_type, self.algorithm)  # raises, listing valid ones
        probe = make_estimator(self.model_type, self.algorithm)
        valid = set(probe.get_params())
        unknown = sorted(set(params) - valid)
        if unknown:
            hints = [
                f"{name!r} -> {close[0]!r}"
                for name in unknown
                if (close := difflib.get_close_matches(name, valid, n=1))
            ]
            raise ConfigError(
                problem(
                    f"hyperparameters of {self.model_type} {self.algorithm!r} among "
                    f"{', '.join(sorted(valid - {'algorithm'}))}",
                    f"unknown {', '.join(map(repr, unknown))}",
                    f"rename ({', '.join(hints)}) or drop them" if hints else "drop them",
                    subject="hyperparameters",
                )
            )
        if "random_state" in valid and "random_state" not in params:
            params = {**params, "random_state": self.random_state}
        return make_estimator(self.model_type, self.algorithm, **params)

    # --- training ---------------------------------------------------------------------------

    async def train(
        self,
        features: pd.DataFrame,
        target: str | None = None,
        model_name: str | None = None,
        *,
        id_col: str = "series_id",
        time_col: str = "date",
        data_version: str | None = None,
        feature_set_versions: Mapping[str, str] | None = None,
    ) -> TrainingResult:
        """Cross-validate (and tune), fit on all the data, and track the run in MLflow.

        Runs off the event loop (a worker thread), so a service stays responsive.

        Args:
            features: The training frame: a long panel ``series_id, date,
                <target>`` for forecasts (no ``series_id``: one series), one
                row per customer for segments, feature rows or raw transaction
                lines for anomalies, ``daily_sales`` rows or feature rows for demand.
            target: The target column; default ``sales_amount`` (or ``y``),
                ``is_anomaly`` (used when present), ``quantity``; ignored for segments.
            model_name: Names the MLflow run (default ``<model_type>_<algorithm>``).
            id_col: Series column of a forecast panel.
            time_col: Time column (forecasts, time-ordered splits).
            data_version: The silver data version trained on (recorded).
            feature_set_versions: ``feature set -> version`` trained on (recorded).

        Returns:
            A :class:`TrainingResult` (also unpacks as ``model, metrics``).

        Raises:
            ConfigError: for a bad name or setting.
            DataValidationError: when the features lack what the model type needs.
        """
        # MLflow's active run is per thread: hand the caller's run to the worker.
        outer = mlflow.active_run()
        return await asyncio.to_thread(
            self.train_sync,
            features,
            target,
            model_name,
            id_col=id_col,
            time_col=time_col,
            data_version=data_version,
            feature_set_versions=feature_set_versions,
            parent_run_id=outer.info.run_id if outer is not None else None,
        )

    def train_sync(
        self,
        features: pd.DataFrame,
        target: str | None = None,
        model_name: str | None = None,
        *,
        id_col: str = "series_id",
        time_col: str = "date",
        data_version: str | None = None,
        feature_set_versions: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> TrainingResult:
        """:meth:`train`, blocking (for scripts and the CLI).

        ``parent_run_id`` nests the run under that run (default: this thread's
        active run, if any).
        """
        started = time.perf_counter()
        name = model_name or f"{self.model_type}_{self.algorithm}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(
                problem(
                    "a model_name of letters, digits, '_', '.', '-'",
                    repr(model_name),
                    "pass e.g. model_name='sales_forecast_v1.2'",
                    subject="model_name",
                )
            )
        task = make_task(
            self.model_type,
            None if self.model_type == "customer_segmentation" else target,
            id_col=id_col,
            time_col=time_col,
        )
        data = task.prepare(features)
        base = {**task.default_params(), **self.hyperparameters}
        active = mlflow.active_run()
        if parent_run_id is None and active is not None:
            parent_run_id = active.info.run_id
        # Inside the caller's run (the guide's ``with mlflow.start_run():``) the
        # trainer's run is nested under it, so both can log params freely.
        if parent_run_id is None:
            ensure_tracking(self.settings)
            experiment = experiment_id(self.experiment_name, self.settings)
        else:
            experiment = MlflowClient().get_run(parent_run_id).info.experiment_id
        with mlflow.start_run(
            run_name=name,
            experiment_id=experiment,
            nested=active is not None,
            parent_run_id=parent_run_id if active is None else None,
        ):
            run = mlflow.active_run()
            assert run is not None
            best_params: dict[str, Any] | None = None
            if self.tuning is not None:
                best_params = self._tune(task, data, base, name)
                base = {**base, **best_params}
            estimator = self._estimator(base)
            # With tuning, these are the best parameters' own cross-validated metrics.
            folds = task.cross_validate(
                estimator,
                data,
                self.validation_strategy,
                self.n_splits,
                test_size=self.test_size,
                seed=self.random_state,
            )
            metrics = mean_metrics(folds)
            model = task.fit(estimator, data)
            params = {k: v for k, v in model.get_params().items()}
            mlflow.log_params(
                loggable_params(
                    {
                        "model_type": self.model_type,
                        "algorithm": self.algorithm,
                        "validation_strategy": self.validation_strategy,
                        "n_splits": self.n_splits,
                        "target": task.target,
                        "seed": self.random_state,
                        "n_rows": len(data),
                        **{f"hp.{k}": v for k, v in params.items() if k != "algorithm"},
                    }
                )
            )
            for index, fold in enumerate(folds):
                mlflow.log_metrics(
                    {f"fold_{k}": v for k, v in loggable_metrics(fold).items()}, step=index
                )
            mlflow.log_metrics(loggable_metrics(metrics))
            mlflow.set_tags(
                {
                    "retailml.model_name": name,
                    "retailml.model_type": self.model_type,
                    "retailml.algorithm": self.algorithm,
                    **provenance_tags(
                        data_version=data_version, feature_set_versions=feature_set_versions
                    ),
                }
            )
            wrapper = RetailMLModel(model, self.model_type, task.target, task.id_col, task.time_col)
            model_uri = log_pyfunc(wrapper, self._input_example(task, data, model))
            run_id = run.info.run_id
        emit_run(
            f"train.{name}",
            inputs=[
                *(Dataset(f"feature_set.{s}", v) for s, v in (feature_set_versions or {}).items()),
                *([Dataset(SILVER_TABLE, data_version)] if data_version else []),
            ],
            outputs=[Dataset(f"run.{run_id}", model_uri)],
            description=f"training of {self.model_type} {self.algorithm}",
            parameters={k: v for k, v in params.items() if k != "algorithm"},
            features=[str(c) for c in task.inputs(data).columns],
            code_version=git_commit(),
            settings=self.settings,
        )
        inputs = task.inputs(data)
        reference = (
            inputs.sample(REFERENCE_ROWS, random_state=self.random_state)
            if len(inputs) > REFERENCE_ROWS
            else inputs.copy()
        )
        return TrainingResult(
            model=model,
            metrics=metrics,
            run_id=run_id,
            model_uri=model_uri,
            model_name=name,
            model_type=self.model_type,
            algorithm=self.algorithm,
            hyperparameters={k: v for k, v in params.items() if k != "algorithm"},
            target=task.target,
            fold_metrics=folds,
            best_params=best_params,
            reference_data=reference,
            n_rows=len(data),
            training_seconds=time.perf_counter() - started,
            validation_strategy=self.validation_strategy,
            id_col=task.id_col,
            time_col=task.time_col,
            history=self._history(task, features, data),
        )

    def _tune(
        self, task: Task, data: pd.DataFrame, base: Mapping[str, Any], name: str
    ) -> dict[str, Any]:
        assert self.tuning is not None
        metric = self.tuning.metric or task.primary_metric
        if metric is None:
            raise ConfigError(problem("a tuning metric", "none", "set tuning['metric']"))
        if self.model_type == "anomaly_detection" and task.target not in data.columns:
            raise ConfigError(
                problem(
                    f"labels ({task.target!r}) to tune anomaly detection on F1",
                    "no label column",
                    "pass labelled data (the generator's --anomaly-rate adds is_anomaly) "
                    "or train without tuning",
                    subject="tuning",
                )
            )

        def evaluate(params: Mapping[str, Any], on_fold: Any) -> list[dict[str, float]]:
            estimator = self._estimator({**base, **params})
            return task.cross_validate(
                estimator,
                data,
                self.validation_strategy,
                self.n_splits,
                test_size=self.test_size,
                seed=self.random_state,
                on_fold=on_fold,
            )

        study = run_study(
            self.tuning,
            study_name=name,
            metric=metric,
            greater_is_better=task.greater_is_better,
            evaluate=evaluate,
            seed=self.random_state,
        )
        completed = [t for t in study.trials if t.value is not None and math.isfinite(t.value)]
        if not completed:
            raise ConfigError(
                problem(
                    "at least one completed tuning trial",
                    f"{len(study.trials)} trials, none completed",
                    "raise n_trials or timeout, or widen the search space",
                    subject="tuning",
                )
            )
        best = dict(study.best_params)
        mlflow.log_params(loggable_params({f"best.{k}": v for k, v in best.items()}))
        mlflow.set_tags(
            {
                "optuna.study": study.study_name,
                "optuna.best_trial": str(study.best_trial.number),
                "optuna.n_trials": str(len(study.trials)),
            }
        )
        mlflow.log_metric(f"best_{metric}", float(study.best_value))
        return best

    def _history(
        self, task: Task, features: pd.DataFrame, data: pd.DataFrame
    ) -> pd.DataFrame | None:
        """What validation needs of the training data: the panel (forecasts) or the
        daily rows the lags come from (demand)."""
        if self.model_type == "sales_forecast":
            return data.copy()
        if self.model_type == "demand_prediction":
            needed = [task.id_col, task.time_col, str(task.target)]
            if all(c in features.columns for c in needed):
                return features[needed].copy()
        return None

    def _input_example(self, task: Task, data: pd.DataFrame, model: Any) -> pd.DataFrame:
        if self.model_type == "sales_forecast":
            first = data[task.id_col].iloc[0]
            return pd.DataFrame({"series_id": [first], "horizon": [int(model.horizon_)]})
        inputs = task.inputs(data).head(5)
        return inputs.reset_index(drop=True)
