"""The Spark feature engine: the same SQL definitions, run by Spark SQL.

Nothing is written twice. Each definition of
:mod:`~retailml.feature_engineering._definitions` (DuckDB dialect, kept to
portable constructs) is transpiled with sqlglot to Spark SQL and run over the
same silver Parquet parts the DuckDB engine reads; the dimension relations
are the same SQL (``dim_customers``, ``dim_products``) or the same Python
rows (``dim_dates``, ``dim_holidays``). Results are written in the DuckDB
engine's layout: one ``year=YYYY/month=M/data_0.parquet`` per partition, the
partition columns in the directory names only, no Spark markers. The files
hold the same columns, Arrow types and values (floats to the last bits:
the engines sum in different orders); Spark marks never-null columns
``required`` where DuckDB writes every column ``optional``.

sqlglot's output runs as it is: the definitions avoid what it cannot carry
over with the same meaning (weekday numbers, ``EXTRACT(DOW ...)``), and the
session settings in :data:`FIXED_CONF` give the remaining functions DuckDB's
semantics.

Timestamps
    The silver ``invoice_date`` is a naive timestamp (Parquet
    ``isAdjustedToUTC=false``), which Spark reads as ``TIMESTAMP_NTZ``. Some
    Spark functions (``date_trunc``) return a session-time-zone
    ``TIMESTAMP``; the session time zone is UTC, so such values are the same
    wall-clock instants, and every ``TIMESTAMP`` output column is cast back
    to ``TIMESTAMP_NTZ`` before writing. The files therefore hold naive
    microsecond timestamps, as DuckDB writes them.

The session
    One SparkSession per process, started on first use (``local[*]`` unless
    ``engine_options`` say otherwise) and kept for later runs; each engine
    works in its own child session (:meth:`SparkSession.newSession`), so its
    temporary views and SQL settings do not leak into another run. Spark
    needs Java 17 or newer; without it the engine raises
    :class:`~retailml.core.errors.ConfigError` before launching anything,
    and a Spark that fails to start raises it too, naming the fix.

``engine_options`` (see :data:`OPTIONS`): ``master``, ``driver_memory`` and
``spark_conf`` (extra Spark settings, applied over the defaults, except the
few in :data:`FIXED_CONF` that keep the results equal to DuckDB's).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import re
import shutil
import subprocess
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from retailml.core.errors import ConfigError, DataValidationError, StateError, problem
from retailml.feature_engineering._definitions import DIMENSIONS, TRANSACTIONS, holiday_rows

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

logger = logging.getLogger(__name__)

#: ``engine_options`` the Spark engine accepts.
OPTIONS: dict[str, tuple[type, str]] = {
    "master": (
        str,
        "Spark master URL, e.g. 'local[4]' or 'spark://host:7077' (default 'local[*]')",
    ),
    "driver_memory": (str, "driver JVM memory, e.g. '2g' (default '1g')"),
    "spark_conf": (dict, "extra Spark settings, e.g. {'spark.sql.shuffle.partitions': 64}"),
}

DEFAULT_MASTER = "local[*]"
DEFAULT_DRIVER_MEMORY = "1g"
#: The Java major version Spark 4 needs (Spark 3.5 also runs on it).
JAVA_MAJOR = 17

#: Settings that make Spark's results and files equal to DuckDB's; spark_conf
#: may not change them.
FIXED_CONF: dict[str, str] = {
    # Timestamps are naive wall-clock values; UTC makes TIMESTAMP and
    # TIMESTAMP_NTZ agree and has no daylight-saving gaps.
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    # Silver's naive timestamps read as TIMESTAMP_NTZ (the default since 3.4).
    "spark.sql.parquet.inferTimestampNTZ.enabled": "true",
    # Errors on overflow and invalid casts, as DuckDB, rather than nulls or
    # wrapped values (the definitions guard every division).
    "spark.sql.ansi.enabled": "true",
    # A sample standard deviation of one value is null, as in DuckDB (not NaN).
    "spark.sql.legacy.statisticalAggregate": "false",
}

_MASTER = re.compile(r"local(\[(\*|\d+)(,\s*\d+)?\])?|yarn|[a-z][a-z0-9+.-]*://\S+")
_MEMORY = re.compile(r"\d+([kmgtp]b?)?", re.IGNORECASE)
_JAVA_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')

_INSTALL_JAVA = (
    "install Java 17 or newer (e.g. 'apt-get install openjdk-17-jre-headless') and put it on "
    "PATH or set JAVA_HOME, or choose the embedded engine with engine='duckdb'"
)


def check_options(options: Mapping[str, Any]) -> list[str]:
    """Problems with the values of Spark ``engine_options`` (types are checked by the pipeline).

    Returns:
        One line per problem; empty when the options are valid.
    """
    problems: list[str] = []
    master = options.get("master")
    if isinstance(master, str) and not _MASTER.fullmatch(master):
        problems.append(
            f"engine_options.master: expected 'local', 'local[N]', 'local[*]', 'yarn' or a "
            f"URL such as 'spark://host:7077'; got {master!r}"
        )
    memory = options.get("driver_memory")
    if isinstance(memory, str) and not _MEMORY.fullmatch(memory):
        problems.append(
            f"engine_options.driver_memory: expected a JVM memory size such as '512m' or "
            f"'2g'; got {memory!r}"
        )
    conf = options.get("spark_conf")
    if isinstance(conf, Mapping):
        for key, value in conf.items():
            if not isinstance(key, str) or not key.startswith("spark."):
                problems.append(
                    f"engine_options.spark_conf: expected keys starting with 'spark.'; got {key!r}"
                )
            elif key in FIXED_CONF:
                problems.append(
                    f"engine_options.spark_conf: {key!r} is fixed to {FIXED_CONF[key]!r} so "
                    f"Spark's features equal DuckDB's; remove it"
                )
            elif not isinstance(value, str | int | float | bool):
                problems.append(
                    f"engine_options.spark_conf.{key}: expected a string, number or boolean; "
                    f"got {value!r}"
                )
    return problems


# --------------------------------------------------------------------------- SQL


@functools.lru_cache(maxsize=64)
def to_spark_sql(sql: str) -> str:
    """A definition's SQL (DuckDB dialect) as Spark SQL.

    The definitions keep to constructs sqlglot translates faithfully (see
    :mod:`~retailml.feature_engineering._definitions`); anything it cannot
    translate raises rather than running with other semantics.

    Raises:
        StateError: If sqlglot cannot translate the text.
    """
    import sqlglot
    from sqlglot.errors import ErrorLevel, SqlglotError

    try:
        [translated] = sqlglot.transpile(
            sql, read="duckdb", write="spark", unsupported_level=ErrorLevel.RAISE
        )
    except (SqlglotError, ValueError) as exc:
        raise StateError(
            problem(
                "a feature definition sqlglot translates from DuckDB to Spark SQL",
                f"{exc}",
                "rewrite the definition with portable SQL, or use engine='duckdb'",
                subject="spark engine",
            )
        ) from exc
    return translated


# --------------------------------------------------------------------------- the session


def java_major_version() -> int:
    """The major version of the Java that Spark would launch (``JAVA_HOME``, else ``PATH``).

    Raises:
        ConfigError: If there is no Java, or it is older than 17.
    """
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if java is None or not Path(java).is_file():
        where = f"JAVA_HOME={home!r}" if home else "no 'java' on PATH and no JAVA_HOME"
        raise ConfigError(
            problem(
                f"Java {JAVA_MAJOR}+ to run Spark", where, _INSTALL_JAVA, subject="spark engine"
            )
        )
    try:
        shown = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(
            problem(
                f"Java {JAVA_MAJOR}+ to run Spark",
                f"{java!r} failed to run ({exc})",
                _INSTALL_JAVA,
                subject="spark engine",
            )
        ) from exc
    found = _JAVA_VERSION.search(shown.stderr + shown.stdout)
    major = 0
    if found:
        # "1.8.0_392" is Java 8; "17.0.15" is Java 17.
        major = int(found.group(2) or 0) if found.group(1) == "1" else int(found.group(1))
    if major < JAVA_MAJOR:
        first_line = (shown.stderr or shown.stdout).strip().splitlines()[:1]
        raise ConfigError(
            problem(
                f"Java {JAVA_MAJOR}+ to run Spark",
                f"{java!r} reporting {first_line[0] if first_line else 'no version'!r}",
                _INSTALL_JAVA,
                subject="spark engine",
            )
        )
    return major


def _local_shuffle_partitions(master: str) -> int:
    """Two shuffle partitions per local core, at least 4 (Spark's 200 suit a cluster)."""
    found = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\s*\d+)?\])?", master)
    spec = found.group(1) if found else None
    if spec is None:
        cores = 1
    elif spec == "*":
        cores = os.cpu_count() or 1
    else:
        cores = int(spec)
    return max(4, 2 * cores)


