"""Published feature sets as the feature store reads them.

The feature pipeline publishes each feature set under ``Workspace.features``::

    <feature_set>/
        _latest                          the current version (one line)
        <version>/
            _manifest.json               keys, timestamp column, logical column types
            year=2011/month=12/*.parquet (hive partitions, or one file)

This module reads that layout tolerantly (only the manifest fields the store
needs) and compacts one version into a single typed Parquet file inside the
Feast repository. Feast's file offline store is pointed at that file, not at
the version directory, because:

* Feast's dask-based file store fails on the hive directory: partition
  values come back as categoricals and its timestamp normalisation compares a
  tz-naive column with tz-aware bounds (``TypeError: Invalid comparison
  between dtype=datetime64[us] and DatetimeArray``, Feast 0.67);
* one file with the manifest's logical types cast once (event timestamps as
  UTC, date keys as ISO strings, which Feast entity keys can hold) is what
  both the offline reads and materialization want;
* a published version never changes (its name is a content hash), so the
  compacted copy is written once and reused, e.g. by a rollback.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from retailml.core.errors import DataValidationError, NotFoundError, problem
from retailml.core.io import atomic_path
from retailml.feature_engineering._versioning import LATEST, MANIFEST

#: Logical types a manifest may name; ``datetime`` is accepted for ``timestamp``.
LOGICAL_TYPES: tuple[str, ...] = ("string", "integer", "float", "boolean", "timestamp", "date")
_LOGICAL_ALIASES: dict[str, str] = {"datetime": "timestamp"}

#: Logical types an entity key may have (dates are stored as ISO strings).
KEY_TYPES: tuple[str, ...] = ("string", "integer", "date")

#: Columns that name the period a row describes (the pipeline's partitions):
#: requestable as features, but not part of the default feature list.
PERIOD_COLUMNS: tuple[str, ...] = ("year", "month")

#: The fix named by every "not published" message.
RUN_PIPELINE = (
    "run the feature pipeline (FeatureEngineeringPipeline(config=...).execute()) to publish it"
)
#: The fix named when a published version is unreadable.
RERUN_PIPELINE = "re-run the feature pipeline (execute(force=True)) to publish the version again"

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

#: Arrow type of each logical type in the compacted file, for feature columns.
_FEATURE_ARROW: dict[str, pa.DataType] = {
    "string": pa.string(),
    "integer": pa.int64(),
    "float": pa.float64(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "date": pa.timestamp("us", tz="UTC"),
}
#: ... and for entity key columns.
_KEY_ARROW: dict[str, pa.DataType] = {
    "string": pa.string(),
    "integer": pa.int64(),
    "date": pa.string(),
}


@dataclass(frozen=True)
class PublishedVersion:
    """One published version of a feature set, as its manifest describes it.

    Attributes:
        feature_set: The published feature set (``customer_rfm``).
        version: The version string (its directory name).
        path: The version directory.
        entity_keys: Columns identifying the entity.
        timestamp_column: When each row's values became known.
        columns: ``column -> logical type`` of every column, in table order.
        partitioning: Hive partition columns of the directory layout.
        row_count: Rows the pipeline wrote, if the manifest says.
        input_data_version: The input data version the pipeline read.
        created_at: When the version was published (UTC), if known.
    """

    feature_set: str
    version: str
    path: Path
    entity_keys: tuple[str, ...]
    timestamp_column: str
    columns: Mapping[str, str]
    partitioning: tuple[str, ...]
    row_count: int | None
    input_data_version: str | None
    created_at: dt.datetime | None

    @property
    def feature_columns(self) -> tuple[str, ...]:
        """Columns that can be served as features: all but keys and the timestamp."""
        skip = {*self.entity_keys, self.timestamp_column}
        return tuple(name for name in self.columns if name not in skip)

    @property
    def default_features(self) -> tuple[str, ...]:
        """Feature columns registered when none are named: without the period columns."""
        return tuple(c for c in self.feature_columns if c not in PERIOD_COLUMNS)


def published_sets(features_dir: Path) -> list[str]:
    """Names of the feature sets with at least one published version, sorted."""
    if not features_dir.is_dir():
        return []
    return sorted(
        child.name
        for child in features_dir.iterdir()
        if child.is_dir()
        and not child.name.startswith((".", "_"))
        and ((child / LATEST).is_file() or any(_version_dirs(child)))
    )


def _version_dirs(set_dir: Path) -> list[Path]:
    return [
        child
        for child in set_dir.iterdir()
        if child.is_dir() and not child.name.startswith((".", "_")) and (child / MANIFEST).is_file()
    ]


def latest_version(features_dir: Path, feature_set: str) -> str:
    """The version ``_latest`` names (or the newest version directory).

    Raises:
        NotFoundError: If the feature set has no published version.
    """
    set_dir = features_dir / feature_set
    pointer = set_dir / LATEST
    if pointer.is_file():
        version = pointer.read_text(encoding="utf-8").strip()
        if version:
            return version
    versions = list_versions(features_dir, feature_set)
    if versions:
        return versions[-1].version
    raise NotFoundError(_not_published(features_dir, feature_set))


def list_versions(features_dir: Path, feature_set: str) -> list[PublishedVersion]:
    """Every published version of a feature set, oldest first.

    Raises:
        NotFoundError: If the feature set has no published version.
    """
    set_dir = features_dir / feature_set
    if not set_dir.is_dir():
        raise NotFoundError(_not_published(features_dir, feature_set))
    versions = [read_version(features_dir, feature_set, d.name) for d in _version_dirs(set_dir)]
    if not versions:
        raise NotFoundError(_not_published(features_dir, feature_set))
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    return sorted(versions, key=lambda v: (v.created_at or epoch, v.version))


def read_version(features_dir: Path, feature_set: str, version: str) -> PublishedVersion:
    """Read one version's manifest.

    Raises:
        NotFoundError: If the version (or its manifest) does not exist.
        DataValidationError: If the manifest lacks a field the store needs or
            names an unknown logical type.
    """
    if not _SAFE_NAME.match(version):
        raise DataValidationError(
            problem(
                "a version name of letters, digits, '.', '_' or '-'",
                repr(version),
                "pass a version listed by FeatureStore.list_versions()",
                subject=feature_set,
            )
        )
    path = features_dir / feature_set / version
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        known = [v.name for v in _version_dirs(path.parent)] if path.parent.is_dir() else []
        raise NotFoundError(
            problem(
                f"a published version of {feature_set!r}",
                f"{version!r}; published versions: {sorted(known)}",
                "pass one of the published versions, or " + RUN_PIPELINE,
                subject=feature_set,
            )
        )
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataValidationError(
            problem(
                "a JSON manifest",
                f"unparseable JSON ({exc})",
                RERUN_PIPELINE,
                subject=str(manifest_path),
            )
        ) from exc
    return _parse_manifest(data, manifest_path, feature_set, version, path)


def _parse_manifest(
    data: Any, manifest_path: Path, feature_set: str, version: str, path: Path
) -> PublishedVersion:
    def fail(expected: str, got: str) -> DataValidationError:
        return DataValidationError(
            problem(expected, got, RERUN_PIPELINE, subject=str(manifest_path))
        )

    if not isinstance(data, dict):
        raise fail("a JSON object", type(data).__name__)
    missing = [k for k in ("entity_keys", "columns") if k not in data]
    if missing:
        raise fail("the fields 'entity_keys' and 'columns'", f"no {missing}")
    raw_columns = data["columns"]
    if not isinstance(raw_columns, dict) or not raw_columns:
        raise fail("'columns' as a non-empty object of column: logical type", repr(raw_columns))
    columns: dict[str, str] = {}
    for name, logical in raw_columns.items():
        kind = _LOGICAL_ALIASES.get(str(logical), str(logical))
        if kind not in LOGICAL_TYPES:
            raise fail(f"logical types among {list(LOGICAL_TYPES)}", f"{name!r}: {logical!r}")
        columns[str(name)] = kind
    keys = tuple(str(k) for k in data["entity_keys"] or ())
    timestamp_column = str(data.get("timestamp_column") or "event_timestamp")
    absent = [c for c in (*keys, timestamp_column) if c not in columns]
    if not keys or absent:
        raise fail("entity keys and a timestamp column listed in 'columns'", f"missing {absent}")
    for key in keys:
        if columns[key] not in KEY_TYPES:
            raise fail(f"entity keys of type {list(KEY_TYPES)}", f"{key!r}: {columns[key]!r}")
    if columns[timestamp_column] not in ("timestamp", "date"):
        raise fail("a timestamp column", f"{timestamp_column!r}: {columns[timestamp_column]!r}")
    row_count = data.get("row_count")
    created = data.get("created_at")
    created_at: dt.datetime | None = None
    if isinstance(created, str):
        try:
            created_at = dt.datetime.fromisoformat(created)
        except ValueError:
            created_at = None
    if created_at is not None and created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=dt.UTC)
    if created_at is None:
        created_at = dt.datetime.fromtimestamp(manifest_path.stat().st_mtime, tz=dt.UTC)
    partitioning = data.get("partitioning")
    return PublishedVersion(
        feature_set=str(data.get("feature_set") or feature_set),
        version=str(data.get("version") or version),
        path=path,
        entity_keys=keys,
        timestamp_column=timestamp_column,
        columns=columns,
        partitioning=tuple(str(p) for p in partitioning) if isinstance(partitioning, list) else (),
        row_count=int(row_count) if isinstance(row_count, int) else None,
        input_data_version=(
            str(data["input_data_version"]) if data.get("input_data_version") else None
        ),
        created_at=created_at,
    )


def _not_published(features_dir: Path, feature_set: str) -> str:
    return problem(
        f"a published feature set {feature_set!r} under {str(features_dir)!r}",
        f"no published version (published sets: {published_sets(features_dir)})",
        RUN_PIPELINE,
        subject=feature_set,
    )


def compact(published: PublishedVersion, target: Path) -> int:
    """Write the version as one typed Parquet file at ``target`` (once; reused after).

    Keys keep their type except dates, which become ISO strings; the event
    timestamp and timestamp/date features become UTC timestamps (a naive
    timestamp is read as UTC, as Feast does); other columns get the Arrow
    type of their logical type.

    Returns:
        The number of rows in the file.

    Raises:
        DataValidationError: If the data lacks a manifest column, cannot be
            cast to its logical type, or does not hold ``row_count`` rows.
    """
    if target.is_file():
        return int(pq.ParquetFile(target).metadata.num_rows)
    table = _read_published(published)
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp)
    return int(table.num_rows)


def _read_published(published: PublishedVersion) -> pa.Table:
    root = published.path
    files = sorted(
        p
        for p in root.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)
    )
    subject = f"{published.feature_set}/{published.version}"
    if not files:
        if published.row_count == 0:
            return _empty_table(published)
        raise DataValidationError(
            problem(
                "Parquet files in the version directory",
                f"none in {str(root)!r}",
                RERUN_PIPELINE,
                subject=subject,
            )
        )
    physical = set(pq.read_schema(files[0]).names)
    hive_names = [
        part.split("=", 1)[0] for part in files[0].relative_to(root).parts[:-1] if "=" in part
    ]
    in_path = [name for name in (published.partitioning or hive_names) if name not in physical]
    partitioning = None
    if in_path:
        # Path values are text; integer partitions (year, month) are parsed as int64.
        partitioning = ds.partitioning(
            pa.schema(
                [
                    (name, pa.int64() if published.columns.get(name) == "integer" else pa.string())
                    for name in in_path
                ]
            ),
            flavor="hive",
        )
    dataset = ds.dataset(
        [str(f) for f in files],
        format="parquet",
        partitioning=partitioning,
        partition_base_dir=str(root),
    )
    available = set(dataset.schema.names)
    missing = [c for c in published.columns if c not in available]
    if missing:
        raise DataValidationError(
            problem(
                "every manifest column in the data",
                f"no columns {missing}",
                RERUN_PIPELINE,
                subject=subject,
            )
        )
    table = dataset.to_table(columns=list(published.columns))
    if published.row_count is not None and table.num_rows != published.row_count:
        raise DataValidationError(
            problem(
                f"{published.row_count} rows (the manifest's row_count)",
                f"{table.num_rows} rows in the files",
                RERUN_PIPELINE,
                subject=subject,
            )
        )
    return _cast(table, published, subject)


def _target_schema(published: PublishedVersion) -> pa.Schema:
    fields = []
    for name, logical in published.columns.items():
        if name in published.entity_keys:
            fields.append(pa.field(name, _KEY_ARROW[logical]))
        elif name == published.timestamp_column:
            fields.append(pa.field(name, pa.timestamp("us", tz="UTC")))
        else:
            fields.append(pa.field(name, _FEATURE_ARROW[logical]))
    return pa.schema(fields)


def write_empty_source(
    target: Path,
    key_types: Mapping[str, str],
    timestamp_column: str,
    feature_types: Mapping[str, str],
) -> None:
    """Write (once) the empty typed file a stream set's push source names as batch source."""
    if target.is_file():
        return
    fields = [pa.field(k, _KEY_ARROW[t]) for k, t in key_types.items()]
    fields.append(pa.field(timestamp_column, pa.timestamp("us", tz="UTC")))
    fields += [pa.field(n, _FEATURE_ARROW[t]) for n, t in feature_types.items()]
    with atomic_path(target) as tmp:
        pq.write_table(pa.schema(fields).empty_table(), tmp)


