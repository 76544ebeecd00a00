"""Feature sets, each defined once as SQL over the silver transactions.

Every definition is plain SQL over a relation named ``transactions`` (the
silver table, :data:`retailml.data.schema.SILVER_SCHEMA`) and a few small
dimension relations. The SQL keeps to portable constructs (``CASE``,
``COUNT(DISTINCT ...)``, ``date_trunc``, ``EXTRACT``, ``DATE_DIFF``, window
functions, ``INTERVAL`` literals) so the same text runs on DuckDB and,
transpiled with sqlglot, on Spark SQL. Weekdays are counted from a known
Monday because ``EXTRACT(DOW ...)`` numbers them differently per engine.

Semantics shared by all feature sets
------------------------------------
Product lines
    Rows flagged ``is_non_product`` (postage, discounts, fees, manual entries)
    and ``is_adjustment`` (accounting adjustments such as "Adjust bad debt")
    are not merchandise and are excluded everywhere.
Net of cancellations
    Cancellation lines (invoice prefix ``C``, negative quantities) stay in
    every money and quantity sum, so amounts are net of what was cancelled.
    A cancellation counts on the day it was recorded: silver does not link
    it to the invoice it cancels.
Purchases
    A *purchase line* is a line of a non-cancelled invoice with a positive
    quantity. Order counts (``frequency_orders``, ``monthly_orders``,
    ``n_invoices``) count distinct invoices with a purchase line, so a
    cancelled invoice is never an order; recency is measured from the last
    purchase line.
Entity keys are never null
    Rows whose key column is null (a guest's ``customer_id``, a missing
    ``stock_code`` or ``country``) are left out of the feature sets keyed by
    it; the ``total`` daily series still counts them.
Leakage-safe event timestamps
    ``event_timestamp`` is the first instant at which a row's values are
    known, so a point-in-time join (features with ``event_timestamp <= t``)
    never sees the future. A monthly aggregate is stamped with the first
    instant of the next month; a daily one with the next midnight; an RFM
    snapshot with its cut-off; calendar features (known in advance) with the
    day's own midnight. ``year`` and ``month`` name the period the values
    describe and are the partition columns.
A partial last month
    The data's last month usually ends before the calendar month does; its
    monthly rows describe the days observed (lower sales, negative growth).
    A later ingestion gives a new data version and so new feature versions.
Computed a few months at a time
    A row of ``product_popularity`` aggregates one month of transactions, a
    row of ``daily_sales`` one day (:attr:`FeatureSet.chunkable_by`), so an
    engine may compute them over windows of whole months, holding one
    window's aggregation state at a time; the rows are the same.

Feature sets
------------
``customer_rfm`` (entity ``customer_id``)
    The guide's ``create_customer_rfm_features`` columns plus
    ``avg_order_value``, over product lines with a customer id.
    ``recency_days`` is whole days (floored, like pandas' ``Timedelta.days``)
    from the last purchase to the snapshot; ``frequency_orders`` is distinct
    purchase invoices; ``monetary_total``/``monetary_avg``/``monetary_std``
    (sample) and ``order_count`` are the sum, mean, standard deviation and
    count of line ``total_amount`` *including* cancellation lines (the guide
    names the line count ``order_count``); ``avg_order_value`` is
    ``monetary_total / frequency_orders``. Customers with no purchase up to
    the snapshot (only cancellations) have no row. ``monetary_std`` is null
    for a customer with one line, as in pandas.

    ``snapshots="single"`` (default): one snapshot at the data's last
    ``invoice_date``, with every row up to and including it (the guide's
    ``current_date``). ``snapshots="monthly"``: one snapshot per calendar
    month with any transaction in the data, over the rows before the first instant of
    the next month, stamped with that instant; the last month is cut at the
    data's last ``invoice_date`` instead, so the last monthly snapshot equals
    the single one.
``product_popularity`` (entity ``stock_code``, per calendar month)
    Quantity sum, mean and sample standard deviation, unit price mean and
    standard deviation, ``total_amount`` sum (all over product lines,
    cancellations included) and ``unique_customers``: distinct customers with
    a purchase line in the month.
``seasonal_trends`` (entity ``country``, per calendar month)
    Net ``monthly_sales``, ``monthly_orders``, ``mom_growth`` (against the
    previous calendar month, null when that month had no positive sales),
    ``yoy_growth`` (against the same month a year earlier, likewise) and
    ``seasonal_index``: the month's sales over the country's average monthly
    sales *to date* (months since its first sale, months without sales
    counting as zero). Averaging over the whole history would leak later
    months into earlier rows.
``temporal`` (entity ``country`` + ``date``)
    One row per country present and calendar day between the data's first
    and last day: ``day_of_week`` (0 = Monday, like pandas' ``dayofweek``),
    ``quarter``, ``is_weekend`` and ``is_holiday``. Holidays come from the
    ``holidays`` package through ``dim_holidays`` (see
    :data:`COUNTRY_CODES`); a country it does not map, e.g. "Unspecified" or
    "European Community", has no holidays.
``daily_sales`` (entity ``series_id``, per day)
    The series forecasting trains on: per product (``product:<stock_code>``),
    per country (``country:<name>``) and in total (``total``), with net
    ``sales_amount``, net ``quantity`` and ``n_invoices``. Days without any
    line for a series are omitted (not zero-filled); forecasting fills them.
    A series' net sales can be negative on a day that has only
    cancellations.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa

LogicalType = Literal["string", "integer", "float", "boolean", "datetime", "date"]

#: Arrow type each logical type is stored as.
ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "integer": pa.int64(),
    "float": pa.float64(),
    "boolean": pa.bool_(),
    "datetime": pa.timestamp("us"),
    "date": pa.date32(),
}

#: The relation every definition reads: the silver transactions.
TRANSACTIONS = "transactions"

#: Names the configuration may use for a source table, and the relation each means.
#: The guide's ``bronze_sales`` is the silver table: features are computed from
#: typed, cleaned rows, never from data as read.
SOURCE_TABLES: dict[str, str] = {
    "bronze_sales": TRANSACTIONS,
    "silver_transactions": TRANSACTIONS,
    "dim_customers": "dim_customers",
    "dim_products": "dim_products",
}

#: Relations the engine builds in Python from the data; always available.
BUILT_IN_RELATIONS: tuple[str, ...] = ("dim_dates", "dim_holidays")

#: UCI Online Retail country names -> ISO 3166 codes known to the ``holidays``
#: package. Two-letter codes the package knows are accepted as they are; any
#: other name (e.g. "Unspecified", "European Community") has no holidays.
COUNTRY_CODES: dict[str, tuple[str, ...]] = {
    "Australia": ("AU",),
    "Austria": ("AT",),
    "Bahrain": ("BH",),
    "Belgium": ("BE",),
    "Brazil": ("BR",),
    "Canada": ("CA",),
    "Channel Islands": ("JE", "GG"),
    "Cyprus": ("CY",),
    "Czech Republic": ("CZ",),
    "Denmark": ("DK",),
    "EIRE": ("IE",),
    "Finland": ("FI",),
    "France": ("FR",),
    "Germany": ("DE",),
    "Greece": ("GR",),
    "Hong Kong": ("HK",),
    "Iceland": ("IS",),
    "Ireland": ("IE",),
    "Israel": ("IL",),
    "Italy": ("IT",),
    "Japan": ("JP",),
    "Lebanon": ("LB",),
    "Lithuania": ("LT",),
    "Malta": ("MT",),
    "Netherlands": ("NL",),
    "Norway": ("NO",),
    "Poland": ("PL",),
    "Portugal": ("PT",),
    "RSA": ("ZA",),
    "Saudi Arabia": ("SA",),
    "Singapore": ("SG",),
    "Spain": ("ES",),
    "Sweden": ("SE",),
    "Switzerland": ("CH",),
    "United Arab Emirates": ("AE",),
    "United Kingdom": ("GB",),
    "USA": ("US",),
}

OutlierScale = Literal["linear", "log"]
ChunkPeriod = Literal["month", "day"]


@dataclass(frozen=True)
class FeatureColumn:
    """One output column of a feature set.

    Attributes:
        name: Column name.
        dtype: Logical type, checked by schema validation.
        description: What the value means.
        nullable: Null by construction in some rows (a sample standard
            deviation of one value, a growth rate without a base). Such
            columns are left out of the missing-value rule.
        outliers: Scale on which outlier detection examines the column
            (``"log"``: signed ``log1p``, for heavy-tailed amounts and
            quantities), or None to leave it out. Only base measures are
            examined: keys and calendar fields have no outliers, small counts
            (invoices per day) have a zero IQR, and the outliers of derived
            columns (ratios, growth, standard deviations) follow from those
            of the measures they derive from. Country-month totals are not
            examined either: countries differ in size by orders of magnitude,
            so fences across them flag the largest countries, not bad data.
    """

    name: str
    dtype: LogicalType
    description: str
    nullable: bool = False
    outliers: OutlierScale | None = None


@dataclass(frozen=True)
class FeatureSet:
    """A named feature table defined by one SQL query.

    Attributes:
        name: The feature set's name (``customer_rfm``).
        description: One paragraph on what a row is.
        entity_keys: Columns identifying the entity.
        timestamp_column: The event timestamp column (when the row's values
            became known).
        columns: Every output column, in output order.
        relations: Relations the SQL reads.
        options: Allowed values of each parameter; the first is the default.
        chunkable_by: The calendar period (``"month"`` or ``"day"``) that
            each output row is computed from: every row aggregates the
            transactions of one such period of ``invoice_date`` and no
            others, and is partitioned under that period's ``year`` and
            ``month``. The engine may then compute the set over windows of
            whole months and get the same rows with a fraction of the
            memory (a day lies in one month, so ``"day"`` implies it). None
            (the default) when a row reads across months: running totals,
            growth against earlier months, snapshots of all history, the
            data's whole date range.
        relative_cost: The set's compute cost relative to the others' at the
            same data size (measured CPU time; 1 for the light ones). An
            engine computing several sets at once starts the costliest
            first, so that a large set does not start last and run alone.
    """

    name: str
    description: str
    entity_keys: tuple[str, ...]
    timestamp_column: str
    columns: tuple[FeatureColumn, ...]
    relations: tuple[str, ...]
    build: Callable[[Mapping[str, str]], str] = field(repr=False)
    options: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    chunkable_by: ChunkPeriod | None = None
    relative_cost: int = 1

    def __post_init__(self) -> None:
        # A window restricts the transactions only: a dimension relation
        # built over all of them would mix periods into a windowed row.
        if self.chunkable_by is not None and self.relations != (TRANSACTIONS,):
            raise ValueError(
                f"{self.name}: chunkable_by={self.chunkable_by!r} needs a definition that "
                f"reads only {TRANSACTIONS!r}; it reads {self.relations!r}"
            )

    @property
    def column_names(self) -> tuple[str, ...]:
        """All output column names, in order."""
        return tuple(c.name for c in self.columns)

    @property
    def feature_columns(self) -> tuple[FeatureColumn, ...]:
        """Columns that are features: neither keys, timestamp nor partition columns."""
        skip = {*self.entity_keys, self.timestamp_column, "year", "month"}
        return tuple(c for c in self.columns if c.name not in skip)

    @property
    def schema(self) -> Mapping[str, LogicalType]:
        """``column -> logical type`` of every output column."""
        return {c.name: c.dtype for c in self.columns}

    @property
    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema the published table is read with."""
        return pa.schema([pa.field(c.name, ARROW_TYPES[c.dtype]) for c in self.columns])

    def parameters(self, given: Mapping[str, str] | None = None) -> dict[str, str]:
        """Every parameter's value: ``given`` over the defaults (validated by the pipeline)."""
        values = {name: allowed[0] for name, allowed in self.options.items()}
        values.update(given or {})
        return values

    def sql(self, given: Mapping[str, str] | None = None) -> str:
        """The definition's SQL text for these parameters."""
        return self.build(self.parameters(given)).strip() + "\n"


