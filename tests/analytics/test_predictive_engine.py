"""PredictiveEngine: the guide's "Model Training and Validation" recipes on silver data.

One workspace with generated transactions (2022-01-01 .. 2024-02-29, so the
guide's 2022-01-01 .. 2024-01-01 range is covered and January 2024 is held
out) is ingested once per module; the guide's two functions run as written
against it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import guide
from retailml.analytics.predictive_engine import (
    FEATURE_SETS,
    PredictiveEngine,
)
from retailml.core.errors import ConfigError, DataValidationError, NotFoundError
from retailml.core.settings import Settings, get_settings
from retailml.data.generate import GeneratorConfig, generate_transactions, write_transactions
from retailml.data.ingest import ingest_file, read_silver
from retailml.training import _metrics
from retailml.training._forecast import SalesForecaster
from retailml.training.model_trainer import TrainingResult

#: Enough invoices a day that the total series is regular (not intermittent).
ROWS = 100_000
SEED = 7
START = dt.date(2022, 1, 1)
END = dt.date(2024, 2, 29)
#: The guide trains up to this day; the four weeks after it are held out.
GUIDE_END = pd.Timestamp("2024-01-01")
HELD_OUT_END = pd.Timestamp("2024-01-29")

GUIDE_HEADING = "### Sales Forecasting Model"


def _isolate(mp: pytest.MonkeyPatch, home: Path) -> None:
    for name in list(os.environ):
        if name.startswith("RETAILML_") and name != "RETAILML_TEST_POSTGRES_URL":
            mp.delenv(name)
    mp.setenv("RETAILML_HOME", str(home))
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def silver_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A workspace with the generated transactions ingested into silver."""
    root = tmp_path_factory.mktemp("analytics")
    home = root / "workspace"
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, home)
        config = GeneratorConfig(rows=ROWS, seed=SEED, start=START, end=END)
        source = write_transactions(generate_transactions(config), root / "transactions.parquet")
        ingest_file(source, settings=get_settings())
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture
def silver(silver_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings naming the module's workspace, as the process settings (the guide's engine)."""
    _isolate(monkeypatch, silver_home)
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def silver_lines(silver_home: Path) -> pd.DataFrame:
    """The silver rows, for independent pandas computations."""
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, silver_home)
        table = read_silver(get_settings())
    get_settings.cache_clear()
    return table.to_pandas()


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def _product_lines(lines: pd.DataFrame) -> pd.DataFrame:
    return lines[~lines["is_non_product"] & ~lines["is_adjustment"]]


# --------------------------------------------------------------------------- the guide


@pytest.fixture(scope="module")
def guide_forecast(silver_home: Path) -> dict[str, Any]:
    """The guide's train_sales_forecast_model, run as written, with January 2024 held out."""
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, silver_home)
        engine = PredictiveEngine()
        everything = engine.engineer_features(run(engine.load_sales_data()))
        held_out = everything[
            (everything["date"] > GUIDE_END) & (everything["date"] <= HELD_OUT_END)
        ]
        namespace: dict[str, Any] = {"test_features": held_out.reset_index(drop=True)}
        code = guide.block(GUIDE_HEADING) + (
            "\nmodel, validation_results = await train_sales_forecast_model()\n"
        )
        guide.run(code, namespace)
        training = run(engine.load_sales_data(start_date="2022-01-01", end_date="2024-01-01"))
    get_settings.cache_clear()
    return {
        "model": namespace["model"],
        "validation_results": namespace["validation_results"],
        "test_features": namespace["test_features"],
        "training": training,
    }


def _scores(forecaster: SalesForecaster, test: pd.DataFrame) -> dict[str, float]:
    """MAE and sMAPE over every test row, forecasting up to the last test day."""
    first = forecaster.predict(horizon=1)["date"].min()
    steps = (test["date"].max() - first).days + 1
    merged = forecaster.predict(horizon=steps).merge(test, on=["series_id", "date"])
    assert len(merged) == len(test)  # every held-out row is scored
    actual, predicted = merged["sales_amount"], merged["prediction"]
    return {"mae": _metrics.mae(actual, predicted), "smape": _metrics.smape(actual, predicted)}


