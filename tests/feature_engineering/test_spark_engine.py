"""The Spark engine runs the same definitions as DuckDB and publishes the same features.

One SparkSession serves the module (started by the first test that needs it,
stopped at the end). Every feature set is built once per engine, each engine
in its own workspace over the same silver lines, and the tests compare what
was published.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from pyspark.sql import SparkSession
from sqlalchemy import select

from retailml.core.db import FeatureBuild, PlatformDB
from retailml.core.errors import ConfigError
from retailml.core.settings import Settings, load_settings
from retailml.core.workspace import Workspace
from retailml.feature_engineering import _spark_engine
from retailml.feature_engineering._definitions import DIMENSIONS, FEATURE_SETS
from retailml.feature_engineering._duckdb_engine import DuckDBEngine
from retailml.feature_engineering._spark_engine import (
    SparkEngine,
    spark_session,
    stop_spark_session,
    to_spark_sql,
)
from retailml.feature_engineering.feature_pipeline import (
    FeatureEngineeringPipeline,
    FeatureSetResult,
    PipelineResult,
)

from .helpers import Line, random_lines, write_silver_part

ENGINES = ("duckdb", "spark")
UK = "United Kingdom"
#: Float features may differ in the last bits: the engines sum in different
#: orders (measured: at most 1.2e-14 relative). A sum that cancels to zero
#: (a purchase and its cancellation) can be 0 on one engine and rounding
#: noise on the other, hence an absolute tolerance far below a cent.
RTOL = 1e-9
ATOL = 1e-12
#: A short-lived local JVM: the C1 compiler alone warms up in a fraction of
#: the time, which halves the module's run time on two cores.
FAST_START = {"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"}


def messy_lines(seed: int = 11) -> list[Line]:
    """About 3,000 silver lines over 13 months with every kind of row the definitions treat.

    Purchases in five countries (four with holidays, EIRE by its UCI name;
    "Unspecified" without), cancellations, returns, postage, an adjustment,
    guests, an empty customer id, a missing country and price, a customer
    with one line, and lines on the exact boundaries of a month.
    """
    rng = random.Random(seed)
    countries = (UK, "France", "Germany", "EIRE", "Unspecified")
    purchases = random_lines(
        seed=seed,
        invoices=900,
        customers=90,
        products=60,
        start="2010-12-01",
        days=375,
        countries=countries,
    )
    lines: list[Line] = list(purchases)
    for invoice, code, quantity, when, price, customer, country in purchases:
        draw = rng.random()
        later = (datetime.fromisoformat(when) + timedelta(hours=rng.randint(1, 200))).isoformat()
        if draw < 0.06:  # a (partial) cancellation, recorded later
            cancelled = -rng.randint(1, quantity)
            lines.append(("C" + invoice, code, cancelled, later, price, customer, country))
        elif draw < 0.09:  # postage on the same invoice
            lines.append((invoice, "POST", 1, when, 18.0, customer, country))
        elif draw < 0.10:  # a return without a cancellation invoice
            lines.append((invoice + "R", code, -1, later, price, customer, country))
    for number in range(60):  # guests
        when = datetime(2010, 12, 1, 9) + timedelta(days=rng.randrange(375), minutes=number)
        for code in ("P001", "P002", f"P{number % 60:03d}"):
            quantity = rng.randint(1, 12)
            lines.append((f"7{number:05d}", code, quantity, when.isoformat(), 1.25, None, UK))
    lines += [
        ("A800001", "B", 1, "2011-05-03T08:00", -11062.06, None, UK),  # adjustment
        ("800002", "P003", 4, "2011-04-01T00:00", 2.5, "10003", UK),  # a month's first instant
        ("800003", "P004", 2, "2011-03-31T23:59:59.999999", 3.0, "10003", UK),  # its last
        ("800004", "P005", 3, "2011-06-15T12:00", 1.5, "", "France"),  # empty customer id
        ("800005", "P006", 5, "2011-07-01T10:00", 2.0, "10004", None),  # no country
        ("800006", "P999", 7, "2011-08-02T10:00", None, "10005", "Germany"),  # no price
        ("C800007", "P008", -3, "2011-09-09T10:00", 4.0, "19999", UK),  # only a cancellation
        ("800008", "P009", 1, "2010-12-25T11:00", 9.0, "10006", UK),  # Christmas Day
        ("800009", "P010", 2, "2011-10-10T10:00", 5.0, "20001", "France"),  # one line only
    ]
    return lines


@dataclass(frozen=True)
class Built:
    """What one engine published from :func:`messy_lines`."""

    settings: Settings
    single: PipelineResult
    monthly: FeatureSetResult
    by_year: FeatureSetResult


def run(settings: Settings, engine: str, sets: list[str], **config: Any) -> PipelineResult:
    return FeatureEngineeringPipeline(
        config={
            "feature_sets": sets,
            "source_tables": ["silver_transactions", "dim_customers", "dim_products"],
            "engine": engine,
            **config,
        },
        settings=settings,
    ).run()


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    """The process's SparkSession for this module; stopped when the module ends."""
    yield spark_session({"spark_conf": FAST_START})
    stop_spark_session()


