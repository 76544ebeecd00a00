"""detect_drift: per-column statistics against scipy, verdicts, the dataset verdict, errors."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial import distance

from retailml.core.errors import ConfigError, DataValidationError
from retailml.validators import drift
from retailml.validators.drift import ColumnDrift, DriftReport, detect_drift

TOLERANCE = 1e-9


def close(actual: float, expected: float) -> bool:
    return math.isclose(actual, expected, rel_tol=TOLERANCE, abs_tol=TOLERANCE)


def mixed_frames(rows: int, seed: int, *, shift: float = 0.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and current retail features; ``shift`` moves the current basket value."""
    rng = np.random.default_rng(seed)

    def frame(offset: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "basket_value": rng.normal(50.0 + offset, 10.0, rows),
                "items": rng.poisson(4.0, rows),
                "store_format": rng.choice(["mall", "street", "outlet"], rows, p=[0.5, 0.3, 0.2]),
                "loyalty_member": rng.random(rows) < 0.4,
            }
        )

    return frame(0.0), frame(shift)


# --- The public surface -------------------------------------------------------------


def test_public_names_are_pinned() -> None:
    assert sorted(drift.__all__) == sorted(
        [
            "DRIFT_METHODS",
            "PSI_BINS",
            "PSI_EPSILON",
            "SMALL_SAMPLE_ROWS",
            "ColumnDrift",
            "DriftReport",
            "detect_drift",
        ]
    )
    assert drift.DRIFT_METHODS == ("auto", "ks", "psi", "wasserstein", "chi2", "jensenshannon")


# --- Statistics agree with scipy ------------------------------------------------------


