"""The pipeline's validation rules, run on a feature table before it is published.

Rules (``validation_rules`` in the pipeline configuration):

``missing_threshold`` (float in [0, 1], default 0.05)
    The largest share of missing values allowed in each column that is never
    null by construction. Columns declared ``nullable`` (a sample standard
    deviation of one value, a growth rate without a base period) are left
    out: their nulls are definitions, not missing data.
``outlier_detection`` (bool, default False)
    Tukey's IQR fences on each base measure of the feature set (amounts,
    quantities, prices, line counts; see
    :attr:`~retailml.feature_engineering._definitions.FeatureColumn.outliers`);
    the check fails when a column's outlier share exceeds
    ``outlier_threshold`` (default 0.1). The measures are examined on a
    signed ``log1p`` scale, where retail amounts are roughly symmetric; on
    the raw scale the fences would flag every large customer. A set with no
    such measure (``seasonal_trends``, ``temporal``) reports the rule in
    :attr:`ValidationReport.skipped`.
``schema_validation`` (bool, default True)
    Every declared column is present with its declared logical type.

The checks themselves are :class:`~retailml.validators.data_quality.DataQualityValidator`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from retailml.core.errors import DataValidationError
from retailml.feature_engineering._definitions import FeatureSet
from retailml.validators.data_quality import CheckResult, DataQualityValidator

_CHECK_RULE = {
    "missing_values": "missing_threshold",
    "outliers": "outlier_detection",
    "schema": "schema_validation",
}


@dataclass(frozen=True)
class ValidationRules:
    """Validated ``validation_rules``."""

    missing_threshold: float = 0.05
    outlier_detection: bool = False
    outlier_threshold: float = 0.1
    schema_validation: bool = True

    def to_dict(self) -> dict[str, float | bool]:
        """The rules as plain data."""
        return {
            "missing_threshold": self.missing_threshold,
            "outlier_detection": self.outlier_detection,
            "outlier_threshold": self.outlier_threshold,
            "schema_validation": self.schema_validation,
        }


@dataclass(frozen=True)
class ValidationFailure:
    """One column that broke one rule.

    Attributes:
        rule: The rule (``missing_threshold``, ``outlier_detection``, ``schema_validation``).
        column: The column measured.
        measured: The measured share, or the logical type found.
        threshold: The limit, or the expected logical type.
        message: The validator's sentence about it.
    """

    rule: str
    column: str
    measured: float | str
    threshold: float | str | None
    message: str

    def __str__(self) -> str:
        measured = f"{self.measured:.4g}" if isinstance(self.measured, float) else self.measured
        return (
            f"[{self.rule}] column {self.column!r}: measured {measured}, "
            f"limit {self.threshold} ({self.message})"
        )


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of the validation rules on one feature table.

    Attributes:
        feature_set: The feature set validated.
        rules: The rules applied.
        checks: The validator's result of each check that ran, by check name.
        skipped: Rules that were on but could not run, with the reason
            (``{"outlier_detection": "no column to examine"}``).
    """

    feature_set: str
    rules: ValidationRules
    checks: Mapping[str, CheckResult]
    skipped: Mapping[str, str] = field(default_factory=dict)

    @property
    def failures(self) -> tuple[ValidationFailure, ...]:
        """Every failing column of every check."""
        return tuple(
            ValidationFailure(
                rule=_CHECK_RULE[name],
                column=finding.column,
                measured=finding.measured,
                threshold=finding.threshold,
                message=finding.message,
            )
            for name, result in self.checks.items()
            for finding in result.failures
        )

    @property
    def passed(self) -> bool:
        """True when no check failed."""
        return all(result.passed for result in self.checks.values())

    @property
    def warnings(self) -> tuple[str, ...]:
        """One line per failure, for a result published with failures."""
        return tuple(f"{self.feature_set}: {failure}" for failure in self.failures)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-serialisable data (stored in the manifest and lineage)."""
        return {
            "passed": self.passed,
            "rules": self.rules.to_dict(),
            "skipped": dict(self.skipped),
            "checks": {name: result.to_dict() for name, result in self.checks.items()},
        }

    def error(self) -> DataValidationError:
        """The error that stops the pipeline when the report failed."""
        failures = self.failures
        body = "\n".join(f"  - {failure}" for failure in failures)
        return DataValidationError(
            f"{self.feature_set}: expected the features to pass validation_rules; got "
            f"{len(failures)} failure(s), so {self.feature_set} was not published:\n{body}\n"
            "Fix: correct the input data, relax validation_rules, or pass "
            "on_validation_failure='warn' to publish with warnings."
        )


def _signed_log1p(column: pa.ChunkedArray) -> pa.Array:
    values = np.asarray(column.cast(pa.float64()).to_numpy(), dtype=np.float64)
    return pa.array(np.sign(values) * np.log1p(np.abs(values)), type=pa.float64())


class FeatureColumns(Protocol):
    """A feature table that validation reads a little at a time.

    Validation never needs the whole table in memory: the missing-value
    rule needs counts, the schema rule types, and only outlier detection
    reads values (in the published order, since it reports row positions).
    """

    @property
    def num_rows(self) -> int:
        """Rows in the table."""

    def missing(self, columns: Sequence[str]) -> Mapping[str, int]:
        """Missing values in each column: nulls, and NaN in a float column."""

    def head(self) -> pa.Table:
        """At least one row (if any) of every column, with the types the table is read as."""

    def read(self, columns: Sequence[str], *, ordered: bool = False) -> pa.Table:
        """Those columns of every row.

        Args:
            columns: The columns to read.
            ordered: Rows in the published order (entity keys, then
                timestamp) rather than any order.
        """


@dataclass(frozen=True)
class TableColumns:
    """:class:`FeatureColumns` over a table in memory, already in the published order."""

    table: pa.Table

    @property
    def num_rows(self) -> int:
        """Rows in the table."""
        return int(self.table.num_rows)

    def missing(self, columns: Sequence[str]) -> dict[str, int]:
        """Nulls, and NaN in float columns, per column."""
        counts: dict[str, int] = {}
        for name in columns:
            column = self.table.column(name)
            nan = pc.sum(pc.is_nan(column)).as_py() if pa.types.is_floating(column.type) else 0
            counts[name] = column.null_count + int(nan or 0)
        return counts

    def head(self) -> pa.Table:
        """The whole table."""
        return self.table

    def read(self, columns: Sequence[str], *, ordered: bool = False) -> pa.Table:
        """The columns, in the table's order."""
        return self.table.select(list(columns))


