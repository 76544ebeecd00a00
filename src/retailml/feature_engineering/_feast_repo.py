"""The generated Feast repository and every call retailml makes into Feast.

``Workspace.feature_repo`` is a Feast repository that retailml writes and
Feast's own CLI can read (``feast -c <feature_repo> feature-views list``):

* ``feature_store.yaml``: project, file registry ``registry.db``, provider
  ``local``, offline store ``file``, online store SQLite
  (``online_store.db``) or Redis, entity key serialization version 3;
* ``registry.db``: Feast's registry (entities, file sources, feature views);
* ``data/<feature set>/<version>.parquet``: compacted published versions,
  the files the sources point at (see :mod:`._feast_published`);
* ``online_store.db``: the SQLite online store;
* for a stream feature set (``kind="stream"``): a feature view whose source
  is a ``PushSource`` named ``<set>__push``; its batch source, which Feast
  requires, is an empty typed file ``data/<set>/<version>.parquet``;
* ``retailml_feature_sets.json`` and ``.retailml.lock``: what retailml
  registered, and its writers' lock (see :mod:`._feast_registrations`).

In process, retailml builds the same :class:`feast.RepoConfig` from a dict
instead of reading the YAML, so a Redis password never needs to be on disk:
the YAML names it as ``${RETAILML_REDIS_PASSWORD}``, which Feast expands from
the environment when its CLI reads the file.

Importing this module imports Feast (seconds), so the public module imports it
only when a store is first used.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import math
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import yaml
from feast import Entity, FeatureView, Field, FileSource, PushSource, RepoConfig, ValueType
from feast import FeatureStore as FeastFeatureStore
from feast.infra.offline_stores.offline_utils import get_offline_store_from_config
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type
from feast.types import Bool, FeastType, Float64, Int64, String, UnixTimestamp

from retailml.core.errors import StateError
from retailml.core.io import atomic_write_text
from retailml.feature_engineering._feast_config import (
    ONLINE_SQLITE_FILE,
    REDIS_PASSWORD_ENV,
    OnlineStoreSpec,
    repo_config_data,
)
from retailml.feature_engineering._feast_registrations import FeatureSetRegistration

logger = logging.getLogger(__name__)

REPO_YAML = "feature_store.yaml"
DATA_DIR = "data"

_FEATURE_TYPES: dict[str, FeastType] = {
    "string": String,
    "integer": Int64,
    "float": Float64,
    "boolean": Bool,
    "timestamp": UnixTimestamp,
    "date": UnixTimestamp,
}
_KEY_FIELD_TYPES: dict[str, FeastType] = {"string": String, "integer": Int64, "date": String}
_KEY_VALUE_TYPES: dict[str, ValueType] = {
    "string": ValueType.STRING,
    "integer": ValueType.INT64,
    "date": ValueType.STRING,
}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


#: Value kinds read straight off the proto; anything else goes through Feast's converter.
_SCALAR_KINDS = frozenset(
    {"int64_val", "int32_val", "double_val", "float_val", "string_val", "bool_val"}
)


def _python_value(value: ValueProto | None, logical: str) -> Any:
    if value is None:
        return None
    kind = value.WhichOneof("val")
    if kind is None:
        return None
    python = (
        getattr(value, kind) if kind in _SCALAR_KINDS else feast_value_type_to_python_type(value)
    )
    if python is None or (isinstance(python, float) and math.isnan(python)):
        return None
    if logical == "date" and isinstance(python, dt.datetime):
        return python.date()
    return python


class OnlineReader:
    """Reads one registered feature set from the online store, one entity at a time.

    This is the hot path. ``feast.FeatureStore.get_online_features`` resolves
    feature references against the registry, groups them by view, builds
    entity keys from Python rows and assembles a columnar response on every
    call; for one entity of one view all of that is fixed. The reader resolves
    it once (the view, the requested feature names, the key layout) and calls
    the provider's ``online_read`` (Feast's online store itself) with an entity
    key built directly as a proto.

    Args:
        store: The Feast store.
        registration: The registered feature set.
        view: Its Feast feature view.
        blocking_io: Whether a read waits on the network (Redis).
    """

    def __init__(
        self,
        store: FeastFeatureStore,
        registration: FeatureSetRegistration,
        view: FeatureView,
        *,
        blocking_io: bool,
    ) -> None:
        self._provider = store.provider
        self._config = store.config
        self._view = view
        self._join_keys = list(registration.entity_keys)
        self._key_types = [registration.key_types[k] for k in registration.entity_keys]
        self._features = tuple(registration.features)
        self._types = tuple(registration.feature_types[name] for name in self._features)
        self.blocking_io = blocking_io

    def entity_key(self, values: Sequence[str | int]) -> EntityKeyProto:
        """The Feast entity key of normalised key values (in join-key order)."""
        protos = [
            ValueProto(int64_val=v) if isinstance(v, int) else ValueProto(string_val=v)
            for v in values
        ]
        return EntityKeyProto(join_keys=self._join_keys, entity_values=protos)

    def read(self, key: EntityKeyProto) -> tuple[dt.datetime | None, dict[str, Any] | None]:
        """The entity's event timestamp and ``feature -> value``, or ``(None, None)``."""
        try:
            # A fresh list each call: Feast's Redis store appends its timestamp
            # field to the list it is given (Feast 0.67), which would grow a
            # shared list by one entry per lookup.
            rows = self._provider.online_read(self._config, self._view, [key], list(self._features))
        except sqlite3.OperationalError as exc:
            # A version switch in another process drops and recreates the
            # view's table; in that instant the entity is simply not there.
            if "no such table" not in str(exc):
                raise
            return None, None
        if not rows:
            return None, None
        timestamp, values = rows[0]
        # Feast's Redis store answers an absent entity with empty values and
        # the zero timestamp rather than (None, None).
        if values is None or timestamp is None or timestamp == _EPOCH:
            return None, None
        return timestamp, {
            name: _python_value(values.get(name), logical)
            for name, logical in zip(self._features, self._types, strict=True)
        }


