"""Data drift between a reference frame and a current frame, column by column.

Model validation compares the serving data with the training data through
:func:`detect_drift`; monitoring will do the same on a schedule. Each column
gets one verdict from one statistical test, and the dataset drifts when the
share of drifted columns reaches ``drift_share``::

    report = detect_drift(train_features, last_week_features)
    if report.dataset_drift:
        print(report.drifted_columns)      # ('basket_value', 'store_format')
    report.to_frame()                      # one row per column, every statistic
    report.to_dict()                       # JSON-safe, for MLflow or an alert

Statistics computed for every column of a kind (``ColumnDrift.statistics``):

===========  ==================================================================
kind         statistics
===========  ==================================================================
numeric      ``ks_statistic``, ``ks_p_value`` (two-sample Kolmogorov-Smirnov,
             :func:`scipy.stats.ks_2samp`); ``psi`` (population stability
             index over 10 bins cut at the reference deciles); ``wasserstein``
             (:func:`scipy.stats.wasserstein_distance`) and
             ``wasserstein_normed`` (that divided by the reference standard
             deviation); ``reference_mean``, ``current_mean``, ``reference_std``
categorical  ``chi2_statistic``, ``chi2_p_value`` (Pearson's chi-square test of
             homogeneity on the 2 x categories table of reference and current
             counts, :func:`scipy.stats.chi2_contingency` without continuity
             correction); ``jensenshannon`` (Jensen-Shannon distance in base 2,
             in [0, 1]); ``n_categories``, ``unseen_categories`` (categories
             of the current frame absent from the reference) and
             ``unseen_share`` (the share of current rows in them)
===========  ==================================================================

Which test decides (``method="auto"``), after Evidently's defaults:

=============================  ===========================  ===============================
column                         test                         drift when
=============================  ===========================  ===============================
numeric, reference <= 1000     ``"ks"``                     p-value < 0.05
numeric, reference > 1000      ``"wasserstein"`` (normed)   distance > 0.1 reference stds
categorical, reference <= 1000 ``"chi2"``                   p-value < 0.05
categorical, reference > 1000  ``"jensenshannon"``          distance > 0.1
=============================  ===========================  ===============================

Why: a p-value answers "could the two samples come from one distribution?",
which is the right question on a small sample but not on a large one, where
every test has the power to reject on a shift too small to matter (a 0.5 %
move in a mean over a million rows). Distances measure *how much* the data
moved, independently of the sample size, so the large-sample tests flag a
shift of a tenth of a standard deviation (numeric) or a Jensen-Shannon
distance of 0.1 (categorical). The row count is the column's non-missing
reference count, as in Evidently. Evidently computes the Jensen-Shannon
distance with the natural logarithm; base 2 here keeps it in [0, 1], so the
same 0.1 is slightly stricter (Evidently's 0.1 is 0.12 in base 2).

Overriding: ``method`` names one test for every column (``"ks"``, ``"psi"`` and
``"wasserstein"`` need numeric columns, ``"chi2"`` and ``"jensenshannon"``
categorical ones) and ``threshold`` replaces the default threshold of whichever
test decides. For the p-value tests (``"ks"``, ``"chi2"``) a column drifts when
``p < threshold``; for the distances (``"psi"``, ``"wasserstein"``,
``"jensenshannon"``) when ``distance > threshold``. With ``method="auto"`` one
threshold serves both kinds of test, so it must lie in (0, 1). Defaults of an
explicitly chosen test: 0.05 for the p-value tests, 0.1 for the distances;
for PSI 0.1 is the usual "moderate shift" mark (below 0.1 is stable, above
0.25 a major shift).

Column kinds: integer and float columns are numeric; string, object,
category and boolean columns are categorical. Name numeric codes (store ids,
a 0/1 flag) in ``categorical=`` to compare them as categories. Datetime,
date and timedelta columns cannot be compared: leave them out with ``columns=``.

Missing values (None, NaN, NaT and, for numeric columns, ±inf) are dropped
per column and counted in ``reference_missing`` / ``current_missing``.

Details of the statistics:

* PSI: bins are cut at the reference deciles (:data:`PSI_BINS` = 10 bins, the
  outer ones open to ±inf so current values outside the reference range
  count), right-closed; ``PSI = sum((c - r) * ln(c / r))`` over the bins'
  shares ``r`` (reference) and ``c`` (current), each share raised to at least
  :data:`PSI_EPSILON` = 1e-4 (Evidently's constant) so an empty bin does not
  make the index infinite. Bins made empty in both frames by tied deciles
  contribute nothing.
* Normed Wasserstein of a constant reference column: the reference standard
  deviation is 0, so the normed distance is 0 when the current column holds
  only that constant and +inf otherwise; the column then drifts on any change
  at any threshold. This is stricter than "the means differ": a current
  column spread symmetrically around the constant drifts too.
* Chi-square is a two-sample test, like KS: both frames are samples. The
  goodness-of-fit form (Evidently's), which takes the reference shares as the
  true distribution and tests the current counts against them
  (:func:`scipy.stats.chisquare`), ignores the reference's own sampling noise
  and so flags drift far more often than its threshold promises: with two
  samples of one distribution, p < 0.05 in about 22 % of comparisons of 500
  vs 500 rows and 60 % of 200 vs 1000, against 5 % for the test of
  homogeneity. The homogeneity test's expected counts come from the pooled
  shares, so a category the reference never saw needs no special case: its
  expected count is positive, and it drifts the column when it is frequent
  enough to be more than noise (its name is in ``unseen_categories`` either
  way). The categories are the union of the values seen in either frame
  (unused categories of a ``category`` dtype are ignored). With a single
  category in both frames the statistic is 0 and the p-value 1.

Errors: :class:`~retailml.core.errors.ConfigError` for bad arguments (an
unknown method, a threshold out of range, a method that does not fit a
column's kind) and :class:`~retailml.core.errors.DataValidationError` for
frames that cannot be compared (columns missing from one frame, a column with
no values in either, types that differ between the frames or cannot be
compared).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, cast

import numpy as np
import pandas as pd
from scipy import stats  # type: ignore[import-untyped]
from scipy.spatial import distance  # type: ignore[import-untyped]

from retailml.core.errors import ConfigError, DataValidationError, problem
from retailml.validators._frames import FloatArray, float_values, logical_kind, native_dtype

__all__ = [
    "DRIFT_METHODS",
    "PSI_BINS",
    "PSI_EPSILON",
    "SMALL_SAMPLE_ROWS",
    "ColumnDrift",
    "DriftReport",
    "detect_drift",
]

Kind: TypeAlias = Literal["numeric", "categorical"]
Test: TypeAlias = Literal["ks", "psi", "wasserstein", "chi2", "jensenshannon"]

#: The values ``method`` accepts.
DRIFT_METHODS: tuple[str, ...] = ("auto", "ks", "psi", "wasserstein", "chi2", "jensenshannon")
#: With ``method="auto"``, columns with at most this many reference values use p-value tests.
SMALL_SAMPLE_ROWS = 1000
#: The number of PSI bins, cut at the reference quantiles.
PSI_BINS = 10
#: The smallest bin share in PSI, so an empty bin does not make the index infinite.
PSI_EPSILON = 1e-4
#: ``ColumnDrift.unseen_categories`` names at most this many categories.
MAX_REPORTED_CATEGORIES = 20

# Tests whose verdict is "p-value below the threshold"; the others are distances.
_P_VALUE_TESTS: frozenset[str] = frozenset({"ks", "chi2"})
_TEST_KIND: dict[str, Kind] = {
    "ks": "numeric",
    "psi": "numeric",
    "wasserstein": "numeric",
    "chi2": "categorical",
    "jensenshannon": "categorical",
}
# The default threshold of each test, and the statistic that carries its verdict.
_DEFAULT_THRESHOLDS: dict[str, float] = {
    "ks": 0.05,
    "psi": 0.1,
    "wasserstein": 0.1,
    "chi2": 0.05,
    "jensenshannon": 0.1,
}
_VERDICT_STATISTIC: dict[str, str] = {
    "ks": "ks_p_value",
    "psi": "psi",
    "wasserstein": "wasserstein_normed",
    "chi2": "chi2_p_value",
    "jensenshannon": "jensenshannon",
}
_NUMERIC_KINDS = frozenset({"integer", "float"})
_CATEGORICAL_KINDS = frozenset({"string", "category", "boolean", "object"})


@dataclass(frozen=True)
class ColumnDrift:
    """The drift verdict of one column.

    Attributes:
        column: The column compared.
        kind: ``"numeric"`` or ``"categorical"``.
        test: The test that decided: ``"ks"``, ``"psi"``, ``"wasserstein"``
            (normed), ``"chi2"`` or ``"jensenshannon"``.
        statistic: The value held against the threshold: the p-value of
            ``"ks"`` and ``"chi2"``, the distance of the others (for
            ``"wasserstein"`` the normed distance, possibly +inf for a
            constant reference column).
        threshold: The threshold applied.
        drifted: ``statistic < threshold`` for p-value tests,
            ``statistic > threshold`` for distances.
        p_value: The p-value when the test is a p-value test, else None.
        statistics: Every statistic computed for the column's kind, named as
            in the module docstring.
        n_reference: The reference values compared (missing ones dropped).
        n_current: The current values compared.
        reference_missing: Reference values dropped as missing (or infinite).
        current_missing: Current values dropped as missing (or infinite).
        unseen_categories: Up to 20 current categories absent from the
            reference (as text, most frequent first); empty for numeric columns.
    """

    column: str
    kind: Kind
    test: Test
    statistic: float
    threshold: float
    drifted: bool
    p_value: float | None
    statistics: dict[str, float] = field(default_factory=dict, hash=False)
    n_reference: int = 0
    n_current: int = 0
    reference_missing: int = 0
    current_missing: int = 0
    unseen_categories: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The verdict as JSON-safe data; non-finite numbers become None."""
        return {
            "column": self.column,
            "kind": self.kind,
            "test": self.test,
            "statistic": _json_float(self.statistic),
            "threshold": self.threshold,
            "drifted": self.drifted,
            "p_value": None if self.p_value is None else _json_float(self.p_value),
            "statistics": {name: _json_float(value) for name, value in self.statistics.items()},
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "reference_missing": self.reference_missing,
            "current_missing": self.current_missing,
            "unseen_categories": list(self.unseen_categories),
        }

    def __str__(self) -> str:
        relation = "<" if self.test in _P_VALUE_TESTS else ">"
        if not self.drifted:
            relation = ">=" if self.test in _P_VALUE_TESTS else "<="
        what = "p-value" if self.test in _P_VALUE_TESTS else "distance"
        verdict = "DRIFTED" if self.drifted else "stable"
        return (
            f"{self.column}: {verdict} ({self.kind}, {self.test} {what} "
            f"{self.statistic:.4g} {relation} {self.threshold:g})"
        )


