"""The stream consumer's state: window buckets, processed ids, positions, outboxes.

One SQLite file per workspace (``<home>/stream/state.db``, WAL,
``synchronous=FULL``), written by one consumer at a time: :meth:`StreamState.open`
takes an exclusive lock on ``state.db.lock`` and fails fast when another
consumer holds it.

Tables
------
``processed``        every event id applied (and every dead letter's id), with its day
``customers``        per customer: latest event time and day, latest purchase time
``customer_days``    per customer and UTC day: net spend (micros)
``customer_orders``  per customer: each purchase invoice and its (first) day
``products``         per product: latest event time and day
``product_days``     per product and UTC day: net units and revenue (micros)
``dirty``            entities whose online values are not yet known to be pushed
``positions``        a source's committed read positions (the directory source's
                     byte offset per file)
``dead_letters``     the dead-letter outbox, flushed to the source's dead-letter list
``meta``             state id, watermark day, batch and event counters, synced stores

One micro-batch is one transaction: for each event, in order, its id is
inserted into ``processed`` (an id already there is a duplicate and changes
nothing) and its effect added to the buckets; the touched entities are marked
dirty, the source position and the dead letters recorded, and the new online
values read, all before the commit. After the commit the values are pushed
and the source acknowledged; the next batch's transaction clears the dirty
marks of the batches whose push completed. A crash anywhere leaves either
nothing of the batch or all of it, plus dirty marks that :meth:`dirty_values`
returns for the next consumer to push first.

Retention
---------
The watermark is the latest event day applied. Events more than
``retention_days`` before it are refused as too late (they would need buckets
and ids that are no longer kept); ids and buckets older than that are pruned
when the watermark moves, except each entity's own last seven days, so its
values can always be recomputed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from retailml.core.db import utcnow
from retailml.core.errors import StateError, problem
from retailml.feature_engineering._stream_events import Rejection, Transaction

#: Days in the spend and order window: the latest event's day and the six before.
WINDOW_DAYS = 7
_EPOCH_DAY = dt.date(1970, 1, 1)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS processed (
    event_id TEXT PRIMARY KEY, day INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS processed_day ON processed (day);
CREATE TABLE IF NOT EXISTS customers (
    customer_id TEXT PRIMARY KEY,
    last_event_us INTEGER NOT NULL,
    last_day INTEGER NOT NULL,
    last_purchase_us INTEGER) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS customer_days (
    customer_id TEXT NOT NULL, day INTEGER NOT NULL, spend_micros INTEGER NOT NULL,
    PRIMARY KEY (customer_id, day)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS customer_days_day ON customer_days (day);
CREATE TABLE IF NOT EXISTS customer_orders (
    customer_id TEXT NOT NULL, invoice_no TEXT NOT NULL, day INTEGER NOT NULL,
    PRIMARY KEY (customer_id, invoice_no)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS customer_orders_window ON customer_orders (customer_id, day);
CREATE INDEX IF NOT EXISTS customer_orders_day ON customer_orders (day);
CREATE TABLE IF NOT EXISTS products (
    stock_code TEXT PRIMARY KEY, last_event_us INTEGER NOT NULL, last_day INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS product_days (
    stock_code TEXT NOT NULL, day INTEGER NOT NULL,
    units INTEGER NOT NULL, revenue_micros INTEGER NOT NULL,
    PRIMARY KEY (stock_code, day)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS product_days_day ON product_days (day);
CREATE TABLE IF NOT EXISTS dirty (
    kind TEXT NOT NULL, key TEXT NOT NULL, batch INTEGER NOT NULL,
    PRIMARY KEY (kind, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS positions (
    source TEXT NOT NULL, key TEXT NOT NULL, position INTEGER NOT NULL,
    PRIMARY KEY (source, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL, position TEXT NOT NULL, reason TEXT NOT NULL,
    raw TEXT NOT NULL, at TEXT NOT NULL, flushed INTEGER NOT NULL DEFAULT 0);
"""