class FeastRepo:
    """The Feast repository of one workspace, and the Feast store over it.

    Args:
        path: The repository directory (``Workspace.feature_repo``).
        project: The Feast project.
        online: The online store.
    """

    def __init__(self, path: Path, project: str, online: OnlineStoreSpec) -> None:
        self.path = path
        self.project = project
        self.online = online
        path.mkdir(parents=True, exist_ok=True)
        self._write_yaml()
        config = RepoConfig(repo_path=path, **repo_config_data(project, online, for_disk=False))
        self.store = FeastFeatureStore(config=config, repo_path=str(path))
        self._pusher: FeastFeatureStore | None = None
        self._push_views: dict[str, FeatureView] = {}

    def _write_yaml(self) -> None:
        data = repo_config_data(self.project, self.online, for_disk=True)
        text = (
            "# Generated by retailml (FeatureStore); edits are overwritten.\n"
            f"# A Redis password is read from ${REDIS_PASSWORD_ENV}.\n"
            + yaml.safe_dump(data, sort_keys=False)
        )
        target = self.path / REPO_YAML
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            atomic_write_text(target, text)

    def data_path(self, source: str, version: str) -> Path:
        """Where the compacted file of a published version lives."""
        return self.path / DATA_DIR / source / f"{version}.parquet"

    def apply(self, registration: FeatureSetRegistration) -> None:
        """Create or update the set's entities, file source and feature view."""
        reg = registration
        entities = _entities(reg)
        source = FileSource(
            name=f"{reg.name}__source",
            path=reg.data_path,
            timestamp_field=reg.timestamp_column,
            field_mapping={column: name for name, column in reg.features.items() if column != name},
            description=f"{reg.source} version {reg.version} (compacted)",
        )
        schema = [Field(name=k, dtype=_KEY_FIELD_TYPES[reg.key_types[k]]) for k in reg.entity_keys]
        schema += [Field(name=n, dtype=_FEATURE_TYPES[t]) for n, t in reg.feature_types.items()]
        view = FeatureView(
            name=reg.name,
            entities=entities,
            ttl=dt.timedelta(days=reg.ttl_days) if reg.ttl_days else dt.timedelta(0),
            schema=schema,
            source=source,
            online=True,
            description=reg.description,
            tags={
                "retailml.source": reg.source,
                "retailml.version": reg.version,
                "retailml.features": ",".join(f"{n}={c}" for n, c in reg.features.items()),
            },
        )
        self.store.apply([*entities, source, view])

    def apply_stream(self, registration: FeatureSetRegistration) -> None:
        """Create or update a stream set's entities, push source and feature view.

        Feast's ``StreamFeatureView`` is not used: it is for views whose
        aggregations Feast itself runs on a Kafka stream, and it warns that it
        is alpha on every construction, including every registry load in every
        reader. A plain feature view over a ``PushSource`` is Feast's shape for
        values computed elsewhere and pushed.
        """
        reg = registration
        entities = _entities(reg)
        batch = FileSource(
            name=f"{reg.name}__batch",
            path=reg.data_path,
            timestamp_field=reg.timestamp_column,
            description=f"{reg.name}: online only (the batch source Feast requires; empty)",
        )
        push = PushSource(
            name=push_source_name(reg.name),
            batch_source=batch,
            description=f"{reg.name}: values pushed by the retailml stream consumer",
        )
        schema = [Field(name=k, dtype=_KEY_FIELD_TYPES[reg.key_types[k]]) for k in reg.entity_keys]
        schema += [Field(name=n, dtype=_FEATURE_TYPES[t]) for n, t in reg.feature_types.items()]
        view = FeatureView(
            name=reg.name,
            entities=entities,
            ttl=dt.timedelta(0),
            schema=schema,
            source=push,
            online=True,
            description=reg.description,
            tags={"retailml.kind": reg.kind, "retailml.version": reg.version},
        )
        self.store.apply([*entities, batch, push, view])
        self._push_views.pop(reg.name, None)
        if self._pusher is not None:
            self._pusher.refresh_registry()  # type: ignore[no-untyped-call]  # untyped in Feast

    def push(self, registration: FeatureSetRegistration, rows: pd.DataFrame) -> None:
        """Write ``rows`` of a stream set to the online store, as Feast's online ``push`` does.

        ``feast.FeatureStore.push(name, rows, to=PushMode.ONLINE)`` finds the
        views of the push source and calls ``write_to_online_store``, which
        hands the rows to ``provider.ingest_df``. Both steps scan the registry
        and deserialise every feature view on every call, 40% of a
        micro-batch's time, so (as :class:`OnlineReader` does for reads) the
        view is resolved once and the rows go straight to ``ingest_df``:
        Feast's own conversion and online-store write.

        The writes go through a second Feast store whose Redis online store
        skips Feast's per-entity timestamp check. That check drops a write
        whose event timestamp is not newer than the stored one, but a stream
        set's values are absolute values recomputed by its one writer in
        commit order, and a later value can carry the same timestamp (a
        second micro-batch of an invoice with the same invoice time, a late
        event, a repair after a crash). The last write must win.
        """
        if self._pusher is None:
            if self.online.kind == "redis":
                data = repo_config_data(self.project, self.online, for_disk=False)
                data["online_store"] = {**data["online_store"], "skip_dedup": True}
                config = RepoConfig(repo_path=self.path, **data)
                self._pusher = FeastFeatureStore(config=config, repo_path=str(self.path))
            else:
                self._use_wal()
                self._pusher = self.store
        view = self._push_views.get(registration.name)
        if view is None or view.tags.get("retailml.version") != registration.version:
            view = self._pusher.get_feature_view(registration.name)
            if view.stream_source is None or view.stream_source.name != push_source_name(
                registration.name
            ):
                raise StateError(
                    f"Feast feature view {registration.name!r} has no push source; "
                    "register the stream feature set again"
                )
            self._push_views[registration.name] = view
        self._pusher.provider.ingest_df(view, rows)

    def _use_wal(self) -> None:
        """Put the SQLite online store in WAL mode (a property of the file, kept from then on).

        Feast opens it with SQLite's defaults: a rollback journal, whose
        commit costs several fsyncs (16 ms against 4 ms in WAL mode on the
        development machine, twice per micro-batch) and locks readers out
        while it runs. In WAL mode readers (a serving process) never wait for
        the stream's writes.
        """
        path = self.path / ONLINE_SQLITE_FILE
        try:
            with contextlib.closing(sqlite3.connect(path, timeout=5)) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:  # busy: stay on the journal Feast chose
            logger.debug("online store kept its journal mode: %s", exc)

    def view(self, name: str) -> FeatureView:
        """The Feast feature view ``name`` (read from the registry)."""
        return self.store.get_feature_view(name)

    def historical(
        self, registration: FeatureSetRegistration, entity_df: pd.DataFrame
    ) -> pd.DataFrame:
        """Feast's point-in-time join of the set's features onto ``entity_df``."""
        refs = [f"{registration.name}:{name}" for name in registration.features]
        job = self.store.get_historical_features(entity_df=entity_df, features=refs)
        return job.to_df()

    def pull(
        self,
        registration: FeatureSetRegistration,
        start: dt.datetime | None,
        end: dt.datetime | None,
    ) -> pa.Table:
        """Every source row with an event timestamp in ``[start, end]`` (published names)."""
        reg = registration
        source = self.view(reg.name).batch_source
        if source is None:  # retailml always gives its views a file source
            raise StateError(
                f"Feast feature view {reg.name!r} has no batch source; register it again"
            )
        offline = get_offline_store_from_config(self.store.config.offline_store)
        job = offline.pull_all_from_table_or_query(
            config=self.store.config,
            data_source=source,
            join_key_columns=list(reg.entity_keys),
            feature_name_columns=list(reg.features.values()),
            timestamp_field=reg.timestamp_column,
            created_timestamp_column=None,
            start_date=start,
            end_date=end,
        )
        table = job.to_arrow()
        return table.select([*reg.entity_keys, reg.timestamp_column, *reg.features.values()])

    def materialize(
        self,
        registration: FeatureSetRegistration,
        start: dt.datetime,
        end: dt.datetime,
        *,
        clear: bool,
    ) -> None:
        """Load the latest value per entity in ``[start, end]`` into the online store.

        Args:
            registration: The set.
            start: Oldest event timestamp loaded.
            end: Newest event timestamp loaded.
            clear: Empty the view's online table first. Needed when the
                served version changes: Feast's Redis store keeps a stored
                value whose timestamp is newer than the one written (so an
                older version would never come back), and entities absent
                from the new version must not keep serving the old values.
        """
        view = self.view(registration.name)
        if clear:
            provider = self.store.provider
            provider.update_infra(self.project, [view], [], [], [], partial=True)
            provider.update_infra(self.project, [], [view], [], [], partial=True)
        # Feast prints a coloured progress report to stdout and stderr; retailml
        # formats for a terminal only in its CLI, so keep it out of library calls.
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            self.store.materialize(start_date=start, end_date=end, feature_views=[view.name])
        logger.debug("feast materialize %s: %s", view.name, captured.getvalue().strip())

    def online_reader(self, registration: FeatureSetRegistration) -> OnlineReader:
        """A reader of the set's online values."""
        return OnlineReader(
            self.store,
            registration,
            self.view(registration.name),
            blocking_io=self.online.kind == "redis",
        )

    def refresh(self) -> None:
        """Re-read Feast's registry (after another process changed it)."""
        self.store.refresh_registry()  # type: ignore[no-untyped-call]  # untyped in Feast
        self._push_views.clear()
        if self._pusher is not None and self._pusher is not self.store:
            self._pusher.refresh_registry()  # type: ignore[no-untyped-call]  # untyped in Feast

    def close(self) -> None:
        """Close the online store's connections.

        Feast's own ``close()`` is a no-op for the SQLite and Redis stores, so
        the connections they hold are closed here.
        """
        stores = [self.store] if self._pusher in (None, self.store) else [self.store, self._pusher]
        for store in stores:
            online_store = store.provider.online_store
            for name in ("_conn", "_client"):
                client = getattr(online_store, name, None)
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()
                    setattr(online_store, name, None)


def push_source_name(feature_set: str) -> str:
    """The Feast push source of a stream feature set."""
    return f"{feature_set}__push"


def _entities(reg: FeatureSetRegistration) -> list[Entity]:
    # One definition per key column whichever set applies it, so batch and
    # stream sets keyed alike do not rewrite each other's entity.
    return [
        Entity(
            name=key,
            join_keys=[key],
            value_type=_KEY_VALUE_TYPES[reg.key_types[key]],
            description=f"Entity keyed by {key}.",
        )
        for key in reg.entity_keys
    ]
