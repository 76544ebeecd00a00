"""DataQualityValidator: missing values, outliers and schema, on pandas and pyarrow frames."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.ensemble import IsolationForest

import guide
import retailml.validators
from retailml.core.errors import ConfigError, DataValidationError
from retailml.validators import data_quality
from retailml.validators.data_quality import CheckResult, DataQualityValidator, Finding

RFM_SCHEMA = {
    "customer_id": "string",
    "recency_days": "integer",
    "frequency_orders": "integer",
    "monetary_total": "float",
}


@pytest.fixture
def validator() -> DataQualityValidator:
    return DataQualityValidator()


def rfm_frame(rows: int = 200, seed: int = 7) -> pd.DataFrame:
    """Customer RFM features, as the feature pipeline produces them."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer_id": [f"C{i:05d}" for i in range(rows)],
            "recency_days": rng.integers(0, 365, rows),
            "frequency_orders": rng.integers(1, 40, rows),
            "monetary_total": rng.gamma(2.0, 150.0, rows).round(2),
        }
    )


def guide_validate_features() -> Callable[[Any], dict[str, CheckResult]]:
    """The guide's ``validate_features``, run as written after the ARCHITECTURE.md import rewrite.

    The code is read from the guide itself rather than copied, so the test
    fails when the guide and the package drift apart.
    """
    snippet = guide.block("### Feature Validation")
    assert "from retailml.validators.data_quality import DataQualityValidator" in snippet
    namespace: dict[str, Any] = {}
    exec(compile(snippet, str(guide.GUIDE), "exec"), namespace)
    function: Callable[[Any], dict[str, CheckResult]] = namespace["validate_features"]
    return function


# --- The public surface -------------------------------------------------------


def test_public_names_are_pinned() -> None:
    expected = [
        "LOGICAL_TYPES",
        "OUTLIER_METHODS",
        "CheckResult",
        "DataQualityValidator",
        "Finding",
    ]
    assert sorted(data_quality.__all__) == sorted(expected)
    assert sorted(retailml.validators.__all__) == sorted(expected)


# --- The guide's validate_features ----------------------------------------------


def test_guide_validate_features_passes_clean_rfm_features() -> None:
    features = rfm_frame()
    features.loc[[3, 50], "monetary_total"] = np.nan  # 1% missing, within 5%

    results = guide_validate_features()(features)

    assert set(results) == {"missing_values", "outliers", "schema"}
    assert results["missing_values"].passed
    assert results["missing_values"].details["missing_share"]["monetary_total"] == 0.01
    # The isolation forest flags ~contamination by construction and has no limit here.
    assert results["outliers"].passed
    assert results["outliers"].details["outlier_share"]["*"] == pytest.approx(0.1, abs=0.01)
    assert results["outliers"].details["skipped_columns"] == {"customer_id": "not numeric (string)"}
    assert results["schema"].passed
    assert all(isinstance(result, CheckResult) for result in results.values())


def test_guide_validate_features_catches_gaps_in_recency() -> None:
    features = rfm_frame()
    features["recency_days"] = features["recency_days"].astype("float64")
    features.loc[::10, "recency_days"] = np.nan  # 10% missing: pandas now stores it as float

    results = guide_validate_features()(features)

    assert not results["missing_values"]
    assert [f.message for f in results["missing_values"].failures] == [
        "recency_days: 10.0% missing; expected at most 5.0%"
    ]
    assert results["outliers"]
    assert not results["schema"]
    (failure,) = results["schema"].failures
    assert failure.column == "recency_days"
    assert failure.message.startswith("recency_days: expected integer; got float64 (float)")
    assert ".astype('Int64')" in failure.message


# --- Results ------------------------------------------------------------------


def test_a_result_is_truthy_only_when_it_passed(validator: DataQualityValidator) -> None:
    frame = pd.DataFrame({"a": [1.0, None], "b": [1.0, 2.0]})

    result = validator.check_missing_values(frame, threshold=0.05)

    assert not result
    assert result.passed is False
    assert [f.column for f in result.failures] == ["a"]
    assert [f.column for f in result.findings] == ["a", "b"]
    assert validator.check_missing_values(frame, threshold=0.5)


