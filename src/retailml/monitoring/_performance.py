"""Pure helpers of the model monitor: metrics, prediction-log outputs, concept-drift tests."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats  # type: ignore[import-untyped]

from retailml.core.errors import ConfigError, DataValidationError, problem
from retailml.training._metrics import mae, mape, rmse, smape

FloatArray = npt.NDArray[np.float64]

#: Metrics ``track_performance`` computes: name -> ``f(y_true, y_pred)``. All are
#: errors (lower is better); percentage errors are fractions.
METRICS: dict[str, Callable[[Any, Any], float]] = {
    "mape": mape,
    "mae": mae,
    "rmse": rmse,
    "smape": smape,
}
DEFAULT_METRICS: tuple[str, ...] = ("mape", "mae", "rmse")
#: Concept-drift tests ``detect_concept_drift`` offers, the default first.
CONCEPT_DRIFT_METHODS: tuple[str, ...] = ("mannwhitney", "page_hinkley")
_DEFAULT_CONCEPT_THRESHOLDS = {"mannwhitney": 0.01, "page_hinkley": 5.0}
#: Page-Hinkley's tolerance: changes smaller than this many reference standard
#: deviations are not accumulated.
PAGE_HINKLEY_DELTA = 0.5


def finite_or_none(value: Any) -> float | None:
    """A finite float, or None for None, NaN and infinities (JSON has no NaN)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def check_metrics(metrics: Sequence[str] | str) -> list[str]:
    """The metric names, validated (ConfigError naming the known ones)."""
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    unknown = [name for name in names if name not in METRICS]
    if unknown or not names:
        raise ConfigError(
            problem(
                f"metrics among {', '.join(METRICS)}",
                repr(unknown or names),
                "pass e.g. metrics=['mape', 'mae', 'rmse']",
                subject="track_performance",
            )
        )
    return list(dict.fromkeys(names))