# --- shared fragments ------------------------------------------------------
# Fragments are composed into each definition's text, so the text hashed for
# the version is exactly the text that runs.

_PRODUCT_LINE = "NOT is_non_product AND NOT is_adjustment"
_PURCHASE_LINE = "(NOT is_cancellation AND quantity > 0)"
_YEAR = "CAST(EXTRACT(YEAR FROM {0}) AS BIGINT)"
_MONTH = "CAST(EXTRACT(MONTH FROM {0}) AS BIGINT)"
# Weekday numbers differ between engines (DOW is 0 = Sunday in DuckDB and
# PostgreSQL, 1 = Sunday in Spark); days since a known Monday do not.
_MONDAY = "DATE '1900-01-01'"


def _col(
    name: str,
    dtype: LogicalType,
    description: str,
    *,
    nullable: bool = False,
    outliers: OutlierScale | None = None,
) -> FeatureColumn:
    return FeatureColumn(name, dtype, description, nullable, outliers)


def _period_columns(timestamp_doc: str) -> tuple[FeatureColumn, ...]:
    return (
        _col("event_timestamp", "datetime", timestamp_doc),
        _col("year", "integer", "Year of the period the values describe (partition column)."),
        _col("month", "integer", "Month (1-12) of the period the values describe (partition)."),
    )