def test_results_are_frozen_and_serialise_to_json(validator: DataQualityValidator) -> None:
    result = validator.detect_outliers(rfm_frame(), method="iqr")

    with pytest.raises(dataclasses.FrozenInstanceError):
        result.passed = False  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.findings[0].passed = False  # type: ignore[misc]
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["check"] == "outliers"
    assert data["passed"] is result.passed
    assert data["findings"][0] == dataclasses.asdict(result.findings[0])
    assert data["details"]["method"] == "iqr"


def test_str_lists_every_finding(validator: DataQualityValidator) -> None:
    result = validator.check_missing_values(pd.DataFrame({"a": [1.0, None], "b": [1.0, 2.0]}))

    assert str(result) == (
        "missing_values: FAILED (1 failing)\n"
        "  FAIL a: 50.0% missing; expected at most 5.0%\n"
        "  ok   b: 0.0% missing; within 5.0%"
    )


# --- Missing values -------------------------------------------------------------


def test_missing_share_counts_null_none_nan_and_nat(validator: DataQualityValidator) -> None:
    frame = pd.DataFrame(
        {
            "text": ["a", None, "c", "d"],
            "real": [1.0, np.nan, np.nan, 4.0],
            "count": pd.array([1, None, None, None], dtype="Int64"),
            "when": pd.Series(
                ["2024-01-01", None, "2024-01-03", "2024-01-04"], dtype="datetime64[ns]"
            ),
            "full": [1, 2, 3, 4],
        }
    )

    result = validator.check_missing_values(frame, threshold=0.5)

    assert result.details["missing_count"] == {
        "text": 1,
        "real": 2,
        "count": 3,
        "when": 1,
        "full": 0,
    }
    assert result.details["missing_share"] == {
        "text": 0.25,
        "real": 0.5,
        "count": 0.75,
        "when": 0.25,
        "full": 0.0,
    }
    assert [f.column for f in result.failures] == ["count"]
    assert result.findings[1] == Finding(
        "real", 0.5, 0.5, True, "real: 50.0% missing; within 50.0%"
    )


def test_a_column_exactly_at_the_threshold_passes(validator: DataQualityValidator) -> None:
    frame = pd.DataFrame({"recency_days": [np.nan] * 5 + [1.0] * 95})

    result = validator.check_missing_values(frame, threshold=0.05)

    assert result.passed
    assert result.findings[0].measured == 0.05


def test_a_column_above_the_threshold_fails_naming_share_and_limit(
    validator: DataQualityValidator,
) -> None:
    frame = pd.DataFrame({"recency_days": [np.nan] * 3 + [1.0] * 37, "other": 1})

    result = validator.check_missing_values(frame, threshold=0.05)

    assert not result.passed
    (failure,) = result.failures
    assert failure.measured == 0.075
    assert failure.threshold == 0.05
    assert re.fullmatch(
        re.escape("recency_days: 7.5% missing; expected at most 5.0%"), failure.message
    )


def test_percentages_keep_the_decimals_that_tell_share_and_limit_apart(
    validator: DataQualityValidator,
) -> None:
    frame = pd.DataFrame({"x": [np.nan] * 126 + [1.0] * 2374})  # 5.04%

    (failure,) = validator.check_missing_values(frame, threshold=0.05).failures

    assert failure.message == "x: 5.04% missing; expected at most 5.00%"


def test_columns_limits_the_missing_value_check(validator: DataQualityValidator) -> None:
    frame = pd.DataFrame({"a": [None, None], "b": [1, 2]})

    result = validator.check_missing_values(frame, columns=["b"])

    assert result.passed
    assert [f.column for f in result.findings] == ["b"]


def test_arrow_counts_nan_as_missing_like_pandas(validator: DataQualityValidator) -> None:
    table = pa.table(
        {
            "real": pa.array([1.0, float("nan"), None, 4.0]),
            "text": pa.array(["a", None, "c", "d"]),
        }
    )

    result = validator.check_missing_values(table, threshold=0.25)

    assert result.details["missing_count"] == {"real": 2, "text": 1}
    assert [f.column for f in result.failures] == ["real"]
    pandas_result = validator.check_missing_values(table.to_pandas(), threshold=0.25)
    assert result.to_dict() == pandas_result.to_dict()


