"""Real-time features from a stream of transaction events.

A :class:`StreamConsumer` reads transaction events from a local directory of
JSON-lines files (the default) or a Redis stream (consumer group), and keeps
two online feature sets current in the Feast online store of the workspace
(SQLite or Redis, as for every feature set)::

    customer_realtime  (customer_id)  last_purchase_at, spend_7d, orders_7d
    product_realtime   (stock_code)   units_today, revenue_today

Read them like any registered set::

    consumer = StreamConsumer()                  # <home>/stream, the Feast store of the settings
    publish_events([{"event_id": "e1", "invoice_no": "536365", ...}])
    consumer.process_available()                 # or consumer.run() until SIGTERM
    await FeatureStore().get_online_features("customer_realtime", "12345")

Events
------
One event is one transaction line as a JSON object with the canonical columns
(``invoice_no``, ``stock_code``, ``quantity``, ``invoice_date`` in ISO 8601,
``unit_price``, ``customer_id``, ``country``, optional ``description``) and a
unique ``event_id``; the typing rules are ingestion's (see
:mod:`._stream_events`). An event without ``event_id`` is identified by its
source, position and bytes (file name and byte offset, or stream entry id):
a redelivery or re-read is recognised, the same line published twice counts
twice.

Sources
-------
:class:`DirectorySource` (default ``<home>/stream``): producers write a
``*.jsonl`` file elsewhere and rename it into ``incoming/``
(:func:`publish_events` does); files are read in name order, the byte offset
reached is committed with the state so a restart resumes mid-file, and a
file read to its end moves to ``processed/``. :class:`RedisStreamSource`: one
event as JSON in each entry's ``event`` field, read by a consumer group
(``XREADGROUP``) and acknowledged (``XACK``) after the online write; on start
the consumer claims what a previous consumer left pending (``XAUTOCLAIM``)
and reads it before new entries.

Feature semantics
-----------------
They follow the batch definitions (:mod:`._definitions`): only *product
lines* count (non-product codes such as ``POST`` and adjustment invoices
``A...`` are ignored); amounts are ``quantity * unit_price``, net of
cancellations (invoice ``C...``, negative quantities reduce spend and units
on the day they are recorded); an *order* is a distinct invoice with a
purchase line (non-cancelled, positive quantity). Guests (no
``customer_id``) count for products only. Days are UTC calendar days.

"Now" is event time, per entity: each entity's values are as of its latest
event, which is also the ``event_timestamp`` served with them.

* ``last_purchase_at``: the latest purchase line's ``invoice_date`` (null if
  the customer only has cancellations);
* ``spend_7d``, ``orders_7d``: net spend and orders on the seven UTC days
  ending with the day of the customer's latest event (that day and the six
  before); older events drop out when a later event moves the window;
* ``units_today``, ``revenue_today``: net units and revenue of the product on
  the day of its latest event; a first event on a new day starts from zero.

Values depend only on the set of an entity's events (within the retention
below), not on their order or on how they were batched, so a redelivered,
late or re-batched event gives the values a clean run gives. A value is not
decayed between events: a customer with no event for ten days still serves
the spend of the week before their last event, stamped with that event's
time; a reader wanting "spend in the week before now" compares
``event_timestamp`` with its clock.

Processing and exactly-once effect
----------------------------------
The consumer works in micro-batches: it takes whatever has arrived, up to
``batch_size`` events, as soon as anything has (an empty read blocks at most
``max_wait_s``, which bounds how quickly ``stop`` and ``idle_timeout_s`` are
noticed). While one batch is committed and pushed the next accumulates, so a
quiet stream is served event by event and a busy one in full batches. Each
batch then goes through:

1. **Commit.** One SQLite transaction (``<home>/stream/state.db``, see
   :mod:`._stream_state`) inserts each event id into a processed-ids table
   (an id already there is a duplicate and is skipped), adds the event to
   per-day buckets (spend per customer and day, purchase invoices per
   customer, units and revenue per product and day), records the source
   position (the directory source's byte offset), the dead letters and which
   entities changed, and reads their new values.
2. **Push.** The values, absolute and recomputed from the buckets, are
   written to the Feast online store through Feast's push path
   (:meth:`FeatureStore.push_online`; see "Online store writes").
3. **Acknowledge.** ``XACK`` on Redis; a file read to its end moves to
   ``processed/``.

A crash before the commit loses nothing: the source redelivers (pending
entries are claimed on restart; the directory is re-read from the committed
offset). A crash after it double-counts nothing: a redelivered event's id is
already processed. Values committed but possibly not pushed are marked dirty
in the same transaction and pushed first by the next consumer. Pushing an
absolute value twice is harmless.

The state is SQLite for both sources, not Redis hashes: one local
transaction makes a whole batch's dedupe, buckets, position and dead letters
atomic without a Lua script per batch, costs one ``fsync`` per batch, and
survives a Redis restart without persistence. The price is one consumer per
workspace (an exclusive lock on ``state.db.lock``; a second consumer fails
fast), which the exactly-once argument needs anyway: two writers pushing
absolute values could overwrite a newer value with an older one. A consumer
group therefore has one retailml consumer at a time; the group gives
acknowledgements, redelivery and a durable position, not parallelism. One
consumer applies thousands of events a second, most of it spent in Feast's
online-store write (see ``benchmarks/bench_stream.py``).

Retention: ids and buckets are kept for ``retention_days`` (default 35)
behind the latest event day; an event older than that goes to the dead
letters as ``too_late``, and so does an event dated more than a day after
the consumer's clock (``future_date``), so a mistyped year cannot move the
window.

Dead letters
------------
A malformed event (bad JSON or UTF-8, a missing or invalid field, an
unparseable date) is recorded with its raw text, the reason and the time, in
the same transaction as the batch, then appended to the source's dead-letter
list, ``<stream dir>/dead_letter.jsonl`` or the Redis stream
``<stream>:dead``; it is acknowledged like any event and the stream goes on.
Each dead letter carries a sequence number, so one interrupted between its
commit and its append is appended once on restart, not twice.

Online store writes
-------------------
The two sets are registered in the workspace's Feast repository as feature
views over push sources (``customer_realtime__push``,
``product_realtime__push``) and in the store's catalogue, so
``FeatureStore.get_online_features`` and ``retailml features get`` read them.
A push does what ``feast.FeatureStore.push(..., to=PushMode.ONLINE)`` does,
Feast's ``provider.ingest_df`` on the view, with the view resolved once
instead of by two registry scans per call (see ``FeastRepo.push``). Pushes
skip Feast's Redis check that drops a write not newer than the stored one: a
later value of an entity may carry the same event time (the second batch of
an invoice, a late event), and the consumer, the only writer, pushes in
commit order. The SQLite online store is switched to WAL mode on the first
push, so a serving process reading it never waits for the consumer's writes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import pandas as pd

from retailml.core.db import utcnow
from retailml.core.errors import DataValidationError, StateError, problem
from retailml.core.settings import Settings, get_settings
from retailml.core.workspace import Workspace
from retailml.feature_engineering._stream_events import (
    MICROS,
    Rejection,
    derived_id,
    parse_event,
    to_micros,
)
from retailml.feature_engineering._stream_sources import (
    DEFAULT_GROUP,
    DEFAULT_STREAM,
    DirectorySource,
    EventSource,
    Record,
    RedisStreamSource,
)
from retailml.feature_engineering._stream_state import (
    CustomerRow,
    DeadLetter,
    Entry,
    ProductRow,
    StreamState,
    StreamStatus,
    read_summary,
)
from retailml.feature_engineering.feature_store import FeatureStore

__all__ = [
    "CUSTOMER_REALTIME",
    "DEFAULT_GROUP",
    "DEFAULT_STREAM",
    "PRODUCT_REALTIME",
    "REALTIME_FEATURE_SETS",
    "DeadLetter",
    "DirectorySource",
    "EventSource",
    "RealtimeFeatureSet",
    "RedisStreamSource",
    "StreamConsumer",
    "StreamStats",
    "StreamStatus",
    "publish_events",
]

logger = logging.getLogger(__name__)

#: The state database, relative to the workspace root.
STATE_FILE = Path("stream") / "state.db"


@dataclass(frozen=True)
class RealtimeFeatureSet:
    """An online feature set the consumer keeps current.

    Attributes:
        name: The registered name.
        entity: Its entity key column.
        features: ``feature -> logical type``.
        description: What it holds.
    """

    name: str
    entity: str
    features: Mapping[str, str]
    description: str


CUSTOMER_REALTIME = RealtimeFeatureSet(
    name="customer_realtime",
    entity="customer_id",
    features={"last_purchase_at": "timestamp", "spend_7d": "float", "orders_7d": "integer"},
    description=(
        "As of the customer's latest event: last purchase time, net spend and orders "
        "on the 7 UTC days ending that day (stream)"
    ),
)
PRODUCT_REALTIME = RealtimeFeatureSet(
    name="product_realtime",
    entity="stock_code",
    features={"units_today": "integer", "revenue_today": "float"},
    description="Net units and revenue on the UTC day of the product's latest event (stream)",
)
REALTIME_FEATURE_SETS: tuple[RealtimeFeatureSet, ...] = (CUSTOMER_REALTIME, PRODUCT_REALTIME)


@dataclass(frozen=True)
class StreamStats:
    """What one :meth:`StreamConsumer.run` (or :meth:`~StreamConsumer.process_available`) did.

    Attributes:
        processed: Events applied.
        duplicates_skipped: Records whose id was already processed.
        dead_lettered: Records sent to the dead-letter list.
        batches: Micro-batches committed.
        last_lag_s: For the last batch, seconds from the arrival of its oldest
            event at the source to the end of its online write; None if no batch.
    """

    processed: int = 0
    duplicates_skipped: int = 0
    dead_lettered: int = 0
    batches: int = 0
    last_lag_s: float | None = None


class StreamConsumer:
    """Keeps ``customer_realtime`` and ``product_realtime`` current from a stream of events.

    Constructing a consumer only stores its configuration; :meth:`run` and
    :meth:`process_available` open the state (taking the workspace's
    consumer lock), the source and the feature store, and close them again.

    Args:
        settings: retailml settings: the workspace (``home``) and the online
            store (``online_store``, ``redis_url``, ``feast_project``);
            default the process settings.
        source: Where events come from; default the workspace's stream
            directory (:meth:`DirectorySource.from_settings`).
        batch_size: Most events in one micro-batch.
        max_wait_s: Longest an empty read blocks.
        retention_days: Days of processed ids and buckets kept behind the
            latest event day (at least 7).

    Raises:
        DataValidationError: If a parameter is out of range.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        source: EventSource | None = None,
        batch_size: int = 500,
        max_wait_s: float = 0.1,
        *,
        retention_days: int = 35,
    ) -> None:
        _check("batch_size", batch_size, "an integer >= 1", _is_int(batch_size) and batch_size >= 1)
        _check(
            "max_wait_s",
            max_wait_s,
            "a finite number of seconds >= 0",
            isinstance(max_wait_s, int | float)
            and not isinstance(max_wait_s, bool)
            and math.isfinite(max_wait_s)
            and max_wait_s >= 0,
        )
        _check(
            "retention_days",
            retention_days,
            "an integer >= 7 (the spend window)",
            _is_int(retention_days) and retention_days >= 7,
        )
        self.settings = settings or get_settings()
        self.workspace = Workspace.from_settings(self.settings)
        self.source = source if source is not None else DirectorySource.from_settings(self.settings)
        self.batch_size = batch_size
        self.max_wait_s = float(max_wait_s)
        self.retention_days = retention_days

    @property
    def state_path(self) -> Path:
        """The state database (``<home>/stream/state.db``)."""
        return self.workspace.root / STATE_FILE

    def __repr__(self) -> str:
        return (
            f"StreamConsumer(source={self.source!r}, batch_size={self.batch_size}, "
            f"max_wait_s={self.max_wait_s})"
        )

    # ------------------------------------------------------------------ running

    def run(
        self,
        stop: threading.Event | None = None,
        max_events: int | None = None,
        idle_timeout_s: float | None = None,
    ) -> StreamStats:
        """Consume until stopped.

        Stops when ``stop`` is set, after ``max_events`` records, after
        ``idle_timeout_s`` seconds without a record, or on SIGTERM/SIGINT
        (when called from the main thread; a second signal acts as usual).
        The batch in progress is finished first, so stopping loses nothing.

        Args:
            stop: Set it (from another thread) to stop.
            max_events: Stop after this many records (events, duplicates and
                dead letters).
            idle_timeout_s: Stop after this long without a record.

        Returns:
            What this run did.

        Raises:
            StateError: If another consumer runs in the workspace, or an online
                store or Redis source is unreachable.
        """
        stop = stop or threading.Event()
        with _signals_set(stop):
            return self._consume(stop, max_events, idle_timeout_s, self.max_wait_s)

    def process_available(self) -> StreamStats:
        """Process every event already in the source, then return (for tests and cron)."""
        return self._consume(threading.Event(), None, 0.0, 0.0)

    def status(self) -> StreamStatus:
        """The state's counters, read without the consumer lock (works while one runs)."""
        return read_summary(self.state_path)

    def dead_letters(self) -> list[DeadLetter]:
        """The source's dead-letter list, oldest first."""
        return self.source.dead_letters()

    def _consume(
        self,
        stop: threading.Event,
        max_events: int | None,
        idle_timeout_s: float | None,
        wait_s: float,
    ) -> StreamStats:
        import redis

        stats = _Counters()
        try:
            with self._session() as session:
                idle_since = time.monotonic()
                while not stop.is_set():
                    limit = self.batch_size
                    if max_events is not None:
                        limit = min(limit, max_events - stats.read)
                        if limit <= 0:
                            break
                    records = session.source.read(limit, wait_s)
                    if records:
                        session.process(records, stats)
                        idle_since = time.monotonic()
                    elif (
                        idle_timeout_s is not None
                        and time.monotonic() - idle_since >= idle_timeout_s
                    ):
                        break
        except redis.exceptions.ConnectionError as exc:
            raise StateError(
                problem(
                    "a reachable Redis (stream source or online store)",
                    f"{exc}",
                    "start Redis or correct RETAILML_REDIS_URL; a restart resumes where "
                    "the consumer stopped",
                    subject="stream consumer",
                )
            ) from exc
        return stats.freeze()

    @contextlib.contextmanager
    def _session(self) -> Iterator[_Session]:
        state = StreamState(self.state_path, self.retention_days).open()
        store: FeatureStore | None = None
        try:
            store = FeatureStore(self.settings)
            session = _Session(state, store, self.source)
            session.start()
            yield session
            session.finish()
        finally:
            self.source.close()
            if store is not None:
                store.close()
            state.close()