def test_the_guides_sales_forecast_runs_as_written(guide_forecast: dict[str, Any]) -> None:
    model = guide_forecast["model"]
    assert isinstance(model, TrainingResult)
    assert (model.model_type, model.algorithm) == ("sales_forecast", "prophet")
    assert model.validation_strategy == "time_series_split"
    assert model.hyperparameters["holidays"] == "GB"  # "holidays": True, UK retail
    assert model.hyperparameters["growth"] == "linear"
    assert model.hyperparameters["seasonality"] == {"yearly": True, "weekly": True, "daily": False}
    assert model.run_id and model.model_uri
    assert len(model.fold_metrics) == 5 and math.isfinite(model.metrics["smape"])
    assert model.model.series_summary_["model"].tolist() == ["prophet"]  # one regular series
    # Trained on the guide's range only; the data version of silver is recorded.
    assert model.n_rows == len(guide_forecast["training"])

    results = guide_forecast["validation_results"]
    assert list(results) == ["mape", "mae", "rmse", "smape"]
    assert all(math.isfinite(v) and v >= 0 for v in results.values())
    independent = _scores(model.model, guide_forecast["test_features"])
    assert results["mae"] == pytest.approx(independent["mae"])
    assert results["smape"] == pytest.approx(independent["smape"])


def test_the_guides_forecast_beats_seasonal_naive_on_held_out_weeks(
    guide_forecast: dict[str, Any],
) -> None:
    training = guide_forecast["training"]
    test = guide_forecast["test_features"]
    baseline = SalesForecaster(algorithm="seasonal_naive").fit(training, target="sales_amount")
    naive = _scores(baseline, test)
    prophet = _scores(guide_forecast["model"].model, test)
    assert prophet["mae"] < naive["mae"]
    assert prophet["smape"] < naive["smape"]


def test_the_guides_segmentation_runs_as_written(silver: Settings) -> None:
    code = guide.block(GUIDE_HEADING) + (
        "\nmodel, evaluation = await train_segmentation_model()\n"
        "rfm = PredictiveEngine().create_rfm_features(\n"
        "    await PredictiveEngine().load_customer_data(feature_window='12M'))\n"
    )
    namespace: dict[str, Any] = {}
    guide.run(code, namespace)
    model, evaluation, rfm = namespace["model"], namespace["evaluation"], namespace["rfm"]

    assert isinstance(model, TrainingResult)
    assert (model.model_type, model.algorithm) == ("customer_segmentation", "kmeans")
    assert model.hyperparameters["n_clusters"] == 5 and model.model.n_clusters_ == 5
    assert list(model.model.feature_names_in_) == [
        "recency_days",
        "frequency_orders",
        "monetary_total",
    ]
    assert list(evaluation) == ["silhouette_score", "calinski_harabasz_score"]

    # Better than assigning the same customers to five segments at random.
    points = model.model.transform(rfm)
    labels = np.random.default_rng(0).integers(0, 5, len(rfm))
    assert evaluation["silhouette_score"] > _metrics.silhouette_score(points, labels) + 0.2
    assert evaluation["calinski_harabasz_score"] > 10 * _metrics.calinski_harabasz_score(
        points, labels
    )


def test_the_engines_methods_are_coroutines_where_the_guide_awaits() -> None:
    awaited = (
        "load_sales_data",
        "train_forecast_model",
        "validate_model",
        "load_customer_data",
        "train_segmentation_model",
    )
    for name in awaited:
        assert inspect.iscoroutinefunction(getattr(PredictiveEngine, name)), name
    for name in ("engineer_features", "create_rfm_features", "evaluate_segmentation"):
        assert not inspect.iscoroutinefunction(getattr(PredictiveEngine, name)), name


# --------------------------------------------------------------------------- sales data


