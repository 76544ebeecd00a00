"""Data-quality checks on a feature frame: missing values, outliers, schema.

Each check takes a pandas DataFrame or a pyarrow Table and returns a
:class:`CheckResult`: a verdict, one :class:`Finding` per column and
JSON-serialisable details. A result is truthy when it passed::

    validator = DataQualityValidator()
    result = validator.check_missing_values(features_df, threshold=0.05)
    if not result:
        for finding in result.failures:
            print(finding.message)   # "recency_days: 7.5% missing; expected at most 5.0%"

A failed check is a result, not an exception: the caller decides whether it
stops a pipeline. Exceptions are for calls that cannot be answered:
:class:`~retailml.core.errors.ConfigError` for bad arguments (an unknown
method, a share out of range, an unknown logical type) and
:class:`~retailml.core.errors.DataValidationError` for a frame that cannot be
checked (no rows, repeated column names, a named column that is absent).

Logical types of :meth:`DataQualityValidator.validate_schema`:

==========  ===============================================  ============================
type        pandas dtypes                                    pyarrow types
==========  ===============================================  ============================
string      ``string``, object holding only str              string, large_string
integer     int*/uint*, ``Int64``..., object holding ints    int*/uint*
float       float*, ``Float64``; **integer columns too**     float*/double, decimal
boolean     bool, ``boolean``, object holding only bools     bool
datetime    ``datetime64[...]`` (with or without a zone)     timestamp
date        object holding ``datetime.date``                 date32, date64
category    ``category``                                     dictionary
==========  ===============================================  ============================

Object columns are classified by their values (ignoring missing ones), so a
column of Python strings is ``string``. ``float`` accepts integer columns
because every integer is a valid float feature. No other type stands in for
another: a bool column is not ``integer`` and a ``datetime64`` column is not
``date``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from retailml.core.errors import ConfigError, DataValidationError, problem
from retailml.validators._frames import (
    NUMERIC_KINDS,
    FloatArray,
    Frame,
    check_frame,
    column_names,
    float_values,
    logical_kind,
    missing_count,
    native_dtype,
    row_count,
    select_columns,
)
from retailml.validators._outliers import (
    IQR_FACTOR,
    ZSCORE_LIMIT,
    ColumnOutliers,
    iqr_outliers,
    isolation_forest_outliers,
    zscore_outliers,
)
from retailml.validators._results import CheckResult, Finding

__all__ = [
    "LOGICAL_TYPES",
    "OUTLIER_METHODS",
    "CheckResult",
    "DataQualityValidator",
    "Finding",
]

#: The logical types ``expected_schema`` may name.
LOGICAL_TYPES: tuple[str, ...] = (
    "string",
    "integer",
    "float",
    "boolean",
    "datetime",
    "date",
    "category",
)
#: The outlier rules :meth:`DataQualityValidator.detect_outliers` knows.
OUTLIER_METHODS: tuple[str, ...] = ("isolation_forest", "iqr", "zscore")

#: Outlier details list at most this many row positions per finding.
MAX_REPORTED_ROWS = 100

# Which column kinds satisfy each expected logical type.
_ACCEPTED_KINDS: dict[str, frozenset[str]] = {
    name: frozenset({name, "integer"} if name == "float" else {name}) for name in LOGICAL_TYPES
}
# Spellings people reach for, to suggest the logical type they meant.
_TYPE_ALIASES: dict[str, str] = {
    "str": "string",
    "object": "string",
    "text": "string",
    "int": "integer",
    "int64": "integer",
    "int32": "integer",
    "double": "float",
    "float64": "float",
    "float32": "float",
    "numeric": "float",
    "number": "float",
    "bool": "boolean",
    "timestamp": "datetime",
    "datetime64": "datetime",
    "categorical": "category",
}


class DataQualityValidator:
    """Checks a feature frame for missing values, outliers and schema drift.

    The validator holds no state: every check reads only its arguments, so
    one instance can be shared. Inputs are pandas DataFrames or pyarrow
    Tables; a Table is read column by column, never converted as a whole.
    Work is vectorised per column (no per-row Python).
    """

    def check_missing_values(
        self,
        df: Frame,
        threshold: float = 0.05,
        columns: Sequence[str] | None = None,
    ) -> CheckResult:
        """Measure the share of missing values (null, None, NaN, NaT) in each column.

        A column passes when its missing share is at most ``threshold``; the
        check passes when every column does.

        Args:
            df: The features.
            threshold: The largest allowed missing share, in [0, 1].
            columns: Check only these columns (default: all).

        Returns:
            A ``"missing_values"`` result with one finding per column (measured:
            the missing share) and details ``rows``, ``threshold``,
            ``missing_count`` and ``missing_share`` (both per column).

        Raises:
            ConfigError: ``threshold`` is not a number in [0, 1], or ``columns`` is empty.
            DataValidationError: The frame is empty or lacks a named column.
        """
        frame = check_frame(df)
        limit = _share_parameter(
            threshold,
            name="threshold",
            method="check_missing_values",
            low_open=False,
            high=1.0,
            fix="pass the largest share of missing values to allow, e.g. threshold=0.05",
        )
        names = select_columns(frame, columns)
        rows = row_count(frame)
        findings = []
        counts: dict[str, int] = {}
        shares: dict[str, float] = {}
        for name in names:
            counts[name] = missing_count(frame, name)
            shares[name] = counts[name] / rows
            passed = shares[name] <= limit
            findings.append(
                Finding(
                    column=name,
                    measured=shares[name],
                    threshold=limit,
                    passed=passed,
                    message=f"{name}: {_percent(shares[name], limit)} missing; "
                    + _verdict(shares[name], limit, passed),
                )
            )
        return CheckResult(
            check="missing_values",
            passed=all(finding.passed for finding in findings),
            findings=tuple(findings),
            details={
                "rows": rows,
                "threshold": limit,
                "missing_count": counts,
                "missing_share": shares,
            },
        )

    def detect_outliers(
        self,
        df: Frame,
        method: str = "isolation_forest",
        contamination: float = 0.1,
        columns: Sequence[str] | None = None,
        max_outlier_share: float | None = None,
        random_state: int | None = 0,
    ) -> CheckResult:
        """Find outlying values in the numeric columns.

        Only integer and float columns are examined; the others, and numeric
        columns with no value at all, are skipped and named in
        ``details["skipped_columns"]``. Missing values are never outliers;
        infinite values always are.

        Methods:
            ``"iqr"``: per column, values outside [Q1 - 1.5 IQR, Q3 + 1.5 IQR].
            ``"zscore"``: per column, values with ``|x - mean| / std > 3``
            (population standard deviation).
            ``"isolation_forest"``: scikit-learn's IsolationForest over all
            examined columns jointly, one verdict per row; missing values are
            replaced by the column median first.

        Pass or fail:
            A finding passes when its outlier share (outliers / rows) is at
            most ``max_outlier_share``. For ``"iqr"`` and ``"zscore"`` that
            limit defaults to ``contamination``, the share of outliers you
            expect. An isolation forest flags about ``contamination`` of the
            rows by construction, so a limit of ``contamination`` would be
            meaningless: without ``max_outlier_share`` it always passes and
            reports what it flagged; give ``max_outlier_share`` to fail on a
            share.

        Args:
            df: The features.
            method: One of :data:`OUTLIER_METHODS`.
            contamination: The expected outlier share, in (0, 0.5]: the
                forest's contamination, and the default limit of the other methods.
            columns: Examine only these columns (default: all).
            max_outlier_share: The largest allowed outlier share, in [0, 1].
            random_state: Seed of the isolation forest, for repeatable results.

        Returns:
            An ``"outliers"`` result. Findings are per column for ``"iqr"`` and
            ``"zscore"`` and a single joint finding with column ``"*"`` for
            the forest; measured is the outlier share. Details: ``method``,
            ``contamination``, ``max_outlier_share`` (the limit applied, or
            None), ``rows``, ``columns`` (examined), ``skipped_columns``
            (column -> reason), and keyed by finding column: ``outlier_count``,
            ``outlier_share``, ``outlier_rows`` (the first 100 0-based row
            positions, for ``df.iloc``) and, except for the forest, ``bounds``
            (the [low, high] range that is not an outlier).

        Raises:
            ConfigError: An unknown method, or a parameter out of range.
            DataValidationError: The frame is empty, lacks a named column, or
                has no numeric column with values.
        """
        frame = check_frame(df)
        rule = _choice_parameter(method, name="method", choices=OUTLIER_METHODS)
        expected_share = _share_parameter(
            contamination,
            name="contamination",
            method="detect_outliers",
            low_open=True,
            high=0.5,
            fix="pass the share of rows you expect to be outliers, e.g. contamination=0.1",
        )
        limit = (
            None
            if max_outlier_share is None
            else _share_parameter(
                max_outlier_share,
                name="max_outlier_share",
                method="detect_outliers",
                low_open=False,
                high=1.0,
                fix="pass the largest share of outliers to allow, e.g. max_outlier_share=0.1",
            )
        )
        seed = _seed_parameter(random_state)
        names = select_columns(frame, columns)
        rows = row_count(frame)

        values: dict[str, FloatArray] = {}
        skipped: dict[str, str] = {}
        for name in names:
            kind = logical_kind(frame, name)
            if kind not in NUMERIC_KINDS:
                skipped[name] = f"not numeric ({kind})"
                continue
            column = float_values(frame, name)
            if np.isnan(column).all():
                skipped[name] = "every value is missing"
                continue
            values[name] = column
        if not values:
            raise DataValidationError(
                problem(
                    "at least one integer or float column with values",
                    f"none among {names!r} (skipped: {skipped!r})",
                    "pass columns= naming numeric feature columns",
                    subject="detect_outliers",
                )
            )

        flagged: dict[str, npt.NDArray[np.intp]] = {}
        bounds: dict[str, list[float | None]] = {}
        if rule == "isolation_forest":
            matrix = np.column_stack(list(values.values()))
            mask = isolation_forest_outliers(
                matrix, contamination=expected_share, random_state=seed
            )
            flagged["*"] = np.flatnonzero(mask)
            findings = [
                _forest_finding(flagged["*"].size, rows, len(values), expected_share, limit)
            ]
        else:
            limit = expected_share if limit is None else limit
            find = iqr_outliers if rule == "iqr" else zscore_outliers
            findings = []
            for name, column in values.items():
                found = find(column)
                flagged[name] = np.flatnonzero(found.mask)
                bounds[name] = [_json_float(found.low), _json_float(found.high)]
                findings.append(_column_finding(name, rule, found, flagged[name].size, rows, limit))

        details: dict[str, Any] = {
            "method": rule,
            "contamination": expected_share,
            "max_outlier_share": limit,
            "rows": rows,
            "columns": list(values),
            "skipped_columns": skipped,
            "outlier_count": {key: int(hits.size) for key, hits in flagged.items()},
            "outlier_share": {key: hits.size / rows for key, hits in flagged.items()},
            "outlier_rows": {
                key: hits[:MAX_REPORTED_ROWS].tolist() for key, hits in flagged.items()
            },
        }
        if bounds:
            details["bounds"] = bounds
        return CheckResult(
            check="outliers",
            passed=all(finding.passed for finding in findings),
            findings=tuple(findings),
            details=details,
        )

    def validate_schema(
        self,
        df: Frame,
        expected_schema: Mapping[str, str],
    ) -> CheckResult:
        """Check that each expected column exists and has the expected logical type.

        The logical types and the dtypes that satisfy them are tabled in this
        module's docstring; ``"float"`` also accepts integer columns. Columns
        the schema does not name are allowed and listed in
        ``details["extra_columns"]``. The schema names the columns to check,
        so this check has no ``columns`` argument.

        Args:
            df: The features.
            expected_schema: ``column -> logical type``, e.g.
                ``{"customer_id": "string", "recency_days": "integer"}``.

        Returns:
            A ``"schema"`` result with one finding per expected column
            (measured: the column's logical type, or ``"missing"``; threshold:
            the expected type) and details ``expected``, ``actual`` and
            ``dtypes`` (logical type and library dtype of each expected column
            found), ``missing_columns`` and ``extra_columns``.

        Raises:
            ConfigError: ``expected_schema`` is empty or names an unknown logical type.
            DataValidationError: The frame is empty or has repeated column names.
        """
        frame = check_frame(df)
        schema = _schema_parameter(expected_schema)
        available = column_names(frame)
        findings = []
        actual: dict[str, str] = {}
        dtypes: dict[str, str] = {}
        missing: list[str] = []
        for name, expected in schema.items():
            if name not in available:
                missing.append(name)
                message = f"expected column {name} ({expected}); not found"
                findings.append(Finding(name, "missing", expected, False, message))
                continue
            kind, dtype = logical_kind(frame, name), native_dtype(frame, name)
            actual[name], dtypes[name] = kind, dtype
            passed = kind in _ACCEPTED_KINDS[expected]
            if passed:
                message = f"{name}: {dtype} ({kind}) satisfies {expected}"
            else:
                message = f"{name}: expected {expected}; got {dtype} ({kind})"
                message += _type_hint(frame, name, expected, kind)
            findings.append(Finding(name, kind, expected, passed, message))
        return CheckResult(
            check="schema",
            passed=all(finding.passed for finding in findings),
            findings=tuple(findings),
            details={
                "expected": dict(schema),
                "actual": actual,
                "dtypes": dtypes,
                "missing_columns": missing,
                "extra_columns": [name for name in available if name not in schema],
            },
        )


def _parameter_problem(name: str, method: str, expected: str, got: object, fix: str) -> str:
    # One template for every argument, as scikit-learn's parameter validation does.
    subject = f"The {name!r} parameter of DataQualityValidator.{method}"
    return problem(expected, repr(got), fix, subject=subject)


def _share_parameter(
    value: object, *, name: str, method: str, low_open: bool, high: float, fix: str
) -> float:
    """``value`` as a float in [0, high], or (0, high] when ``low_open``."""
    interval = f"{'(' if low_open else '['}0, {high:g}]"
    number = math.nan
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
    too_low = number <= 0.0 if low_open else number < 0.0
    if math.isnan(number) or too_low or number > high:
        raise ConfigError(_parameter_problem(name, method, f"a float in {interval}", value, fix))
    return number


def _seed_parameter(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(
            _parameter_problem(
                "random_state",
                "detect_outliers",
                "an int or None",
                value,
                "pass an integer seed, e.g. random_state=0",
            )
        )
    return int(value)


def _choice_parameter(value: object, *, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(
            _parameter_problem(
                name,
                "detect_outliers",
                f"one of {', '.join(map(repr, choices))}",
                value,
                f"pass one of them, e.g. {name}={choices[0]!r}",
            )
        )
    return value


def _schema_parameter(expected_schema: object) -> dict[str, str]:
    """``expected_schema`` as a dict, reporting every unknown type at once."""
    if not isinstance(expected_schema, Mapping) or not expected_schema:
        raise ConfigError(
            _parameter_problem(
                "expected_schema",
                "validate_schema",
                "a non-empty mapping of column name to logical type",
                expected_schema,
                "pass e.g. expected_schema={'customer_id': 'string', 'recency_days': 'integer'}",
            )
        )
    unknown = {
        str(name): kind for name, kind in expected_schema.items() if kind not in LOGICAL_TYPES
    }
    if unknown:
        suggestions = []
        for name, kind in unknown.items():
            alias = _TYPE_ALIASES.get(kind.lower()) if isinstance(kind, str) else None
            if alias:
                suggestions.append(f"{name!r}: {alias!r}")
        fix = "use one of the listed logical types"
        if suggestions:
            fix += f", e.g. {', '.join(suggestions)}"
        raise ConfigError(
            _parameter_problem(
                "expected_schema",
                "validate_schema",
                f"logical types among {', '.join(map(repr, LOGICAL_TYPES))}",
                unknown,
                fix,
            )
        )
    return {str(name): str(kind) for name, kind in expected_schema.items()}


def _type_hint(frame: Frame, name: str, expected: str, kind: str) -> str:
    """Why a common mismatch happens and how to fix it, or ``""``."""
    if expected == "integer" and kind == "float":
        values = float_values(frame, name)
        finite = values[np.isfinite(values)]
        if finite.size and bool(np.all(np.floor(finite) == finite)):
            return (
                " (every value is a whole number: missing values make pandas store integers "
                "as float; cast with .astype('Int64') to keep them integer)"
            )
    if expected == "date" and kind == "datetime":
        return " (pandas stores dates as datetime64: expect 'datetime', or convert with .dt.date)"
    if expected == "string" and kind == "category":
        return " (expect 'category', or convert with .astype('string'))"
    return ""


def _percent(value: float, other: float | None = None) -> str:
    """``value`` as a percentage, with enough decimals to tell it apart from ``other``."""
    for digits in range(1, 7):
        text = f"{value:.{digits}%}"
        if other is None or value == other or text != f"{other:.{digits}%}":
            break
    return text


def _forest_finding(
    count: int, rows: int, width: int, contamination: float, limit: float | None
) -> Finding:
    share = count / rows
    head = (
        f"*: {_percent(share, limit)} of rows flagged by isolation_forest over "
        f"{width} numeric columns ({count} of {rows}); "
    )
    if limit is None:
        tail = (
            f"no limit: the forest flags about contamination={_percent(contamination)} "
            "by construction; pass max_outlier_share to fail on a share"
        )
        return Finding("*", share, None, True, head + tail)
    passed = share <= limit
    return Finding("*", share, limit, passed, head + _verdict(share, limit, passed))


def _column_finding(
    name: str, rule: str, found: ColumnOutliers, count: int, rows: int, limit: float
) -> Finding:
    share = count / rows
    interval = f"[{found.low:.6g}, {found.high:.6g}]"
    if rule == "iqr":
        how = f"outside the {IQR_FACTOR:g} IQR fences {interval}"
    else:
        how = f"with |z| > {ZSCORE_LIMIT:g}, i.e. outside {interval}"
    passed = share <= limit
    message = (
        f"{name}: {_percent(share, limit)} outliers by {rule} ({count} of {rows} rows {how}); "
        + _verdict(share, limit, passed)
    )
    return Finding(name, share, limit, passed, message)


def _verdict(measured: float, limit: float, passed: bool) -> str:
    if passed:
        return f"within {_percent(limit, measured)}"
    return f"expected at most {_percent(limit, measured)}"


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)