class _Counters:
    def __init__(self) -> None:
        self.read = 0
        self.processed = 0
        self.duplicates = 0
        self.dead = 0
        self.batches = 0
        self.last_lag_s: float | None = None

    def freeze(self) -> StreamStats:
        return StreamStats(
            processed=self.processed,
            duplicates_skipped=self.duplicates,
            dead_lettered=self.dead,
            batches=self.batches,
            last_lag_s=self.last_lag_s,
        )


class _Session:
    """One open state, store and source: recovery, then batch after batch."""

    def __init__(self, state: StreamState, store: FeatureStore, source: EventSource) -> None:
        self.state = state
        self.store = store
        self.source = source
        self.pushed_upto = -1
        #: Finished files' positions, deleted in the next batch's transaction.
        self.forget: list[str] = []

    def start(self) -> None:
        regs = [
            self.store.register_stream_feature_set(s.name, s.entity, s.features, s.description)
            for s in REALTIME_FEATURE_SETS
        ]
        # Every entity is pushed once into an online store (or view version)
        # that has not had them, e.g. after switching from SQLite to Redis.
        target = f"{self.store.project}@{self.store.online_store.store_id}:" + ",".join(
            r.version for r in regs
        )
        if not self.state.is_synced(target):
            self.state.mark_all_dirty(target)
        forget = self.source.open(self.state.positions(self.source.name))
        if forget:
            self.state.forget_positions(self.source.name, forget)
        self.flush_dead_letters()
        upto = -1
        for batch, customers, products in self.state.dirty_values():
            self.push(customers, products)
            upto = batch
        if upto >= 0:
            logger.info("pushed the values of entities left dirty (batches up to %d)", upto)
            self.state.clear_dirty(upto)

    def finish(self) -> None:
        if self.forget:
            self.state.forget_positions(self.source.name, self.forget)
        if self.pushed_upto >= 0:
            self.state.clear_dirty(self.pushed_upto)

    def process(self, records: Sequence[Record], stats: _Counters) -> None:
        now = utcnow()
        now_us = to_micros(now)
        source_name = self.source.name
        entries = []
        positions: dict[str, int] = {}
        for record in records:
            fallback = derived_id(source_name, record.position, record.payload)
            item = (
                Rejection(record.rejection)
                if record.rejection is not None
                else parse_event(record.payload, fallback, now_us)
            )
            entries.append(
                Entry(
                    item=item,
                    dead_letter_id="dead:" + fallback.removeprefix("derived:"),
                    raw=record.payload.decode("utf-8", errors="replace"),
                    position=record.position,
                )
            )
            if record.checkpoint is not None:
                key, position = record.checkpoint
                positions[key] = max(position, positions.get(key, 0))
        outcome = self.state.apply(
            entries,
            source=source_name,
            positions=positions,
            forget=self.forget,
            pushed_upto=self.pushed_upto,
            now=now.isoformat(),
        )
        if outcome.dead_lettered:
            self.flush_dead_letters()
        self.push(outcome.customers, outcome.products)
        self.pushed_upto = outcome.batch
        self.forget = self.source.ack(records)
        stats.read += len(records)
        stats.processed += outcome.processed
        stats.duplicates += outcome.duplicates
        stats.dead += outcome.dead_lettered
        stats.batches += 1
        stats.last_lag_s = max(0.0, time.time() - min(r.arrived_at for r in records))
        logger.debug(
            "batch %d: %d events, %d duplicates, %d dead letters, %d customers, %d products",
            outcome.batch,
            outcome.processed,
            outcome.duplicates,
            outcome.dead_lettered,
            len(outcome.customers),
            len(outcome.products),
        )

    def push(self, customers: Sequence[CustomerRow], products: Sequence[ProductRow]) -> None:
        if customers:
            self.store.push_online(CUSTOMER_REALTIME.name, _customer_frame(customers))
        if products:
            self.store.push_online(PRODUCT_REALTIME.name, _product_frame(products))

    def flush_dead_letters(self) -> None:
        letters = self.state.unflushed_dead_letters()
        if not letters:
            return
        state_id = self.state.state_id
        written = self.source.last_dead_letter_seq(state_id)
        fresh = [letter for letter in letters if letter.seq > written]
        self.source.write_dead_letters(fresh, state_id)
        for letter in fresh:
            logger.info("dead letter %s: %s", letter.position, letter.reason)
        self.state.mark_flushed(letters[-1].seq)


