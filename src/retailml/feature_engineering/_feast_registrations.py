"""What retailml registered in the Feast repository, recorded beside it.

Feast's registry holds the entities, sources and feature views; retailml also
needs what Feast does not keep in a typed form: which published feature set and
version a registered set reads, the names the user chose for its features
(``recency`` for ``recency_days``), the logical type of each, the history of
version switches and what was materialized into which online store. That is a
small JSON document, ``<feature_repo>/retailml_feature_sets.json``, written
atomically (temporary file, then rename) under an exclusive lock on
``<feature_repo>/.retailml.lock`` that every writer holds for its whole
read-modify-write, Feast apply and materialization.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from retailml.core.errors import StateError, problem
from retailml.core.io import atomic_write_text

REGISTRATIONS_FILE = "retailml_feature_sets.json"
LOCK_FILE = ".retailml.lock"
FORMAT = 1
#: Version switches kept per feature set.
HISTORY_LIMIT = 100


@dataclass(frozen=True)
class Materialization:
    """What one online store holds for a registered feature set.

    Attributes:
        version: The published version loaded.
        features: The registered feature names loaded.
        end: The materialization's end timestamp (UTC, ISO 8601).
        rows: Entities written.
        at: When it ran (UTC, ISO 8601).
    """

    version: str
    features: tuple[str, ...]
    end: str
    rows: int
    at: str


@dataclass(frozen=True)
class FeatureSetRegistration:
    """A feature set registered in the store.

    Attributes:
        name: The registered name (the Feast feature view), e.g. ``customer_features``.
        source: The published feature set it reads, e.g. ``customer_rfm``.
        version: The published version it serves.
        features: ``registered name -> published column`` in registration order.
        feature_types: ``registered name -> logical type``.
        entity_keys: The entity key columns (Feast join keys).
        key_types: ``key -> logical type``.
        timestamp_column: The event timestamp column.
        description: What the set is for.
        ttl_days: How old a value may be and still be joined or served; None
            for no limit.
        data_path: The compacted Parquet file Feast reads, relative to the
            Feast repository.
        registered_at: When the set was first registered (UTC, ISO 8601).
        history: Version switches, oldest first: ``{"version", "action", "at"}``.
        materialized: ``online store id -> what it holds``.
        kind: ``batch`` for a published feature set loaded by materialization;
            ``stream`` for an online-only set whose values a stream consumer
            pushes (:meth:`FeatureStore.register_stream_feature_set`).
    """

    name: str
    source: str
    version: str
    features: Mapping[str, str]
    feature_types: Mapping[str, str]
    entity_keys: tuple[str, ...]
    key_types: Mapping[str, str]
    timestamp_column: str
    description: str
    ttl_days: float | None
    data_path: str
    registered_at: str
    history: tuple[Mapping[str, str], ...] = ()
    materialized: Mapping[str, Materialization] = field(default_factory=dict)
    kind: str = "batch"

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The registered feature names, in order."""
        return tuple(self.features)

    def with_event(self, version: str, action: str) -> FeatureSetRegistration:
        """A copy serving ``version``, with the switch appended to the history."""
        event = {"version": version, "action": action, "at": utcnow_iso()}
        history = (*self.history, event)[-HISTORY_LIMIT:]
        return replace(self, version=version, history=history)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = asdict(self)
        data["entity_keys"] = list(self.entity_keys)
        data["history"] = [dict(e) for e in self.history]
        data["materialized"] = {
            store: {**asdict(m), "features": list(m.features)}
            for store, m in self.materialized.items()
        }
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureSetRegistration:
        """Inverse of :meth:`to_json`."""
        materialized = {
            store: Materialization(
                version=str(m["version"]),
                features=tuple(m["features"]),
                end=str(m["end"]),
                rows=int(m["rows"]),
                at=str(m["at"]),
            )
            for store, m in dict(data.get("materialized") or {}).items()
        }
        ttl = data.get("ttl_days")
        return cls(
            name=str(data["name"]),
            source=str(data["source"]),
            version=str(data["version"]),
            features=dict(data["features"]),
            feature_types=dict(data["feature_types"]),
            entity_keys=tuple(data["entity_keys"]),
            key_types=dict(data["key_types"]),
            timestamp_column=str(data["timestamp_column"]),
            description=str(data.get("description") or ""),
            ttl_days=None if ttl is None else float(ttl),
            data_path=str(data["data_path"]),
            registered_at=str(data["registered_at"]),
            history=tuple(dict(e) for e in data.get("history") or ()),
            materialized=materialized,
            kind=str(data.get("kind") or "batch"),
        )


def utcnow_iso() -> str:
    """The current UTC time in ISO 8601."""
    return dt.datetime.now(dt.UTC).isoformat()


Signature = tuple[int, int, int]


def signature(path: str) -> Signature | None:
    """A cheap change marker of the registrations file at ``path`` (one ``stat``).

    The file is only ever replaced by a rename, so a new inode or mtime means
    new content. None if the file does not exist. Takes a ``str`` because it
    runs on every online lookup, where building ``Path`` objects shows up.
    """
    try:
        stat = os.stat(path)  # noqa: PTH116 - on the lookup hot path, see above
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def load(repo: Path, project: str) -> dict[str, FeatureSetRegistration]:
    """The registrations of ``project``, by name (empty if none).

    Raises:
        StateError: If the file exists but cannot be read.
    """
    path = repo / REGISTRATIONS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        document = json.loads(text)
        sets = document.get("projects", {}).get(project, {}).get("feature_sets", {})
        return {name: FeatureSetRegistration.from_json(data) for name, data in sets.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StateError(
            problem(
                "the feature-set registrations retailml writes",
                f"an unreadable file ({exc!r})",
                "restore it from a backup, or delete it and register the feature sets again",
                subject=str(path),
            )
        ) from exc


def save(repo: Path, project: str, registrations: Mapping[str, FeatureSetRegistration]) -> None:
    """Replace the registrations of ``project`` (other projects are kept). Hold :func:`lock`."""
    path = repo / REGISTRATIONS_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        document = {}
    document["format"] = FORMAT
    projects = document.setdefault("projects", {})
    projects[project] = {
        "feature_sets": {name: registrations[name].to_json() for name in sorted(registrations)}
    }
    # Not sort_keys: the order of a set's features is the order the caller registered.
    atomic_write_text(path, json.dumps(document, indent=2) + "\n")


@contextlib.contextmanager
def lock(repo: Path) -> Iterator[None]:
    """Hold the repository's exclusive writer lock (blocks until free)."""
    repo.mkdir(parents=True, exist_ok=True)
    with (repo / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