@pytest.mark.parametrize("threshold", [-0.01, 1.5, float("nan"), "5%", None])
def test_threshold_must_be_a_share(validator: DataQualityValidator, threshold: Any) -> None:
    message = (
        "The 'threshold' parameter of DataQualityValidator.check_missing_values: "
        f"expected a float in [0, 1]; got {threshold!r}"
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        validator.check_missing_values(rfm_frame(), threshold=threshold)


# --- Outliers -----------------------------------------------------------------


def frame_with_planted_outlier(row: int = 17) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{i}" for i in range(300)],
            "recency_days": rng.normal(100.0, 10.0, 300).round(),
            "monetary_total": rng.normal(500.0, 50.0, 300),
        }
    )
    frame.loc[row, ["recency_days", "monetary_total"]] = [2_000.0, 50_000.0]
    return frame


@pytest.mark.parametrize("method", ["isolation_forest", "iqr", "zscore"])
def test_every_method_finds_a_planted_outlier_row(
    validator: DataQualityValidator, method: str
) -> None:
    result = validator.detect_outliers(frame_with_planted_outlier(row=17), method=method)

    assert result.details["method"] == method
    for finding in result.findings:
        assert 17 in result.details["outlier_rows"][finding.column]


def test_iqr_counts_match_a_hand_computation(validator: DataQualityValidator) -> None:
    values = np.array([10, 12, 11, 13, 12, 11, 10, 14, 12, 13, 11, 12, -20, 45, 60], dtype=float)
    q1, q3 = np.quantile(values, [0.25, 0.75])  # 11.0 and 13.0
    low, high = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)  # 8.0 and 16.0
    expected = np.flatnonzero((values < low) | (values > high))

    result = validator.detect_outliers(pd.DataFrame({"x": values}), method="iqr")

    assert expected.tolist() == [12, 13, 14]
    assert result.details["outlier_rows"]["x"] == [12, 13, 14]
    assert result.details["outlier_count"]["x"] == 3
    assert result.details["bounds"]["x"] == [8.0, 16.0]
    # 3 of 15 rows is 20%, above the default limit (contamination=0.1).
    assert not result.passed
    assert result.findings[0].message == (
        "x: 20.0% outliers by iqr (3 of 15 rows outside the 1.5 IQR fences [8, 16]); "
        "expected at most 10.0%"
    )


def test_zscore_counts_match_a_hand_computation(validator: DataQualityValidator) -> None:
    rng = np.random.default_rng(11)
    values = np.append(rng.normal(0.0, 1.0, 60), [9.0, -8.0])
    z = np.abs(values - values.mean()) / values.std()  # population std, as scipy.stats.zscore
    expected = np.flatnonzero(z > 3)

    result = validator.detect_outliers(pd.DataFrame({"x": values}), method="zscore")

    assert expected.tolist() == [60, 61]
    assert result.details["outlier_rows"]["x"] == expected.tolist()
    assert result.details["outlier_count"]["x"] == 2
    assert result.findings[0].measured == 2 / 62
    assert result.passed  # 3.2% is within the default limit of 10%


def test_isolation_forest_flags_about_the_contamination_share(
    validator: DataQualityValidator,
) -> None:
    frame = rfm_frame(rows=500)

    result = validator.detect_outliers(frame, method="isolation_forest", contamination=0.1)

    (finding,) = result.findings
    assert finding.column == "*"
    assert finding.measured == pytest.approx(0.1, abs=0.01)
    assert result.details["columns"] == ["recency_days", "frequency_orders", "monetary_total"]
    # The same verdicts as scikit-learn's own fit_predict with the same seed.
    matrix = frame[result.details["columns"]].to_numpy(dtype=float)
    sklearn_rows = np.flatnonzero(
        IsolationForest(contamination=0.1, random_state=0).fit_predict(matrix) == -1
    )
    assert result.details["outlier_rows"]["*"] == sklearn_rows[:100].tolist()