_UPSERT_CUSTOMER = """
INSERT INTO customers VALUES (?, ?, ?, ?)
ON CONFLICT (customer_id) DO UPDATE SET
    last_event_us = max(last_event_us, excluded.last_event_us),
    last_day = max(last_day, excluded.last_day),
    last_purchase_us = coalesce(
        max(last_purchase_us, excluded.last_purchase_us), last_purchase_us,
        excluded.last_purchase_us)
"""
_ADD_CUSTOMER_DAY = """
INSERT INTO customer_days VALUES (?, ?, ?)
ON CONFLICT (customer_id, day) DO UPDATE SET spend_micros = spend_micros + excluded.spend_micros
"""
_ADD_ORDER = """
INSERT INTO customer_orders VALUES (?, ?, ?)
ON CONFLICT (customer_id, invoice_no) DO UPDATE SET day = min(day, excluded.day)
"""
_UPSERT_PRODUCT = """
INSERT INTO products VALUES (?, ?, ?)
ON CONFLICT (stock_code) DO UPDATE SET
    last_event_us = max(last_event_us, excluded.last_event_us),
    last_day = max(last_day, excluded.last_day)
"""
_ADD_PRODUCT_DAY = """
INSERT INTO product_days VALUES (?, ?, ?, ?)
ON CONFLICT (stock_code, day) DO UPDATE SET
    units = units + excluded.units, revenue_micros = revenue_micros + excluded.revenue_micros
"""
_MARK_DIRTY = """
INSERT INTO dirty VALUES (?, ?, ?) ON CONFLICT (kind, key) DO UPDATE SET batch = excluded.batch
"""

_CUSTOMER_VALUES = f"""
SELECT c.customer_id, c.last_event_us, c.last_purchase_us,
    (SELECT coalesce(sum(d.spend_micros), 0) FROM customer_days d
     WHERE d.customer_id = c.customer_id
       AND d.day BETWEEN c.last_day - {WINDOW_DAYS - 1} AND c.last_day),
    (SELECT count(*) FROM customer_orders o
     WHERE o.customer_id = c.customer_id
       AND o.day BETWEEN c.last_day - {WINDOW_DAYS - 1} AND c.last_day)
FROM dirty t JOIN customers c ON c.customer_id = t.key
WHERE t.kind = 'customer' AND t.batch BETWEEN ? AND ?
ORDER BY c.customer_id
"""
_PRODUCT_VALUES = """
SELECT p.stock_code, p.last_event_us, coalesce(d.units, 0), coalesce(d.revenue_micros, 0)
FROM dirty t JOIN products p ON p.stock_code = t.key
LEFT JOIN product_days d ON d.stock_code = p.stock_code AND d.day = p.last_day
WHERE t.kind = 'product' AND t.batch BETWEEN ? AND ?
ORDER BY p.stock_code
"""

#: (customer_id, last_event_us, last_purchase_us or None, spend_micros_7d, orders_7d)
CustomerRow = tuple[str, int, int | None, int, int]
#: (stock_code, last_event_us, units on that day, revenue_micros on that day)
ProductRow = tuple[str, int, int, int]


@dataclass(frozen=True)
class Entry:
    """One record of a micro-batch, parsed.

    Attributes:
        item: The transaction, or why it was rejected.
        dead_letter_id: The id that deduplicates the record if it is a dead
            letter (derived from its source position, never its own
            ``event_id``, so a corrected event with the same id still counts).
        raw: The record's text, kept for a dead letter.
        position: Where the record sits in its source, for a dead letter.
    """

    item: Transaction | Rejection
    dead_letter_id: str
    raw: str
    position: str


