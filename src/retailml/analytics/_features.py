"""Calendar, seasonal, trend and "external" features of a daily sales panel.

:func:`engineer_features` adds columns to a long panel (``series_id``,
``date``, target) such as :meth:`PredictiveEngine.load_sales_data` returns and
never adds, drops or reorders rows, so the result still trains a forecaster.

Feature sets (:data:`FEATURE_SETS` lists the columns of each):

``temporal``
    ``year``, ``month``, ``day_of_week`` (0 = Monday), ``quarter``,
    ``is_weekend`` and ``is_holiday``, as the ``temporal`` feature set defines
    them.
``seasonal``
    Cyclical encodings: sine and cosine of the day of the year (period
    365.25 days), of the month (period 12) and of the weekday (period 7), so
    31 December sits next to 1 January.
``trend``
    ``time_index``, days since 1970-01-01 (a fixed origin, so frames built
    separately for training and for held-out periods agree), and
    ``<target>_mean_7d`` / ``<target>_mean_28d``: the mean of the target over
    the 7 (28) days *before* the row's day, never the day itself. Days
    without a row inside a series' span count as zero sales (as the
    forecaster's ``fill_missing="zero"`` assumes); windows that reach before
    a series' first day are NaN rather than padded. The features of day
    ``t`` use the target up to ``t - 1``: a model forecasting ``h`` days ahead
    must shift them by ``h - 1`` more days to stay leakage-free.
``external``
    retailml has no external data sources (weather, marketing calendars,
    macro-economic series), so "external" means signals from outside the
    sales data that are known in advance: ``days_to_holiday`` and
    ``days_since_holiday`` (to the next and from the last public holiday,
    0 on a holiday), ``days_to_christmas`` (to the next 25 December) and
    ``is_black_friday`` (the Friday after the fourth Thursday of November).

Holidays come from the ``holidays`` package, through the same
``holiday_rows`` helper the feature pipeline uses: a ``country:<name>``
series uses its country's calendar (UCI country names are mapped as in the
``temporal`` feature set; an unmapped name has no holidays, so its holiday
distances are NaN), every other series (``total``, ``product:...``) uses
``holiday_country``, the United Kingdom (``GB``) by default: the data is UK
online retail.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from retailml.core.errors import ConfigError, DataValidationError, problem
from retailml.feature_engineering._definitions import holiday_rows

__all__ = ["DEFAULT_HOLIDAY_COUNTRY", "FEATURE_SETS", "TREND_WINDOWS", "engineer_features"]

#: Calendar of series that are not a country's (``total``, products).
DEFAULT_HOLIDAY_COUNTRY: Final = "GB"
#: Days of the trend set's rolling means.
TREND_WINDOWS: Final = (7, 28)
#: Columns each feature set adds (``{target}`` is the target column's name).
FEATURE_SETS: Final[Mapping[str, tuple[str, ...]]] = {
    "temporal": ("year", "month", "day_of_week", "quarter", "is_weekend", "is_holiday"),
    "seasonal": (
        "day_of_year_sin",
        "day_of_year_cos",
        "month_sin",
        "month_cos",
        "day_of_week_sin",
        "day_of_week_cos",
    ),
    "trend": ("time_index", *(f"{{target}}_mean_{w}d" for w in TREND_WINDOWS)),
    "external": ("days_to_holiday", "days_since_holiday", "days_to_christmas", "is_black_friday"),
}

_COUNTRY_PREFIX: Final = "country:"
_EPOCH: Final = np.datetime64("1970-01-01", "D")
#: Series per block of the trend computation (bounds the wide matrix's memory).
_BLOCK_SERIES: Final = 2_000

DayArray = npt.NDArray[np.datetime64]
FloatArray = npt.NDArray[np.float64]


def check_feature_sets(feature_sets: Sequence[str]) -> list[str]:
    """The requested set names, each once, in order.

    Raises:
        ConfigError: for a name that is not a feature set, listing the valid ones.
    """
    if isinstance(feature_sets, str) or not isinstance(feature_sets, Iterable):
        raise ConfigError(
            problem(
                "feature_sets as a list of names",
                repr(feature_sets),
                f"pass e.g. feature_sets={list(FEATURE_SETS)!r}",
                subject="engineer_features",
            )
        )
    names = list(dict.fromkeys(feature_sets))
    unknown = [n for n in names if n not in FEATURE_SETS]
    if unknown:
        raise ConfigError(
            problem(
                f"feature sets among {list(FEATURE_SETS)!r}",
                f"unknown {', '.join(map(repr, unknown))}",
                "drop or rename them",
                subject="engineer_features",
            )
        )
    return names


def _days(dates: pd.Series) -> DayArray:
    return np.asarray(dates.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]"))


def _holiday_calendars(keys: Sequence[str], years: Iterable[int]) -> dict[str, DayArray]:
    """Sorted holiday days of each calendar key (a country name or code)."""
    calendars: dict[str, list[np.datetime64]] = {key: [] for key in keys}
    for key, day in holiday_rows(keys, years):
        calendars[key].append(np.datetime64(day, "D"))
    return {
        key: np.sort(np.asarray(days, dtype="datetime64[D]")) for key, days in calendars.items()
    }


def _holiday_features(days: DayArray, holidays: DayArray) -> dict[str, npt.NDArray[np.generic]]:
    """``is_holiday``, ``days_to_holiday``, ``days_since_holiday`` of each day."""
    n = days.size
    if holidays.size == 0:
        nan = np.full(n, np.nan)
        return {
            "is_holiday": np.zeros(n, dtype=bool),
            "days_to_holiday": nan,
            "days_since_holiday": nan.copy(),
        }
    nxt = np.searchsorted(holidays, days, side="left")
    prev = np.searchsorted(holidays, days, side="right") - 1
    to_next = np.full(n, np.nan)
    has_next = nxt < holidays.size
    to_next[has_next] = (holidays[nxt[has_next]] - days[has_next]).astype(np.int64)
    since = np.full(n, np.nan)
    has_prev = prev >= 0
    since[has_prev] = (days[has_prev] - holidays[prev[has_prev]]).astype(np.int64)
    return {"is_holiday": to_next == 0, "days_to_holiday": to_next, "days_since_holiday": since}


def _black_fridays(years: Iterable[int]) -> DayArray:
    fridays = []
    for year in years:
        first = pd.Timestamp(year=year, month=11, day=1)
        thanksgiving = first + pd.Timedelta(days=(3 - first.dayofweek) % 7 + 21)
        fridays.append(np.datetime64((thanksgiving + pd.Timedelta(days=1)).date(), "D"))
    return np.asarray(fridays, dtype="datetime64[D]")


def _christmas(years: npt.NDArray[np.datetime64]) -> DayArray:
    december = years.astype("datetime64[M]") + np.timedelta64(11, "M")
    return np.asarray(december.astype("datetime64[D]") + np.timedelta64(24, "D"))


def _days_to_christmas(days: DayArray) -> npt.NDArray[np.int64]:
    years = days.astype("datetime64[Y]")
    this_year = _christmas(years)
    next_year = _christmas((years.astype(np.int64) + 1).astype("datetime64[Y]"))
    target = np.where(days > this_year, next_year, this_year)
    return np.asarray((target - days).astype(np.int64))


def _trend_means(
    series: pd.Series, days: DayArray, values: FloatArray, windows: Sequence[int]
) -> dict[int, FloatArray]:
    """Per row, the mean of the target over the ``w`` days before its day (see module doc)."""
    out = {w: np.full(days.size, np.nan) for w in windows}
    codes, uniques = pd.factorize(series, sort=False)
    origin = days.min()
    span = int((days.max() - origin).astype(np.int64)) + 1
    offsets = (days - origin).astype(np.int64)
    for start in range(0, len(uniques), _BLOCK_SERIES):
        stop = min(start + _BLOCK_SERIES, len(uniques))
        rows = np.flatnonzero((codes >= start) & (codes < stop))
        wide = np.full((span, stop - start), np.nan)
        wide[offsets[rows], codes[rows] - start] = values[rows]
        observed = ~np.isnan(wide)
        started = np.maximum.accumulate(observed, axis=0)
        ongoing = np.maximum.accumulate(observed[::-1], axis=0)[::-1]
        wide[started & ongoing & ~observed] = 0.0  # a day without a row: no sales
        frame = pd.DataFrame(wide).shift(1)  # the row's own day never counts
        for w in windows:
            means = frame.rolling(w, min_periods=w).mean().to_numpy()
            out[w][rows] = means[offsets[rows], codes[rows] - start]
    return out


def engineer_features(
    sales_data: pd.DataFrame,
    feature_sets: Sequence[str],
    *,
    target: str = "sales_amount",
    id_col: str = "series_id",
    time_col: str = "date",
    holiday_country: str = DEFAULT_HOLIDAY_COUNTRY,
) -> pd.DataFrame:
    """The panel with the columns of the requested feature sets added (module docstring).

    Raises:
        ConfigError: for an unknown feature set.
        DataValidationError: for missing columns, dates with a time of day, a
            non-numeric target or duplicate (series, date) rows.
    """
    names = check_feature_sets(feature_sets)
    if not isinstance(sales_data, pd.DataFrame):
        raise DataValidationError(
            problem(
                "sales_data as a pandas DataFrame",
                type(sales_data).__name__,
                "pass the frame PredictiveEngine.load_sales_data returns",
                subject="engineer_features",
            )
        )
    needed = [time_col, *([target] if "trend" in names else [])]
    missing = [c for c in needed if c not in sales_data.columns]
    if missing:
        raise DataValidationError(
            problem(
                f"columns {needed!r}",
                f"columns {list(map(str, sales_data.columns))!r} (missing {missing!r})",
                "pass the frame PredictiveEngine.load_sales_data returns",
                subject="engineer_features",
            )
        )
    result = sales_data.copy()
    result.attrs = dict(sales_data.attrs)
    if result.empty or not names:
        for name in names:
            for column in FEATURE_SETS[name]:
                result[column.format(target=target)] = pd.Series(dtype="float64")
        return result
    try:
        dates = pd.to_datetime(result[time_col])
    except (ValueError, TypeError) as exc:
        raise DataValidationError(
            problem(
                f"dates in {time_col!r}",
                f"values such as {result[time_col].iloc[0]!r}",
                "pass daily dates (YYYY-MM-DD)",
                subject="engineer_features",
            )
        ) from exc
    if dates.isna().any() or (dates != dates.dt.normalize()).any():
        raise DataValidationError(
            problem(
                f"one calendar day per row in {time_col!r} (no time of day, no missing date)",
                f"{int(dates.isna().sum())} missing, "
                f"{int((dates.notna() & (dates != dates.dt.normalize())).sum())} with a time",
                "aggregate to days first (load_sales_data does)",
                subject="engineer_features",
            )
        )
    series = (
        result[id_col].astype(str)
        if id_col in result.columns
        else pd.Series("total", index=result.index)
    )
    days = _days(dates)
    years = range(int(dates.dt.year.min()) - 1, int(dates.dt.year.max()) + 2)

    holiday_columns: dict[str, npt.NDArray[np.generic]] = {}
    if "temporal" in names or "external" in names:
        keys = np.where(
            series.str.startswith(_COUNTRY_PREFIX),
            series.str.slice(len(_COUNTRY_PREFIX)),
            holiday_country,
        )
        calendars = _holiday_calendars(sorted(set(keys)), years)
        holiday_columns = {
            "is_holiday": np.zeros(days.size, dtype=bool),
            "days_to_holiday": np.full(days.size, np.nan),
            "days_since_holiday": np.full(days.size, np.nan),
        }
        for key, holidays in calendars.items():
            rows = np.flatnonzero(keys == key)
            for column, found in _holiday_features(days[rows], holidays).items():
                holiday_columns[column][rows] = found

    if "temporal" in names:
        result["year"] = dates.dt.year.astype("int64")
        result["month"] = dates.dt.month.astype("int64")
        result["day_of_week"] = dates.dt.dayofweek.astype("int64")
        result["quarter"] = dates.dt.quarter.astype("int64")
        result["is_weekend"] = (dates.dt.dayofweek >= 5).to_numpy()
        result["is_holiday"] = holiday_columns["is_holiday"]
    if "seasonal" in names:
        cycles = {
            "day_of_year": ((dates.dt.dayofyear - 1) / 365.25).to_numpy(),
            "month": ((dates.dt.month - 1) / 12).to_numpy(),
            "day_of_week": (dates.dt.dayofweek / 7).to_numpy(),
        }
        for name, phase in cycles.items():
            result[f"{name}_sin"] = np.sin(2 * np.pi * phase)
            result[f"{name}_cos"] = np.cos(2 * np.pi * phase)
    if "trend" in names:
        values = pd.to_numeric(result[target], errors="coerce")
        if not pd.api.types.is_numeric_dtype(result[target]) or values.isna().any():
            raise DataValidationError(
                problem(
                    f"a numeric, non-missing target {target!r}",
                    f"{int(values.isna().sum())} missing or non-numeric values",
                    "fill or drop those rows",
                    subject="engineer_features",
                )
            )
        duplicated = pd.DataFrame({"s": series.to_numpy(), "d": days}).duplicated()
        if duplicated.any():
            example = series.to_numpy()[duplicated.to_numpy()][0]
            raise DataValidationError(
                problem(
                    "one row per series and date",
                    f"{int(duplicated.sum())} duplicate rows (e.g. series {example!r})",
                    "aggregate duplicates (load_sales_data returns one row per series and day)",
                    subject="engineer_features",
                )
            )
        result["time_index"] = (days - _EPOCH).astype(np.int64)
        means = _trend_means(series, days, values.to_numpy(dtype=np.float64), TREND_WINDOWS)
        for window, mean in means.items():
            result[f"{target}_mean_{window}d"] = mean
    if "external" in names:
        result["days_to_holiday"] = holiday_columns["days_to_holiday"]
        result["days_since_holiday"] = holiday_columns["days_since_holiday"]
        result["days_to_christmas"] = _days_to_christmas(days)
        result["is_black_friday"] = np.isin(days, _black_fridays(years))
    return result
