"""Ingest transaction files into bronze, silver and quarantine.

One call of :func:`ingest_file` turns a CSV, Excel (.xlsx) or Parquet file into

* bronze, ``data/bronze/<source_hash[:16]>.parquet``: every source column as
  read (text), plus ``_source_file``, ``_source_hash``, ``_source_row``
  (1-based data row), ``_ingested_at`` and ``_ingest_run_id``;
* silver, ``data/silver/transactions/part-<run_id>.parquet``: typed, cleaned
  rows with exactly :data:`~retailml.data.schema.SILVER_SCHEMA`;
* quarantine, ``data/quarantine/part-<run_id>.parquet``: rows that cannot be
  used, as read, with ``_source_row`` and a ``reason``;
* a data-quality report, ``reports/quality/<run_id>.json``;
* an :class:`~retailml.core.db.IngestionRun` and a
  :class:`~retailml.core.db.DataVersion` of ``silver.transactions`` in the
  platform database.

Every row read ends in exactly one place, in this order, so the counts
reconcile (``rows_read == silver_rows + quarantined_rows + duplicates_removed``):

1. **Duplicates first.** Rows identical in the raw text of every source column
   are exact duplicates; the first (lowest source row) is kept, the others are
   counted in ``duplicates_removed`` whether or not the row is valid. A
   duplicated bad row is therefore quarantined once.
2. **Quarantine.** Each kept row is checked against :data:`QUARANTINE_REASONS`
   in order; the first rule it fails is its one reason.
3. **Silver.** Everything else, typed and flagged. Cancellations, returns,
   non-product rows, adjustments and zero prices are kept and flagged.

Typing rules: text is stripped and empty text is null; ``quantity`` is an
integer (``"6"``, or ``"6.0"`` as Excel writes it; ``"1.5"`` is not);
prices and amounts are decimal numbers (no currency signs, ``nan`` or
``inf``); ``customer_id`` loses a zero fraction (``"17850.0"`` -> ``"17850"``);
``invoice_date`` is read with ``date_format`` (strftime codes, e.g.
``%Y%m%d``) or, without one, as UCI's month/day/year ``12/1/2010 8:26``. ISO
8601 (``2010-12-01 08:26:00``) is always accepted, which is how Excel date
cells and Parquet timestamps arrive; ISO times with an offset are converted to
UTC.

CSV files must be UTF-8 (a UTF-8 byte-order mark is accepted); UTF-16 and
other encodings are rejected with the ``iconv`` command that converts them,
because guessing an encoding silently corrupts descriptions.

Ingestion is idempotent (a file is known by the SHA-256 of its bytes) and
atomic: outputs are staged under ``<workspace>/tmp`` and renamed into place,
the database rows are committed last, and a failed commit removes the renamed
files again. Ingestions into one workspace take turns (a lock file in
``tmp``). The work is columnar: pyarrow reads and writes, DuckDB types,
deduplicates and checks the rows with a bounded memory budget, spilling to
disk for files larger than memory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from retailml.core.db import DataVersion, IngestionRun, PlatformDB, new_id, utcnow
from retailml.core.errors import (
    ConfigError,
    DataValidationError,
    InputFileError,
    StateError,
    problem,
)
from retailml.core.io import sha256_file
from retailml.core.lineage import Dataset, emit_run
from retailml.core.settings import Settings, get_settings
from retailml.core.workspace import Workspace
from retailml.data._readers import (
    Source,
    check_input_file,
    file_format,
    open_source,
)
from retailml.data.schema import (
    ADJUSTMENT_PREFIX,
    CANCELLATION_PREFIX,
    MAPPABLE_COLUMNS,
    NON_PRODUCT_CODES,
    SILVER_SCHEMA,
    ColumnMapping,
)

logger = logging.getLogger(__name__)

__all__ = [
    "FLAG_NAMES",
    "QUARANTINE_REASONS",
    "SILVER_TABLE",
    "IngestResult",
    "QualityReport",
    "ingest_file",
    "read_silver",
]

#: The table name data versions of silver transactions are recorded under.
SILVER_TABLE = "silver.transactions"

#: Quarantine rules in the order they are checked; a row gets the first that fails.
#:
#: - ``empty_invoice``: the invoice column is mapped but empty.
#: - ``missing_stock_code``: the stock code column is mapped but empty.
#: - ``missing_date``: no invoice date.
#: - ``unparseable_date``: the date matches neither ``date_format`` nor ISO 8601
#:   (nor UCI's month/day/year when no format is given).
#: - ``invalid_quantity``: quantity missing or not an integer.
#: - ``invalid_price``: unit price present but not a finite decimal number.
#: - ``missing_price``: no unit price (and no amount column to fall back on).
#: - ``negative_price``: unit price below zero on an invoice that is not an
#:   ``A...`` accounting adjustment.
#: - ``invalid_amount``: the mapped total amount is present but not a number.
#: - ``missing_amount``: neither an amount nor quantity times unit price.
QUARANTINE_REASONS: tuple[str, ...] = (
    "empty_invoice",
    "missing_stock_code",
    "missing_date",
    "unparseable_date",
    "invalid_quantity",
    "invalid_price",
    "missing_price",
    "negative_price",
    "invalid_amount",
    "missing_amount",
)

#: Counts the report gives about rows kept in silver.
FLAG_NAMES: tuple[str, ...] = (
    "cancellations",
    "returns",
    "non_product",
    "adjustments",
    "zero_price",
    "missing_customer_id",
    "missing_description",
)

#: Date layouts tried when no ``date_format`` is given: UCI Online Retail's.
UCI_DATE_FORMATS: tuple[str, ...] = ("%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y")

_QUALITY_DIR = "quality"
_SOURCE_HASH_KEY = b"retailml.source_hash"
_RUN_ID_KEY = b"retailml.ingest_run_id"
_BATCH_ROWS = 131_072
_DUCKDB_MEMORY = "2GB"
_COMPRESSION = "zstd"
# What str.strip() removes for the characters that occur in real exports.
_WHITESPACE = " \t\n\r\x0b\x0c\xa0"
_NUMBER_RE = r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?"
_INTEGER_RE = r"[+-]?[0-9]+(\.0*)?"
_ISO_DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
_ISO_TIME = r"[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?"
_ISO_NAIVE_RE = rf"{_ISO_DATE}([T ]{_ISO_TIME})?"
_ISO_ZONED_RE = rf"{_ISO_DATE}[T ]{_ISO_TIME} ?(Z|[+-][0-9]{{2}}(:?[0-9]{{2}})?)"

ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class QualityReport:
    """What one ingestion found: counts per outcome, per quarantine reason and per flag.

    Attributes:
        source_file: Absolute path of the file read.
        source_hash: SHA-256 of its bytes.
        file_format: ``csv``, ``xlsx`` or ``parquet``.
        rows_read: Data rows in the file.
        silver_rows: Rows written to silver.
        quarantined_rows: Rows written to quarantine.
        duplicates_removed: Exact duplicates dropped (first occurrence kept).
        quarantine_reasons: ``reason -> rows``, in :data:`QUARANTINE_REASONS`
            order, only reasons that occurred.
        flags: ``flag -> rows`` among silver rows, every name of :data:`FLAG_NAMES`.
        reconciles: Whether ``rows_read == silver + quarantined + duplicates``.
    """

    source_file: str
    source_hash: str
    file_format: str
    rows_read: int
    silver_rows: int
    quarantined_rows: int
    duplicates_removed: int
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    flags: dict[str, int] = field(default_factory=dict)
    reconciles: bool = True

    def to_dict(self) -> dict[str, object]:
        """The report as plain JSON-compatible values."""
        return asdict(self)

    def to_json(self) -> str:
        """The report as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QualityReport:
        """Rebuild a report written by :meth:`to_dict` (unknown keys are ignored)."""
        return cls(
            source_file=str(data["source_file"]),
            source_hash=str(data["source_hash"]),
            file_format=str(data["file_format"]),
            rows_read=int(data["rows_read"]),
            silver_rows=int(data["silver_rows"]),
            quarantined_rows=int(data["quarantined_rows"]),
            duplicates_removed=int(data["duplicates_removed"]),
            quarantine_reasons={str(k): int(v) for k, v in data["quarantine_reasons"].items()},
            flags={str(k): int(v) for k, v in data["flags"].items()},
            reconciles=bool(data["reconciles"]),
        )

    def summary(self) -> str:
        """The report for people: plain text, one number per line."""
        lines = [
            f"Data-quality report for {self.source_file}",
            f"format: {self.file_format}",
            f"source sha256: {self.source_hash}",
            f"rows read: {self.rows_read}",
            f"silver rows: {self.silver_rows}",
            f"quarantined rows: {self.quarantined_rows}",
        ]
        lines += [f"  {reason}: {count}" for reason, count in self.quarantine_reasons.items()]
        lines.append(f"duplicates removed: {self.duplicates_removed}")
        lines.append("flagged rows kept in silver:")
        lines += [f"  {name}: {count}" for name, count in self.flags.items()]
        verdict = "yes" if self.reconciles else "NO"
        lines.append(
            f"reconciles: {verdict} ({self.rows_read} read = {self.silver_rows} silver + "
            f"{self.quarantined_rows} quarantined + {self.duplicates_removed} duplicates)"
        )
        return "\n".join(lines)


