"""The feature engineering pipeline: silver transactions in, versioned feature tables out.

The guide's configuration runs as written::

    pipeline = FeatureEngineeringPipeline(config={
        "source_tables": ["bronze_sales", "dim_customers", "dim_products"],
        "feature_sets": ["customer_rfm", "product_popularity", "seasonal_trends"],
        "validation_rules": {"missing_threshold": 0.05, "outlier_detection": True,
                             "schema_validation": True},
        "output_format": "parquet",
        "partitioning": ["year", "month"],
    })
    features = await pipeline.execute()
    features["customer_rfm"].table(format="pandas")

One run reads the silver Parquet parts in place, computes each feature set
with the engine (DuckDB; two sets at a time when there are two threads or
more, each on its own connection), validates it, and publishes every set at
once:
``Workspace.features/<feature_set>/<version>/year=YYYY/month=M/*.parquet``
with a ``_manifest.json``, a ``_latest`` pointer per set and a
``feature_builds`` lineage row per build. Publishing is all or nothing: a
failure anywhere, validation included, leaves no new version directory and
every earlier version readable.

A version is derived from the definition's SQL, its parameters and the
silver data version, so running again over unchanged data reuses the
published version (unless ``force=True``); new data gives a new version.

What each feature set means (cancellations, non-product rows, leakage-safe
timestamps) is documented in :mod:`retailml.feature_engineering._definitions`.

Configuration keys (validated together; every problem is reported at once):

``feature_sets`` (required)
    Names from :data:`FEATURE_SETS`.
``source_tables`` (default ``["silver_transactions"]``)
    Tables the definitions may read: ``bronze_sales`` or
    ``silver_transactions`` (both the silver transactions), ``dim_customers``
    and ``dim_products`` (built from silver). Every table a requested feature
    set reads must be listed.
``validation_rules``
    See :mod:`retailml.feature_engineering._validation`.
``output_format`` (``"parquet"``), ``partitioning`` (a subset of ``["year", "month"]``)
``engine`` (``"duckdb"`` or ``"spark"``), ``engine_options``
    DuckDB: ``threads``, ``memory_limit``, ``window_rows``, ``concurrent_sets`` (see
    :mod:`retailml.feature_engineering._duckdb_engine`); Spark: ``master``,
    ``driver_memory``, ``spark_conf`` (see
    :mod:`retailml.feature_engineering._spark_engine`).
``on_validation_failure`` (``"fail"`` or ``"warn"``)
    ``"warn"`` publishes sets that fail validation and lists the failures in
    the result's ``warnings``.
``snapshots`` (``"single"`` or ``"monthly"``)
    Snapshots of ``customer_rfm``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from retailml.core.db import FeatureBuild, PlatformDB, utcnow
from retailml.core.errors import ConfigError, NotFoundError, problem
from retailml.core.io import atomic_path, sha256_file
from retailml.core.lineage import Dataset, emit_run
from retailml.core.settings import Settings, get_settings
from retailml.core.workspace import Workspace
from retailml.data.ingest import SILVER_TABLE
from retailml.feature_engineering._definitions import (
    BUILT_IN_RELATIONS,
    FEATURE_SETS,
    SOURCE_TABLES,
    FeatureSet,
)
from retailml.feature_engineering._engine import (
    FeatureEngine,
    Interruptible,
    MonthlyWriter,
    engines,
)
from retailml.feature_engineering._validation import (
    ValidationReport,
    ValidationRules,
    validate_columns,
)
from retailml.feature_engineering._versioning import (
    MANIFEST,
    Manifest,
    definition_hash,
    feature_version,
    latest_version,
    set_latest,
)
from retailml.validators.data_quality import CheckResult, Finding

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FEATURE_SETS",
    "FeatureEngineeringPipeline",
    "FeatureSet",
    "FeatureSetResult",
    "PipelineResult",
    "ValidationReport",
    "ValidationRules",
    "load_feature_set",
]

logger = logging.getLogger(__name__)

OUTPUT_FORMATS: tuple[str, ...] = ("parquet",)
PARTITION_COLUMNS: tuple[str, ...] = ("year", "month")
ON_VALIDATION_FAILURE: tuple[str, ...] = ("fail", "warn")

#: Every configuration key, with what it takes.
CONFIG_KEYS: dict[str, str] = {
    "feature_sets": "list of feature set names (required)",
    "source_tables": "list of source table names",
    "validation_rules": "mapping of rule -> value",
    "output_format": "'parquet'",
    "partitioning": "subset of ['year', 'month']",
    "engine": "engine name ('duckdb' or 'spark')",
    "engine_options": "mapping of engine option -> value",
    "on_validation_failure": "'fail' or 'warn'",
    "snapshots": "customer_rfm snapshots: 'single' or 'monthly'",
}


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class PipelineConfig:
    """A validated pipeline configuration (see the module docstring for the keys)."""

    feature_sets: tuple[str, ...]
    source_tables: tuple[str, ...]
    rules: ValidationRules
    output_format: str
    partitioning: tuple[str, ...]
    engine: str
    engine_options: Mapping[str, Any]
    on_validation_failure: str
    parameters: Mapping[str, Mapping[str, str]]

    @property
    def relations(self) -> tuple[str, ...]:
        """The relations the source tables provide, without repeats."""
        return tuple(dict.fromkeys(SOURCE_TABLES[name] for name in self.source_tables))


def _names(value: object, key: str, problems: list[str]) -> list[str] | None:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        problems.append(f"{key}: expected a list of names; got {value!r}")
        return None
    repeated = sorted({v for v in value if list(value).count(v) > 1})
    if repeated:
        problems.append(f"{key}: names listed twice: {', '.join(map(repr, repeated))}")
    return list(dict.fromkeys(value))


def _share(value: object, key: str, problems: list[str]) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        problems.append(f"validation_rules.{key}: expected a number in [0, 1]; got {value!r}")
        return None
    return float(value)


def _flag(value: object, key: str, problems: list[str]) -> bool | None:
    if not isinstance(value, bool):
        problems.append(f"validation_rules.{key}: expected true or false; got {value!r}")
        return None
    return value


def _choice(value: object, key: str, choices: Sequence[str], problems: list[str]) -> str:
    if value not in choices:
        problems.append(f"{key}: expected one of {', '.join(map(repr, choices))}; got {value!r}")
        return choices[0]
    return str(value)


def _rules(value: object, problems: list[str]) -> ValidationRules:
    defaults = ValidationRules()
    if not isinstance(value, Mapping):
        problems.append(f"validation_rules: expected a mapping of rule -> value; got {value!r}")
        return defaults
    known = defaults.to_dict()
    for key in value:
        if key not in known:
            problems.append(
                f"validation_rules: unknown rule {key!r}; known rules: {', '.join(known)}"
            )
    missing = _share(
        value.get("missing_threshold", defaults.missing_threshold), "missing_threshold", problems
    )
    outliers = _flag(
        value.get("outlier_detection", defaults.outlier_detection), "outlier_detection", problems
    )
    outlier_share = _share(
        value.get("outlier_threshold", defaults.outlier_threshold), "outlier_threshold", problems
    )
    schema = _flag(
        value.get("schema_validation", defaults.schema_validation), "schema_validation", problems
    )
    return ValidationRules(
        missing_threshold=defaults.missing_threshold if missing is None else missing,
        outlier_detection=defaults.outlier_detection if outliers is None else outliers,
        outlier_threshold=defaults.outlier_threshold if outlier_share is None else outlier_share,
        schema_validation=defaults.schema_validation if schema is None else schema,
    )


def parse_config(config: object) -> PipelineConfig:
    """Validate a pipeline configuration as a whole.

    Raises:
        ConfigError: Listing every problem found, each with what is allowed.
    """
    if not isinstance(config, Mapping):
        raise ConfigError(
            problem(
                "a mapping of setting -> value",
                f"{type(config).__name__} {config!r}"[:200],
                "pass config={'feature_sets': ['customer_rfm'], ...}",
                subject="FeatureEngineeringPipeline config",
            )
        )
    problems: list[str] = []
    for key in config:
        if key not in CONFIG_KEYS:
            problems.append(f"unknown key {key!r}; known keys: {', '.join(CONFIG_KEYS)}")

    known_sets = ", ".join(FEATURE_SETS)
    feature_sets: list[str] = []
    if "feature_sets" not in config:
        problems.append(f"feature_sets: required; name one or more of {known_sets}")
    else:
        for name in _names(config["feature_sets"], "feature_sets", problems) or []:
            if name in FEATURE_SETS:
                feature_sets.append(name)
            else:
                problems.append(
                    f"feature_sets: unknown feature set {name!r}; known feature sets: {known_sets}"
                )
        if not feature_sets and not problems:
            problems.append(f"feature_sets: empty; name one or more of {known_sets}")

    source_tables: list[str] = []
    given_tables = config.get("source_tables", ["silver_transactions"])
    for name in _names(given_tables, "source_tables", problems) or []:
        if name in SOURCE_TABLES:
            source_tables.append(name)
        else:
            problems.append(
                f"source_tables: unknown table {name!r}; known tables: {', '.join(SOURCE_TABLES)} "
                "(bronze_sales and silver_transactions are both the silver transactions)"
            )
    provided = {SOURCE_TABLES[name] for name in source_tables}
    for name in feature_sets:
        for relation in FEATURE_SETS[name].relations:
            if relation in provided or relation in BUILT_IN_RELATIONS:
                continue
            aliases = " or ".join(repr(t) for t, r in SOURCE_TABLES.items() if r == relation)
            problems.append(
                f"feature_sets: {name!r} reads {relation!r}, which source_tables does not "
                f"list; add {aliases} to source_tables"
            )

    rules = _rules(config.get("validation_rules", {}), problems)
    output_format = _choice(
        config.get("output_format", "parquet"), "output_format", OUTPUT_FORMATS, problems
    )
    partitioning: list[str] = []
    given_partitioning = config.get("partitioning", list(PARTITION_COLUMNS))
    for name in _names(given_partitioning, "partitioning", problems) or []:
        if name in PARTITION_COLUMNS:
            partitioning.append(name)
        else:
            problems.append(
                f"partitioning: unknown column {name!r}; expected a subset of "
                f"{list(PARTITION_COLUMNS)!r}"
            )

    available = engines()
    engine = _choice(config.get("engine", "duckdb"), "engine", list(available), problems)
    engine_options: dict[str, Any] = {}
    given_options = config.get("engine_options", {})
    if not isinstance(given_options, Mapping):
        problems.append(f"engine_options: expected a mapping; got {given_options!r}")
    else:
        allowed = available[engine].options
        for key, value in given_options.items():
            if key not in allowed:
                known = ", ".join(f"{k} ({doc})" for k, (_, doc) in allowed.items())
                problems.append(f"engine_options: unknown option {key!r} for {engine}; {known}")
            elif isinstance(value, bool) or not isinstance(value, allowed[key][0]):
                problems.append(
                    f"engine_options.{key}: expected {allowed[key][0].__name__} "
                    f"({allowed[key][1]}); got {value!r}"
                )
            elif isinstance(value, int) and value < 1:
                problems.append(f"engine_options.{key}: expected a positive int; got {value!r}")
            else:
                engine_options[key] = value
        problems.extend(available[engine].check(engine_options))

    on_failure = _choice(
        config.get("on_validation_failure", "fail"),
        "on_validation_failure",
        ON_VALIDATION_FAILURE,
        problems,
    )
    parameters: dict[str, dict[str, str]] = {}
    if "snapshots" in config:
        allowed_snapshots = FEATURE_SETS["customer_rfm"].options["snapshots"]
        snapshots = _choice(config["snapshots"], "snapshots", allowed_snapshots, problems)
        parameters["customer_rfm"] = {"snapshots": snapshots}

    if problems:
        count = len(problems)
        body = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(
            f"{count} problem{'s' if count != 1 else ''} in the FeatureEngineeringPipeline "
            f"config:\n{body}\nFix: correct these keys and create the pipeline again."
        )
    return PipelineConfig(
        feature_sets=tuple(feature_sets),
        source_tables=tuple(source_tables),
        rules=rules,
        output_format=output_format,
        partitioning=tuple(partitioning),
        engine=engine,
        engine_options=engine_options,
        on_validation_failure=on_failure,
        parameters=parameters,
    )


# --------------------------------------------------------------------------- results


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _StoredColumns:
    """A feature table as written under ``path``, read a few columns at a time.

    Columns are read with the definition's Arrow types; in the published
    order (entity keys, then timestamp) only when asked, since sorting a
    large table costs more than reading it.
    """

    def __init__(self, path: Path, definition: FeatureSet, row_count: int) -> None:
        self.path = path
        self.definition = definition
        self.num_rows = row_count
        self._dataset: ds.Dataset | None = None

    @property
    def dataset(self) -> ds.Dataset:
        if self._dataset is None:
            # Files starting with "_" or "." (the manifest) are ignored by default.
            self._dataset = ds.dataset(self.path, format="parquet", partitioning="hive")
        return self._dataset

    def _schema(self, columns: Sequence[str]) -> pa.Schema:
        schema = self.definition.arrow_schema
        return pa.schema([schema.field(name) for name in columns])

    def read(self, columns: Sequence[str], *, ordered: bool = False) -> pa.Table:
        if self.num_rows == 0:
            return self._schema(columns).empty_table()
        order = [*self.definition.entity_keys, self.definition.timestamp_column] if ordered else []
        names = list(dict.fromkeys([*columns, *order]))
        table = self.dataset.to_table(columns=names).cast(self._schema(names))
        if ordered:
            table = table.sort_by([(name, "ascending") for name in dict.fromkeys(order)])
        return table.select(list(columns))

    def missing(self, columns: Sequence[str]) -> dict[str, int]:
        """Counted without loading a column: DuckDB scans the files, paths give partitions."""
        counts = dict.fromkeys(columns, 0)
        if self.num_rows == 0:
            return counts
        partitioning = self.dataset.partitioning
        keys = [n for n in columns if partitioning is not None and n in partitioning.schema.names]
        for fragment in self.dataset.get_fragments():
            # A partition the path gives no value for (a null) reads as null.
            values = ds.get_partition_keys(fragment.partition_expression)
            for name in keys:
                if values.get(name) is None:
                    counts[name] += fragment.metadata.num_rows
        stored = [name for name in columns if name not in keys]
        if not stored:
            return counts
        floats = {c.name for c in self.definition.columns if c.dtype == "float"}

        def count(name: str) -> str:
            nan = f" OR isnan({_quoted(name)})" if name in floats else ""
            return f"COUNT(*) FILTER (WHERE {_quoted(name)} IS NULL{nan})"

        files = ", ".join("'" + path.replace("'", "''") + "'" for path in self.dataset.files)
        with duckdb.connect() as con:
            [found] = con.execute(
                f"SELECT {', '.join(count(name) for name in stored)} "
                f"FROM read_parquet([{files}], hive_partitioning = false)"
            ).fetchall()
        counts.update({name: int(n) for name, n in zip(stored, found, strict=True)})
        return counts

    def head(self) -> pa.Table:
        names = list(self.definition.column_names)
        if self.num_rows == 0:
            return self._schema(names).empty_table()
        return self.dataset.head(1, columns=names).cast(self._schema(names))


def _read_table(path: Path, definition: FeatureSet, row_count: int) -> pa.Table:
    """The whole table, sorted by entity keys and timestamp."""
    return _StoredColumns(path, definition, row_count).read(definition.column_names, ordered=True)


@dataclass(frozen=True)
class FeatureSetResult:
    """One published feature-set version.

    Attributes:
        name: The feature set.
        version: Its version (16 hex digits).
        path: The version directory.
        row_count: Rows in the table.
        columns: Column names, in order.
        entity_keys: Columns identifying the entity.
        timestamp_column: When each row's values became known.
        validation: The validation rules' outcome on this table.
        reused: True when the version was already published and not rebuilt.
        input_data_version: The silver data version it was computed from.
    """

    name: str
    version: str
    path: Path
    row_count: int
    columns: tuple[str, ...]
    entity_keys: tuple[str, ...]
    timestamp_column: str
    validation: ValidationReport
    reused: bool = False
    input_data_version: str = ""

    @property
    def warnings(self) -> tuple[str, ...]:
        """Validation failures this version was published with (warn mode)."""
        return self.validation.warnings

    @overload
    def table(self, format: Literal["arrow"] = "arrow") -> pa.Table: ...

    @overload
    def table(self, format: Literal["pandas"]) -> pd.DataFrame: ...

    def table(self, format: Literal["arrow", "pandas"] = "arrow") -> pa.Table | pd.DataFrame:
        """The feature table, sorted by entity keys and timestamp.

        Args:
            format: ``"arrow"`` (a pyarrow Table) or ``"pandas"`` (a DataFrame).
        """
        if format not in ("arrow", "pandas"):
            raise ConfigError(
                problem("format 'arrow' or 'pandas'", repr(format), "pass format='pandas'")
            )
        table = _read_table(self.path, FEATURE_SETS[self.name], self.row_count)
        return table.to_pandas() if format == "pandas" else table


class PipelineResult(Mapping[str, FeatureSetResult]):
    """What :meth:`FeatureEngineeringPipeline.execute` returns: a mapping name -> result.

    Attributes:
        features: ``{feature_set: FeatureSetResult}`` in the configured order.
        input_data_version: The silver data version every set was computed from.
        duration_s: Wall time of the run.
    """

    def __init__(
        self,
        features: Mapping[str, FeatureSetResult],
        *,
        input_data_version: str,
        duration_s: float,
    ) -> None:
        self.features = dict(features)
        self.input_data_version = input_data_version
        self.duration_s = duration_s

    def __getitem__(self, name: str) -> FeatureSetResult:
        try:
            return self.features[name]
        except KeyError:
            raise KeyError(
                f"no feature set {name!r} in this result; it holds {', '.join(self.features)}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.features)

    def __len__(self) -> int:
        return len(self.features)

    @property
    def warnings(self) -> tuple[str, ...]:
        """Every validation failure published in warn mode."""
        return tuple(w for result in self.features.values() for w in result.warnings)

    def __repr__(self) -> str:
        sets = ", ".join(f"{r.name}@{r.version} ({r.row_count} rows)" for r in self.values())
        return f"PipelineResult({sets})"


def _report_from_manifest(name: str, data: Mapping[str, Any]) -> ValidationReport:
    rules = ValidationRules(**data.get("rules", {}))
    checks = {
        check: CheckResult(
            check=result["check"],
            passed=result["passed"],
            findings=tuple(Finding(**finding) for finding in result["findings"]),
            details=result.get("details", {}),
        )
        for check, result in data.get("checks", {}).items()
    }
    return ValidationReport(name, rules, checks, skipped=data.get("skipped", {}))


def load_feature_set(
    name: str, *, version: str | None = None, settings: Settings | None = None
) -> FeatureSetResult:
    """A published feature-set version (the latest unless ``version`` is given).

    Raises:
        NotFoundError: If the feature set is unknown or the version is not published.
    """
    if name not in FEATURE_SETS:
        raise NotFoundError(
            problem(
                f"one of {', '.join(FEATURE_SETS)}",
                repr(name),
                "pass a known feature set name",
                subject="feature set",
            )
        )
    feature_dir = Workspace.from_settings(settings).features / name
    chosen = version or latest_version(feature_dir)
    if chosen is None:
        raise NotFoundError(
            problem(
                f"a published version of {name}",
                f"none under {str(feature_dir)!r}",
                f"run FeatureEngineeringPipeline with feature_sets=[{name!r}] first",
                subject=name,
            )
        )
    manifest = Manifest.read(feature_dir / chosen)
    return FeatureSetResult(
        name=name,
        version=chosen,
        path=feature_dir / chosen,
        row_count=manifest.row_count,
        columns=tuple(manifest.columns),
        entity_keys=tuple(manifest.entity_keys),
        timestamp_column=manifest.timestamp_column,
        validation=_report_from_manifest(name, manifest.validation),
        reused=True,
        input_data_version=manifest.input_data_version,
    )


# --------------------------------------------------------------------------- the pipeline


@dataclass(frozen=True)
class _SilverInput:
    parts: list[Path]
    rows: int
    data_version: str


def _silver_input(workspace: Workspace, db: PlatformDB) -> _SilverInput:
    """The silver parts to read and the data version they make up."""
    parts = sorted(workspace.transactions.glob("part-*.parquet"))
    rows = sum(pq.ParquetFile(part).metadata.num_rows for part in parts)
    if rows == 0:
        raise NotFoundError(
            problem(
                "silver transactions to compute features from",
                f"{len(parts)} Parquet part(s) with 0 rows in {str(workspace.transactions)!r}",
                "run `retailml data ingest <file>` first",
                subject="silver.transactions",
            )
        )
    recorded = db.latest_data_version(SILVER_TABLE)
    if recorded is not None and recorded.row_count == rows:
        return _SilverInput(parts, rows, recorded.version)
    # No recorded version describes these parts (written by other means, or
    # changed since): identify them by content so versions stay honest.
    digest = hashlib.sha256()
    for part in parts:
        digest.update(f"{part.name}:{sha256_file(part)}\n".encode())
    logger.warning(
        "silver.transactions: no recorded data version matches the %d parts (%d rows); "
        "using a content digest as the input version",
        len(parts),
        rows,
    )
    return _SilverInput(parts, rows, f"parts-{digest.hexdigest()}")


@dataclass(frozen=True)
class _Plan:
    """One feature set to build: its SQL and where its version lives."""

    definition: FeatureSet
    sql: str
    parameters: dict[str, Any]
    version: str
    path: Path

    @property
    def published(self) -> bool:
        return (self.path / MANIFEST).is_file()


@dataclass(frozen=True)
class _Build:
    plan: _Plan
    row_count: int
    validation: ValidationReport
    reused: bool

    @property
    def name(self) -> str:
        return self.plan.definition.name


class FeatureEngineeringPipeline:
    """Computes, validates and publishes the configured feature sets.

    Args:
        config: The pipeline configuration (keys in the module docstring);
            validated as a whole here.
        settings: Workspace and database settings (default: the process settings).

    Raises:
        ConfigError: Listing every problem in ``config``.
    """

    def __init__(self, config: Mapping[str, Any], *, settings: Settings | None = None) -> None:
        self.config = config
        self.settings = settings
        self.parsed_config = parse_config(config)

    async def execute(self, *, force: bool = False) -> PipelineResult:
        """Run the pipeline off the event loop.

        Args:
            force: Rebuild versions that are already published.

        Returns:
            The published feature sets, by name.

        Raises:
            NotFoundError: The silver table is empty (nothing ingested yet).
            DataValidationError: A feature set failed validation in ``"fail"``
                mode; nothing from this run was published.
        """
        return await asyncio.to_thread(self.run, force=force)

    def run(self, *, force: bool = False) -> PipelineResult:
        """The synchronous body of :meth:`execute`."""
        started = time.perf_counter()
        settings = self.settings or get_settings()
        workspace = Workspace.from_settings(settings)
        db = PlatformDB.from_settings(settings)
        try:
            silver = _silver_input(workspace, db)
            builds = self._build_all(workspace, db, silver, force=force)
        finally:
            db.dispose()
        results = {
            b.name: FeatureSetResult(
                name=b.name,
                version=b.plan.version,
                path=b.plan.path,
                row_count=b.row_count,
                columns=b.plan.definition.column_names,
                entity_keys=b.plan.definition.entity_keys,
                timestamp_column=b.plan.definition.timestamp_column,
                validation=b.validation,
                reused=b.reused,
                input_data_version=silver.data_version,
            )
            for b in builds
        }
        for warning in (w for r in results.values() for w in r.warnings):
            logger.warning("published with a validation failure: %s", warning)
        return PipelineResult(
            results,
            input_data_version=silver.data_version,
            duration_s=time.perf_counter() - started,
        )

    def _build_all(
        self, workspace: Workspace, db: PlatformDB, silver: _SilverInput, *, force: bool
    ) -> list[_Build]:
        cfg = self.parsed_config
        plans = [self._plan(FEATURE_SETS[name], workspace, silver) for name in cfg.feature_sets]
        reused = {p.definition.name: p for p in plans if p.published and not force}
        todo = [p for p in plans if p.definition.name not in reused]
        spec = engines()[cfg.engine]
        sessions = list(spec.sessions(cfg.engine_options))[: max(1, len(todo))]
        scratch = workspace.tmp / cfg.engine
        builds: list[_Build] = []
        # Every new version is staged in a temporary directory beside its
        # target; the stack renames them all when the block ends without an
        # error, and removes them all otherwise: a run publishes all or nothing.
        with contextlib.ExitStack() as opened, contextlib.ExitStack() as staging:
            sessions_opened: list[FeatureEngine] = []
            for number, options in enumerate(sessions):
                where = scratch if len(sessions) == 1 else scratch / f"session-{number}"
                engine = opened.enter_context(spec.factory(silver.parts, where, options))
                engine.add_relations(cfg.relations)
                sessions_opened.append(engine)
            reports = {name: self._reuse(plan, db, silver) for name, plan in reused.items()}
            staged = {
                p.definition.name: staging.enter_context(atomic_path(p.path, directory=True))
                for p in todo
            }
            computed = self._compute_all(todo, sessions_opened, staged)
            for plan in plans:
                name = plan.definition.name
                if name in reports:
                    builds.append(reports[name])
                    continue
                if name not in computed:
                    continue  # not started: a set computed at the same time failed
                build = computed[name]
                self._check(db, build, silver)
                manifest = self._manifest(build, silver).to_json()
                (staged[name] / MANIFEST).write_text(manifest, encoding="utf-8")
                builds.append(build)
            if len(builds) != len(plans):  # pragma: no cover - a failure raised above
                raise RuntimeError("feature sets were left unbuilt without a failure")
        for build in builds:
            set_latest(build.plan.path.parent, build.plan.version)
        fresh = [b for b in builds if not b.reused]
        self._record(db, fresh, silver, status="published")
        for build in fresh:
            emit_run(
                f"features.{build.name}",
                inputs=[Dataset(SILVER_TABLE, silver.data_version)],
                outputs=[Dataset(f"feature_set.{build.name}", build.plan.version)],
                description=f"feature set {build.name} ({self.parsed_config.engine})",
                parameters=build.plan.parameters,
                transformations=[f"sql:{definition_hash(build.plan.sql)[:16]}"],
                settings=self.settings,
            )
        return builds

    def _stops(self, build: _Build) -> bool:
        """Whether ``build``'s validation ends the run (then no further set is started)."""
        return not build.validation.passed and self.parsed_config.on_validation_failure == "fail"

    def _compute_all(
        self,
        plans: Sequence[_Plan],
        sessions: Sequence[FeatureEngine],
        staged: Mapping[str, Path],
    ) -> dict[str, _Build]:
        """Compute ``plans`` on the engine sessions, each session one set at a time.

        One session computes the sets in their configured order. Several take
        the next set from a queue, the costliest first. A set failing
        validation in fail mode, or an error, stops the sessions from starting
        another set; an error is raised once every session has stopped (the
        first failed set's, in configured order).

        Returns:
            The computed sets by name; in fail mode, possibly not all of them.
        """
        builds: dict[str, _Build] = {}
        if len(sessions) == 1:
            for plan in plans:
                build = self._compute(plan, sessions[0], staged[plan.definition.name])
                builds[build.name] = build
                if self._stops(build):
                    break
            return builds
        pending: queue.SimpleQueue[_Plan] = queue.SimpleQueue()
        for plan in sorted(plans, key=lambda p: -p.definition.relative_cost):
            pending.put(plan)
        stop = threading.Event()
        errors: dict[str, BaseException] = {}

        def interrupt_all() -> None:
            for engine in sessions:
                if isinstance(engine, Interruptible):
                    engine.interrupt()

        def halt() -> None:
            """No session starts another set; the sets being computed are cancelled."""
            stop.set()
            interrupt_all()

        def work(engine: FeatureEngine) -> None:
            while not stop.is_set():
                try:
                    plan = pending.get_nowait()
                except queue.Empty:
                    return
                name = plan.definition.name
                try:
                    build = self._compute(plan, engine, staged[name])
                except BaseException as exc:
                    # After a halt, a session's error is its cancellation: not the cause.
                    if not stop.is_set():
                        errors[name] = exc
                        halt()
                    return
                builds[name] = build
                if self._stops(build):
                    halt()

        with ThreadPoolExecutor(len(sessions), thread_name_prefix="feature-set") as pool:
            futures = [pool.submit(work, engine) for engine in sessions]
            try:
                while wait(futures, timeout=0.1).not_done:
                    if stop.is_set():
                        # An interrupt reaches only a running query: cancel
                        # those a session started just after the halt, too.
                        interrupt_all()
            except BaseException:  # e.g. Ctrl-C: stop the sessions before waiting for them
                halt()
                raise
            for future in futures:
                future.result()
        for plan in plans:
            if plan.definition.name in errors:
                raise errors[plan.definition.name]
        return builds

    def _plan(self, definition: FeatureSet, workspace: Workspace, silver: _SilverInput) -> _Plan:
        given = self.parsed_config.parameters.get(definition.name)
        # The layout is part of what a version is: the same rows partitioned
        # differently are a different set of files.
        parameters = {
            **definition.parameters(given),
            "partitioning": list(self.parsed_config.partitioning),
        }
        sql = definition.sql(given)
        version = feature_version(sql, parameters, silver.data_version)
        path = workspace.features / definition.name / version
        return _Plan(definition, sql, parameters, version, path)

    def _reuse(self, plan: _Plan, db: PlatformDB, silver: _SilverInput) -> _Build:
        """The published version, validated again under this run's rules."""
        rows = Manifest.read(plan.path).row_count
        stored = _StoredColumns(plan.path, plan.definition, rows)
        report = validate_columns(plan.definition, stored, self.parsed_config.rules)
        build = _Build(plan, rows, report, reused=True)
        self._check(db, build, silver)
        logger.info("%s: version %s is already published", build.name, plan.version)
        return build

    def _compute(self, plan: _Plan, engine: FeatureEngine, staged: Path) -> _Build:
        """Write the feature set into ``staged`` and validate it."""
        started = time.perf_counter()
        engine.add_relations(plan.definition.relations)
        partitioning = self.parsed_config.partitioning
        if plan.definition.chunkable_by is not None and isinstance(engine, MonthlyWriter):
            rows = engine.write_by_month(plan.sql, staged, partitioning)
        else:
            rows = engine.write(plan.sql, staged, partitioning)
        stored = _StoredColumns(staged, plan.definition, rows)
        report = validate_columns(plan.definition, stored, self.parsed_config.rules)
        logger.info(
            "%s: computed version %s (%d rows) in %.2f s",
            plan.definition.name,
            plan.version,
            rows,
            time.perf_counter() - started,
        )
        return _Build(plan, rows, report, reused=False)

    def _check(self, db: PlatformDB, build: _Build, silver: _SilverInput) -> None:
        """Stop the run on a validation failure in fail mode, recording a new build's rejection."""
        if build.validation.passed or self.parsed_config.on_validation_failure == "warn":
            return
        if not build.reused:
            self._record(db, [build], silver, status="rejected")
        raise build.validation.error()

    def _manifest(self, build: _Build, silver: _SilverInput) -> Manifest:
        definition = build.plan.definition
        return Manifest(
            feature_set=definition.name,
            version=build.plan.version,
            row_count=build.row_count,
            columns=dict(definition.schema),
            entity_keys=list(definition.entity_keys),
            timestamp_column=definition.timestamp_column,
            partitioning=list(self.parsed_config.partitioning),
            parameters=build.plan.parameters,
            definition_hash=definition_hash(build.plan.sql),
            input_table=SILVER_TABLE,
            input_data_version=silver.data_version,
            engine=self.parsed_config.engine,
            created_at=utcnow().isoformat(),
            validation=build.validation.to_dict(),
        )

    def _record(
        self, db: PlatformDB, builds: Sequence[_Build], silver: _SilverInput, *, status: str
    ) -> None:
        if not builds:
            return
        with db.session() as session:
            session.add_all(
                FeatureBuild(
                    feature_set=b.name,
                    version=b.plan.version,
                    input_table=SILVER_TABLE,
                    input_data_version=silver.data_version,
                    transformation=definition_hash(b.plan.sql),
                    parameters=b.plan.parameters,
                    engine=self.parsed_config.engine,
                    output_path=str(b.plan.path) if status == "published" else None,
                    row_count=b.row_count,
                    status=status,
                    validation=b.validation.to_dict(),
                    created_at=utcnow(),
                )
                for b in builds
            )
