"""Outlier rules as pure functions over float arrays.

Missing values (NaN) are never outliers; infinite values always are. Both are
left out of the statistics (quartiles, mean, standard deviation, medians), so
one ``inf`` cannot hide every other outlier.
"""

from __future__ import annotations

from typing import NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt

FloatArray: TypeAlias = npt.NDArray[np.float64]
BoolArray: TypeAlias = npt.NDArray[np.bool_]

#: Tukey's fences: outside [Q1 - 1.5 IQR, Q3 + 1.5 IQR].
IQR_FACTOR = 1.5
#: A value is an outlier when it lies more than this many standard deviations from the mean.
ZSCORE_LIMIT = 3.0


class ColumnOutliers(NamedTuple):
    """Which values of one column are outliers, and the range that is not."""

    mask: BoolArray
    low: float
    high: float


def iqr_outliers(values: FloatArray) -> ColumnOutliers:
    """Values outside Tukey's fences, with quartiles by linear interpolation (numpy's default)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return ColumnOutliers(np.isinf(values), float("nan"), float("nan"))
    q1, q3 = np.quantile(finite, [0.25, 0.75])
    spread = IQR_FACTOR * (q3 - q1)
    low, high = float(q1 - spread), float(q3 + spread)
    # NaN compares False on both sides, so missing values are never flagged.
    return ColumnOutliers((values < low) | (values > high), low, high)


def zscore_outliers(values: FloatArray) -> ColumnOutliers:
    """Values with ``|x - mean| / std > 3``, using the population standard deviation (ddof=0)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return ColumnOutliers(np.isinf(values), float("nan"), float("nan"))
    mean, std = float(finite.mean()), float(finite.std())
    if std == 0.0:
        # Every finite value equals the mean: only infinities are away from it.
        return ColumnOutliers(np.isinf(values), mean, mean)
    with np.errstate(invalid="ignore"):
        mask = np.abs(values - mean) / std > ZSCORE_LIMIT
    return ColumnOutliers(mask, mean - ZSCORE_LIMIT * std, mean + ZSCORE_LIMIT * std)


def isolation_forest_outliers(
    matrix: FloatArray, *, contamination: float, random_state: int | None
) -> BoolArray:
    """Rows an IsolationForest over all columns jointly flags as outliers.

    Missing and infinite values are replaced by their column's median before
    fitting (a column with no finite value by 0); rows holding an infinite
    value are flagged whatever the forest says.

    Args:
        matrix: One row per record, one column per feature; not modified.
        contamination: The share of rows the forest flags.
        random_state: Seed of the forest, for repeatable results.
    """
    from sklearn.ensemble import IsolationForest

    infinite_rows = np.isinf(matrix).any(axis=1)
    filled = np.array(matrix, dtype=np.float64, copy=True)
    for j in range(filled.shape[1]):
        column = filled[:, j]
        bad = ~np.isfinite(column)
        if bad.any():
            good = column[~bad]
            column[bad] = float(np.median(good)) if good.size else 0.0
    # Same verdicts as IsolationForest(contamination=...).fit_predict, but every
    # row is scored once rather than twice (fit scores them to place its offset).
    forest = IsolationForest(contamination="auto", random_state=random_state).fit(filled)
    scores = np.asarray(forest.score_samples(filled), dtype=np.float64)
    offset = np.percentile(scores, 100.0 * contamination)
    return np.asarray((scores < offset) | infinite_rows, dtype=np.bool_)