def test_isolation_forest_passes_unless_a_limit_is_given(
    validator: DataQualityValidator,
) -> None:
    frame = rfm_frame(rows=300)

    unlimited = validator.detect_outliers(frame, contamination=0.1)
    limited = validator.detect_outliers(frame, contamination=0.1, max_outlier_share=0.05)

    assert unlimited.passed
    assert unlimited.findings[0].threshold is None
    assert "pass max_outlier_share to fail on a share" in unlimited.findings[0].message
    assert not limited.passed
    assert limited.findings[0].message.endswith("; expected at most 5.0%")


def test_max_outlier_share_overrides_contamination_as_the_limit(
    validator: DataQualityValidator,
) -> None:
    values = pd.DataFrame({"x": [1.0] * 18 + [2.0] * 8 + [100.0] * 2})  # 2 of 28 = 7.1%

    assert validator.detect_outliers(values, method="iqr", contamination=0.1)
    assert not validator.detect_outliers(values, method="iqr", contamination=0.05)
    assert validator.detect_outliers(
        values, method="iqr", contamination=0.05, max_outlier_share=0.08
    )


def test_non_numeric_and_empty_columns_are_skipped_and_named(
    validator: DataQualityValidator,
) -> None:
    frame = rfm_frame(rows=50).assign(
        is_member=True,
        first_order=pd.Timestamp("2024-01-01"),
        segment=pd.Categorical(["a", "b"] * 25),
        churn_score=np.nan,
    )

    for method in data_quality.OUTLIER_METHODS:
        result = validator.detect_outliers(frame, method=method)
        assert result.details["columns"] == ["recency_days", "frequency_orders", "monetary_total"]
        assert result.details["skipped_columns"] == {
            "customer_id": "not numeric (string)",
            "is_member": "not numeric (boolean)",
            "first_order": "not numeric (datetime)",
            "segment": "not numeric (category)",
            "churn_score": "every value is missing",
        }


def test_missing_values_are_never_outliers_and_infinities_always_are(
    validator: DataQualityValidator,
) -> None:
    values = [float(v) for v in range(40)] + [np.nan, np.inf, -np.inf]
    frame = pd.DataFrame({"x": values, "y": range(43)})

    for method in data_quality.OUTLIER_METHODS:
        result = validator.detect_outliers(frame, method=method)
        key = "*" if method == "isolation_forest" else "x"
        rows = result.details["outlier_rows"][key]
        assert {41, 42} <= set(rows), method
        assert 40 not in rows, method


def test_outlier_rows_are_capped_at_100_but_counted_in_full(
    validator: DataQualityValidator,
) -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0] * 215 + [1_000.0] * 140})

    result = validator.detect_outliers(frame, method="iqr", max_outlier_share=0.5)

    assert result.details["outlier_count"]["x"] == 140
    assert result.details["outlier_rows"]["x"] == list(range(860, 960))


@pytest.mark.parametrize("method", ["isolation_forest", "iqr", "zscore"])
def test_arrow_tables_give_the_same_outliers_as_pandas(
    validator: DataQualityValidator, method: str
) -> None:
    frame = frame_with_planted_outlier()
    frame.loc[[4, 9], "monetary_total"] = np.nan

    from_arrow = validator.detect_outliers(pa.Table.from_pandas(frame), method=method)
    from_pandas = validator.detect_outliers(frame, method=method)

    assert from_arrow.to_dict() == from_pandas.to_dict()


def test_a_frame_without_numeric_columns_cannot_be_checked(
    validator: DataQualityValidator,
) -> None:
    frame = pd.DataFrame({"customer_id": ["a", "b"], "country": ["UK", "FR"]})

    with pytest.raises(
        DataValidationError,
        match=r"expected at least one integer or float column with values; "
        r"got none among \['customer_id', 'country'\]",
    ):
        validator.detect_outliers(frame)


def test_an_unknown_method_lists_the_valid_ones(validator: DataQualityValidator) -> None:
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "The 'method' parameter of DataQualityValidator.detect_outliers: "
            "expected one of 'isolation_forest', 'iqr', 'zscore'; got 'dbscan'"
        ),
    ):
        validator.detect_outliers(rfm_frame(), method="dbscan")


