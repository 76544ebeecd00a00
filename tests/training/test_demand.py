"""Demand prediction on the generator's daily sales per product."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from retailml.core.errors import DataValidationError
from retailml.data.generate import GeneratorConfig, generate_transactions
from retailml.data.schema import NON_PRODUCT_CODES
from retailml.feature_engineering.feature_pipeline import FEATURE_SETS
from retailml.training._demand import DemandPredictor, demand_features
from retailml.training._registry import ALGORITHMS

PREDICTORS = list(ALGORITHMS["demand_prediction"])
HOLDOUT_DAYS = 90
KEYS = ["series_id", "level", "date"]
#: Tests that train the network for a few epochs on purpose.
FEW_EPOCHS = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _daily_sales(rows: int, seed: int, n_products: int) -> pd.DataFrame:
    """Daily net sales per product shaped like the ``daily_sales`` feature set (pandas)."""
    lines = generate_transactions(
        GeneratorConfig(rows=rows, seed=seed, n_products=n_products)
    ).to_pandas()
    lines = lines.loc[
        ~lines["StockCode"].isin(NON_PRODUCT_CODES) & ~lines["InvoiceNo"].str.startswith("A")
    ]
    purchase = ~lines["InvoiceNo"].str.startswith("C") & (lines["Quantity"] > 0)
    daily = (
        lines.assign(
            series_id="product:" + lines["StockCode"],
            date=lines["InvoiceDate"].dt.normalize(),
            sales_amount=lines["Quantity"] * lines["UnitPrice"],
            purchase_invoice=lines["InvoiceNo"].where(purchase),
        )
        .groupby(["series_id", "date"], as_index=False)
        .agg(
            sales_amount=("sales_amount", "sum"),
            quantity=("Quantity", "sum"),
            n_invoices=("purchase_invoice", "nunique"),
        )
    )
    daily.insert(1, "level", "product")
    return daily


@pytest.fixture(scope="module")
def daily() -> pd.DataFrame:
    """The 20 best-selling of 60 products over two years (days without sales omitted)."""
    frame = _daily_sales(rows=200_000, seed=21, n_products=60)
    top = frame.groupby("series_id")["quantity"].sum().nlargest(20).index
    return frame.loc[frame["series_id"].isin(top)].reset_index(drop=True)


@pytest.fixture(scope="module")
def split(daily: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Time-ordered: the last 90 days are the holdout."""
    frame = demand_features(daily)
    cut = frame["date"].max() - pd.Timedelta(days=HOLDOUT_DAYS)
    return frame.loc[frame["date"] <= cut], frame.loc[frame["date"] > cut]


def test_daily_sales_shape_matches_the_feature_set(daily: pd.DataFrame) -> None:
    columns = set(FEATURE_SETS["daily_sales"].column_names)
    assert set(daily.columns) <= columns