@dataclass(frozen=True)
class IngestResult:
    """The outcome of :func:`ingest_file`.

    Attributes:
        run_id: The ingestion run (for ``already_ingested``, the earlier run).
        status: ``ingested``, or ``already_ingested`` when the same bytes were
            ingested before and nothing changed.
        report: The data-quality report of the run.
        bronze_path: The bronze file.
        silver_path: The run's silver part.
        quarantine_path: The run's quarantine part, or None if no row was quarantined.
        report_path: The JSON report.
        data_version: The version of silver transactions now current.
    """

    run_id: str
    status: Literal["ingested", "already_ingested"]
    report: QualityReport
    bronze_path: Path
    silver_path: Path
    quarantine_path: Path | None
    report_path: Path
    data_version: str


def ingest_file(
    path: Path,
    *,
    mapping: ColumnMapping | None = None,
    date_format: str | None = None,
    settings: Settings | None = None,
    db: PlatformDB | None = None,
    progress: ProgressCallback | None = None,
) -> IngestResult:
    """Ingest one transaction file into bronze, silver and quarantine.

    Args:
        path: A ``.csv`` (UTF-8), ``.xlsx`` or ``.parquet`` file with a header row.
        mapping: Which source column feeds each canonical column; default: UCI
            headers and their aliases.
        date_format: strftime format of the dates (e.g. ``%Y%m%d``); default:
            the ``date_format`` setting, else UCI's month/day/year. ISO 8601 is
            always accepted.
        settings: Settings naming the workspace; default: :func:`get_settings`.
        db: The platform database, already migrated; default: the one the
            settings name (migrated on open).
        progress: Called as ``progress(stage, done, total)`` a few times per
            stage (``read``, ``validate``, ``write``).

    Returns:
        The run, its report and the paths written.

    Raises:
        InputFileError: The file is missing, empty, of the wrong type or
            encoding, corrupt, or lacks required columns. Nothing is written
            to bronze, silver, quarantine, reports or the database; problems
            visible in the header or the first block are found before the
            workspace is even created.
        ConfigError: ``date_format`` is not a strftime format.
        StateError: The database rejected the run for a reason other than a
            concurrent ingestion of the same file (files are rolled back).
    """
    started_at = utcnow()
    path = Path(path)
    report_progress = _Progress(progress)
    settings = settings or get_settings()
    if date_format is None:
        date_format = settings.date_format
    _check_date_format(date_format)

    # Everything that can reject the input happens before the workspace is touched.
    check_input_file(path)
    fmt = file_format(path)
    with open_source(path, fmt) as source:
        resolved = _resolve_columns(mapping or ColumnMapping(), source)
        batches = _non_empty(source)
        source_hash = sha256_file(path)

        workspace = Workspace.from_settings(settings)
        workspace.init()
        # The lock also covers opening (and so migrating) the default database:
        # processes racing to create a fresh SQLite schema would collide.
        with _ingest_lock(workspace):
            platform_db = db if db is not None else PlatformDB.from_settings(settings)
            try:
                existing = _find_run(platform_db, source_hash)
                if existing is not None:
                    return _earlier_result(existing, workspace, platform_db)
                result = _ingest(
                    _Run(
                        run_id=new_id(),
                        path=path.resolve(),
                        file_format=fmt,
                        source_hash=source_hash,
                        resolved=resolved,
                        date_format=date_format,
                        started_at=started_at,
                        workspace=workspace,
                        db=platform_db,
                        progress=report_progress,
                    ),
                    source,
                    batches,
                )
            finally:
                if db is None:
                    platform_db.dispose()
        emit_run(
            "ingest",
            inputs=[Dataset(f"file.{path.name}", source_hash[:16])],
            outputs=[
                Dataset(f"bronze.{source_hash[:16]}", source_hash[:16]),
                Dataset(SILVER_TABLE, result.data_version),
            ],
            description="ingestion: source file -> bronze (as read) -> silver (typed, cleaned)",
            parameters={
                "rows_read": result.report.rows_read,
                "silver_rows": result.report.silver_rows,
                "quarantined_rows": result.report.quarantined_rows,
            },
            transformations=["type", "deduplicate", "flag", "quarantine"],
            settings=settings,
        )
        return result