@dataclass(frozen=True)
class DriftReport:
    """The drift of every compared column and the dataset verdict.

    Attributes:
        columns: ``column -> ColumnDrift``, in the order compared.
        dataset_drift: True when ``share_drifted >= drift_share``.
        n_columns: The columns compared.
        n_drifted: The columns that drifted.
        share_drifted: ``n_drifted / n_columns``.
        drift_share: The share of drifted columns that makes the dataset drift.
        method: The method requested (``"auto"`` or one test for every column).
    """

    columns: dict[str, ColumnDrift]
    dataset_drift: bool
    n_columns: int
    n_drifted: int
    share_drifted: float
    drift_share: float
    method: str = "auto"

    @property
    def drifted_columns(self) -> tuple[str, ...]:
        """The names of the drifted columns, in the order compared."""
        return tuple(name for name, result in self.columns.items() if result.drifted)

    def to_frame(self) -> pd.DataFrame:
        """One row per column: the verdict fields, then one column per statistic.

        Returns:
            A frame with columns ``column``, ``kind``, ``test``, ``statistic``,
            ``threshold``, ``p_value`` (NaN for distances), ``drifted``, the
            counts, and every statistic (NaN where the column's kind lacks it).
        """
        names: dict[str, None] = {}
        for result in self.columns.values():
            names.update(dict.fromkeys(result.statistics))
        rows = []
        for result in self.columns.values():
            row: dict[str, Any] = {
                "column": result.column,
                "kind": result.kind,
                "test": result.test,
                "statistic": result.statistic,
                "threshold": result.threshold,
                "p_value": math.nan if result.p_value is None else result.p_value,
                "drifted": result.drifted,
                "n_reference": result.n_reference,
                "n_current": result.n_current,
                "reference_missing": result.reference_missing,
                "current_missing": result.current_missing,
            }
            row.update({name: result.statistics.get(name, math.nan) for name in names})
            rows.append(row)
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-safe data (non-finite numbers become None)."""
        return {
            "dataset_drift": self.dataset_drift,
            "n_columns": self.n_columns,
            "n_drifted": self.n_drifted,
            "share_drifted": self.share_drifted,
            "drift_share": self.drift_share,
            "method": self.method,
            "drifted_columns": list(self.drifted_columns),
            "columns": {name: result.to_dict() for name, result in self.columns.items()},
        }

    def __str__(self) -> str:
        verdict = "DATASET DRIFT" if self.dataset_drift else "no dataset drift"
        lines = [
            f"{verdict}: {self.n_drifted} of {self.n_columns} columns drifted "
            f"({self.share_drifted:.1%}; limit {self.drift_share:.1%})"
        ]
        lines += [f"  {result}" for result in self.columns.values()]
        return "\n".join(lines)


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: Sequence[str] | None = None,
    threshold: float | None = None,
    method: str = "auto",
    drift_share: float = 0.5,
    categorical: Sequence[str] | None = None,
) -> DriftReport:
    """Compare each column of ``current`` with the same column of ``reference``.

    The tests, defaults and statistics are described in the module docstring.

    Args:
        reference: The data the model was trained or last validated on.
        current: The data to check.
        columns: Compare only these columns (default: every column; the two
            frames must then have the same columns).
        threshold: The threshold of the deciding test; None keeps each test's
            default. A p-value test drifts when ``p < threshold``, a distance
            when ``distance > threshold``.
        method: ``"auto"`` (by column kind and reference size) or one of
            ``"ks"``, ``"psi"``, ``"wasserstein"`` (numeric columns) and
            ``"chi2"``, ``"jensenshannon"`` (categorical columns).
        drift_share: The share of drifted columns, in (0, 1], at which the
            dataset drifts (Evidently's default 0.5).
        categorical: Columns to compare as categories even though they are
            numeric (codes, ids, flags).

    Returns:
        A :class:`DriftReport`.

    Raises:
        ConfigError: An unknown method, a threshold or drift_share out of
            range, ``columns`` or ``categorical`` malformed, or a method that
            does not fit the kind of some compared columns.
        DataValidationError: A frame is not a DataFrame or repeats column
            names; a compared column is missing from a frame, has no values
            in either frame, has a type that cannot be compared, or is
            numeric in one frame and not in the other.
    """
    test_choice = _method_parameter(method)
    limit = _threshold_parameter(threshold, test_choice)
    share_limit = _drift_share_parameter(drift_share)
    _check_frame(reference, "reference")
    _check_frame(current, "current")
    names = _compared_columns(reference, current, columns)
    kinds = _column_kinds(reference, current, names, _categorical_parameter(categorical, names))
    if test_choice != "auto":
        _check_method_fits(test_choice, kinds)

    numeric = [name for name in names if kinds[name] == "numeric"]
    results: dict[str, ColumnDrift] = {}
    if numeric:
        results.update(_numeric_drift(reference, current, numeric, test_choice, limit))
    for name in names:
        if kinds[name] == "categorical":
            results[name] = _categorical_drift(reference, current, name, test_choice, limit)

    ordered = {name: results[name] for name in names}
    n_drifted = sum(result.drifted for result in ordered.values())
    share = n_drifted / len(ordered)
    return DriftReport(
        columns=ordered,
        dataset_drift=share >= share_limit,
        n_columns=len(ordered),
        n_drifted=n_drifted,
        share_drifted=share,
        drift_share=share_limit,
        method=test_choice,
    )


# --- Numeric columns -------------------------------------------------------------


def _numeric_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    names: list[str],
    method: str,
    threshold: float | None,
) -> dict[str, ColumnDrift]:
    """Every numeric statistic for ``names``, computed column-wise on 2-D arrays."""
    ref = _numeric_matrix(reference, names)
    cur = _numeric_matrix(current, names)
    ref_valid = ~np.isnan(ref)
    cur_valid = ~np.isnan(cur)
    n_ref = ref_valid.sum(axis=0)
    n_cur = cur_valid.sum(axis=0)
    _check_not_empty(names, n_ref, n_cur)

    # One call for every column; nan_policy="omit" drops each column's own NaNs.
    ks = stats.ks_2samp(ref, cur, axis=0, nan_policy="omit")
    ks_statistic = np.atleast_1d(np.asarray(ks.statistic, dtype=np.float64))
    ks_p_value = np.atleast_1d(np.asarray(ks.pvalue, dtype=np.float64))
    psi = _population_stability_index(ref, cur)
    ref_mean = np.nanmean(ref, axis=0)
    cur_mean = np.nanmean(cur, axis=0)
    ref_std = np.nanstd(ref, axis=0)  # population std (ddof=0), as Evidently
    wasserstein = np.array(
        [
            stats.wasserstein_distance(ref[ref_valid[:, j], j], cur[cur_valid[:, j], j])
            for j in range(len(names))
        ],
        dtype=np.float64,
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        normed = np.where(
            ref_std > 0,
            wasserstein / np.where(ref_std > 0, ref_std, 1.0),
            np.where(wasserstein > 0, np.inf, 0.0),
        )

    results: dict[str, ColumnDrift] = {}
    for j, name in enumerate(names):
        statistics = {
            "ks_statistic": float(ks_statistic[j]),
            "ks_p_value": float(ks_p_value[j]),
            "psi": float(psi[j]),
            "wasserstein": float(wasserstein[j]),
            "wasserstein_normed": float(normed[j]),
            "reference_mean": float(ref_mean[j]),
            "current_mean": float(cur_mean[j]),
            "reference_std": float(ref_std[j]),
        }
        test = _choose_test(method, "numeric", int(n_ref[j]))
        results[name] = _column_result(
            name,
            "numeric",
            test,
            threshold,
            statistics,
            counts=(
                int(n_ref[j]),
                int(n_cur[j]),
                len(ref) - int(n_ref[j]),
                len(cur) - int(n_cur[j]),
            ),
        )
    return results


def _numeric_matrix(frame: pd.DataFrame, names: list[str]) -> FloatArray:
    """The columns as a float64 (rows, columns) array, NaN where missing or infinite."""
    matrix = np.column_stack([float_values(frame, name) for name in names])
    matrix[~np.isfinite(matrix)] = np.nan
    return matrix


def _population_stability_index(reference: FloatArray, current: FloatArray) -> FloatArray:
    """PSI of each column of ``current`` against the same column of ``reference``.

    Bins are cut at the reference quantiles 1/PSI_BINS ... (PSI_BINS-1)/PSI_BINS
    of each column (NaN ignored); the outer bins are open. Shares below
    PSI_EPSILON are raised to it.
    """
    quantiles = np.linspace(0.0, 1.0, PSI_BINS + 1)[1:-1]
    edges = np.nanquantile(reference, quantiles, axis=0)  # (PSI_BINS - 1, columns)
    ref_share = _bin_shares(reference, edges)
    cur_share = _bin_shares(current, edges)
    ref_share = np.maximum(ref_share, PSI_EPSILON)
    cur_share = np.maximum(cur_share, PSI_EPSILON)
    psi: FloatArray = np.sum((cur_share - ref_share) * np.log(cur_share / ref_share), axis=0)
    return psi


def _bin_shares(values: FloatArray, edges: FloatArray) -> FloatArray:
    """The share of each column's non-missing values in each bin, as (bins, columns)."""
    columns = values.shape[1]
    bins = edges.shape[0] + 1
    # Bin i is (edges[i-1], edges[i]]: searchsorted(side="left") counts the edges below.
    index = np.empty(values.shape, dtype=np.intp)
    for j in range(columns):
        index[:, j] = np.searchsorted(edges[:, j], values[:, j], side="left")
    valid = ~np.isnan(values)
    flat = (index + np.arange(columns) * bins)[valid]
    counts = np.bincount(flat, minlength=columns * bins).reshape(columns, bins).T
    shares: FloatArray = counts / np.maximum(valid.sum(axis=0), 1)
    return shares


# --- Categorical columns ---------------------------------------------------------


def _categorical_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    name: str,
    method: str,
    threshold: float | None,
) -> ColumnDrift:
    """Every categorical statistic for one column."""
    ref_values = _category_values(reference, name)
    cur_values = _category_values(current, name)
    n_ref, n_cur = len(ref_values), len(cur_values)
    _check_not_empty([name], np.array([n_ref]), np.array([n_cur]))
    ref_counts = ref_values.value_counts(sort=True)
    cur_counts = cur_values.value_counts(sort=True)
    ref_counts = ref_counts[ref_counts > 0]
    cur_counts = cur_counts[cur_counts > 0]
    # The union of the categories: the reference's first, then the unseen ones.
    table = pd.concat([ref_counts.rename("reference"), cur_counts.rename("current")], axis=1)
    table = table.fillna(0)
    observed_ref = table["reference"].to_numpy(dtype=np.float64)
    observed_cur = table["current"].to_numpy(dtype=np.float64)
    unseen = observed_ref == 0

    ref_share = observed_ref / n_ref
    cur_share = observed_cur / n_cur
    if len(table) > 1:
        # Two-sample test of homogeneity on the 2 x categories table of counts.
        chi2 = stats.chi2_contingency(np.vstack([observed_ref, observed_cur]), correction=False)
        chi2_statistic, chi2_p_value = float(chi2.statistic), float(chi2.pvalue)
        js = float(distance.jensenshannon(ref_share, cur_share, base=2))
    else:
        chi2_statistic, chi2_p_value, js = 0.0, 1.0, 0.0

    statistics = {
        "chi2_statistic": chi2_statistic,
        "chi2_p_value": chi2_p_value,
        "jensenshannon": js,
        "n_categories": float(len(table)),
        "unseen_categories": float(unseen.sum()),
        "unseen_share": float(observed_cur[unseen].sum() / n_cur),
    }
    new = table.index[unseen][np.argsort(-observed_cur[unseen], kind="stable")]
    test = _choose_test(method, "categorical", n_ref)
    return _column_result(
        name,
        "categorical",
        test,
        threshold,
        statistics,
        counts=(n_ref, n_cur, len(reference) - n_ref, len(current) - n_cur),
        unseen=tuple(str(value) for value in new[:MAX_REPORTED_CATEGORIES]),
    )


