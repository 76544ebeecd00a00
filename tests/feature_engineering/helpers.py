"""Silver transactions made by hand, and the guide's code blocks."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

import guide
from retailml.core.db import DataVersion, PlatformDB
from retailml.core.settings import Settings
from retailml.core.workspace import Workspace
from retailml.data.ingest import SILVER_TABLE
from retailml.data.schema import NON_PRODUCT_CODES, SILVER_SCHEMA

#: (invoice_no, stock_code, quantity, invoice_date, unit_price, customer_id, country);
#: a None unit price (a file without prices) gets a total amount of 0 here.
Line = tuple[str, str, int, str, float | None, str | None, str | None]

#: write_silver(lines, *, run_id="x", record=True) -> the silver table written.
WriteSilver = Callable[..., pa.Table]


def silver_table(lines: Sequence[Line], *, run_id: str = "x") -> pa.Table:
    """Silver rows with the flags ingestion derives from each line."""
    rows: list[dict[str, Any]] = []
    for number, (invoice, code, quantity, when, price, customer, country) in enumerate(lines):
        cancelled = invoice.startswith("C")
        rows.append(
            {
                "invoice_no": invoice,
                "stock_code": code,
                "description": f"item {code}",
                "quantity": quantity,
                "invoice_date": datetime.fromisoformat(when),
                "unit_price": price,
                "customer_id": customer,
                "country": country,
                "total_amount": 0.0 if price is None else round(quantity * price, 2),
                "is_cancellation": cancelled,
                "is_return": quantity < 0 and not cancelled,
                "is_non_product": code.upper() in NON_PRODUCT_CODES,
                "is_adjustment": invoice.startswith("A"),
                "is_anomaly": False,
                "source_file": "test.csv",
                "source_hash": "0" * 64,
                "source_row": number + 1,
                "ingest_run_id": run_id,
            }
        )
    return pa.Table.from_pylist(rows, schema=SILVER_SCHEMA)


def write_silver_part(
    settings: Settings, lines: Sequence[Line], *, run_id: str = "x", record: bool = True
) -> pa.Table:
    """Write ``part-<run_id>.parquet`` and (with ``record``) a data version of all parts."""
    workspace = Workspace.from_settings(settings)
    table = silver_table(lines, run_id=run_id)
    workspace.transactions.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, workspace.transactions / f"part-{run_id}.parquet")
    if record:
        parts = sorted(workspace.transactions.glob("part-*.parquet"))
        digest = hashlib.sha256(b"".join(p.read_bytes() for p in parts)).hexdigest()
        rows = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
        db = PlatformDB.from_settings(settings)
        try:
            with db.session() as session:
                session.add(DataVersion(table_name=SILVER_TABLE, version=digest, row_count=rows))
        finally:
            db.dispose()
    return table


def random_lines(
    *,
    seed: int = 7,
    invoices: int = 600,
    customers: int = 60,
    products: int = 40,
    start: str = "2011-01-03",
    days: int = 330,
    countries: Sequence[str] = ("United Kingdom", "France", "Germany"),
) -> list[Line]:
    """Plausible purchases only: no cancellations, non-product rows or guests."""
    rng = random.Random(seed)
    first = datetime.fromisoformat(start)
    prices = {f"P{i:03d}": round(rng.lognormvariate(1.0, 0.6), 2) for i in range(products)}
    homes = {f"{10000 + i}": rng.choice(countries) for i in range(customers)}
    lines: list[Line] = []
    for number in range(invoices):
        customer = rng.choice(sorted(homes))
        when = first + timedelta(days=rng.randrange(days), minutes=rng.randrange(8 * 60, 18 * 60))
        for code in rng.sample(sorted(prices), rng.randint(1, 5)):
            quantity = max(1, round(rng.lognormvariate(1.5, 0.7)))
            lines.append(
                (
                    str(500000 + number),
                    code,
                    quantity,
                    when.isoformat(),
                    prices[code],
                    customer,
                    homes[customer],
                )
            )
    return lines


def guide_block(heading: str) -> str:
    """The first python code block after a heading of the vendored guide."""
    return guide.block(heading)