def _customer_frame(rows: Sequence[CustomerRow]) -> pd.DataFrame:
    ids, last, purchase, spend, orders = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "customer_id": list(ids),
            "event_timestamp": pd.to_datetime(list(last), unit="us", utc=True),
            "last_purchase_at": pd.to_datetime(list(purchase), unit="us", utc=True),
            "spend_7d": np.asarray(spend, dtype=np.int64) / MICROS,
            "orders_7d": np.asarray(orders, dtype=np.int64),
        }
    )


def _product_frame(rows: Sequence[ProductRow]) -> pd.DataFrame:
    codes, last, units, revenue = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "stock_code": list(codes),
            "event_timestamp": pd.to_datetime(list(last), unit="us", utc=True),
            "units_today": np.asarray(units, dtype=np.int64),
            "revenue_today": np.asarray(revenue, dtype=np.int64) / MICROS,
        }
    )


@contextlib.contextmanager
def _signals_set(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` (main thread only); a second one acts as before."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        logger.info("signal %d: stopping after the current batch", signum)
        stop.set()
        for known, old in previous.items():
            signal.signal(known, old)

    for wanted in (signal.SIGTERM, signal.SIGINT):
        previous[wanted] = signal.signal(wanted, handler)
    try:
        yield
    finally:
        for known, old in previous.items():
            signal.signal(known, old)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(name: str, value: Any, expected: str, ok: bool) -> None:
    if not ok:
        raise DataValidationError(
            problem(expected, repr(value), f"pass a valid {name}", subject=f"StreamConsumer {name}")
        )


# --------------------------------------------------------------------------- producing


def publish_events(
    events: Iterable[Mapping[str, Any] | str | bytes], source: EventSource | None = None
) -> int:
    """Publish events: one JSON-lines file, renamed into place (directory), or ``XADD`` (Redis).

    Args:
        events: Each a mapping (written as JSON; datetimes as ISO 8601), or
            the raw text or bytes of one event (written as given, e.g. to
            publish a malformed line on purpose).
        source: Where to publish; default the workspace's stream directory.

    Returns:
        The number of events published.

    Raises:
        DataValidationError: If an event cannot be written as one line of JSON.
    """
    target = source if source is not None else DirectorySource.from_settings()
    payloads = [_payload(event) for event in events]
    return target.publish(payloads)


def _payload(event: Mapping[str, Any] | str | bytes) -> bytes:
    if isinstance(event, bytes):
        return event
    if isinstance(event, str):
        return event.encode("utf-8")
    if not isinstance(event, Mapping):
        raise DataValidationError(
            problem(
                "an event as a mapping, or its raw text",
                f"{type(event).__name__} {event!r}"[:120],
                "pass dicts of the canonical columns",
                subject="publish_events",
            )
        )
    try:
        return json.dumps(dict(event), default=_json_value, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise DataValidationError(
            problem(
                "JSON-serialisable event values",
                f"{exc} in {dict(event)!r}"[:200],
                "pass text, numbers, datetimes or None",
                subject="publish_events",
            )
        ) from exc


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):  # pandas Timestamps too
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