def _category_values(frame: pd.DataFrame, name: str) -> pd.Series:
    """A column's non-missing values as Python objects, so both frames' values compare alike."""
    series = _series(frame, name)
    return series[series.notna()].astype(object)


# --- Shared helpers ----------------------------------------------------------------


def _choose_test(method: str, kind: Kind, n_reference: int) -> Test:
    if method != "auto":
        return cast(Test, method)
    small = n_reference <= SMALL_SAMPLE_ROWS
    if kind == "numeric":
        return "ks" if small else "wasserstein"
    return "chi2" if small else "jensenshannon"


def _column_result(
    name: str,
    kind: Kind,
    test: Test,
    threshold: float | None,
    statistics: dict[str, float],
    *,
    counts: tuple[int, int, int, int],
    unseen: tuple[str, ...] = (),
) -> ColumnDrift:
    limit = _DEFAULT_THRESHOLDS[test] if threshold is None else threshold
    value = statistics[_VERDICT_STATISTIC[test]]
    is_p_value = test in _P_VALUE_TESTS
    drifted = value < limit if is_p_value else value > limit
    n_reference, n_current, reference_missing, current_missing = counts
    return ColumnDrift(
        column=name,
        kind=kind,
        test=test,
        statistic=value,
        threshold=limit,
        drifted=bool(drifted),
        p_value=value if is_p_value else None,
        statistics=statistics,
        n_reference=n_reference,
        n_current=n_current,
        reference_missing=reference_missing,
        current_missing=current_missing,
        unseen_categories=unseen,
    )


