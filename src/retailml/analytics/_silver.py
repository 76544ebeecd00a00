"""DuckDB queries over the workspace's silver transactions for the predictive engine.

The queries reuse the feature-set definitions of
:mod:`retailml.feature_engineering._definitions` (``daily_sales``,
``customer_rfm``) instead of re-deriving their rules, so "product lines, net
of cancellations" means the same thing here as in the published feature
tables. Silver parts are read in place with ``read_parquet``; only the result
becomes a pandas frame.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import duckdb
import pandas as pd
import pyarrow.parquet as pq

from retailml.core.db import PlatformDB
from retailml.core.errors import ConfigError, DataValidationError, NotFoundError, problem
from retailml.core.settings import Settings
from retailml.core.workspace import Workspace
from retailml.data.ingest import SILVER_TABLE
from retailml.data.schema import SILVER_DATA_COLUMNS
from retailml.feature_engineering._definitions import CUSTOMER_RFM, DAILY_SALES, TRANSACTIONS

__all__ = [
    "LEVELS",
    "RFM_COLUMNS",
    "SALES_COLUMNS",
    "SilverRange",
    "customer_window",
    "daily_sales",
    "data_version",
    "parse_window",
    "rfm_features",
    "silver_range",
    "to_timestamp",
]

#: Series levels of the ``daily_sales`` feature set.
LEVELS: Final = ("total", "country", "product")
#: Columns of :func:`daily_sales`, in order.
SALES_COLUMNS: Final = ("series_id", "date", "sales_amount", "quantity", "n_invoices")
#: Columns of :func:`rfm_features`, in order (the ``customer_rfm`` measures).
RFM_COLUMNS: Final = (
    "customer_id",
    "recency_days",
    "frequency_orders",
    "monetary_total",
    "monetary_avg",
    "monetary_std",
    "order_count",
    "avg_order_value",
)
#: Silver columns ``customer_rfm`` reads.
RFM_INPUTS: Final = (
    "customer_id",
    "invoice_no",
    "invoice_date",
    "quantity",
    "total_amount",
    "is_cancellation",
    "is_non_product",
    "is_adjustment",
)

_WINDOW: Final = re.compile(r"^\s*(\d+)\s*([DWMY])\s*$", re.IGNORECASE)
_INGEST_FIX: Final = "run `retailml data ingest <file>` first"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _timestamp(value: pd.Timestamp) -> str:
    return f"TIMESTAMP '{value:%Y-%m-%d %H:%M:%S.%f}'"


@dataclass(frozen=True)
class SilverRange:
    """The silver parts of a workspace and the span of their invoice dates."""

    parts: tuple[Path, ...]
    rows: int
    first: pd.Timestamp
    last: pd.Timestamp

    @property
    def source(self) -> str:
        """A ``read_parquet`` table expression over every part."""
        files = ", ".join(_literal(str(p)) for p in self.parts)
        return f"read_parquet([{files}], union_by_name = true)"

    def describe(self) -> str:
        """``'2022-01-04 .. 2023-12-22'``."""
        return f"{self.first:%Y-%m-%d} .. {self.last:%Y-%m-%d}"


def silver_range(settings: Settings) -> SilverRange:
    """The workspace's silver parts and their date span.

    Raises:
        NotFoundError: when there is no silver row (nothing ingested yet).
    """
    workspace = Workspace.from_settings(settings)
    parts = tuple(sorted(workspace.transactions.glob("part-*.parquet")))
    rows = sum(pq.ParquetFile(part).metadata.num_rows for part in parts)
    if rows == 0:
        raise NotFoundError(
            problem(
                "silver transactions in the workspace",
                f"{len(parts)} Parquet part(s) with 0 rows in {str(workspace.transactions)!r}",
                _INGEST_FIX,
                subject=SILVER_TABLE,
            )
        )
    probe = SilverRange(parts, rows, pd.Timestamp.min, pd.Timestamp.max)
    with duckdb.connect() as con:
        found = con.execute(
            f"SELECT MIN(invoice_date), MAX(invoice_date) FROM {probe.source}"
        ).fetchone()
    if found is None or found[0] is None:
        raise NotFoundError(
            problem(
                "silver transactions with invoice dates",
                f"{rows} rows without a date",
                _INGEST_FIX,
                subject=SILVER_TABLE,
            )
        )
    return SilverRange(parts, rows, pd.Timestamp(found[0]), pd.Timestamp(found[1]))


def data_version(settings: Settings, silver: SilverRange) -> str | None:
    """The recorded data version of silver, when it describes exactly these parts' rows."""
    db = PlatformDB.from_settings(settings)
    try:
        recorded = db.latest_data_version(SILVER_TABLE)
    finally:
        db.dispose()
    if recorded is not None and recorded.row_count == silver.rows:
        return str(recorded.version)
    return None