@pytest.mark.parametrize("rows", [300, 12_000])  # exact and asymptotic KS p-values
def test_numeric_statistics_agree_with_scipy(rows: int) -> None:
    rng = np.random.default_rng(3)
    reference = pd.DataFrame(
        {
            "normal": rng.normal(0, 1, rows),
            "gamma": rng.gamma(2.0, 3.0, rows),
            "counts": rng.poisson(3.0, rows),
        }
    )
    current = pd.DataFrame(
        {
            "normal": rng.normal(0.1, 1.1, rows // 2),
            "gamma": rng.gamma(2.2, 3.0, rows // 2),
            "counts": rng.poisson(3.3, rows // 2),
        }
    )
    # Missing values in some columns only, so the columns have different lengths.
    reference.loc[::5, "gamma"] = np.nan
    current.loc[::3, "normal"] = np.nan

    report = detect_drift(reference, current)

    for name in reference.columns:
        ref = reference[name].dropna().to_numpy(dtype=float)
        cur = current[name].dropna().to_numpy(dtype=float)
        found = report.columns[name].statistics
        ks = stats.ks_2samp(ref, cur)
        assert close(found["ks_statistic"], ks.statistic), name
        assert close(found["ks_p_value"], ks.pvalue), name
        wasserstein = stats.wasserstein_distance(ref, cur)
        assert close(found["wasserstein"], wasserstein), name
        assert close(found["wasserstein_normed"], wasserstein / np.std(ref)), name
        assert close(found["reference_std"], np.std(ref)), name
        assert close(found["current_mean"], np.mean(cur)), name
        assert report.columns[name].n_reference == ref.size
        assert report.columns[name].n_current == cur.size


def test_ks_runs_once_for_all_numeric_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, ...]] = []
    real = stats.ks_2samp

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(np.shape(args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(drift.stats, "ks_2samp", counting)
    reference, current = mixed_frames(500, seed=1)
    detect_drift(reference, current)
    assert calls == [(500, 2)]


def test_categorical_statistics_agree_with_scipy() -> None:
    rng = np.random.default_rng(5)
    reference = pd.DataFrame({"segment": rng.choice(list("abcd"), 800, p=[0.4, 0.3, 0.2, 0.1])})
    current = pd.DataFrame({"segment": rng.choice(list("abce"), 600, p=[0.3, 0.3, 0.3, 0.1])})
    reference.loc[::9, "segment"] = None

    result = detect_drift(reference, current).columns["segment"]

    categories = ["a", "b", "c", "d", "e"]
    ref_counts = reference["segment"].value_counts().reindex(categories, fill_value=0)
    cur_counts = current["segment"].value_counts().reindex(categories, fill_value=0)
    table = np.vstack([ref_counts.to_numpy(), cur_counts.to_numpy()]).astype(float)
    contingency = stats.chi2_contingency(table, correction=False)
    assert close(result.statistics["chi2_statistic"], contingency.statistic)
    assert close(result.statistics["chi2_p_value"], contingency.pvalue)
    # The same test through scipy.stats.chisquare: every cell against its pooled expectation,
    # with the k - 1 degrees of freedom of a 2 x k table (2k - 1 cells minus ddof = k).
    pooled = table.sum(axis=0) / table.sum()
    expected = np.outer(table.sum(axis=1), pooled)
    chisquare = stats.chisquare(table.ravel(), expected.ravel(), ddof=len(categories))
    assert close(result.statistics["chi2_statistic"], chisquare.statistic)
    assert close(result.statistics["chi2_p_value"], chisquare.pvalue)
    js = distance.jensenshannon(table[0] / table[0].sum(), table[1] / table[1].sum(), base=2)
    assert close(result.statistics["jensenshannon"], js)
    assert result.statistics["n_categories"] == 5
    assert result.statistics["unseen_categories"] == 1
    assert close(result.statistics["unseen_share"], cur_counts["e"] / 600)
    assert result.unseen_categories == ("e",)
    assert result.reference_missing == 89
    assert result.n_reference == 800 - 89


def test_psi_matches_a_hand_computation() -> None:
    # Reference deciles of 1..20 (linear interpolation): 2.9, 4.8, 6.7, ..., 18.1, so
    # every reference bin holds 2 of 20 values (share 0.1).
    reference = pd.DataFrame({"x": np.arange(1.0, 21.0)})
    # Current: 1 x5 -> bin 0; 5 x3 -> bin 2 (4.8, 6.7]; 10 -> bin 4 (8.6, 10.5];
    # 25 -> bin 9 (18.1, inf). Bins 1, 3, 5, 6, 7 and 8 are empty: share 1e-4.
    current = pd.DataFrame({"x": [1.0, 1, 1, 1, 1, 5, 5, 5, 10, 25]})
    expected = (
        (0.5 - 0.1) * math.log(0.5 / 0.1)
        + (0.3 - 0.1) * math.log(0.3 / 0.1)
        + 6 * (1e-4 - 0.1) * math.log(1e-4 / 0.1)
    )

    result = detect_drift(reference, current, method="psi").columns["x"]

    assert close(result.statistic, expected)
    assert close(result.statistics["psi"], expected)
    assert result.test == "psi"
    assert result.threshold == 0.1
    assert result.drifted
    assert result.p_value is None


def test_psi_bins_are_right_closed_and_ignore_missing_values() -> None:
    # Deciles of 0..10 are exactly 1, 2, ..., 9: a current value on an edge falls in the
    # bin the edge closes, like the reference's own value there.
    reference = pd.DataFrame({"x": [*np.arange(0.0, 11.0), np.nan, np.nan]})
    current = pd.DataFrame({"x": [0.0, 1.0, 3.0, 3.0, np.nan]})
    ref_share = np.array([2, 1, 1, 1, 1, 1, 1, 1, 1, 1]) / 11
    cur_share = np.maximum(np.array([2, 0, 2, 0, 0, 0, 0, 0, 0, 0]) / 4, 1e-4)
    expected = float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))

    result = detect_drift(reference, current, method="psi").columns["x"]

    assert close(result.statistic, expected)
    assert (result.reference_missing, result.current_missing) == (2, 1)


def test_psi_of_identical_samples_is_zero() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=1000), "y": rng.integers(0, 3, 1000)})
    report = detect_drift(frame, frame.copy(), method="psi")
    assert [result.statistic for result in report.columns.values()] == [0.0, 0.0]


# --- Verdicts -----------------------------------------------------------------------