def test_load_sales_data_is_the_daily_net_sales_of_product_lines(
    silver: Settings, silver_lines: pd.DataFrame
) -> None:
    sales = run(PredictiveEngine().load_sales_data("2023-03-01", "2023-03-31"))

    assert list(sales.columns) == ["series_id", "date", "sales_amount", "quantity", "n_invoices"]
    assert set(sales["series_id"]) == {"total"}
    assert sales["date"].is_monotonic_increasing and sales["date"].is_unique
    assert sales["date"].min() >= pd.Timestamp("2023-03-01")
    assert sales["date"].max() <= pd.Timestamp("2023-03-31")  # both bounds inclusive
    assert isinstance(sales.attrs.get("data_version"), str)

    lines = _product_lines(silver_lines)
    day = lines["invoice_date"].dt.normalize()
    lines = lines[(day >= "2023-03-01") & (day <= "2023-03-31")].assign(day=day)
    purchase = ~lines["is_cancellation"] & (lines["quantity"] > 0)
    expected = lines.groupby("day").agg(
        sales_amount=("total_amount", "sum"), quantity=("quantity", "sum")
    )
    expected["n_invoices"] = (
        lines[purchase].groupby("day")["invoice_no"].nunique().reindex(expected.index).fillna(0)
    )
    got = sales.set_index("date")
    assert list(got.index) == list(expected.index)
    assert np.allclose(got["sales_amount"], expected["sales_amount"])
    assert (got["quantity"].to_numpy() == expected["quantity"].to_numpy()).all()
    assert (got["n_invoices"].to_numpy() == expected["n_invoices"].to_numpy()).all()
    assert (lines["is_cancellation"]).any()  # the net includes cancellations


def test_load_sales_data_levels_add_up_to_the_total(silver: Settings) -> None:
    engine = PredictiveEngine()
    window = {"start_date": "2023-06-01", "end_date": dt.date(2023, 6, 30)}
    total = run(engine.load_sales_data(**window)).set_index("date")["sales_amount"]
    for level, prefix in (("country", "country:"), ("product", "product:")):
        panel = run(engine.load_sales_data(**window, level=level))
        assert panel["series_id"].str.startswith(prefix).all()
        assert panel["series_id"].nunique() > 1
        assert not panel.duplicated(["series_id", "date"]).any()
        by_day = panel.groupby("date")["sales_amount"].sum()
        assert np.allclose(by_day.reindex(total.index), total)


def test_load_sales_data_without_silver_says_to_ingest(settings: Settings) -> None:
    with pytest.raises(NotFoundError, match="retailml data ingest"):
        run(PredictiveEngine(settings).load_sales_data())


def test_a_range_without_sales_names_the_available_range(
    silver: Settings, silver_lines: pd.DataFrame
) -> None:
    first = silver_lines["invoice_date"].min()
    last = silver_lines["invoice_date"].max()
    with pytest.raises(DataValidationError) as caught:
        run(PredictiveEngine().load_sales_data("2030-01-01", "2030-12-31"))
    message = str(caught.value)
    assert "2030-01-01 .. 2030-12-31" in message
    assert f"{first:%Y-%m-%d} .. {last:%Y-%m-%d}" in message


@pytest.mark.parametrize(
    "arguments",
    [
        {"level": "store"},
        {"start_date": "not a date"},
        {"start_date": 20220101},
        {"start_date": "2023-02-01", "end_date": "2023-01-01"},
    ],
)
def test_load_sales_data_rejects_bad_arguments(
    settings: Settings, arguments: dict[str, Any]
) -> None:
    with pytest.raises(ConfigError):
        run(PredictiveEngine(settings).load_sales_data(**arguments))


# --------------------------------------------------------------------------- features


