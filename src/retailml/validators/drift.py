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

Statistics computed for every column of a kind (``ColumnDrift.statistics``;
with ``statistics="verdict"`` a numeric column gets only its deciding test's
statistics, see below):

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

Only what decides (``statistics="verdict"``): numeric columns then get the
statistics of their deciding test (``ks_statistic`` and ``ks_p_value``;
``psi``; or ``wasserstein`` and ``wasserstein_normed``) plus
``reference_mean``, ``current_mean`` and ``reference_std``; categorical
columns still get all theirs (they all come from the same counts). The
verdicts are the same as with the default ``statistics="all"``. On large
frames the KS statistic is the costliest one (a merge of both samples), so
``"verdict"`` is about twice as fast with ``method="auto"``.

Column kinds: integer and float columns are numeric; string, object,
category and boolean columns are categorical. Name numeric codes (store ids,
a 0/1 flag) in ``categorical=`` to compare them as categories. Datetime,
date and timedelta columns cannot be compared: leave them out with ``columns=``.

Missing values (None, NaN, NaT and, for numeric columns, ±inf) are dropped
per column and counted in ``reference_missing`` / ``current_missing``.

Details of the statistics:

* KS: the statistic and p-value are scipy's (``ks_2samp`` with its default
  ``method="auto"``): an exact p-value when neither sample has more than
  10,000 values, else the asymptotic one. Each column's values are sorted
  once per frame and the KS statistic, the Wasserstein distance and the PSI
  bins all come from the two sorted arrays; on large frames the numeric
  columns are spread over up to 4 threads (numpy releases the GIL).

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

import ctypes
import math
import numbers
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, cast

import numpy as np
import numpy.typing as npt
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
#: The values ``statistics`` accepts.
_STATISTICS_SCOPES: tuple[str, ...] = ("all", "verdict")
# The numeric statistic groups, and the group each test's verdict needs.
_NUMERIC_STATISTICS: frozenset[str] = frozenset({"ks", "psi", "wasserstein"})
_VERDICT_NEEDS: dict[str, frozenset[str]] = {
    "ks": frozenset({"ks"}),
    "psi": frozenset({"psi"}),
    "wasserstein": frozenset({"wasserstein"}),
}
# Up to this many values in the larger sample, scipy's ks_2samp computes an exact p-value.
_KS_EXACT_ROWS = 10_000
# Numeric columns run on several threads above this many values in all (both frames).
_THREAD_VALUES = 1_000_000
_MAX_WORKERS = 4
# Object columns with at least this many rows are counted by object identity first.
_IDENTITY_COUNT_ROWS = 50_000
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
    statistics: str = "all",
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
        statistics: ``"all"`` computes every statistic of each column's kind
            (``ColumnDrift.statistics``); ``"verdict"`` skips the numeric
            statistics the deciding test does not use (see the module
            docstring), which is faster on large frames. The verdicts are
            the same.

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
    scope = _statistics_parameter(statistics)
    _check_frame(reference, "reference")
    _check_frame(current, "current")
    names = _compared_columns(reference, current, columns)
    kinds = _column_kinds(reference, current, names, _categorical_parameter(categorical, names))
    if test_choice != "auto":
        _check_method_fits(test_choice, kinds)

    numeric = [name for name in names if kinds[name] == "numeric"]
    results: dict[str, ColumnDrift] = {}
    if numeric:
        results.update(_numeric_drift(reference, current, numeric, test_choice, limit, scope))
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
    scope: str = "all",
) -> dict[str, ColumnDrift]:
    """The numeric statistics for ``names``: every one, or (``scope="verdict"``) the needed ones.

    Each column's non-missing values are sorted once per frame; the
    Wasserstein distance, the PSI bins and (above scipy's exact-mode limit)
    the KS statistic all come from the two sorted arrays. Columns small
    enough for scipy's exact KS p-value go through one vectorised
    :func:`scipy.stats.ks_2samp` call.
    """
    ref_columns = [_finite_values(reference, name) for name in names]
    cur_columns = [_finite_values(current, name) for name in names]
    n_ref = np.array([values.size for values in ref_columns])
    n_cur = np.array([values.size for values in cur_columns])
    _check_not_empty(names, n_ref, n_cur)
    rows_ref, rows_cur = len(reference), len(current)
    tests = [_choose_test(method, "numeric", int(n_ref[j])) for j in range(len(names))]
    wanted = [_NUMERIC_STATISTICS if scope == "all" else _VERDICT_NEEDS[test] for test in tests]

    # KS p-values in scipy's exact mode: one vectorised call for those columns.
    ks_statistic = np.full(len(names), np.nan)
    ks_p_value = np.full(len(names), np.nan)
    exact = [
        j
        for j in range(len(names))
        if "ks" in wanted[j] and max(n_ref[j], n_cur[j]) <= _KS_EXACT_ROWS
    ]
    if exact:
        ks = stats.ks_2samp(
            _padded_matrix([ref_columns[j] for j in exact]),
            _padded_matrix([cur_columns[j] for j in exact]),
            axis=0,
            nan_policy="omit",
        )
        ks_statistic[exact] = np.atleast_1d(np.asarray(ks.statistic, dtype=np.float64))
        ks_p_value[exact] = np.atleast_1d(np.asarray(ks.pvalue, dtype=np.float64))

    def column_statistics(j: int) -> dict[str, float]:
        ref, cur = ref_columns[j], cur_columns[j]
        ref_sorted, cur_sorted = np.sort(ref), np.sort(cur)
        ref_std = float(np.std(ref))  # population std (ddof=0), as Evidently
        statistics: dict[str, float] = {}
        if "ks" in wanted[j]:
            if j in exact:
                d, p_value = float(ks_statistic[j]), float(ks_p_value[j])
            else:
                d = _ks_statistic(ref_sorted, cur_sorted)
                p_value = _ks_asymptotic_p_value(d, ref.size, cur.size)
            statistics["ks_statistic"] = d
            statistics["ks_p_value"] = p_value
        if "psi" in wanted[j]:
            statistics["psi"] = _population_stability_index(ref_sorted, cur_sorted)
        if "wasserstein" in wanted[j]:
            wasserstein = _wasserstein(ref_sorted, cur_sorted)
            # A constant reference: 0 if the current values are that constant, else +inf.
            normed = wasserstein / ref_std if ref_std > 0 else _inf_if_positive(wasserstein)
            statistics["wasserstein"] = wasserstein
            statistics["wasserstein_normed"] = normed
        statistics["reference_mean"] = float(np.mean(ref))
        statistics["current_mean"] = float(np.mean(cur))
        statistics["reference_std"] = ref_std
        return statistics

    # numpy's sorts and reductions release the GIL: large columns run on several threads.
    workers = min(len(names), _worker_count()) if n_ref.sum() + n_cur.sum() > _THREAD_VALUES else 1
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            computed = list(pool.map(column_statistics, range(len(names))))
    else:
        computed = [column_statistics(j) for j in range(len(names))]

    results: dict[str, ColumnDrift] = {}
    for j, name in enumerate(names):
        size_ref, size_cur = ref_columns[j].size, cur_columns[j].size
        results[name] = _column_result(
            name,
            "numeric",
            tests[j],
            threshold,
            computed[j],
            counts=(size_ref, size_cur, rows_ref - size_ref, rows_cur - size_cur),
        )
    return results


