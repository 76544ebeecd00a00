"""Metrics equal hand-computed values; zero denominators follow the documented rules."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from retailml.core.errors import DataValidationError
from retailml.training._metrics import (
    calinski_harabasz_score,
    davies_bouldin_score,
    forecast_metrics,
    mae,
    mape,
    mase,
    mase_scale,
    precision_recall_f1,
    rmse,
    silhouette_score,
    smape,
)

ACTUAL = [100.0, 200.0, 300.0]
PREDICTED = [110.0, 180.0, 300.0]


def test_mae_and_rmse() -> None:
    assert mae(ACTUAL, PREDICTED) == pytest.approx(10.0)  # (10 + 20 + 0) / 3
    assert rmse(ACTUAL, PREDICTED) == pytest.approx(math.sqrt(500 / 3))  # (100 + 400) / 3


def test_mape_is_a_fraction_and_skips_zero_actuals() -> None:
    assert mape(ACTUAL, PREDICTED) == pytest.approx((0.1 + 0.1 + 0.0) / 3)
    assert mape([0.0, 50.0], [5.0, 40.0]) == pytest.approx(0.2)
    assert math.isnan(mape([0.0, 0.0], [1.0, 2.0]))


def test_smape_is_the_m_competition_definition_as_a_fraction() -> None:
    expected = (2 * 10 / 210 + 2 * 20 / 380 + 0.0) / 3
    assert smape(ACTUAL, PREDICTED) == pytest.approx(expected)
    assert smape([0.0, 10.0], [0.0, 0.0]) == pytest.approx(1.0)  # (0 + 2) / 2
    assert smape([5.0], [-5.0]) == pytest.approx(2.0)  # the maximum


def test_mase_scales_by_the_in_sample_seasonal_naive_error() -> None:
    train = [10.0, 20.0, 12.0, 22.0, 14.0, 24.0]
    assert mase_scale(train, 2) == pytest.approx(2.0)  # |12-10|, |22-20|, |14-12|, |24-22|
    assert mase([16.0, 26.0], [15.0, 29.0], train, 2) == pytest.approx(2.0 / 2.0)
    # Not longer than one season: lag 1.
    assert mase_scale([1.0, 3.0, 6.0], 12) == pytest.approx(2.5)


def test_mase_of_a_constant_training_series() -> None:
    assert mase([5.0], [5.0], [5.0, 5.0, 5.0]) == 0.0
    assert math.isnan(mase([6.0], [5.0], [5.0, 5.0, 5.0]))
    assert math.isnan(mase([6.0], [5.0], [5.0]))


def test_mismatched_or_empty_inputs_are_rejected() -> None:
    with pytest.raises(DataValidationError, match="same length"):
        mae([1.0, 2.0], [1.0])
    with pytest.raises(DataValidationError, match="at least one value"):
        rmse([], [])


def test_forecast_metrics_average_per_series_and_cutoff() -> None:
    train = pd.DataFrame(
        {
            "series_id": ["a"] * 4 + ["b"] * 4,
            "date": [1, 2, 3, 4] * 2,
            "y": [1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0],
        }
    )
    cv = pd.DataFrame(
        {
            "series_id": ["a", "a", "b", "b"],
            "date": [4, 5, 4, 5],
            "cutoff": [3, 3, 3, 3],
            "y": [4.0, 5.0, 5.0, 5.0],
            "prediction": [5.0, 5.0, 5.0, 5.0],
        }
    )
    result = forecast_metrics(cv, train, season_length=1)
    assert result["mae"] == pytest.approx((0.5 + 0.0) / 2)
    # series a: the history up to cutoff 3 is 1, 2, 3 -> scale 1, MAE 0.5;
    # series b is constant with a perfect forecast -> 0.
    assert result["mase"] == pytest.approx((0.5 + 0.0) / 2)
    assert result["smape"] == pytest.approx((2 * 1 / 9 / 2 + 0.0) / 2)
    assert result["n_series"] == 2.0 and result["n_mase_defined"] == 2.0


def test_forecast_metrics_names_missing_columns() -> None:
    with pytest.raises(DataValidationError, match="missing \\['prediction'\\]"):
        forecast_metrics(
            pd.DataFrame({"series_id": [1], "date": [1], "y": [1.0]}),
            pd.DataFrame({"series_id": [1], "date": [0], "y": [1.0]}),
            1,
        )


def test_segmentation_scores_wrap_scikit_learn() -> None:
    features = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0]])
    labels = np.array([0, 0, 1, 1])
    # Silhouette by hand: a = 1, b = mean(10, sqrt(101)) for every point.
    b = (10.0 + math.sqrt(101.0)) / 2
    assert silhouette_score(features, labels) == pytest.approx((b - 1.0) / b)
    # Between dispersion 4 * 25 = 100 over (k-1) = 1; within 4 * 0.25 = 1 over (n-k) = 2.
    assert calinski_harabasz_score(features, labels) == pytest.approx(200.0)
    # Scatter 0.5 each, centroid distance 10: (0.5 + 0.5) / 10.
    assert davies_bouldin_score(features, labels) == pytest.approx(0.1)
    with pytest.raises(DataValidationError, match="between 2 and n_samples - 1"):
        silhouette_score(features, [0, 0, 0, 0])


def test_precision_recall_f1_of_anomaly_flags() -> None:
    labels = [1, 1, 0, 0, 1, 0]
    flags = [1, 0, 1, 0, 1, 0]
    result = precision_recall_f1(labels, flags)
    assert result == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3})
    assert precision_recall_f1([0, 0], [0, 0]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