def session_conf(options: Mapping[str, Any]) -> dict[str, str]:
    """The Spark settings for ``engine_options``: small-machine defaults, then ``spark_conf``."""
    master = str(options.get("master") or DEFAULT_MASTER)
    conf: dict[str, str] = {
        "spark.master": master,
        "spark.app.name": "retailml-features",
        "spark.driver.memory": str(options.get("driver_memory") or DEFAULT_DRIVER_MEMORY),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.adaptive.enabled": "true",
    }
    if master.startswith("local"):
        conf["spark.sql.shuffle.partitions"] = str(_local_shuffle_partitions(master))
        # Local mode talks to no one: bind the driver to the loopback interface.
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
    for key, value in dict(options.get("spark_conf") or {}).items():
        conf[key] = str(value).lower() if isinstance(value, bool) else str(value)
    conf.update(FIXED_CONF)
    return conf


_lock = threading.Lock()
_session: SparkSession | None = None


def _running() -> SparkSession | None:
    """The session this module started, unless it has been stopped since."""
    if _session is None or _session.sparkContext._jsc is None:
        return None
    return _session


def spark_session(options: Mapping[str, Any] | None = None) -> SparkSession:
    """The process's SparkSession, started with ``options`` on first use.

    Later calls return the running session; static settings (``master``,
    ``driver_memory``) that differ from it are logged and take effect in a
    new process (or after :func:`stop_spark_session`).

    Raises:
        ConfigError: If Java 17+ is missing or Spark fails to start.
    """
    global _session
    options = options or {}
    with _lock:
        running = _running()
        if running is not None:
            _warn_on_static_differences(running, session_conf(options))
            return running
        java_major_version()
        conf = session_conf(options)
        if conf["spark.master"].startswith("local"):
            # Spark otherwise resolves the host name to pick an interface.
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        try:
            from pyspark.sql import SparkSession

            builder = SparkSession.builder
            for key, value in conf.items():
                builder = builder.config(key, value)
            session = builder.getOrCreate()
            session.sparkContext.setLogLevel("WARN")
        except Exception as exc:
            raise ConfigError(
                problem(
                    f"a Spark session on master {conf['spark.master']!r}",
                    f"a failure to start ({type(exc).__name__}: {str(exc).strip()[:500]})",
                    f"check engine_options (master, driver_memory, spark_conf); Spark needs "
                    f"Java {JAVA_MAJOR}+ ('apt-get install openjdk-17-jre-headless'); or "
                    "choose the embedded engine with engine='duckdb'",
                    subject="spark engine",
                )
            ) from exc
        _session = session
        logger.info("started Spark %s on %s", session.version, conf["spark.master"])
        return session


