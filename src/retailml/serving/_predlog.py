"""The prediction log writer: a bounded in-memory buffer flushed in batches by a thread.

A request only appends a row to a deque (no lock, no thread wake-up: a few
hundred nanoseconds); a daemon thread wakes every ``interval_s`` seconds,
takes up to ``batch_size`` rows at a time and inserts each batch in one
statement. When the database is slow and the buffer holds ``max_queue``
rows, new rows are dropped and counted (``retailml_prediction_log_dropped``)
rather than slowing predictions down. :meth:`PredictionLogWriter.flush`
waits until everything buffered so far is written (tests, rollout
evaluation, shutdown).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import Table

from retailml.core.db import PlatformDB
from retailml.core.db_deploy import PredictionLogEntry

logger = logging.getLogger("retailml.serving.prediction_log")

_TABLE = cast(Table, PredictionLogEntry.__table__)


class PredictionLogWriter:
    """Batches prediction-log rows into the platform database off the request path.

    Args:
        db: The platform database.
        max_queue: Rows held before new ones are dropped.
        batch_size: Most rows per insert (small batches hold the GIL briefly, so
            the event loop's latency does not jump while a batch is written).
        interval_s: Longest a row waits before its batch is written.
        on_drop: Called with the number of dropped rows.
        on_write: Called with the number of written rows.
    """

    def __init__(
        self,
        db: PlatformDB,
        *,
        max_queue: int = 10_000,
        batch_size: int = 100,
        interval_s: float = 0.25,
        on_drop: Callable[[int], None] | None = None,
        on_write: Callable[[int], None] | None = None,
    ) -> None:
        self.db = db
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.interval_s = interval_s
        self._rows: collections.deque[dict[str, Any]] = collections.deque()
        self._on_drop = on_drop
        self._on_write = on_write
        self._wake = threading.Event()
        self._stop = False
        self._write_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.written = 0
        self.failed = 0

    def start(self) -> None:
        """Start the writer thread (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop = False
            self._thread = threading.Thread(
                target=self._run, name="retailml-prediction-log", daemon=True
            )
            self._thread.start()

    def put(self, row: dict[str, Any]) -> bool:
        """Buffer one row; False (and counted) when the buffer is full."""
        if len(self._rows) >= self.max_queue:
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop(1)
            return False
        self._rows.append(row)  # deque.append is atomic
        return True

    def flush(self, timeout_s: float = 10.0) -> None:
        """Write every row buffered before the call (in the calling thread)."""
        self._drain()

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is buffered and stop the thread."""
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self._drain()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            self._drain()

    def _drain(self) -> None:
        """Write everything buffered now, in batches (one writer at a time keeps order)."""
        with self._write_lock:
            while self._rows:
                batch: list[dict[str, Any]] = []
                while self._rows and len(batch) < self.batch_size:
                    batch.append(self._rows.popleft())
                self._write(batch)
                if self._rows:
                    time.sleep(0.001)  # let the event loop take the GIL between batches

    def _write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        try:
            with self.db.session() as session:
                session.execute(_TABLE.insert(), rows)
        except Exception:
            self.failed += len(rows)
            logger.exception("could not write %d prediction-log rows; dropped them", len(rows))
            return
        self.written += len(rows)
        if self._on_write is not None:
            self._on_write(len(rows))