# --- customer_rfm ------------------------------------------------------------


def _customer_rfm_sql(params: Mapping[str, str]) -> str:
    aggregates = """
        MAX(CASE WHEN l.is_purchase THEN l.invoice_date END) AS last_purchase_ts,
        COUNT(DISTINCT CASE WHEN l.is_purchase THEN l.invoice_no END) AS frequency_orders,
        SUM(l.total_amount) AS monetary_total,
        AVG(l.total_amount) AS monetary_avg,
        STDDEV_SAMP(l.total_amount) AS monetary_std,
        COUNT(*) AS order_count"""
    if params["snapshots"] == "monthly":
        snapshots = f"""
bounds AS (
    SELECT MAX(invoice_date) AS last_ts FROM {TRANSACTIONS}
),
months AS (
    SELECT DISTINCT date_trunc('month', invoice_date) AS month_start FROM {TRANSACTIONS}
),
snapshots AS (
    SELECT
        CASE
            WHEN m.month_start + INTERVAL '1' MONTH > b.last_ts THEN b.last_ts
            ELSE m.month_start + INTERVAL '1' MONTH
        END AS snapshot_ts,
        m.month_start + INTERVAL '1' MONTH > b.last_ts AS is_last,
        m.month_start
    FROM months AS m CROSS JOIN bounds AS b
),
per_customer AS (
    SELECT
        s.snapshot_ts,
        s.month_start,
        l.customer_id,{aggregates}
    FROM snapshots AS s
    JOIN lines AS l
        -- A range condition the engine can join on, then the exclusive cut-off
        -- of every snapshot but the last.
        ON l.invoice_date <= s.snapshot_ts
        AND (l.invoice_date < s.snapshot_ts OR s.is_last)
    GROUP BY s.snapshot_ts, s.month_start, l.customer_id
)"""
    else:
        # One snapshot at the data's last instant: every dated line is in it,
        # so customers are aggregated once, without a join.
        snapshots = f"""
snapshots AS (
    SELECT
        MAX(invoice_date) AS snapshot_ts,
        date_trunc('month', MAX(invoice_date)) AS month_start
    FROM {TRANSACTIONS}
),
per_customer AS (
    SELECT s.snapshot_ts, s.month_start, c.*
    FROM (
        SELECT l.customer_id,{aggregates}
        FROM lines AS l
        WHERE l.invoice_date IS NOT NULL
        GROUP BY l.customer_id
    ) AS c
    CROSS JOIN snapshots AS s
)"""
    return f"""
WITH lines AS (
    SELECT customer_id, invoice_no, invoice_date, total_amount,
        {_PURCHASE_LINE} AS is_purchase
    FROM {TRANSACTIONS}
    WHERE customer_id IS NOT NULL AND customer_id <> '' AND {_PRODUCT_LINE}
),
{snapshots.strip()}
SELECT
    customer_id,
    snapshot_ts AS event_timestamp,
    {_YEAR.format("month_start")} AS year,
    {_MONTH.format("month_start")} AS month,
    CAST(FLOOR(
        DATE_DIFF('microsecond', last_purchase_ts, snapshot_ts) / 86400000000.0
    ) AS BIGINT) AS recency_days,
    CAST(frequency_orders AS BIGINT) AS frequency_orders,
    CAST(monetary_total AS DOUBLE) AS monetary_total,
    CAST(monetary_avg AS DOUBLE) AS monetary_avg,
    CAST(monetary_std AS DOUBLE) AS monetary_std,
    CAST(order_count AS BIGINT) AS order_count,
    CAST(monetary_total / frequency_orders AS DOUBLE) AS avg_order_value
FROM per_customer
WHERE frequency_orders > 0
"""


