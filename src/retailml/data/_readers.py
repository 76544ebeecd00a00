"""Source readers: every column of a CSV, Excel or Parquet file, as text.

Ingestion keeps bronze "as read", so each reader yields record batches whose
columns are all strings, named by the file's header row. Typing happens later,
in one place (:mod:`retailml.data.ingest`), whatever the file format was.

Each reader translates the failures of its library into
:class:`~retailml.core.errors.InputFileError` messages that name the file, the
problem and the fix.
"""

from __future__ import annotations

import abc
import codecs
import csv
import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from retailml.core.errors import InputFileError, problem

#: File extensions ingestion reads (compared case-insensitively) and their format names.
SUPPORTED_FORMATS: dict[str, str] = {".csv": "csv", ".xlsx": "xlsx", ".parquet": "parquet"}

#: Column names bronze adds to every row; a source file may not use them.
RESERVED_COLUMNS: tuple[str, ...] = (
    "_source_file",
    "_source_hash",
    "_source_row",
    "_ingested_at",
    "_ingest_run_id",
)

_CSV_BLOCK_BYTES = 16 << 20
_EXCEL_BATCH_ROWS = 50_000
_PARQUET_BATCH_ROWS = 131_072


def file_format(path: Path) -> str:
    """The format name of a file from its extension.

    Raises:
        InputFileError: If the extension is not one ingestion reads.
    """
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_FORMATS:
        allowed = ", ".join(SUPPORTED_FORMATS)
        raise InputFileError(
            problem(
                f"a transaction file with one of the extensions {allowed}",
                f"a file with extension {path.suffix or '(none)'!r}",
                "export the data as CSV (UTF-8), Excel .xlsx or Parquet",
                subject=str(path),
            )
        )
    return SUPPORTED_FORMATS[suffix]


def check_input_file(path: Path) -> None:
    """Fail early, naming the file, if it does not exist, is not a file or is empty."""
    if not path.exists():
        raise InputFileError(
            problem(
                "an existing CSV, Excel (.xlsx) or Parquet file",
                f"no file at {str(path)!r}",
                "check the path (relative paths start from the current directory)",
                subject=str(path),
            )
        )
    if not path.is_file():
        raise InputFileError(
            problem(
                "a file",
                "a directory" if path.is_dir() else "something that is not a regular file",
                "pass the path of one CSV, Excel (.xlsx) or Parquet file",
                subject=str(path),
            )
        )
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise InputFileError(
            problem(
                "a file retailml may read",
                f"{type(exc).__name__}: {exc.strerror or exc}",
                "check the file's permissions",
                subject=str(path),
            )
        ) from exc
    if path.stat().st_size == 0:
        raise InputFileError(
            problem(
                "a header row and at least one data row",
                "an empty file (0 bytes)",
                "check that the export finished and wrote the data",
                subject=str(path),
            )
        )


class Source(abc.ABC):
    """A file opened for reading, with its header row resolved.

    Attributes:
        path: The file.
        headers: Column names, unique and non-empty, in file order.
        total: Units of work for progress (bytes or rows; 0 when unknown).
    """

    path: Path
    headers: list[str]
    total: int

    @abc.abstractmethod
    def batches(self) -> Iterator[tuple[pa.RecordBatch, int]]:
        """Yield ``(batch, done)``: string columns named by :attr:`headers`, and progress."""

    def close(self) -> None:  # noqa: B027 - optional hook; most readers hold nothing open
        """Release the file."""

    def __enter__(self) -> Source:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_source(path: Path, fmt: str) -> Source:
    """Open a file of a known format and read its header row."""
    readers: dict[str, Callable[[Path], Source]] = {
        "csv": CsvSource,
        "xlsx": ExcelSource,
        "parquet": ParquetSource,
    }
    return readers[fmt](path)


def clean_headers(raw: Sequence[object], *, subject: str) -> list[str]:
    """Header names, stripped; blanks become ``column_<n>``; duplicates and reserved names fail."""
    names = []
    for position, value in enumerate(raw, start=1):
        name = "" if value is None else str(value).strip()
        names.append(name or f"column_{position}")
    # Compared without case: SQL engines (DuckDB) match column names case-insensitively.
    counts = Counter(name.lower() for name in names)
    repeated = [name for name in names if counts[name.lower()] > 1]
    if repeated:
        raise InputFileError(
            problem(
                "a header row with unique column names (compared without case)",
                f"the names {', '.join(map(repr, repeated))} in {names!r}",
                "rename the repeated columns",
                subject=subject,
            )
        )
    reserved = [n for n in names if n.lower() in RESERVED_COLUMNS]
    if reserved:
        raise InputFileError(
            problem(
                f"no column named {', '.join(RESERVED_COLUMNS)} (bronze adds them)",
                f"the columns {reserved!r}",
                "rename or drop those columns",
                subject=subject,
            )
        )
    return names