@dataclass
class BatchOutcome:
    """What one committed micro-batch did.

    Attributes:
        batch: The batch number.
        processed: Events applied.
        duplicates: Records whose id was already processed.
        dead_lettered: Records sent to the dead-letter outbox.
        customers: The new online values of the customers it touched.
        products: The new online values of the products it touched.
    """

    batch: int
    processed: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    customers: list[CustomerRow] = field(default_factory=list)
    products: list[ProductRow] = field(default_factory=list)


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter as the outbox holds it.

    Attributes:
        seq: Its number in this state (increasing).
        source: The source it came from.
        position: Where in the source.
        reason: Why it was rejected.
        raw: The record's text as received.
        at: When it was rejected (UTC, ISO 8601).
    """

    seq: int
    source: str
    position: str
    reason: str
    raw: str
    at: str


@dataclass(frozen=True)
class StreamStatus:
    """Counters of a state, read without taking the consumer's lock.

    Attributes:
        events: Events applied since the state was created.
        batches: Micro-batches committed.
        dead_letters: Dead letters recorded.
        dirty: Entities whose latest values may not be pushed yet.
        latest_event_day: The latest event day applied (UTC), the watermark
            retention counts back from.
    """

    events: int = 0
    batches: int = 0
    dead_letters: int = 0
    dirty: int = 0
    latest_event_day: dt.date | None = None


class StreamState:
    """The consumer's SQLite state. Use :meth:`open`; one writer at a time.

    Args:
        path: The database file.
        retention_days: Days of ids and buckets kept behind the watermark.
    """

    def __init__(self, path: Path, retention_days: int) -> None:
        self.path = path
        self.retention_days = retention_days
        self._conn: sqlite3.Connection | None = None
        self._lock: IO[str] | None = None
        self.state_id = ""

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> StreamState:
        """Take the lock, create or open the database.

        Raises:
            StateError: If another consumer holds the lock.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        handle = lock_path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise StateError(
                problem(
                    "one stream consumer per workspace",
                    f"another consumer holding {str(lock_path)!r} (pid {holder})",
                    "stop that consumer first, or let it finish",
                    subject="stream consumer",
                )
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock = handle
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed batch survives a power loss too, because the
            # source is acknowledged right after the commit.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.executescript(_SCHEMA)
            self._conn = conn
            with self._transaction():
                conn.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('state_id', ?)", (uuid.uuid4().hex,)
                )
            self.state_id = self._meta("state_id") or ""
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Close the database and release the lock."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateError("the stream state is not open; call open() first")
        return self._conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _meta_int(self, key: str) -> int | None:
        value = self._meta(key)
        return None if value is None else int(value)

    @staticmethod
    def _set_meta(conn: sqlite3.Connection, key: str, value: object) -> None:
        conn.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, str(value)),
        )

    # ------------------------------------------------------------------ reads

    def positions(self, source: str) -> dict[str, int]:
        """The committed read positions of a source."""
        rows = self.conn.execute("SELECT key, position FROM positions WHERE source = ?", (source,))
        return {str(k): int(p) for k, p in rows}

    def forget_positions(self, source: str, keys: Iterable[str]) -> None:
        """Drop positions a source no longer needs (its finished files)."""
        with self._transaction() as conn:
            conn.executemany(
                "DELETE FROM positions WHERE source = ? AND key = ?", [(source, k) for k in keys]
            )

    def is_synced(self, target: str) -> bool:
        """Whether every entity's values were pushed to ``target`` (a store and view versions)."""
        return self._meta(f"synced:{target}") is not None

    def mark_all_dirty(self, target: str) -> None:
        """Mark every entity for a push, e.g. into an online store that has never had them."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO dirty SELECT 'customer', customer_id, 0 FROM customers"
            )
            conn.execute(
                "INSERT OR IGNORE INTO dirty SELECT 'product', stock_code, 0 FROM products"
            )
            self._set_meta(conn, f"synced:{target}", utcnow().isoformat())

    def dirty_values(
        self, *, chunk: int = 5000
    ) -> Iterator[tuple[int, list[CustomerRow], list[ProductRow]]]:
        """The values of every dirty entity, in chunks, with the newest batch they belong to."""
        upto = self.conn.execute("SELECT coalesce(max(batch), -1) FROM dirty").fetchone()[0]
        if upto < 0:
            return
        customers = [_customer_row(r) for r in self.conn.execute(_CUSTOMER_VALUES, (0, upto))]
        products = [_product_row(r) for r in self.conn.execute(_PRODUCT_VALUES, (0, upto))]
        for start in range(0, max(len(customers), len(products)), chunk):
            yield upto, customers[start : start + chunk], products[start : start + chunk]

    def clear_dirty(self, upto: int) -> None:
        """Forget the dirty marks of batches up to ``upto`` (their values are pushed)."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM dirty WHERE batch <= ?", (upto,))

    # ------------------------------------------------------------------ the batch

    def apply(
        self,
        entries: Sequence[Entry],
        *,
        source: str,
        positions: Mapping[str, int],
        forget: Sequence[str] = (),
        pushed_upto: int,
        now: str,
    ) -> BatchOutcome:
        """Apply one micro-batch in one transaction (see the module docstring).

        Args:
            entries: The parsed records, in source order.
            source: The source's name.
            positions: ``key -> position`` to commit for the source.
            forget: Position keys the source no longer needs (finished files).
            pushed_upto: The newest batch whose values were pushed; its dirty
                marks (and older ones) are cleared.
            now: The time recorded on dead letters.

        Returns:
            Counts and the new values of the touched entities.
        """
        with self._transaction() as conn:
            batch = (self._meta_int("batches") or 0) + 1
            watermark = self._meta_int("watermark_day")
            outcome = BatchOutcome(batch=batch)
            customers: set[str] = set()
            products: set[str] = set()
            insert_id = "INSERT OR IGNORE INTO processed VALUES (?, ?)"
            for entry in entries:
                item = entry.item
                if (
                    isinstance(item, Transaction)
                    and watermark is not None
                    and item.day < watermark - self.retention_days
                ):
                    item = Rejection(
                        f"too_late: expected an event at most {self.retention_days} days "
                        f"before the latest one applied (day {watermark}); got day {item.day}"
                    )
                if isinstance(item, Rejection):
                    if conn.execute(insert_id, (entry.dead_letter_id, watermark or 0)).rowcount:
                        conn.execute(
                            "INSERT INTO dead_letters (source, position, reason, raw, at) "
                            "VALUES (?, ?, ?, ?, ?)",
                            (source, entry.position, item.reason, entry.raw, now),
                        )
                        outcome.dead_lettered += 1
                    else:
                        outcome.duplicates += 1
                    continue
                if not conn.execute(insert_id, (item.event_id, item.day)).rowcount:
                    outcome.duplicates += 1
                    continue
                outcome.processed += 1
                watermark = item.day if watermark is None else max(watermark, item.day)
                if item.is_product_line:
                    _apply(conn, item)
                    if item.customer_id is not None:
                        customers.add(item.customer_id)
                    products.add(item.stock_code)
            conn.execute("DELETE FROM dirty WHERE batch <= ?", (pushed_upto,))
            conn.executemany(_MARK_DIRTY, [("customer", c, batch) for c in customers])
            conn.executemany(_MARK_DIRTY, [("product", p, batch) for p in products])
            conn.executemany(
                "DELETE FROM positions WHERE source = ? AND key = ?", [(source, k) for k in forget]
            )
            conn.executemany(
                "INSERT INTO positions VALUES (?, ?, ?) ON CONFLICT (source, key) "
                "DO UPDATE SET position = max(position, excluded.position)",
                [(source, key, pos) for key, pos in positions.items()],
            )
            previous = self._meta_int("watermark_day")
            if watermark is not None and watermark != previous:
                self._set_meta(conn, "watermark_day", watermark)
                self._prune(conn, watermark - self.retention_days)
            self._set_meta(conn, "batches", batch)
            events = (self._meta_int("events") or 0) + outcome.processed
            self._set_meta(conn, "events", events)
            outcome.customers = [
                _customer_row(r) for r in conn.execute(_CUSTOMER_VALUES, (batch, batch))
            ]
            outcome.products = [
                _product_row(r) for r in conn.execute(_PRODUCT_VALUES, (batch, batch))
            ]
        return outcome

    def _prune(self, conn: sqlite3.Connection, oldest: int) -> None:
        # Each entity keeps its own last window whatever its age, so its
        # values can be recomputed (a push into a new online store).
        window = WINDOW_DAYS - 1
        conn.execute("DELETE FROM processed WHERE day < ?", (oldest,))
        conn.execute(
            "DELETE FROM customer_days WHERE day < ? AND day < "
            "(SELECT c.last_day - ? FROM customers c "
            "WHERE c.customer_id = customer_days.customer_id)",
            (oldest, window),
        )
        conn.execute(
            "DELETE FROM customer_orders WHERE day < ? AND day < "
            "(SELECT c.last_day - ? FROM customers c "
            "WHERE c.customer_id = customer_orders.customer_id)",
            (oldest, window),
        )
        conn.execute(
            "DELETE FROM product_days WHERE day < ? AND day < "
            "(SELECT p.last_day FROM products p WHERE p.stock_code = product_days.stock_code)",
            (oldest,),
        )

    # ------------------------------------------------------------------ dead letters

    def unflushed_dead_letters(self) -> list[DeadLetter]:
        """Dead letters not yet written to the source's dead-letter list, oldest first."""
        rows = self.conn.execute(
            "SELECT seq, source, position, reason, raw, at FROM dead_letters "
            "WHERE flushed = 0 ORDER BY seq"
        )
        return [DeadLetter(int(r[0]), *(str(v) for v in r[1:])) for r in rows]

    def mark_flushed(self, upto: int) -> None:
        """Record that dead letters up to ``upto`` are in the dead-letter list."""
        with self._transaction() as conn:
            conn.execute("UPDATE dead_letters SET flushed = 1 WHERE seq <= ?", (upto,))

    # ------------------------------------------------------------------ status

    def summary(self) -> StreamStatus:
        """The state's counters."""
        return _summary(self.conn)


