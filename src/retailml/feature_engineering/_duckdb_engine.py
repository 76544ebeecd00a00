"""The DuckDB feature engine: SQL over the silver Parquet parts, Parquet out.

The silver parts are read in place (``read_parquet``), results go straight to
Parquet with ``COPY ... TO ... (FORMAT PARQUET, PARTITION_BY (...))``; no
table passes through pandas. DuckDB runs on every CPU the process may use
with a memory limit (half the memory it may use unless ``engine_options`` say
otherwise; both respect a cgroup's limits) and spills to the workspace's
``tmp`` directory beyond it.

Month-chunkable feature sets
(:attr:`~retailml.feature_engineering._definitions.FeatureSet.chunkable_by`)
are computed over windows of whole months of about ``window_rows`` silver
rows (:meth:`DuckDBEngine.write_by_month`): an aggregation's state then holds
one window's groups, not all of them, which bounds the memory and keeps the
hash tables small enough to be fast. The windows are planned from the
``invoice_date`` statistics in the Parquet footers. Ingestion writes silver in
source (time) order, so each window reads only its own row groups; parts that
are not in time order give the same rows, over fewer, larger windows.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from retailml.core.errors import DataValidationError, StateError, problem
from retailml.feature_engineering._definitions import DIMENSIONS, TRANSACTIONS, holiday_rows

logger = logging.getLogger(__name__)

#: Silver rows per time window of a month-chunkable feature set, by default.
#: Measured at 10M rows on 2 cores: windows of 0.5M to 1M rows (a month or
#: two) take 10-20% less CPU than one pass over all rows (smaller hash tables)
#: and a third of its peak memory; windows of 0.25M rows pay more per query
#: than they save.
WINDOW_ROWS = 1_000_000
#: Windows re-read row groups that span them; when planned windows would read
#: silver more than this many times over (parts not in time order), they are
#: merged into fewer, larger ones.
MAX_READS = 2.0

#: Feature sets computed at once, by default. Measured at 10M rows on 2 cores:
#: two connections of one thread each, computing different sets, finish the
#: five sets in about 15% less time than one connection of two threads
#: computing them in turn (a hash aggregation on two threads takes well over
#: half the time it takes on one, and the Python between queries, validation
#: and the holiday calendar, then overlaps the other set's query). More
#: connections than 2 would leave the largest set's query on too few threads.
CONCURRENT_SETS = 2

#: ``engine_options`` the DuckDB engine accepts.
OPTIONS: dict[str, tuple[type, str]] = {
    "threads": (int, "worker threads (default: every CPU the process may use)"),
    "memory_limit": (str, "DuckDB memory limit, e.g. '4GB' (default: half the memory)"),
    "window_rows": (
        int,
        f"silver rows per time window of a month-chunkable feature set (default {WINDOW_ROWS})",
    ),
    "concurrent_sets": (
        int,
        "feature sets computed at once, each on its own connection with an equal share of "
        f"the threads and memory (default: {CONCURRENT_SETS}, or 1 with one thread)",
    ),
}

#: Where the cgroup file systems are mounted (version 2, or version 1's controllers).
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _read_number(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, ValueError):
        return None


def cgroup_limits(root: Path = CGROUP_ROOT) -> tuple[float | None, int | None]:
    """The CPU quota (in CPUs) and memory limit (bytes) of the cgroup at ``root``.

    Reads cgroup v2's ``cpu.max`` and ``memory.max``, else v1's
    ``cpu/cpu.cfs_quota_us``, ``cpu/cpu.cfs_period_us`` and
    ``memory/memory.limit_in_bytes`` (a container sees its own cgroup there).

    Returns:
        ``(cpus, memory)``, each None when unlimited or unknown.
    """
    cpus: float | None = None
    v2 = _read_number(root / "cpu.max")
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        if quota.isdigit() and period.isdigit() and int(period) > 0:
            cpus = int(quota) / int(period)
    else:
        quota = _read_number(root / "cpu" / "cpu.cfs_quota_us") or ""
        period = _read_number(root / "cpu" / "cpu.cfs_period_us") or ""
        if quota.isdigit() and period.isdigit() and int(period) > 0:  # -1: no quota
            cpus = int(quota) / int(period)
    memory: int | None = None
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        text = _read_number(path)
        if text is not None:
            # v2 says "max"; v1 says a number near 2**63 for no limit (above any machine).
            memory = int(text) if text.isdigit() and int(text) < 2**62 else None
            break
    return cpus, memory


def available_cpus(root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may run on: its affinity, capped by a cgroup CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        count = os.cpu_count() or 1
    cpus, _ = cgroup_limits(root)
    if cpus is not None:
        # A quota of 1.5 CPUs throttles two busy threads; one thread is not throttled.
        count = min(count, max(1, math.floor(cpus)))
    return count


def available_memory(root: Path = CGROUP_ROOT) -> int | None:
    """Bytes of memory this process may use: physical memory, capped by a cgroup limit."""
    try:
        physical: int | None = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        physical = None
    _, limit = cgroup_limits(root)
    known = [m for m in (physical, limit) if m]
    return min(known) if known else None


def default_memory_limit(root: Path = CGROUP_ROOT) -> str:
    """Half the memory this process may use, in DuckDB's notation (``'11GB'``)."""
    total = available_memory(root)
    if total is None:  # pragma: no cover - non-POSIX
        return "4GB"
    return f"{max(total // 2 // (1 << 20), 256)}MB"


