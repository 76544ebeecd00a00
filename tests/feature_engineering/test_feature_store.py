"""The feature store: published feature sets served by Feast offline and online.

Feature sets are published here by hand, in the pipeline's layout (hive
partitions, ``_manifest.json``, ``_latest``), so these tests do not depend on
the pipeline. Online tests run on SQLite and on the Redis server on the
machine, each Redis test under its own Feast project (which suffixes every
key), deleted afterwards.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
import redis

import guide
from retailml.core.errors import ConfigError, DataValidationError, NotFoundError, StateError
from retailml.core.settings import Settings, load_settings
from retailml.core.workspace import Workspace
from retailml.feature_engineering._feast_config import redis_connection_string
from retailml.feature_engineering.feature_store import FeatureStore, OnlineFeatures

REDIS_URL = os.environ.get("RETAILML_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
START_REDIS = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" '
    "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log"
)

ARROW = {
    "string": pa.string(),
    "integer": pa.int64(),
    "float": pa.float64(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us"),
    "date": pa.date32(),
}

RFM_COLUMNS = {
    "customer_id": "string",
    "event_timestamp": "timestamp",
    "year": "integer",
    "month": "integer",
    "recency_days": "integer",
    "frequency_orders": "integer",
    "monetary_total": "float",
    "monetary_avg": "float",
    "monetary_std": "float",
    "order_count": "integer",
    "avg_order_value": "float",
}

T1, T2, T3 = dt.datetime(2024, 1, 1), dt.datetime(2024, 2, 1), dt.datetime(2024, 3, 1)


def rfm(customer: str, when: dt.datetime, recency: int, monetary: float) -> dict[str, Any]:
    """One customer_rfm row; ``recency`` doubles as a marker of the snapshot it came from."""
    month_start = (when - dt.timedelta(days=1)).replace(day=1)
    return {
        "customer_id": customer,
        "event_timestamp": when,
        "year": month_start.year,
        "month": month_start.month,
        "recency_days": recency,
        "frequency_orders": 2,
        "monetary_total": monetary,
        "monetary_avg": monetary / 4,
        "monetary_std": None if customer == "customer_456" else 1.5,
        "order_count": 4,
        "avg_order_value": monetary / 2,
    }


#: A timeline: customer_123 has snapshots at T1 < T2 < T3, customer_456 only at
#: T2, customer_789 only at T3.
TIMELINE = [
    rfm("customer_123", T1, 10, 100.0),
    rfm("customer_123", T2, 20, 250.0),
    rfm("customer_123", T3, 30, 400.0),
    rfm("customer_456", T2, 40, 50.0),
    rfm("customer_789", T3, 50, 75.0),
]


def publish(
    workspace: Workspace,
    feature_set: str,
    version: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    columns: Mapping[str, str],
    entity_keys: Sequence[str],
    created_at: str,
    latest: bool = True,
    partitioned: bool = True,
) -> Path:
    """Publish a version as the pipeline does: hive partitions (partition columns only in
    the path), or with ``partitioned=False`` one file holding every column."""
    version_dir = workspace.features / feature_set / version
    schema = pa.schema([pa.field(name, ARROW[kind]) for name, kind in columns.items()])
    table = pa.Table.from_pylist(list(rows), schema=schema)
    partitioning = [c for c in ("year", "month") if c in columns and partitioned]
    ds.write_dataset(
        table,
        version_dir,
        format="parquet",
        partitioning=partitioning or None,
        partitioning_flavor="hive" if partitioning else None,
        basename_template="data_{i}.parquet",
    )
    manifest = {
        "feature_set": feature_set,
        "version": version,
        "entity_keys": list(entity_keys),
        "timestamp_column": "event_timestamp",
        "columns": dict(columns),
        "partitioning": partitioning,
        "row_count": table.num_rows,
        "input_data_version": f"input-{version}",
        "created_at": created_at,
    }
    (version_dir / "_manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    if latest:
        (workspace.features / feature_set / "_latest").write_text(version + "\n", encoding="utf-8")
    return version_dir


def publish_rfm(
    workspace: Workspace,
    version: str = "v1aaaaaaaaaaaaaa",
    rows: Sequence[Mapping[str, Any]] = TIMELINE,
    *,
    created_at: str = "2024-04-01T00:00:00+00:00",
    latest: bool = True,
    partitioned: bool = True,
) -> Path:
    return publish(
        workspace,
        "customer_rfm",
        version,
        rows,
        columns=RFM_COLUMNS,
        entity_keys=["customer_id"],
        created_at=created_at,
        latest=latest,
        partitioned=partitioned,
    )


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    """A client of the Redis on the machine; fails (never skips) if it is down."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(
            f"Redis is not reachable at {REDIS_URL!r} ({exc}); start it with: {START_REDIS}"
        )
    yield client
    client.close()


