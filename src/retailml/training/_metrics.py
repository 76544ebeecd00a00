"""Metrics for every model the trainer builds: forecasts, segments and anomalies.

Forecast metrics are pure, typed functions over numpy arrays, in the style of
statsforecast's functional core. Conventions, chosen once for the module:

* Percentage-type errors are **fractions**, like the guide's thresholds
  (``"mape": 0.15  # Max 15% error``): ``mape`` is ``0.15`` for 15 %, and
  ``smape`` uses the M-competition (M3/M4) definition divided by 100, so it lies
  in ``[0, 2]``. Multiply by 100 for the usual percentage (the benchmark does).
* Zero denominators are handled, never divided by:

  - ``mape`` leaves out the points whose actual value is 0 (their percentage
    error is undefined); when every actual is 0 it returns ``nan``.
  - ``smape`` counts a point where actual and prediction are both 0 as a
    perfect forecast (term 0).
  - ``mase`` scales by the in-sample mean absolute seasonal difference of the
    training series (lag ``season_length``, or lag 1 when the training series
    is not longer than one season). When that scale is 0 (a constant training
    series) the metric is ``0.0`` for a perfect forecast and ``nan``
    otherwise: a finite value would be arbitrary.
  - ``forecast_metrics`` averages per-series values with ``nanmean`` and says
    how many series had a defined MASE and MAPE.

* Inputs of different lengths, or empty inputs, raise
  :class:`~retailml.core.errors.DataValidationError`.

Segmentation metrics wrap scikit-learn's ``silhouette_score``,
``calinski_harabasz_score`` and ``davies_bouldin_score``; anomaly detection
uses :func:`precision_recall_f1`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn import metrics as sk_metrics

from retailml.core.errors import DataValidationError, problem

__all__ = [
    "calinski_harabasz_score",
    "davies_bouldin_score",
    "forecast_metrics",
    "mae",
    "mape",
    "mase",
    "precision_recall_f1",
    "rmse",
    "silhouette_score",
    "smape",
]

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]


def _pair(y_true: ArrayLike, y_pred: ArrayLike, name: str) -> tuple[FloatArray, FloatArray]:
    actual = np.asarray(y_true, dtype=np.float64).ravel()
    predicted = np.asarray(y_pred, dtype=np.float64).ravel()
    if actual.shape != predicted.shape:
        raise DataValidationError(
            problem(
                "y_true and y_pred of the same length",
                f"{actual.size!r} and {predicted.size!r} values",
                "pass the actual and predicted values of the same periods",
                subject=name,
            )
        )
    if actual.size == 0:
        raise DataValidationError(
            problem("at least one value", "empty arrays", "pass non-empty arrays", subject=name)
        )
    return actual, predicted


def mae(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Mean absolute error.

    Args:
        y_true: Actual values.
        y_pred: Predicted values, same length.

    Returns:
        ``mean(|y_true - y_pred|)``.
    """
    actual, predicted = _pair(y_true, y_pred, "mae")
    return float(np.mean(np.abs(actual - predicted)))


