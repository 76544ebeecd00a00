"""The stream consumer: real-time online features from transaction events.

Every test runs the real thing: events published to a directory of JSON-lines
files or to the Redis server on the machine (a stream and group of its own),
the consumer's SQLite state, and the Feast online store (SQLite for the
directory source, Redis for the Redis source, under a Feast project of its
own whose keys are deleted afterwards). Expected values are computed by hand
or by :func:`expected_values`, a direct transcription of the feature
definitions. No test asserts on timing; latency is measured by
``benchmarks/bench_stream.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from retailml.core.errors import DataValidationError, NotFoundError, StateError
from retailml.core.settings import Settings, load_settings
from retailml.data.schema import NON_PRODUCT_CODES
from retailml.feature_engineering._stream_events import Rejection, Transaction, parse_event
from retailml.feature_engineering.feature_store import FeatureStore
from retailml.feature_engineering.stream import (
    DirectorySource,
    EventSource,
    RedisStreamSource,
    StreamConsumer,
    publish_events,
)

REDIS_URL = os.environ.get("RETAILML_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

#: The consumer as another process would run it (settings from the environment).
CONSUMER_SCRIPT = """
import sys
from retailml.feature_engineering.stream import RedisStreamSource, StreamConsumer
kind, url, stream, group, batch = sys.argv[1:6]
source = RedisStreamSource(url, stream=stream, group=group) if kind == "redis" else None
StreamConsumer(source=source, batch_size=int(batch)).run(idle_timeout_s=120)
"""

Event = dict[str, Any]


def line(
    event_id: str,
    invoice: str,
    code: str,
    quantity: int,
    when: str,
    price: float,
    customer: str | None = "12345",
) -> Event:
    """One event in the canonical columns."""
    return {
        "event_id": event_id,
        "invoice_no": invoice,
        "stock_code": code,
        "description": f"item {code}",
        "quantity": quantity,
        "invoice_date": when,
        "unit_price": price,
        "customer_id": customer,
        "country": "United Kingdom",
    }


# --------------------------------------------------------------------------- setups


@dataclass
class Setup:
    """One source kind with its online store: directory + SQLite, or Redis + Redis."""

    kind: str
    settings: Settings
    stream: str = ""
    group: str = ""
    stores: list[FeatureStore] = field(default_factory=list)

    def source(self) -> EventSource:
        if self.kind == "directory":
            return DirectorySource.from_settings(self.settings)
        return RedisStreamSource(REDIS_URL, stream=self.stream, group=self.group)

    def consumer(self, **kwargs: Any) -> StreamConsumer:
        return StreamConsumer(self.settings, source=self.source(), **kwargs)

    def publish(self, events: Sequence[Event | str]) -> int:
        source = self.source()
        try:
            return publish_events(events, source)
        finally:
            source.close()

    def store(self) -> FeatureStore:
        store = FeatureStore(self.settings)
        self.stores.append(store)
        return store

    def online(self, feature_set: str, ids: Sequence[str]) -> dict[str, Any]:
        """``id -> OnlineFeatures`` read through a fresh FeatureStore."""
        store = self.store()

        async def read() -> list[Any]:
            return [await store.get_online_features(feature_set, i) for i in ids]

        return dict(zip(ids, asyncio.run(read()), strict=True))

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["RETAILML_HOME"] = str(self.settings.home)
        env["RETAILML_ONLINE_STORE"] = self.settings.online_store
        env["RETAILML_REDIS_URL"] = self.settings.redis_url
        env["RETAILML_FEAST_PROJECT"] = self.settings.feast_project
        return env


@pytest.fixture(scope="module")
def redis_client() -> Iterator[redis.Redis]:
    """A client of the Redis on the machine; fails (never skips) if it is down."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL!r} ({exc}); start redis-server")
    yield client
    client.close()


