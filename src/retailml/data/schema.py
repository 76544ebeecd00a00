"""The canonical transaction schema and column mappings.

retailml's transactions follow the UCI Online Retail layout, renamed to
snake case, plus a derived ``total_amount``::

    InvoiceNo   -> invoice_no      StockCode  -> stock_code
    Description -> description     Quantity   -> quantity
    InvoiceDate -> invoice_date    UnitPrice  -> unit_price
    CustomerID  -> customer_id     Country    -> country

Other transaction files are read through a :class:`ColumnMapping`: a YAML
file of ``canonical_column: source_column`` lines. Columns left out of a
mapping stay empty (null) in the silver table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from retailml.core.errors import ConfigError, problem
from retailml.core.io import read_yaml_mapping

#: The eight source columns of the UCI Online Retail layout, in order.
CANONICAL_COLUMNS: tuple[str, ...] = (
    "invoice_no",
    "stock_code",
    "description",
    "quantity",
    "invoice_date",
    "unit_price",
    "customer_id",
    "country",
)

#: Columns a mapping may also name: an amount column for files without unit
#: prices, and the generator's anomaly label.
OPTIONAL_COLUMNS: tuple[str, ...] = ("total_amount", "is_anomaly")

MAPPABLE_COLUMNS: tuple[str, ...] = CANONICAL_COLUMNS + OPTIONAL_COLUMNS

#: Header names of the original UCI file, as written by ``retailml data generate``.
UCI_HEADERS: dict[str, str] = {
    "invoice_no": "InvoiceNo",
    "stock_code": "StockCode",
    "description": "Description",
    "quantity": "Quantity",
    "invoice_date": "InvoiceDate",
    "unit_price": "UnitPrice",
    "customer_id": "CustomerID",
    "country": "Country",
}

#: Header spellings recognised without a mapping file (UCI Online Retail,
#: Online Retail II, and retailml's own names), compared case-insensitively.
HEADER_ALIASES: dict[str, tuple[str, ...]] = {
    "invoice_no": ("InvoiceNo", "Invoice", "invoice_no"),
    "stock_code": ("StockCode", "stock_code"),
    "description": ("Description", "description"),
    "quantity": ("Quantity", "quantity"),
    "invoice_date": ("InvoiceDate", "invoice_date"),
    "unit_price": ("UnitPrice", "Price", "unit_price"),
    "customer_id": ("CustomerID", "Customer ID", "customer_id"),
    "country": ("Country", "country"),
    "total_amount": ("total_amount", "TotalAmount"),
    "is_anomaly": ("is_anomaly",),
}

#: Columns a file read with the default (UCI) mapping must have.
UCI_REQUIRED: tuple[str, ...] = (
    "invoice_no",
    "stock_code",
    "quantity",
    "invoice_date",
    "unit_price",
    "country",
)

#: Stock codes that are not products: postage, discounts, manual entries,
#: fees and bank charges. Rows with them are kept in silver and flagged.
NON_PRODUCT_CODES: frozenset[str] = frozenset(
    {
        "POST",
        "DOT",
        "D",
        "M",
        "C2",
        "S",
        "B",
        "CRUK",
        "PADS",
        "BANK CHARGES",
        "AMAZONFEE",
        "ADJUST",
        "ADJUST2",
        "TEST001",
        "TEST002",
    }
)

#: Invoice prefix of a cancellation (negative quantities).
CANCELLATION_PREFIX = "C"
#: Invoice prefix of an accounting adjustment (e.g. "Adjust bad debt", negative price).
ADJUSTMENT_PREFIX = "A"

#: The silver transactions table.
SILVER_SCHEMA = pa.schema(
    [
        pa.field("invoice_no", pa.string()),
        pa.field("stock_code", pa.string()),
        pa.field("description", pa.string()),
        pa.field("quantity", pa.int64(), nullable=False),
        pa.field("invoice_date", pa.timestamp("us"), nullable=False),
        pa.field("unit_price", pa.float64()),
        pa.field("customer_id", pa.string()),
        pa.field("country", pa.string()),
        pa.field("total_amount", pa.float64(), nullable=False),
        pa.field("is_cancellation", pa.bool_(), nullable=False),
        pa.field("is_return", pa.bool_(), nullable=False),
        pa.field("is_non_product", pa.bool_(), nullable=False),
        pa.field("is_adjustment", pa.bool_(), nullable=False),
        pa.field("is_anomaly", pa.bool_()),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_hash", pa.string(), nullable=False),
        pa.field("source_row", pa.int64(), nullable=False),
        pa.field("ingest_run_id", pa.string(), nullable=False),
    ]
)

#: Silver columns that carry data rather than ingestion metadata.
SILVER_DATA_COLUMNS: tuple[str, ...] = tuple(
    name
    for name in SILVER_SCHEMA.names
    if name not in ("source_file", "source_hash", "source_row", "ingest_run_id")
)


@dataclass(frozen=True)
class ColumnMapping:
    """Which source column feeds each canonical column.

    Attributes:
        columns: ``canonical_column -> source_column``.
        explicit: True when read from a mapping file, False for the default
            (UCI headers recognised by :data:`HEADER_ALIASES`).
    """

    columns: Mapping[str, str] = field(default_factory=dict)
    explicit: bool = False

    @classmethod
    def from_dict(cls, data: object, *, source: str = "mapping") -> ColumnMapping:
        """Validate a ``canonical: source`` dict, reporting every problem at once."""
        if not isinstance(data, dict) or not data:
            raise ConfigError(
                problem(
                    "a YAML mapping of canonical_column: source_column lines",
                    f"{type(data).__name__} {data!r}"[:120],
                    "write one line per column, e.g. 'customer_id: CustomerID'",
                    subject=source,
                )
            )
        problems = []
        for key, value in data.items():
            if key not in MAPPABLE_COLUMNS:
                problems.append(
                    f"{key!r} is not a canonical column; expected one of "
                    f"{', '.join(MAPPABLE_COLUMNS)}"
                )
            if not isinstance(value, str | int) or str(value) == "":
                problems.append(f"{key!r} maps to {value!r}; expected a source column name")
        sources = [str(v) for v in data.values()]
        repeated = sorted({s for s in sources if sources.count(s) > 1})
        if repeated:
            problems.append(f"source columns used twice: {', '.join(map(repr, repeated))}")
        mapped = set(data)
        if "invoice_date" not in mapped or "quantity" not in mapped:
            problems.append("a mapping must name invoice_date and quantity")
        if not mapped & {"unit_price", "total_amount"}:
            problems.append("a mapping must name unit_price or total_amount")
        if problems:
            body = "\n".join(f"  - {p}" for p in problems)
            raise ConfigError(
                f"{source}: {len(problems)} problem(s) in the column mapping:\n{body}\n"
                "Fix: write 'canonical_column: source_column' lines for the columns "
                "your file has."
            )
        return cls({str(k): str(v) for k, v in data.items()}, explicit=True)

    @classmethod
    def load(cls, path: Path) -> ColumnMapping:
        """Read a mapping YAML file."""
        data = read_yaml_mapping(
            path, subject="--mapping", shape="canonical_column: source_column lines"
        )
        return cls.from_dict(data, source=str(path))

    def resolve(self, headers: list[str], *, subject: str) -> dict[str, str]:
        """Match this mapping to a file's headers.

        Returns:
            ``canonical -> actual header`` for every column the file provides.

        Raises:
            DataValidationError: naming the missing columns and the headers found.
        """
        from retailml.core.errors import DataValidationError

        if self.explicit:
            missing = [src for src in self.columns.values() if src not in headers]
            if missing:
                raise DataValidationError(
                    problem(
                        f"the mapped source columns {', '.join(map(repr, missing))}",
                        f"headers {headers!r}",
                        "correct the mapping file or the file's header row",
                        subject=subject,
                    )
                )
            return dict(self.columns)
        lowered = {h.strip().lower(): h for h in headers}
        resolved: dict[str, str] = {}
        for canonical, aliases in HEADER_ALIASES.items():
            for alias in aliases:
                if alias.lower() in lowered:
                    resolved[canonical] = lowered[alias.lower()]
                    break
        missing = [UCI_HEADERS[c] for c in UCI_REQUIRED if c not in resolved]
        if missing:
            raise DataValidationError(
                problem(
                    "the UCI Online Retail columns "
                    + ", ".join(UCI_HEADERS[c] for c in UCI_REQUIRED),
                    f"headers {headers!r} (missing {', '.join(missing)})",
                    "rename the columns, or pass --mapping FILE with "
                    "'canonical_column: source_column' lines",
                    subject=subject,
                )
            )
        return resolved