def _panel(days: int = 120, seed: int = 0) -> pd.DataFrame:
    """Two daily series with a few missing days, from 2023-10-01."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2023-10-01", periods=days, freq="D")
    frames = []
    for series in ("total", "country:Germany"):
        keep = rng.random(days) > 0.15
        frames.append(
            pd.DataFrame(
                {
                    "series_id": series,
                    "date": dates[keep],
                    "sales_amount": rng.gamma(2.0, 100.0, int(keep.sum())),
                    "quantity": rng.integers(1, 50, int(keep.sum())),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_engineer_features_adds_the_columns_of_each_set(settings: Settings) -> None:
    panel = _panel()
    features = PredictiveEngine(settings).engineer_features(panel)

    added = [c.format(target="sales_amount") for cols in FEATURE_SETS.values() for c in cols]
    assert list(features.columns) == [*panel.columns, *added]
    pd.testing.assert_frame_equal(features[panel.columns], panel)  # rows and inputs kept
    assert len(added) == 19

    total = features[features["series_id"] == "total"].set_index("date")
    dates = total.index
    assert (total["year"] == dates.year).all() and (total["quarter"] == dates.quarter).all()
    assert (total["day_of_week"] == dates.dayofweek).all()  # 0 = Monday
    assert (total["is_weekend"] == (dates.dayofweek >= 5)).all()
    assert total["day_of_year_sin"].between(-1, 1).all()
    assert np.allclose(total["month_sin"] ** 2 + total["month_cos"] ** 2, 1.0)
    assert (total["time_index"] == (dates - pd.Timestamp("1970-01-01")).days).all()
    next_christmas = [
        pd.Timestamp(d.year + (d > pd.Timestamp(d.year, 12, 25)), 12, 25) for d in dates
    ]
    assert (total["days_to_christmas"] == (pd.DatetimeIndex(next_christmas) - dates).days).all()

    calendar = PredictiveEngine(settings).engineer_features(
        pd.DataFrame(
            {
                "series_id": ["total", "total", "total", "total"],
                "date": pd.to_datetime(["2023-05-08", "2023-05-09", "2023-11-24", "2023-12-26"]),
                "sales_amount": [1.0, 2.0, 3.0, 4.0],
            }
        ),
        feature_sets=["temporal", "external"],
    )
    assert calendar["is_holiday"].tolist() == [True, False, False, True]  # UK bank holidays
    assert calendar["days_to_holiday"].tolist() == [0, 20, 31, 0]
    assert calendar["days_since_holiday"].tolist() == [0, 1, 179, 0]
    assert calendar["is_black_friday"].tolist() == [False, False, True, False]


def test_each_country_series_uses_its_own_holidays(settings: Settings) -> None:
    frame = pd.DataFrame(
        {
            "series_id": ["total", "country:Germany", "country:United Kingdom", "country:Nowhere"],
            "date": pd.Timestamp("2023-10-03"),  # German Unity Day
            "sales_amount": 1.0,
        }
    )
    features = PredictiveEngine(settings).engineer_features(frame, ["temporal", "external"])
    assert features["is_holiday"].tolist() == [False, True, False, False]
    assert features["days_to_holiday"].isna().tolist() == [False, False, False, True]
    german = PredictiveEngine(settings).engineer_features(frame, ["temporal"], holiday_country="DE")
    assert german["is_holiday"].tolist()[0] is True


def test_trend_features_only_use_the_days_before(settings: Settings) -> None:
    engine = PredictiveEngine(settings)
    panel = _panel(days=90, seed=1)
    features = engine.engineer_features(panel, ["trend"])

    for series, rows in features.groupby("series_id"):
        daily = rows.set_index("date")["sales_amount"]
        calendar = daily.reindex(pd.date_range(daily.index.min(), daily.index.max()), fill_value=0)
        for window in (7, 28):
            expected = calendar.shift(1).rolling(window).mean().reindex(daily.index)
            got = rows.set_index("date")[f"sales_amount_mean_{window}d"]
            assert np.allclose(got, expected, equal_nan=True), (series, window)
            assert got.iloc[: min(window, len(got))].isna().sum() >= 1  # no padded history

    # Changing the target on and after a day leaves that day's features alone.
    cut = pd.Timestamp("2023-11-15")
    changed = panel.copy()
    changed.loc[changed["date"] >= cut, "sales_amount"] *= 100
    again = engine.engineer_features(changed, ["trend"])
    upto = features["date"] <= cut
    columns = ["time_index", "sales_amount_mean_7d", "sales_amount_mean_28d"]
    pd.testing.assert_frame_equal(features.loc[upto, columns], again.loc[upto, columns])
    assert not features.loc[~upto, columns].equals(again.loc[~upto, columns])


def test_engineered_features_still_train_a_forecaster(settings: Settings) -> None:
    features = PredictiveEngine(settings).engineer_features(_panel())
    model = SalesForecaster(algorithm="theta", horizon=7).fit(features, target="sales_amount")
    assert len(model.predict()) == 14


def test_engineer_features_rejects_bad_requests(settings: Settings) -> None:
    engine = PredictiveEngine(settings)
    with pytest.raises(ConfigError) as caught:
        engine.engineer_features(_panel(), ["temporal", "weather"])
    for name in ("'weather'", "temporal", "seasonal", "trend", "external"):
        assert name in str(caught.value)
    with pytest.raises(ConfigError):
        engine.engineer_features(_panel(), "temporal")
    doubled = pd.concat([_panel().head(3)] * 2)
    with pytest.raises(DataValidationError, match="one row per series and date"):
        engine.engineer_features(doubled, ["trend"])
    with pytest.raises(DataValidationError, match="date"):
        engine.engineer_features(_panel().drop(columns="date"), ["temporal"])


# --------------------------------------------------------------------------- forecast training


def test_train_forecast_model_maps_the_guide_config(silver: Settings) -> None:
    engine = PredictiveEngine()
    sales = run(engine.load_sales_data("2023-01-01", "2023-06-30"))
    config = {
        "algorithm": "seasonal_naive",
        "holidays": True,
        "horizon": 7,
        "n_splits": 2,
        "model_name": "naive_test",
    }
    result = run(engine.train_forecast_model(data=sales, config=config))
    assert result.model_name == "naive_test" and result.algorithm == "seasonal_naive"
    assert result.hyperparameters["holidays"] == "GB"
    assert result.hyperparameters["horizon"] == 7
    assert len(result.fold_metrics) == 2
    assert config["algorithm"] == "seasonal_naive"  # the caller's dict is left alone

    with pytest.raises(ConfigError, match="'weekly_trend'"):
        run(engine.train_forecast_model(sales, {"algorithm": "theta", "weekly_trend": 3}))
    with pytest.raises(ConfigError, match="validation_strategy"):
        run(engine.train_forecast_model(sales, {"algorithm": "theta"}, "kfold"))


def test_validate_model_scores_every_held_out_row_despite_missing_days(
    silver: Settings,
) -> None:
    engine = PredictiveEngine()
    sales = run(engine.load_sales_data("2023-01-01", "2023-07-28"))
    cut = pd.Timestamp("2023-06-30")
    train, test = sales[sales["date"] <= cut], sales[sales["date"] > cut]
    test = test[~test["date"].between("2023-07-03", "2023-07-05")]  # a gap
    result = run(engine.train_forecast_model(train, {"algorithm": "seasonal_naive", "horizon": 7}))

    scores = run(engine.validate_model(result, test, metrics=["mae", "smape", "mase"]))
    assert list(scores) == ["mae", "smape", "mase"]
    assert scores["mae"] == pytest.approx(_scores(result.model, test)["mae"])
    assert math.isfinite(scores["mase"])  # the engine remembers the training history

    # A forecaster fitted elsewhere: the same errors, MASE unknown without the history.
    outside = SalesForecaster(algorithm="seasonal_naive", horizon=7)
    outside.fit(train, target="sales_amount")
    bare = run(engine.validate_model(outside, test, metrics=["mae", "mase"]))
    assert bare["mae"] == pytest.approx(scores["mae"]) and math.isnan(bare["mase"])
    explicit = run(engine.validate_model(outside, test, ["mase"], history=train))
    assert explicit["mase"] == pytest.approx(scores["mase"])

    with pytest.raises(ConfigError, match="'r2'"):
        run(engine.validate_model(result, test, metrics=["mae", "r2"]))
    with pytest.raises(DataValidationError, match="after the training data"):
        run(engine.validate_model(result, train))


# --------------------------------------------------------------------------- customers


def test_rfm_features_are_the_customer_rfm_rules_over_the_window(
    silver: Settings, silver_lines: pd.DataFrame
) -> None:
    engine = PredictiveEngine()
    customers = run(engine.load_customer_data(feature_window="12M"))
    rfm = engine.create_rfm_features(customers)

    last = silver_lines["invoice_date"].max()
    start = last - pd.DateOffset(months=12)
    lines = _product_lines(silver_lines)
    lines = lines[(lines["invoice_date"] > start) & lines["customer_id"].notna()]
    purchase = lines[~lines["is_cancellation"] & (lines["quantity"] > 0)]
    grouped = purchase.groupby("customer_id")
    expected = pd.DataFrame(
        {
            "recency_days": (last - grouped["invoice_date"].max()).dt.days,
            "frequency_orders": grouped["invoice_no"].nunique(),
            "monetary_total": lines.groupby("customer_id")["total_amount"].sum(),
        }
    ).dropna(subset=["recency_days"])
    got = rfm.set_index("customer_id")
    assert rfm["customer_id"].is_unique
    assert sorted(got.index) == sorted(expected.index)
    expected = expected.loc[got.index]
    assert (got["recency_days"] == expected["recency_days"]).all()
    assert (got["frequency_orders"] == expected["frequency_orders"]).all()
    assert np.allclose(got["monetary_total"], expected["monetary_total"])
    assert rfm.attrs["snapshot"] == last.to_pydatetime()


def test_load_customer_data_windows(silver: Settings, silver_lines: pd.DataFrame) -> None:
    engine = PredictiveEngine()
    last = silver_lines["invoice_date"].max()
    recent = run(engine.load_customer_data("90D"))
    assert recent["invoice_date"].max() == last
    assert recent["invoice_date"].min() > last - pd.Timedelta(days=90)
    year = run(engine.load_customer_data("12M"))
    assert len(run(engine.load_customer_data("1Y"))) == len(year)
    assert len(recent) < len(run(engine.load_customer_data("6M"))) < len(year)
    assert (year["invoice_date"] > last - pd.DateOffset(months=12)).all()
    assert len(year) == int((silver_lines["invoice_date"] > last - pd.DateOffset(years=1)).sum())


@pytest.mark.parametrize("window", ["12X", "0M", "M", "twelve months", 12])
def test_load_customer_data_rejects_bad_windows(settings: Settings, window: Any) -> None:
    with pytest.raises(ConfigError, match="feature_window"):
        run(PredictiveEngine(settings).load_customer_data(window))


def test_segmentation_errors(silver: Settings) -> None:
    engine = PredictiveEngine()
    customers = run(engine.load_customer_data("6M"))
    with pytest.raises(DataValidationError, match="is_cancellation"):
        engine.create_rfm_features(customers.drop(columns="is_cancellation"))
    rfm = engine.create_rfm_features(customers)
    result = run(engine.train_segmentation_model(rfm, {"algorithm": "kmeans", "n_clusters": 3}))
    assert engine.evaluate_segmentation(result, rfm, ["davies_bouldin_score", "n_segments"]) == {
        "davies_bouldin_score": pytest.approx(_db(result, rfm)),
        "n_segments": 3.0,
    }
    with pytest.raises(ConfigError, match="'inertia'"):
        engine.evaluate_segmentation(result, rfm, ["silhouette_score", "inertia"])
    with pytest.raises(ConfigError, match="clusters"):
        run(engine.train_segmentation_model(rfm, {"algorithm": "kmeans", "clusters": 3}))
    with pytest.raises(ConfigError, match="customer_segmentation"):
        run(engine.validate_model(result, rfm))


def _db(result: TrainingResult, rfm: pd.DataFrame) -> float:
    points = result.model.transform(rfm)
    return _metrics.davies_bouldin_score(points, result.model.predict(rfm))
