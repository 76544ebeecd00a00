"""Training data from the workspace, as a training config's ``data:`` section describes it.

::

    data:
      source: feature_set      # feature_set (default) | silver | file
      name: daily_sales        # the feature set (source: feature_set)
      path: null               # a Parquet or CSV file or a directory of Parquet (source: file)
      filter: {level: country} # keep rows whose column equals the value (or is in the list)
      top_series: 20           # keep the N series with the largest total target
      window: 2y               # keep the last 2 years (also 6m, 12M, 90d, 8w)
      holdout: 28              # keep back the last 28 periods (int) or a share (0.2) as test data

Feature sets are read at their latest published version (recorded with the
run); silver transactions are every ingested part. Date columns stored as
calendar dates become ``datetime64``. A feature set with several snapshots
per entity (``customer_rfm`` monthly) keeps each entity's latest one unless
the rows are a time series (``date`` column).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from retailml.core.errors import ConfigError, DataValidationError, NotFoundError, problem
from retailml.core.settings import Settings, get_settings
from retailml.data.ingest import read_silver
from retailml.feature_engineering.feature_pipeline import load_feature_set

__all__ = ["TrainingData", "load_training_data", "parse_window"]

_KEYS: Final = ("source", "name", "path", "filter", "top_series", "window", "holdout")
_WINDOW = re.compile(r"^\s*(\d+)\s*([dwmyDWMY])\s*$")
_UNITS: Final = {"d": "days", "w": "weeks", "m": "months", "y": "years"}
_TIME_COLUMNS: Final = ("date", "invoice_date", "event_timestamp")


@dataclass
class TrainingData:
    """Training rows, the held-out test rows and where they came from."""

    train: pd.DataFrame
    test: pd.DataFrame | None
    source: str
    data_version: str | None = None
    feature_set_versions: dict[str, str] = field(default_factory=dict)


def parse_window(text: str) -> pd.DateOffset:
    """``"2y"``, ``"12M"``, ``"90d"``, ``"8w"`` as a calendar offset.

    Raises:
        ConfigError: for any other form.
    """
    match = _WINDOW.match(str(text))
    if not match or int(match.group(1)) < 1:
        raise ConfigError(
            problem(
                "a window such as '2y', '12M', '90d' or '8w'",
                repr(text),
                "write a positive number followed by d, w, m or y",
                subject="data window",
            )
        )
    amount = int(match.group(1))
    unit = _UNITS[match.group(2).lower()]
    if unit == "days":
        return pd.DateOffset(days=amount)
    if unit == "weeks":
        return pd.DateOffset(weeks=amount)
    if unit == "months":
        return pd.DateOffset(months=amount)
    return pd.DateOffset(years=amount)


def _time_column(frame: pd.DataFrame) -> str | None:
    return next((c for c in _TIME_COLUMNS if c in frame.columns), None)


def _read_file(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise NotFoundError(
            problem("an existing file or directory", repr(str(path)), "check the path")
        )
    if path.is_dir() or path.suffix == ".parquet":
        table: pd.DataFrame = pq.read_table(path).to_pandas()
        return table
    if path.suffix == ".csv":
        csv: pd.DataFrame = pd.read_csv(path)
        return csv
    raise DataValidationError(
        problem("a .parquet or .csv file, or a directory of Parquet", repr(str(path)), "convert it")
    )


def _dates(frame: pd.DataFrame) -> pd.DataFrame:
    # Hive partition columns (year=2023/month=12) come back as categories.
    for column in ("year", "month"):
        if column in frame.columns and isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = pd.to_numeric(frame[column].astype(str)).astype("int64")
    for column in _TIME_COLUMNS:
        if column in frame.columns and not pd.api.types.is_datetime64_any_dtype(frame[column]):
            frame[column] = pd.to_datetime(frame[column])
        if column in frame.columns and getattr(frame[column].dt, "tz", None) is not None:
            frame[column] = frame[column].dt.tz_convert(None)
    return frame


def load_training_data(
    config: Mapping[str, Any] | None,
    *,
    target: str | None = None,
    window: str | None = None,
    settings: Settings | None = None,
) -> TrainingData:
    """Read, filter and split the training data a config's ``data:`` section names.

    Args:
        config: The ``data:`` mapping (see the module docstring).
        target: The target column (for ``top_series``).
        window: Overrides the config's ``window`` (the CLI's ``--data-window``).
        settings: retailml settings.

    Raises:
        ConfigError: for an unknown key or value.
        NotFoundError: when the feature set, silver data or file does not exist.
        DataValidationError: when filtering leaves no rows.
    """
    settings = settings or get_settings()
    config = dict(config or {})
    unknown = sorted(set(config) - set(_KEYS))
    if unknown:
        raise ConfigError(
            problem(
                f"data keys among {list(_KEYS)!r}", f"unknown {unknown!r}", "rename or drop them"
            )
        )
    source = str(config.get("source", "feature_set"))
    versions: dict[str, str] = {}
    data_version: str | None = None
    if source == "feature_set":
        name = config.get("name")
        if not name:
            raise ConfigError(problem("data.name: a feature set", "none", "e.g. name: daily_sales"))
        published = load_feature_set(str(name), settings=settings)
        frame = pq.read_table(published.path).to_pandas()
        versions[str(name)] = published.version
        data_version = published.input_data_version or None
        label = f"feature set {name} {published.version}"
    elif source == "silver":
        frame = read_silver(settings).to_pandas()
        if frame.empty:
            raise NotFoundError(
                problem(
                    "ingested silver transactions",
                    "none",
                    "run 'retailml data ingest PATH' first",
                    subject="silver",
                )
            )
        if "is_anomaly" in frame.columns:
            if frame["is_anomaly"].isna().all():
                frame = frame.drop(columns=["is_anomaly"])
            else:
                frame["is_anomaly"] = frame["is_anomaly"].fillna(False).astype(bool)
        label = "silver transactions"
    elif source == "file":
        if not config.get("path"):
            raise ConfigError(problem("data.path for source: file", "none", "name the file"))
        frame = _read_file(Path(str(config["path"])))
        label = str(config["path"])
    else:
        raise ConfigError(
            problem("data.source among 'feature_set', 'silver', 'file'", repr(source), "pick one")
        )
    frame = _dates(frame)
    for column, wanted in dict(config.get("filter") or {}).items():
        if column not in frame.columns:
            raise ConfigError(
                problem(
                    f"a filter column among {list(map(str, frame.columns))}",
                    repr(column),
                    "fix data.filter",
                )
            )
        values = wanted if isinstance(wanted, list) else [wanted]
        frame = frame[frame[column].isin(values)]
    time_col = _time_column(frame)
    if source == "feature_set" and "date" not in frame.columns and "customer_id" in frame:
        # Entity snapshots (customer_rfm monthly): each customer's latest one.
        order = time_col or "customer_id"
        frame = frame.sort_values(order).groupby("customer_id", as_index=False).tail(1)
    chosen_window = window or config.get("window")
    if chosen_window and time_col:
        last = frame[time_col].max()
        frame = frame[frame[time_col] > last - parse_window(str(chosen_window))]
    top = config.get("top_series")
    if top and "series_id" in frame.columns and target and target in frame.columns:
        totals = frame.groupby("series_id")[target].sum().nlargest(int(top))
        frame = frame[frame["series_id"].isin(totals.index)]
    if frame.empty:
        raise DataValidationError(
            problem(
                f"rows left after filtering {label}",
                "none",
                "loosen data.filter, data.window or data.top_series",
                subject="training data",
            )
        )
    frame = frame.reset_index(drop=True)
    train, test = _holdout(frame, config.get("holdout"), time_col)
    return TrainingData(train, test, label, data_version, versions)


def _holdout(
    frame: pd.DataFrame, holdout: object, time_col: str | None
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    if holdout in (None, 0):
        return frame, None
    if isinstance(holdout, bool) or not isinstance(holdout, int | float) or holdout < 0:
        raise ConfigError(
            problem("data.holdout: periods (int) or a share in (0, 1)", repr(holdout), "fix it")
        )
    if time_col and time_col == "date":
        periods = np.sort(frame[time_col].unique())
        count = int(holdout) if holdout >= 1 else max(1, round(len(periods) * float(holdout)))
        if count >= len(periods):
            raise DataValidationError(
                problem(
                    f"fewer held-out periods than the {len(periods)} in the data",
                    repr(holdout),
                    "lower data.holdout",
                )
            )
        cut = periods[-count - 1]
        return frame[frame[time_col] <= cut], frame[frame[time_col] > cut]
    share = float(holdout) if holdout < 1 else float(holdout) / len(frame)
    rng = np.random.default_rng(0)
    mask = np.zeros(len(frame), dtype=bool)
    mask[rng.permutation(len(frame))[: max(1, round(len(frame) * share))]] = True
    return frame.loc[~mask], frame.loc[mask]