@pytest.fixture(scope="module")
def built(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Built]:
    """Every feature set built by each engine in its own workspace over the same lines."""
    root = tmp_path_factory.mktemp("engines")
    lines = messy_lines()
    out: dict[str, Built] = {}
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("RETAILML_") and name != "RETAILML_TEST_POSTGRES_URL":
                patch.delenv(name)
        patch.chdir(root)
        for engine in ENGINES:
            settings = load_settings(home=root / engine)
            Workspace.from_settings(settings).init()
            write_silver_part(settings, lines)
            out[engine] = Built(
                settings=settings,
                single=run(settings, engine, list(FEATURE_SETS)),
                monthly=run(settings, engine, ["customer_rfm"], snapshots="monthly")[
                    "customer_rfm"
                ],
                by_year=run(settings, engine, ["seasonal_trends"], partitioning=["year"])[
                    "seasonal_trends"
                ],
            )
    return out


def assert_same_table(duck: FeatureSetResult, spark: FeatureSetResult) -> None:
    """Same files' schema, same rows in the same order, every value equal (floats within RTOL)."""
    definition = FEATURE_SETS[duck.name]

    # The files themselves: the same column names and Arrow types (naive
    # microsecond timestamps included); Spark marks never-null columns required.
    def file_types(result: FeatureSetResult) -> list[tuple[str, pa.DataType]]:
        schema = ds.dataset(result.path, format="parquet", partitioning="hive").schema
        return [(field.name, field.type) for field in schema]

    assert file_types(spark) == file_types(duck)

    expected, actual = duck.table(), spark.table()  # sorted by entity keys and timestamp
    assert actual.schema == expected.schema == definition.arrow_schema
    assert (actual.num_rows, duck.row_count, spark.row_count) == (expected.num_rows,) * 3
    keys = [*definition.entity_keys, definition.timestamp_column]
    assert actual.select(keys).equals(expected.select(keys)), "the same rows"
    for column in definition.columns:
        want = expected.column(column.name).to_pylist()
        got = actual.column(column.name).to_pylist()
        if column.dtype != "float":
            assert got == want, f"{duck.name}.{column.name}"
            continue
        assert [v is None for v in got] == [v is None for v in want], f"{column.name} nulls"
        pairs = np.array([(g, w) for g, w in zip(got, want, strict=True) if w is not None])
        if len(pairs):
            close = np.isclose(pairs[:, 0], pairs[:, 1], rtol=RTOL, atol=ATOL)
            assert close.all(), f"{duck.name}.{column.name}: {pairs[~close][:5].tolist()}"


# --------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("name", list(FEATURE_SETS))
def test_duckdb_and_spark_agree_on_every_feature_value(built: dict[str, Built], name: str) -> None:
    assert_same_table(built["duckdb"].single[name], built["spark"].single[name])


def test_monthly_rfm_snapshots_agree(built: dict[str, Built]) -> None:
    duck, spark = built["duckdb"].monthly, built["spark"].monthly
    assert_same_table(duck, spark)
    # 13 monthly cut-offs: the first instant of each next month, the last at the data's end.
    stamps = sorted(set(spark.table().column("event_timestamp").to_pylist()))
    assert len(stamps) == 13
    assert stamps[:2] == [datetime(2011, 1, 1), datetime(2011, 2, 1)]