CUSTOMER_RFM = FeatureSet(
    name="customer_rfm",
    description=(
        "Recency, frequency and monetary value of each customer as of a snapshot "
        "(the data's last invoice date, or every month end)."
    ),
    entity_keys=("customer_id",),
    timestamp_column="event_timestamp",
    columns=(
        _col("customer_id", "string", "Customer identifier."),
        *_period_columns("The snapshot cut-off: every row before it (and at it, last) counts."),
        _col("recency_days", "integer", "Whole days from the last purchase to the snapshot."),
        _col("frequency_orders", "integer", "Distinct purchase invoices."),
        _col("monetary_total", "float", "Net line amount, cancellations included.", outliers="log"),
        _col("monetary_avg", "float", "Mean line amount."),
        _col(
            "monetary_std",
            "float",
            "Sample standard deviation of line amounts; null for one line.",
            nullable=True,
        ),
        _col("order_count", "integer", "Lines, cancellations included.", outliers="log"),
        _col("avg_order_value", "float", "monetary_total / frequency_orders."),
    ),
    relations=(TRANSACTIONS,),
    build=_customer_rfm_sql,
    options={"snapshots": ("single", "monthly")},
)


# --- product_popularity ------------------------------------------------------


def _product_popularity_sql(_params: Mapping[str, str]) -> str:
    return f"""
WITH lines AS (
    SELECT stock_code, customer_id, quantity, unit_price, total_amount,
        {_PURCHASE_LINE} AS is_purchase,
        date_trunc('month', invoice_date) AS month_start
    FROM {TRANSACTIONS}
    WHERE stock_code IS NOT NULL AND {_PRODUCT_LINE}
),
totals AS (
    SELECT
        stock_code,
        month_start,
        SUM(quantity) AS quantity_sum,
        AVG(CAST(quantity AS DOUBLE)) AS quantity_mean,
        STDDEV_SAMP(CAST(quantity AS DOUBLE)) AS quantity_std,
        AVG(unit_price) AS unit_price_mean,
        STDDEV_SAMP(unit_price) AS unit_price_std,
        SUM(total_amount) AS total_amount_sum
    FROM lines
    GROUP BY stock_code, month_start
),
buyers AS (
    -- Deduplicated over the purchase lines with a customer only, not every line.
    SELECT stock_code, month_start, COUNT(DISTINCT customer_id) AS unique_customers
    FROM lines
    WHERE is_purchase AND customer_id IS NOT NULL
    GROUP BY stock_code, month_start
)
SELECT
    t.stock_code,
    t.month_start + INTERVAL '1' MONTH AS event_timestamp,
    {_YEAR.format("t.month_start")} AS year,
    {_MONTH.format("t.month_start")} AS month,
    CAST(t.quantity_sum AS BIGINT) AS quantity_sum,
    t.quantity_mean,
    t.quantity_std,
    t.unit_price_mean,
    t.unit_price_std,
    CAST(t.total_amount_sum AS DOUBLE) AS total_amount_sum,
    CAST(COALESCE(b.unique_customers, 0) AS BIGINT) AS unique_customers
FROM totals AS t
LEFT JOIN buyers AS b ON b.stock_code = t.stock_code AND b.month_start = t.month_start
"""