#: DuckDB's size units, in bytes (its ``KB``, ``MB``... are powers of 1000).
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "bytes": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def memory_bytes(limit: str) -> int | None:
    """A DuckDB memory size (``'4GB'``, ``'512MiB'``) in bytes; None if it is not one."""
    match = _SIZE.match(limit)
    if match is None or match.group(2).lower() not in _SIZE_UNITS:
        return None
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def check_options(options: Mapping[str, Any]) -> list[str]:
    """Problems with DuckDB ``engine_options`` values beyond their types."""
    limit = options.get("memory_limit")
    if limit is not None and memory_bytes(str(limit)) is None:
        return [
            f"engine_options.memory_limit: expected a size such as '4GB' or '512MiB' "
            f"(units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB); got {limit!r}"
        ]
    return []


def session_options(options: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The options of each connection computing feature sets at once.

    ``concurrent_sets`` connections (default :data:`CONCURRENT_SETS`, never
    more than the threads) share ``threads`` (the first ones get one more
    when they do not divide evenly) and ``memory_limit`` (equally).
    """
    threads = int(options.get("threads") or available_cpus())
    wanted = int(options.get("concurrent_sets") or CONCURRENT_SETS)
    sessions = max(1, min(wanted, threads))
    limit = str(options.get("memory_limit") or default_memory_limit())
    total = memory_bytes(limit)
    share = limit if total is None or sessions == 1 else f"{total // sessions // 1024}KiB"
    each, extra = divmod(threads, sessions)
    return [
        {
            **options,
            "threads": each + (1 if number < extra else 0),
            "memory_limit": share,
            "concurrent_sets": 1,
        }
        for number in range(sessions)
    ]


def _literal(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _timestamp(value: dt.datetime) -> str:
    return f"TIMESTAMP '{value:%Y-%m-%d %H:%M:%S}'"


def _month_start(value: dt.datetime) -> dt.datetime:
    return dt.datetime(value.year, value.month, 1)


def _next_month(value: dt.datetime) -> dt.datetime:
    return dt.datetime(value.year + value.month // 12, value.month % 12 + 1, 1)


@dataclass(frozen=True)
class _RowGroup:
    """One silver row group with dates, by its ``invoice_date`` statistics."""

    rows: int
    first: dt.datetime
    last: dt.datetime


def _row_groups(parts: Sequence[Path]) -> tuple[list[_RowGroup], bool] | None:
    """Every row group's ``invoice_date`` range, and whether any row may lack a date.

    Returns:
        None when a footer cannot tell (no statistics, or not naive timestamps).
    """
    groups: list[_RowGroup] = []
    nulls = False
    for part in parts:
        try:
            metadata = pq.ParquetFile(part).metadata
        except (OSError, pa.ArrowException):
            return None  # one pass, where DuckDB reports what is wrong with the part
        for index in range(metadata.num_row_groups):
            group = metadata.row_group(index)
            stats = next(
                (
                    group.column(c).statistics
                    for c in range(group.num_columns)
                    if group.column(c).path_in_schema == "invoice_date"
                ),
                None,
            )
            if group.num_rows == 0:
                continue
            if stats is None or not stats.has_null_count:
                return None
            nulls = nulls or stats.null_count > 0
            if stats.null_count == group.num_rows:
                continue  # no dates at all: no range
            if not stats.has_min_max:
                return None
            first, last = stats.min, stats.max
            naive = [isinstance(v, dt.datetime) and v.tzinfo is None for v in (first, last)]
            if not all(naive):
                return None
            groups.append(_RowGroup(group.num_rows, first, last))
    return groups, nulls


def _rows_by_month(groups: Sequence[_RowGroup]) -> dict[dt.datetime, float]:
    """Estimated rows per month: a row group spanning months is spread over them by time."""
    months: dict[dt.datetime, float] = {}
    for group in groups:
        span = (group.last - group.first).total_seconds()
        month = _month_start(group.first)
        while month <= group.last:
            end = _next_month(month)
            if span > 0:
                overlap = (min(group.last, end) - max(group.first, month)).total_seconds()
                share = max(overlap, 0.0) / span
            else:
                share = 1.0
            months[month] = months.get(month, 0.0) + group.rows * share
            month = end
    return dict(sorted(months.items()))


def _pack(months: Mapping[dt.datetime, float], window_rows: float) -> list[dt.datetime]:
    """Starts of the 2nd, 3rd, ... window: consecutive months up to ``window_rows`` rows each."""
    starts: list[dt.datetime] = []
    held = 0.0
    for month, rows in months.items():
        if held and held + rows > window_rows:
            starts.append(month)
            held = 0.0
        held += rows
    return starts


def _reads(groups: Sequence[_RowGroup], starts: Sequence[dt.datetime]) -> float:
    """How many times over the windows starting at ``starts`` read silver's rows."""
    bounds = [dt.datetime.min, *starts, dt.datetime.max]
    read = 0
    for low, high in itertools.pairwise(bounds):
        read += sum(g.rows for g in groups if g.first < high and g.last >= low)
    return read / max(sum(g.rows for g in groups), 1)


def month_windows(parts: Sequence[Path], window_rows: int) -> list[str]:
    """SQL conditions on ``invoice_date`` that split the silver rows into windows of whole months.

    Together the conditions take every row exactly once: the first and last
    windows are open-ended, and rows without an ``invoice_date`` (if any) are
    a window of their own. Each window holds consecutive months of about
    ``window_rows`` rows in all, as far as the Parquet statistics tell.

    Returns:
        The conditions, or an empty list for one pass over all rows (the data
        fits one window, or a footer has no ``invoice_date`` statistics).
    """
    found = _row_groups(parts)
    if found is None or not found[0]:
        return []
    groups, nulls = found
    months = _rows_by_month(groups)
    limit = float(window_rows)
    starts = _pack(months, limit)
    # Parts not in time order: every window would read most row groups.
    while starts and _reads(groups, starts) > MAX_READS:
        limit *= 2
        starts = _pack(months, limit)
    if not starts:
        return []
    bounds = [_timestamp(start) for start in starts]
    conditions = [f"invoice_date < {bounds[0]}"]
    conditions += [
        f"invoice_date >= {low} AND invoice_date < {high}"
        for low, high in itertools.pairwise(bounds)
    ]
    conditions.append(f"invoice_date >= {bounds[-1]}")
    if nulls:
        conditions.append("invoice_date IS NULL")
    return conditions


def _move_files(source: Path, directory: Path) -> None:
    """Move every file under ``source`` to the same relative path under ``directory``.

    Raises:
        StateError: If a file is already there: two windows wrote the same
            partition, so a definition's ``chunkable_by`` is wrong.
    """
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        target = directory / path.relative_to(source)
        if target.exists():
            raise StateError(
                f"two time windows wrote {str(target.relative_to(directory))!r}: the feature "
                "set's rows do not each come from one month; declare chunkable_by=None"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        path.replace(target)


class DuckDBEngine:
    """A DuckDB session over the silver transactions.

    Args:
        parts: The silver Parquet parts to read (a fixed list, so files that
            land during a run do not change what it reads).
        scratch: Directory DuckDB may spill to.
        options: Validated ``engine_options`` (``threads``, ``memory_limit``,
            ``window_rows``).
    """

    name = "duckdb"

    def __init__(self, parts: Sequence[Path], scratch: Path, options: Mapping[str, Any]) -> None:
        self.parts = list(parts)
        self.scratch = scratch
        self.threads = int(options.get("threads") or available_cpus())
        self.memory_limit = str(options.get("memory_limit") or default_memory_limit())
        self.window_rows = int(options.get("window_rows") or WINDOW_ROWS)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._relations: set[str] = set()
        self._bounds: tuple[dt.date, dt.date] | None = None
        self._bounds_read = False
        self._windows: list[str] | None = None

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
        self._define_transactions()
        self._relations.add(TRANSACTIONS)
        return self

    def _define_transactions(self, condition: str | None = None) -> None:
        """(Re)define the ``transactions`` view: all silver rows, or those meeting ``condition``."""
        files = ", ".join(_literal(str(p)) for p in self.parts)
        where = f" WHERE {condition}" if condition else ""
        self.con.execute(
            f"CREATE OR REPLACE VIEW {TRANSACTIONS} AS "
            f"SELECT * FROM read_parquet([{files}], union_by_name = true){where}"
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def interrupt(self) -> None:
        """Cancel the query this session is running (safe from another thread)."""
        if self._con is not None:
            self._con.interrupt()

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
        """The data's first and last day (read once: dim_dates and dim_holidays both ask).

        From the ``invoice_date`` statistics in the Parquet footers, which
        hold the exact least and greatest timestamp of each row group; by a
        scan when a footer has none.
        """
        if not self._bounds_read:
            found = _row_groups(self.parts)
            if found is not None:
                groups, _ = found
                self._bounds = (
                    (min(g.first for g in groups).date(), max(g.last for g in groups).date())
                    if groups
                    else None
                )
            else:
                ((first, last),) = self.con.execute(
                    f"SELECT CAST(MIN(invoice_date) AS DATE), CAST(MAX(invoice_date) AS DATE) "
                    f"FROM {TRANSACTIONS}"
                ).fetchall()
                self._bounds = None if first is None else (first, last)
            self._bounds_read = True
        return self._bounds

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

    def write_by_month(self, sql: str, directory: Path, partitioning: Sequence[str]) -> int:
        """Run ``sql``, whose every row comes from one month, window by window into ``directory``.

        The caller guarantees what
        :attr:`~retailml.feature_engineering._definitions.FeatureSet.chunkable_by`
        declares: each row aggregates the transactions of one calendar month
        and is partitioned under it. Each window's rows are then the rows of
        its months, written to partitions no other window writes, and the
        files hold what :meth:`write` would write. With a layout not
        partitioned by year and month, or silver that fits one window, this
        is :meth:`write`.

        Returns:
            The number of rows written.

        Raises:
            DataValidationError: As :meth:`write`.
            StateError: If two windows wrote the same partition (the SQL's
                rows do not come from one month each).
        """
        if set(partitioning) != {"year", "month"}:
            return self.write(sql, directory, partitioning)
        if self._windows is None:
            self._windows = month_windows(self.parts, self.window_rows)
        windows = self._windows
        if not windows:
            return self.write(sql, directory, partitioning)
        logger.debug("computing in %d time windows of ~%d rows", len(windows), self.window_rows)
        rows = 0
        try:
            for number, condition in enumerate(windows):
                self._define_transactions(condition)
                # A hidden directory: readers of the staged version skip it.
                window = directory / f".window-{number}"
                window.mkdir()
                rows += self.write(sql, window, partitioning)
                _move_files(window, directory)
                shutil.rmtree(window)
        finally:
            self._define_transactions()
        return rows
