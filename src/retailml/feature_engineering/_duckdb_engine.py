"""The DuckDB feature engine: SQL over the silver Parquet parts, Parquet out.

The silver parts are read in place (``read_parquet``), results go straight to
Parquet with ``COPY ... TO ... (FORMAT PARQUET, PARTITION_BY (...))``; no
table passes through pandas. DuckDB runs on every core with a memory limit
(half the machine's memory unless ``engine_options`` say otherwise) and
spills to the workspace's ``tmp`` directory beyond it.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb
import pyarrow as pa

from retailml.core.errors import DataValidationError, StateError, problem
from retailml.feature_engineering._definitions import DIMENSIONS, TRANSACTIONS, holiday_rows

logger = logging.getLogger(__name__)

#: ``engine_options`` the DuckDB engine accepts.
OPTIONS: dict[str, tuple[type, str]] = {
    "threads": (int, "worker threads (default: every CPU)"),
    "memory_limit": (str, "DuckDB memory limit, e.g. '4GB' (default: half the memory)"),
}


def default_memory_limit() -> str:
    """Half the physical memory, in DuckDB's notation (``'11GB'``)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return "4GB"
    return f"{max(total // 2 // (1 << 20), 256)}MB"


def _literal(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class DuckDBEngine:
    """A DuckDB session over the silver transactions.

    Args:
        parts: The silver Parquet parts to read (a fixed list, so files that
            land during a run do not change what it reads).
        scratch: Directory DuckDB may spill to.
        options: Validated ``engine_options`` (``threads``, ``memory_limit``).
    """

    name = "duckdb"

    def __init__(self, parts: Sequence[Path], scratch: Path, options: Mapping[str, Any]) -> None:
        self.parts = list(parts)
        self.scratch = scratch
        self.threads = int(options.get("threads") or os.cpu_count() or 1)
        self.memory_limit = str(options.get("memory_limit") or default_memory_limit())
        self._con: duckdb.DuckDBPyConnection | None = None
        self._relations: set[str] = set()

    def __enter__(self) -> DuckDBEngine:
        self.scratch.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(
                ":memory:",
                config={
                    "threads": self.threads,
                    "memory_limit": self.memory_limit,
                    "temp_directory": str(self.scratch),
                    # Output order does not matter; not keeping it saves memory.
                    "preserve_insertion_order": False,
                },
            )
        except duckdb.Error as exc:
            raise StateError(
                problem(
                    "a DuckDB session with the configured options",
                    f"{exc}",
                    "check engine_options (threads: a positive int, memory_limit: e.g. '4GB')",
                    subject="duckdb engine",
                )
            ) from exc
        files = ", ".join(_literal(str(p)) for p in self.parts)
        self.con.execute(
            f"CREATE VIEW {TRANSACTIONS} AS "
            f"SELECT * FROM read_parquet([{files}], union_by_name = true)"
        )
        self._relations.add(TRANSACTIONS)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The open connection."""
        if self._con is None:
            raise StateError("DuckDBEngine is not open; use it in a 'with' block")
        return self._con

    def add_relations(self, names: Sequence[str]) -> None:
        """Create the dimension views and calendar tables ``names`` lists (idempotent)."""
        for name in names:
            if name in self._relations:
                continue
            if name in DIMENSIONS:
                self.con.execute(f"CREATE VIEW {_identifier(name)} AS {DIMENSIONS[name]}")
            elif name == "dim_dates":
                self._register("dim_dates", self._dates())
            elif name == "dim_holidays":
                self._register("dim_holidays", self._holidays())
            else:
                raise StateError(f"DuckDBEngine cannot build relation {name!r}")
            self._relations.add(name)

    def _register(self, name: str, table: pa.Table) -> None:
        self.con.register(f"_{name}_arrow", table)
        self.con.execute(f"CREATE TABLE {_identifier(name)} AS SELECT * FROM _{name}_arrow")
        self.con.unregister(f"_{name}_arrow")

    def _date_range(self) -> tuple[dt.date, dt.date] | None:
        ((first, last),) = self.con.execute(
            f"SELECT CAST(MIN(invoice_date) AS DATE), CAST(MAX(invoice_date) AS DATE) "
            f"FROM {TRANSACTIONS}"
        ).fetchall()
        return None if first is None else (first, last)

    def _dates(self) -> pa.Table:
        """``dim_dates(date)``: every day from the data's first to its last."""
        bounds = self._date_range()
        days: list[dt.date] = []
        if bounds is not None:
            first, last = bounds
            days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
        return pa.table({"date": pa.array(days, type=pa.date32())})

    def _holidays(self) -> pa.Table:
        """``dim_holidays(country, holiday_date)`` for the countries and years in the data."""
        bounds = self._date_range()
        rows: list[tuple[str, dt.date]] = []
        if bounds is not None:
            countries = [
                r[0]
                for r in self.con.execute(
                    f"SELECT DISTINCT country FROM {TRANSACTIONS} WHERE country IS NOT NULL"
                ).fetchall()
            ]
            rows = holiday_rows(countries, range(bounds[0].year, bounds[1].year + 1))
        return pa.table(
            {
                "country": pa.array([r[0] for r in rows], type=pa.string()),
                "holiday_date": pa.array([r[1] for r in rows], type=pa.date32()),
            }
        )

    def write(self, sql: str, directory: Path, partitioning: Sequence[str]) -> int:
        """Run ``sql`` and write its rows as Parquet under ``directory``.

        With ``partitioning`` the files land in Hive-style directories
        (``year=2011/month=12/data_0.parquet``); without, in one file.

        Returns:
            The number of rows written.

        Raises:
            DataValidationError: If DuckDB cannot run the query over the data
                (e.g. a silver part with an unexpected column type).
        """
        if partitioning:
            columns = ", ".join(_identifier(c) for c in partitioning)
            target = _literal(str(directory))
            options = f"FORMAT PARQUET, PARTITION_BY ({columns})"
        else:
            target = _literal(str(directory / "data_0.parquet"))
            options = "FORMAT PARQUET"
        try:
            rows = self.con.execute(f"COPY ({sql}) TO {target} ({options})").fetchall()
        except duckdb.Error as exc:
            raise DataValidationError(
                problem(
                    "silver transactions the feature SQL can read",
                    f"a DuckDB error: {exc}",
                    "re-ingest the data with 'retailml data ingest' so every part has "
                    "the silver schema",
                    subject="duckdb engine",
                )
            ) from exc
        return int(rows[0][0]) if rows else 0