PRODUCT_POPULARITY = FeatureSet(
    name="product_popularity",
    description="Monthly sales volume, price and reach of each product.",
    entity_keys=("stock_code",),
    timestamp_column="event_timestamp",
    columns=(
        _col("stock_code", "string", "Product code."),
        *_period_columns("First instant of the next month, when the month's values are known."),
        _col("quantity_sum", "integer", "Net units sold.", outliers="log"),
        _col("quantity_mean", "float", "Mean units per line."),
        _col(
            "quantity_std",
            "float",
            "Sample standard deviation of units per line; null for one line.",
            nullable=True,
        ),
        _col("unit_price_mean", "float", "Mean unit price.", outliers="log"),
        _col(
            "unit_price_std",
            "float",
            "Sample standard deviation of unit prices; null for one line.",
            nullable=True,
        ),
        _col("total_amount_sum", "float", "Net sales amount.", outliers="log"),
        _col("unique_customers", "integer", "Distinct buying customers."),
    ),
    relations=(TRANSACTIONS,),
    build=_product_popularity_sql,
    chunkable_by="month",
    # CPU seconds at 10M rows on one thread: ~2.5 (customer_rfm ~0.8).
    relative_cost=3,
)


# --- seasonal_trends ---------------------------------------------------------


def _seasonal_trends_sql(_params: Mapping[str, str]) -> str:
    return f"""
WITH monthly AS (
    -- Orders are counted from one row per invoice, country and month, not
    -- with COUNT(DISTINCT invoice_no) over every line: the same count, cheaper.
    SELECT
        country,
        month_start,
        SUM(sales_amount) AS monthly_sales,
        COUNT(CASE WHEN has_purchase = 1 THEN invoice_no END) AS monthly_orders
    FROM (
        SELECT
            invoice_no,
            country,
            date_trunc('month', invoice_date) AS month_start,
            SUM(sales_amount) AS sales_amount,
            MAX(has_purchase) AS has_purchase
        FROM (
            -- One row per invoice, country and timestamp first (an invoice has
            -- one or a few): truncating those to the month is cheaper than
            -- truncating every line's timestamp.
            SELECT
                invoice_no,
                country,
                invoice_date,
                SUM(total_amount) AS sales_amount,
                MAX(CASE WHEN {_PURCHASE_LINE} THEN 1 ELSE 0 END) AS has_purchase
            FROM {TRANSACTIONS}
            WHERE country IS NOT NULL AND {_PRODUCT_LINE}
            GROUP BY invoice_no, country, invoice_date
        ) AS stamps
        GROUP BY invoice_no, country, date_trunc('month', invoice_date)
    ) AS invoices
    GROUP BY country, month_start
),
indexed AS (
    SELECT
        country,
        month_start,
        monthly_sales,
        monthly_orders,
        EXTRACT(YEAR FROM month_start) * 12 + EXTRACT(MONTH FROM month_start) AS month_index
    FROM monthly
),
to_date AS (
    SELECT
        country,
        month_start,
        monthly_sales,
        monthly_orders,
        month_index,
        SUM(monthly_sales) OVER (
            PARTITION BY country ORDER BY month_index
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) / (month_index - MIN(month_index) OVER (PARTITION BY country) + 1)
            AS avg_monthly_sales_to_date
    FROM indexed
)
SELECT
    cur.country,
    cur.month_start + INTERVAL '1' MONTH AS event_timestamp,
    {_YEAR.format("cur.month_start")} AS year,
    {_MONTH.format("cur.month_start")} AS month,
    CAST(cur.monthly_sales AS DOUBLE) AS monthly_sales,
    CAST(cur.monthly_orders AS BIGINT) AS monthly_orders,
    CAST(CASE WHEN prev.monthly_sales > 0
        THEN (cur.monthly_sales - prev.monthly_sales) / prev.monthly_sales
    END AS DOUBLE) AS mom_growth,
    CAST(CASE WHEN last_year.monthly_sales > 0
        THEN (cur.monthly_sales - last_year.monthly_sales) / last_year.monthly_sales
    END AS DOUBLE) AS yoy_growth,
    CAST(CASE WHEN cur.avg_monthly_sales_to_date > 0
        THEN cur.monthly_sales / cur.avg_monthly_sales_to_date
    END AS DOUBLE) AS seasonal_index
FROM to_date AS cur
LEFT JOIN indexed AS prev
    ON prev.country = cur.country AND prev.month_index = cur.month_index - 1
LEFT JOIN indexed AS last_year
    ON last_year.country = cur.country AND last_year.month_index = cur.month_index - 12
"""


