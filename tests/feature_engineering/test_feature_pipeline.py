"""The pipeline: configuration, partitioned atomic publishing, versions, validation, lineage."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

import guide
import retailml.feature_engineering.feature_pipeline as feature_pipeline
from retailml.core.db import DataVersion, FeatureBuild, PlatformDB
from retailml.core.errors import ConfigError, DataValidationError, NotFoundError, StateError
from retailml.core.settings import Settings
from retailml.core.workspace import Workspace
from retailml.data.ingest import SILVER_TABLE
from retailml.feature_engineering._duckdb_engine import (
    DuckDBEngine,
    available_cpus,
    cgroup_limits,
    default_memory_limit,
    memory_bytes,
    month_windows,
    session_options,
)
from retailml.feature_engineering._validation import validate, validate_columns
from retailml.feature_engineering.feature_pipeline import (
    FEATURE_SETS,
    FeatureEngineeringPipeline,
    FeatureSetResult,
    PipelineResult,
    ValidationRules,
    load_feature_set,
)
from retailml.validators.data_quality import DataQualityValidator

from .helpers import (
    Line,
    WriteSilver,
    guide_block,
    random_lines,
    silver_table,
    write_silver_part,
)

UK = "United Kingdom"

LATER: list[Line] = [
    ("600001", "85123A", 6, "2011-12-01T10:00", 2.0, "12345", UK),
    ("600002", "22423", 2, "2011-12-02T11:00", 4.0, "99999", "France"),
]


#: Engine options computing the sets one at a time, and two at a time on two connections.
SESSIONS = pytest.mark.parametrize(
    "engine_options",
    [{"threads": 1}, {"threads": 2, "concurrent_sets": 2}],
    ids=["one session", "two sessions"],
)


def pipeline(settings: Settings, *sets: str, **config: Any) -> FeatureEngineeringPipeline:
    return FeatureEngineeringPipeline(
        config={"feature_sets": list(sets or ["customer_rfm"]), **config}, settings=settings
    )


def builds(settings: Settings) -> list[FeatureBuild]:
    db = PlatformDB.from_settings(settings)
    try:
        with db.session() as session:
            return list(session.scalars(select(FeatureBuild).order_by(FeatureBuild.created_at)))
    finally:
        db.dispose()


def versions(workspace: Workspace, name: str) -> set[str]:
    """Every entry of a feature set's directory except the _latest pointer."""
    return {p.name for p in (workspace.features / name).iterdir() if p.name != "_latest"}


# --------------------------------------------------------------------------- the guide


def test_the_guides_pipeline_snippet_runs_as_written(write_silver: WriteSilver) -> None:
    write_silver(random_lines())
    features = guide.run(guide_block("**Configuration Example**"), returns="features")

    assert isinstance(features, PipelineResult)
    assert list(features) == ["customer_rfm", "product_popularity", "seasonal_trends"]
    for result in features.values():
        assert result.row_count > 0
        assert result.validation.passed, result.validation.failures
    assert set(features["customer_rfm"].validation.checks) == {
        "missing_values",
        "outliers",
        "schema",
    }
    # Country totals differ in scale by nature: no fences across countries.
    seasonal = features["seasonal_trends"].validation
    assert set(seasonal.checks) == {"missing_values", "schema"}
    assert "outlier_detection" in seasonal.skipped


def test_execute_is_a_coroutine_and_the_result_a_mapping(
    settings: Settings, write_silver: WriteSilver
) -> None:
    write_silver(random_lines(invoices=100))
    assert inspect.iscoroutinefunction(FeatureEngineeringPipeline.execute)

    result = asyncio.run(pipeline(settings, "customer_rfm", "daily_sales").execute())

    assert len(result) == 2 and "daily_sales" in result
    rfm = result["customer_rfm"]
    assert isinstance(rfm, FeatureSetResult)
    assert rfm.entity_keys == ("customer_id",)
    assert rfm.timestamp_column == "event_timestamp"
    assert rfm.columns == tuple(rfm.table().column_names)
    assert len(rfm.table(format="pandas")) == rfm.row_count
    with pytest.raises(KeyError, match="no feature set 'temporal' in this result"):
        result["temporal"]


def test_public_names_are_pinned() -> None:
    assert sorted(feature_pipeline.__all__) == [
        "FEATURE_SETS",
        "FeatureEngineeringPipeline",
        "FeatureSet",
        "FeatureSetResult",
        "PipelineResult",
        "ValidationReport",
        "ValidationRules",
        "load_feature_set",
    ]


