"""Train/test splits: expanding-window backtests, k-fold and hold-out.

Time series are never shuffled: every split trains on the past and tests on
the periods right after it. The helpers work on positions (``0 .. n - 1``)
or on a frame's distinct time values, so the forecaster, the trainer's
``validation_strategy="time_series_split"`` and the tabular models share one
definition of a window.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.model_selection import KFold

from retailml.core.errors import ConfigError, DataValidationError, problem

__all__ = [
    "expanding_window_cutoffs",
    "holdout_split",
    "kfold_split",
    "time_series_split",
]

IntArray = npt.NDArray[np.intp]


def expanding_window_cutoffs(
    n_periods: int, n_windows: int, horizon: int, step: int | None = None
) -> list[int]:
    """Last training position of each backtest window, oldest first.

    Window ``i`` trains on positions ``0 .. cutoff_i`` and tests on
    ``cutoff_i + 1 .. cutoff_i + horizon``; the last window ends at the last
    period. Windows start ``step`` periods apart (``horizon`` by default, so
    test windows do not overlap).

    Args:
        n_periods: Number of periods in the history.
        n_windows: Number of windows (>= 1).
        horizon: Periods forecast in each window (>= 1).
        step: Periods between consecutive cutoffs (>= 1); ``horizon`` if None.

    Returns:
        The cutoff positions.

    Raises:
        ConfigError: for a non-positive argument.
        DataValidationError: when the history is too short for the windows
            (the first window needs at least one training period).
    """
    stride = horizon if step is None else step
    for name, value in (("n_windows", n_windows), ("horizon", horizon), ("step", stride)):
        if int(value) != value or value < 1:
            raise ConfigError(problem(f"{name} an int >= 1", f"{value!r}", f"pass e.g. {name}=3"))
    first = n_periods - horizon - stride * (n_windows - 1) - 1
    if first < 0:
        needed = horizon + stride * (n_windows - 1) + 1
        raise DataValidationError(
            problem(
                f"at least {needed} periods for {n_windows} windows of horizon {horizon} "
                f"and step {stride}",
                f"{n_periods!r} periods",
                "use fewer windows, a shorter horizon or a longer history",
                subject="backtest",
            )
        )
    return [first + stride * i for i in range(n_windows)]


def time_series_split(
    times: pd.Series | npt.ArrayLike,
    n_splits: int = 5,
    test_size: int | None = None,
    step: int | None = None,
) -> Iterator[tuple[IntArray, IntArray]]:
    """Expanding-window splits of rows by their distinct time values.

    Every row at the same time value lands on the same side, so a panel (many
    series per date) splits by date. Like scikit-learn's ``TimeSeriesSplit``
    but counted in periods, not rows.

    Args:
        times: One time value per row (dates or integers).
        n_splits: Number of splits.
        test_size: Periods in each test set; by default the distinct periods
            divided by ``n_splits + 1``.
        step: Periods between consecutive cutoffs; ``test_size`` if None.

    Yields:
        ``(train_rows, test_rows)`` index arrays, oldest split first.
    """
    values = pd.Series(np.asarray(times))
    if values.isna().any():
        raise DataValidationError(
            problem(
                "a time value on every row",
                f"{int(values.isna().sum())} missing",
                "drop or fill the rows without a time",
                subject="time_series_split",
            )
        )
    periods = np.sort(values.unique())
    size = test_size if test_size is not None else max(1, periods.size // (n_splits + 1))
    cutoffs = expanding_window_cutoffs(periods.size, n_splits, size, step)
    position = np.searchsorted(periods, values.to_numpy())
    for cutoff in cutoffs:
        train = np.flatnonzero(position <= cutoff)
        test = np.flatnonzero((position > cutoff) & (position <= cutoff + size))
        yield train, test


def kfold_split(
    n_samples: int, n_splits: int = 5, *, shuffle: bool = True, random_state: int | None = 0
) -> Iterator[tuple[IntArray, IntArray]]:
    """K-fold splits for data without time order (segments, tabular demand).

    Args:
        n_samples: Number of rows.
        n_splits: Number of folds (>= 2, <= n_samples).
        shuffle: Shuffle rows before folding.
        random_state: Seed of the shuffle.

    Yields:
        ``(train_rows, test_rows)`` index arrays.
    """
    if not 2 <= n_splits <= n_samples:
        raise ConfigError(
            problem(
                f"n_splits between 2 and the {n_samples} samples",
                f"{n_splits!r}",
                "pass e.g. n_splits=5 with at least 5 rows",
                subject="kfold_split",
            )
        )
    folds = KFold(n_splits, shuffle=shuffle, random_state=random_state if shuffle else None)
    placeholder: Any = np.empty((n_samples, 1))
    for train, test in folds.split(placeholder):
        yield np.asarray(train, dtype=np.intp), np.asarray(test, dtype=np.intp)


def holdout_split(
    df: pd.DataFrame, test_periods: int, time_col: str = "date"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a frame into the history and its last ``test_periods`` distinct periods.

    Args:
        df: Rows with a time column.
        test_periods: Distinct time values kept for the test part (>= 1).
        time_col: The time column.

    Returns:
        ``(train, test)`` frames.
    """
    if time_col not in df.columns:
        raise DataValidationError(
            problem(
                f"a time column {time_col!r}",
                f"columns {list(df.columns)!r}",
                "pass time_col=<the column holding dates>",
                subject="holdout_split",
            )
        )
    (_, test_rows), *_ = list(time_series_split(df[time_col], 1, test_periods))
    mask = np.zeros(len(df), dtype=bool)
    mask[test_rows] = True
    return df.loc[~mask], df.loc[mask]