@pytest.mark.parametrize("algorithm", PREDICTORS)
def test_every_algorithm_beats_naive_forecasts_on_a_time_ordered_holdout(
    algorithm: str, split: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    train, test = split
    actual = test["quantity"].to_numpy()

    def mae(predicted: pd.Series[float] | np.ndarray[tuple[int], np.dtype[np.float64]]) -> float:
        return float(np.mean(np.abs(actual - np.asarray(predicted, dtype=float))))

    last_value = mae(test["quantity_lag_1"].fillna(0.0))
    seasonal_naive = mae(test["quantity_lag_7"].fillna(0.0))  # same weekday last week
    model = DemandPredictor(algorithm=algorithm).fit(train)
    assert model.feature_names_in_.tolist()[:2] == ["series_id", "level"]  # date left out
    assert mae(model.predict(test)) < 0.95 * min(last_value, seasonal_naive)


def test_features_never_see_the_day_they_describe(daily: pd.DataFrame) -> None:
    series = daily["series_id"].iloc[0]
    day = daily.loc[daily["series_id"] == series, "date"].iloc[60]
    before = demand_features(daily)
    changed = daily.copy()
    at = (changed["series_id"] == series) & (changed["date"] == day)
    changed.loc[at, ["quantity", "sales_amount"]] *= 50
    after = demand_features(changed)

    features = [c for c in before.columns if c not in (*KEYS, "quantity")]
    upto = before["date"] <= day
    pd.testing.assert_frame_equal(before.loc[upto, features], after.loc[upto, features])
    row = (after["series_id"] == series) & (after["date"] == day + pd.Timedelta(days=1))
    assert not np.isclose(
        before.loc[row, "quantity_lag_1"].item(), after.loc[row, "quantity_lag_1"].item()
    )


def test_days_without_sales_are_zero_demand_and_lags_count_days() -> None:
    daily = pd.DataFrame(
        {
            "series_id": ["product:A", "product:A", "product:B"],
            "date": pd.to_datetime(["2023-01-02", "2023-01-05", "2023-01-04"]),
            "sales_amount": [10.0, 20.0, 3.0],
            "quantity": [5, 10, 1],
            "n_invoices": [1, 2, 1],
        }
    )
    frame = demand_features(daily, lags=(1, 3), windows=(2,))
    a = frame.loc[frame["series_id"] == "product:A"]
    assert a["date"].dt.day.tolist() == [2, 3, 4, 5]
    assert a["quantity"].tolist() == [5, 0, 0, 10]
    assert a["quantity_lag_3"].tolist()[-1] == 5  # three days back, not three rows
    assert a["quantity_mean_2"].tolist()[-1] == 0  # the two days before the 5th
    assert a["price_lag_1"].tolist() == [pytest.approx(v, nan_ok=True) for v in [np.nan, 2, 2, 2]]
    b = frame.loc[frame["series_id"] == "product:B"]
    assert b["date"].dt.day.tolist() == [4, 5]  # from its first sale to the data's last day
    assert {"sales_amount", "n_invoices"}.isdisjoint(frame.columns)  # same-day leakage


def test_demand_features_check_their_input() -> None:
    with pytest.raises(DataValidationError, match=r"no 'quantity'"):
        demand_features(pd.DataFrame({"series_id": ["a"], "date": ["2023-01-01"]}))
    with pytest.raises(DataValidationError, match=r"lags=\(1, 7, 14, 28\)"):
        demand_features(
            pd.DataFrame({"series_id": ["a"], "date": ["2023-01-01"], "quantity": [1]}), lags=(0,)
        )


@pytest.mark.parametrize("algorithm", ["random_forest", "xgboost"])
def test_tree_models_report_importances_by_input_feature(
    algorithm: str, split: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    train, _ = split
    model = DemandPredictor(algorithm=algorithm, n_estimators=30).fit(train.tail(3_000))
    importances = model.feature_importances_
    assert importances.index.tolist() == model.feature_names_in_.tolist()
    assert importances.sum() == pytest.approx(1.0, abs=1e-4)
    assert importances.idxmax().startswith("quantity_")


@FEW_EPOCHS
def test_the_neural_network_has_no_importances(split: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, _ = split
    model = DemandPredictor(algorithm="neural_network", max_iter=5).fit(train.tail(2_000))
    assert not hasattr(model, "feature_importances_")


@FEW_EPOCHS
@pytest.mark.parametrize("algorithm", PREDICTORS)
def test_unseen_products_still_get_a_prediction(
    algorithm: str, split: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    train, test = split
    model = DemandPredictor(algorithm=algorithm, n_estimators=20, max_iter=20)
    model.fit(train.tail(3_000))
    new = test.head(5).assign(series_id="product:NEW")
    assert np.isfinite(model.predict(new)).all()


def test_y_can_be_given_apart_from_x_and_the_target_is_never_a_feature(
    split: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, _ = split
    sample = train.tail(1_000)
    model = DemandPredictor(n_estimators=10).fit(
        sample.drop(columns="quantity"), sample["quantity"]
    )
    assert "quantity" not in model.feature_names_in_
    with pytest.raises(DataValidationError, match="leave 'quantity' out of features"):
        DemandPredictor(features=["quantity", "quantity_lag_1"]).fit(sample)
    with pytest.raises(DataValidationError, match="missing or infinite"):
        DemandPredictor().fit(sample.drop(columns="quantity"), np.full(len(sample), np.nan))