def _warn_on_static_differences(session: SparkSession, conf: Mapping[str, str]) -> None:
    """Log the requested settings a running session cannot take (SQL settings it can)."""
    running = session.sparkContext.getConf()
    for key, value in conf.items():
        have = running.get(key)
        if have != value and not session.conf.isModifiable(key):
            logger.warning(
                "Spark is already running with %s=%s; %s=%s takes effect in a new process",
                key,
                have,
                key,
                value,
            )


def stop_spark_session() -> None:
    """Stop the process's SparkSession, if one is running (the next use starts another)."""
    global _session
    with _lock:
        running = _running()
        if running is not None:
            running.stop()
        _session = None


# --------------------------------------------------------------------------- the engine


class SparkEngine:
    """A Spark SQL session over the silver transactions.

    Args:
        parts: The silver Parquet parts to read (a fixed list).
        scratch: Unused: Spark spills to its own ``spark.local.dir``, a
            process-wide setting that outlives one workspace.
        options: Validated ``engine_options`` (``master``, ``driver_memory``, ``spark_conf``).
    """

    name = "spark"

    def __init__(self, parts: Sequence[Path], scratch: Path, options: Mapping[str, Any]) -> None:
        self.parts = list(parts)
        self.scratch = scratch
        self.options = dict(options)
        self._spark: SparkSession | None = None
        self._relations: set[str] = set()
        self._bounds: tuple[dt.date, dt.date] | None = None

    def __enter__(self) -> SparkEngine:
        from pyspark.errors import PySparkException

        base = spark_session(self.options)
        spark = base.newSession()
        for key, value in session_conf(self.options).items():
            if spark.conf.isModifiable(key):
                spark.conf.set(key, value)
        try:
            # mergeSchema: parts written at different times may differ in
            # columns, like DuckDB's union_by_name.
            transactions = spark.read.option("mergeSchema", "true").parquet(
                *(str(p) for p in self.parts)
            )
        except PySparkException as exc:
            raise _data_error(exc) from exc
        transactions.createOrReplaceTempView(TRANSACTIONS)
        self._spark = spark
        self._relations = {TRANSACTIONS}
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._spark is not None:
            for name in self._relations:
                self._spark.catalog.dropTempView(name)
            self._spark = None
            self._relations = set()
            self._bounds = None

    @property
    def spark(self) -> SparkSession:
        """This engine's Spark session."""
        if self._spark is None:
            raise StateError("SparkEngine is not open; use it in a 'with' block")
        return self._spark

    def add_relations(self, names: Sequence[str]) -> None:
        """Create the dimension views and calendar tables ``names`` lists (idempotent)."""
        for name in names:
            if name in self._relations:
                continue
            if name in DIMENSIONS:
                self._view(name, to_spark_sql(DIMENSIONS[name]))
            elif name == "dim_dates":
                self._dates().createOrReplaceTempView(name)
            elif name == "dim_holidays":
                self._holidays().createOrReplaceTempView(name)
            else:
                raise StateError(f"SparkEngine cannot build relation {name!r}")
            self._relations.add(name)

    def _view(self, name: str, sql: str) -> None:
        from pyspark.errors import PySparkException

        try:
            self.spark.sql(sql).createOrReplaceTempView(name)
        except PySparkException as exc:
            raise _data_error(exc) from exc

    def _date_range(self) -> tuple[dt.date, dt.date] | None:
        if self._bounds is None:
            [bounds] = self.spark.sql(
                f"SELECT CAST(MIN(invoice_date) AS DATE), CAST(MAX(invoice_date) AS DATE) "
                f"FROM {TRANSACTIONS}"
            ).collect()
            if bounds[0] is not None:
                self._bounds = (bounds[0], bounds[1])
        return self._bounds

    def _dates(self) -> DataFrame:
        """``dim_dates(date)``: every day from the data's first to its last."""
        bounds = self._date_range()
        days: list[tuple[dt.date]] = []
        if bounds is not None:
            first, last = bounds
            days = [(first + dt.timedelta(days=i),) for i in range((last - first).days + 1)]
        return self.spark.createDataFrame(days, "date DATE")

    def _holidays(self) -> DataFrame:
        """``dim_holidays(country, holiday_date)`` for the countries and years in the data."""
        bounds = self._date_range()
        rows: list[tuple[str, dt.date]] = []
        if bounds is not None:
            countries = [
                r[0]
                for r in self.spark.sql(
                    f"SELECT DISTINCT country FROM {TRANSACTIONS} WHERE country IS NOT NULL"
                ).collect()
            ]
            rows = holiday_rows(countries, range(bounds[0].year, bounds[1].year + 1))
        return self.spark.createDataFrame(rows, "country STRING, holiday_date DATE")

    def write(self, sql: str, directory: Path, partitioning: Sequence[str]) -> int:
        """Run ``sql`` (transpiled to Spark SQL) and write its rows as Parquet under ``directory``.

        With ``partitioning`` every partition is one file in a Hive-style
        directory (``year=2011/month=12/data_0.parquet``); without, the rows
        are one ``data_0.parquet``: the DuckDB engine's layout.

        Returns:
            The number of rows written.

        Raises:
            DataValidationError: If Spark cannot run the query over the data.
        """
        from pyspark.errors import PySparkException
        from pyspark.sql.functions import col
        from pyspark.sql.types import TimestampType

        # Spark writes into a directory of its own (with markers and
        # checksums); staging it inside ``directory`` keeps the moves renames.
        staging = directory / f"_spark-{uuid.uuid4().hex}"
        try:
            frame = self.spark.sql(to_spark_sql(sql))
            # See "Timestamps" in the module docstring: UTC TIMESTAMP -> naive.
            frame = frame.select(
                *(
                    col(f.name).cast("timestamp_ntz").alias(f.name)
                    if isinstance(f.dataType, TimestampType)
                    else col(f.name)
                    for f in frame.schema.fields
                )
            )
            if partitioning:
                frame.repartition(*partitioning).write.partitionBy(*partitioning).parquet(
                    str(staging)
                )
            else:
                frame.coalesce(1).write.parquet(str(staging))
            return _move_parts(staging, directory)
        except PySparkException as exc:
            raise _data_error(exc) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _data_error(exc: Exception) -> DataValidationError:
    return DataValidationError(
        problem(
            "silver transactions the feature SQL can read",
            f"a Spark error: {str(exc).strip()[:1000]}",
            "re-ingest the data with 'retailml data ingest' so every part has the silver schema",
            subject="spark engine",
        )
    )


def _move_parts(staging: Path, directory: Path) -> int:
    """Move Spark's part files to ``data_<i>.parquet`` under ``directory``; count their rows.

    Spark's markers (``_SUCCESS``) and checksums (``.*.crc``) stay behind.
    """
    rows = 0
    by_folder: dict[Path, list[Path]] = {}
    for part in sorted(staging.rglob("part-*.parquet")):
        by_folder.setdefault(part.parent.relative_to(staging), []).append(part)
    for folder, files in sorted(by_folder.items()):
        target = directory / folder
        target.mkdir(parents=True, exist_ok=True)
        for number, part in enumerate(files):
            rows += pq.ParquetFile(part).metadata.num_rows
            part.replace(target / f"data_{number}.parquet")
    return rows