def read_silver(settings: Settings | None = None) -> pa.Table:
    """Every silver transactions part as one table with :data:`SILVER_SCHEMA`.

    Parts are concatenated in the order they were written. With no part yet,
    the table is empty.
    """
    workspace = Workspace.from_settings(settings)
    parts = _silver_parts(workspace)
    if not parts:
        return SILVER_SCHEMA.empty_table()
    tables = [pq.read_table(part).cast(SILVER_SCHEMA) for part in parts]
    return pa.concat_tables(tables).replace_schema_metadata(None)


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class _Run:
    run_id: str
    path: Path
    file_format: str
    source_hash: str
    resolved: dict[str, str]
    date_format: str | None
    started_at: datetime
    workspace: Workspace
    db: PlatformDB
    progress: _Progress

    @property
    def bronze_path(self) -> Path:
        return self.workspace.bronze / f"{self.source_hash[:16]}.parquet"

    @property
    def silver_path(self) -> Path:
        return self.workspace.transactions / f"part-{self.run_id}.parquet"

    @property
    def quarantine_path(self) -> Path:
        return self.workspace.quarantine / f"part-{self.run_id}.parquet"

    @property
    def report_path(self) -> Path:
        return self.workspace.reports / _QUALITY_DIR / f"{self.run_id}.json"