def _check_method_fits(method: str, kinds: dict[str, Kind]) -> None:
    wanted = _TEST_KIND[method]
    wrong = {name: kind for name, kind in kinds.items() if kind != wanted}
    if wrong:
        raise ConfigError(
            problem(
                f"only {wanted} columns for method={method!r}",
                ", ".join(f"{name} ({kind})" for name, kind in wrong.items()),
                "leave them out with columns=, or use method='auto' to pick each "
                "column's test by its kind",
                subject="detect_drift",
            )
        )


def _check_not_empty(names: Sequence[str], n_ref: Iterable[Any], n_cur: Iterable[Any]) -> None:
    empty = []
    for name, in_ref, in_cur in zip(names, n_ref, n_cur, strict=True):
        frames = [
            label for label, count in (("reference", in_ref), ("current", in_cur)) if not count
        ]
        if frames:
            empty.append(f"{name} (in {' and '.join(frames)})")
    if empty:
        raise DataValidationError(
            problem(
                "at least one non-missing value per compared column in both frames",
                f"no values in {', '.join(empty)}",
                "fill or drop those columns, or leave them out with columns=",
                subject="detect_drift",
            )
        )


def _check_frame(frame: object, label: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise DataValidationError(
            problem(
                "a pandas DataFrame",
                type(frame).__name__,
                f"pass the {label} data as a DataFrame",
                subject=f"detect_drift {label}",
            )
        )
    names = [str(name) for name in frame.columns]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DataValidationError(
            problem(
                "unique column names",
                f"repeated names {repeated!r}",
                "rename or drop the repeated columns",
                subject=f"detect_drift {label}",
            )
        )


def _compared_columns(
    reference: pd.DataFrame, current: pd.DataFrame, columns: Sequence[str] | None
) -> list[str]:
    ref_names = [str(name) for name in reference.columns]
    cur_names = [str(name) for name in current.columns]
    if columns is None:
        names = ref_names
        missing_ref = [name for name in cur_names if name not in ref_names]
    else:
        if isinstance(columns, str) or not all(isinstance(name, str) for name in columns):
            raise ConfigError(
                problem(
                    "a list of column names for 'columns'",
                    repr(columns),
                    "pass e.g. columns=['basket_value']",
                    subject="detect_drift",
                )
            )
        names = list(dict.fromkeys(columns))
        missing_ref = [name for name in names if name not in ref_names]
    if not names:
        raise ConfigError(
            problem(
                "at least one column to compare",
                "none (an empty 'columns' or a frame without columns)",
                "name the columns to compare",
                subject="detect_drift",
            )
        )
    missing_cur = [name for name in names if name not in cur_names]
    if missing_ref or missing_cur:
        parts = []
        if missing_cur:
            parts.append(f"{missing_cur!r} missing from current")
        if missing_ref:
            parts.append(f"{missing_ref!r} missing from reference")
        raise DataValidationError(
            problem(
                "the compared columns in both frames",
                "; ".join(parts),
                "compute the missing columns, or pass columns= naming the ones both frames have",
                subject="detect_drift",
            )
        )
    return names


def _column_kinds(
    reference: pd.DataFrame, current: pd.DataFrame, names: list[str], categorical: set[str]
) -> dict[str, Kind]:
    kinds: dict[str, Kind] = {}
    unsupported: list[str] = []
    mismatched: list[str] = []
    valueless: list[str] = []
    for name in names:
        ref_kind, cur_kind = logical_kind(reference, name), logical_kind(current, name)
        found = {ref_kind, cur_kind}
        if "null" in found:  # an object column of missing values only
            valueless.append(name)
        elif found - _NUMERIC_KINDS - _CATEGORICAL_KINDS:
            unsupported.append(
                f"{name} ({native_dtype(reference, name)} / {native_dtype(current, name)})"
            )
        elif name in categorical:
            kinds[name] = "categorical"
        elif found <= _NUMERIC_KINDS:
            kinds[name] = "numeric"
        elif found <= _CATEGORICAL_KINDS:
            kinds[name] = "categorical"
        else:
            mismatched.append(f"{name} ({ref_kind} in reference, {cur_kind} in current)")
    if unsupported:
        raise DataValidationError(
            problem(
                "numeric, string, category or boolean columns",
                f"{', '.join(unsupported)}",
                "leave those columns out with columns=, or convert them "
                "(e.g. a date to its day of week)",
                subject="detect_drift",
            )
        )
    if mismatched:
        raise DataValidationError(
            problem(
                "each column of the same kind (numeric or categorical) in both frames",
                ", ".join(mismatched),
                "cast the current column to the reference's type, or name it in categorical= "
                "to compare both as categories",
                subject="detect_drift",
            )
        )
    if valueless:
        _check_not_empty(
            valueless,
            [len(_category_values(reference, name)) for name in valueless],
            [len(_category_values(current, name)) for name in valueless],
        )
    return kinds


def _series(frame: pd.DataFrame, name: str) -> pd.Series:
    for label in frame.columns:
        if str(label) == name:
            return frame[label]
    raise KeyError(name)  # unreachable after _compared_columns


def _method_parameter(method: object) -> str:
    if not isinstance(method, str) or method not in DRIFT_METHODS:
        raise ConfigError(
            problem(
                f"one of {', '.join(map(repr, DRIFT_METHODS))}",
                repr(method),
                "pass method='auto' to pick each column's test, or name one test",
                subject="The 'method' parameter of detect_drift",
            )
        )
    return method


def _threshold_parameter(threshold: object, method: str) -> float | None:
    if threshold is None:
        return None
    number = math.nan
    if isinstance(threshold, numbers.Real) and not isinstance(threshold, bool):
        number = float(threshold)
    if method in ("auto", *_P_VALUE_TESTS):
        interval, valid = "(0, 1)", 0.0 < number < 1.0
        fix = "pass a significance level such as threshold=0.05"
        if method == "auto":
            fix += " (with method='auto' it is also the distance limit of large samples)"
    elif method == "jensenshannon":
        interval, valid = "[0, 1]", 0.0 <= number <= 1.0
        fix = "pass a distance such as threshold=0.1"
    else:
        interval, valid = "[0, inf)", 0.0 <= number < math.inf
        fix = "pass a distance such as threshold=0.1"
    if not valid:
        raise ConfigError(
            problem(
                f"a float in {interval} for method={method!r}",
                repr(threshold),
                fix + ", or threshold=None for the test's default",
                subject="The 'threshold' parameter of detect_drift",
            )
        )
    return number


def _drift_share_parameter(drift_share: object) -> float:
    number = math.nan
    if isinstance(drift_share, numbers.Real) and not isinstance(drift_share, bool):
        number = float(drift_share)
    if not 0.0 < number <= 1.0:
        raise ConfigError(
            problem(
                "a float in (0, 1]",
                repr(drift_share),
                "pass the share of drifted columns that makes the dataset drift, "
                "e.g. drift_share=0.5",
                subject="The 'drift_share' parameter of detect_drift",
            )
        )
    return number


def _categorical_parameter(categorical: object, names: list[str]) -> set[str]:
    if categorical is None:
        return set()
    if isinstance(categorical, str) or not isinstance(categorical, Sequence | set | frozenset):
        raise ConfigError(
            problem(
                "a list of column names for 'categorical'",
                repr(categorical),
                f"wrap it in a list: categorical=[{categorical!r}]",
                subject="detect_drift",
            )
        )
    unknown = [name for name in categorical if name not in names]
    if unknown:
        raise ConfigError(
            problem(
                "'categorical' to name compared columns",
                f"{unknown!r}, not among {names!r}",
                "check the spelling, or add them to columns=",
                subject="detect_drift",
            )
        )
    return {str(name) for name in categorical}


def _json_float(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
