"""Ingestion: bronze as read, silver typed and flagged, quarantine with reasons, a report."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import openpyxl
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

import retailml.data.ingest as ingest_module
from retailml.core.db import DataVersion, IngestionRun, PlatformDB
from retailml.core.errors import ConfigError, InputFileError, StateError
from retailml.core.settings import Settings, get_settings, load_settings
from retailml.core.workspace import Workspace
from retailml.data.ingest import (
    FLAG_NAMES,
    QUARANTINE_REASONS,
    SILVER_TABLE,
    IngestResult,
    QualityReport,
    ingest_file,
    read_silver,
)
from retailml.data.schema import SILVER_DATA_COLUMNS, SILVER_SCHEMA, ColumnMapping

FIXTURES = Path(__file__).parent / "fixtures"
#: A small UCI Online Retail file with every quirk the real one has (see the comments
#: in the expected counts below for which row is which).
QUIRKS = FIXTURES / "quirks.csv"
UCI_HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"

# --------------------------------------------------------------------------- helpers


def snapshot(workspace: Workspace) -> dict[str, tuple[int, int]]:
    """Every file under data/ and reports/ with its size and modification time."""
    files: dict[str, tuple[int, int]] = {}
    for top in ("data", "reports"):
        root = workspace.root / top
        if root.exists():
            for path in root.rglob("*"):
                if path.is_file():
                    stat = path.stat()
                    files[str(path.relative_to(workspace.root))] = (stat.st_size, stat.st_mtime_ns)
    return files


def count_rows(settings: Settings, model: type[Any]) -> int:
    db = PlatformDB.from_settings(settings)
    try:
        with db.session() as session:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)
    finally:
        db.dispose()


def data_versions(db: PlatformDB) -> list[DataVersion]:
    with db.session() as session:
        return list(session.scalars(select(DataVersion).order_by(DataVersion.id)))


def settings_for(home: Path) -> Settings:
    return load_settings(home=home)


def silver_data(table: pa.Table) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = (
        table.sort_by("source_row").select([*SILVER_DATA_COLUMNS, "source_row"]).to_pylist()
    )
    return rows


def write_csv(path: Path, lines: list[str], *, encoding: str = "utf-8") -> Path:
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


def csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    table = pa_csv.read_csv(
        path,
        convert_options=pa_csv.ConvertOptions(
            column_types=dict.fromkeys(UCI_HEADER.split(","), pa.string()),
            strings_can_be_null=False,
        ),
    )
    return table.column_names, [list(r.values()) for r in table.to_pylist()]


def excel_value(column: str, text: str) -> object:
    """A cell as a spreadsheet holds it: real datetimes and numbers, text otherwise."""
    if text == "":
        return None
    if column == "InvoiceDate":
        for layout in ("%m/%d/%Y %H:%M", "%Y-%m-%d %H:%M:%S"):
            try:
                return datetime.strptime(text, layout)
            except ValueError:
                pass
        return text
    if column in ("Quantity", "UnitPrice", "CustomerID"):
        try:
            number = float(text)
        except ValueError:
            return text
        if column == "Quantity" and number.is_integer():
            return int(number)
        return number  # CustomerID 17850.0, as Excel stores every number
    return text


def csv_to_xlsx(source: Path, target: Path) -> Path:
    header, rows = csv_rows(source)
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(header)
    for row in rows:
        sheet.append([excel_value(c, v) for c, v in zip(header, row, strict=True)])
    book.save(target)
    return target


def csv_to_text_parquet(source: Path, target: Path) -> Path:
    header, rows = csv_rows(source)
    columns = {name: [row[i] for row in rows] for i, name in enumerate(header)}
    pq.write_table(pa.table(columns), target)
    return target


@pytest.fixture
def ingested(settings: Settings, workspace: Workspace) -> IngestResult:
    """The quirks file ingested once into the test workspace."""
    return ingest_file(QUIRKS, settings=settings)


# --------------------------------------------------------------------------- counts and values


def test_counts_reconcile_on_a_file_with_every_quirk(ingested: IngestResult) -> None:
    report = ingested.report
    assert ingested.status == "ingested"
    assert report.file_format == "csv"
    assert report.rows_read == 30
    # rows 4 (a duplicate), 6 and 7 (a triplicate), 29 (a duplicated bad row)
    assert report.duplicates_removed == 4
    assert report.quarantined_rows == 8
    assert report.quarantine_reasons == {
        "empty_invoice": 1,  # row 23
        "missing_stock_code": 1,  # row 28
        "missing_date": 1,  # row 27
        "unparseable_date": 1,  # row 22 ("not a date"), its duplicate row 29 is not counted
        "invalid_quantity": 2,  # rows 24 ("1.5") and 25 ("abc")
        "invalid_price": 1,  # row 26 ("£2.10")
        "negative_price": 1,  # row 16: -1.25 on a normal invoice
    }
    assert report.silver_rows == 18
    assert report.flags == {
        "cancellations": 4,  # C536379, C536383, C540271, C581484
        "returns": 1,  # 536414: -56 at price 0, no description, no customer
        "non_product": 6,  # D, POST, M, BANK CHARGES, AMAZONFEE, B
        "adjustments": 1,  # A563185 "Adjust bad debt" at -11062.06 is kept
        "zero_price": 2,
        "missing_customer_id": 4,
        "missing_description": 2,
    }
    assert report.reconciles
    assert report.rows_read == (
        report.silver_rows + report.quarantined_rows + report.duplicates_removed
    )
    assert list(report.quarantine_reasons) == [
        r for r in QUARANTINE_REASONS if r in report.quarantine_reasons
    ]
    assert list(report.flags) == list(FLAG_NAMES)


def test_silver_is_typed_normalised_and_flagged(ingested: IngestResult) -> None:
    table = pq.read_table(ingested.silver_path)
    assert table.schema.remove_metadata().equals(SILVER_SCHEMA)
    rows = {row["source_row"]: row for row in table.to_pylist()}
    assert sorted(rows) == [1, 2, 3, 5, 8, 9, 10, 11, 12, 13, 14, 15, 17, 18, 19, 20, 21, 30]

    first = rows[1]
    assert first["invoice_no"] == "536365"
    assert first["quantity"] == 6
    assert first["unit_price"] == 2.55
    assert first["total_amount"] == pytest.approx(15.30)
    assert first["customer_id"] == "17850"  # "17850.0" in the file
    assert first["invoice_date"] == datetime(2010, 12, 1, 8, 26)  # "12/1/2010 8:26"
    assert first["is_anomaly"] is None  # the file has no anomaly column
    assert rows[3]["country"] == "United Kingdom"  # " United Kingdom " stripped
    assert rows[30]["invoice_date"] == datetime(2010, 12, 1, 11, 40)  # ISO 8601 accepted
    assert rows[15]["invoice_date"] == datetime(2011, 8, 12, 14, 50)  # month/day/year

    ret = rows[10]  # a return: negative quantity, not a C invoice, zero price
    assert (ret["is_return"], ret["is_cancellation"]) == (True, False)
    assert ret["description"] is None and ret["customer_id"] is None
    assert ret["total_amount"] == 0.0
    assert (rows[8]["is_cancellation"], rows[8]["is_non_product"]) == (True, True)
    assert rows[8]["is_return"] is False  # cancellations are not also returns
    adjustment = rows[15]
    assert (adjustment["is_adjustment"], adjustment["unit_price"]) == (True, -11062.06)
    assert rows[20]["quantity"] == 80995 and rows[21]["quantity"] == -80995
    assert rows[20]["total_amount"] == pytest.approx(-rows[21]["total_amount"])
    assert rows[20]["description"] == "PAPER CRAFT , LITTLE BIRDIE"

    assert {r["source_hash"] for r in rows.values()} == {ingested.report.source_hash}
    assert {r["ingest_run_id"] for r in rows.values()} == {ingested.run_id}
    assert {r["source_file"] for r in rows.values()} == {str(QUIRKS.resolve())}


def test_quarantine_keeps_each_unusable_row_as_read_with_one_reason(
    ingested: IngestResult,
) -> None:
    assert ingested.quarantine_path is not None
    table = pq.read_table(ingested.quarantine_path)
    assert table.column_names == [*UCI_HEADER.split(","), "_source_row", "reason"]
    reasons = {row["_source_row"]: row["reason"] for row in table.to_pylist()}
    assert reasons == {
        16: "negative_price",
        22: "unparseable_date",
        23: "empty_invoice",
        24: "invalid_quantity",
        25: "invalid_quantity",
        26: "invalid_price",
        27: "missing_date",
        28: "missing_stock_code",
    }
    raw = {row["_source_row"]: row for row in table.to_pylist()}
    assert raw[24]["Quantity"] == "1.5"
    assert raw[26]["UnitPrice"] == "£2.10"
    assert raw[22]["InvoiceDate"] == "not a date"


def test_duplicates_are_removed_before_quarantine_so_a_repeated_bad_row_is_quarantined_once(
    ingested: IngestResult,
) -> None:
    assert ingested.quarantine_path is not None
    rows = pq.read_table(ingested.quarantine_path).column("_source_row").to_pylist()
    assert 22 in rows and 29 not in rows  # row 29 repeats row 22 exactly
    silver_rows = pq.read_table(ingested.silver_path).column("source_row").to_pylist()
    assert 2 in silver_rows and 4 not in silver_rows  # the first copy is kept
    assert 5 in silver_rows and 6 not in silver_rows and 7 not in silver_rows


def test_bronze_keeps_every_row_as_read_with_ingestion_metadata(ingested: IngestResult) -> None:
    bronze = pq.read_table(ingested.bronze_path)
    assert ingested.bronze_path.name == f"{ingested.report.source_hash[:16]}.parquet"
    assert bronze.num_rows == 30
    assert bronze.column_names == [
        *UCI_HEADER.split(","),
        "_source_file",
        "_source_hash",
        "_source_row",
        "_ingested_at",
        "_ingest_run_id",
    ]
    for name in UCI_HEADER.split(","):
        assert bronze.schema.field(name).type == pa.string()
    rows = bronze.to_pylist()
    assert [r["_source_row"] for r in rows] == list(range(1, 31))
    assert rows[0]["CustomerID"] == "17850.0"  # not normalised in bronze
    assert rows[2]["Country"] == " United Kingdom "  # not stripped in bronze
    assert {r["_ingest_run_id"] for r in rows} == {ingested.run_id}
    assert {r["_source_hash"] for r in rows} == {ingested.report.source_hash}


def test_report_is_written_as_json_and_summarised_one_number_per_line(
    ingested: IngestResult,
) -> None:
    report = ingested.report
    assert ingested.report_path.parent.name == "quality"
    assert ingested.report_path.name == f"{ingested.run_id}.json"
    assert json.loads(ingested.report_path.read_text()) == report.to_dict()
    assert QualityReport.from_dict(json.loads(report.to_json())) == report
    summary = report.summary().splitlines()
    for line in (
        "rows read: 30",
        "silver rows: 18",
        "quarantined rows: 8",
        "  invalid_quantity: 2",
        "duplicates removed: 4",
        "  cancellations: 4",
        "  zero_price: 2",
    ):
        assert line in summary
    assert summary[-1].startswith("reconciles: yes")


def test_read_silver_is_an_empty_table_with_the_schema_before_any_ingestion(
    settings: Settings,
) -> None:
    table = read_silver(settings)
    assert table.num_rows == 0
    assert table.schema.equals(SILVER_SCHEMA)


def test_progress_is_reported_a_handful_of_times_per_stage(
    settings: Settings, workspace: Workspace
) -> None:
    calls: list[tuple[str, int, int]] = []
    ingest_file(QUIRKS, settings=settings, progress=lambda *call: calls.append(call))
    stages = [stage for stage, _, _ in calls]
    assert sorted(set(stages)) == ["read", "validate", "write"]
    for stage in ("read", "validate", "write"):
        mine = [(done, total) for s, done, total in calls if s == stage]
        assert 2 <= len(mine) <= 25
        assert mine[-1][0] == mine[-1][1]  # every stage ends complete


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", ["xlsx", "parquet"])
def test_csv_xlsx_and_parquet_give_identical_silver(tmp_path: Path, fmt: str) -> None:
    convert: Callable[[Path, Path], Path] = csv_to_xlsx if fmt == "xlsx" else csv_to_text_parquet
    other = convert(QUIRKS, tmp_path / f"quirks.{fmt}")
    from_csv = ingest_file(QUIRKS, settings=settings_for(tmp_path / "ws-csv"))
    from_other = ingest_file(other, settings=settings_for(tmp_path / f"ws-{fmt}"))

    assert from_other.report.file_format == fmt
    counts = ("rows_read", "silver_rows", "quarantined_rows", "duplicates_removed")
    for name in (*counts, "quarantine_reasons", "flags"):
        assert getattr(from_other.report, name) == getattr(from_csv.report, name), name
    assert silver_data(pq.read_table(from_other.silver_path)) == silver_data(
        pq.read_table(from_csv.silver_path)
    )


def test_excel_datetimes_and_numbers_parse_like_the_csv_text(tmp_path: Path) -> None:
    source = csv_to_xlsx(QUIRKS, tmp_path / "quirks.xlsx")
    sheet = openpyxl.load_workbook(source).active
    assert sheet is not None
    assert isinstance(sheet["E2"].value, datetime)  # a real date cell
    assert isinstance(sheet["G2"].value, int | float)  # a numeric customer id
    result = ingest_file(source, settings=settings_for(tmp_path / "ws"))
    first = pq.read_table(result.silver_path).to_pylist()[0]
    assert first["invoice_date"] == datetime(2010, 12, 1, 8, 26)
    assert first["customer_id"] == "17850"


def test_excel_datetimes_parse_whatever_the_date_format_of_the_text(tmp_path: Path) -> None:
    source = csv_to_xlsx(QUIRKS, tmp_path / "quirks.xlsx")
    result = ingest_file(source, date_format="%d/%m/%Y %H:%M", settings=settings_for(tmp_path))
    first = pq.read_table(result.silver_path).to_pylist()[0]
    assert first["invoice_date"] == datetime(2010, 12, 1, 8, 26)  # a date cell, not day/month


def test_typed_parquet_columns_parse_like_the_csv_text(tmp_path: Path) -> None:
    text_rows = [
        UCI_HEADER + ",is_anomaly",
        "536365,85123A,WHITE HANGING HEART,6,12/1/2010 8:26,2.55,17850.0,United Kingdom,false",
        "C536379,D,Discount,-1,12/1/2010 9:41,27.5,14527.0,United Kingdom,false",
        "536414,22139,,-56,12/1/2010 11:52,0,,United Kingdom,true",
    ]
    csv_file = write_csv(tmp_path / "typed.csv", text_rows)
    typed = pa.table(
        {
            "InvoiceNo": ["536365", "C536379", "536414"],
            "StockCode": ["85123A", "D", "22139"],
            "Description": ["WHITE HANGING HEART", "Discount", None],
            "Quantity": pa.array([6, -1, -56], pa.int64()),
            "InvoiceDate": pa.array(
                [datetime(2010, 12, 1, h, m) for h, m in ((8, 26), (9, 41), (11, 52))],
                pa.timestamp("ns"),
            ),
            "UnitPrice": [2.55, 27.5, 0.0],
            # pandas writes a missing float as NaN; it must read as missing, not "nan".
            "CustomerID": pa.array([17850.0, 14527.0, float("nan")], pa.float64()),
            "Country": ["United Kingdom"] * 3,
            "is_anomaly": [False, False, True],
        }
    )
    parquet_file = tmp_path / "typed.parquet"
    pq.write_table(typed, parquet_file)

    from_csv = ingest_file(csv_file, settings=settings_for(tmp_path / "ws-csv"))
    from_parquet = ingest_file(parquet_file, settings=settings_for(tmp_path / "ws-parquet"))
    expected = silver_data(pq.read_table(from_csv.silver_path))
    assert silver_data(pq.read_table(from_parquet.silver_path)) == expected
    assert [r["is_anomaly"] for r in expected] == [False, False, True]
    assert [r["customer_id"] for r in expected] == ["17850", "14527", None]


def test_a_utf8_byte_order_mark_is_accepted(
    settings: Settings, workspace: Workspace, tmp_path: Path
) -> None:
    source = tmp_path / "bom.csv"
    source.write_bytes(b"\xef\xbb\xbf" + QUIRKS.read_bytes())
    result = ingest_file(source, settings=settings)
    assert result.report.silver_rows == 18


def test_online_retail_ii_headers_are_recognised_without_a_mapping(
    settings: Settings, workspace: Workspace, tmp_path: Path
) -> None:
    source = write_csv(
        tmp_path / "retail_ii.csv",
        [
            "Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country",
            "489434,85048,15CM CHRISTMAS GLASS BALL 20 LIGHTS,12,2009-12-01 07:45:00,6.95,"
            "13085.0,United Kingdom",
        ],
    )
    row = pq.read_table(ingest_file(source, settings=settings).silver_path).to_pylist()[0]
    assert (row["invoice_no"], row["unit_price"], row["customer_id"]) == ("489434", 6.95, "13085")
    assert row["invoice_date"] == datetime(2009, 12, 1, 7, 45)


# --------------------------------------------------------------------------- bad input


def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, type[Exception], str]]:
    """Each bad input: the file, the error and a regex its message must match."""
    missing = write_csv(
        tmp / "missing.csv",
        ["InvoiceNo,StockCode,Description,Quantity,InvoiceDate,CustomerID", "1,2,x,1,,1"],
    )
    wrong_json = tmp / "data.json"
    wrong_json.write_text('[{"InvoiceNo": "1"}]')
    wrong_txt = tmp / "data.txt"
    wrong_txt.write_text(UCI_HEADER + "\n")
    empty = tmp / "empty.csv"
    empty.write_bytes(b"")
    header_only = write_csv(tmp / "header_only.csv", [UCI_HEADER])
    header_only_xlsx = tmp / "header_only.xlsx"
    book = openpyxl.Workbook()
    assert book.active is not None
    book.active.append(UCI_HEADER.split(","))
    book.save(header_only_xlsx)
    header_only_parquet = tmp / "header_only.parquet"
    empty_columns = {c: pa.array([], pa.string()) for c in UCI_HEADER.split(",")}
    pq.write_table(pa.table(empty_columns), header_only_parquet)
    corrupt = tmp / "corrupt.xlsx"
    corrupt.write_bytes(b"this is not a zip archive")
    latin1 = write_csv(
        tmp / "latin1.csv",
        [UCI_HEADER, "1,A,CAFÉ AU LAIT,1,12/1/2010 8:26,1.0,1,France"],
        encoding="latin-1",
    )
    late_latin1 = tmp / "late_latin1.csv"
    good = "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,12/1/2010 8:26,2.55,17850,France"
    late_latin1.write_bytes(
        "\n".join([UCI_HEADER] + [good] * 3000).encode()
        + "\n1,A,CAFÉ,1,12/1/2010 8:26,1.0,1,France\n".encode("latin-1")
    )
    ragged = write_csv(
        tmp / "ragged.csv", [UCI_HEADER, "1,A,x,1,12/1/2010 8:26,1.0,1,France,extra"]
    )
    utf16 = tmp / "utf16.csv"
    utf16.write_bytes(QUIRKS.read_text(encoding="utf-8").encode("utf-16"))
    return {
        "missing columns": (
            missing,
            InputFileError,
            r"missing\.csv: .*got headers \['InvoiceNo', 'StockCode'.*"
            r"\(missing UnitPrice, Country\).*--mapping",
        ),
        "json": (wrong_json, InputFileError, r"extensions \.csv, \.xlsx, \.parquet.*'\.json'"),
        "txt": (wrong_txt, InputFileError, r"extensions \.csv, \.xlsx, \.parquet.*'\.txt'"),
        "empty": (empty, InputFileError, r"empty\.csv: .*an empty file \(0 bytes\)"),
        "header only csv": (header_only, InputFileError, r"at least one data row.*only a header"),
        "header only xlsx": (
            header_only_xlsx,
            InputFileError,
            r"at least one data row.*only a header",
        ),
        "header only parquet": (
            header_only_parquet,
            InputFileError,
            r"at least one data row.*only a header",
        ),
        "corrupt xlsx": (corrupt, InputFileError, r"corrupt\.xlsx: expected an Excel 2007\+"),
        "latin-1": (
            latin1,
            InputFileError,
            r"expected UTF-8.*not valid UTF-8 on line 2.*iconv -f latin1 -t utf-8",
        ),
        "latin-1 after 3000 good lines": (
            late_latin1,
            InputFileError,
            r"not valid UTF-8 on line 3002 \(near b'.*CAF\\xc9.*iconv -f latin1",
        ),
        "ragged row": (ragged, InputFileError, r"8 columns of the header.*malformed row"),
        "utf-16": (utf16, InputFileError, r"expected UTF-8.*UTF-16.*iconv -f utf-16 -t utf-8"),
        "not found": (tmp / "nowhere.csv", InputFileError, r"nowhere\.csv: .*no file at"),
    }


BAD_INPUTS = [
    "missing columns",
    "json",
    "txt",
    "empty",
    "header only csv",
    "header only xlsx",
    "header only parquet",
    "corrupt xlsx",
    "latin-1",
    "latin-1 after 3000 good lines",
    "ragged row",
    "utf-16",
    "not found",
]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_rejected_with_a_helpful_message_and_changes_nothing(
    ingested: IngestResult, settings: Settings, tmp_path: Path, case: str
) -> None:
    workspace = Workspace.from_settings(settings)
    source, error, message = _bad_inputs(tmp_path)[case]
    before = snapshot(workspace)
    with pytest.raises(error, match=re.compile(message, re.DOTALL)):
        ingest_file(source, settings=settings)
    assert snapshot(workspace) == before
    assert count_rows(settings, IngestionRun) == 1
    assert count_rows(settings, DataVersion) == 1
    assert list(workspace.tmp.glob("ingest-*")) == []


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_does_not_create_a_workspace(
    settings: Settings, tmp_path: Path, case: str
) -> None:
    source, error, _ = _bad_inputs(tmp_path)[case]
    with pytest.raises(error):
        ingest_file(source, settings=settings)
    assert not settings.home.exists()


def test_a_semicolon_separated_file_gets_a_hint_about_the_separator(
    settings: Settings, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "semi.csv", [UCI_HEADER.replace(",", ";"), "1;2;3;4;5;6;7;8"])
    with pytest.raises(InputFileError, match="with ',' as the separator"):
        ingest_file(source, settings=settings)


def test_a_date_format_without_codes_is_a_config_error(settings: Settings) -> None:
    with pytest.raises(ConfigError, match=r"strftime date format.*'YYYYMMDD'"):
        ingest_file(QUIRKS, settings=settings, date_format="YYYYMMDD")


# --------------------------------------------------------------------------- idempotence, versions


def test_reingesting_the_same_bytes_changes_nothing(
    ingested: IngestResult, settings: Settings, tmp_path: Path
) -> None:
    workspace = Workspace.from_settings(settings)
    before = snapshot(workspace)
    copy = shutil.copy(QUIRKS, tmp_path / "renamed_copy.csv")

    for source in (QUIRKS, Path(copy)):
        again = ingest_file(source, settings=settings)
        assert again.status == "already_ingested"
        assert again.run_id == ingested.run_id
        assert again.report == ingested.report
        assert again.data_version == ingested.data_version
        assert again.silver_path == ingested.silver_path
        assert again.quarantine_path == ingested.quarantine_path

    assert snapshot(workspace) == before
    assert count_rows(settings, IngestionRun) == 1
    assert count_rows(settings, DataVersion) == 1
    assert read_silver(settings).num_rows == 18


def test_a_new_file_appends_a_part_and_a_child_data_version(
    ingested: IngestResult, settings: Settings, tmp_path: Path
) -> None:
    second = write_csv(
        tmp_path / "december.csv",
        [
            UCI_HEADER,
            "581585,22466,FAIRY TALE COTTAGE NIGHT LIGHT,12,12/9/2011 12:31,1.95,15804,"
            "United Kingdom",
            "581586,22061,LARGE CAKE STAND HANGING STRAWBERY,8,12/9/2011 12:49,2.95,13113,"
            "United Kingdom",
        ],
    )
    appended = ingest_file(second, settings=settings)
    assert appended.status == "ingested"
    assert appended.silver_path != ingested.silver_path
    assert appended.quarantine_path is None  # nothing quarantined, no empty part

    silver = read_silver(settings)
    assert silver.schema.equals(SILVER_SCHEMA)
    assert silver.num_rows == 18 + 2
    assert set(silver.column("ingest_run_id").to_pylist()) == {ingested.run_id, appended.run_id}

    db = PlatformDB.from_settings(settings)
    try:
        versions = data_versions(db)
        assert [v.table_name for v in versions] == [SILVER_TABLE, SILVER_TABLE]
        first, latest = versions
        assert first.parent_version is None
        assert latest.parent_version == first.version
        assert (first.row_count, latest.row_count) == (18, 20)
        assert re.fullmatch(r"[0-9a-f]{64}", latest.version)
        assert latest.version == appended.data_version != ingested.data_version
        hashes = sorted([ingested.report.source_hash, appended.report.source_hash])
        assert latest.version == hashlib.sha256("\n".join(hashes).encode()).hexdigest()
        newest = db.latest_data_version(SILVER_TABLE)
        assert newest is not None and newest.id == latest.id
        assert latest.ingestion_run_id == appended.run_id
    finally:
        db.dispose()


# --------------------------------------------------------------------------- mappings


def test_a_mapping_file_reads_a_cdnow_like_file(
    settings: Settings, workspace: Workspace, tmp_path: Path
) -> None:
    source = write_csv(
        tmp_path / "cdnow.csv",
        ["cust_id,date,n_items,amount", "00001,19970101,1,11.77", "00002,19970112,5,77.00"],
    )
    mapping_file = tmp_path / "cdnow.yaml"
    mapping_file.write_text(
        "customer_id: cust_id\ninvoice_date: date\nquantity: n_items\ntotal_amount: amount\n"
    )
    result = ingest_file(
        source, mapping=ColumnMapping.load(mapping_file), date_format="%Y%m%d", settings=settings
    )
    assert result.report.silver_rows == 2 and result.report.reconciles
    rows = pq.read_table(result.silver_path).to_pylist()
    mapped = [(r["customer_id"], r["invoice_date"], r["quantity"], r["total_amount"]) for r in rows]
    assert mapped == [
        ("00001", datetime(1997, 1, 1), 1, 11.77),  # ids keep their leading zeros
        ("00002", datetime(1997, 1, 12), 5, 77.0),
    ]
    for column in ("invoice_no", "stock_code", "description", "unit_price", "country"):
        assert {r[column] for r in rows} == {None}, column
    assert {r["is_cancellation"] or r["is_non_product"] or r["is_return"] for r in rows} == {False}
    assert result.report.flags["missing_description"] == 2


def test_an_unknown_canonical_name_in_a_mapping_lists_the_valid_names(tmp_path: Path) -> None:
    mapping_file = tmp_path / "bad.yaml"
    mapping_file.write_text(
        "customer: cust_id\ninvoice_date: date\nquantity: n_items\ntotal_amount: amount\n"
    )
    with pytest.raises(ConfigError, match=r"'customer' is not a canonical column.*customer_id"):
        ColumnMapping.load(mapping_file)


def test_a_mapping_naming_absent_columns_is_an_input_error(
    settings: Settings, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "cdnow.csv", ["cust_id,date,n_items", "1,19970101,1"])
    mapping = ColumnMapping.from_dict(
        {
            "customer_id": "cust_id",
            "invoice_date": "date",
            "quantity": "n_items",
            "total_amount": "amt",
        }
    )
    with pytest.raises(InputFileError, match=r"mapped source columns 'amt'.*'cust_id'"):
        ingest_file(source, mapping=mapping, date_format="%Y%m%d", settings=settings)


# --------------------------------------------------------------------------- platform database


def test_ingestion_is_recorded_in_the_platform_database(
    settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETAILML_DATABASE_URL", database_url)
    get_settings.cache_clear()
    result = ingest_file(QUIRKS, settings=get_settings())

    db = PlatformDB(database_url)
    try:
        with db.session() as session:
            runs = list(session.scalars(select(IngestionRun)))
        assert len(runs) == 1
        run = runs[0]
        assert (run.id, run.source_hash, run.file_format) == (
            result.run_id,
            result.report.source_hash,
            "csv",
        )
        assert (run.rows_read, run.silver_rows, run.quarantined_rows, run.duplicates_removed) == (
            30,
            18,
            8,
            4,
        )
        assert run.status == "succeeded"
        assert run.source_path == str(QUIRKS.resolve())
        assert run.report_path == str(result.report_path)
        assert run.finished_at >= run.started_at
        (version,) = data_versions(db)
        assert (version.version, version.parent_version, version.row_count) == (
            result.data_version,
            None,
            18,
        )
        assert version.ingestion_run_id == run.id
    finally:
        db.dispose()
    assert not (settings.home / "platform.db").exists()  # the URL was used, not the default


# --------------------------------------------------------------------------- atomicity


def test_a_failed_database_commit_leaves_nothing_visible(
    ingested: IngestResult, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = Workspace.from_settings(settings)
    before = snapshot(workspace)

    def crash(*args: object) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(ingest_module, "_record_run", crash)
    other = write_csv(tmp_path / "other.csv", [UCI_HEADER, "1,A,x,1,12/1/2010 8:26,1.0,1,France"])
    with pytest.raises(RuntimeError, match="database went away"):
        ingest_file(other, settings=settings)
    assert snapshot(workspace) == before
    assert count_rows(settings, IngestionRun) == 1
    assert list(workspace.tmp.glob("ingest-*")) == []
    assert read_silver(settings).num_rows == 18


def test_a_crash_while_moving_files_into_place_takes_back_the_moved_ones(
    ingested: IngestResult, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = Workspace.from_settings(settings)
    before = snapshot(workspace)
    real_replace = Path.replace
    calls: list[Path] = []

    def replace_then_crash(self: Path, target: Path) -> Path:
        calls.append(Path(target))
        if len(calls) == 3:  # bronze and report are in place; the quarantine part fails
            raise OSError("disk full")
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", replace_then_crash)
    other = write_csv(
        tmp_path / "other.csv",
        [UCI_HEADER, "1,A,x,1,12/1/2010 8:26,1.0,1,France", "2,A,x,1,never,1.0,1,France"],
    )
    with pytest.raises(OSError, match="disk full"):
        ingest_file(other, settings=settings)
    monkeypatch.undo()
    assert len(calls) == 3
    assert snapshot(workspace) == before
    assert count_rows(settings, IngestionRun) == 1


def test_a_concurrent_ingestion_of_the_same_file_wins_and_this_one_rolls_back(
    settings: Settings,
    workspace: Workspace,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = PlatformDB(database_url)
    db.migrate()
    source_hash = hashlib.sha256(QUIRKS.read_bytes()).hexdigest()
    real_record = ingest_module._record_run

    def another_process_commits_first(
        target: PlatformDB, run: IngestionRun, version: DataVersion
    ) -> None:
        with target.session() as session:
            session.add(
                IngestionRun(
                    id="f" * 32,
                    source_path="/elsewhere/quirks.csv",
                    source_hash=source_hash,
                    file_format="csv",
                    status="succeeded",
                    started_at=run.started_at,
                    finished_at=run.finished_at,
                    rows_read=30,
                    silver_rows=18,
                    quarantined_rows=8,
                    duplicates_removed=4,
                    report_path=None,
                )
            )
        real_record(target, run, version)

    monkeypatch.setattr(ingest_module, "_record_run", another_process_commits_first)
    try:
        before = snapshot(workspace)
        result = ingest_file(QUIRKS, settings=settings, db=db)
        assert result.status == "already_ingested"
        assert result.run_id == "f" * 32
        assert (result.report.rows_read, result.report.silver_rows) == (30, 18)
        assert result.report.reconciles
        assert snapshot(workspace) == before  # this run's files were taken back
        with db.session() as session:
            assert session.scalar(select(func.count()).select_from(IngestionRun)) == 1
            assert session.scalar(select(func.count()).select_from(DataVersion)) == 0
    finally:
        db.dispose()


def test_processes_ingesting_at_once_take_turns_and_keep_one_version_chain(
    settings: Settings, workspace: Workspace, tmp_path: Path
) -> None:
    other = write_csv(tmp_path / "other.csv", [UCI_HEADER, "1,A,x,1,12/1/2010 8:26,1.0,1,France"])
    script = (
        "import sys; from pathlib import Path; from retailml.data.ingest import ingest_file; "
        "print(ingest_file(Path(sys.argv[1])).status)"
    )
    env = {**os.environ, "RETAILML_HOME": str(settings.home)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(source)], env=env, stdout=subprocess.PIPE, text=True
        )
        for source in (QUIRKS, QUIRKS, other)
    ]
    statuses = [process.communicate(timeout=60)[0].strip() for process in processes]
    assert all(process.returncode == 0 for process in processes)
    assert sorted(statuses[:2]) == ["already_ingested", "ingested"]
    assert statuses[2] == "ingested"

    db = PlatformDB.from_settings(settings)
    try:
        first, second = data_versions(db)
        assert second.parent_version == first.version
        assert second.row_count == 18 + 1
    finally:
        db.dispose()
    assert count_rows(settings, IngestionRun) == 2
    assert read_silver(settings).num_rows == 18 + 1


def test_a_conflicting_data_version_is_a_state_error_and_rolls_back(
    ingested: IngestResult, settings: Settings, tmp_path: Path
) -> None:
    other = write_csv(tmp_path / "other.csv", [UCI_HEADER, "1,A,x,1,12/1/2010 8:26,1.0,1,France"])
    other_hash = hashlib.sha256(other.read_bytes()).hexdigest()
    clash = hashlib.sha256(
        "\n".join(sorted([ingested.report.source_hash, other_hash])).encode()
    ).hexdigest()
    db = PlatformDB.from_settings(settings)
    try:
        with db.session() as session:
            session.add(DataVersion(table_name=SILVER_TABLE, version=clash, row_count=0))
        workspace = Workspace.from_settings(settings)
        before = snapshot(workspace)
        with pytest.raises(StateError, match=r"database conflict.*no file was changed"):
            ingest_file(other, settings=settings, db=db)
        assert snapshot(workspace) == before
        with db.session() as session:
            assert session.scalar(select(func.count()).select_from(IngestionRun)) == 1
    finally:
        db.dispose()