SEASONAL_TRENDS = FeatureSet(
    name="seasonal_trends",
    description="Monthly sales of each country, their growth and a seasonal index.",
    entity_keys=("country",),
    timestamp_column="event_timestamp",
    columns=(
        _col("country", "string", "Country name as in the data."),
        *_period_columns("First instant of the next month, when the month's values are known."),
        _col("monthly_sales", "float", "Net sales amount in the month."),
        _col("monthly_orders", "integer", "Distinct purchase invoices."),
        _col(
            "mom_growth",
            "float",
            "Growth over the previous month; null without positive sales then.",
            nullable=True,
        ),
        _col(
            "yoy_growth",
            "float",
            "Growth over the same month a year earlier; null without positive sales then.",
            nullable=True,
        ),
        _col(
            "seasonal_index",
            "float",
            "Month's sales / average monthly sales to date; null if that average is not positive.",
            nullable=True,
        ),
    ),
    relations=(TRANSACTIONS,),
    build=_seasonal_trends_sql,
)


# --- temporal ------------------------------------------------------------------


def _temporal_sql(_params: Mapping[str, str]) -> str:
    return f"""
WITH countries AS (
    SELECT DISTINCT country FROM {TRANSACTIONS} WHERE country IS NOT NULL
)
SELECT
    c.country,
    d.date,
    CAST(d.date AS TIMESTAMP) AS event_timestamp,
    {_YEAR.format("d.date")} AS year,
    {_MONTH.format("d.date")} AS month,
    CAST(DATE_DIFF('day', {_MONDAY}, d.date) % 7 AS BIGINT) AS day_of_week,
    CAST(EXTRACT(QUARTER FROM d.date) AS BIGINT) AS quarter,
    DATE_DIFF('day', {_MONDAY}, d.date) % 7 >= 5 AS is_weekend,
    h.holiday_date IS NOT NULL AS is_holiday
FROM countries AS c
CROSS JOIN dim_dates AS d
LEFT JOIN dim_holidays AS h
    ON h.country = c.country AND h.holiday_date = d.date
"""


TEMPORAL = FeatureSet(
    name="temporal",
    description="Calendar features of each country and day in the data's date range.",
    entity_keys=("country", "date"),
    timestamp_column="event_timestamp",
    columns=(
        _col("country", "string", "Country name as in the data."),
        _col("date", "date", "Calendar day."),
        _col("event_timestamp", "datetime", "The day's midnight: calendar facts are known ahead."),
        _col("year", "integer", "Year (partition column)."),
        _col("month", "integer", "Month 1-12 (partition column)."),
        _col("day_of_week", "integer", "0 = Monday ... 6 = Sunday."),
        _col("quarter", "integer", "Quarter 1-4."),
        _col("is_weekend", "boolean", "Saturday or Sunday."),
        _col("is_holiday", "boolean", "A public holiday in the country (holidays package)."),
    ),
    relations=(TRANSACTIONS, "dim_dates", "dim_holidays"),
    build=_temporal_sql,
)


# --- daily_sales -------------------------------------------------------------