@pytest.fixture(params=["sqlite", "redis"])
def online_store(request: pytest.FixtureRequest) -> str:
    """The online store kind, once for SQLite and once for Redis."""
    kind: str = request.param
    if kind == "redis":
        request.getfixturevalue("redis_client")
    return kind


@pytest.fixture
def make_store(
    settings: Settings, workspace: Workspace, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """Build stores over the test workspace; Redis keys of their projects are deleted after."""
    projects: list[str] = []
    stores: list[FeatureStore] = []

    def make(kind: str = "sqlite", *, project: str | None = None) -> FeatureStore:
        if project is None:
            project = f"retailml_test_{uuid.uuid4().hex[:12]}" if kind == "redis" else "retailml"
        projects.append(project)
        store = FeatureStore(
            settings,
            online_store="redis" if kind == "redis" else "sqlite",
            redis_url=REDIS_URL,
            project=project,
        )
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()
    if any(p.startswith("retailml_test_") for p in projects):
        client: redis.Redis = request.getfixturevalue("redis_client")
        for project in {p for p in projects if p.startswith("retailml_test_")}:
            keys = list(client.scan_iter(match=f"*{project}", count=1000))
            if keys:
                client.delete(*keys)


def online(store: FeatureStore, feature_set: str, entity_id: Any) -> OnlineFeatures:
    return asyncio.run(store.get_online_features(feature_set=feature_set, entity_id=entity_id))


# --------------------------------------------------------------------------- the guide


def test_guide_feature_store_example_runs_as_written(workspace: Workspace, make_store: Any) -> None:
    publish_rfm(workspace)
    namespace: dict[str, Any] = {}
    guide.run(guide.block("#### 2. Feature Store"), namespace)

    training = namespace["training_features"]
    assert isinstance(training, pd.DataFrame)
    assert list(training.columns) == [
        "customer_id",
        "event_timestamp",
        "recency",
        "frequency",
        "monetary",
        "avg_order_value",
    ]
    assert training["customer_id"].tolist() == ["customer_123"] * 3 + ["customer_456"]
    assert training["monetary"].tolist() == [100.0, 250.0, 400.0, 50.0]

    features = namespace["online_features"]
    assert features.found
    assert dict(features) == {
        "recency": 30,
        "frequency": 2,
        "monetary": 400.0,
        "avg_order_value": 200.0,
    }
    assert features.event_timestamp == T3.replace(tzinfo=dt.UTC)


# --------------------------------------------------------------------------- offline


def test_offline_features_filter_entities_and_inclusive_date_range(
    workspace: Workspace, make_store: Any
) -> None:
    publish_rfm(workspace)
    store = make_store()
    store.register_feature_set("customer_features", ["recency", "monetary_std"])

    frame = store.get_offline_features(
        "customer_features",
        entity_ids=["customer_123", "customer_456", "nobody"],
        timestamp_range=("2024-01-01", "2024-02-01"),
    )

    assert frame["customer_id"].tolist() == ["customer_123", "customer_123", "customer_456"]
    assert frame["event_timestamp"].tolist() == [
        pd.Timestamp(T1, tz="UTC"),
        pd.Timestamp(T2, tz="UTC"),
        pd.Timestamp(T2, tz="UTC"),
    ]
    assert str(frame["recency"].dtype) == "Int64"
    assert frame["recency"].tolist() == [10, 20, 40]
    assert frame["monetary_std"].isna().tolist() == [False, False, True]
    everything = store.get_offline_features("customer_features")
    assert len(everything) == len(TIMELINE)


def test_partitioned_and_single_file_versions_read_alike(
    workspace: Workspace, make_store: Any
) -> None:
    publish_rfm(workspace, "v1aaaaaaaaaaaaaa", created_at="2024-04-01T00:00:00+00:00")
    publish_rfm(
        workspace, "v2bbbbbbbbbbbbbb", created_at="2024-05-01T00:00:00+00:00", partitioned=False
    )
    assert not any((workspace.features / "customer_rfm" / "v2bbbbbbbbbbbbbb").glob("year=*"))
    store = make_store()
    features = ["recency", "monetary_std", "year", "month"]
    store.register_feature_set("single", features, source="customer_rfm", materialize=False)
    store.register_feature_set(
        "hive", features, source="customer_rfm", version="v1aaaaaaaaaaaaaa", materialize=False
    )

    single = store.get_offline_features("single")
    hive = store.get_offline_features("hive")

    pd.testing.assert_frame_equal(single, hive)
    assert hive["month"].tolist() == [12, 1, 2, 1, 2]


def test_offline_features_never_leak_future_rows(workspace: Workspace, make_store: Any) -> None:
    publish_rfm(workspace)
    store = make_store()
    store.register_feature_set("customer_features", ["recency", "monetary"])
    entity_df = pd.DataFrame(
        {
            "customer_id": [
                "customer_123",  # before its first snapshot
                "customer_123",  # between T1 and T2
                "customer_123",  # exactly at T2: known at that instant
                "customer_123",  # between T2 and T3
                "customer_123",  # after T3
                "customer_456",  # only a later snapshot exists
                "customer_789",  # only a later snapshot exists
                "customer_000",  # never seen
                "customer_123",  # a duplicate of the second row
            ],
            "event_timestamp": pd.to_datetime(
                [
                    "2023-12-31 23:59:59",
                    "2024-01-15",
                    "2024-02-01",
                    "2024-02-29 12:00",
                    "2024-06-01",
                    "2024-01-15",
                    "2024-02-15",
                    "2024-05-01",
                    "2024-01-15",
                ],
                format="ISO8601",
            ),
            "label": range(9),
        },
        index=[7, 7, 8, 9, 10, 11, 12, 13, 7],  # repeated labels are kept, not aligned on
    )

    joined = store.get_training_features("customer_features", entity_df)

    assert joined.index.tolist() == entity_df.index.tolist()
    assert joined["label"].tolist() == list(range(9))
    assert joined["customer_id"].tolist() == entity_df["customer_id"].tolist()
    assert joined["recency"].tolist() == [pd.NA, 10, 20, 20, 30, pd.NA, pd.NA, pd.NA, 10]
    monetary = joined["monetary"].tolist()
    assert monetary[1:5] == [100.0, 250.0, 250.0, 400.0]
    assert joined["monetary"].isna().tolist() == [
        True, False, False, False, False, True, True, True, False,
    ]  # fmt: skip


def test_training_features_match_a_brute_force_point_in_time_join(
    workspace: Workspace, make_store: Any
) -> None:
    rng = random.Random(7)
    customers = [f"customer_{i}" for i in range(12)]
    rows = []
    for customer in customers:
        days = sorted(rng.sample(range(1, 200), rng.randint(0, 5)))
        for day in days:
            rows.append(rfm(customer, dt.datetime(2024, 1, 1) + dt.timedelta(days=day), day, 1.0))
    publish_rfm(workspace, rows=rows)
    store = make_store()
    store.register_feature_set("customer_features", ["recency"], ttl_days=None)
    entity_df = pd.DataFrame(
        {
            "customer_id": [rng.choice(customers) for _ in range(300)],
            "event_timestamp": [
                dt.datetime(2024, 1, 1)
                + dt.timedelta(days=rng.randint(0, 210), hours=rng.randint(0, 23))
                for _ in range(300)
            ],
        }
    )

    joined = store.get_training_features("customer_features", entity_df)

    def known_at(customer: str, when: dt.datetime) -> int | None:
        seen = [r for r in rows if r["customer_id"] == customer and r["event_timestamp"] <= when]
        return max(seen, key=lambda r: r["event_timestamp"])["recency_days"] if seen else None

    pairs = zip(entity_df.customer_id, entity_df.event_timestamp, strict=True)
    expected = [known_at(customer, when) for customer, when in pairs]
    got = [None if pd.isna(v) else int(v) for v in joined["recency"]]
    assert got == expected


def test_ttl_days_hides_values_older_than_the_ttl(workspace: Workspace, make_store: Any) -> None:
    publish_rfm(workspace)
    store = make_store()
    store.register_feature_set("customer_features", ["recency"], ttl_days=10)
    entity_df = pd.DataFrame(
        {
            "customer_id": ["customer_123", "customer_123"],
            "event_timestamp": [dt.datetime(2024, 1, 5), dt.datetime(2024, 1, 25)],
        }
    )

    joined = store.get_training_features("customer_features", entity_df)

    assert joined["recency"].tolist() == [10, pd.NA]


def test_composite_date_keys_work_offline_and_online(workspace: Workspace, make_store: Any) -> None:
    days = [dt.date(2024, 1, 1), dt.date(2024, 1, 6)]
    rows = [
        {
            "country": country,
            "date": day,
            "event_timestamp": dt.datetime.combine(day, dt.time(0)),
            "year": day.year,
            "month": day.month,
            "day_of_week": day.weekday(),
            "is_weekend": day.weekday() >= 5,
            "is_holiday": day.month == 1 and day.day == 1 and country == "United Kingdom",
        }
        for country in ("United Kingdom", "France")
        for day in days
    ]
    columns = {
        "country": "string",
        "date": "date",
        "event_timestamp": "timestamp",
        "year": "integer",
        "month": "integer",
        "day_of_week": "integer",
        "is_weekend": "boolean",
        "is_holiday": "boolean",
    }
    publish(
        workspace,
        "temporal",
        "t1aaaaaaaaaaaaaa",
        rows,
        columns=columns,
        entity_keys=["country", "date"],
        created_at="2024-02-01T00:00:00+00:00",
    )
    store = make_store()
    reg = store.register_feature_set("temporal_features", entity=["country", "date"])
    assert reg.source == "temporal"
    assert reg.feature_names == ("day_of_week", "is_weekend", "is_holiday")

    frame = store.get_offline_features(
        "temporal_features", entity_ids=[("United Kingdom", "2024-01-01"), ("France", days[1])]
    )
    assert frame["date"].tolist() == days[::-1]
    assert frame["is_holiday"].tolist() == [False, True]
    found = online(store, "temporal_features", {"country": "United Kingdom", "date": days[0]})
    assert dict(found) == {"day_of_week": 0, "is_weekend": False, "is_holiday": True}


# --------------------------------------------------------------------------- online


def test_online_values_equal_the_latest_offline_values_after_materialize(
    workspace: Workspace, make_store: Any, online_store: str
) -> None:
    publish_rfm(workspace)
    store = make_store(online_store)
    store.register_feature_set("customer_features", materialize=False)
    with pytest.raises(StateError, match=r"run FeatureStore\.materialize"):
        online(store, "customer_features", "customer_123")

    counts = store.materialize()

    assert counts == {"customer_features": 3}
    offline = store.get_offline_features("customer_features")
    latest = offline.sort_values("event_timestamp").groupby("customer_id").tail(1)
    for row in latest.to_dict("records"):
        served = online(store, "customer_features", row["customer_id"])
        assert served.found
        assert served.event_timestamp == row["event_timestamp"].to_pydatetime()
        expected = {k: None if pd.isna(v) else v for k, v in row.items() if k in served}
        assert served.to_dict() == expected


def test_materialize_end_loads_the_values_known_then(
    workspace: Workspace, make_store: Any, online_store: str
) -> None:
    publish_rfm(workspace)
    store = make_store(online_store)
    store.register_feature_set("customer_features", ["recency"], materialize=False)

    assert store.materialize(end="2024-02-01") == {"customer_features": 2}
    assert online(store, "customer_features", "customer_123")["recency"] == 20
    assert not online(store, "customer_features", "customer_789").found
    store.materialize()
    assert online(store, "customer_features", "customer_123")["recency"] == 30


def test_warm_up_prepares_every_loaded_set(workspace: Workspace, make_store: Any) -> None:
    publish_rfm(workspace)
    make_store().register_feature_set("customer_features", ["recency"])
    make_store().register_feature_set("rfm_unloaded", source="customer_rfm", materialize=False)
    server = make_store()

    assert server.warm_up() == ["customer_features"]
    assert online(server, "customer_features", "customer_123")["recency"] == 30
    with pytest.raises(StateError, match="nothing loaded"):
        server.warm_up(["rfm_unloaded"])


def test_unknown_entity_is_not_found_with_null_values(
    workspace: Workspace, make_store: Any, online_store: str
) -> None:
    publish_rfm(workspace)
    store = make_store(online_store)
    store.register_feature_set("customer_features", ["recency", "monetary"])

    missing = online(store, "customer_features", "customer_999")

    assert not missing.found
    assert dict(missing) == {"recency": None, "monetary": None}
    assert missing.event_timestamp is None


def test_rollback_serves_the_previous_version_again(
    workspace: Workspace, make_store: Any, online_store: str
) -> None:
    publish_rfm(workspace, "v1aaaaaaaaaaaaaa", created_at="2024-04-01T00:00:00+00:00")
    # v2 is newer in every sense, timestamps included: Feast's Redis store
    # would keep its values over v1's unless the rollback empties the view.
    v2_rows = [
        {**r, "event_timestamp": r["event_timestamp"] + dt.timedelta(days=1), "monetary_total": 9e3}
        for r in TIMELINE
    ]
    v2_rows.append(rfm("customer_new", T3, 1, 1.0))
    publish_rfm(workspace, "v2bbbbbbbbbbbbbb", v2_rows, created_at="2024-05-01T00:00:00+00:00")
    store = make_store(online_store)
    store.register_feature_set("customer_features", ["monetary"])
    assert store.get_feature_set("customer_features").version == "v2bbbbbbbbbbbbbb"
    assert online(store, "customer_features", "customer_123")["monetary"] == 9e3

    reg = store.rollback("customer_features")

    assert reg.version == "v1aaaaaaaaaaaaaa"
    assert [e["action"] for e in reg.history] == ["register", "rollback"]
    assert online(store, "customer_features", "customer_123")["monetary"] == 400.0
    assert not online(store, "customer_features", "customer_new").found
    assert store.get_offline_features("customer_features")["monetary"].max() == 400.0
    versions = store.list_versions("customer_features")
    assert [(v.version, v.latest, v.serving) for v in versions] == [
        ("v1aaaaaaaaaaaaaa", False, True),
        ("v2bbbbbbbbbbbbbb", True, False),
    ]
    with pytest.raises(StateError, match="published before 'v1aaaaaaaaaaaaaa'"):
        store.rollback("customer_features")
    store.rollback("customer_features", version="v2bbbbbbbbbbbbbb")
    assert online(store, "customer_features", "customer_123")["monetary"] == 9e3


def test_a_second_store_sees_a_rollback_made_by_the_first(
    workspace: Workspace, make_store: Any
) -> None:
    publish_rfm(workspace, "v1aaaaaaaaaaaaaa", created_at="2024-04-01T00:00:00+00:00")
    publish_rfm(
        workspace,
        "v2bbbbbbbbbbbbbb",
        [{**r, "monetary_total": 1.0} for r in TIMELINE],
        created_at="2024-05-01T00:00:00+00:00",
    )
    writer, reader = make_store(), make_store()
    writer.register_feature_set("customer_features", ["monetary"])
    assert online(reader, "customer_features", "customer_123")["monetary"] == 1.0

    writer.rollback("customer_features")

    assert online(reader, "customer_features", "customer_123")["monetary"] == 400.0


# --------------------------------------------------------------------------- Feast itself


def test_feast_cli_lists_the_registered_view(workspace: Workspace, make_store: Any) -> None:
    publish_rfm(workspace)
    store = make_store()
    store.register_feature_set(
        "customer_features", ["recency", "monetary"], description="For segmentation"
    )
    feast = Path(sys.executable).with_name("feast")

    listed = subprocess.run(
        [str(feast), "-c", str(workspace.feature_repo), "feature-views", "list"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

    assert listed.returncode == 0, listed.stderr
    assert "customer_features" in listed.stdout
    yaml_text = (workspace.feature_repo / "feature_store.yaml").read_text()
    assert "project: retailml" in yaml_text
    assert "entity_key_serialization_version: 3" in yaml_text


# --------------------------------------------------------------------------- errors


def test_unknown_feature_set_lists_the_known_ones(workspace: Workspace, make_store: Any) -> None:
    publish_rfm(workspace)
    store = make_store()
    store.register_feature_set("customer_features", ["recency"])

    with pytest.raises(NotFoundError, match=r"'nope'; registered: \['customer_features'\]"):
        store.get_offline_features("nope")
    with pytest.raises(NotFoundError, match=r"registered: \['customer_features'\]"):
        online(store, "nope", "customer_123")
    with pytest.raises(NotFoundError, match=r"unknown feature set 'nope'.*\['customer_rfm'\]"):
        store.register_feature_set("nope", ["recency"])


def test_unknown_feature_name_lists_the_available_ones(
    workspace: Workspace, make_store: Any
) -> None:
    publish_rfm(workspace)
    store = make_store()

    with pytest.raises(
        NotFoundError, match=r"unknown \['loyalty'\]; available: \['year', 'month', 'recency_days'"
    ):
        store.register_feature_set("customer_features", ["recency", "loyalty"])
    with pytest.raises(DataValidationError, match=r"features=\['recency'\]"):
        store.register_feature_set("customer_features", "recency")  # type: ignore[arg-type]


def test_unpublished_source_says_to_run_the_feature_pipeline(
    workspace: Workspace, make_store: Any
) -> None:
    store = make_store()

    with pytest.raises(NotFoundError, match=r"it reads 'customer_rfm'.*run the feature pipeline"):
        store.register_feature_set("customer_features", ["recency"])
    with pytest.raises(NotFoundError, match="run the feature pipeline"):
        store.register_feature_set("popularity", source="product_popularity")


def test_bad_arguments_name_the_value(workspace: Workspace, make_store: Any) -> None:
    publish_rfm(workspace)
    store = make_store()
    store.register_feature_set("customer_features", ["recency"])

    with pytest.raises(DataValidationError, match=r"\['customer_123'\]"):
        store.get_offline_features("customer_features", entity_ids="customer_123")
    with pytest.raises(DataValidationError, match="start <= end"):
        store.get_offline_features(
            "customer_features", timestamp_range=("2024-02-01", "2024-01-01")
        )
    with pytest.raises(DataValidationError, match=r"no \['event_timestamp'\]"):
        store.get_training_features("customer_features", pd.DataFrame({"customer_id": ["x"]}))
    with pytest.raises(DataValidationError, match="entity keys"):
        store.register_feature_set("customer_features", entity="stock_code")
    with pytest.raises(DataValidationError, match="letters, digits and underscores"):
        store.register_feature_set("customer-features", source="customer_rfm")


def test_online_store_settings_are_checked_and_translated_for_feast(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "rediss://app:p%40ss@cache.local:6380/2"
    assert (
        redis_connection_string(url) == "cache.local:6380,db=2,username=app,password=p@ss,ssl=true"
    )
    on_disk = redis_connection_string(url, for_disk=True)
    assert on_disk.endswith("password=${RETAILML_REDIS_PASSWORD},ssl=true")

    monkeypatch.setenv("RETAILML_ONLINE_STORE", "memcached")
    with pytest.raises(ConfigError, match="RETAILML_ONLINE_STORE: got 'memcached'; expected"):
        load_settings()
    with pytest.raises(ConfigError, match="RETAILML_ONLINE_STORE: expected one of"):
        FeatureStore(settings, online_store="memcached")  # type: ignore[arg-type]
    monkeypatch.setenv("RETAILML_ONLINE_STORE", "redis")
    monkeypatch.setenv("RETAILML_REDIS_URL", "http://cache:6379")
    with pytest.raises(ConfigError, match="RETAILML_REDIS_URL: got 'http://cache:6379'"):
        load_settings()
    monkeypatch.setenv("RETAILML_REDIS_URL", "redis://cache:6379/3")
    assert FeatureStore(load_settings()).online_store.store_id == "redis://cache:6379/3"