def daily_sales(
    silver: SilverRange,
    level: str,
    start: pd.Timestamp | None,
    end: pd.Timestamp | None,
) -> pd.DataFrame:
    """Rows of the ``daily_sales`` feature set of one level, between two days (inclusive).

    Args:
        silver: The silver parts.
        level: ``"total"``, ``"country"`` or ``"product"``.
        start: First day, or None for the data's first.
        end: Last day (inclusive), or None for the data's last.

    Returns:
        Columns :data:`SALES_COLUMNS`, sorted by series and date; ``date`` is a
        midnight ``datetime64[ns]``.

    Raises:
        DataValidationError: when the range holds no product sales, naming the
            range the data covers.
    """
    conditions = []
    if start is not None:
        conditions.append(f"invoice_date >= {_timestamp(start.normalize())}")
    if end is not None:
        conditions.append(f"invoice_date < {_timestamp(end.normalize() + pd.Timedelta(days=1))}")
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    query = f"""
WITH daily AS (
{DAILY_SALES.sql()}
)
SELECT series_id, CAST(date AS TIMESTAMP) AS date, sales_amount, quantity, n_invoices
FROM daily
WHERE level = {_literal(level)}
ORDER BY series_id, date
"""
    with duckdb.connect() as con:
        con.execute(f"CREATE VIEW {TRANSACTIONS} AS SELECT * FROM {silver.source} {where}")
        frame = con.execute(query).df()
    if frame.empty:
        asked = f"{'the start' if start is None else f'{start:%Y-%m-%d}'} .. " + (
            "the end" if end is None else f"{end:%Y-%m-%d}"
        )
        raise DataValidationError(
            problem(
                f"product sales between {asked}",
                "no rows in that range",
                f"choose dates within the silver data's range {silver.describe()}",
                subject="load_sales_data",
            )
        )
    frame["date"] = pd.to_datetime(frame["date"]).astype("datetime64[ns]")
    frame["series_id"] = frame["series_id"].astype(str)
    frame["sales_amount"] = frame["sales_amount"].astype("float64")
    for column in ("quantity", "n_invoices"):
        frame[column] = frame[column].astype("int64")
    return frame[list(SALES_COLUMNS)].reset_index(drop=True)


def parse_window(window: str) -> pd.DateOffset:
    """``"12M"``, ``"6M"``, ``"90D"``, ``"4W"``, ``"1Y"`` as a calendar offset.

    Raises:
        ConfigError: for any other form.
    """
    match = _WINDOW.match(window) if isinstance(window, str) else None
    if match is None or int(match.group(1)) < 1:
        raise ConfigError(
            problem(
                "a feature window of a positive count and a unit D, W, M or Y "
                "(days, weeks, months, years)",
                repr(window),
                "pass e.g. feature_window='12M', '6M', '90D' or '1Y'",
                subject="feature_window",
            )
        )
    count, unit = int(match.group(1)), match.group(2).upper()
    if unit == "D":
        return pd.DateOffset(days=count)
    if unit == "W":
        return pd.DateOffset(weeks=count)
    if unit == "M":
        return pd.DateOffset(months=count)
    return pd.DateOffset(years=count)