@pytest.fixture
def make_setup(settings: Settings, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Build setups; each Redis one gets its own stream, group and Feast project, removed after."""
    made: list[Setup] = []

    def make(kind: str, home: Path | None = None) -> Setup:
        if kind == "directory":
            setup = Setup(kind, load_settings(home=home or settings.home))
        else:
            request.getfixturevalue("redis_client")
            tag = uuid.uuid4().hex[:12]
            setup = Setup(
                kind,
                load_settings(
                    home=home or settings.home,
                    online_store="redis",
                    redis_url=REDIS_URL,
                    feast_project=f"retailml_test_{tag}",
                ),
                stream=f"retailml_test:{tag}:transactions",
                group="retailml-features",
            )
        made.append(setup)
        return setup

    yield make
    for setup in made:
        for store in setup.stores:
            store.close()
        if setup.kind == "redis":
            client: redis.Redis = request.getfixturevalue("redis_client")
            client.delete(setup.stream, f"{setup.stream}:dead")
            keys = list(client.scan_iter(match=f"*{setup.settings.feast_project}", count=1000))
            if keys:
                client.delete(*keys)


@pytest.fixture(params=["directory", "redis"])
def setup(request: pytest.FixtureRequest, make_setup: Any) -> Setup:
    """Each test once per source: the directory on SQLite, Redis Streams on Redis."""
    made: Setup = make_setup(request.param)
    return made


# --------------------------------------------------------------------------- the oracle


def expected_values(events: Sequence[Event | str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Customer and product values straight from the definitions (valid events, first id wins)."""
    unique: dict[str, Event] = {}
    for event in events:
        if isinstance(event, dict):
            unique.setdefault(event["event_id"], event)
    lines = [
        e
        for e in unique.values()
        if e["stock_code"] not in NON_PRODUCT_CODES and not e["invoice_no"].startswith("A")
    ]

    def when(e: Event) -> dt.datetime:
        return dt.datetime.fromisoformat(e["invoice_date"]).replace(tzinfo=dt.UTC)

    def purchase(e: Event) -> bool:
        return not e["invoice_no"].startswith("C") and e["quantity"] > 0

    customers: dict[str, Any] = {}
    for customer in {e["customer_id"] for e in lines if e["customer_id"] is not None}:
        own = [e for e in lines if e["customer_id"] == customer]
        as_of = max(when(e) for e in own)
        window = [e for e in own if 0 <= (as_of.date() - when(e).date()).days <= 6]
        purchases = [when(e) for e in own if purchase(e)]
        customers[customer] = (
            as_of,
            {
                "last_purchase_at": max(purchases) if purchases else None,
                "spend_7d": sum(e["quantity"] * e["unit_price"] for e in window),
                "orders_7d": len({e["invoice_no"] for e in window if purchase(e)}),
            },
        )
    products: dict[str, Any] = {}
    for code in {e["stock_code"] for e in lines}:
        own = [e for e in lines if e["stock_code"] == code]
        as_of = max(when(e) for e in own)
        today = [e for e in own if when(e).date() == as_of.date()]
        products[code] = (
            as_of,
            {
                "units_today": sum(e["quantity"] for e in today),
                "revenue_today": sum(e["quantity"] * e["unit_price"] for e in today),
            },
        )
    return customers, products


def assert_online_matches(setup: Setup, events: Sequence[Event | str]) -> None:
    customers, products = expected_values(events)
    for feature_set, expected in (("customer_realtime", customers), ("product_realtime", products)):
        served = setup.online(feature_set, sorted(expected))
        for key, (as_of, values) in expected.items():
            got = served[key]
            assert got.found, (feature_set, key)
            assert got.event_timestamp == as_of, (feature_set, key)
            served_values = got.to_dict()
            assert served_values.keys() == values.keys()
            for name, value in values.items():
                wanted = pytest.approx(value, abs=1e-9) if isinstance(value, float) else value
                assert served_values[name] == wanted, (feature_set, key, name)


def random_events(count: int, *, seed: int) -> list[Event | str]:
    """A plausible stream: invoices of 1-4 lines over 20 days, mostly in time order, with
    cancellations, postage, guests, a few late events, repeated events and malformed lines."""
    rng = random.Random(seed)
    start = dt.datetime(2024, 3, 1, 8)
    prices = {f"P{i:03d}": round(rng.uniform(0.3, 15), 2) for i in range(25)}
    events: list[Event | str] = []
    number = 0
    while len(events) < count:
        number += 1
        progress = len(events) / count
        when = start + dt.timedelta(days=20 * progress, minutes=rng.randrange(600))
        if rng.random() < 0.03:
            when -= dt.timedelta(days=rng.randint(1, 4))  # late
        customer = None if rng.random() < 0.05 else f"1{rng.randrange(40):04d}"
        cancelled = rng.random() < 0.06
        invoice = f"{'C' if cancelled else ''}{500000 + number}"
        stamp = when.isoformat()
        for code in rng.sample(sorted(prices), rng.randint(1, 4)):
            quantity = rng.randint(1, 12) * (-1 if cancelled else 1)
            event = line(f"ev-{number}-{code}", invoice, code, quantity, stamp, prices[code])
            events.append({**event, "customer_id": customer})
        if rng.random() < 0.04:
            events.append(line(f"ev-{number}-post", invoice, "POST", 1, stamp, 18.0, customer))
        if rng.random() < 0.03:
            recent = [e for e in events[-20:] if isinstance(e, dict)]
            events.append(dict(rng.choice(recent)))  # a repeat of a recent event
        if rng.random() < 0.01:
            events.append('{"event_id": "truncated", "invoice_no": "5')
    return events


# --------------------------------------------------------------------------- features


def test_online_features_equal_hand_computed_values(setup: Setup) -> None:
    setup.publish(
        [
            line("e1", "1000", "85123A", 6, "2024-03-01T09:00:00", 2.55),
            line("e2", "1001", "85123A", 2, "2024-03-05T10:00:00", 2.55),
            line("e3", "1001", "POST", 1, "2024-03-05T10:00:00", 18.0),
            line("e4", "1002", "85123A", 10, "2024-03-05T12:00:00", 2.55, customer="67890"),
        ]
    )
    consumer = setup.consumer()

    first = consumer.process_available()

    assert (first.processed, first.duplicates_skipped, first.dead_lettered) == (4, 0, 0)
    product = setup.online("product_realtime", ["85123A", "POST"])
    assert product["85123A"].to_dict() == {"units_today": 12, "revenue_today": 30.6}
    assert not product["POST"].found  # postage is not a product
    customer = setup.online("customer_realtime", ["12345"])["12345"]
    assert customer.to_dict() == {
        "last_purchase_at": dt.datetime(2024, 3, 5, 10, tzinfo=dt.UTC),
        "spend_7d": pytest.approx(15.3 + 5.1),
        "orders_7d": 2,
    }

    setup.publish(
        [
            line("e5", "C1003", "85123A", -1, "2024-03-09T08:00:00", 2.55),
            line("e6", "1004", "22423", 1, "2024-03-09T08:30:00", 12.75),
            line("e7", "1005", "85123A", 4, "2024-03-09T09:00:00", 2.55, customer=None),
        ]
    )
    second = consumer.process_available()

    assert second.processed == 3
    customers = setup.online("customer_realtime", ["12345", "67890"])
    # 2024-03-09 and the six days before: e1 (03-01) has left the window; the
    # cancellation counts net; e3 is postage; e7 is a guest's.
    assert customers["12345"].to_dict() == {
        "last_purchase_at": dt.datetime(2024, 3, 9, 8, 30, tzinfo=dt.UTC),
        "spend_7d": pytest.approx(5.1 - 2.55 + 12.75),
        "orders_7d": 2,
    }
    assert customers["12345"].event_timestamp == dt.datetime(2024, 3, 9, 8, 30, tzinfo=dt.UTC)
    assert customers["67890"].to_dict() == {
        "last_purchase_at": dt.datetime(2024, 3, 5, 12, tzinfo=dt.UTC),
        "spend_7d": pytest.approx(25.5),
        "orders_7d": 1,
    }
    product_now = setup.online("product_realtime", ["85123A", "22423"])
    # A new day: units today restart from that day's lines only.
    assert product_now["85123A"].to_dict() == {
        "units_today": 3,
        "revenue_today": pytest.approx(7.65),
    }
    assert product_now["85123A"].event_timestamp == dt.datetime(2024, 3, 9, 9, tzinfo=dt.UTC)
    assert product_now["22423"].to_dict() == {"units_today": 1, "revenue_today": 12.75}
    assert_everything_acknowledged(setup)


def assert_everything_acknowledged(setup: Setup) -> None:
    if setup.kind == "directory":
        source = DirectorySource.from_settings(setup.settings)
        assert not list(source.incoming.glob("*.jsonl"))
        assert list(source.processed.glob("*.jsonl"))
        return
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert client.xpending(setup.stream, setup.group)["pending"] == 0
        (group,) = client.xinfo_groups(setup.stream)
        assert group["lag"] == 0
    finally:
        client.close()


def test_the_same_event_twice_counts_once(setup: Setup) -> None:
    sale = line("order-1-line-1", "2000", "85123A", 5, "2024-03-02T10:00:00", 2.0)
    setup.publish([sale, sale])
    setup.publish([sale])
    consumer = setup.consumer()

    stats = consumer.process_available()
    setup.publish([sale])
    again = consumer.process_available()

    assert (stats.processed, stats.duplicates_skipped) == (1, 2)
    assert (again.processed, again.duplicates_skipped) == (0, 1)
    served = setup.online("customer_realtime", ["12345"])["12345"]
    assert served["spend_7d"] == 10.0
    assert served["orders_7d"] == 1
    assert setup.online("product_realtime", ["85123A"])["85123A"]["units_today"] == 5


def test_malformed_events_go_to_the_dead_letter_list_and_the_stream_goes_on(
    setup: Setup,
) -> None:
    good = [
        line("g1", "3000", "85123A", 2, "2024-03-10T10:00:00", 1.5),
        line("g2", "3001", "85123A", 3, "2024-03-10T11:00:00", 1.5),
        line("g3", "3002", "85123A", 4, "2024-03-10T12:00:00", 1.5),
    ]
    bad: list[Event | str] = [
        '{"event_id": "x1", "invoice_no": ',
        "[1, 2, 3]",
        {**line("x3", "3003", "85123A", 1, "2024-03-10T10:00:00", 1.0), "invoice_date": None},
        {**line("x4", "3004", "85123A", 1, "10th of March", 1.0)},
        {**line("x5", "3005", "85123A", 1, "2024-03-10T10:00:00", 1.0), "quantity": 1.5},
        {**line("x6", "3006", "85123A", 1, "2024-03-10T10:00:00", 1.0), "unit_price": -1},
        line("x7", "3007", "85123A", 1, "2024-01-01T10:00:00", 1.0),  # 69 days before g3
    ]
    setup.publish([good[0], *bad[:4], good[1], *bad[4:], good[2]])
    consumer = setup.consumer()

    stats = consumer.process_available()

    assert (stats.processed, stats.dead_lettered) == (3, len(bad))
    letters = consumer.dead_letters()
    reasons = [letter.reason.split(":", 1)[0] for letter in letters]
    assert reasons == [
        "invalid_json",
        "not_an_object",
        "missing_date",
        "unparseable_date",
        "invalid_quantity",
        "negative_price",
        "too_late",
    ]
    assert letters[0].raw == bad[0]
    assert "'10th of March'" in letters[3].reason
    assert all(letter.at and letter.position for letter in letters)
    assert setup.online("product_realtime", ["85123A"])["85123A"]["units_today"] == 9
    # Acknowledged like any event: a second pass finds nothing to do.
    assert consumer.process_available().dead_lettered == 0
    assert len(consumer.dead_letters()) == len(bad)
    assert_everything_acknowledged(setup)


# --------------------------------------------------------------------------- crash safety


def test_a_consumer_killed_mid_stream_resumes_without_loss_or_double_count(
    setup: Setup, make_setup: Any, tmp_path: Path
) -> None:
    events = random_events(4000, seed=11)
    unique = len({e["event_id"] for e in events if isinstance(e, dict)})
    malformed = sum(isinstance(e, str) for e in events)
    for start in range(0, len(events), 500):  # several files for the directory source
        setup.publish(events[start : start + 500])
    watcher = setup.consumer()
    log = (tmp_path / "consumer.log").open("w+")
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CONSUMER_SCRIPT,
            setup.kind,
            REDIS_URL,
            setup.stream,
            setup.group,
            "20",
        ],
        env=setup.env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while watcher.status().events < 600:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"the consumer exited early:\n{log.read()}")
            assert time.monotonic() < deadline, "the consumer made no progress"
            time.sleep(0.005)
    finally:
        process.kill()
        process.wait()
    at_kill = watcher.status().events
    assert 600 <= at_kill < unique, "the consumer was not killed mid-stream"

    resumed = setup.consumer(batch_size=200).process_available()

    assert watcher.status().events == unique
    assert resumed.processed == unique - at_kill
    assert len(watcher.dead_letters()) == malformed
    assert_everything_acknowledged(setup)
    assert_online_matches(setup, events)
    # ... and the values equal those of one clean run over the same events.
    clean = make_setup(setup.kind, home=tmp_path / "clean")
    for start in range(0, len(events), 500):
        clean.publish(events[start : start + 500])
    assert clean.consumer().process_available().processed == unique
    customers, products = expected_values(events)
    for feature_set, ids in (("customer_realtime", customers), ("product_realtime", products)):
        crashed = setup.online(feature_set, sorted(ids))
        once = clean.online(feature_set, sorted(ids))
        for key in ids:
            assert crashed[key].to_dict() == once[key].to_dict()
            assert crashed[key].event_timestamp == once[key].event_timestamp