@pytest.mark.parametrize(("rows", "test"), [(800, "ks"), (5000, "wasserstein")])
def test_a_shifted_normal_column_drifts_and_an_identical_one_does_not(rows: int, test: str) -> None:
    rng = np.random.default_rng(11)
    reference = pd.DataFrame({"shifted": rng.normal(size=rows), "same": rng.normal(size=rows)})
    current = pd.DataFrame({"shifted": rng.normal(0.5, 1.0, rows), "same": rng.normal(size=rows)})

    report = detect_drift(reference, current)

    assert report.columns["shifted"].test == test
    assert report.columns["shifted"].drifted
    assert not report.columns["same"].drifted
    assert report.drifted_columns == ("shifted",)


@pytest.mark.parametrize(("rows", "test"), [(600, "chi2"), (5000, "jensenshannon")])
def test_a_new_category_makes_a_column_drift(rows: int, test: str) -> None:
    rng = np.random.default_rng(2)
    formats = ["mall", "street", "outlet"]
    reference = pd.DataFrame({"store_format": rng.choice(formats, rows)})
    current = pd.DataFrame(
        {"store_format": rng.choice([*formats, "online"], rows, p=[0.25, 0.25, 0.2, 0.3])}
    )
    same = pd.DataFrame({"store_format": rng.choice(formats, rows)})

    result = detect_drift(reference, current).columns["store_format"]
    stable = detect_drift(reference, same).columns["store_format"]

    assert result.test == test
    assert result.drifted
    assert result.unseen_categories == ("online",)
    assert not stable.drifted
    assert stable.unseen_categories == ()


def test_auto_picks_the_test_by_kind_and_reference_size() -> None:
    rng = np.random.default_rng(4)
    small = pd.DataFrame({"x": rng.normal(size=1000), "c": rng.choice(list("ab"), 1000)})
    large = pd.DataFrame({"x": rng.normal(size=1001), "c": rng.choice(list("ab"), 1001)})
    assert [r.test for r in detect_drift(small, large).columns.values()] == ["ks", "chi2"]
    assert [r.test for r in detect_drift(large, small).columns.values()] == [
        "wasserstein",
        "jensenshannon",
    ]
    # The size is the column's non-missing reference count.
    large.loc[:1, "x"] = np.nan
    assert detect_drift(large, small).columns["x"].test == "ks"


def test_defaults_and_the_meaning_of_a_threshold_per_test() -> None:
    reference, current = mixed_frames(800, seed=8, shift=3.0)
    numeric = ["basket_value", "items"]
    ks = detect_drift(reference, current, columns=numeric).columns["basket_value"]
    assert (ks.test, ks.threshold) == ("ks", 0.05)
    assert ks.p_value == ks.statistic == ks.statistics["ks_p_value"]
    assert ks.drifted == (ks.p_value < 0.05)

    # A p-value test drifts when p < threshold: a tiny threshold clears the column.
    strict = detect_drift(reference, current, columns=numeric, threshold=1e-300)
    assert not strict.columns["basket_value"].drifted

    # A distance drifts when distance > threshold.
    wd = detect_drift(reference, current, columns=numeric, method="wasserstein")
    column = wd.columns["basket_value"]
    assert (column.test, column.threshold, column.p_value) == ("wasserstein", 0.1, None)
    assert column.statistic == column.statistics["wasserstein_normed"]
    assert column.drifted
    relaxed = detect_drift(
        reference, current, columns=numeric, method="wasserstein", threshold=column.statistic
    )
    assert not relaxed.columns["basket_value"].drifted

    categorical = ["store_format", "loyalty_member"]
    chi2 = detect_drift(reference, current, columns=categorical, method="chi2")
    assert {r.threshold for r in chi2.columns.values()} == {0.05}
    js = detect_drift(reference, current, columns=categorical, method="jensenshannon")
    assert {r.threshold for r in js.columns.values()} == {0.1}
    assert all(0.0 <= r.statistic <= 1.0 for r in js.columns.values())