def rmse(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Root mean squared error.

    Args:
        y_true: Actual values.
        y_pred: Predicted values, same length.

    Returns:
        ``sqrt(mean((y_true - y_pred) ** 2))``.
    """
    actual, predicted = _pair(y_true, y_pred, "rmse")
    return float(np.sqrt(np.mean((actual - predicted) ** 2)))


def mape(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Mean absolute percentage error, as a fraction (0.15 is 15 %).

    Points whose actual value is 0 are left out (their percentage error is
    undefined).

    Args:
        y_true: Actual values.
        y_pred: Predicted values, same length.

    Returns:
        ``mean(|y_true - y_pred| / |y_true|)`` over the non-zero actuals, or
        ``nan`` when every actual is 0.
    """
    actual, predicted = _pair(y_true, y_pred, "mape")
    defined = actual != 0
    if not defined.any():
        return math.nan
    return float(np.mean(np.abs(actual[defined] - predicted[defined]) / np.abs(actual[defined])))


def smape(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Symmetric MAPE, the M3/M4 competition definition as a fraction in [0, 2].

    ``mean(2 |y - f| / (|y| + |f|))``; a point where both are 0 counts as 0.

    Args:
        y_true: Actual values.
        y_pred: Predicted values, same length.

    Returns:
        The sMAPE fraction; multiply by 100 for the competitions' percentage.
    """
    actual, predicted = _pair(y_true, y_pred, "smape")
    denominator = np.abs(actual) + np.abs(predicted)
    numerator = 2.0 * np.abs(actual - predicted)
    terms = np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)
    return float(np.mean(terms))


def mase_scale(y_train: ArrayLike, season_length: int = 1) -> float:
    """In-sample mean absolute seasonal-naive error, the MASE denominator.

    Args:
        y_train: The training series, oldest first.
        season_length: Seasonal period; lag 1 is used when the series is not
            longer than one season.

    Returns:
        ``mean(|y_t - y_{t-m}|)``, or ``nan`` for a series of one value.
    """
    train = np.asarray(y_train, dtype=np.float64).ravel()
    if season_length < 1:
        raise DataValidationError(
            problem(
                "a season_length of at least 1",
                f"{season_length!r}",
                "pass 1 for non-seasonal data",
                subject="mase",
            )
        )
    lag = season_length if train.size > season_length else 1
    if train.size <= lag:
        return math.nan
    return float(np.mean(np.abs(train[lag:] - train[:-lag])))


def mase(y_true: ArrayLike, y_pred: ArrayLike, y_train: ArrayLike, season_length: int = 1) -> float:
    """Mean absolute scaled error (Hyndman & Koehler; the M4 definition).

    Args:
        y_true: Actual values of the forecast periods.
        y_pred: Predicted values, same length.
        y_train: The series the model was trained on, oldest first.
        season_length: Seasonal period of the scaling naive forecast.

    Returns:
        ``mae(y_true, y_pred) / mase_scale(y_train, season_length)``; ``0.0``
        for a perfect forecast of a constant series and ``nan`` when the scale
        is 0 or undefined otherwise.
    """
    error = mae(y_true, y_pred)
    scale = mase_scale(y_train, season_length)
    if math.isnan(scale):
        return math.nan
    if scale == 0:
        return 0.0 if error == 0 else math.nan
    return error / scale


def forecast_metrics(
    df_cv: pd.DataFrame,
    train_df: pd.DataFrame,
    season_length: int,
    *,
    target: str = "y",
    id_col: str = "series_id",
    time_col: str = "date",
) -> dict[str, float]:
    """Score a backtest or hold-out forecast the way the M competitions do.

    Every metric is computed per series (and per cutoff when ``df_cv`` has a
    ``cutoff`` column) and then averaged over them; MASE is scaled by the
    training values up to the cutoff.

    Args:
        df_cv: Columns ``series_id``, ``date``, ``y``, ``prediction`` and
            optionally ``cutoff`` (as returned by ``SalesForecaster.cross_validate``).
        train_df: The history: ``id_col``, ``time_col`` and ``target``.
        season_length: Seasonal period for MASE.
        target: Target column of ``train_df``.
        id_col: Series column of ``train_df``.
        time_col: Time column of ``train_df``.

    Returns:
        ``mae``, ``rmse``, ``mape``, ``smape``, ``mase`` and the counts
        ``n_series``, ``n_mape_defined``, ``n_mase_defined``.
    """
    required = ["series_id", "date", "y", "prediction"]
    missing = [c for c in required if c not in df_cv.columns]
    if missing:
        raise DataValidationError(
            problem(
                f"df_cv columns {required!r}",
                f"columns {list(df_cv.columns)!r} (missing {missing!r})",
                "pass the frame returned by SalesForecaster.cross_validate",
                subject="forecast_metrics",
            )
        )
    if df_cv.empty:
        raise DataValidationError(
            problem("at least one forecast row", "an empty df_cv", "run a backtest first")
        )
    history = train_df[[id_col, time_col, target]].rename(
        columns={id_col: "series_id", time_col: "date", target: "y"}
    )
    history_by_id: dict[Any, pd.DataFrame] = {
        key: part.sort_values("date") for key, part in history.groupby("series_id", sort=False)
    }
    keys: Sequence[str] = ["series_id", "cutoff"] if "cutoff" in df_cv.columns else ["series_id"]
    rows: dict[str, list[float]] = {"mae": [], "rmse": [], "mape": [], "smape": [], "mase": []}
    for key, part in df_cv.groupby(list(keys), sort=False):
        series_id = key[0] if isinstance(key, tuple) else key
        actual = part["y"].to_numpy(dtype=np.float64)
        predicted = part["prediction"].to_numpy(dtype=np.float64)
        rows["mae"].append(mae(actual, predicted))
        rows["rmse"].append(rmse(actual, predicted))
        rows["mape"].append(mape(actual, predicted))
        rows["smape"].append(smape(actual, predicted))
        past = history_by_id.get(series_id)
        if past is None:
            rows["mase"].append(math.nan)
            continue
        if "cutoff" in part.columns:
            past = past[past["date"] <= part["cutoff"].iloc[0]]
        else:
            past = past[past["date"] < part["date"].min()]
        rows["mase"].append(mase(actual, predicted, past["y"].to_numpy(), season_length))
    result = {name: _nanmean(values) for name, values in rows.items()}
    result["n_series"] = float(len(rows["mae"]))
    result["n_mape_defined"] = float(np.count_nonzero(~np.isnan(rows["mape"])))
    result["n_mase_defined"] = float(np.count_nonzero(~np.isnan(rows["mase"])))
    return result


def _nanmean(values: Sequence[float]) -> float:
    array = np.asarray(values, dtype=np.float64)
    finite = array[~np.isnan(array)]
    return float(finite.mean()) if finite.size else math.nan


def _clustering_inputs(
    features: ArrayLike, labels: ArrayLike, name: str
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    matrix = np.asarray(features)
    if matrix.ndim == 1:
        matrix = matrix.reshape(-1, 1)
    groups = np.asarray(labels).ravel()
    if matrix.shape[0] != groups.size:
        raise DataValidationError(
            problem(
                "one label per row of features",
                f"{matrix.shape[0]!r} rows and {groups.size!r} labels",
                "pass the labels the model assigned to these rows",
                subject=name,
            )
        )
    n_clusters = np.unique(groups).size
    if not 2 <= n_clusters <= matrix.shape[0] - 1:
        raise DataValidationError(
            problem(
                "between 2 and n_samples - 1 distinct labels",
                f"{n_clusters!r} labels for {matrix.shape[0]!r} rows",
                "score a clustering with at least two clusters and a non-singleton one",
                subject=name,
            )
        )
    return matrix, groups


def silhouette_score(features: ArrayLike, labels: ArrayLike, *, random_state: int = 0) -> float:
    """Silhouette score (-1 to 1, higher is better); scikit-learn's definition.

    Args:
        features: Matrix of shape (n_samples, n_features).
        labels: Cluster label of each row.
        random_state: Seed for the sample drawn when there are over 10,000 rows.

    Returns:
        The mean silhouette coefficient.
    """
    matrix, groups = _clustering_inputs(features, labels, "silhouette_score")
    sample_size = 10_000 if matrix.shape[0] > 10_000 else None
    return float(
        sk_metrics.silhouette_score(
            matrix, groups, sample_size=sample_size, random_state=random_state
        )
    )


def calinski_harabasz_score(features: ArrayLike, labels: ArrayLike) -> float:
    """Calinski-Harabasz index (higher is better); scikit-learn's definition.

    Args:
        features: Matrix of shape (n_samples, n_features).
        labels: Cluster label of each row.

    Returns:
        Ratio of between- to within-cluster dispersion.
    """
    matrix, groups = _clustering_inputs(features, labels, "calinski_harabasz_score")
    return float(sk_metrics.calinski_harabasz_score(matrix, groups))


def davies_bouldin_score(features: ArrayLike, labels: ArrayLike) -> float:
    """Davies-Bouldin index (0 is best); scikit-learn's definition.

    Args:
        features: Matrix of shape (n_samples, n_features).
        labels: Cluster label of each row.

    Returns:
        Average similarity of each cluster with its most similar one.
    """
    matrix, groups = _clustering_inputs(features, labels, "davies_bouldin_score")
    return float(sk_metrics.davies_bouldin_score(matrix, groups))


def precision_recall_f1(labels: ArrayLike, flags: ArrayLike) -> dict[str, float]:
    """Precision, recall and F1 of anomaly flags against known anomalies.

    Args:
        labels: True anomaly labels (truthy = anomaly).
        flags: The detector's flags (truthy = flagged), same length.

    Returns:
        ``precision``, ``recall`` and ``f1``; each is 0.0 when undefined
        (nothing flagged, or no true anomaly), as scikit-learn's
        ``zero_division=0``.
    """
    actual = np.asarray(labels).astype(bool).ravel()
    flagged = np.asarray(flags).astype(bool).ravel()
    if actual.shape != flagged.shape or actual.size == 0:
        raise DataValidationError(
            problem(
                "labels and flags of the same non-zero length",
                f"{actual.size!r} labels and {flagged.size!r} flags",
                "pass one flag per labelled row",
                subject="precision_recall_f1",
            )
        )
    precision, recall, f1, _ = sk_metrics.precision_recall_fscore_support(
        actual, flagged, average="binary", zero_division=0
    )
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}