def _with_missing(rows: int, missing: Mapping[str, int]) -> pa.Table:
    """A table of ``rows`` rows with ``missing[column]`` nulls in each column and no other value.

    The missing-value check counts a column's nulls (and NaN, in a float
    column); this table has the counts of the feature table's columns, so
    the check's result on it, findings and details, is its result on the
    feature table, without holding that table.
    """
    return pa.table(
        {
            name: pa.chunked_array(
                [pa.nulls(count, pa.bool_()), pa.repeat(pa.scalar(True), rows - count)],
                type=pa.bool_(),
            )
            for name, count in missing.items()
        }
    )


def validate(feature_set: FeatureSet, table: pa.Table, rules: ValidationRules) -> ValidationReport:
    """Run the rules on a computed feature table in memory (in the published order).

    Args:
        feature_set: The definition (declared types, nullable and outlier columns).
        table: The computed rows, every declared column present.
        rules: Which checks to run, with which limits.
    """
    return validate_columns(feature_set, TableColumns(table), rules)


def validate_columns(
    feature_set: FeatureSet, table: FeatureColumns, rules: ValidationRules
) -> ValidationReport:
    """Run the rules on a feature table read a few columns at a time.

    The report is the one the checks give on the whole table: the
    missing-value check runs on the counts of missing values, only outlier
    detection reads its columns (in the published order: it reports row
    positions), and the schema check reads the first rows.

    Args:
        feature_set: The definition (declared types, nullable and outlier columns).
        table: The computed rows, every declared column present.
        rules: Which checks to run, with which limits.
    """
    enabled = [
        name
        for name, on in (
            ("missing_threshold", True),
            ("outlier_detection", rules.outlier_detection),
            ("schema_validation", rules.schema_validation),
        )
        if on
    ]
    if table.num_rows == 0:
        return ValidationReport(
            feature_set.name, rules, {}, skipped=dict.fromkeys(enabled, "no rows")
        )
    validator = DataQualityValidator()
    checks: dict[str, CheckResult] = {}
    skipped: dict[str, str] = {}
    required = [c.name for c in feature_set.columns if not c.nullable]
    checks["missing_values"] = validator.check_missing_values(
        _with_missing(table.num_rows, table.missing(required)),
        threshold=rules.missing_threshold,
        columns=required,
    )
    if rules.outlier_detection:
        examined = [c for c in feature_set.feature_columns if c.outliers is not None]
        # Ordered: the check reports outlier rows by position in the published table.
        measures = (
            table.read([c.name for c in examined], ordered=True) if examined else pa.table({})
        )
        scaled = {
            c.name: (
                _signed_log1p(measures.column(c.name))
                if c.outliers == "log"
                else measures.column(c.name).cast(pa.float64())
            )
            for c in examined
            if measures.column(c.name).null_count < table.num_rows
        }
        if scaled:
            checks["outliers"] = validator.detect_outliers(
                pa.table(scaled),
                method="iqr",
                contamination=min(max(rules.outlier_threshold, 1e-9), 0.5),
                max_outlier_share=rules.outlier_threshold,
            )
        else:
            skipped["outlier_detection"] = (
                f"{feature_set.name} has no column whose outliers signal bad data"
            )
    if rules.schema_validation:
        # The check reads types, and a table has one type per column: a
        # few rows tell what every row does.
        checks["schema"] = validator.validate_schema(table.head(), feature_set.schema)
    return ValidationReport(feature_set.name, rules, checks, skipped=skipped)