def _empty_table(published: PublishedVersion) -> pa.Table:
    return _target_schema(published).empty_table()


def _cast(table: pa.Table, published: PublishedVersion, subject: str) -> pa.Table:
    schema = _target_schema(published)
    arrays = []
    for field in schema:
        column = table.column(field.name)
        try:
            if pa.types.is_dictionary(column.type):
                column = column.cast(column.type.value_type)
            if pa.types.is_timestamp(field.type) and pa.types.is_date(column.type):
                column = column.cast(pa.timestamp("us"))
            if (
                pa.types.is_timestamp(field.type)
                and pa.types.is_timestamp(column.type)
                and column.type.tz is None
            ):
                # A naive timestamp is UTC, as Feast reads it: relabel, don't shift.
                column = column.cast(pa.timestamp("us"))
            arrays.append(column.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DataValidationError(
                problem(
                    f"column {field.name!r} castable to {field.type}",
                    f"{column.type} ({exc})",
                    RERUN_PIPELINE,
                    subject=subject,
                )
            ) from exc
    return pa.Table.from_arrays(arrays, schema=schema)


def key_value(value: Any, logical: str, key: str) -> str | int:
    """One entity key value as stored: strings, int64s, or dates as ISO strings.

    Ids are matched exactly: a string key accepts a ``str`` (an ``int`` is
    written in decimal), an integer key an ``int`` or a decimal string, a date
    key a ``date``, a midnight ``datetime`` or an ISO date string.

    Raises:
        DataValidationError: If the value cannot be a value of the key.
    """
    if logical == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
            return str(value)
    elif logical == "integer":
        if isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
    elif logical == "date":
        if isinstance(value, dt.datetime):
            if value.time() == dt.time(0):
                return value.date().isoformat()
        elif isinstance(value, dt.date):
            return value.isoformat()
        elif isinstance(value, str):
            with contextlib.suppress(ValueError):
                return dt.date.fromisoformat(value.strip()).isoformat()
    raise DataValidationError(
        problem(
            f"a {logical} value for entity key {key!r}",
            f"{value!r} ({type(value).__name__})",
            f"pass the {key} as a {'ISO date' if logical == 'date' else logical}",
            subject=key,
        )
    )


def entity_key_values(
    entity_id: Any, keys: Sequence[str], key_types: Mapping[str, str]
) -> tuple[str | int, ...]:
    """The stored key values of one entity id, in ``keys`` order.

    A single-key entity is given as its value (or a one-item mapping); a
    composite one as a tuple in key order or a mapping ``key -> value``.

    Raises:
        DataValidationError: If the id does not fit the keys.
    """
    if isinstance(entity_id, Mapping):
        missing = [k for k in keys if k not in entity_id]
        if missing:
            raise DataValidationError(
                problem(
                    f"a value for every entity key {list(keys)}",
                    f"{dict(entity_id)!r}",
                    f"add {missing}",
                    subject="entity_id",
                )
            )
        raw = [entity_id[k] for k in keys]
    elif len(keys) == 1 and not isinstance(entity_id, tuple | list):
        raw = [entity_id]
    elif isinstance(entity_id, tuple | list) and len(entity_id) == len(keys):
        raw = list(entity_id)
    else:
        raise DataValidationError(
            problem(
                f"an entity id with the keys {list(keys)}",
                repr(entity_id),
                f"pass a tuple ({', '.join(keys)}) or a mapping of key to value",
                subject="entity_id",
            )
        )
    return tuple(key_value(v, key_types[k], k) for k, v in zip(keys, raw, strict=True))