def _daily_sales_sql(_params: Mapping[str, str]) -> str:
    # Distinct invoices per product and day is the costly measure. A product
    # is rarely on an invoice twice, so it is counted as the purchase lines
    # (from one row per product and day) less the lines that repeat a
    # product, invoice and day. Those are looked for only in the invoices
    # that may hold them: an invoice-day whose list of product hashes has a
    # repeat (a hash collision can only add an invoice to look in, never
    # miss one), or that is recorded under two countries. The country and
    # total series count from one row per invoice, country and day (a few
    # per cent of the lines). Each gives what COUNT(DISTINCT invoice_no)
    # over the lines gives, at a fraction of its cost. repeated_lines reads
    # the transactions again rather than `lines`: the scan's pushed-down
    # filters keep a quarter of the rows, which measured faster (3.8 against
    # 4.1 s at 10M rows on one thread) than probing every materialized line.
    return f"""
WITH lines AS (
    -- Read once for both aggregations below (DuckDB materializes a CTE read twice).
    SELECT
        invoice_no,
        stock_code,
        country,
        CAST(invoice_date AS DATE) AS date,
        total_amount,
        quantity,
        {_PURCHASE_LINE} AS is_purchase
    FROM {TRANSACTIONS}
    WHERE {_PRODUCT_LINE}
),
product_days AS (
    SELECT
        stock_code,
        date,
        SUM(total_amount) AS sales_amount,
        SUM(quantity) AS quantity,
        COUNT(CASE WHEN is_purchase AND invoice_no IS NOT NULL THEN 1 END) AS purchase_lines
    FROM lines
    WHERE stock_code IS NOT NULL
    GROUP BY stock_code, date
),
invoices AS (
    SELECT
        invoice_no,
        country,
        date,
        SUM(total_amount) AS sales_amount,
        SUM(quantity) AS quantity,
        MAX(CASE WHEN is_purchase THEN 1 ELSE 0 END) AS has_purchase,
        ARRAY_AGG(HASH(stock_code)) FILTER (WHERE stock_code IS NOT NULL AND is_purchase)
            AS product_hashes
    FROM lines
    GROUP BY invoice_no, country, date
),
maybe_repeated AS (
    SELECT invoice_no, date
    FROM invoices
    WHERE invoice_no IS NOT NULL
    GROUP BY invoice_no, date
    HAVING COUNT(*) > 1
        OR MAX(ARRAY_LENGTH(product_hashes) - ARRAY_LENGTH(LIST_DISTINCT(product_hashes))) > 0
),
repeated_lines AS (
    SELECT stock_code, date, SUM(lines - 1) AS lines
    FROM (
        SELECT t.stock_code, t.invoice_no, CAST(t.invoice_date AS DATE) AS date,
            COUNT(*) AS lines
        FROM {TRANSACTIONS} AS t
        JOIN maybe_repeated AS r
            ON r.invoice_no = t.invoice_no AND r.date = CAST(t.invoice_date AS DATE)
        WHERE t.stock_code IS NOT NULL AND {_PRODUCT_LINE} AND {_PURCHASE_LINE}
        GROUP BY t.stock_code, t.invoice_no, CAST(t.invoice_date AS DATE)
    ) AS product_invoices
    WHERE lines > 1
    GROUP BY stock_code, date
),
series AS (
    SELECT CONCAT('product:', p.stock_code) AS series_id, 'product' AS level, p.date,
        p.sales_amount,
        p.quantity,
        p.purchase_lines - COALESCE(r.lines, 0) AS n_invoices
    FROM product_days AS p
    LEFT JOIN repeated_lines AS r ON r.stock_code = p.stock_code AND r.date = p.date
    UNION ALL
    SELECT CONCAT('country:', country) AS series_id, 'country' AS level, date,
        SUM(sales_amount) AS sales_amount,
        SUM(quantity) AS quantity,
        COUNT(CASE WHEN has_purchase = 1 THEN invoice_no END) AS n_invoices
    FROM invoices
    WHERE country IS NOT NULL
    GROUP BY country, date
    UNION ALL
    -- An invoice recorded under two countries is one invoice of the day.
    SELECT 'total' AS series_id, 'total' AS level, date,
        SUM(sales_amount) AS sales_amount,
        SUM(quantity) AS quantity,
        COUNT(DISTINCT CASE WHEN has_purchase = 1 THEN invoice_no END) AS n_invoices
    FROM invoices
    GROUP BY date
)
SELECT
    series_id,
    level,
    date,
    CAST(date AS TIMESTAMP) + INTERVAL '1' DAY AS event_timestamp,
    {_YEAR.format("date")} AS year,
    {_MONTH.format("date")} AS month,
    CAST(sales_amount AS DOUBLE) AS sales_amount,
    CAST(quantity AS BIGINT) AS quantity,
    CAST(n_invoices AS BIGINT) AS n_invoices
FROM series
"""