def customer_window(silver: SilverRange, window: pd.DateOffset) -> pd.DataFrame:
    """Silver rows in the window that ends at the data's last invoice date.

    A row is in the window when ``last - window < invoice_date <= last``.

    Returns:
        The data columns of silver (:data:`~retailml.data.schema.SILVER_DATA_COLUMNS`).
    """
    cutoff = silver.last - window
    columns = ", ".join(SILVER_DATA_COLUMNS)
    with duckdb.connect() as con:
        frame = con.execute(
            f"SELECT {columns} FROM {silver.source} "
            f"WHERE invoice_date > {_timestamp(cutoff)} ORDER BY invoice_date, invoice_no"
        ).df()
    frame["invoice_date"] = pd.to_datetime(frame["invoice_date"]).astype("datetime64[ns]")
    frame.attrs["window_start"] = cutoff.to_pydatetime()
    frame.attrs["window_end"] = silver.last.to_pydatetime()
    return frame


def _missing(frame: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    return [c for c in columns if c not in frame.columns]


def rfm_features(transactions: pd.DataFrame) -> pd.DataFrame:
    """The ``customer_rfm`` feature set (one snapshot) of a transactions frame.

    Runs the feature set's own SQL over the frame, so the snapshot is the
    frame's last ``invoice_date`` and the rules are the feature set's.

    Raises:
        DataValidationError: when silver columns the definition reads are missing,
            or no row is a customer's purchase.
    """
    missing = _missing(transactions, RFM_INPUTS)
    if missing:
        raise DataValidationError(
            problem(
                f"silver transaction columns {list(RFM_INPUTS)!r}",
                f"columns {list(map(str, transactions.columns))!r} (missing {missing!r})",
                "pass the frame PredictiveEngine.load_customer_data returns",
                subject="create_rfm_features",
            )
        )
    inputs = transactions[list(RFM_INPUTS)].copy()
    inputs["invoice_date"] = pd.to_datetime(inputs["invoice_date"])
    inputs["customer_id"] = inputs["customer_id"].astype("string")
    inputs["invoice_no"] = inputs["invoice_no"].astype("string")
    with duckdb.connect() as con:
        con.register("_lines", inputs)
        con.execute(f"CREATE VIEW {TRANSACTIONS} AS SELECT * FROM _lines")
        frame = con.execute(
            f"SELECT {', '.join(RFM_COLUMNS)} FROM ({CUSTOMER_RFM.sql({'snapshots': 'single'})}) "
            "ORDER BY customer_id"
        ).df()
    if frame.empty:
        raise DataValidationError(
            problem(
                "at least one customer with a purchase line",
                f"none among {len(transactions)} rows",
                "load a longer feature_window or ingest more data",
                subject="create_rfm_features",
            )
        )
    frame["customer_id"] = frame["customer_id"].astype(str)
    frame.attrs["snapshot"] = pd.Timestamp(inputs["invoice_date"].max()).to_pydatetime()
    return frame.reset_index(drop=True)


def to_timestamp(value: object, name: str) -> pd.Timestamp | None:
    """A date argument (ISO text, date, datetime, Timestamp, or None) as a Timestamp.

    Raises:
        ConfigError: for anything that is not a date.
    """
    if value is None:
        return None
    if isinstance(value, str | dt.date | pd.Timestamp):
        try:
            stamp = pd.Timestamp(value)
        except ValueError:
            stamp = None
        if stamp is not None and not pd.isna(stamp):
            if stamp.tzinfo is not None:
                stamp = stamp.tz_convert("UTC").tz_localize(None)
            return stamp
    raise ConfigError(
        problem(
            "a date such as '2022-01-01' (or a date/datetime)",
            repr(value),
            f"pass {name}='YYYY-MM-DD'",
            subject=name,
        )
    )