def read_summary(path: Path) -> StreamStatus:
    """The counters of the state at ``path``, read-only and without the lock (zeros if none)."""
    if not path.is_file():
        return StreamStatus()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        return _summary(conn)
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return StreamStatus()
        raise
    finally:
        conn.close()


def _summary(conn: sqlite3.Connection) -> StreamStatus:
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())

    def number(key: str) -> int:
        return int(meta.get(key, 0))

    return StreamStatus(
        events=number("events"),
        batches=number("batches"),
        dead_letters=int(conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]),
        dirty=int(conn.execute("SELECT count(*) FROM dirty").fetchone()[0]),
        latest_event_day=(
            _EPOCH_DAY + dt.timedelta(days=int(meta["watermark_day"]))
            if "watermark_day" in meta
            else None
        ),
    )


def _apply(conn: sqlite3.Connection, item: Transaction) -> None:
    day = item.day
    if item.customer_id is not None:
        purchase = item.ts_us if item.is_purchase_line else None
        conn.execute(_UPSERT_CUSTOMER, (item.customer_id, item.ts_us, day, purchase))
        conn.execute(_ADD_CUSTOMER_DAY, (item.customer_id, day, item.amount_micros))
        if item.is_purchase_line:
            conn.execute(_ADD_ORDER, (item.customer_id, item.invoice_no, day))
    conn.execute(_UPSERT_PRODUCT, (item.stock_code, item.ts_us, day))
    conn.execute(_ADD_PRODUCT_DAY, (item.stock_code, day, item.quantity, item.amount_micros))


def _customer_row(row: Any) -> CustomerRow:
    return (
        str(row[0]),
        int(row[1]),
        None if row[2] is None else int(row[2]),
        int(row[3]),
        int(row[4]),
    )


def _product_row(row: Any) -> ProductRow:
    return (str(row[0]), int(row[1]), int(row[2]), int(row[3]))