def _ingest(
    run: _Run, source: Source, batches: Iterator[tuple[pa.RecordBatch, int]]
) -> IngestResult:
    stage = run.workspace.tmp / f"ingest-{run.run_id}"
    stage.mkdir(parents=True)
    try:
        bronze = stage / "bronze.parquet"
        rows_read = _stage_bronze(run, source, batches, bronze)
        report, silver, quarantine = _stage_outputs(run, source.headers, bronze, rows_read, stage)
        report_file = stage / "report.json"
        report_file.write_text(report.to_json(), encoding="utf-8")

        previous = run.db.latest_data_version(SILVER_TABLE)
        hashes, row_count = _existing_parts(run.workspace)
        version = DataVersion(
            table_name=SILVER_TABLE,
            version=_silver_version([*hashes, run.source_hash]),
            parent_version=previous.version if previous else None,
            row_count=row_count + report.silver_rows,
            created_at=utcnow(),
            ingestion_run_id=run.run_id,
        )
        # Silver last: a reader never sees a part whose bronze or report is missing.
        moves = [(bronze, run.bronze_path), (report_file, run.report_path)]
        if quarantine is not None:
            moves.append((quarantine, run.quarantine_path))
        moves.append((silver, run.silver_path))
        published = _publish(moves)
        try:
            _record_run(run.db, _run_row(run, report), version)
        except IntegrityError as exc:
            _unpublish(published)
            # Another process ingested the same bytes between our check and our commit.
            winner = _find_run(run.db, run.source_hash)
            if winner is not None:
                return _earlier_result(winner, run.workspace, run.db)
            raise StateError(
                problem(
                    "a new ingestion run and data version",
                    f"a database conflict ({exc.orig!r})",
                    "check the data_versions table of the platform database; no file was changed",
                    subject=str(run.path),
                )
            ) from exc
        except BaseException:
            _unpublish(published)
            raise
        logger.info(
            "ingested %s: %d read, %d silver, %d quarantined, %d duplicates (run %s)",
            run.path,
            report.rows_read,
            report.silver_rows,
            report.quarantined_rows,
            report.duplicates_removed,
            run.run_id,
        )
        return IngestResult(
            run_id=run.run_id,
            status="ingested",
            report=report,
            bronze_path=run.bronze_path,
            silver_path=run.silver_path,
            quarantine_path=run.quarantine_path if quarantine is not None else None,
            report_path=run.report_path,
            data_version=version.version,
        )
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _stage_bronze(
    run: _Run, source: Source, batches: Iterator[tuple[pa.RecordBatch, int]], target: Path
) -> int:
    """Write every batch as read, plus ingestion metadata; return the row count."""
    schema = pa.schema(
        [pa.field(name, pa.string()) for name in source.headers]
        + [
            pa.field("_source_file", pa.string(), nullable=False),
            pa.field("_source_hash", pa.string(), nullable=False),
            pa.field("_source_row", pa.int64(), nullable=False),
            pa.field("_ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("_ingest_run_id", pa.string(), nullable=False),
        ],
        metadata={_SOURCE_HASH_KEY: run.source_hash.encode(), _RUN_ID_KEY: run.run_id.encode()},
    )
    constants = [
        pa.scalar(str(run.path), pa.string()),
        pa.scalar(run.source_hash, pa.string()),
        None,
        pa.scalar(run.started_at, pa.timestamp("us", tz="UTC")),
        pa.scalar(run.run_id, pa.string()),
    ]
    rows = 0
    run.progress("read", 0, source.total, force=True)
    with pq.ParquetWriter(target, schema, compression=_COMPRESSION) as writer:
        for batch, done in batches:
            n = batch.num_rows
            meta = [
                pa.array(np.arange(rows + 1, rows + n + 1, dtype=np.int64))
                if value is None
                else pa.repeat(value, n)
                for value in constants
            ]
            columns = [column.cast(pa.string()) for column in batch.columns]
            writer.write_batch(pa.RecordBatch.from_arrays(columns + meta, schema=schema))
            rows += n
            run.progress("read", done, source.total)
    run.progress("read", source.total, source.total, force=True)
    return rows


def _stage_outputs(
    run: _Run, headers: list[str], bronze: Path, rows_read: int, stage: Path
) -> tuple[QualityReport, Path, Path | None]:
    """Type, deduplicate and check the bronze rows; write silver and quarantine parts."""
    steps = 2
    run.progress("validate", 0, steps, force=True)
    spill = stage / "duckdb"
    spill.mkdir()
    con = duckdb.connect(
        ":memory:",
        config={
            "memory_limit": _DUCKDB_MEMORY,
            "temp_directory": str(spill),
            # Output order comes from ORDER BY; not preserving scan order saves memory.
            "preserve_insertion_order": False,
        },
    )
    try:
        con.execute(f"CREATE VIEW bronze AS SELECT * FROM read_parquet({_literal(str(bronze))})")
        con.execute(_classify_sql(headers, run.resolved, run.date_format))
        run.progress("validate", 1, steps)

        kept = int(_rows(con, "SELECT count(*) FROM classified")[0][0])
        reasons = dict(
            _rows(
                con,
                "SELECT reason, count(*) FROM classified WHERE reason IS NOT NULL GROUP BY reason",
            )
        )
        flag_row = _rows(con, _FLAGS_SQL)[0]
        run.progress("validate", 2, steps, force=True)

        silver_rows = int(flag_row[0])
        quarantined = sum(int(v) for v in reasons.values())
        duplicates = rows_read - kept
        report = QualityReport(
            source_file=str(run.path),
            source_hash=run.source_hash,
            file_format=run.file_format,
            rows_read=rows_read,
            silver_rows=silver_rows,
            quarantined_rows=quarantined,
            duplicates_removed=duplicates,
            quarantine_reasons={r: int(reasons[r]) for r in QUARANTINE_REASONS if r in reasons},
            flags={name: int(value) for name, value in zip(FLAG_NAMES, flag_row[1:], strict=True)},
            # Every kept row must have landed in exactly one of silver and quarantine.
            reconciles=rows_read == silver_rows + quarantined + duplicates,
        )

        total = silver_rows + quarantined
        run.progress("write", 0, total, force=True)
        silver = stage / "silver.parquet"
        silver_schema = SILVER_SCHEMA.with_metadata(
            {_SOURCE_HASH_KEY: run.source_hash.encode(), _RUN_ID_KEY: run.run_id.encode()}
        )
        written = _write_query(
            con, _silver_sql(run), silver, silver_schema, run.progress, start=0, total=total
        )
        quarantine_file: Path | None = None
        if quarantined:
            quarantine_file = stage / "quarantine.parquet"
            reason_column = "_reason" if "reason" in headers else "reason"
            quarantine_schema = pa.schema(
                [pa.field(name, pa.string()) for name in headers]
                + [
                    pa.field("_source_row", pa.int64(), nullable=False),
                    pa.field(reason_column, pa.string(), nullable=False),
                ]
            )
            _write_query(
                con,
                _quarantine_sql(headers, bronze, reason_column),
                quarantine_file,
                quarantine_schema,
                run.progress,
                start=written,
                total=total,
            )
        run.progress("write", total, total, force=True)
        return report, silver, quarantine_file
    finally:
        con.close()


def _write_query(
    con: Any,
    sql: str,
    target: Path,
    schema: pa.Schema,
    progress: _Progress,
    *,
    start: int,
    total: int,
) -> int:
    """Stream a query's rows into a Parquet file with exactly ``schema``."""
    relation = con.sql(sql)
    reader = (
        relation.to_arrow_reader(_BATCH_ROWS)
        if hasattr(relation, "to_arrow_reader")
        else relation.fetch_record_batch(_BATCH_ROWS)
    )
    written = start
    with pq.ParquetWriter(target, schema, compression=_COMPRESSION) as writer:
        for batch in reader:
            columns = [batch.column(i).cast(field.type) for i, field in enumerate(schema)]
            writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema))
            written += batch.num_rows
            progress("write", written, total)
    return written