def test_boolean_and_category_columns_are_categorical() -> None:
    reference, current = mixed_frames(300, seed=9)
    reference["store_format"] = reference["store_format"].astype("category")
    current["store_format"] = current["store_format"].astype("string")
    report = detect_drift(reference, current)
    kinds = {name: result.kind for name, result in report.columns.items()}
    assert kinds == {
        "basket_value": "numeric",
        "items": "numeric",
        "store_format": "categorical",
        "loyalty_member": "categorical",
    }
    assert report.columns["store_format"].statistics["n_categories"] == 3


def test_numeric_codes_can_be_compared_as_categories() -> None:
    rng = np.random.default_rng(6)
    reference = pd.DataFrame({"store_id": rng.integers(1, 6, 500)})
    current = pd.DataFrame({"store_id": rng.integers(1, 7, 500)})
    result = detect_drift(reference, current, categorical=["store_id"]).columns["store_id"]
    assert (result.kind, result.test) == ("categorical", "chi2")
    assert result.unseen_categories == ("6",)


def test_a_constant_reference_column_drifts_on_any_change() -> None:
    reference = pd.DataFrame({"flag": np.zeros(2000)})
    same = detect_drift(reference, reference.copy()).columns["flag"]
    assert (same.test, same.statistic, same.drifted) == ("wasserstein", 0.0, False)

    # Same mean, different spread: still drift.
    spread = pd.DataFrame({"flag": np.tile([-1.0, 1.0], 1000)})
    changed = detect_drift(reference, spread).columns["flag"]
    assert changed.statistic == math.inf
    assert changed.drifted
    assert changed.statistics["wasserstein"] == 1.0
    assert changed.statistics["reference_std"] == 0.0
    assert changed.to_dict()["statistic"] is None


def test_missing_and_infinite_values_are_dropped_and_counted() -> None:
    reference = pd.DataFrame(
        {"x": [1.0, 2.0, np.nan, np.inf, 3.0], "c": ["a", None, "b", "a", "b"]}
    )
    current = pd.DataFrame({"x": [1.0, -np.inf, 2.0, 3.0, 2.0], "c": ["a", "b", "b", np.nan, None]})
    report = detect_drift(reference, current)
    x, c = report.columns["x"], report.columns["c"]
    assert (x.n_reference, x.reference_missing, x.n_current, x.current_missing) == (3, 2, 4, 1)
    assert (c.n_reference, c.reference_missing, c.n_current, c.current_missing) == (4, 1, 3, 2)
    assert math.isfinite(x.statistics["wasserstein"])


# --- The dataset verdict and the report ---------------------------------------------


def test_dataset_drift_compares_the_drifted_share_with_drift_share() -> None:
    reference, current = mixed_frames(5000, seed=12, shift=8.0)
    report = detect_drift(reference, current)
    assert report.drifted_columns == ("basket_value",)
    assert (report.n_columns, report.n_drifted, report.share_drifted) == (4, 1, 0.25)
    assert report.drift_share == 0.5
    assert not report.dataset_drift
    # The dataset drifts when the share reaches drift_share (>=, as Evidently).
    assert detect_drift(reference, current, drift_share=0.25).dataset_drift
    assert not detect_drift(reference, current, drift_share=0.26).dataset_drift
    only = detect_drift(reference, current, columns=["basket_value", "items"])
    assert only.dataset_drift
    assert list(only.columns) == ["basket_value", "items"]


def test_report_as_frame_dict_and_text() -> None:
    reference, current = mixed_frames(400, seed=13, shift=8.0)
    report = detect_drift(reference, current)

    frame = report.to_frame()
    assert list(frame["column"]) == list(reference.columns)
    assert list(frame.columns[:7]) == [
        "column",
        "kind",
        "test",
        "statistic",
        "threshold",
        "p_value",
        "drifted",
    ]
    assert {"psi", "wasserstein_normed", "jensenshannon", "chi2_p_value"} <= set(frame.columns)
    assert frame.loc[frame["column"] == "basket_value", "drifted"].item()
    assert math.isnan(frame.loc[frame["column"] == "store_format", "psi"].item())

    data = report.to_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert data["drifted_columns"] == ["basket_value"]
    assert data["columns"]["basket_value"]["test"] == "ks"
    assert set(data) == {
        "dataset_drift",
        "n_columns",
        "n_drifted",
        "share_drifted",
        "drift_share",
        "method",
        "drifted_columns",
        "columns",
    }

    text = str(report)
    assert text.startswith("no dataset drift: 1 of 4 columns drifted (25.0%; limit 50.0%)")
    assert "basket_value: DRIFTED (numeric, ks p-value" in text
    assert isinstance(report, DriftReport)
    assert isinstance(report.columns["items"], ColumnDrift)


