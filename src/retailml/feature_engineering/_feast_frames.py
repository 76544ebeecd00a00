"""What callers pass to the feature store and what they get back.

Argument checks (names, TTLs, entity keys, feature names, time ranges) and the
conversions between pandas/Arrow frames and the published logical types: keys
as stored (dates as ISO strings), timestamps as UTC, results with the pandas
dtype of each logical type (``Int64``, ``float64``, ``boolean``,
``datetime64[ns, UTC]``, ``date`` objects, ``str``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from retailml.core.errors import DataValidationError, NotFoundError, problem
from retailml.feature_engineering._feast_published import (
    PublishedVersion,
    entity_key_values,
    key_value,
)
from retailml.feature_engineering._feast_registrations import FeatureSetRegistration

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
EVENT_TIMESTAMP = "event_timestamp"


def identifier(value: Any, what: str) -> str:
    """``value`` if it is an identifier (Feast names and SQLite tables need one)."""
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise DataValidationError(
            problem(
                f"a {what} of letters, digits and underscores, not starting with a digit",
                repr(value),
                "rename it, e.g. 'customer_features'",
                subject=what,
            )
        )
    return value


def check_ttl(ttl_days: Any) -> float | None:
    """``ttl_days`` as a float, or None for no limit."""
    if ttl_days is None:
        return None
    if isinstance(ttl_days, bool) or not isinstance(ttl_days, int | float) or ttl_days <= 0:
        raise DataValidationError(
            problem(
                "ttl_days as a positive number of days, or None",
                repr(ttl_days),
                "pass e.g. ttl_days=90",
                subject="ttl_days",
            )
        )
    return float(ttl_days)


def check_entity(entity: str | Sequence[str] | None, published: PublishedVersion) -> None:
    """Fail unless the expected entity keys (if given) are the published ones."""
    if entity is None:
        return
    expected = (entity,) if isinstance(entity, str) else tuple(entity)
    if expected != published.entity_keys:
        raise DataValidationError(
            problem(
                f"entity keys {list(expected)}",
                f"{list(published.entity_keys)} in {published.feature_set} "
                f"version {published.version}",
                f"pass entity={list(published.entity_keys)!r} or another source",
                subject=published.feature_set,
            )
        )


def resolve_features(
    features: Sequence[str] | None,
    published: PublishedVersion,
    aliases: Mapping[str, str],
) -> dict[str, str]:
    """``registered name -> published column`` for the requested features.

    Args:
        features: Column names or aliases; None for the default features.
        published: The published version they must be columns of.
        aliases: ``short name -> column`` for this feature set.

    Raises:
        NotFoundError: If a name is neither a feature column nor an alias.
        DataValidationError: If ``features`` is malformed or names a column twice.
    """
    available = published.feature_columns
    if features is None:
        return {c: c for c in published.default_features}
    if isinstance(features, str) or not all(isinstance(f, str) for f in features):
        raise DataValidationError(
            problem(
                "a list of feature names",
                repr(features),
                f"pass e.g. features=[{features!r}]"
                if isinstance(features, str)
                else "pass names as strings",
                subject="features",
            )
        )
    if not features:
        raise DataValidationError(
            problem(
                "at least one feature", "[]", "name features or omit features=", subject="features"
            )
        )
    mapping: dict[str, str] = {}
    unknown = []
    for name in features:
        column = name if name in available else aliases.get(name)
        if column is None or column not in available:
            unknown.append(name)
        elif name in mapping or column in mapping.values():
            raise DataValidationError(
                problem(
                    "each feature once",
                    f"{name!r} (column {column!r}) requested twice",
                    "drop the duplicate",
                    subject="features",
                )
            )
        else:
            mapping[name] = column
    if unknown:
        alias_text = f"; aliases: {dict(aliases)}" if aliases else ""
        raise NotFoundError(
            problem(
                f"features of {published.feature_set!r}",
                f"unknown {unknown}; available: {list(available)}{alias_text}",
                "pass available names or aliases",
                subject="features",
            )
        )
    clashing = [n for n, c in mapping.items() if n != c and n in published.columns]
    if clashing:
        raise DataValidationError(
            problem(
                "aliases that are not also column names",
                repr(clashing),
                "register the columns under their own names",
                subject="features",
            )
        )
    return mapping


def parse_bound(value: Any, *, upper: bool) -> dt.datetime:
    """A range bound as a UTC datetime; a date is its first (or, ``upper``, last) instant."""
    if isinstance(value, str):
        text = value.strip()
        try:
            day = dt.date.fromisoformat(text)
        except ValueError:
            try:
                value = pd.Timestamp(text).to_pydatetime()
            except ValueError as exc:
                raise DataValidationError(
                    problem(
                        "an ISO date or datetime",
                        repr(value),
                        "pass e.g. '2024-12-31'",
                        subject="timestamp_range",
                    )
                ) from exc
        else:
            value = day
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        start = dt.datetime.combine(value, dt.time(0), tzinfo=dt.UTC)
        return start + dt.timedelta(days=1, microseconds=-1) if upper else start
    raise DataValidationError(
        problem(
            "a date, datetime or ISO string",
            f"{value!r} ({type(value).__name__})",
            "pass e.g. '2024-12-31'",
            subject="timestamp_range",
        )
    )


def parse_range(
    timestamp_range: tuple[Any, Any] | None,
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """``(start, end)`` as UTC datetimes (None for open); dates cover whole days."""
    if timestamp_range is None:
        return None, None
    if isinstance(timestamp_range, str) or len(timestamp_range) != 2:
        raise DataValidationError(
            problem(
                "a (start, end) pair",
                repr(timestamp_range),
                "pass e.g. ('2024-01-01', '2024-12-31')",
                subject="timestamp_range",
            )
        )
    first, last = timestamp_range
    start = None if first is None else parse_bound(first, upper=False)
    end = None if last is None else parse_bound(last, upper=True)
    if start is not None and end is not None and start > end:
        raise DataValidationError(
            problem(
                "start <= end", f"{timestamp_range!r}", "swap the bounds", subject="timestamp_range"
            )
        )
    return start, end


def filter_entities(
    table: pa.Table, reg: FeatureSetRegistration, entity_ids: Sequence[Any]
) -> pa.Table:
    """The rows of ``table`` whose keys are among ``entity_ids`` (matched exactly)."""
    if isinstance(entity_ids, str | bytes) or not isinstance(entity_ids, Sequence | set):
        raise DataValidationError(
            problem(
                "a list of entity ids",
                repr(entity_ids),
                f"pass [{entity_ids!r}]" if isinstance(entity_ids, str) else "pass a list",
                subject="entity_ids",
            )
        )
    wanted = [entity_key_values(e, reg.entity_keys, reg.key_types) for e in entity_ids]
    if len(reg.entity_keys) == 1:
        values = pa.array([w[0] for w in wanted], type=table.schema.field(reg.entity_keys[0]).type)
        return table.filter(pc.is_in(table.column(reg.entity_keys[0]), value_set=values))
    wanted_table = pa.table(
        {
            k: pa.array([w[i] for w in wanted], type=table.schema.field(k).type)
            for i, k in enumerate(reg.entity_keys)
        }
    )
    return table.join(
        wanted_table.group_by(list(reg.entity_keys)).aggregate([]),
        keys=list(reg.entity_keys),
        join_type="left semi",
    )


def entity_columns(entity_df: Any, reg: FeatureSetRegistration) -> dict[str, list[Any]]:
    """The key columns of ``entity_df`` as stored (checked: present, non-null, typed)."""
    if not isinstance(entity_df, pd.DataFrame):
        raise DataValidationError(
            problem(
                "a pandas DataFrame",
                type(entity_df).__name__,
                "pass a DataFrame of entity keys and event_timestamp",
                subject="entity_df",
            )
        )
    needed = [*reg.entity_keys, EVENT_TIMESTAMP]
    missing = [c for c in needed if c not in entity_df.columns]
    if missing:
        raise DataValidationError(
            problem(
                f"columns {needed}",
                f"no {missing} among {list(entity_df.columns)}",
                "add them",
                subject="entity_df",
            )
        )
    clashing = [n for n in reg.features if n in entity_df.columns]
    if clashing:
        raise DataValidationError(
            problem(
                "no column named like a feature",
                f"{clashing}",
                "rename or drop those columns",
                subject="entity_df",
            )
        )
    columns = {}
    for key in reg.entity_keys:
        series = entity_df[key]
        if series.isna().any():
            raise DataValidationError(
                problem(
                    f"a {key} in every row",
                    f"{int(series.isna().sum())} null(s)",
                    "drop or fill those rows",
                    subject="entity_df",
                )
            )
        logical = reg.key_types[key]
        values = series.tolist()
        if logical == "string" and all(isinstance(v, str) for v in values):
            columns[key] = values
        else:
            columns[key] = [key_value(v, logical, key) for v in values]
    return columns


def utc_column(series: pd.Series, name: str) -> pd.Series:
    """``series`` as UTC timestamps (naive values are UTC); no nulls allowed."""
    try:
        values = pd.to_datetime(series, utc=True)
    except (ValueError, TypeError) as exc:
        raise DataValidationError(
            problem(
                "timestamps",
                f"unparseable values ({exc})",
                "pass datetimes",
                subject=f"entity_df.{name}",
            )
        ) from exc
    if values.isna().any():
        raise DataValidationError(
            problem(
                f"a {name} in every row",
                f"{int(values.isna().sum())} null(s)",
                "drop or fill those rows",
                subject="entity_df",
            )
        )
    return values.astype("datetime64[ns, UTC]")


def typed_series(series: pd.Series, logical: str) -> pd.Series:
    """A column with the pandas dtype of its logical type (nulls as NA/NaN/NaT/None)."""
    if logical == "integer":
        return pd.to_numeric(series, errors="coerce").astype("Int64")
    if logical == "float":
        return pd.to_numeric(series, errors="coerce").astype("float64")
    if logical == "boolean":
        return series.astype("boolean")
    if logical == "timestamp":
        return pd.to_datetime(series, utc=True).astype("datetime64[ns, UTC]")
    if logical == "date":
        stamps = pd.to_datetime(series, utc=True)
        return pd.Series(
            [None if pd.isna(t) else t.date() for t in stamps], index=series.index, dtype=object
        )
    return pd.Series([None if pd.isna(v) else v for v in series], index=series.index, dtype=object)


def typed_frame(frame: pd.DataFrame, reg: FeatureSetRegistration) -> pd.DataFrame:
    """Feature rows with keys, ``event_timestamp`` and features in their pandas dtypes."""
    out = pd.DataFrame(index=pd.RangeIndex(len(frame)))
    for key in reg.entity_keys:
        logical = reg.key_types[key]
        column = frame[key].reset_index(drop=True)
        if logical == "date":
            out[key] = pd.Series(
                [dt.date.fromisoformat(v) for v in column], index=out.index, dtype=object
            )
        else:
            out[key] = typed_series(column, logical)
    out[EVENT_TIMESTAMP] = typed_series(frame[EVENT_TIMESTAMP].reset_index(drop=True), "timestamp")
    for name, logical in reg.feature_types.items():
        out[name] = typed_series(frame[name].reset_index(drop=True), logical)
    return out


def count_entities(
    path: Path, reg: FeatureSetRegistration, start: dt.datetime, end: dt.datetime
) -> int:
    """Entities with a feature row in ``[start, end]``: what materialize writes."""
    table = pq.read_table(path, columns=[*reg.entity_keys, reg.timestamp_column])
    stamps = table.column(reg.timestamp_column)
    mask = pc.and_(
        pc.greater_equal(stamps, pa.scalar(start, stamps.type)),
        pc.less_equal(stamps, pa.scalar(end, stamps.type)),
    )
    selected = table.filter(mask).select(list(reg.entity_keys))
    return int(selected.group_by(list(reg.entity_keys)).aggregate([]).num_rows)