# --------------------------------------------------------------------------- SQL


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _rows(con: Any, sql: str) -> list[tuple[Any, ...]]:
    """Every row of a query (fetching all of it leaves the connection free)."""
    return list(con.execute(sql).fetchall())


def _date_sql(text: str, date_format: str | None) -> str:
    iso = (
        f"CASE WHEN regexp_full_match({text}, {_literal(_ISO_NAIVE_RE)}) "
        f"THEN try_cast({text} AS TIMESTAMP) "
        f"WHEN regexp_full_match({text}, {_literal(_ISO_ZONED_RE)}) "
        f"THEN timezone('UTC', try_cast({text} AS TIMESTAMPTZ)) END"
    )
    if date_format is None:
        formats = ", ".join(_literal(f) for f in UCI_DATE_FORMATS)
        return f"coalesce({iso}, try_strptime({text}, [{formats}]))"
    parsed = f"try_strptime({text}, {_literal(date_format)})"
    if "%z" in date_format or "%Z" in date_format:
        parsed = f"timezone('UTC', {parsed})"
    return f"coalesce({parsed}, {iso})"


def _classify_sql(headers: list[str], resolved: dict[str, str], date_format: str | None) -> str:
    """One statement: drop exact duplicates, type every column, pick each row's reason."""
    whitespace = _literal(_WHITESPACE)

    def text(canonical: str) -> str:
        if canonical not in resolved:
            return "CAST(NULL AS VARCHAR)"
        return f"nullif(trim({_ident(resolved[canonical])}, {whitespace}), '')"

    all_columns = ", ".join(_ident(h) for h in headers)
    texts = ",\n            ".join(f"{text(c)} AS s_{c}" for c in MAPPABLE_COLUMNS)
    non_product = ", ".join(_literal(code) for code in sorted(NON_PRODUCT_CODES))
    has_price = "unit_price" in resolved
    has_amount = "total_amount" in resolved
    if has_amount and has_price:
        total = "coalesce(amount, quantity * unit_price)"
    elif has_amount:
        total = "amount"
    else:
        total = "quantity * unit_price"

    rules: list[tuple[str, str]] = []
    if "invoice_no" in resolved:
        rules.append(("empty_invoice", "invoice_no IS NULL"))
    if "stock_code" in resolved:
        rules.append(("missing_stock_code", "stock_code IS NULL"))
    rules += [
        ("missing_date", "s_invoice_date IS NULL"),
        ("unparseable_date", "invoice_date IS NULL"),
        ("invalid_quantity", "quantity IS NULL"),
    ]
    if has_price:
        rules.append(
            (
                "invalid_price",
                "s_unit_price IS NOT NULL AND (unit_price IS NULL OR NOT isfinite(unit_price))",
            )
        )
        if not has_amount:
            rules.append(("missing_price", "unit_price IS NULL"))
        rules.append(("negative_price", "unit_price < 0 AND NOT is_adjustment"))
    if has_amount:
        rules.append(
            (
                "invalid_amount",
                "s_total_amount IS NOT NULL AND (amount IS NULL OR NOT isfinite(amount))",
            )
        )
        rules.append(("missing_amount", f"({total}) IS NULL"))
    assert [r for r, _ in rules] == [r for r in QUARANTINE_REASONS if r in dict(rules)]
    reason = "CASE " + " ".join(f"WHEN {cond} THEN {_literal(r)}" for r, cond in rules) + " END"

    return f"""
    CREATE TABLE classified AS
    WITH firsts AS (
        SELECT min(_source_row) AS _source_row FROM bronze GROUP BY {all_columns}
    ),
    cleaned AS (
        SELECT
            _source_row,
            {texts}
        FROM bronze
        WHERE _source_row IN (SELECT _source_row FROM firsts)
    ),
    typed AS (
        SELECT
            _source_row,
            s_invoice_date,
            s_unit_price,
            s_total_amount,
            s_invoice_no AS invoice_no,
            s_stock_code AS stock_code,
            s_description AS description,
            CASE WHEN regexp_full_match(s_quantity, {_literal(_INTEGER_RE)})
                 THEN try_cast(regexp_replace(s_quantity, '\\.0*$', '') AS BIGINT) END
                AS quantity,
            {_date_sql("s_invoice_date", date_format)} AS invoice_date,
            CASE WHEN regexp_full_match(s_unit_price, {_literal(_NUMBER_RE)})
                 THEN try_cast(s_unit_price AS DOUBLE) END AS unit_price,
            regexp_replace(s_customer_id, '^([+-]?[0-9]+)\\.0*$', '\\1') AS customer_id,
            s_country AS country,
            CASE WHEN regexp_full_match(s_total_amount, {_literal(_NUMBER_RE)})
                 THEN try_cast(s_total_amount AS DOUBLE) END AS amount,
            coalesce(starts_with(s_invoice_no, {_literal(CANCELLATION_PREFIX)}), FALSE)
                AS is_cancellation,
            coalesce(upper(s_stock_code) IN ({non_product}), FALSE) AS is_non_product,
            coalesce(starts_with(s_invoice_no, {_literal(ADJUSTMENT_PREFIX)}), FALSE)
                AS is_adjustment,
            CASE WHEN lower(s_is_anomaly) IN ('true', 't', 'yes', 'y', '1', '1.0') THEN TRUE
                 WHEN lower(s_is_anomaly) IN ('false', 'f', 'no', 'n', '0', '0.0') THEN FALSE
            END AS is_anomaly
        FROM cleaned
    )
    SELECT
        _source_row,
        invoice_no, stock_code, description, quantity, invoice_date, unit_price,
        customer_id, country,
        -- "+ 0.0" turns the -0.0 of a negative quantity at a zero price into 0.0.
        ({total}) + 0.0 AS total_amount,
        is_cancellation,
        coalesce(quantity < 0 AND NOT is_cancellation, FALSE) AS is_return,
        is_non_product, is_adjustment, is_anomaly,
        {reason} AS reason
    FROM typed
    """