# --- Errors --------------------------------------------------------------------------


def test_mismatched_columns_are_listed() -> None:
    reference, current = mixed_frames(50, seed=0)
    with pytest.raises(DataValidationError) as error:
        detect_drift(reference, current.drop(columns=["items"]).assign(extra=1))
    message = str(error.value)
    assert "['items'] missing from current" in message
    assert "['extra'] missing from reference" in message
    assert "Fix: " in message
    with pytest.raises(DataValidationError, match=re.escape("['price'] missing from current")):
        detect_drift(reference.assign(price=1.0), current, columns=["items", "price"])
    # A common subset compares fine.
    detect_drift(reference, current.drop(columns=["items"]), columns=["basket_value"])


def test_a_column_without_values_is_named() -> None:
    reference, current = mixed_frames(50, seed=0)
    current["basket_value"] = np.nan
    current["store_format"] = None
    with pytest.raises(DataValidationError) as error:
        detect_drift(reference, current)
    assert "store_format (in current)" in str(error.value)
    with pytest.raises(DataValidationError, match=re.escape("basket_value (in current)")):
        detect_drift(reference, current, columns=["basket_value", "items"])
    with pytest.raises(DataValidationError, match=re.escape("items (in reference and current)")):
        detect_drift(reference.iloc[:0], current.iloc[:0], columns=["items"])


def test_columns_that_cannot_be_compared() -> None:
    reference, current = mixed_frames(50, seed=0)
    dated = reference.assign(day=pd.date_range("2024-01-01", periods=50))
    with pytest.raises(DataValidationError, match=re.escape("day (datetime64[ns] / datetime64")):
        detect_drift(dated, current.assign(day=dated["day"]))
    with pytest.raises(DataValidationError, match="items \\(integer in reference, string"):
        detect_drift(reference, current.assign(items=current["items"].astype(str)))
    with pytest.raises(DataValidationError, match="pandas DataFrame"):
        detect_drift(reference.to_dict(), current)  # type: ignore[arg-type]
    with pytest.raises(DataValidationError, match="repeated names"):
        detect_drift(pd.concat([reference, reference["items"]], axis=1), current)


@pytest.mark.parametrize(
    ("arguments", "pattern"),
    [
        ({"method": "kl"}, "'method' parameter.*got 'kl'"),
        ({"threshold": 1.5}, "a float in \\(0, 1\\) for method='auto'; got 1.5"),
        ({"threshold": 0.0, "method": "ks"}, "a float in \\(0, 1\\) for method='ks'"),
        ({"threshold": -0.1, "method": "psi"}, "\\[0, inf\\) for method='psi'"),
        ({"threshold": 1.2, "method": "jensenshannon"}, "\\[0, 1\\] for method='jensenshannon'"),
        ({"threshold": True}, "got True"),
        ({"drift_share": 0.0}, "'drift_share' parameter.*\\(0, 1\\]"),
        ({"columns": "items"}, "a list of column names for 'columns'"),
        ({"columns": []}, "at least one column to compare"),
        ({"categorical": "items"}, "categorical=\\['items'\\]"),
        ({"categorical": ["price"]}, "\\['price'\\], not among"),
        ({"method": "ks"}, "only numeric columns for method='ks'.*store_format \\(categorical\\)"),
        ({"method": "chi2"}, "only categorical columns.*basket_value \\(numeric\\)"),
    ],
)
def test_bad_arguments_raise_config_errors(arguments: dict[str, Any], pattern: str) -> None:
    reference, current = mixed_frames(50, seed=0)
    with pytest.raises(ConfigError, match=pattern) as error:
        detect_drift(reference, current, **arguments)
    assert "Fix: " in str(error.value)