def _worker_count() -> int:
    """The CPUs this process may use, at most _MAX_WORKERS."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(available, _MAX_WORKERS))


def _inf_if_positive(value: float) -> float:
    return math.inf if value > 0 else 0.0


def _finite_values(frame: pd.DataFrame, name: str) -> FloatArray:
    """A numeric column's finite values as a contiguous float64 array."""
    values = float_values(frame, name)
    finite = np.isfinite(values)
    if finite.all():
        return values
    kept: FloatArray = values[finite]
    return kept


def _padded_matrix(columns: list[FloatArray]) -> FloatArray:
    """Columns of different lengths as a (rows, columns) array padded with NaN."""
    matrix = np.full((max(values.size for values in columns), len(columns)), np.nan)
    for j, values in enumerate(columns):
        matrix[: values.size, j] = values
    return matrix


def _merged_cdf_difference(
    ref_sorted: FloatArray, cur_sorted: FloatArray
) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """The pooled sorted values and ``n * m * (F_ref - F_cur)`` after each of them.

    A stable argsort of the two concatenated sorted runs is a linear merge
    (timsort finds the runs); the cumulative count difference is exact in
    integers. Within a run of tied values only the last entry is the CDF
    difference at that value.
    """
    n, m = ref_sorted.size, cur_sorted.size
    pooled = np.concatenate([ref_sorted, cur_sorted])
    order = np.argsort(pooled, kind="stable")
    steps = np.where(order < n, np.int64(m), np.int64(-n))
    return pooled[order], np.cumsum(steps)


def _ks_statistic(ref_sorted: FloatArray, cur_sorted: FloatArray) -> float:
    """The two-sample KS statistic, as :func:`scipy.stats.ks_2samp` computes it."""
    pooled, difference = _merged_cdf_difference(ref_sorted, cur_sorted)
    last_of_value = np.append(pooled[1:] != pooled[:-1], True)
    largest = int(np.abs(difference[last_of_value]).max())
    return largest / (ref_sorted.size * cur_sorted.size)


def _ks_asymptotic_p_value(d: float, n: int, m: int) -> float:
    """scipy's two-sided asymptotic KS p-value (its ``method="asymp"``)."""
    large, small = sorted([float(n), float(m)], reverse=True)
    effective = large * small / (large + small)
    return float(np.clip(stats.kstwo.sf(d, np.round(effective)), 0.0, 1.0))