_FLAGS_SQL = """
SELECT
    count(*) FILTER (WHERE reason IS NULL),
    count(*) FILTER (WHERE reason IS NULL AND is_cancellation),
    count(*) FILTER (WHERE reason IS NULL AND is_return),
    count(*) FILTER (WHERE reason IS NULL AND is_non_product),
    count(*) FILTER (WHERE reason IS NULL AND is_adjustment),
    count(*) FILTER (WHERE reason IS NULL AND unit_price = 0),
    count(*) FILTER (WHERE reason IS NULL AND customer_id IS NULL),
    count(*) FILTER (WHERE reason IS NULL AND description IS NULL)
FROM classified
"""


def _silver_sql(run: _Run) -> str:
    return f"""
    SELECT
        invoice_no, stock_code, description, quantity, invoice_date, unit_price,
        customer_id, country, total_amount,
        is_cancellation, is_return, is_non_product, is_adjustment, is_anomaly,
        {_literal(str(run.path))} AS source_file,
        {_literal(run.source_hash)} AS source_hash,
        _source_row AS source_row,
        {_literal(run.run_id)} AS ingest_run_id
    FROM classified
    WHERE reason IS NULL
    ORDER BY _source_row
    """


def _quarantine_sql(headers: list[str], bronze: Path, reason_column: str) -> str:
    columns = ", ".join(f"b.{_ident(h)}" for h in headers)
    return f"""
    SELECT {columns}, b._source_row, c.reason AS {_ident(reason_column)}
    FROM read_parquet({_literal(str(bronze))}) AS b
    JOIN classified AS c ON b._source_row = c._source_row
    WHERE c.reason IS NOT NULL
    ORDER BY b._source_row
    """