# --------------------------------------------------------------------------- configuration


def test_config_errors_list_every_problem_at_once(settings: Settings) -> None:
    config = {
        "source_tables": ["bronze_sales", "dim_stores"],
        "feature_sets": ["customer_rfm", "basket_size"],
        "validation_rules": {"missing_threshold": 1.5, "outlier_detection": "yes", "max_nulls": 3},
        "output_format": "csv",
        "partitioning": ["year", "day"],
        "engine": "flink",
        "on_validation_failure": "ignore",
        "colour": "blue",
    }
    with pytest.raises(ConfigError, match="10 problems in the FeatureEngineeringPipeline") as err:
        FeatureEngineeringPipeline(config=config, settings=settings)

    message = str(err.value)
    for fragment in (
        "unknown key 'colour'; known keys: feature_sets, source_tables",
        "unknown feature set 'basket_size'; known feature sets: customer_rfm, "
        "product_popularity, seasonal_trends, temporal, daily_sales",
        "unknown table 'dim_stores'; known tables: bronze_sales, silver_transactions, "
        "dim_customers, dim_products",
        "validation_rules.missing_threshold: expected a number in [0, 1]; got 1.5",
        "validation_rules.outlier_detection: expected true or false; got 'yes'",
        "unknown rule 'max_nulls'",
        "output_format: expected one of 'parquet'; got 'csv'",
        "partitioning: unknown column 'day'; expected a subset of ['year', 'month']",
        "engine: expected one of 'duckdb', 'spark'; got 'flink'",
        "on_validation_failure: expected one of 'fail', 'warn'; got 'ignore'",
    ):
        assert fragment in message


def test_a_feature_set_needs_its_source_table_listed(settings: Settings) -> None:
    with pytest.raises(
        ConfigError,
        match=r"'customer_rfm' reads 'transactions', which source_tables does not list; "
        r"add 'bronze_sales' or 'silver_transactions'",
    ):
        pipeline(settings, "customer_rfm", source_tables=["dim_customers"])


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"snapshots": "weekly"}, "snapshots: expected one of 'single', 'monthly'; got 'weekly'"),
        ({"engine_options": {"threads": 0}}, "engine_options.threads: expected a positive int"),
        ({"engine_options": {"cores": 2}}, "unknown option 'cores' for duckdb"),
        (
            {"engine_options": {"memory_limit": "lots"}},
            "engine_options.memory_limit: expected a size such as '4GB' or '512MiB'",
        ),
        (
            {"engine_options": {"concurrent_sets": 0}},
            "engine_options.concurrent_sets: expected a positive int",
        ),
        ({"feature_sets": []}, "feature_sets: empty; name one or more of customer_rfm"),
        ({"feature_sets": "customer_rfm"}, "feature_sets: expected a list of names"),
        ({"partitioning": ["year", "year"]}, "partitioning: names listed twice: 'year'"),
    ],
)
def test_each_bad_value_is_named(settings: Settings, config: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        FeatureEngineeringPipeline(config={"feature_sets": ["customer_rfm"], **config})
    assert fragment in str(err.value)


def test_a_config_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="expected a mapping of setting -> value; got list"):
        FeatureEngineeringPipeline(config=["customer_rfm"])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- input


def test_an_empty_silver_table_asks_for_ingestion(settings: Settings, workspace: Workspace) -> None:
    with pytest.raises(NotFoundError, match="run `retailml data ingest <file>` first"):
        pipeline(settings).run()
    write_silver_part(settings, [])
    with pytest.raises(NotFoundError, match="1 Parquet part"):
        pipeline(settings).run()


def test_parts_without_a_recorded_version_are_versioned_by_content(
    settings: Settings, write_silver: WriteSilver
) -> None:
    write_silver(random_lines(invoices=50), record=False)
    first = pipeline(settings).run()
    again = pipeline(settings).run()
    assert first.input_data_version.startswith("parts-")
    assert again["customer_rfm"].version == first["customer_rfm"].version
    assert again["customer_rfm"].reused


# --------------------------------------------------------------------------- publishing


