"""Specification of the synthetic transaction generator (retailml.data.generate)."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import holidays
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from retailml.core.errors import ConfigError
from retailml.data.generate import (
    DriftSpec,
    GeneratorConfig,
    generate_transactions,
    write_transactions,
)
from retailml.data.schema import NON_PRODUCT_CODES, UCI_HEADERS

ROWS = 200_000
DRIFT_START = datetime.date(2023, 1, 1)
PRICE_SHIFT = 0.25
ANOMALY_RATE = 0.01


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return generate_transactions(GeneratorConfig(rows=ROWS, seed=7))


@pytest.fixture(scope="module")
def df(table: pa.Table) -> pd.DataFrame:
    frame: pd.DataFrame = table.to_pandas()
    return frame


@pytest.fixture(scope="module")
def sales(df: pd.DataFrame) -> pd.DataFrame:
    """Ordinary sale lines: products, positive quantity and price, no C/A prefix."""
    keep = (
        ~df.InvoiceNo.str.startswith(("C", "A"))
        & (df.Quantity > 0)
        & (df.UnitPrice > 0)
        & ~df.StockCode.isin(NON_PRODUCT_CODES)
    )
    return df[keep]


@pytest.fixture(scope="module")
def drifted() -> pd.DataFrame:
    drift = DriftSpec(
        start=DRIFT_START, price_shift=PRICE_SHIFT, product_mix_shift=0.3, new_country="Brazil"
    )
    config = GeneratorConfig(rows=100_000, seed=11, drift=drift, anomaly_rate=ANOMALY_RATE)
    frame: pd.DataFrame = generate_transactions(config).to_pandas()
    return frame


def _is_cancellation(df: pd.DataFrame) -> pd.Series:
    return df.InvoiceNo.str.startswith("C")


# --- shape and determinism -----------------------------------------------------------------


def test_columns_are_the_uci_headers_in_order_with_their_types(table: pa.Table) -> None:
    assert table.column_names == list(UCI_HEADERS.values())
    types = dict(zip(table.column_names, table.schema.types, strict=True))
    assert types["InvoiceNo"] == pa.string()
    assert types["StockCode"] == pa.string()
    assert types["Description"] == pa.string()
    assert types["Quantity"] == pa.int64()
    assert types["InvoiceDate"] == pa.timestamp("us")
    assert types["UnitPrice"] == pa.float64()
    assert types["CustomerID"] == pa.string()
    assert types["Country"] == pa.string()


@pytest.mark.parametrize("rows", [1, 2, 10, 999, 1_000, 12_345])
def test_generates_exactly_the_requested_number_of_rows(rows: int) -> None:
    assert generate_transactions(GeneratorConfig(rows=rows, seed=3)).num_rows == rows


def test_progress_calls_add_up_to_the_row_count() -> None:
    calls: list[int] = []
    generate_transactions(GeneratorConfig(rows=30_000, seed=1), progress=calls.append)
    assert sum(calls) == 30_000
    assert len(calls) > 2
    assert all(k > 0 for k in calls)


def test_the_same_seed_gives_an_identical_table(table: pa.Table) -> None:
    again = generate_transactions(GeneratorConfig(rows=ROWS, seed=7))
    assert again.equals(table)


def test_different_seeds_give_different_tables() -> None:
    one = generate_transactions(GeneratorConfig(rows=5_000, seed=1))
    two = generate_transactions(GeneratorConfig(rows=5_000, seed=2))
    assert not one.equals(two)


def test_rows_are_ordered_by_invoice_number_which_grows_with_time(df: pd.DataFrame) -> None:
    number = df.InvoiceNo.str.lstrip("CA").astype(int)
    assert number.is_monotonic_increasing
    assert df.InvoiceDate.is_monotonic_increasing
    assert number.iloc[0] == 536_365
    assert df.InvoiceNo.str.fullmatch(r"[CA]?\d{6}").all()


# --- customers and guests ------------------------------------------------------------------


def test_about_a_quarter_of_rows_have_no_customer_id(df: pd.DataFrame) -> None:
    assert 0.20 <= df.CustomerID.isna().mean() <= 0.30


def test_guest_invoices_have_no_customer_on_any_line(df: pd.DataFrame) -> None:
    ids_per_invoice = df.CustomerID.fillna("guest").groupby(df.InvoiceNo).nunique()
    assert (ids_per_invoice == 1).all()


def test_customer_ids_are_integer_like(df: pd.DataFrame) -> None:
    assert df.CustomerID.dropna().str.fullmatch(r"\d{5,6}").all()


def test_each_customer_has_one_country(df: pd.DataFrame) -> None:
    assert (df.dropna(subset=["CustomerID"]).groupby("CustomerID").Country.nunique() == 1).all()


def test_customer_order_counts_are_heavy_tailed(sales: pd.DataFrame) -> None:
    orders = sales.dropna(subset=["CustomerID"]).groupby("CustomerID").InvoiceNo.nunique()
    assert orders.max() >= 10 * orders.median()
    assert (orders == 1).mean() >= 0.2  # many one-off buyers


def test_a_few_wholesalers_buy_far_larger_quantities(sales: pd.DataFrame) -> None:
    per_customer = sales.dropna(subset=["CustomerID"]).groupby("CustomerID").Quantity.median()
    assert per_customer.quantile(0.99) >= 5 * per_customer.median()


def test_the_uk_dominates_among_at_least_30_countries(df: pd.DataFrame) -> None:
    assert 0.80 <= (df.Country == "United Kingdom").mean() <= 0.95
    assert df.Country.nunique() >= 30


# --- dirty rows ----------------------------------------------------------------------------


def test_about_1_7_percent_of_rows_are_cancellations(df: pd.DataFrame) -> None:
    cancellations = df[_is_cancellation(df)]
    assert 0.012 <= len(cancellations) / len(df) <= 0.022
    assert (cancellations.Quantity < 0).all()
    assert cancellations.CustomerID.notna().mean() > 0.95


def test_cancellations_mirror_an_earlier_sale_of_the_same_customer(df: pd.DataFrame) -> None:
    mirrors = df[_is_cancellation(df) & ~df.StockCode.isin(["D", "AMAZONFEE"])]
    sold = df[~_is_cancellation(df) & (df.Quantity > 0)]
    keys = ["CustomerID", "StockCode", "UnitPrice"]
    matched = (
        mirrors.assign(Quantity=-mirrors.Quantity)
        .reset_index()
        .merge(sold, on=[*keys, "Quantity"], suffixes=("", "_sale"))
    )
    earlier = matched[matched.InvoiceDate_sale < matched.InvoiceDate]
    assert earlier["index"].nunique() == len(mirrors)


def test_other_returns_have_no_c_prefix_zero_price_and_no_customer(df: pd.DataFrame) -> None:
    returns = df[(df.Quantity < 0) & ~_is_cancellation(df)]
    assert len(returns) > 100
    assert (returns.UnitPrice == 0).all()
    assert returns.CustomerID.isna().all()
    assert returns.Description.isna().any()
    assert returns.Description.isin(["damaged", "?"]).any()


def test_about_one_percent_of_rows_are_exact_duplicates(df: pd.DataFrame) -> None:
    assert 0.007 <= df.duplicated().mean() <= 0.013


@pytest.mark.parametrize(
    ("code", "description"),
    [
        ("POST", "POSTAGE"),
        ("D", "Discount"),
        ("M", "Manual"),
        ("BANK CHARGES", "Bank Charges"),
        ("AMAZONFEE", "AMAZON FEE"),
        ("B", "Adjust bad debt"),
    ],
)
def test_non_product_codes_are_present_with_uci_descriptions(
    df: pd.DataFrame, code: str, description: str
) -> None:
    rows = df[df.StockCode == code]
    assert code in NON_PRODUCT_CODES
    assert len(rows) > 0
    assert (rows.Description == description).all()


def test_postage_is_charged_mostly_to_foreign_customers(df: pd.DataFrame) -> None:
    postage = df[(df.StockCode == "POST") & ~_is_cancellation(df)]
    assert (postage.Country != "United Kingdom").mean() > 0.8


def test_discounts_are_cancellations_with_negative_quantity(df: pd.DataFrame) -> None:
    discounts = df[df.StockCode == "D"]
    assert _is_cancellation(discounts).all()
    assert (discounts.Quantity < 0).all()


def test_amazon_fees_are_large(df: pd.DataFrame) -> None:
    assert (df[df.StockCode == "AMAZONFEE"].UnitPrice > 500).all()


def test_bad_debt_adjustments_have_an_a_prefix_and_negative_price(df: pd.DataFrame) -> None:
    adjustments = df[df.InvoiceNo.str.startswith("A")]
    assert len(adjustments) > 0
    assert (adjustments.StockCode == "B").all()
    assert (adjustments.UnitPrice < 0).all()
    assert (adjustments.Quantity == 1).all()
    assert adjustments.CustomerID.isna().all()


def test_some_rows_have_zero_price_and_some_no_description(df: pd.DataFrame) -> None:
    assert (df.UnitPrice == 0).sum() > 0
    assert df.Description.isna().sum() > 0
    assert (df[df.Description.isna()].UnitPrice == 0).all()


def test_an_extreme_order_is_cancelled_by_the_same_customer_minutes_later(
    df: pd.DataFrame,
) -> None:
    huge = df[df.Quantity.abs() >= 10_000]
    sale = huge[huge.Quantity > 0].iloc[0]
    cancel = huge[huge.Quantity == -sale.Quantity].iloc[0]
    assert cancel.InvoiceNo.startswith("C")
    assert (cancel.CustomerID, cancel.StockCode, cancel.UnitPrice) == (
        sale.CustomerID,
        sale.StockCode,
        sale.UnitPrice,
    )
    assert datetime.timedelta(0) < cancel.InvoiceDate - sale.InvoiceDate <= pd.Timedelta(hours=1)


# --- catalog -------------------------------------------------------------------------------


def test_stock_codes_and_descriptions_look_like_uci(sales: pd.DataFrame) -> None:
    assert sales.StockCode.str.fullmatch(r"\d{5}[A-Z]?").all()
    assert sales.StockCode.str.fullmatch(r"\d{5}[A-Z]").any()
    assert sales.Description.str.fullmatch(r"[A-Z0-9][A-Z0-9 \-]+").all()
    assert (sales.groupby("StockCode").Description.nunique() == 1).all()


def test_most_prices_are_between_0_4_and_15(sales: pd.DataFrame) -> None:
    assert sales.UnitPrice.between(0.4, 15).mean() > 0.85


def test_invoices_have_about_twenty_lines_with_a_heavy_tail(df: pd.DataFrame) -> None:
    lines = df.groupby("InvoiceNo").size()
    assert 12 <= lines.mean() <= 30
    assert lines.max() >= 10 * lines.median()


def test_product_popularity_is_zipf_like(sales: pd.DataFrame) -> None:
    lines = sales.StockCode.value_counts()
    top = lines.iloc[: max(1, len(lines) // 100)].sum() / lines.sum()
    assert top >= 0.08  # the top 1 % of products take 8x their uniform share


def test_new_products_launch_during_the_period(sales: pd.DataFrame) -> None:
    stats = sales.groupby("StockCode").InvoiceDate.agg(["min", "size"])
    steady = stats[stats["size"] >= 20]
    first_quarter_end = pd.Timestamp("2022-07-01")
    # A product on sale from the start with 20+ lines almost surely sells in the first
    # six months; launches are the only way to miss them.
    assert (steady["min"] >= first_quarter_end).mean() >= 0.05


def test_prices_change_over_time_for_some_products(sales: pd.DataFrame) -> None:
    guests = sales.CustomerID.isna()
    prices = sales[~guests].groupby("StockCode").UnitPrice.nunique()
    assert (prices >= 2).mean() >= 0.2


# --- calendar ------------------------------------------------------------------------------


def test_invoices_fall_in_opening_hours(df: pd.DataFrame) -> None:
    assert df.InvoiceDate.dt.hour.between(7, 20).all()


def test_november_is_the_peak_month(df: pd.DataFrame) -> None:
    monthly = df.groupby(df.InvoiceDate.dt.strftime("%Y-%m")).size()
    november = monthly[monthly.index.str.endswith("-11")]
    assert november.mean() > 1.2 * monthly.mean()


def test_there_is_almost_no_saturday_trading(df: pd.DataFrame) -> None:
    assert (df.InvoiceDate.dt.dayofweek == 5).mean() < 0.02


def test_sales_trend_upward(df: pd.DataFrame) -> None:
    yearly = df.groupby(df.InvoiceDate.dt.year).size()
    assert yearly[2023] > yearly[2022]


def test_christmas_day_has_almost_no_sales(df: pd.DataFrame) -> None:
    per_day = df.groupby(df.InvoiceDate.dt.date).size()
    christmas = [datetime.date(2022, 12, 25), datetime.date(2023, 12, 25)]
    assert per_day.reindex(christmas, fill_value=0).max() < 0.02 * per_day.mean()


def test_uk_public_holidays_have_far_fewer_sales(df: pd.DataFrame) -> None:
    uk = df[df.Country == "United Kingdom"]
    days = pd.Series(pd.date_range("2022-01-01", "2023-12-31"))
    per_day = uk.groupby(uk.InvoiceDate.dt.normalize()).size().reindex(days, fill_value=0)
    per_day.index = days
    bank_holidays = holidays.country_holidays("GB", years=[2022, 2023])
    is_holiday = days.dt.date.isin(list(bank_holidays)).to_numpy()
    weekday = (days.dt.dayofweek < 5).to_numpy()
    outside_christmas = ~((days.dt.month == 12) & (days.dt.day >= 20)).to_numpy()
    outside_christmas &= ~((days.dt.month == 1) & (days.dt.day <= 3)).to_numpy()
    holiday_rate = per_day[is_holiday & weekday & outside_christmas].mean()
    normal_rate = per_day[~is_holiday & weekday & outside_christmas].mean()
    assert holiday_rate < 0.3 * normal_rate


# --- drift and anomalies -------------------------------------------------------------------


def _after(df: pd.DataFrame) -> pd.Series:
    return df.InvoiceDate >= pd.Timestamp(DRIFT_START)


def test_drift_raises_prices_of_the_same_products_by_the_shift(drifted: pd.DataFrame) -> None:
    sold = drifted[
        ~drifted.InvoiceNo.str.startswith(("C", "A"))
        & (drifted.UnitPrice > 0)
        & ~drifted.StockCode.isin(NON_PRODUCT_CODES)
        & ~drifted.is_anomaly
    ]
    after = _after(sold)
    before_price = sold[~after].groupby("StockCode").UnitPrice.median()
    after_price = sold[after].groupby("StockCode").UnitPrice.median()
    ratio = (after_price / before_price).dropna()
    assert len(ratio) > 200
    assert ratio.median() == pytest.approx(1 + PRICE_SHIFT, abs=0.05)


def test_drift_moves_demand_to_previously_unpopular_products(drifted: pd.DataFrame) -> None:
    sold = drifted[~drifted.InvoiceNo.str.startswith(("C", "A")) & (drifted.Quantity > 0)]
    after = _after(sold)
    ranking = sold[~after].StockCode.value_counts()
    popular = set(ranking.index[: len(ranking) // 2])
    unpopular_before = (~sold[~after].StockCode.isin(popular)).mean()
    unpopular_after = (~sold[after].StockCode.isin(popular)).mean()
    assert unpopular_after > unpopular_before + 0.15


def test_the_new_country_buys_only_after_drift_start_with_a_real_share(
    drifted: pd.DataFrame,
) -> None:
    brazil = drifted.Country == "Brazil"
    assert not (brazil & ~_after(drifted)).any()
    invoices_after = drifted[_after(drifted)].groupby("InvoiceNo").Country.first()
    assert (invoices_after == "Brazil").mean() >= 0.03


def test_anomalies_are_labelled_at_the_requested_rate(drifted: pd.DataFrame) -> None:
    assert drifted.is_anomaly.dtype == bool
    assert drifted.is_anomaly.mean() == pytest.approx(ANOMALY_RATE, rel=0.05)


def test_anomalies_have_extreme_quantities_or_prices(drifted: pd.DataFrame) -> None:
    normal = drifted[~drifted.is_anomaly & (drifted.Quantity > 0) & (drifted.UnitPrice > 0)]
    anomalies = drifted[drifted.is_anomaly]
    quantity_ratio = anomalies.Quantity / anomalies.StockCode.map(
        normal.groupby("StockCode").Quantity.median()
    )
    price_ratio = anomalies.UnitPrice / anomalies.StockCode.map(
        normal.groupby("StockCode").UnitPrice.median()
    )
    assert ((quantity_ratio >= 10) | (price_ratio >= 5)).mean() > 0.97
    assert (quantity_ratio >= 10).mean() > 0.4


def test_there_is_no_anomaly_column_without_anomalies(table: pa.Table) -> None:
    assert "is_anomaly" not in table.column_names


# --- writing -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small() -> pa.Table:
    return generate_transactions(GeneratorConfig(rows=2_000, seed=5, anomaly_rate=0.01))


def test_parquet_round_trips(small: pa.Table, tmp_path: Path) -> None:
    path = write_transactions(small, tmp_path / "nested" / "dir" / "tx.parquet")
    assert pq.read_table(path).equals(small.combine_chunks())


def test_csv_has_the_uci_header_and_plain_dates(small: pa.Table, tmp_path: Path) -> None:
    path = write_transactions(small, tmp_path / "tx.csv")
    header, first = path.read_text(encoding="utf-8").splitlines()[:2]
    assert header.replace('"', "").split(",") == [*UCI_HEADERS.values(), "is_anomaly"]
    assert re.search(r",\"?\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\"?,", first)
    back = pacsv.read_csv(path)
    assert back.num_rows == small.num_rows
    assert back.column("Quantity").to_pylist() == small.column("Quantity").to_pylist()


def test_writing_to_an_unknown_extension_is_refused(small: pa.Table, tmp_path: Path) -> None:
    refused = r"output: expected a file ending in \.csv or \.parquet; got '\.xlsx'"
    with pytest.raises(ConfigError, match=refused):
        write_transactions(small, tmp_path / "tx.xlsx")
    assert list(tmp_path.iterdir()) == []


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rows": 0}, r"rows: expected an integer >= 1 .*; got 0"),
        ({"rows": True}, r"rows: expected an integer >= 1 .*; got True"),
        ({"anomaly_rate": 2}, r"anomaly_rate: expected a share between 0 and 0\.5 .*; got 2"),
        (
            {"start": datetime.date(2023, 1, 1), "end": datetime.date(2022, 1, 1)},
            r"end: expected an end on or after start 2023-01-01; got end '2022-01-01'",
        ),
        ({"seed": -1}, r"seed: expected an integer >= 0; got -1"),
        ({"n_products": 0}, r"n_products: expected None or an integer between 1 and"),
        (
            {"drift": DriftSpec(start=datetime.date(2030, 1, 1))},
            r"drift\.start: expected a drift start between 2022-01-01 and 2023-12-31",
        ),
    ],
)
def test_invalid_configs_are_refused_with_expected_and_got(
    changes: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {"rows": 100, **changes}
    with pytest.raises(ConfigError, match=message):
        GeneratorConfig(**arguments)  # type: ignore[arg-type]


def test_every_config_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError, match=r"3 problems") as error:
        GeneratorConfig(rows=0, anomaly_rate=-1, seed=-5)
    assert "rows:" in str(error.value)
    assert "anomaly_rate:" in str(error.value)
    assert "Fix:" in str(error.value)


def test_invalid_drift_specs_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"drift\.product_mix_shift: expected a share"):
        DriftSpec(start=DRIFT_START, product_mix_shift=1.5)
    with pytest.raises(ConfigError, match=r"drift\.new_country: expected .* got 'United"):
        DriftSpec(start=DRIFT_START, new_country="United Kingdom")


def test_customer_and_product_counts_scale_with_rows() -> None:
    uci_size = GeneratorConfig(rows=540_000)
    assert uci_size.customer_count == 4_400
    assert uci_size.product_count == 4_000
    assert GeneratorConfig(rows=100_000_000).customer_count == 100_000
    assert GeneratorConfig(rows=10, n_customers=3).customer_count == 3
