"""ModelValidator: thresholds, fairness with fairlearn, drift, and the guide's snippet."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (  # type: ignore[import-untyped]
    demographic_parity_difference,
    equalized_odds_difference,
)

import guide
from retailml.core.errors import ConfigError, DataValidationError
from retailml.training import model_trainer
from retailml.training._anomaly import AnomalyDetector
from retailml.training._demand import DemandPredictor
from retailml.training._forecast import SalesForecaster
from retailml.training._segmentation import CustomerSegmenter
from retailml.training._tasks import make_task
from retailml.training._trainer import ModelTrainer
from retailml.training._validation import (
    CONFIG_KEYS,
    CheckOutcome,
    ModelValidator,
    ValidationResult,
)

COUNTRIES = ("United Kingdom", "Germany", "France")


class ColumnDemand(DemandPredictor):
    """A demand model whose predictions are the test frame's ``forecast`` column."""

    def predict(self, X: pd.DataFrame) -> Any:  # noqa: N803
        return X["forecast"].to_numpy(dtype=np.float64)


class ColumnFlags(AnomalyDetector):
    """An anomaly detector whose flags are the test frame's ``flag`` column."""

    def predict(self, X: pd.DataFrame) -> Any:  # noqa: N803
        return X["flag"].to_numpy(dtype=np.int64)


def validate(model: Any, data: pd.DataFrame, **config: Any) -> ValidationResult:
    return ModelValidator().validate_model(model=model, test_data=data, validation_config=config)


def check(result: ValidationResult, name: str) -> CheckOutcome:
    (found,) = [c for c in result.checks if c.name == name]
    return found


def json_safe(result: ValidationResult) -> dict[str, Any]:
    data = result.to_dict()
    return dict(json.loads(json.dumps(data, allow_nan=False)))