DAILY_SALES = FeatureSet(
    name="daily_sales",
    description="Daily net sales per product, per country and in total (forecasting input).",
    entity_keys=("series_id",),
    timestamp_column="event_timestamp",
    columns=(
        _col("series_id", "string", "'product:<code>', 'country:<name>' or 'total'."),
        _col("level", "string", "'product', 'country' or 'total'."),
        _col("date", "date", "Calendar day."),
        _col("event_timestamp", "datetime", "The next midnight, when the day's sales are known."),
        _col("year", "integer", "Year (partition column)."),
        _col("month", "integer", "Month 1-12 (partition column)."),
        _col("sales_amount", "float", "Net sales amount.", outliers="log"),
        _col("quantity", "integer", "Net units.", outliers="log"),
        _col("n_invoices", "integer", "Distinct purchase invoices."),
    ),
    relations=(TRANSACTIONS,),
    build=_daily_sales_sql,
    chunkable_by="day",
    # CPU seconds at 10M rows on one thread: ~4.5 (customer_rfm ~0.8).
    relative_cost=5,
)


#: Every feature set, by name.
FEATURE_SETS: dict[str, FeatureSet] = {
    fs.name: fs for fs in (CUSTOMER_RFM, PRODUCT_POPULARITY, SEASONAL_TRENDS, TEMPORAL, DAILY_SALES)
}


# --- dimension relations -----------------------------------------------------

#: Dimension views built from the silver transactions (over purchase lines).
DIMENSIONS: dict[str, str] = {
    "dim_customers": f"""
WITH lines AS (
    SELECT customer_id, country, invoice_date
    FROM {TRANSACTIONS}
    WHERE customer_id IS NOT NULL AND customer_id <> ''
        AND {_PRODUCT_LINE} AND {_PURCHASE_LINE}
),
countries AS (
    SELECT customer_id, country,
        ROW_NUMBER() OVER (
            PARTITION BY customer_id
            ORDER BY COUNT(*) DESC, MAX(invoice_date) DESC, country
        ) AS rank
    FROM lines
    WHERE country IS NOT NULL
    GROUP BY customer_id, country
)
SELECT
    l.customer_id,
    MIN(l.invoice_date) AS first_purchase_ts,
    MAX(l.invoice_date) AS last_purchase_ts,
    c.country
FROM lines AS l
LEFT JOIN countries AS c ON c.customer_id = l.customer_id AND c.rank = 1
GROUP BY l.customer_id, c.country
""",
    "dim_products": f"""
WITH lines AS (
    SELECT stock_code, description, unit_price, invoice_date
    FROM {TRANSACTIONS}
    WHERE stock_code IS NOT NULL AND {_PRODUCT_LINE} AND {_PURCHASE_LINE}
),
descriptions AS (
    SELECT stock_code, description,
        ROW_NUMBER() OVER (
            PARTITION BY stock_code ORDER BY COUNT(*) DESC, description
        ) AS rank
    FROM lines
    WHERE description IS NOT NULL
    GROUP BY stock_code, description
),
prices AS (
    SELECT stock_code, unit_price,
        ROW_NUMBER() OVER (
            PARTITION BY stock_code ORDER BY COUNT(*) DESC, unit_price
        ) AS rank
    FROM lines
    WHERE unit_price IS NOT NULL
    GROUP BY stock_code, unit_price
)
SELECT
    l.stock_code,
    d.description,
    MIN(l.invoice_date) AS first_sale_ts,
    p.unit_price AS modal_price
FROM lines AS l
LEFT JOIN descriptions AS d ON d.stock_code = l.stock_code AND d.rank = 1
LEFT JOIN prices AS p ON p.stock_code = l.stock_code AND p.rank = 1
GROUP BY l.stock_code, d.description, p.unit_price
""",
}


def holiday_rows(countries: Iterable[str], years: Iterable[int]) -> list[tuple[str, dt.date]]:
    """Public holidays of each country in the given years, as ``(country, date)`` rows.

    Args:
        countries: Country names as they appear in the data.
        years: Calendar years to cover.

    Returns:
        Unique ``(country, holiday_date)`` pairs, sorted. Countries that
        :data:`COUNTRY_CODES` does not map, and that are not themselves a
        code the ``holidays`` package knows, contribute none.
    """
    import holidays

    names = set(countries)
    # Only a two- or three-letter name can be a code; listing the codes the
    # package supports imports every country's module, so it is done only then.
    codes_asked = any(n not in COUNTRY_CODES and len(n) in (2, 3) and n.isalpha() for n in names)
    supported = holidays.list_supported_countries() if codes_asked else {}
    year_list = sorted(set(years))
    rows: set[tuple[str, dt.date]] = set()
    for country in names:
        codes = COUNTRY_CODES.get(country)
        if codes is None and country.upper() in supported:
            codes = (country.upper(),)
        for code in codes or ():
            for day in holidays.country_holidays(code, years=year_list):
                rows.add((country, day))
    return sorted(rows)