def test_a_restart_resumes_mid_file_from_the_committed_offset(make_setup: Any) -> None:
    setup = make_setup("directory")
    events = [
        line(f"m{i}", f"40{i:02d}", "85123A", 1, f"2024-03-11T10:{i:02d}:00", 1.0)
        for i in range(10)
    ]
    setup.publish(events)

    first = setup.consumer(batch_size=2).run(max_events=3)
    source = DirectorySource.from_settings(setup.settings)
    assert len(list(source.incoming.glob("*.jsonl"))) == 1  # not finished yet
    second = setup.consumer().process_available()

    assert (first.processed, second.processed, second.duplicates_skipped) == (3, 7, 0)
    assert setup.online("product_realtime", ["85123A"])["85123A"]["units_today"] == 10
    assert_everything_acknowledged(setup)


def test_run_serves_events_as_they_arrive_until_stopped(setup: Setup) -> None:
    consumer = setup.consumer()
    stop = threading.Event()
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(consumer.run(stop=stop)))
    thread.start()
    store = setup.store()
    try:
        for minute in range(3):
            when = f"2024-03-12T10:0{minute}:00"
            setup.publish([line(f"live-{minute}", f"50{minute}", "85123A", 1, when, 1.0)])
            deadline = time.monotonic() + 60
            while units_today(store, "85123A") != minute + 1:
                assert time.monotonic() < deadline, "the event never became visible"
                time.sleep(0.01)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()
    (stats,) = results
    assert stats.processed == 3
    assert stats.last_lag_s is not None