def daily_panel(days: int = 120, seed: int = 0) -> pd.DataFrame:
    """Three daily series with a weekly pattern, one per country."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2023-01-02", periods=days, freq="D")
    weekly = np.array([1.0, 1.1, 1.2, 1.15, 1.3, 0.4, 0.6])[dates.dayofweek]
    frames = [
        pd.DataFrame(
            {
                "series_id": f"s{i}",
                "date": dates,
                "sales_amount": 1000 * (i + 1) * weekly * rng.lognormal(0, 0.08, days),
                "country": country,
            }
        )
        for i, country in enumerate(COUNTRIES)
    ]
    return pd.concat(frames, ignore_index=True)


def split_last(panel: pd.DataFrame, periods: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    cut = np.sort(panel["date"].unique())[-periods - 1]
    return panel[panel["date"] <= cut], panel[panel["date"] > cut]


@pytest.fixture(scope="module")
def forecast() -> tuple[SalesForecaster, pd.DataFrame, pd.DataFrame]:
    train, test = split_last(daily_panel(), 14)
    model = SalesForecaster(algorithm="seasonal_naive", horizon=14)
    return model.fit(train, target="sales_amount"), train, test


@pytest.fixture
def regression() -> pd.DataFrame:
    """Absolute errors 10 and 10 in the UK, 30 and 30 in Germany; each pair five times."""
    pairs = pd.DataFrame(
        {
            "quantity": [100.0, 200.0, 100.0, 100.0],
            "forecast": [110.0, 190.0, 130.0, 70.0],
            "country": ["UK", "UK", "DE", "DE"],
        }
    )
    return pd.concat([pairs] * 5, ignore_index=True)


def flagged_lines() -> pd.DataFrame:
    """UK: 5 of 100 flagged; Germany: 20 of 50; France: 5 of 50. Labels partly agree."""
    country = np.repeat(["UK", "DE", "FR"], [100, 50, 50])
    flag = np.zeros(200, dtype=np.int64)
    flag[:5] = 1
    flag[100:120] = 1
    flag[150:155] = 1
    label = np.zeros(200, dtype=np.int64)
    label[:4] = 1  # UK: 4 of 5 flags are anomalies
    label[10:12] = 1  # ... and 2 anomalies missed
    label[100:110] = 1  # DE: half the flags are anomalies
    label[150:152] = 1  # FR: 2 of 5
    return pd.DataFrame({"flag": flag, "is_anomaly": label, "country": country})


# --- performance thresholds ------------------------------------------------------------------


def test_thresholds_pass_and_fail_with_the_gap_in_the_detail(regression: pd.DataFrame) -> None:
    result = validate(ColumnDemand(), regression, performance_thresholds={"mae": 25, "mape": 0.15})
    assert result.metrics["mae"] == pytest.approx(20.0)
    assert result.metrics["mape"] == pytest.approx(0.1875)
    mae, mape = check(result, "mae"), check(result, "mape")
    assert mae.passed is True and mae.detail == "mae 20 <= 25 (margin 5)"
    assert mape.passed is False and mape.detail == "mape 0.1875 > 0.15 (by 0.0375)"
    assert result.status == "failed"
    assert result.failures == [mape]
    # Mean attainment: 1 for mae, 0.15 / 0.1875 = 0.8 for mape.
    assert result.performance_score == pytest.approx(0.9)
    assert "[FAIL] mape: mape 0.1875 > 0.15 (by 0.0375)" in str(result)


def test_score_metrics_are_minima_and_error_metrics_maxima(regression: pd.DataFrame) -> None:
    # r2 = 1 - 2000 / 7500
    result = validate(ColumnDemand(), regression, performance_thresholds={"r2": 0.8, "rmse": 30})
    assert result.metrics["r2"] == pytest.approx(1 - 2000 / 7500)
    assert check(result, "r2").passed is False
    assert check(result, "r2").detail == "r2 0.7333 < 0.8 (by 0.06667)"
    assert check(result, "rmse").passed is True  # sqrt(500) = 22.4 <= 30
    passing = validate(ColumnDemand(), regression, performance_thresholds={"r2": 0.7, "mae": 20})
    assert passing.status == "passed" and passing.performance_score == 1.0  # met at equality


def test_segment_scores_are_minima_and_davies_bouldin_a_maximum() -> None:
    rng = np.random.default_rng(0)
    group = rng.integers(0, 3, 600)
    customers = pd.DataFrame(
        {
            "recency": np.array([10, 120, 300])[group] * rng.lognormal(0, 0.2, 600),
            "frequency": np.array([30, 5, 1])[group] * rng.lognormal(0, 0.2, 600) + 1,
            "monetary": np.array([5000, 600, 50])[group] * rng.lognormal(0, 0.3, 600),
            "country": np.array(COUNTRIES)[group],  # each country one kind of customer
        }
    )
    model = CustomerSegmenter(n_clusters=3).fit(customers)
    result = validate(
        model,
        customers,
        performance_thresholds={"silhouette_score": 0.99, "davies_bouldin_score": 5.0},
        fairness_metrics=["demographic_parity", "equalized_odds"],
    )
    silhouette = check(result, "silhouette_score")
    assert silhouette.passed is False and " < 0.99 (by " in silhouette.detail
    assert check(result, "davies_bouldin_score").passed is True
    # Every country is one segment: the worst segment holds all of one country and none of another.
    parity = check(result, "demographic_parity")
    assert parity.value == pytest.approx(1.0) and parity.passed is False
    assert check(result, "equalized_odds").skipped
    assert "no true labels" in check(result, "equalized_odds").detail
    assert result.bias_score == 1.0


# --- fairness ---------------------------------------------------------------------------------


def test_demographic_parity_is_fairlearns_on_anomaly_flags() -> None:
    lines = flagged_lines()
    result = validate(
        ColumnFlags(),
        lines,
        fairness_metrics=["demographic_parity", "equalized_odds"],
        min_group_size=2,  # France has 2 anomalies
    )
    parity = check(result, "demographic_parity")
    expected = demographic_parity_difference(
        lines["is_anomaly"], lines["flag"], sensitive_features=lines["country"]
    )
    assert parity.value == pytest.approx(expected) == pytest.approx(20 / 50 - 5 / 100)
    assert parity.passed is False  # 0.35 > 0.1
    assert parity.by_group == pytest.approx({"UK": 0.05, "DE": 0.4, "FR": 0.1})
    assert "highest 'DE' 0.4, lowest 'UK' 0.05" in parity.detail
    odds = check(result, "equalized_odds")
    assert odds.value == pytest.approx(
        equalized_odds_difference(
            lines["is_anomaly"], lines["flag"], sensitive_features=lines["country"]
        )
    )
    assert result.bias_score == pytest.approx(max(parity.value or 0, odds.value or 0))
    assert result.status == "failed"


def test_equalized_odds_leaves_out_groups_without_both_labels() -> None:
    lines = flagged_lines()
    lines.loc[lines["country"] == "FR", "is_anomaly"] = 0
    result = validate(ColumnFlags(), lines, fairness_metrics=["equalized_odds"], min_group_size=2)
    odds = check(result, "equalized_odds")
    kept = lines[lines["country"] != "FR"]
    assert odds.value == pytest.approx(
        equalized_odds_difference(
            kept["is_anomaly"], kept["flag"], sensitive_features=kept["country"]
        )
    )
    assert "1 groups with fewer than 2 anomalous or normal labelled rows left out" in odds.detail
    # By default a group needs 10 of each: only Germany has 10 anomalies.
    default = validate(ColumnFlags(), flagged_lines(), fairness_metrics=["equalized_odds"])
    assert check(default, "equalized_odds").skipped
    assert "the test data has 3 groups, 1 that large" in check(default, "equalized_odds").detail
    unlabelled = validate(
        ColumnFlags(), lines.drop(columns="is_anomaly"), fairness_metrics=["equalized_odds"]
    )
    assert check(unlabelled, "equalized_odds").skipped


def test_group_error_disparity_of_a_regression(regression: pd.DataFrame) -> None:
    by_mae = validate(ColumnDemand(), regression, bias_detection=True, group_error_metric="mae")
    disparity = check(by_mae, "group_error_disparity")
    # MAE: UK 10, DE 30, overall 20 -> (30 - 10) / 20.
    assert disparity.by_group == pytest.approx({"UK": 10.0, "DE": 30.0})
    assert disparity.value == pytest.approx(1.0)
    assert disparity.passed is False and disparity.threshold == 0.25
    assert "worst 'DE' 30, best 'UK' 10, overall 20" in disparity.detail
    by_wape = validate(ColumnDemand(), regression, bias_detection=True, bias_threshold=1.5)
    disparity = check(by_wape, "group_error_disparity")
    # WAPE: UK 20 / 300, DE 60 / 200, overall 80 / 500.
    assert disparity.value == pytest.approx((60 / 200 - 20 / 300) / (80 / 500))
    assert disparity.passed is True
    assert by_wape.bias_score == 1.0  # capped
    assert by_wape.status == "passed"


def test_parity_and_odds_do_not_apply_to_regressions_and_are_replaced(
    regression: pd.DataFrame,
) -> None:
    result = validate(
        ColumnDemand(), regression, fairness_metrics=["demographic_parity", "equalized_odds"]
    )
    names = [c.name for c in result.checks]
    assert names == ["demographic_parity", "equalized_odds", "group_error_disparity"]
    assert check(result, "demographic_parity").skipped
    assert "measured as group_error_disparity" in check(result, "equalized_odds").detail
    assert check(result, "group_error_disparity").value is not None


def test_fairness_without_groups_is_skipped_with_the_reason(regression: pd.DataFrame) -> None:
    anonymous = validate(ColumnDemand(), regression.drop(columns="country"), bias_detection=True)
    skipped = check(anonymous, "group_error_disparity")
    assert skipped.skipped and "no 'country' column" in skipped.detail
    assert anonymous.status == "passed" and anonymous.bias_score == 0.0
    single = validate(ColumnDemand(), regression.assign(country="UK"), bias_detection=True)
    assert "the test data has 1 groups ('UK')" in check(single, "group_error_disparity").detail
    small = pd.DataFrame({"quantity": [50.0] * 3, "forecast": [0.0] * 3, "country": "FR"})
    with_small = validate(
        ColumnDemand(),
        pd.concat([regression, small]),
        bias_detection=True,
        group_error_metric="mae",
    )
    disparity = check(with_small, "group_error_disparity")
    assert set(disparity.by_group) == {"UK", "DE"} and disparity.value == pytest.approx(1.0)
    assert "1 groups with fewer than 10 rows left out" in disparity.detail
    other = validate(
        ColumnDemand(),
        regression.rename(columns={"country": "store"}),
        group_column="store",
        bias_detection=True,
    )
    assert other.group_column == "store"
    assert check(other, "group_error_disparity").value == pytest.approx(
        (60 / 200 - 20 / 300) / (80 / 500)
    )


# --- drift ------------------------------------------------------------------------------------


def test_drift_flags_shifted_inputs_and_passes_unshifted_ones() -> None:
    rng = np.random.default_rng(3)

    def sample(n: int) -> pd.DataFrame:
        return pd.DataFrame({"price": rng.normal(10, 2, n), "units": rng.normal(5, 1, n)})

    reference = sample(800)
    model = AnomalyDetector(contamination=0.05).fit(reference)
    same = validate(model, sample(400), drift_detection=True, reference_data=reference)
    drift = check(same, "data_drift")
    assert drift.passed is True and same.drift is not None
    assert drift.detail.startswith("0 of 2 input columns drifted")
    shifted = sample(400).assign(price=lambda f: f["price"] + 3)
    moved = validate(model, shifted, drift_detection=True, reference_data=reference)
    drift = check(moved, "data_drift")
    assert drift.passed is False and moved.status == "failed"
    assert moved.drift is not None and moved.drift.drifted_columns == ("price",)
    assert drift.value == 0.5 and "price" in drift.detail
    no_reference = validate(model, shifted, drift_detection=True)
    assert check(no_reference, "data_drift").skipped and no_reference.status == "passed"


# --- forecasts ----------------------------------------------------------------------------------


def test_forecasts_are_scored_like_training_scores_them(
    forecast: tuple[SalesForecaster, pd.DataFrame, pd.DataFrame],
) -> None:
    model, train, test = forecast
    with_history = validate(model, test, train_data=train, performance_thresholds={"mase": 2})
    expected = make_task("sales_forecast").score(model, test, train)
    assert with_history.metrics == pytest.approx(expected)
    assert math.isfinite(with_history.metrics["mase"])
    # Without the history the model's own end of training tells which rows are ahead.
    whole_panel = pd.concat([train, test])
    alone = validate(model, whole_panel, performance_thresholds={"mase": 2, "mape": 0.5})
    assert alone.n_rows == len(test)
    assert alone.metrics["mape"] == pytest.approx(expected["mape"])
    assert math.isnan(alone.metrics["mase"])
    assert check(alone, "mase").passed is False and "undefined" in check(alone, "mase").detail
    assert any("before the forecast start were ignored" in note for note in alone.notes)
    assert json_safe(alone)["metrics"]["mase"] is None


def test_a_test_period_missing_entirely_does_not_shorten_the_horizon(
    forecast: tuple[SalesForecaster, pd.DataFrame, pd.DataFrame],
) -> None:
    model, train, test = forecast
    gap = test[test["date"] != test["date"].min() + pd.Timedelta(days=3)]
    result = validate(model, gap, train_data=train)
    assert result.n_rows == len(gap)
    full = model.predict(horizon=14).merge(
        gap.rename(columns={"sales_amount": "y"}), on=["series_id", "date"]
    )
    assert result.metrics["mae"] == pytest.approx(
        full.assign(e=(full["y"] - full["prediction"]).abs())
        .groupby("series_id")["e"]
        .mean()
        .mean()
    )


def test_the_guide_validation_snippet_runs_with_a_training_result(
    tracking: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    train, test = split_last(daily_panel(), 14)
    trained = ModelTrainer(
        "sales_forecast",
        algorithm="seasonal_naive",
        hyperparameters={"horizon": 14},
        validation_strategy="holdout",
    ).train_sync(train, target="sales_amount")
    # Until model_trainer re-exports it, the guide's import finds the validator here.
    monkeypatch.setattr(model_trainer, "ModelValidator", ModelValidator, raising=False)
    namespace: dict[str, Any] = {"trained_model": trained, "test_features": test}
    guide.run(guide.block("**Validation Framework**:"), namespace)
    result = namespace["validation_results"]
    assert isinstance(result, ValidationResult)
    printed = capsys.readouterr().out
    assert f"Validation Status: {result.status}" in printed
    assert f"Performance Score: {result.performance_score}" in printed
    assert f"Bias Score: {result.bias_score}" in printed
    assert 0.0 <= result.performance_score <= 1.0 and 0.0 <= result.bias_score <= 1.0
    assert set(result.metrics) >= {"mape", "mae", "rmse"}
    assert [c.name for c in result.checks] == [
        "mape",
        "mae",
        "rmse",
        "demographic_parity",
        "equalized_odds",
        "group_error_disparity",
        "data_drift",
    ]
    assert check(result, "mape").passed is True  # ~10 % error on this panel
    assert check(result, "equalized_odds").skipped
    disparity = check(result, "group_error_disparity")
    assert result.group_column == "country" and set(disparity.by_group) == set(COUNTRIES)
    assert result.bias_score == pytest.approx(min(1.0, disparity.value or 0.0))
    drift = check(result, "data_drift")  # the reference: the training result's series ids
    assert drift.passed is True and result.drift is not None
    assert list(result.drift.columns) == ["series_id"]
    assert json_safe(result)["status"] == result.status


# --- errors -------------------------------------------------------------------------------------


def test_unknown_keys_metrics_and_fairness_names_are_config_errors(
    regression: pd.DataFrame,
) -> None:
    with pytest.raises(ConfigError, match="unknown 'bias_detect'") as info:
        validate(ColumnDemand(), regression, bias_detect=True)
    assert all(key in str(info.value) for key in CONFIG_KEYS)
    with pytest.raises(ConfigError, match="metrics of demand_prediction among mae, rmse") as info:
        validate(ColumnDemand(), regression, performance_thresholds={"silhouette_score": 0.5})
    assert "'silhouette_score'" in str(info.value)
    with pytest.raises(ConfigError, match="demographic_parity, equalized_odds"):
        validate(ColumnDemand(), regression, fairness_metrics=["disparate_impact"])
    with pytest.raises(ConfigError, match="wrap it in a list"):
        validate(ColumnDemand(), regression, fairness_metrics="demographic_parity")
    with pytest.raises(ConfigError, match="group_column"):
        validate(ColumnDemand(), regression, group_column="region", bias_detection=True)
    with pytest.raises(ConfigError, match="a number in"):
        validate(ColumnDemand(), regression, fairness_threshold=True)
    with pytest.raises(ConfigError, match="finite number"):
        validate(ColumnDemand(), regression, performance_thresholds={"mae": "low"})
    with pytest.raises(ConfigError, match="TrainingResult"):
        validate(object(), regression)
    with pytest.raises(DataValidationError, match="DataFrame"):
        validate(ColumnDemand(), regression.to_dict("records"))  # type: ignore[arg-type]


def test_precision_without_labels_fails_its_check() -> None:
    lines = flagged_lines().drop(columns="is_anomaly")
    result = validate(ColumnFlags(), lines, performance_thresholds={"f1": 0.5})
    f1 = check(result, "f1")
    assert f1.passed is False and "needs labels" in f1.detail
    assert result.performance_score == 0.0