def test_partitioning_by_year_only_agrees(built: dict[str, Built]) -> None:
    duck, spark = built["duckdb"].by_year, built["spark"].by_year
    assert_same_table(duck, spark)
    assert sorted(str(p.relative_to(spark.path)) for p in spark.path.rglob("*.parquet")) == [
        "year=2010/data_0.parquet",
        "year=2011/data_0.parquet",
    ]


def test_the_input_exercises_what_the_definitions_distinguish(built: dict[str, Built]) -> None:
    """Agreement means something: the compared tables hold every edge case."""
    features = {name: built["duckdb"].single[name].table() for name in FEATURE_SETS}

    def values(name: str, column: str) -> list[Any]:
        return list(features[name].column(column).to_pylist())

    assert None in values("customer_rfm", "monetary_std")  # std of one line
    assert None in values("product_popularity", "quantity_std")
    assert None in values("product_popularity", "unit_price_mean")  # a product without price
    assert min(values("daily_sales", "sales_amount")) < 0  # a day of only cancellations
    assert any(v is not None for v in values("seasonal_trends", "yoy_growth"))  # Dec 2010 -> 2011
    assert None in values("seasonal_trends", "mom_growth")
    assert True in values("temporal", "is_holiday")
    assert set(values("temporal", "day_of_week")) == set(range(7))
    assert "" not in values("customer_rfm", "customer_id")
    assert "country:EIRE" in values("daily_sales", "series_id")


# --------------------------------------------------------------------------- publishing


def test_the_published_layout_and_manifest_are_the_same_shape(built: dict[str, Built]) -> None:
    for name in FEATURE_SETS:
        duck, spark = built["duckdb"].single[name], built["spark"].single[name]
        # The version depends on the definition, parameters and data, not the engine.
        assert spark.version == duck.version

        def files(result: FeatureSetResult) -> list[str]:
            return sorted(str(p.relative_to(result.path)) for p in result.path.rglob("*"))

        # year=/month= directories, one data_0.parquet each, no Spark markers or checksums.
        assert files(spark) == files(duck), name
        if name != "customer_rfm":  # one snapshot: the data's last month
            assert "year=2010/month=12/data_0.parquet" in files(spark), name
        duck_manifest = json.loads((duck.path / "_manifest.json").read_text())
        spark_manifest = json.loads((spark.path / "_manifest.json").read_text())
        assert (duck_manifest.pop("engine"), spark_manifest.pop("engine")) == ("duckdb", "spark")
        duck_manifest.pop("created_at")
        spark_manifest.pop("created_at")
        assert spark_manifest == duck_manifest, name


def test_lineage_records_the_spark_engine(built: dict[str, Built]) -> None:
    db = PlatformDB.from_settings(built["spark"].settings)
    try:
        with db.session() as session:
            rows = list(session.scalars(select(FeatureBuild)))
    finally:
        db.dispose()
    assert {(r.feature_set, r.engine, r.status) for r in rows} == {
        (name, "spark", "published") for name in FEATURE_SETS
    }
    assert len(rows) == len(FEATURE_SETS) + 2  # the monthly and year-partitioned builds


def test_dimension_relations_agree(built: dict[str, Built], tmp_path: Path) -> None:
    workspace = Workspace.from_settings(built["spark"].settings)
    parts = sorted(workspace.transactions.glob("part-*.parquet"))
    names = [*DIMENSIONS, "dim_dates", "dim_holidays"]
    with DuckDBEngine(parts, tmp_path / "duckdb", {}) as duck:
        duck.add_relations(names)
        expected = {n: duck.con.sql(f"SELECT * FROM {n} ORDER BY ALL").fetchall() for n in names}
    with SparkEngine(parts, tmp_path / "spark", {}) as spark:
        spark.add_relations(names)
        for name in names:
            frame = spark.spark.sql(f"SELECT * FROM {name}")
            order = [frame[c].asc_nulls_last() for c in frame.columns]  # as DuckDB's
            rows = [tuple(r) for r in frame.orderBy(*order).collect()]
            assert rows == expected[name], name
            assert rows, name