# --------------------------------------------------------------------------- checks


def _check_date_format(date_format: str | None) -> None:
    if date_format is None:
        return
    if "%" not in date_format:
        raise ConfigError(
            problem(
                "a strftime date format such as '%Y%m%d' or '%d/%m/%Y %H:%M'",
                repr(date_format),
                "write the format with % codes (%Y year, %m month, %d day, %H:%M time)",
                subject="date format",
            )
        )
    try:
        with duckdb.connect(":memory:") as con:
            con.execute(f"SELECT try_strptime('2000-01-01', {_literal(date_format)})").fetchall()
    except duckdb.Error as exc:
        raise ConfigError(
            problem(
                "a strftime date format such as '%Y%m%d'",
                f"{date_format!r} ({exc})",
                "use only the codes of Python's strftime (%Y %m %d %H %M %S %b ...)",
                subject="date format",
            )
        ) from exc


def _resolve_columns(mapping: ColumnMapping, source: Source) -> dict[str, str]:
    subject = str(source.path)
    try:
        return mapping.resolve(source.headers, subject=subject)
    except DataValidationError as exc:
        message = str(exc)
        if len(source.headers) == 1 and any(sep in source.headers[0] for sep in ";\t|"):
            message += (
                " The header looks like one column holding several names: retailml reads "
                "comma-separated files; save the file with ',' as the separator."
            )
        raise InputFileError(message) from exc


def _non_empty(source: Source) -> Iterator[tuple[pa.RecordBatch, int]]:
    """The source's batches, after checking (reading ahead) that there is a data row."""
    batches = source.batches()
    for batch, done in batches:
        if batch.num_rows:
            first = (batch, done)
            break
    else:
        raise InputFileError(
            problem(
                "a header row and at least one data row",
                f"only a header ({len(source.headers)} columns: {source.headers!r}) and no rows",
                "check that the export wrote the data, not only the column names",
                subject=str(source.path),
            )
        )

    def chained() -> Iterator[tuple[pa.RecordBatch, int]]:
        yield first
        yield from batches

    return chained()


# --------------------------------------------------------------------------- files


def _silver_parts(workspace: Workspace) -> list[Path]:
    if not workspace.transactions.is_dir():
        return []
    parts = workspace.transactions.glob("part-*.parquet")
    return sorted(parts, key=lambda p: (p.stat().st_mtime_ns, p.name))