def paired_values(predictions: Any, actual_values: Any) -> tuple[FloatArray, FloatArray]:
    """Predictions and actuals as float arrays, pairs with a missing side dropped."""
    try:
        predicted = np.asarray(predictions, dtype=np.float64).ravel()
        actual = np.asarray(actual_values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise DataValidationError(
            problem(
                "numeric predictions and actual values",
                f"values that are not numbers ({exc})",
                "pass arrays, lists or Series of numbers",
                subject="track_performance",
            )
        ) from exc
    if predicted.shape != actual.shape:
        raise DataValidationError(
            problem(
                "as many predictions as actual values",
                f"{predicted.size} predictions and {actual.size} actual values",
                "pass the predictions and actual values of the same periods",
                subject="track_performance",
            )
        )
    keep = np.isfinite(predicted) & np.isfinite(actual)
    if not keep.any():
        raise DataValidationError(
            problem(
                "at least one (prediction, actual value) pair with both values present",
                f"{predicted.size} pairs, none complete",
                "pass the actual values once they are known",
                subject="track_performance",
            )
        )
    return predicted[keep], actual[keep]


def compute_metrics(
    predicted: FloatArray, actual: FloatArray, metrics: Sequence[str]
) -> dict[str, float]:
    """``metric -> value`` (NaN where undefined, e.g. MAPE over zero actuals only)."""
    return {name: float(METRICS[name](actual, predicted)) for name in metrics}


def prediction_values(output: Any) -> list[float] | None:
    """The predicted number(s) of a prediction-log ``output``, or None if it holds none.

    Accepted shapes: a number; ``{"prediction": number}``; ``{"prediction":
    [numbers]}`` (a multi-step forecast, step 1 first).
    """
    value = output.get("prediction") if isinstance(output, dict) else output
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return [float(value)]
    if (
        isinstance(value, list)
        and value
        and all(isinstance(item, int | float) and not isinstance(item, bool) for item in value)
    ):
        return [float(item) for item in value]
    return None


def explode_outputs(log: pd.DataFrame) -> pd.DataFrame:
    """One row per predicted value: the log's columns plus ``step`` (1-based) and ``prediction``.

    Rows whose output holds no number are dropped. ``date``: the output's
    ``"date"`` when it is a dict holding one, else the UTC day of ``created_at``.
    """
    values = [prediction_values(output) for output in log["output"]]
    lengths = np.array([0 if v is None else len(v) for v in values], dtype=np.int64)
    flat = [item for v in values if v is not None for item in v]
    out = log.loc[log.index.repeat(lengths)].reset_index(drop=True)
    out["prediction"] = np.asarray(flat, dtype=np.float64)
    out["step"] = (
        np.concatenate([np.arange(1, n + 1) for n in lengths if n]) if flat else np.array([])
    ).astype(np.int64)
    created = pd.to_datetime(out["created_at"], utc=True)
    dates = [output.get("date") if isinstance(output, dict) else None for output in out["output"]]
    explicit = pd.to_datetime(pd.Series(dates, dtype=object), utc=True, errors="coerce")
    out["created_at"] = created
    out["date"] = explicit.fillna(created).dt.tz_convert(None).dt.normalize()
    return out.drop(columns=["output"])


@dataclass(frozen=True)
class ConceptDriftResult:
    """The verdict of a change test on a stored performance time series.

    Attributes:
        drifted: True when the recent window is significantly worse.
        statistic: The value held against ``threshold``: the one-sided
            Mann-Whitney p-value (drift when below), or the Page-Hinkley
            statistic in reference standard deviations (drift when above).
        threshold: The threshold applied.
        method: ``"mannwhitney"`` or ``"page_hinkley"``.
        metric: The metric tested.
        n_reference: Points in the reference window.
        n_current: Points in the recent window.
        reference_median: Median of the reference points.
        current_median: Median of the recent points.
    """

    drifted: bool
    statistic: float
    threshold: float
    method: str
    metric: str
    n_reference: int
    n_current: int
    reference_median: float
    current_median: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields (non-finite numbers become None)."""
        return {
            key: (None if isinstance(value, float) and not math.isfinite(value) else value)
            for key, value in asdict(self).items()
        }


def concept_drift(
    values: FloatArray,
    *,
    metric: str,
    window: int,
    reference_window: int | None,
    method: str,
    threshold: float | None,
) -> ConceptDriftResult:
    """Test whether the last ``window`` points are worse (higher) than the points before."""
    if method not in CONCEPT_DRIFT_METHODS:
        raise ConfigError(
            problem(
                f"one of {', '.join(CONCEPT_DRIFT_METHODS)}",
                repr(method),
                "pass method='mannwhitney' (default) or method='page_hinkley'",
                subject="detect_concept_drift",
            )
        )
    if not isinstance(window, int) or window < 3:
        raise ConfigError(
            problem("window of at least 3 points", repr(window), "pass e.g. window=7")
        )
    current = values[-window:]
    reference = values[:-window]
    if reference_window is not None:
        reference = reference[-reference_window:]
    if current.size < window or reference.size < 3:
        raise DataValidationError(
            problem(
                f"at least {window} recent and 3 reference points of {metric!r}",
                f"{values.size} stored points",
                "record more performance windows (track_performance or "
                "performance_from_log), or pass a smaller window",
                subject="detect_concept_drift",
            )
        )
    limit = _DEFAULT_CONCEPT_THRESHOLDS[method] if threshold is None else float(threshold)
    if method == "mannwhitney":
        statistic = float(stats.mannwhitneyu(current, reference, alternative="greater").pvalue)
        drifted = statistic < limit
    else:
        statistic = page_hinkley(reference, current)
        drifted = statistic > limit
    return ConceptDriftResult(
        drifted=bool(drifted),
        statistic=statistic,
        threshold=limit,
        method=method,
        metric=metric,
        n_reference=int(reference.size),
        n_current=int(current.size),
        reference_median=float(np.median(reference)),
        current_median=float(np.median(current)),
    )


def page_hinkley(reference: FloatArray, current: FloatArray) -> float:
    """The largest Page-Hinkley statistic of an upward change over the current points.

    The points are standardised by the reference mean and standard deviation
    (floored at 1e-12 of the mean's magnitude so a constant reference works),
    so the statistic is in reference standard deviations:
    ``max_t (m_t - min_{s<=t} m_s)`` with ``m_t = sum_{i<=t} (z_i - delta)``
    and ``m_0 = 0``.
    """
    scale = max(float(np.std(reference, ddof=1)), 1e-12 * max(1.0, abs(float(reference.mean()))))
    z = (current - float(reference.mean())) / scale
    cumulative = np.concatenate([[0.0], np.cumsum(z - PAGE_HINKLEY_DELTA)])
    return float(np.max(cumulative - np.minimum.accumulate(cumulative)))
