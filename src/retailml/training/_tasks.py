"""What each model type means for training: inputs, splits, scores and predictions.

A :class:`Task` is the one place that knows, for one of the guide's model
types, which frame an estimator fits on, how a validation strategy splits
it, which metrics score a fitted model on held-out rows and what a
prediction looks like. :class:`~retailml.training.model_trainer.ModelTrainer`
(cross-validation, tuning), :class:`~retailml.training.model_trainer.ModelValidator`
(scoring on test data) and the MLflow ``pyfunc`` wrapper all go through it,
so the three never disagree on what a model's input or score is.

=====================  =============================  =====================  ===============
model type             training frame                 default strategy       tuning metric
=====================  =============================  =====================  ===============
sales_forecast         long panel ``series_id, date,  time_series_split      smape (min)
                       <target>``                     (expanding windows)
customer_segmentation  one row per customer           kfold                  silhouette (max)
anomaly_detection      feature rows (raw lines are    kfold                  f1 with labels,
                       turned into features)                                 else none
demand_prediction      ``daily_sales`` rows (lags     time_series_split      mae (min)
                       are added) or feature rows     by ``date``
=====================  =============================  =====================  ===============
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Final

import numpy as np
import pandas as pd
from sklearn.base import clone

from retailml.core.errors import ConfigError, DataValidationError, problem
from retailml.training import _metrics
from retailml.training._anomaly import VALUE_FEATURES, transaction_features
from retailml.training._demand import demand_features
from retailml.training._splits import expanding_window_cutoffs, kfold_split, time_series_split

__all__ = [
    "DEFAULT_ALGORITHMS",
    "MODEL_TYPES",
    "STRATEGIES",
    "FoldCallback",
    "Task",
    "make_task",
]

#: Validation strategies and the spellings accepted for them.
STRATEGIES: Final[Mapping[str, str]] = {
    "time_series_split": "time_series_split",
    "timeseries": "time_series_split",
    "kfold": "kfold",
    "k-fold": "kfold",
    "k_fold": "kfold",
    "holdout": "holdout",
    "hold-out": "holdout",
}

#: Algorithm used when ``ModelTrainer`` is given only a model type.
DEFAULT_ALGORITHMS: Final[Mapping[str, str]] = {
    "sales_forecast": "auto",
    "customer_segmentation": "kmeans",
    "anomaly_detection": "isolation_forest",
    "demand_prediction": "random_forest",
}
MODEL_TYPES: Final = tuple(DEFAULT_ALGORITHMS)

#: Called after each fold with ``(fold index, that fold's metrics)``; may raise to stop.
FoldCallback = Callable[[int, Mapping[str, float]], None]

_TRANSACTION_COLUMNS: Final = ("stock_code", "quantity", "unit_price", "invoice_date")


def _finite_mean(values: Sequence[float]) -> float:
    finite = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _step(times: pd.Series) -> Any:
    """The calendar step of daily or weekly dates (a Timedelta), else None.

    Monthly and coarser steps vary in length and integer periods have no
    calendar: those use distinct time values instead.
    """
    if not pd.api.types.is_datetime64_any_dtype(times):
        return None
    distinct = np.sort(times.dropna().unique())
    if len(distinct) < 2:
        return None
    step = pd.Series(np.diff(distinct)).mode().iloc[0]
    return step if step in (pd.Timedelta(days=1), pd.Timedelta(days=7)) else None


def mean_metrics(folds: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per-metric mean over folds, ignoring undefined (NaN) fold values."""
    names: list[str] = []
    for fold in folds:
        names.extend(name for name in fold if name not in names)
    return {name: _finite_mean([fold.get(name, math.nan) for fold in folds]) for name in names}