def test_output_is_partitioned_by_year_and_month_with_a_manifest(
    settings: Settings, workspace: Workspace, write_silver: WriteSilver
) -> None:
    write_silver(random_lines(invoices=100) + LATER)
    result = pipeline(settings, "product_popularity").run()["product_popularity"]

    root = workspace.features / "product_popularity"
    assert result.path == root / result.version
    assert (root / "_latest").read_text().strip() == result.version
    partitions = sorted(str(p.relative_to(result.path)) for p in result.path.rglob("*.parquet"))
    assert partitions[0] == "year=2011/month=1/data_0.parquet"
    assert "year=2011/month=12/data_0.parquet" in partitions
    assert len(result.version) == 16 and int(result.version, 16) >= 0

    manifest = json.loads((result.path / "_manifest.json").read_text())
    db = PlatformDB.from_settings(settings)
    recorded = db.latest_data_version(SILVER_TABLE)
    db.dispose()
    assert recorded is not None
    assert manifest["row_count"] == result.row_count
    assert list(manifest["columns"]) == list(result.columns)
    assert manifest["columns"]["quantity_sum"] == "integer"
    assert manifest["input_data_version"] == recorded.version
    assert len(manifest["definition_hash"]) == 64
    assert manifest["partitioning"] == ["year", "month"]
    assert manifest["created_at"]
    assert manifest["validation"]["passed"] is True


def test_partitioning_by_year_only(settings: Settings, write_silver: WriteSilver) -> None:
    write_silver(random_lines(invoices=100))
    # One thread each: with more, DuckDB may add a month's invoices in another order, and a
    # float sum can then differ in its last bit; the layout alone must not change a value.
    one = {"threads": 1}
    by_month = pipeline(settings, "seasonal_trends", engine_options=one).run()["seasonal_trends"]
    by_year = pipeline(
        settings, "seasonal_trends", partitioning=["year"], engine_options=one
    ).run()["seasonal_trends"]

    assert by_year.version != by_month.version  # the layout is part of the version
    assert [p.parent.name for p in by_year.path.rglob("*.parquet")] == ["year=2011"]
    assert by_year.table().equals(by_month.table())


def test_same_input_gives_the_same_version_and_no_rebuild(
    settings: Settings, write_silver: WriteSilver
) -> None:
    write_silver(random_lines(invoices=100))
    one = {"threads": 1}  # the rebuild below must sum in the same order to equal every float
    first = pipeline(settings, "customer_rfm", engine_options=one).run()["customer_rfm"]
    files = {p: p.stat().st_mtime_ns for p in first.path.rglob("*")}

    again = pipeline(settings, "customer_rfm", engine_options=one).run()["customer_rfm"]
    assert (again.version, again.reused) == (first.version, True)
    assert {p: p.stat().st_mtime_ns for p in again.path.rglob("*")} == files
    assert again.validation.passed

    forced = asyncio.run(
        pipeline(settings, "customer_rfm", engine_options=one).execute(force=True)
    )["customer_rfm"]
    assert (forced.version, forced.reused) == (first.version, False)
    assert forced.table().equals(first.table())


def test_changed_data_gives_a_new_version_and_the_old_stays_readable(
    settings: Settings, workspace: Workspace, write_silver: WriteSilver
) -> None:
    write_silver(random_lines(invoices=100))
    old = pipeline(settings).run()["customer_rfm"]
    old_rows = old.table()

    write_silver(LATER, run_id="y")
    new = pipeline(settings).run()["customer_rfm"]

    assert new.version != old.version
    assert versions(workspace, "customer_rfm") == {old.version, new.version}
    assert load_feature_set("customer_rfm", settings=settings).version == new.version
    assert load_feature_set("customer_rfm", version=old.version).table().equals(old_rows)
    assert "99999" in set(new.table().column("customer_id").to_pylist())


def test_a_changed_parameter_gives_a_new_version(
    settings: Settings, write_silver: WriteSilver
) -> None:
    write_silver(random_lines(invoices=100))
    single = pipeline(settings).run()["customer_rfm"]
    monthly = pipeline(settings, snapshots="monthly").run()["customer_rfm"]
    assert single.version != monthly.version
    assert monthly.row_count > single.row_count


