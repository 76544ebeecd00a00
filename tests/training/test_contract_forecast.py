"""The estimator contract for every registered forecasting algorithm.

The tabular model types share one contract test (test_segmentation.py); a
forecaster fits a long panel and predicts a horizon rather than rows, so its
contract is the same list of promises checked through that interface. Together
they cover every algorithm in the registry (the last test here says so).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from test_segmentation import CONTRACT_MODEL_TYPES

from retailml.core.errors import ConfigError, StateError
from retailml.training._registry import ALGORITHMS

FORECASTERS = list(ALGORITHMS["sales_forecast"])


def monthly_panel() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    dates = pd.date_range("2018-01-01", periods=48, freq="MS")
    season = 1 + 0.3 * np.sin(2 * np.pi * np.arange(48) / 12)
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "series_id": f"s{i}",
                    "date": dates,
                    "y": 100 * (i + 1) * season * rng.lognormal(0, 0.05, 48),
                }
            )
            for i in range(2)
        ],
        ignore_index=True,
    )


@pytest.mark.parametrize("algorithm", FORECASTERS)
def test_every_forecasting_algorithm_follows_the_estimator_contract(algorithm: str) -> None:
    data = monthly_panel()
    estimator = ALGORITHMS["sales_forecast"][algorithm](horizon=6)
    params = estimator.get_params(deep=False)
    assert params["algorithm"] == algorithm
    assert vars(estimator) == params  # __init__ stores its arguments and nothing else

    with pytest.raises(StateError, match=r"^SalesForecaster is not fitted; call fit"):
        estimator.predict()

    assert estimator.fit(data) is estimator
    learned = set(vars(estimator)) - set(params)
    assert learned and all(a.endswith("_") and not a.startswith("_") for a in learned)
    assert estimator.get_params(deep=False) == params
    forecast = estimator.predict()
    assert list(forecast.columns) == ["series_id", "date", "prediction", "lower", "upper"]
    assert len(forecast) == 2 * 6
    assert np.isfinite(forecast[["prediction", "lower", "upper"]].to_numpy()).all()

    twin = clone(estimator)
    assert twin.get_params(deep=False) == params
    with pytest.raises(StateError):
        twin.predict()
    pd.testing.assert_frame_equal(twin.fit(data).predict(), forecast)  # deterministic

    with pytest.raises(ConfigError, match="horizon"):
        clone(estimator).set_params(horizon=0).fit(data)
    with pytest.raises(ConfigError) as caught:
        clone(estimator).set_params(algorithm="nope").fit(data)
    assert all(repr(a) in str(caught.value) for a in FORECASTERS)


def test_every_registered_model_type_has_a_contract_test() -> None:
    assert set(ALGORITHMS) == {*CONTRACT_MODEL_TYPES, "sales_forecast"}