def _existing_parts(workspace: Workspace) -> tuple[list[str], int]:
    """Source hashes and total rows of the silver parts already in place."""
    hashes: list[str] = []
    rows = 0
    for part in _silver_parts(workspace):
        parquet = pq.ParquetFile(part)
        try:
            metadata = parquet.schema_arrow.metadata or {}
            rows += int(parquet.metadata.num_rows)
            value = metadata.get(_SOURCE_HASH_KEY)
            if value is None:  # a part written by other means: read the column
                column = parquet.read(columns=["source_hash"]).column(0)
                value = column[0].as_py().encode() if len(column) else b""
            hashes.append(value.decode())
        finally:
            parquet.close()
    return hashes, rows


def _silver_version(source_hashes: list[str]) -> str:
    """The silver version: a digest of the sorted source hashes of its parts."""
    return hashlib.sha256("\n".join(sorted(source_hashes)).encode()).hexdigest()


def _publish(moves: list[tuple[Path, Path]]) -> list[Path]:
    """Rename staged files into place; on failure, take back the ones already moved."""
    published: list[Path] = []
    try:
        for staged, target in moves:
            target.parent.mkdir(parents=True, exist_ok=True)
            staged.replace(target)
            published.append(target)
    except BaseException:
        _unpublish(published)
        raise
    return published


def _unpublish(published: list[Path]) -> None:
    for target in reversed(published):
        target.unlink(missing_ok=True)


@contextlib.contextmanager
def _ingest_lock(workspace: Workspace) -> Iterator[None]:
    """Serialise ingestions into one workspace; clear staging left by a crashed one."""
    with (workspace.tmp / "ingest.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            for stale in workspace.tmp.glob("ingest-*"):
                shutil.rmtree(stale, ignore_errors=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- database


def _find_run(db: PlatformDB, source_hash: str) -> IngestionRun | None:
    with db.session() as session:
        return session.scalars(
            select(IngestionRun).where(IngestionRun.source_hash == source_hash)
        ).first()


def _run_row(run: _Run, report: QualityReport) -> IngestionRun:
    return IngestionRun(
        id=run.run_id,
        source_path=str(run.path),
        source_hash=run.source_hash,
        file_format=run.file_format,
        status="succeeded",
        started_at=run.started_at,
        finished_at=utcnow(),
        rows_read=report.rows_read,
        silver_rows=report.silver_rows,
        quarantined_rows=report.quarantined_rows,
        duplicates_removed=report.duplicates_removed,
        report_path=str(run.report_path),
    )


def _record_run(db: PlatformDB, run: IngestionRun, version: DataVersion) -> None:
    """Commit the run and the new data version together (the last step of an ingestion)."""
    with db.session() as session:
        session.add(run)
        session.flush()  # the version refers to the run
        session.add(version)


def _earlier_result(run: IngestionRun, workspace: Workspace, db: PlatformDB) -> IngestResult:
    report_path = (
        Path(run.report_path)
        if run.report_path
        else workspace.reports / _QUALITY_DIR / f"{run.id}.json"
    )
    try:
        report = QualityReport.from_dict(json.loads(report_path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError):
        # The JSON was removed or damaged: the counts are also in the database.
        duplicates = run.duplicates_removed
        report = QualityReport(
            source_file=run.source_path,
            source_hash=run.source_hash,
            file_format=run.file_format,
            rows_read=run.rows_read,
            silver_rows=run.silver_rows,
            quarantined_rows=run.quarantined_rows,
            duplicates_removed=duplicates,
            reconciles=run.rows_read == run.silver_rows + run.quarantined_rows + duplicates,
        )
    quarantine = workspace.quarantine / f"part-{run.id}.parquet"
    latest = db.latest_data_version(SILVER_TABLE)
    logger.info("%s was already ingested by run %s; nothing changed", run.source_path, run.id)
    return IngestResult(
        run_id=run.id,
        status="already_ingested",
        report=report,
        bronze_path=workspace.bronze / f"{run.source_hash[:16]}.parquet",
        silver_path=workspace.transactions / f"part-{run.id}.parquet",
        quarantine_path=quarantine if quarantine.exists() else None,
        report_path=report_path,
        data_version=latest.version if latest else "",
    )


# --------------------------------------------------------------------------- progress


class _Progress:
    """Forwards progress to the caller's callback, at most ~20 times per stage."""

    _STEPS = 20

    def __init__(self, callback: ProgressCallback | None) -> None:
        self._callback = callback
        self._last: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int, *, force: bool = False) -> None:
        if self._callback is None:
            return
        last = self._last.get(stage)
        if last == done:
            return
        step = max(total // self._STEPS, 1)
        if force or last is None or done - last >= step:
            self._last[stage] = done
            self._callback(stage, done, total)