@SESSIONS
def test_a_failure_mid_write_publishes_nothing(
    settings: Settings,
    workspace: Workspace,
    write_silver: WriteSilver,
    monkeypatch: pytest.MonkeyPatch,
    engine_options: dict[str, Any],
) -> None:
    write_silver(random_lines(invoices=100))
    before = pipeline(settings, "customer_rfm", "daily_sales").run()
    write_silver(LATER, run_id="y")

    original = DuckDBEngine.write

    def write_then_crash(self: DuckDBEngine, sql: str, directory: Path, parts: Any) -> int:
        rows = original(self, sql, directory, parts)
        if "series_id" in sql:  # daily_sales, after customer_rfm was staged
            raise OSError("No space left on device")
        return rows

    monkeypatch.setattr(DuckDBEngine, "write", write_then_crash)
    with pytest.raises(OSError, match="No space left"):
        pipeline(settings, "customer_rfm", "daily_sales", engine_options=engine_options).run()

    for name in ("customer_rfm", "daily_sales"):
        old = before[name]
        # No new version, no staging directory left behind, the pointer unmoved.
        assert versions(workspace, name) == {old.version}
        assert load_feature_set(name, settings=settings).version == old.version
        assert load_feature_set(name, settings=settings).table().equals(old.table())
    assert len(builds(settings)) == 2  # the first run's


def test_sets_computed_at_once_equal_sets_computed_in_turn(
    settings: Settings, write_silver: WriteSilver
) -> None:
    write_silver(random_lines(invoices=300))
    names = list(FEATURE_SETS)
    in_turn = pipeline(settings, *names, engine_options={"threads": 1}).run(force=True)
    expected = {name: in_turn[name].table() for name in names}

    at_once = pipeline(settings, *names, engine_options={"threads": 2, "concurrent_sets": 2}).run(
        force=True
    )

    for name in names:
        assert at_once[name].version == in_turn[name].version
        assert at_once[name].row_count == in_turn[name].row_count > 0
        # Each connection has one thread, so even float sums are bit for bit the same.
        assert at_once[name].table().equals(expected[name]), name