@pytest.mark.parametrize("contamination", [0, 0.0, -0.1, 0.51, 2, float("nan"), True, "auto"])
def test_contamination_must_be_in_zero_to_one_half(
    validator: DataQualityValidator, contamination: Any
) -> None:
    message = (
        "The 'contamination' parameter of DataQualityValidator.detect_outliers: "
        f"expected a float in (0, 0.5]; got {contamination!r}. "
        "Fix: pass the share of rows you expect to be outliers, e.g. contamination=0.1"
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        validator.detect_outliers(rfm_frame(), contamination=contamination)


def test_contamination_of_one_half_is_allowed(validator: DataQualityValidator) -> None:
    result = validator.detect_outliers(rfm_frame(), contamination=0.5)

    assert result.details["outlier_share"]["*"] == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("share", [-0.1, 1.01])
def test_max_outlier_share_must_be_a_share(validator: DataQualityValidator, share: float) -> None:
    with pytest.raises(ConfigError, match=r"'max_outlier_share' .*expected a float in \[0, 1\]"):
        validator.detect_outliers(rfm_frame(), max_outlier_share=share)


# --- Schema -------------------------------------------------------------------


def every_logical_type() -> tuple[pd.DataFrame, dict[str, str]]:
    frame = pd.DataFrame(
        {
            "customer_id": ["a", None, "c"],
            "customer_key": pd.array(["a", "b", None], dtype="string"),
            "recency_days": [1, 2, 3],
            "orders": pd.array([1, None, 3], dtype="Int64"),
            "monetary_total": [1.5, np.nan, 2.0],
            "is_member": [True, False, True],
            "last_order": pd.Series(["2024-01-01", None, "2024-03-01"], dtype="datetime64[ns]"),
            "signup_date": [dt.date(2024, 1, 1), None, dt.date(2024, 2, 1)],
            "segment": pd.Categorical(["a", "b", "a"]),
        }
    )
    schema: dict[str, str] = {
        "customer_id": "string",
        "customer_key": "string",
        "recency_days": "integer",
        "orders": "integer",
        "monetary_total": "float",
        "is_member": "boolean",
        "last_order": "datetime",
        "signup_date": "date",
        "segment": "category",
    }
    return frame, schema


def test_every_logical_type_is_recognised(validator: DataQualityValidator) -> None:
    frame, schema = every_logical_type()

    result = validator.validate_schema(frame, expected_schema=schema)

    assert result.passed, str(result)
    assert result.details["actual"] == schema
    assert set(schema.values()) == set(data_quality.LOGICAL_TYPES)


def test_an_arrow_table_gives_the_same_verdicts_as_pandas(
    validator: DataQualityValidator,
) -> None:
    frame, schema = every_logical_type()
    wrong = {**schema, "recency_days": "string", "segment": "integer", "absent": "float"}

    def verdicts(result: CheckResult) -> list[tuple[object, ...]]:
        return [(f.column, f.measured, f.threshold, f.passed) for f in result.findings]

    for expected in (schema, wrong):
        from_pandas = validator.validate_schema(frame, expected_schema=expected)
        from_arrow = validator.validate_schema(
            pa.Table.from_pandas(frame), expected_schema=expected
        )
        assert verdicts(from_arrow) == verdicts(from_pandas)
        assert from_arrow.passed == from_pandas.passed
    assert from_arrow.details["dtypes"]["recency_days"] == "int64"


def test_integer_columns_satisfy_float_but_floats_are_not_integer(
    validator: DataQualityValidator,
) -> None:
    frame = pd.DataFrame({"orders": [1, 2], "spend": [1.0, 2.5]})

    assert validator.validate_schema(frame, {"orders": "float"})
    result = validator.validate_schema(frame, {"spend": "integer"})

    assert not result
    assert result.findings[0].message == "spend: expected integer; got float64 (float)"


def test_a_wrong_type_names_the_expected_and_actual_dtype(
    validator: DataQualityValidator,
) -> None:
    frame = rfm_frame(rows=5).assign(recency_days=lambda f: f["recency_days"].astype(str))

    result = validator.validate_schema(frame, expected_schema=RFM_SCHEMA)

    assert not result.passed
    (failure,) = result.failures
    assert failure == Finding(
        column="recency_days",
        measured="string",
        threshold="integer",
        passed=False,
        message="recency_days: expected integer; got object (string)",
    )


def test_booleans_are_not_integers(validator: DataQualityValidator) -> None:
    result = validator.validate_schema(pd.DataFrame({"flag": [True, False]}), {"flag": "integer"})

    assert result.failures[0].message == "flag: expected integer; got bool (boolean)"


def test_a_missing_column_fails(validator: DataQualityValidator) -> None:
    frame = rfm_frame(rows=5).drop(columns="recency_days")

    result = validator.validate_schema(frame, expected_schema=RFM_SCHEMA)

    assert not result.passed
    assert [f.message for f in result.failures] == [
        "expected column recency_days (integer); not found"
    ]
    assert result.details["missing_columns"] == ["recency_days"]


def test_extra_columns_are_allowed_and_reported(validator: DataQualityValidator) -> None:
    frame = rfm_frame(rows=5).assign(country="UK", avg_basket=1.0)

    result = validator.validate_schema(frame, expected_schema=RFM_SCHEMA)

    assert result.passed
    assert result.details["extra_columns"] == ["country", "avg_basket"]
    assert [f.column for f in result.findings] == list(RFM_SCHEMA)


def test_an_unknown_logical_type_lists_the_valid_ones(validator: DataQualityValidator) -> None:
    message = (
        "expected logical types among 'string', 'integer', 'float', 'boolean', 'datetime', "
        "'date', 'category'; got {'recency_days': 'int', 'score': 'decimal'}. "
        "Fix: use one of the listed logical types, e.g. 'recency_days': 'integer'"
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        validator.validate_schema(
            rfm_frame(),
            expected_schema={"customer_id": "string", "recency_days": "int", "score": "decimal"},
        )


def test_an_empty_schema_is_a_config_error(validator: DataQualityValidator) -> None:
    with pytest.raises(ConfigError, match="expected a non-empty mapping of column name"):
        validator.validate_schema(rfm_frame(), expected_schema={})


# --- Frames that cannot be checked -----------------------------------------------


CHECKS: dict[str, Callable[[DataQualityValidator, Any], CheckResult]] = {
    "missing_values": lambda v, frame: v.check_missing_values(frame),
    "outliers": lambda v, frame: v.detect_outliers(frame),
    "schema": lambda v, frame: v.validate_schema(frame, RFM_SCHEMA),
}


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("library", ["pandas", "pyarrow"])
def test_an_empty_frame_is_rejected_by_every_check(
    validator: DataQualityValidator, check: str, library: str
) -> None:
    empty = rfm_frame().iloc[:0]
    frame = empty if library == "pandas" else pa.Table.from_pandas(empty)

    with pytest.raises(DataValidationError, match="expected at least one row; got an empty frame"):
        CHECKS[check](validator, frame)


@pytest.mark.parametrize("check", list(CHECKS))
def test_only_dataframes_and_tables_are_accepted(
    validator: DataQualityValidator, check: str
) -> None:
    with pytest.raises(
        DataValidationError, match="expected a pandas DataFrame or a pyarrow Table; got dict"
    ):
        CHECKS[check](validator, {"recency_days": [1, 2]})


def test_repeated_column_names_are_rejected(validator: DataQualityValidator) -> None:
    frame = pd.DataFrame([[1, 2]], columns=["a", "a"])

    with pytest.raises(DataValidationError, match=r"expected unique column names; got .*\['a'\]"):
        validator.check_missing_values(frame)


def test_columns_must_name_columns_the_frame_has(validator: DataQualityValidator) -> None:
    with pytest.raises(DataValidationError, match=r"expected columns \['recency'\] in the frame"):
        validator.detect_outliers(rfm_frame(), columns=["recency"])
    with pytest.raises(ConfigError, match=r"wrap it in a list: columns=\['recency_days'\]"):
        validator.check_missing_values(rfm_frame(), columns="recency_days")
    with pytest.raises(ConfigError, match="expected at least one column name in 'columns'"):
        validator.check_missing_values(rfm_frame(), columns=[])