def _wasserstein(ref_sorted: FloatArray, cur_sorted: FloatArray) -> float:
    """The 1-Wasserstein distance between the two samples (scipy's, from sorted values).

    With equal sizes it is the mean absolute difference of the order
    statistics; otherwise the integral of ``|F_ref - F_cur|`` over the pooled values.
    """
    n, m = ref_sorted.size, cur_sorted.size
    if n == m:
        return float(np.mean(np.abs(ref_sorted - cur_sorted)))
    pooled, difference = _merged_cdf_difference(ref_sorted, cur_sorted)
    # Between two pooled values both CDFs are flat; tied values add zero-width steps.
    area = np.abs(difference[:-1]).astype(np.float64) @ np.diff(pooled)
    return float(area / (n * m))


def _population_stability_index(ref_sorted: FloatArray, cur_sorted: FloatArray) -> float:
    """PSI of the current values against the reference values (both sorted).

    Bins are cut at the reference quantiles 1/PSI_BINS ... (PSI_BINS-1)/PSI_BINS
    (numpy's linear interpolation); the outer bins are open, the bins
    right-closed. Shares below PSI_EPSILON are raised to it.
    """
    quantiles = np.linspace(0.0, 1.0, PSI_BINS + 1)[1:-1]
    edges = np.quantile(ref_sorted, quantiles)
    ref_share = _bin_shares(ref_sorted, edges)
    cur_share = _bin_shares(cur_sorted, edges)
    ref_share = np.maximum(ref_share, PSI_EPSILON)
    cur_share = np.maximum(cur_share, PSI_EPSILON)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def _bin_shares(values_sorted: FloatArray, edges: FloatArray) -> FloatArray:
    """The share of the sorted values in each bin ``(edges[i-1], edges[i]]``."""
    below = np.searchsorted(values_sorted, edges, side="right")
    counts = np.diff(np.concatenate([[0], below, [values_sorted.size]]))
    shares: FloatArray = counts / max(values_sorted.size, 1)
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
    ref_counts = _category_counts(reference, name)
    cur_counts = _category_counts(current, name)
    n_ref, n_cur = int(ref_counts.sum()), int(cur_counts.sum())
    _check_not_empty([name], np.array([n_ref]), np.array([n_cur]))
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


def _category_counts(frame: pd.DataFrame, name: str) -> pd.Series:
    """A column's non-missing values counted, most frequent first, keyed by Python objects.

    Counting before converting to objects is much faster on large frames;
    the keys are converted afterwards so both frames' categories compare alike.
    """
    series = _series(frame, name)
    counts = _object_value_counts(series) if series.dtype == object else None
    if counts is None:
        counts = series.value_counts(sort=True, dropna=True)
    counts = counts[counts > 0]  # unused categories of a category dtype
    counts.index = pd.Index(counts.index.astype(object).tolist(), dtype=object)
    return counts


def _object_value_counts(series: pd.Series) -> pd.Series | None:
    """Count an object column by object identity first, then merge equal values.

    Hashing a million Python strings is the slow part of a categorical
    column. Columns read from Parquet or Arrow repeat the *same* string
    object for equal values (pyarrow deduplicates them), so counting the
    object pointers (integers, hashed in C) and then merging the few distinct
    objects by value gives exactly ``value_counts(dropna=True)``, ten times
    faster. Returns None (the caller counts values the usual way) when the
    objects are not shared enough for this to pay.
    """
    values = np.ascontiguousarray(series.to_numpy(dtype=object))
    if values.size < _IDENTITY_COUNT_ROWS:
        return None
    # The array's buffer is its PyObject pointers; ``values`` keeps them alive.
    address = ctypes.cast(values.ctypes.data, ctypes.POINTER(ctypes.c_uint64))
    pointers = pd.Series(np.ctypeslib.as_array(address, shape=(values.size,)), copy=False)
    firsts = pointers.drop_duplicates()
    if firsts.size > values.size // 20:
        return None
    pointer_counts = pointers.value_counts(sort=False)
    objects = pd.Series(
        pointer_counts.reindex(firsts.to_numpy()).to_numpy(),
        index=pd.Index(values[firsts.index.to_numpy()], dtype=object),
    )
    objects = objects[~pd.isna(objects.index.to_series()).to_numpy()]
    # Equal values held by different objects merge here; first-seen order, then by count.
    merged = objects.groupby(level=0, sort=False).sum()
    return merged.sort_values(ascending=False, kind="stable")


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


def _statistics_parameter(statistics: object) -> str:
    if not isinstance(statistics, str) or statistics not in _STATISTICS_SCOPES:
        raise ConfigError(
            problem(
                f"one of {', '.join(map(repr, _STATISTICS_SCOPES))}",
                repr(statistics),
                "pass statistics='all' for every statistic, or 'verdict' for the deciding ones",
                subject="The 'statistics' parameter of detect_drift",
            )
        )
    return statistics


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
