"""One read-only view over a pandas DataFrame or a pyarrow Table.

The checks ask a frame four things: its row count, its column names, each
column's logical kind, and each column's values (as a missing-value count or
a float array). This module answers them for both libraries without copying
the whole frame: a pyarrow column is read in place, one column at a time.

Logical kinds are the words of ``expected_schema`` (``"integer"``,
``"float"``, ...) plus a few that no schema can ask for (``"null"``,
``"object"``, ``"timedelta"``, ...), so a wrong type is reported in the same
words whichever library holds the data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from retailml.core.errors import ConfigError, DataValidationError, problem

Frame: TypeAlias = pd.DataFrame | pa.Table
FloatArray: TypeAlias = npt.NDArray[np.float64]

#: Kinds whose values are read as numbers by the outlier checks.
NUMERIC_KINDS: frozenset[str] = frozenset({"integer", "float"})

# pandas.api.types.infer_dtype results for object columns, mapped to kinds.
# Values that are neither listed nor numeric-looking become "object".
_INFERRED_KINDS: dict[str, str] = {
    "string": "string",
    "integer": "integer",
    "floating": "float",
    "mixed-integer-float": "float",
    "decimal": "float",
    "boolean": "boolean",
    "datetime": "datetime",
    "datetime64": "datetime",
    "date": "date",
    "timedelta": "timedelta",
    "timedelta64": "timedelta",
    "empty": "null",
}


def check_frame(frame: object) -> Frame:
    """Return ``frame`` if it is a non-empty DataFrame or Table with unique column names.

    Raises:
        DataValidationError: For another type, an empty frame or repeated column names.
    """
    if not isinstance(frame, pd.DataFrame | pa.Table):
        raise DataValidationError(
            problem(
                "a pandas DataFrame or a pyarrow Table",
                f"{type(frame).__name__}",
                "pass the features as a DataFrame or a pyarrow Table",
            )
        )
    if row_count(frame) == 0:
        raise DataValidationError(
            problem(
                "at least one row",
                "an empty frame",
                "validate the features after they have been computed",
            )
        )
    names = column_names(frame)
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        raise DataValidationError(
            problem(
                "unique column names",
                f"repeated names {repeated!r}",
                "rename or drop the repeated columns",
            )
        )
    return frame


def row_count(frame: Frame) -> int:
    """The number of rows."""
    return frame.num_rows if isinstance(frame, pa.Table) else len(frame)


def column_names(frame: Frame) -> list[str]:
    """Column names, in frame order."""
    if isinstance(frame, pa.Table):
        return list(frame.column_names)
    return [str(name) for name in frame.columns]


def select_columns(frame: Frame, columns: Sequence[str] | None) -> list[str]:
    """The columns a check looks at: all of them, or the ``columns`` subset in its order.

    Raises:
        ConfigError: If ``columns`` is a bare string or names no column.
        DataValidationError: If ``columns`` names a column the frame does not have.
    """
    available = column_names(frame)
    if columns is None:
        return available
    if isinstance(columns, str):
        raise ConfigError(
            problem(
                "a list of column names for 'columns'",
                f"the string {columns!r}",
                f"wrap it in a list: columns=[{columns!r}]",
            )
        )
    selected = list(dict.fromkeys(columns))
    if not selected:
        raise ConfigError(
            problem(
                "at least one column name in 'columns'",
                "an empty list",
                "name the columns to check, or pass columns=None to check every column",
            )
        )
    unknown = [name for name in selected if name not in available]
    if unknown:
        raise DataValidationError(
            problem(
                f"columns {unknown!r} in the frame",
                f"only {available!r}",
                "check the spelling, or compute the missing columns first",
            )
        )
    return selected


def _pandas_column(frame: pd.DataFrame, name: str) -> pd.Series:
    # Column labels are reported as str; find the label they came from.
    for label in frame.columns:
        if str(label) == name:
            return frame[label]
    raise KeyError(name)  # unreachable after select_columns


def native_dtype(frame: Frame, name: str) -> str:
    """The library's own name for a column's type (``int64``, ``object``, ``string``...)."""
    if isinstance(frame, pa.Table):
        return str(frame.schema.field(name).type)
    return str(_pandas_column(frame, name).dtype)


def logical_kind(frame: Frame, name: str) -> str:
    """A column's logical kind; object columns are classified by their values."""
    if isinstance(frame, pa.Table):
        return _arrow_kind(frame.schema.field(name).type)
    return _pandas_kind(_pandas_column(frame, name))


def _arrow_kind(dtype: pa.DataType) -> str:
    types = pa.types
    if types.is_dictionary(dtype):
        return "category"
    if types.is_boolean(dtype):
        return "boolean"
    if types.is_integer(dtype):
        return "integer"
    if types.is_floating(dtype) or types.is_decimal(dtype):
        return "float"
    if types.is_string(dtype) or types.is_large_string(dtype) or types.is_string_view(dtype):
        return "string"
    if types.is_timestamp(dtype):
        return "datetime"
    if types.is_date(dtype):
        return "date"
    if types.is_duration(dtype):
        return "timedelta"
    if types.is_null(dtype):
        return "null"
    return "object"


def _pandas_kind(series: pd.Series) -> str:
    dtype = series.dtype
    if isinstance(dtype, pd.ArrowDtype):
        return _arrow_kind(dtype.pyarrow_dtype)
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "integer"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if isinstance(dtype, pd.StringDtype):
        return "string"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if pd.api.types.is_timedelta64_dtype(dtype):
        return "timedelta"
    if pd.api.types.is_object_dtype(dtype):
        return _INFERRED_KINDS.get(pd.api.types.infer_dtype(series, skipna=True), "object")
    return "object"


def missing_count(frame: Frame, name: str) -> int:
    """Nulls plus floating-point NaN in one column."""
    if isinstance(frame, pa.Table):
        column = frame.column(name)
        count = column.null_count
        if pa.types.is_floating(column.type):
            # NaN is a value to Arrow but missing to pandas; count it as missing in both.
            nan = pc.sum(pc.is_nan(column)).as_py()
            count += int(nan or 0)
        return int(count)
    return int(_pandas_column(frame, name).isna().sum())


def float_values(frame: Frame, name: str) -> FloatArray:
    """A numeric column as float64, with NaN where a value is missing."""
    if isinstance(frame, pa.Table):
        column = frame.column(name)
        if pa.types.is_dictionary(column.type) or not (
            pa.types.is_integer(column.type)
            or pa.types.is_floating(column.type)
            or pa.types.is_decimal(column.type)
        ):
            raise TypeError(f"{name} is not numeric")  # callers check the kind first
        values = pc.cast(column, pa.float64()).to_numpy()
        return np.asarray(values, dtype=np.float64)
    series = _pandas_column(frame, name)
    if isinstance(series.dtype, pd.ArrowDtype):
        series = series.astype("float64")
    return np.asarray(series.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