def test_two_sessions_start_with_the_costliest_sets(
    settings: Settings, write_silver: WriteSilver, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_silver(random_lines(invoices=100))
    names = list(FEATURE_SETS)
    by_sql = {FEATURE_SETS[name].sql(): name for name in names}
    started: list[str] = []
    original = DuckDBEngine.write

    def noting_write(self: DuckDBEngine, sql: str, directory: Path, parts: Any) -> int:
        if sql in by_sql and by_sql[sql] not in started:
            started.append(by_sql[sql])
        return original(self, sql, directory, parts)

    monkeypatch.setattr(DuckDBEngine, "write", noting_write)
    pipeline(settings, *names, engine_options={"threads": 2, "concurrent_sets": 2}).run()

    costliest = sorted(names, key=lambda n: -FEATURE_SETS[n].relative_cost)[:2]
    assert costliest == ["daily_sales", "product_popularity"]
    assert set(started[:2]) == set(costliest)
    assert sorted(started) == sorted(names)


# --------------------------------------------------------------------------- validation

MISSING_PRICE: list[Line] = [
    ("500001", "85123A", 10, "2011-01-10T10:00", 2.0, "12345", UK),
    ("500002", "22423", 5, "2011-02-10T10:00", 4.0, "12345", UK),
    ("500003", "85123A", 4, "2011-03-01T09:00", 2.5, "67890", UK),
    ("500004", "84879", 1, "2011-03-05T12:00", 30.0, "67890", "France"),
    ("500005", "22423", 2, "2011-03-06T12:00", 4.0, "67890", "France"),
    ("500006", "99999", 3, "2011-03-07T10:00", None, "67890", "France"),  # no price
]


@SESSIONS
def test_a_failing_rule_stops_the_run_naming_set_column_and_value(
    settings: Settings,
    workspace: Workspace,
    write_silver: WriteSilver,
    engine_options: dict[str, Any],
) -> None:
    write_silver(MISSING_PRICE)
    run = pipeline(
        settings,
        "customer_rfm",
        "product_popularity",
        source_tables=["bronze_sales"],
        engine_options=engine_options,
    )

    with pytest.raises(DataValidationError) as err:
        run.run()

    message = str(err.value)
    assert message.startswith("product_popularity: expected the features to pass")
    # One product-month of six has no unit price at all.
    assert "[missing_threshold] column 'unit_price_mean': measured 0.1667, limit 0.05" in message
    assert "on_validation_failure='warn'" in message
    # No version of either set (all or nothing), no staging directory left behind.
    assert not list(workspace.features.rglob("*.parquet"))
    assert not list(workspace.features.rglob(".*"))
    [rejected] = builds(settings)
    assert (rejected.feature_set, rejected.status, rejected.output_path) == (
        "product_popularity",
        "rejected",
        None,
    )
    assert rejected.validation is not None and rejected.validation["passed"] is False


@pytest.mark.timeout(120)
def test_a_failing_set_cancels_the_set_computed_beside_it(
    settings: Settings,
    workspace: Workspace,
    write_silver: WriteSilver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_silver(MISSING_PRICE)
    original = DuckDBEngine.write
    cancelled: list[BaseException] = []

    def endless_daily_sales(self: DuckDBEngine, sql: str, directory: Path, parts: Any) -> int:
        if "series_id" in sql:  # daily_sales: a query that would run for hours
            try:
                self.con.execute("SELECT count(*) FROM range(1000000000000)").fetchall()
            except duckdb.Error as exc:
                cancelled.append(exc)
                raise
        return original(self, sql, directory, parts)

    monkeypatch.setattr(DuckDBEngine, "write", endless_daily_sales)
    run = pipeline(
        settings,
        "daily_sales",
        "product_popularity",
        engine_options={"threads": 2, "concurrent_sets": 2},
    )

    with pytest.raises(DataValidationError, match=r"^product_popularity: expected the features"):
        run.run()

    assert [type(exc) for exc in cancelled] == [duckdb.InterruptException]
    assert not list(workspace.features.rglob("*.parquet"))
    assert [(b.feature_set, b.status) for b in builds(settings)] == [
        ("product_popularity", "rejected")
    ]


def test_warn_mode_publishes_and_records_the_failures(
    settings: Settings, write_silver: WriteSilver
) -> None:
    write_silver(MISSING_PRICE)
    result = pipeline(settings, "product_popularity", on_validation_failure="warn").run()

    products = result["product_popularity"]
    assert products.row_count == 6
    assert result.warnings == products.warnings
    [warning] = result.warnings
    assert warning.startswith("product_popularity: [missing_threshold] column 'unit_price_mean'")
    manifest = json.loads((products.path / "_manifest.json").read_text())
    assert manifest["validation"]["passed"] is False
    [build] = builds(settings)
    assert (build.status, build.row_count) == ("published", 6)

    # Reusing the published version re-applies the rules: fail mode still refuses it.
    with pytest.raises(DataValidationError, match="unit_price_mean"):
        pipeline(settings, "product_popularity").run()


def test_outlier_detection_measures_on_the_log_scale(
    settings: Settings, write_silver: WriteSilver
) -> None:
    lines = random_lines(invoices=300)
    write_silver([*lines, ("999999", "P001", 80995, "2011-06-01T10:00", 2.08, "10001", UK)])
    rules = {"outlier_detection": True, "outlier_threshold": 0.0}

    with pytest.raises(DataValidationError) as err:
        pipeline(settings, "product_popularity", validation_rules=rules).run()

    assert "[outlier_detection] column 'quantity_sum'" in str(err.value)
    warned = pipeline(
        settings, "product_popularity", validation_rules=rules, on_validation_failure="warn"
    ).run()["product_popularity"]
    outliers = warned.validation.checks["outliers"]
    examined = outliers.details["columns"]
    assert examined == ["quantity_sum", "unit_price_mean", "total_amount_sum"]
    flagged = [f.column for f in outliers.failures]
    assert "quantity_sum" in flagged
    assert outliers.details["outlier_count"]["quantity_sum"] == 1  # the 80995 line


# --------------------------------------------------------------------------- lineage


def test_lineage_rows_record_each_published_build(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"database_url": database_url})
    write_silver_part(settings, random_lines(invoices=80))

    result = pipeline(settings, "customer_rfm", "temporal").run()
    pipeline(settings, "customer_rfm", "temporal").run()  # reuse: no new rows

    db = PlatformDB.from_settings(settings)
    try:
        with db.session() as session:
            rows = list(session.scalars(select(FeatureBuild).order_by(FeatureBuild.feature_set)))
            data_version = session.scalars(select(DataVersion)).one()
    finally:
        db.dispose()
    assert [(r.feature_set, r.status) for r in rows] == [
        ("customer_rfm", "published"),
        ("temporal", "published"),
    ]
    for row in rows:
        published = result[row.feature_set]
        manifest = json.loads((published.path / "_manifest.json").read_text())
        assert row.version == published.version
        assert row.input_table == SILVER_TABLE
        assert row.input_data_version == data_version.version
        assert row.transformation == manifest["definition_hash"]
        assert row.output_path == str(published.path)
        assert row.row_count == published.row_count
        assert row.engine == "duckdb"
        assert row.parameters["partitioning"] == ["year", "month"]
        assert row.validation is not None and row.validation["passed"] is True


# --------------------------------------------------------------------------- time windows

#: The feature sets whose rows each come from one month (FeatureSet.chunkable_by).
CHUNKABLE = sorted(name for name, fs in FEATURE_SETS.items() if fs.chunkable_by is not None)


def fourteen_months(seed: int = 3) -> list[Line]:
    """About 2,200 lines over 14 months, in time order, with every kind of line the sets treat.

    Purchases, later (partial) cancellations, postage, guests, a product
    bought twice on one invoice, and lines on the first and last instant of
    a month.
    """
    purchases = random_lines(seed=seed, invoices=500, start="2010-12-01", days=420)
    lines = list(purchases)
    for invoice, code, quantity, when, price, customer, country in purchases[::7]:
        later = (datetime.fromisoformat(when) + timedelta(hours=30)).isoformat()
        lines.append(("C" + invoice, code, -min(quantity, 2), later, price, customer, country))
    for invoice, code, quantity, when, price, customer, country in purchases[::11]:
        lines.append((invoice, "POST", 1, when, 18.0, customer, country))
        lines.append(("9" + invoice, code, quantity, when, price, None, country))  # a guest
    for invoice, code, _, when, price, customer, country in purchases[::13]:
        lines.append((invoice, code, 1, when, price, customer, country))  # the same product again
    lines += [
        ("800001", "P001", 3, "2011-04-01T00:00", 2.5, "10003", UK),
        ("800002", "P002", 2, "2011-03-31T23:59:59.999999", 3.0, "10003", UK),
    ]
    return sorted(lines, key=lambda line: line[3])


def write_row_groups(
    settings: Settings, lines: list[Line], *, rows_per_group: int, shuffle: bool = False
) -> list[Path]:
    """One silver part in row groups of ``rows_per_group`` lines, in order or shuffled."""
    if shuffle:
        lines = random.Random(5).sample(lines, len(lines))
    transactions = Workspace.from_settings(settings).transactions
    transactions.mkdir(parents=True, exist_ok=True)
    part = transactions / "part-x.parquet"
    pq.write_table(silver_table(lines), part, row_group_size=rows_per_group)
    return [part]


def layout(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.name != "_manifest.json")


@pytest.mark.parametrize("shuffle", [False, True], ids=["in time order", "shuffled"])
def test_sets_computed_month_window_by_window_equal_one_pass(
    settings: Settings, shuffle: bool
) -> None:
    parts = write_row_groups(settings, fourteen_months(), rows_per_group=100, shuffle=shuffle)
    windows = month_windows(parts, 300)
    if shuffle:
        # Every row group spans every month: merged into two windows, each reading all of silver.
        assert len(windows) == 2
    else:
        assert len(windows) > 6  # two months or so each
    # One thread: the same rows are summed in the same order, so every float is equal too.
    one_pass = pipeline(settings, *CHUNKABLE, engine_options={"threads": 1}).run()
    expected = {name: (one_pass[name].table(), layout(one_pass[name].path)) for name in CHUNKABLE}

    windowed = pipeline(
        settings, *CHUNKABLE, engine_options={"threads": 1, "window_rows": 300}
    ).run(force=True)

    for name in CHUNKABLE:
        result = windowed[name]
        assert result.version == one_pass[name].version  # the same definition and data
        assert result.row_count == one_pass[name].row_count > 0
        table, files = expected[name]
        assert result.table().equals(table), name
        # year=/month=/data_0.parquet, one file per month, no window directory left behind.
        assert layout(result.path) == files, name
        assert result.validation.to_dict() == one_pass[name].validation.to_dict()


@pytest.mark.parametrize("statistics", [True, False], ids=["footers", "no statistics"])
def test_the_date_range_is_the_datas_first_and_last_day(tmp_path: Path, statistics: bool) -> None:
    lines = fourteen_months()
    part = tmp_path / "part-x.parquet"
    pq.write_table(silver_table(lines), part, row_group_size=50, write_statistics=statistics)
    with DuckDBEngine([part], tmp_path / "scratch", {"threads": 1}) as engine:
        bounds = engine._date_range()
        ((first, last),) = engine.con.execute(
            "SELECT CAST(MIN(invoice_date) AS DATE), CAST(MAX(invoice_date) AS DATE) "
            "FROM transactions"
        ).fetchall()

    assert bounds == (first, last)
    days = sorted(datetime.fromisoformat(line[3]).date() for line in lines)
    assert bounds == (days[0], days[-1])


def test_month_windows_take_every_row_once_in_whole_months(tmp_path: Path) -> None:
    stamps = [datetime(2011, 1, 1) + timedelta(hours=7 * i) for i in range(4000)]  # 38 months
    part = tmp_path / "part-a.parquet"
    dates = pa.array([*stamps, None, None], type=pa.timestamp("us"))
    pq.write_table(pa.table({"invoice_date": dates}), part, row_group_size=250)

    windows = month_windows([part], 400)

    assert windows[-1] == "invoice_date IS NULL"  # rows without a date are a window too
    boundaries = [datetime.fromisoformat(w.split("'")[1]) for w in windows[1:-1]]
    assert all(b.day == 1 and b.time() == datetime.min.time() for b in boundaries)
    con = duckdb.connect()
    con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet('{part}')")
    sizes = [con.execute(f"SELECT COUNT(*) FROM t WHERE {w}").fetchall()[0][0] for w in windows]
    assert sum(sizes) == len(stamps) + 2
    # Whole months of about 105 rows, packed up to window_rows (by estimate).
    assert min(sizes[1:-2]) >= 300 and max(sizes[:-1]) <= 400 + 105
    assert month_windows([part], 10**6) == []  # fits one window: one pass
    no_statistics = tmp_path / "part-b.parquet"
    pq.write_table(pa.table({"invoice_date": dates}), no_statistics, write_statistics=False)
    assert month_windows([no_statistics], 400) == []  # no statistics to plan by: one pass


def test_a_window_writing_another_windows_month_is_refused(
    settings: Settings, workspace: Workspace
) -> None:
    parts = write_row_groups(settings, fourteen_months(), rows_per_group=100)
    staged = workspace.tmp / "staged"
    staged.mkdir(parents=True)
    # Rows that all claim one month: not what chunkable_by promises.
    sql = "SELECT COUNT(*) AS n, 2011 AS year, 1 AS month FROM transactions"
    with DuckDBEngine(parts, workspace.tmp / "duckdb", {"window_rows": 300}) as engine:
        with pytest.raises(StateError, match="two time windows wrote 'year=2011/month=1/"):
            engine.write_by_month(sql, staged, ["year", "month"])
        # The transactions view is whole again after the failure.
        assert engine.con.sql("SELECT COUNT(*) FROM transactions").fetchall()[0][0] > 2000


def test_a_failure_in_a_later_window_publishes_nothing(
    settings: Settings, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_row_groups(settings, fourteen_months(), rows_per_group=100)
    original = DuckDBEngine.write
    calls: list[Path] = []

    def crash_on_third(self: DuckDBEngine, sql: str, directory: Path, parts: Any) -> int:
        calls.append(directory)
        if len(calls) == 3:
            raise OSError("No space left on device")
        return original(self, sql, directory, parts)

    monkeypatch.setattr(DuckDBEngine, "write", crash_on_third)
    with pytest.raises(OSError, match="No space left"):
        pipeline(settings, "daily_sales", engine_options={"window_rows": 300}).run()

    assert [directory.name for directory in calls] == [".window-0", ".window-1", ".window-2"]
    # No version, and no staging or window directory left behind.
    assert versions(workspace, "daily_sales") == set()
    assert not list(workspace.features.rglob("*.parquet"))


# --------------------------------------------------------------------------- validation path


def test_validating_the_written_files_equals_validating_the_table(tmp_path: Path) -> None:
    definition = FEATURE_SETS["product_popularity"]
    rng = np.random.default_rng(0)
    rows = 400
    months = rng.integers(1, 13, rows)
    quantity_mean = rng.lognormal(1.0, 1.0, rows)
    quantity_mean[::37] = np.nan  # NaN is missing too
    prices = pa.array(rng.lognormal(0.5, 0.8, rows), mask=np.arange(rows) % 29 == 0)
    table = pa.table(
        {
            "stock_code": [f"P{i:04d}" for i in range(rows)],
            "event_timestamp": pa.array(
                [datetime(2011, int(m), 1) for m in months], type=pa.timestamp("us")
            ),
            "year": pa.array([2011] * rows, type=pa.int64()),
            "month": pa.array(months, type=pa.int64()),
            "quantity_sum": rng.integers(-5, 500, rows),
            "quantity_mean": quantity_mean,
            "quantity_std": pa.nulls(rows, pa.float64()),
            "unit_price_mean": prices,
            "unit_price_std": rng.random(rows),
            "total_amount_sum": rng.lognormal(3.0, 2.0, rows),
            "unique_customers": rng.integers(0, 40, rows),
        },
        schema=definition.arrow_schema,
    )
    out = tmp_path / "product_popularity"
    pq.write_to_dataset(table, out, partition_cols=["year", "month"])
    rules = ValidationRules(outlier_detection=True, outlier_threshold=0.01)

    stored = feature_pipeline._StoredColumns(out, definition, rows)
    from_files = validate_columns(definition, stored, rules)
    in_memory = validate(definition, feature_pipeline._read_table(out, definition, rows), rules)

    assert from_files.to_dict() == in_memory.to_dict()
    required = [c.name for c in definition.columns if not c.nullable]
    whole = DataQualityValidator().check_missing_values(table, threshold=0.05, columns=required)
    assert from_files.checks["missing_values"] == whole
    assert whole.details["missing_count"]["quantity_mean"] == len(range(0, rows, 37))
    assert not from_files.passed and from_files.checks["outliers"].details["outlier_rows"]


# --------------------------------------------------------------------------- engine resources


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"threads": 1, "memory_limit": "4GB"}, [(1, "4GB")]),
        ({"threads": 2, "memory_limit": "4GB"}, [(1, "1953125KiB")] * 2),
        ({"threads": 4, "memory_limit": "1GiB"}, [(2, "524288KiB")] * 2),
        (
            {"threads": 4, "memory_limit": "3GB", "concurrent_sets": 3},
            [(2, "976562KiB"), (1, "976562KiB"), (1, "976562KiB")],
        ),
        ({"threads": 2, "memory_limit": "1GB", "concurrent_sets": 5}, [(1, "488281KiB")] * 2),
        ({"threads": 8, "memory_limit": "8GB", "concurrent_sets": 1}, [(8, "8GB")]),
    ],
    ids=["one thread", "two threads", "four threads", "three sets", "capped", "one set"],
)
def test_sessions_share_the_threads_and_memory(
    options: dict[str, Any], expected: list[tuple[int, str]]
) -> None:
    sessions = session_options(options)

    assert [(s["threads"], s["memory_limit"]) for s in sessions] == expected
    assert sum(s["threads"] for s in sessions) == options["threads"]
    assert all(s["concurrent_sets"] == 1 for s in sessions)
    assert sum(memory_bytes(s["memory_limit"]) or 0 for s in sessions) <= (
        memory_bytes(options["memory_limit"]) or 0
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4GB", 4 * 10**9), ("512MiB", 512 << 20), ("1.5 gb", 1_500_000_000), ("100", 100)],
)
def test_memory_sizes_are_read_in_duckdbs_units(text: str, expected: int) -> None:
    assert memory_bytes(text) == expected
    assert memory_bytes("lots") is None and memory_bytes("80%") is None