def test_every_definition_transpiles_to_spark_sql() -> None:
    for definition in FEATURE_SETS.values():
        for snapshots in definition.options.get("snapshots", ("",)):
            given = {"snapshots": snapshots} if snapshots else None
            translated = to_spark_sql(definition.sql(given))
            # DuckDB's TIMESTAMP is naive: Spark's naive type, not its session-zone one.
            assert " AS TIMESTAMP)" not in translated
            assert "FROM transactions" in translated


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"threads": 2}, "unknown option 'threads' for spark; master (Spark master URL"),
        ({"master": "local[two]"}, "engine_options.master: expected 'local', 'local[N]'"),
        ({"master": 4}, "engine_options.master: expected str"),
        ({"driver_memory": "lots"}, "engine_options.driver_memory: expected a JVM memory size"),
        ({"spark_conf": ["a"]}, "engine_options.spark_conf: expected dict"),
        ({"spark_conf": {"executor.cores": 2}}, "expected keys starting with 'spark.'"),
        ({"spark_conf": {"spark.x": [1]}}, "spark_conf.spark.x: expected a string, number"),
        (
            {"spark_conf": {"spark.sql.session.timeZone": "Europe/London"}},
            "'spark.sql.session.timeZone' is fixed to 'UTC' so Spark's features equal DuckDB's",
        ),
    ],
)
def test_an_invalid_engine_option_is_a_config_error(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match="in the FeatureEngineeringPipeline config") as err:
        FeatureEngineeringPipeline(
            config={"feature_sets": ["temporal"], "engine": "spark", "engine_options": options}
        )
    assert fragment in str(err.value)


def test_all_engine_option_problems_are_reported_at_once() -> None:
    options = {"master": "local[two]", "driver_memory": "lots", "spark_conf": {"x": "1"}}
    with pytest.raises(ConfigError, match="3 problems in the FeatureEngineeringPipeline config"):
        FeatureEngineeringPipeline(
            config={"feature_sets": ["temporal"], "engine": "spark", "engine_options": options}
        )


def test_valid_engine_options_are_accepted() -> None:
    pipeline = FeatureEngineeringPipeline(
        config={
            "feature_sets": ["temporal"],
            "engine": "spark",
            "engine_options": {
                "master": "local[2]",
                "driver_memory": "2g",
                "spark_conf": {
                    "spark.sql.shuffle.partitions": 8,
                    "spark.sql.adaptive.enabled": True,
                },
            },
        }
    )
    conf = _spark_engine.session_conf(pipeline.parsed_config.engine_options)
    assert conf["spark.sql.shuffle.partitions"] == "8"
    assert conf["spark.sql.adaptive.enabled"] == "true"
    assert conf["spark.driver.bindAddress"] == "127.0.0.1"
    assert conf["spark.sql.session.timeZone"] == "UTC"


def test_without_java_17_the_engine_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-java"))
    with pytest.raises(ConfigError) as err:
        _spark_engine.java_major_version()
    message = str(err.value)
    assert "expected Java 17+ to run Spark" in message
    assert "apt-get install openjdk-17-jre-headless" in message
    assert "engine='duckdb'" in message

    old = tmp_path / "java8" / "bin" / "java"
    old.parent.mkdir(parents=True)
    old.write_text("#!/bin/sh\necho 'openjdk version \"1.8.0_392\"' >&2\n")
    old.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(old.parent.parent))
    with pytest.raises(ConfigError, match=r"reporting 'openjdk version \"1.8.0_392\"'"):
        _spark_engine.java_major_version()


def test_a_spark_that_cannot_start_is_a_config_error(tmp_path: Path) -> None:
    # A Java that reports version 17 but cannot start a JVM; in a fresh
    # process, since this one's session is already running.
    java = tmp_path / "jdk" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = -version ]; then echo \'openjdk version "17.0.15"\' >&2; exit 0; fi\n'
        "echo 'Error: could not create the Java Virtual Machine.' >&2; exit 1\n"
    )
    java.chmod(0o755)
    code = (
        "from retailml.core.errors import ConfigError\n"
        "from retailml.feature_engineering._spark_engine import spark_session\n"
        "try:\n"
        "    spark_session({})\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "JAVA_HOME": str(java.parent.parent)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "spark engine: expected a Spark session on master 'local[*]'" in done.stdout
    assert "Java 17+ ('apt-get install openjdk-17-jre-headless')" in done.stdout
    assert "engine='duckdb'" in done.stdout