def test_sigterm_stops_run_after_the_batch_in_hand(make_setup: Any) -> None:
    setup = make_setup("directory")
    setup.publish(
        [line(f"t{i}", f"70{i}", "85123A", 1, "2024-03-12T10:00:00", 1.0) for i in range(2)]
    )
    consumer = setup.consumer()
    before = signal.getsignal(signal.SIGTERM)

    def terminate_when_done() -> None:
        deadline = time.monotonic() + 60
        while consumer.status().events < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate_when_done)
    killer.start()
    stats = consumer.run()  # in the main thread, where the handler is installed
    killer.join()

    assert stats.processed == 2
    assert signal.getsignal(signal.SIGTERM) == before
    assert setup.online("product_realtime", ["85123A"])["85123A"]["units_today"] == 2


def units_today(store: FeatureStore, code: str) -> int | None:
    """The served units, or None before the consumer has registered or pushed anything."""
    try:
        served = asyncio.run(store.get_online_features("product_realtime", code))
    except NotFoundError:
        return None
    return served["units_today"] if served.found else None


def lock_is_held(path: Path) -> bool:
    if not path.exists():
        return False
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def test_a_second_consumer_in_the_workspace_fails_fast(make_setup: Any) -> None:
    setup = make_setup("directory")
    first = setup.consumer()
    stop = threading.Event()
    thread = threading.Thread(target=lambda: first.run(stop=stop))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not lock_is_held(first.state_path.with_name("state.db.lock")):
            assert time.monotonic() < deadline, "the first consumer never started"
            time.sleep(0.01)
        with pytest.raises(StateError, match="one stream consumer per workspace"):
            setup.consumer().process_available()
    finally:
        stop.set()
        thread.join(timeout=60)