def _require(frame: pd.DataFrame, columns: Sequence[str], subject: str, fix: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataValidationError(
            problem(
                f"columns {list(columns)!r}",
                f"columns {list(map(str, frame.columns))!r} (missing {missing!r})",
                fix,
                subject=subject,
            )
        )


class Task(ABC):
    """How one model type trains, splits, scores and predicts.

    Args:
        target: The target column (None where the type has none).
        id_col: Series identifier column (forecasts).
        time_col: Time column (forecasts and time-ordered splits).
    """

    model_type: ClassVar[str]
    default_target: ClassVar[str | None] = None
    default_strategy: ClassVar[str]
    #: Metric tuning optimises, and its direction.
    primary_metric: ClassVar[str | None]
    greater_is_better: ClassVar[bool] = False
    strategies: ClassVar[tuple[str, ...]] = ("time_series_split", "kfold", "holdout")

    def __init__(
        self, target: str | None = None, id_col: str = "series_id", time_col: str = "date"
    ) -> None:
        self.target = target if target is not None else self.default_target
        self.id_col = id_col
        self.time_col = time_col

    # --- data ---------------------------------------------------------------------------

    def prepare(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The frame the estimator fits on, checked (and derived where the type needs it)."""
        if not isinstance(frame, pd.DataFrame):
            raise DataValidationError(
                problem(
                    "features as a pandas DataFrame",
                    f"{type(frame).__name__}",
                    "pass a DataFrame (e.g. pd.read_parquet(...) or a feature set's table)",
                    subject=self.model_type,
                )
            )
        if frame.empty:
            raise DataValidationError(
                problem("at least one row", "an empty frame", "pass data", subject="features")
            )
        return frame

    def default_params(self) -> dict[str, Any]:
        """Estimator parameters implied by the prepared data (the user's win)."""
        return {}

    def inputs(self, data: pd.DataFrame) -> pd.DataFrame:
        """The model's input columns of a prepared frame (drift reference, input example)."""
        return data.drop(columns=[c for c in (self.target,) if c and c in data.columns])

    def strategy(self, name: str) -> str:
        """The canonical name of a validation strategy this type supports."""
        canonical = STRATEGIES.get(str(name).lower())
        if canonical is None or canonical not in self.strategies:
            raise ConfigError(
                problem(
                    f"a validation_strategy for {self.model_type} among {list(self.strategies)!r}",
                    f"{name!r}",
                    f"use {self.default_strategy!r}",
                    subject="validation_strategy",
                )
            )
        return canonical

    # --- fitting and scoring --------------------------------------------------------------

    def fit(self, estimator: Any, data: pd.DataFrame) -> Any:
        """Fit ``estimator`` on a prepared frame; returns it."""
        return estimator.fit(self.inputs(data), self._labels(data))

    def _labels(self, data: pd.DataFrame) -> Any:
        return None

    @abstractmethod
    def score(
        self, model: Any, test: pd.DataFrame, train: pd.DataFrame | None = None
    ) -> dict[str, float]:
        """Metrics of a fitted model on held-out rows of a prepared frame."""

    def predictions(self, model: Any, frame: pd.DataFrame) -> pd.DataFrame:
        """The model's predictions for rows of a prepared frame, one column per output."""
        return pd.DataFrame({"prediction": np.asarray(model.predict(self.inputs(frame)))})

    def splits(
        self, data: pd.DataFrame, strategy: str, n_splits: int, test_size: float, seed: int | None
    ) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
        """Train/test frames of a validation strategy."""
        canonical = self.strategy(strategy)
        if canonical == "kfold":
            for train, test in kfold_split(len(data), n_splits, random_state=seed):
                yield data.iloc[train], data.iloc[test]
            return
        if canonical == "holdout":
            yield self._holdout(data, test_size, seed)
            return
        if self.time_col not in data.columns:
            raise DataValidationError(
                problem(
                    f"a time column {self.time_col!r} for time_series_split",
                    f"columns {list(map(str, data.columns))!r}",
                    "add the date column or use validation_strategy='kfold'",
                    subject=self.model_type,
                )
            )
        for train, test in time_series_split(data[self.time_col], n_splits):
            yield data.iloc[train], data.iloc[test]

    def _holdout(
        self, data: pd.DataFrame, test_size: float, seed: int | None
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        if self.time_col in data.columns:
            periods = np.sort(data[self.time_col].unique())
            cut = periods[max(0, int(len(periods) * (1 - test_size)) - 1)]
            mask = (data[self.time_col] > cut).to_numpy()
        else:
            rng = np.random.default_rng(seed)
            mask = np.zeros(len(data), dtype=bool)
            mask[rng.permutation(len(data))[: max(1, round(len(data) * test_size))]] = True
        return data.loc[~mask], data.loc[mask]

    def cross_validate(
        self,
        estimator: Any,
        data: pd.DataFrame,
        strategy: str,
        n_splits: int,
        *,
        test_size: float = 0.2,
        seed: int | None = 0,
        on_fold: FoldCallback | None = None,
    ) -> list[dict[str, float]]:
        """Fit a clone of ``estimator`` per split and score it on the held-out part."""
        folds: list[dict[str, float]] = []
        for index, (train, test) in enumerate(
            self._folds(estimator, data, strategy, n_splits, test_size, seed)
        ):
            model = self.fit(clone(estimator), train)
            metrics = self.score(model, test, train)
            folds.append(metrics)
            if on_fold is not None:
                on_fold(index, metrics)
        return folds

    def _folds(
        self,
        estimator: Any,
        data: pd.DataFrame,
        strategy: str,
        n_splits: int,
        test_size: float,
        seed: int | None,
    ) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
        """The train/test frames ``cross_validate`` fits and scores (the strategy's splits)."""
        return self.splits(data, strategy, n_splits, test_size, seed)


class ForecastTask(Task):
    """Sales forecasts over a long panel of series."""

    model_type = "sales_forecast"
    default_target = "sales_amount"
    default_strategy = "time_series_split"
    primary_metric = "smape"
    strategies = ("time_series_split", "holdout")

    def prepare(self, frame: pd.DataFrame) -> pd.DataFrame:
        frame = super().prepare(frame)
        if self.target == "sales_amount" and "sales_amount" not in frame and "y" in frame:
            self.target = "y"
        if self.time_col not in frame.columns:
            for alternative in ("ds", "invoice_date", "week", "month"):
                if alternative in frame.columns:
                    self.time_col = alternative
                    break
        _require(
            frame,
            [self.time_col, str(self.target)],
            "sales_forecast features",
            f"pass a long panel with {self.id_col!r} (optional), {self.time_col!r} and the "
            "target column (e.g. the daily_sales feature set), and name the target",
        )
        if self.id_col not in frame.columns:
            frame = frame.assign(**{self.id_col: "total"})
        return frame[[self.id_col, self.time_col, str(self.target)]]

    def inputs(self, data: pd.DataFrame) -> pd.DataFrame:
        return data[[self.id_col, self.time_col]]

    def fit(self, estimator: Any, data: pd.DataFrame) -> Any:
        return estimator.fit(data, target=self.target, id_col=self.id_col, time_col=self.time_col)

    def score(
        self, model: Any, test: pd.DataFrame, train: pd.DataFrame | None = None
    ) -> dict[str, float]:
        history = train if train is not None else test.iloc[:0]
        last = history[self.time_col].max() if not history.empty else None
        ahead = test if last is None else test[test[self.time_col] > last]
        periods = int(ahead[self.time_col].nunique())
        step = _step(history[self.time_col]) if not history.empty else None
        if step is not None and last is not None and periods:
            # Calendar periods, not distinct test dates: a period with no row
            # (a closed day) still takes a forecast step.
            periods = round(float((ahead[self.time_col].max() - last) / step))
        if periods == 0:
            raise DataValidationError(
                problem(
                    "test rows dated after the training data",
                    "none",
                    "pass the periods that follow the training history",
                    subject="sales_forecast test data",
                )
            )
        forecast = model.predict(horizon=periods)
        merged = forecast.merge(
            ahead.rename(
                columns={self.id_col: "series_id", self.time_col: "date", str(self.target): "y"}
            ),
            on=["series_id", "date"],
        )
        if merged.empty:
            raise DataValidationError(
                problem(
                    "test rows whose series and dates the model forecasts",
                    "no matching (series_id, date) pair",
                    "check the series ids and that the dates follow the training history",
                    subject="sales_forecast test data",
                )
            )
        metrics = _metrics.forecast_metrics(
            merged,
            history if not history.empty else ahead,
            int(getattr(model, "season_length_", 1)),
            target=str(self.target),
            id_col=self.id_col,
            time_col=self.time_col,
        )
        return {k: metrics[k] for k in ("mape", "smape", "mae", "rmse", "mase")}

    def _folds(
        self,
        estimator: Any,
        data: pd.DataFrame,
        strategy: str,
        n_splits: int,
        test_size: float,
        seed: int | None,
    ) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
        # Expanding windows of the estimator's horizon, in calendar periods.
        canonical = self.strategy(strategy)
        windows = 1 if canonical == "holdout" else n_splits
        horizon = int(estimator.get_params()["horizon"])
        times = data[self.time_col]
        periods = np.sort(times.unique())
        step = _step(times)
        if step is not None:
            # Windows of `horizon` calendar periods ending at the last period.
            ends = [periods[-1] - (windows - 1 - i) * horizon * step for i in range(windows)]
            bounds = [(end - horizon * step, end) for end in ends]
            if not (times <= bounds[0][0]).any():
                expanding_window_cutoffs(len(periods), windows, horizon)  # raises, explained
        else:
            cutoffs = expanding_window_cutoffs(len(periods), windows, horizon)
            bounds = [(periods[c], periods[c + horizon]) for c in cutoffs]
        for cut, end in bounds:
            train = data[times <= cut]
            test = data[(times > cut) & (times <= end)]
            if train.empty or test.empty:
                raise DataValidationError(
                    problem(
                        f"training and test rows in every one of {windows} windows of "
                        f"{horizon} periods",
                        f"an empty {'training' if train.empty else 'test'} part before {end}",
                        "use fewer splits, a shorter horizon or a longer history",
                        subject="time_series_split",
                    )
                )
            yield train, test

    def predictions(self, model: Any, frame: pd.DataFrame) -> pd.DataFrame:
        horizon = int(frame[self.time_col].nunique()) if self.time_col in frame else None
        forecast: pd.DataFrame = model.predict(horizon=horizon)
        return forecast


class SegmentationTask(Task):
    """Customer segments from per-customer features."""

    model_type = "customer_segmentation"
    default_strategy = "kfold"
    primary_metric = "silhouette_score"
    greater_is_better = True
    strategies = ("kfold", "holdout")

    def score(
        self, model: Any, test: pd.DataFrame, train: pd.DataFrame | None = None
    ) -> dict[str, float]:
        points = model.transform(test)
        labels = model.predict(test)
        if len(np.unique(labels)) < 2 or len(labels) <= len(np.unique(labels)):
            return {
                "silhouette_score": math.nan,
                "calinski_harabasz_score": math.nan,
                "davies_bouldin_score": math.nan,
                "n_segments": float(len(np.unique(labels))),
            }
        return {
            "silhouette_score": _metrics.silhouette_score(points, labels),
            "calinski_harabasz_score": _metrics.calinski_harabasz_score(points, labels),
            "davies_bouldin_score": _metrics.davies_bouldin_score(points, labels),
            "n_segments": float(len(np.unique(labels))),
        }

    def predictions(self, model: Any, frame: pd.DataFrame) -> pd.DataFrame:
        segments = np.asarray(model.predict(frame))
        names = pd.Series(segments).map(model.segment_names_).astype(str)
        return pd.DataFrame({"segment": segments, "segment_name": names.to_numpy()})


class AnomalyTask(Task):
    """Anomalous transaction lines; labelled when the target column (e.g. ``is_anomaly``) exists."""

    model_type = "anomaly_detection"
    default_target = "is_anomaly"
    default_strategy = "kfold"
    primary_metric = "f1"
    greater_is_better = True
    strategies = ("kfold", "holdout", "time_series_split")

    def prepare(self, frame: pd.DataFrame) -> pd.DataFrame:
        frame = super().prepare(frame)
        if all(c in frame.columns for c in _TRANSACTION_COLUMNS) and not any(
            c in frame.columns for c in VALUE_FEATURES
        ):
            features = transaction_features(frame)
            if self.target and self.target in frame.columns:
                features[self.target] = frame[self.target].to_numpy()
            if self.time_col in frame.columns:
                features[self.time_col] = frame[self.time_col].to_numpy()
            self.derived = True
            return features
        return frame

    derived = False

    def default_params(self) -> dict[str, Any]:
        # Features derived from raw lines: score the value features, not the context ones.
        return {"features": list(VALUE_FEATURES)} if self.derived else {}

    @property
    def labelled(self) -> bool:
        return bool(self.target)

    def inputs(self, data: pd.DataFrame) -> pd.DataFrame:
        drop = [c for c in (self.target, self.time_col) if c and c in data.columns]
        return data.drop(columns=drop)

    def score(
        self, model: Any, test: pd.DataFrame, train: pd.DataFrame | None = None
    ) -> dict[str, float]:
        flags = np.asarray(model.predict(self.inputs(test)))
        metrics = {"anomaly_rate": float(flags.mean()) if flags.size else math.nan}
        if self.target and self.target in test.columns:
            metrics.update(_metrics.precision_recall_f1(test[self.target].to_numpy(), flags))
        return metrics

    def predictions(self, model: Any, frame: pd.DataFrame) -> pd.DataFrame:
        inputs = self.inputs(frame)
        scores = np.asarray(model.score_samples(inputs))
        return pd.DataFrame(
            {"score": scores, "is_anomaly": (scores > model.threshold_).astype(np.int64)}
        )


class DemandTask(Task):
    """Units per product and day from lag, calendar and price features."""

    model_type = "demand_prediction"
    default_target = "quantity"
    default_strategy = "time_series_split"
    primary_metric = "mae"

    def prepare(self, frame: pd.DataFrame) -> pd.DataFrame:
        frame = super().prepare(frame)
        _require(
            frame,
            [str(self.target)],
            "demand_prediction features",
            "pass rows with the target column (e.g. the daily_sales feature set) and name it",
        )
        derived = f"{self.target}_lag_1"
        if (
            derived not in frame.columns
            and self.id_col in frame.columns
            and self.time_col in frame.columns
        ):
            return demand_features(frame, target=str(self.target))
        return frame

    def inputs(self, data: pd.DataFrame) -> pd.DataFrame:
        # DemandPredictor reads the target column itself and never uses it as a feature.
        return data

    def _labels(self, data: pd.DataFrame) -> Any:
        return data[self.target].to_numpy(dtype=np.float64)

    def fit(self, estimator: Any, data: pd.DataFrame) -> Any:
        if estimator.get_params().get("target") != self.target:
            estimator.set_params(target=self.target)
        return estimator.fit(data)

    def score(
        self, model: Any, test: pd.DataFrame, train: pd.DataFrame | None = None
    ) -> dict[str, float]:
        actual = test[self.target].to_numpy(dtype=np.float64)
        predicted = np.asarray(model.predict(test), dtype=np.float64)
        return {
            "mae": _metrics.mae(actual, predicted),
            "rmse": _metrics.rmse(actual, predicted),
            "mape": _metrics.mape(actual, predicted),
            "smape": _metrics.smape(actual, predicted),
        }


_TASKS: Final[Mapping[str, type[Task]]] = {
    task.model_type: task for task in (ForecastTask, SegmentationTask, AnomalyTask, DemandTask)
}


def make_task(
    model_type: str, target: str | None = None, *, id_col: str = "series_id", time_col: str = "date"
) -> Task:
    """The task of a model type.

    Raises:
        ConfigError: for an unknown model type, listing the known ones.
    """
    if model_type not in _TASKS:
        raise ConfigError(
            problem(
                f"a model type among {', '.join(map(repr, _TASKS))}",
                f"{model_type!r}",
                "choose one of the listed model types",
                subject="model_type",
            )
        )
    return _TASKS[model_type](target, id_col=id_col, time_col=time_col)
