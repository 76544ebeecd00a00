"""Each feature set's values on hand-made transactions, and agreement with the guide's pandas."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import holidays
import numpy as np
import pandas as pd
import pytest

from retailml.core.settings import Settings, load_settings
from retailml.core.workspace import Workspace
from retailml.feature_engineering._definitions import FEATURE_SETS, holiday_rows
from retailml.feature_engineering._duckdb_engine import DuckDBEngine
from retailml.feature_engineering.feature_pipeline import FeatureEngineeringPipeline

from .helpers import Line, WriteSilver, guide_block, random_lines, write_silver_part

UK = "United Kingdom"

#: Two customers, a cancellation, postage, a customer with only a cancellation,
#: a guest (who holds the data's last date) and an accounting adjustment.
HAND: list[Line] = [
    ("500001", "85123A", 10, "2011-01-10T10:00", 2.0, "12345", UK),  # 20.0
    ("500001", "22423", 5, "2011-01-10T10:00", 4.0, "12345", UK),  # 20.0
    ("500002", "85123A", 4, "2011-03-01T09:00", 2.5, "12345", UK),  # 10.0
    ("500002", "POST", 1, "2011-03-01T09:00", 15.0, "12345", UK),  # postage: not a product
    ("C500003", "85123A", -2, "2011-03-02T12:00", 2.5, "12345", UK),  # -5.0 cancelled
    ("500004", "84879", 1, "2011-03-05T12:00", 30.0, "67890", "France"),  # 30.0
    ("C500006", "22423", -1, "2011-02-01T10:00", 4.0, "11111", UK),  # only a cancellation
    ("500005", "85123A", 100, "2011-03-10T18:00", 1.0, None, UK),  # a guest: 100.0
    ("A500007", "B", 1, "2011-03-03T08:00", -50.0, None, UK),  # adjustment
]


def compute(settings: Settings, name: str, **config: Any) -> pd.DataFrame:
    pipeline = FeatureEngineeringPipeline(
        config={"feature_sets": [name], **config}, settings=settings
    )
    return pipeline.run()[name].table(format="pandas")


def row(frame: pd.DataFrame, **keys: Any) -> dict[str, Any]:
    mask = np.logical_and.reduce([frame[k] == v for k, v in keys.items()])
    found = frame[mask]
    assert len(found) == 1, f"expected one row for {keys}, got {len(found)}"
    record: dict[str, Any] = found.iloc[0].to_dict()
    return record


def assert_values(actual: Mapping[Any, Any], expected: Mapping[str, Any]) -> None:
    for column, value in expected.items():
        got = actual[column]
        if value is None:
            assert pd.isna(got), f"{column}: expected null, got {got!r}"
        elif isinstance(value, float):
            assert got == pytest.approx(value), f"{column}: expected {value}, got {got!r}"
        else:
            assert got == value, f"{column}: expected {value!r}, got {got!r}"


# --------------------------------------------------------------------------- customer_rfm


def test_rfm_matches_hand_computed_values(settings: Settings, write_silver: WriteSilver) -> None:
    write_silver(HAND)
    rfm = compute(settings, "customer_rfm")

    # The guest and the customer with only a cancellation have no row.
    assert sorted(rfm["customer_id"]) == ["12345", "67890"]
    snapshot = pd.Timestamp("2011-03-10 18:00")  # the guest's line: the data's last date
    assert (rfm["event_timestamp"] == snapshot).all()
    assert_values(
        row(rfm, customer_id="12345"),
        {
            "year": 2011,
            "month": 3,
            "recency_days": 9,  # 2011-03-01 09:00 -> 03-10 18:00; the cancellation is no purchase
            "frequency_orders": 2,  # 500001, 500002; C500003 is not an order
            "monetary_total": 45.0,  # 20 + 20 + 10 - 5; postage left out
            "monetary_avg": 11.25,
            "monetary_std": 11.814539065631521,  # sample std of 20, 20, 10, -5
            "order_count": 4,  # lines, the cancellation line included
            "avg_order_value": 22.5,
        },
    )
    assert_values(
        row(rfm, customer_id="67890"),
        {
            "recency_days": 5,  # 5 days 6 hours, floored
            "frequency_orders": 1,
            "monetary_total": 30.0,
            "monetary_avg": 30.0,
            "monetary_std": None,  # one line: undefined, as in pandas
            "order_count": 1,
            "avg_order_value": 30.0,
        },
    )


def test_monthly_rfm_snapshots_see_only_earlier_rows(
    settings: Settings, write_silver: WriteSilver
) -> None:
    write_silver(HAND)
    rfm = compute(settings, "customer_rfm", snapshots="monthly")

    customer = rfm[rfm["customer_id"] == "12345"].set_index("month")
    assert list(customer.index) == [1, 2, 3]
    assert_values(
        customer.loc[1].to_dict(),
        {
            "event_timestamp": pd.Timestamp("2011-02-01"),  # when January is complete
            "recency_days": 21,  # 2011-01-10 10:00 -> 02-01 00:00
            "frequency_orders": 1,
            "monetary_total": 40.0,
            "monetary_std": 0.0,
            "order_count": 2,
        },
    )
    # February adds nothing for 12345: the purchase on 03-01 09:00 is later.
    assert_values(
        customer.loc[2].to_dict(),
        {"event_timestamp": pd.Timestamp("2011-03-01"), "recency_days": 49, "order_count": 2},
    )
    # The last month is cut at the data's last date: it equals the single snapshot.
    single = compute(settings, "customer_rfm").set_index("customer_id")
    last = rfm[rfm["month"] == 3].set_index("customer_id")
    pd.testing.assert_frame_equal(last.sort_index(), single.sort_index())
    # 11111 has only a cancellation, in February: never a row.
    assert "11111" not in set(rfm["customer_id"])


def test_monthly_rfm_never_sees_rows_after_its_timestamp(
    settings: Settings, write_silver: WriteSilver, tmp_path: Path
) -> None:
    lines = random_lines(invoices=300)
    write_silver(lines)
    monthly = compute(settings, "customer_rfm", snapshots="monthly")
    cut = pd.Timestamp("2011-06-01")
    as_of_cut = monthly[monthly["event_timestamp"] == cut].set_index("customer_id")

    # The same customers and sums from only the rows before the cut.
    earlier = load_settings(home=tmp_path / "earlier")
    write_silver_part(earlier, [line for line in lines if pd.Timestamp(line[3]) < cut])
    truncated = compute(earlier, "customer_rfm").set_index("customer_id")
    columns = ["frequency_orders", "monetary_total", "monetary_std", "order_count"]
    pd.testing.assert_frame_equal(as_of_cut[columns].sort_index(), truncated[columns].sort_index())
    # Recency is measured to the cut, not to the last row before it.
    last_row = max(pd.Timestamp(line[3]) for line in lines if pd.Timestamp(line[3]) < cut)
    shift = (cut - last_row).total_seconds() / 86400
    assert ((as_of_cut["recency_days"] - truncated["recency_days"]).between(0, shift + 1)).all()


def test_rfm_equals_the_guides_pandas_on_clean_purchases(
    settings: Settings, write_silver: WriteSilver
) -> None:
    lines = random_lines()
    silver = write_silver(lines).to_pandas()
    namespace: dict[str, Any] = {}
    exec(guide_block("### Customer Features"), namespace)
    expected = namespace["create_customer_rfm_features"](silver).set_index("customer_id")

    rfm = compute(settings, "customer_rfm").set_index("customer_id")

    columns = list(expected.columns)
    assert columns == [
        "recency_days",
        "frequency_orders",
        "monetary_total",
        "monetary_avg",
        "monetary_std",
        "order_count",
    ]
    pd.testing.assert_frame_equal(
        rfm[columns].sort_index(), expected.sort_index(), check_dtype=False, check_names=False
    )
    aov = rfm["monetary_total"] / rfm["frequency_orders"]
    np.testing.assert_allclose(rfm["avg_order_value"], aov)


# --------------------------------------------------------------------------- product_popularity


def test_product_popularity_matches_hand_computed_values(
    settings: Settings, write_silver: WriteSilver
) -> None:
    write_silver(HAND)
    products = compute(settings, "product_popularity")

    # Postage (POST) and the adjustment (B) are not products.
    assert sorted(set(products["stock_code"])) == ["22423", "84879", "85123A"]
    assert len(products) == 5
    assert_values(
        row(products, stock_code="85123A", month=3),
        {
            "event_timestamp": pd.Timestamp("2011-04-01"),  # known when March ends
            "year": 2011,
            "quantity_sum": 102,  # 4 - 2 (cancelled) + 100 (guest)
            "quantity_mean": 34.0,
            "quantity_std": 57.23635208501674,  # sample std of 4, -2, 100
            "unit_price_mean": 2.0,
            "unit_price_std": 0.8660254037844386,  # sample std of 2.5, 2.5, 1.0
            "total_amount_sum": 105.0,
            "unique_customers": 1,  # 12345; the guest has no id
        },
    )
    assert_values(
        row(products, stock_code="22423", month=2),
        {"quantity_sum": -1, "total_amount_sum": -4.0, "unique_customers": 0},
    )
    assert_values(
        row(products, stock_code="84879", month=3),
        {"quantity_sum": 1, "quantity_std": None, "unique_customers": 1},
    )


def test_product_popularity_equals_the_guides_pandas_on_clean_purchases(
    settings: Settings, write_silver: WriteSilver
) -> None:
    silver = write_silver(random_lines()).to_pandas()
    namespace: dict[str, Any] = {"get_holidays": lambda: []}
    exec(guide_block("### Customer Features"), namespace)
    # The guide groups by a 'month' column that its temporal features add.
    with_month = namespace["create_temporal_features"](silver.copy())
    expected = namespace["create_product_features"](with_month)
    expected.columns = [
        "stock_code",
        "month",
        "quantity_sum",
        "quantity_mean",
        "quantity_std",
        "unit_price_mean",
        "unit_price_std",
        "total_amount_sum",
        "unique_customers",
    ]
    expected = expected.astype({"month": "int64"}).set_index(["stock_code", "month"]).sort_index()

    products = compute(settings, "product_popularity")
    assert products["year"].unique().tolist() == [2011]  # one year: 'month' alone is a key
    actual = products.set_index(["stock_code", "month"]).sort_index()[list(expected.columns)]
    pd.testing.assert_frame_equal(actual, expected, check_dtype=False, check_names=False)


# --------------------------------------------------------------------------- seasonal_trends


def test_seasonal_trends_matches_hand_computed_values(
    settings: Settings, write_silver: WriteSilver
) -> None:
    write_silver(HAND)
    trends = compute(settings, "seasonal_trends")

    assert len(trends) == 4  # United Kingdom Jan, Feb, Mar; France Mar
    assert_values(
        row(trends, country=UK, month=1),
        {
            "event_timestamp": pd.Timestamp("2011-02-01"),
            "monthly_sales": 40.0,
            "monthly_orders": 1,
            "mom_growth": None,  # no earlier month
            "yoy_growth": None,
            "seasonal_index": 1.0,
        },
    )
    assert_values(
        row(trends, country=UK, month=2),
        {
            "monthly_sales": -4.0,  # only a cancellation
            "monthly_orders": 0,
            "mom_growth": -1.1,  # (-4 - 40) / 40
            "seasonal_index": -4.0 / 18.0,  # average to date: (40 - 4) / 2
        },
    )
    assert_values(
        row(trends, country=UK, month=3),
        {
            "monthly_sales": 105.0,  # 10 - 5 + 100; postage and adjustment left out
            "monthly_orders": 2,
            "mom_growth": None,  # February's sales were not positive
            "seasonal_index": 105.0 / 47.0,  # average to date: (40 - 4 + 105) / 3
        },
    )
    assert_values(
        row(trends, country="France", month=3),
        {"monthly_sales": 30.0, "monthly_orders": 1, "seasonal_index": 1.0},
    )


def test_seasonal_index_counts_months_without_sales_as_zero(
    settings: Settings, write_silver: WriteSilver
) -> None:
    write_silver(
        [
            ("1", "85123A", 10, "2011-01-05T10:00", 1.0, "1", UK),
            ("2", "85123A", 30, "2011-03-05T10:00", 1.0, "1", UK),
        ]
    )
    trends = compute(settings, "seasonal_trends").set_index("month")
    assert trends.loc[3, "seasonal_index"] == pytest.approx(30.0 / (40.0 / 3))
    assert pd.isna(trends.loc[3, "mom_growth"])  # February had no sales


def test_year_over_year_growth_compares_the_same_month(
    settings: Settings, write_silver: WriteSilver
) -> None:
    write_silver(
        [
            ("1", "85123A", 10, "2010-12-05T10:00", 1.0, "1", UK),
            ("2", "85123A", 25, "2011-12-05T10:00", 1.0, "1", UK),
        ]
    )
    trends = compute(settings, "seasonal_trends").set_index("year")
    assert trends.loc[2011, "yoy_growth"] == pytest.approx(1.5)
    assert pd.isna(trends.loc[2010, "yoy_growth"])


# --------------------------------------------------------------------------- temporal

CHRISTMAS: list[Line] = [
    ("1", "85123A", 1, "2010-12-20T10:00", 1.0, "1", UK),
    ("2", "85123A", 1, "2010-12-21T10:00", 1.0, "2", "France"),
    ("3", "85123A", 1, "2010-12-22T10:00", 1.0, "3", "Unspecified"),
    ("4", "85123A", 1, "2011-01-05T10:00", 1.0, "1", UK),
]


def test_temporal_marks_christmas_as_a_holiday_in_the_united_kingdom(
    settings: Settings, write_silver: WriteSilver
) -> None:
    write_silver(CHRISTMAS)
    calendar = compute(settings, "temporal")

    # Every country present, every day from the first to the last.
    assert len(calendar) == 3 * 17
    christmas = row(calendar, country=UK, date=date(2010, 12, 25))
    assert_values(
        christmas,
        {
            "event_timestamp": pd.Timestamp("2010-12-25"),
            "year": 2010,
            "month": 12,
            "day_of_week": 5,  # Saturday
            "quarter": 4,
            "is_weekend": True,
            "is_holiday": True,
        },
    )
    assert row(calendar, country=UK, date=date(2010, 12, 24))["is_holiday"] is False
    assert row(calendar, country=UK, date=date(2010, 12, 28))["is_holiday"] is True  # observed
    assert row(calendar, country="France", date=date(2010, 12, 25))["is_holiday"] is True
    assert row(calendar, country="France", date=date(2010, 12, 28))["is_holiday"] is False
    # A country the holidays package cannot name has none.
    assert not calendar[calendar["country"] == "Unspecified"]["is_holiday"].any()


def test_temporal_equals_the_guides_pandas_calendar(
    settings: Settings, write_silver: WriteSilver
) -> None:
    write_silver(CHRISTMAS)
    calendar = compute(settings, "temporal")
    uk = calendar[calendar["country"] == UK].reset_index(drop=True)

    uk_holidays = holidays.country_holidays("GB", years=[2010, 2011])
    namespace: dict[str, Any] = {
        "get_holidays": lambda: [pd.Timestamp(day) for day in uk_holidays],
    }
    exec(guide_block("### Customer Features"), namespace)
    days = pd.DataFrame({"invoice_date": pd.to_datetime(uk["date"])})
    expected = namespace["create_temporal_features"](days)

    for column in ("year", "month", "day_of_week", "quarter", "is_weekend", "is_holiday"):
        assert uk[column].tolist() == expected[column].tolist(), column


def test_holiday_rows_map_uci_country_names() -> None:
    rows = holiday_rows(["EIRE", "RSA", "Channel Islands", "European Community", "DE"], [2011])
    countries = {country for country, _ in rows}
    assert countries == {"EIRE", "RSA", "Channel Islands", "DE"}
    assert ("EIRE", date(2011, 3, 17)) in rows  # Saint Patrick's Day
    assert len(rows) == len(set(rows))


# --------------------------------------------------------------------------- daily_sales


def test_daily_sales_reconcile_with_silver_net_sales(
    settings: Settings, write_silver: WriteSilver
) -> None:
    silver = write_silver(HAND).to_pandas()
    daily = compute(settings, "daily_sales")

    products = silver[~silver["is_non_product"] & ~silver["is_adjustment"]]
    net = products["total_amount"].sum()
    assert net == pytest.approx(171.0)
    for level in ("product", "country", "total"):
        assert daily.loc[daily["level"] == level, "sales_amount"].sum() == pytest.approx(net)
        assert daily.loc[daily["level"] == level, "quantity"].sum() == products["quantity"].sum()

    total = daily[daily["series_id"] == "total"].set_index("date")
    # 2011-03-03 had only the adjustment: omitted, not zero.
    assert list(total.index) == [
        date(2011, 1, 10),
        date(2011, 2, 1),
        date(2011, 3, 1),
        date(2011, 3, 2),
        date(2011, 3, 5),
        date(2011, 3, 10),
    ]
    assert total["sales_amount"].tolist() == [40.0, -4.0, 10.0, -5.0, 30.0, 100.0]
    assert total["n_invoices"].tolist() == [1, 0, 1, 0, 1, 1]
    assert total["event_timestamp"].iloc[-1] == pd.Timestamp("2011-03-11")  # known next midnight
    assert set(daily["series_id"]) == {
        "total",
        "country:United Kingdom",
        "country:France",
        "product:85123A",
        "product:22423",
        "product:84879",
    }


def messy_lines() -> list[Line]:
    """Random purchases plus what makes lines and invoices differ: repeated products,
    an invoice under two countries, returns inside an invoice and cancellations."""
    lines = random_lines(invoices=200, days=70)
    lines += [
        ("600001", "P001", 2, "2011-02-01T10:00", 1.0, "10001", UK),
        ("600001", "P001", 3, "2011-02-01T10:00", 1.0, "10001", UK),  # the same product again
        ("600001", "P002", 1, "2011-02-01T10:00", 2.0, "10001", UK),
        ("600002", "P001", 1, "2011-02-01T11:00", 1.0, "10002", UK),
        ("600002", "P003", 4, "2011-02-01T11:00", 1.5, "10002", "France"),  # two countries
        ("600002", "P001", 2, "2011-02-01T11:00", 1.0, "10002", "France"),  # and P001 in both
        ("600003", "P001", -1, "2011-02-01T12:00", 1.0, "10003", UK),  # a return only
        ("C600004", "P001", -2, "2011-02-01T13:00", 1.0, "10001", UK),  # a cancellation
        ("600005", "P002", 1, "2011-02-02T09:00", 2.0, None, "Germany"),  # a guest
    ]
    return lines


def test_invoice_counts_equal_distinct_purchase_invoices(
    settings: Settings, write_silver: WriteSilver
) -> None:
    # The definitions count invoices from one row per invoice (and product, or
    # country): they must equal a plain distinct count over the lines.
    silver = write_silver(messy_lines()).to_pandas()
    lines = silver[~silver["is_non_product"] & ~silver["is_adjustment"]].copy()
    lines["date"] = lines["invoice_date"].dt.date
    lines["month_start"] = lines["invoice_date"].dt.to_period("M").dt.to_timestamp()
    purchases = lines[~lines["is_cancellation"] & (lines["quantity"] > 0)]

    daily = compute(settings, "daily_sales").set_index(["series_id", "date"])
    expected = {
        **{
            (f"product:{code}", day): n
            for (code, day), n in purchases.groupby(["stock_code", "date"])["invoice_no"]
            .nunique()
            .items()
        },
        **{
            (f"country:{country}", day): n
            for (country, day), n in purchases.groupby(["country", "date"])["invoice_no"]
            .nunique()
            .items()
        },
        **{
            ("total", day): n
            for day, n in purchases.groupby("date")["invoice_no"].nunique().items()
        },
    }
    got = daily["n_invoices"].to_dict()
    assert {key: got[key] for key in expected} == expected
    assert all(n == 0 for key, n in got.items() if key not in expected)
    assert got[("product:P001", date(2011, 2, 1))] == expected[("product:P001", date(2011, 2, 1))]
    assert (
        got[("total", date(2011, 2, 1))]
        == purchases.loc[purchases["date"] == date(2011, 2, 1), "invoice_no"].nunique()
    )

    seasonal = compute(settings, "seasonal_trends")
    seasonal["month_start"] = seasonal["event_timestamp"] - pd.DateOffset(months=1)
    orders = purchases.groupby(["country", "month_start"])["invoice_no"].nunique()
    got_orders = seasonal.set_index(["country", "month_start"])["monthly_orders"]
    assert got_orders.to_dict() == {key: orders.get(key, 0) for key in got_orders.index}


# --------------------------------------------------------------------------- all definitions


@pytest.mark.parametrize("name", sorted(FEATURE_SETS))
def test_every_definition_declares_what_it_computes(
    settings: Settings, write_silver: WriteSilver, name: str
) -> None:
    write_silver(random_lines(invoices=150))
    definition = FEATURE_SETS[name]
    result = FeatureEngineeringPipeline(
        config={"feature_sets": [name], "validation_rules": {"schema_validation": True}},
        settings=settings,
    ).run()[name]
    table = result.table()

    assert table.column_names == list(definition.column_names)
    assert result.validation.checks["schema"].passed
    assert {"year", "month", definition.timestamp_column} <= set(table.column_names)
    keys = table.select([*definition.entity_keys, definition.timestamp_column]).to_pandas()
    assert not keys.duplicated().any(), "entity keys and timestamp identify a row"
    assert not keys.isna().any().any()
    # A row's values are known at its timestamp: never before the period it describes.
    frame = table.to_pandas()
    period_start = pd.to_datetime(
        {"year": frame["year"], "month": frame["month"], "day": 1}
    ).astype("datetime64[us]")
    assert (frame[definition.timestamp_column] >= period_start).all()


def test_definitions_read_only_declared_relations() -> None:
    for definition in FEATURE_SETS.values():
        sql = definition.sql()
        for relation in ("dim_dates", "dim_holidays", "dim_customers", "dim_products"):
            assert (relation in sql) == (relation in definition.relations), (
                definition.name,
                relation,
            )


# --------------------------------------------------------------------------- dimensions


def test_dimension_relations_describe_customers_and_products(
    settings: Settings, workspace: Workspace, write_silver: WriteSilver
) -> None:
    write_silver(
        [
            *HAND,
            ("500008", "85123A", 1, "2011-03-06T10:00", 2.5, "67890", UK),
            ("500009", "84879", 2, "2011-03-07T10:00", 30.0, "67890", UK),
            ("500010", "84879", 1, "2011-03-08T10:00", 35.0, "12345", UK),
        ]
    )
    parts = sorted(workspace.transactions.glob("part-*.parquet"))
    with DuckDBEngine(parts, workspace.tmp / "duckdb", {}) as engine:
        engine.add_relations(["dim_customers", "dim_products"])
        customers = engine.con.sql("SELECT * FROM dim_customers").df().set_index("customer_id")
        products = engine.con.sql("SELECT * FROM dim_products").df().set_index("stock_code")

    # 11111 never bought; guests have no id.
    assert sorted(customers.index) == ["12345", "67890"]
    assert_values(
        customers.loc["67890"].to_dict(),
        {
            "first_purchase_ts": pd.Timestamp("2011-03-05 12:00"),
            "last_purchase_ts": pd.Timestamp("2011-03-07 10:00"),
            "country": UK,  # two purchases in the UK, one in France
        },
    )
    assert sorted(products.index) == ["22423", "84879", "85123A"]
    assert_values(
        products.loc["84879"].to_dict(),
        {
            "description": "item 84879",
            "first_sale_ts": pd.Timestamp("2011-03-05 12:00"),
            "modal_price": 30.0,  # 30.0 twice, 35.0 once
        },
    )
    assert products.loc["85123A", "modal_price"] == 2.5  # 2.5 twice (the cancellation aside)


def test_only_a_definition_reading_transactions_alone_may_be_chunked() -> None:
    # A window restricts the transactions; a dimension built over all of them would not follow.
    temporal = FEATURE_SETS["temporal"]
    with pytest.raises(ValueError, match="chunkable_by='month' needs a definition that reads only"):
        replace(temporal, chunkable_by="month")
    chunkable = {n: fs.chunkable_by for n, fs in FEATURE_SETS.items() if fs.chunkable_by}
    # Rows over one month (one day) of lines; the rest read across months.
    assert chunkable == {"product_popularity": "month", "daily_sales": "day"}