def _encoding_error(path: Path, got: str, *, source_encoding: str = "latin1") -> InputFileError:
    fix = (
        "save the file as UTF-8 (in Excel: 'CSV UTF-8'), or convert it, e.g. "
        f"'iconv -f {source_encoding} -t utf-8 {path.name} > {path.stem}-utf8.csv'"
    )
    return InputFileError(
        problem("UTF-8 text (a UTF-8 byte-order mark is accepted)", got, fix, subject=str(path))
    )


def first_invalid_utf8(path: Path, *, chunk_size: int = 1 << 20) -> tuple[int, bytes] | None:
    """Line number (1-based) and bytes around the first byte that is not UTF-8, if any."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                # The decoder may hold up to 3 bytes of an unfinished character
                # from the previous chunk; exc.start is relative to those + chunk.
                pending = len(exc.object) - len(chunk)
                offset = max(exc.start - pending, 0)
                line += chunk.count(b"\n", 0, offset)
                return line, chunk[max(offset - 20, 0) : offset + 20]
            line += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return line, b""
    return None


class CsvSource(Source):
    """A comma-separated UTF-8 file with a header row (pyarrow's multi-threaded reader)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.total = path.stat().st_size
        self._check_encoding_signature()
        try:
            with path.open(encoding="utf-8-sig", newline="") as handle:
                raw = next(csv.reader(handle), None)
        except UnicodeDecodeError as exc:
            raise self._not_utf8() from exc
        except csv.Error as exc:
            raise InputFileError(
                problem(
                    "a comma-separated header row",
                    f"a CSV syntax error ({exc})",
                    "check the quoting of the first line",
                    subject=str(path),
                )
            ) from exc
        if not raw or all(not cell.strip() for cell in raw):
            raise InputFileError(
                problem(
                    "a header row and at least one data row",
                    "a file whose first line is blank",
                    "remove the blank lines before the header",
                    subject=str(path),
                )
            )
        self.headers = clean_headers(raw, subject=str(path))

    def _check_encoding_signature(self) -> None:
        with self.path.open("rb") as handle:
            head = handle.read(4096)
        boms = (
            (codecs.BOM_UTF32_LE, "utf-32"),
            (codecs.BOM_UTF32_BE, "utf-32"),
            (codecs.BOM_UTF16_LE, "utf-16"),
            (codecs.BOM_UTF16_BE, "utf-16"),
        )
        for bom, name in boms:
            if head.startswith(bom):
                raise _encoding_error(
                    self.path,
                    f"a {name.upper()} file (it starts with the byte-order mark {bom!r})",
                    source_encoding=name,
                )
        if b"\x00" in head:
            raise _encoding_error(
                self.path,
                "NUL bytes, as in UTF-16 text without a byte-order mark",
                source_encoding="utf-16",
            )

    def _not_utf8(self) -> InputFileError:
        where = first_invalid_utf8(self.path)
        if where is None:  # pragma: no cover - only called after a decode error
            return _encoding_error(self.path, "bytes that are not valid UTF-8")
        line, context = where
        return _encoding_error(
            self.path, f"bytes that are not valid UTF-8 on line {line} (near {context!r})"
        )

    def batches(self) -> Iterator[tuple[pa.RecordBatch, int]]:
        """Yield string batches; pyarrow parses blocks in parallel."""
        stream = pa.OSFile(str(self.path), "rb")
        try:
            try:
                reader = pa_csv.open_csv(
                    stream,
                    read_options=pa_csv.ReadOptions(
                        column_names=self.headers, skip_rows=1, block_size=_CSV_BLOCK_BYTES
                    ),
                    # Quoted fields may hold line breaks (descriptions do in some exports).
                    parse_options=pa_csv.ParseOptions(newlines_in_values=True),
                    convert_options=pa_csv.ConvertOptions(
                        column_types={name: pa.string() for name in self.headers},
                        strings_can_be_null=False,
                        quoted_strings_can_be_null=False,
                    ),
                )
                for batch in reader:
                    yield batch, min(stream.tell(), self.total)
            except pa.ArrowInvalid as exc:
                raise self._translate(exc) from exc
        finally:
            stream.close()

    def _translate(self, exc: pa.ArrowInvalid) -> InputFileError:
        message = str(exc)
        if "UTF8" in message or "UTF-8" in message:
            return self._not_utf8()
        return InputFileError(
            problem(
                f"comma-separated rows with the {len(self.headers)} columns of the header",
                f"a malformed row ({message.strip()})",
                "fix the quoting or the number of fields on that row",
                subject=str(self.path),
            )
        )


def _cell_text(value: Any) -> str | None:
    """One Excel cell as text; datetimes in ISO 8601, so they parse like CSV text."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back as the same float
    return str(value)


class ExcelSource(Source):
    """The first worksheet of an .xlsx workbook; its first row is the header.

    openpyxl hands out one cell at a time, so this is the one reader with a
    per-row Python loop; Excel caps a sheet at 1,048,576 rows.
    """

    def __init__(self, path: Path) -> None:
        import openpyxl

        self.path = path
        try:
            self._book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        except Exception as exc:  # zipfile.BadZipFile, KeyError, InvalidFileException, ...
            raise InputFileError(
                problem(
                    "an Excel 2007+ workbook (.xlsx, a zip archive of XML parts)",
                    f"a file openpyxl cannot open ({type(exc).__name__}: {exc})",
                    "open it in Excel or LibreOffice and save it again as .xlsx, or export CSV",
                    subject=str(path),
                )
            ) from exc
        try:
            sheet = self._book.worksheets[0]
            self._rows: Iterator[tuple[Any, ...]] = sheet.iter_rows(values_only=True)
            first: tuple[Any, ...] = next(self._rows, ())
            header = list(first)
            while header and header[-1] in (None, ""):
                header.pop()
            if not header:
                raise InputFileError(
                    problem(
                        "a header row and at least one data row in the first worksheet",
                        f"an empty first row in sheet {sheet.title!r}",
                        "put the column names in the first row of the first sheet",
                        subject=str(path),
                    )
                )
            self.headers = clean_headers(header, subject=str(path))
            self.total = max(int(sheet.max_row or 1) - 1, 0)
        except BaseException:
            self._book.close()
            raise

    def close(self) -> None:
        """Close the workbook (read-only mode keeps the zip open)."""
        self._book.close()

    def batches(self) -> Iterator[tuple[pa.RecordBatch, int]]:
        """Yield string batches of up to 50,000 rows; blank rows are skipped."""
        width = len(self.headers)
        columns: list[list[str | None]] = [[] for _ in range(width)]
        done = 0
        for sheet_row, row in enumerate(self._rows, start=2):
            done += 1
            cells = [_cell_text(v) for v in row]
            if len(cells) > width:
                extra = [c for c in cells[width:] if c not in (None, "")]
                if extra:
                    raise InputFileError(
                        problem(
                            f"values only under the {width} named header cells",
                            f"{extra[0]!r} in sheet row {sheet_row} beyond the last header",
                            "give that column a header or delete the stray cells",
                            subject=str(self.path),
                        )
                    )
                cells = cells[:width]
            if all(c is None for c in cells):
                continue
            cells.extend([None] * (width - len(cells)))
            for column, cell in zip(columns, cells, strict=True):
                column.append(cell)
            if len(columns[0]) >= _EXCEL_BATCH_ROWS:
                yield self._batch(columns), done
                columns = [[] for _ in range(width)]
        if columns[0]:
            yield self._batch(columns), done

    def _batch(self, columns: list[list[str | None]]) -> pa.RecordBatch:
        return pa.RecordBatch.from_arrays(
            [pa.array(c, type=pa.string()) for c in columns], names=self.headers
        )


def _as_text(array: pa.Array, name: str, path: Path) -> pa.Array:
    """A Parquet column as text: numbers, dates and booleans in their canonical spelling."""
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_floating(array.type):
        # NaN is pandas' "missing"; it must not become the text 'nan'.
        array = pc.if_else(pc.is_nan(array), pa.scalar(None, array.type), array)
    try:
        return array.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputFileError(
            problem(
                "Parquet columns of text, numbers, booleans, dates or timestamps",
                f"column {name!r} of type {array.type} ({exc})",
                "flatten or drop that column before ingesting",
                subject=str(path),
            )
        ) from exc


class ParquetSource(Source):
    """A Parquet file, read in row batches; every column is turned into text."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputFileError(
                problem(
                    "a Parquet file",
                    f"a file pyarrow cannot read as Parquet ({exc})",
                    "write it again with a Parquet writer (pandas.DataFrame.to_parquet)",
                    subject=str(path),
                )
            ) from exc
        self._names = list(self._file.schema_arrow.names)
        self.headers = clean_headers(self._names, subject=str(path))
        self.total = int(self._file.metadata.num_rows)

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def batches(self) -> Iterator[tuple[pa.RecordBatch, int]]:
        """Yield string batches of up to 131,072 rows."""
        done = 0
        try:
            for batch in self._file.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
                done += batch.num_rows
                arrays = [
                    _as_text(batch.column(i), name, self.path) for i, name in enumerate(self._names)
                ]
                yield pa.RecordBatch.from_arrays(arrays, names=self.headers), done
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputFileError(
                problem(
                    "a readable Parquet file",
                    f"an error while reading it ({exc})",
                    "write the file again; it may be truncated",
                    subject=str(self.path),
                )
            ) from exc