# --------------------------------------------------------------------------- the catalogue


def test_stream_sets_are_online_only_in_the_feature_store(make_setup: Any) -> None:
    setup = make_setup("directory")
    setup.publish([line("c1", "6000", "85123A", 1, "2024-03-12T10:00:00", 1.0)])
    setup.consumer().process_available()
    store = setup.store()

    names = {reg.name: reg.kind for reg in store.list_feature_sets()}
    assert names == {"customer_realtime": "stream", "product_realtime": "stream"}
    assert store.warm_up() == ["customer_realtime", "product_realtime"]
    with pytest.raises(StateError, match="online-only stream feature set"):
        store.get_offline_features("customer_realtime")
    with pytest.raises(StateError, match="online-only stream feature set"):
        store.materialize(feature_sets=["product_realtime"])
    assert store.materialize() == {}


# --------------------------------------------------------------------------- parsing


NOW_US = int(dt.datetime(2024, 6, 1, tzinfo=dt.UTC).timestamp() * 1_000_000)
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US


@pytest.mark.parametrize(
    ("changes", "check"),
    [
        ({"quantity": "6"}, lambda t: t.quantity == 6),
        ({"quantity": 6.0}, lambda t: t.quantity == 6),
        ({"customer_id": 17850.0}, lambda t: t.customer_id == "17850"),
        ({"customer_id": "17850.0"}, lambda t: t.customer_id == "17850"),
        ({"customer_id": ""}, lambda t: t.customer_id is None),
        ({"unit_price": "2.55", "quantity": 6}, lambda t: t.amount_micros == 15_300_000),
        ({"invoice_date": "2024-03-01T10:00:00+02:00"}, lambda t: t.ts_us % DAY_US == 8 * HOUR_US),
        ({"stock_code": "post"}, lambda t: not t.is_product_line),
        ({"invoice_no": "A563185", "unit_price": -11062.06}, lambda t: not t.is_product_line),
        ({"invoice_no": "C1", "quantity": -2}, lambda t: not t.is_purchase_line),
        ({"event_id": None}, lambda t: t.event_id == "fallback"),
    ],
)  # fmt: skip
def test_events_are_typed_like_ingested_rows(changes: Mapping[str, Any], check: Any) -> None:
    event = {**line("e", "1", "85123A", 1, "2024-03-01T10:00:00", 1.0), **changes}
    if event["event_id"] is None:
        del event["event_id"]
    parsed = parse_event(publish_payload(event), "fallback", NOW_US)
    assert isinstance(parsed, Transaction), parsed
    assert check(parsed)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe{}", "invalid_encoding"),
        (b'{"invoice_no": "1", "stock_code": ""}', "missing_stock_code: expected stock_code"),
        (b'{"invoice_no": "", "stock_code": "A"}', "empty_invoice"),
        (
            b'{"invoice_no": "1", "stock_code": "A", "invoice_date": "2024-07-01T00:00:00"}',
            "future_date",
        ),
        (
            b'{"invoice_no": "1", "stock_code": "A", "invoice_date": "2024-03-01", '
            b'"quantity": 1, "unit_price": "nan"}',
            "invalid_price",
        ),
        (
            b'{"invoice_no": "1", "stock_code": "A", "invoice_date": "2024-03-01", '
            b'"quantity": true, "unit_price": 1}',
            "invalid_quantity: expected quantity as an integer; got True",
        ),
        (
            b'{"invoice_no": "1", "stock_code": "A", "invoice_date": "2024-03-01", '
            b'"quantity": 1, "unit_price": 1, "event_id": ""}',
            "invalid_event_id",
        ),
    ],
)
def test_malformed_events_are_rejected_with_a_reason(payload: bytes, reason: str) -> None:
    parsed = parse_event(payload, "fallback", NOW_US)
    assert isinstance(parsed, Rejection)
    assert parsed.reason.startswith(reason)


def test_bad_arguments_name_the_value(settings: Settings) -> None:
    with pytest.raises(DataValidationError, match=r"StreamConsumer batch_size: expected .* got 0"):
        StreamConsumer(settings, batch_size=0)
    with pytest.raises(DataValidationError, match="retention_days: expected an integer >= 7"):
        StreamConsumer(settings, retention_days=3)
    with pytest.raises(DataValidationError, match="one event per line"):
        publish_events(['{"a":\n1}'], DirectorySource(settings.home / "stream"))


def publish_payload(event: Mapping[str, Any]) -> bytes:
    return json.dumps(event).encode()