@pytest.mark.parametrize(
    ("files", "cpus", "memory"),
    [
        ({"cpu.max": "150000 100000\n", "memory.max": "1073741824\n"}, 1.5, 1 << 30),
        ({"cpu.max": "max 100000\n", "memory.max": "max\n"}, None, None),
        (
            {
                "cpu/cpu.cfs_quota_us": "200000\n",
                "cpu/cpu.cfs_period_us": "100000\n",
                "memory/memory.limit_in_bytes": "2147483648\n",
            },
            2.0,
            2 << 30,
        ),
        (
            {
                "cpu/cpu.cfs_quota_us": "-1\n",
                "cpu/cpu.cfs_period_us": "100000\n",
                "memory/memory.limit_in_bytes": "9223372036854771712\n",
            },
            None,
            None,
        ),
        ({}, None, None),
    ],
    ids=["v2 limits", "v2 unlimited", "v1 limits", "v1 unlimited", "no cgroup files"],
)
def test_duckdb_defaults_respect_cgroup_limits(
    tmp_path: Path, files: dict[str, str], cpus: float | None, memory: int | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)

    assert cgroup_limits(tmp_path) == (cpus, memory)
    if cpus is not None:
        assert available_cpus(tmp_path) == min(len(os.sched_getaffinity(0)), int(cpus))
    if memory is not None:
        assert default_memory_limit(tmp_path) == f"{memory // 2 // (1 << 20)}MB"