# --- Statistical behaviour ------------------------------------------------------------


#: The columns ``retail_frame(drifted=True)`` changes.
DRIFTED = frozenset({"price_shifted", "basket_scaled", "channel_new"})


def retail_frame(rng: np.random.Generator, rows: int, *, drifted: bool) -> pd.DataFrame:
    """Eight features; with ``drifted`` a mean shift of half a std, a 1.5x spread and a
    new channel (15 % of rows) in the DRIFTED columns, the others unchanged."""
    channels = ["store", "web", "app"]
    return pd.DataFrame(
        {
            "price": rng.lognormal(2.0, 0.5, rows),
            "quantity": rng.poisson(3.0, rows),
            "discount": rng.uniform(0.0, 0.3, rows),
            "price_shifted": rng.normal(10.0 + (5.0 if drifted else 0.0), 10.0, rows),
            "basket_scaled": rng.normal(40.0, 12.0 * (1.5 if drifted else 1.0), rows),
            "region": rng.choice(["north", "south", "east", "west"], rows),
            "member": rng.random(rows) < 0.3,
            "channel_new": rng.choice(
                [*channels, "marketplace"] if drifted else channels,
                rows,
                p=[0.4, 0.25, 0.2, 0.15] if drifted else [0.5, 0.3, 0.2],
            ),
        }
    )


def test_injected_drift_is_found_and_nothing_else_in_95_percent_of_trials() -> None:
    correct = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        reference = retail_frame(rng, 5000, drifted=False)
        current = retail_frame(rng, 5000, drifted=True)
        report = detect_drift(reference, current)
        correct += set(report.drifted_columns) == DRIFTED
    assert correct >= 95


def same_distribution(rng: np.random.Generator, rows: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": rng.normal(size=rows),
            "segment": rng.choice(list("abc"), rows, p=[0.5, 0.3, 0.2]),
        }
    )


def test_small_sample_p_value_tests_hold_their_false_positive_rate() -> None:
    # Two samples of one distribution: p < 0.05 should happen in about 5 % of trials.
    trials = 300
    flagged = {"x": 0, "segment": 0}
    for seed in range(trials):
        rng = np.random.default_rng(1000 + seed)
        report = detect_drift(same_distribution(rng, 400), same_distribution(rng, 400))
        for name in flagged:
            flagged[name] += report.columns[name].drifted
    assert all(0.015 <= count / trials <= 0.095 for count in flagged.values()), flagged


def test_large_object_columns_count_exactly_like_value_counts() -> None:
    # Shared string objects (as Parquet and Arrow produce), equal strings held by
    # distinct objects, None and NaN: the identity-first count must equal
    # pandas' value_counts, so the statistics cannot depend on how strings were built.
    rng = np.random.default_rng(7)
    shared = np.array(["UK", "France", "Germany", None, float("nan")], dtype=object)
    values = shared[rng.choice(5, size=120_000, p=[0.5, 0.2, 0.2, 0.05, 0.05])]
    values[::7] = np.array(["".join(["Fra", "nce"]) for _ in range(len(values[::7]))], dtype=object)
    frame = pd.DataFrame({"country": values})
    counts = drift._category_counts(frame, "country")
    expected = frame["country"].value_counts(dropna=True)
    assert counts.to_dict() == expected.to_dict()
    assert counts.sum() == frame["country"].notna().sum()
    assert list(counts.to_numpy()) == sorted(counts.to_numpy(), reverse=True)


def test_object_columns_of_mostly_distinct_strings_are_counted_the_usual_way() -> None:
    frame = pd.DataFrame({"id": [f"c{i}" for i in range(60_000)]})
    assert drift._object_value_counts(frame["id"]) is None
    assert drift._category_counts(frame, "id").sum() == 60_000
