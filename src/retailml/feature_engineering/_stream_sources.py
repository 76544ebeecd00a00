"""Where transaction events come from: a directory of JSON-lines files, or a Redis stream.

Both sources hand the consumer :class:`Record` batches, take acknowledgements
after the consumer's commit and push, and keep a dead-letter list. The
consumer reads and acknowledges strictly in turn (read, commit, push, ack,
read, ...), which both sources rely on.
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from retailml.core.errors import ConfigError, DataValidationError, problem
from retailml.core.io import atomic_path
from retailml.feature_engineering._stream_state import DeadLetter

if TYPE_CHECKING:
    import redis

#: The Redis stream, consumer group and field retailml uses unless told otherwise.
DEFAULT_STREAM = "retailml:transactions"
DEFAULT_GROUP = "retailml-features"
EVENT_FIELD = "event"

INCOMING = "incoming"
PROCESSED = "processed"
DEAD_LETTER_FILE = "dead_letter.jsonl"


@dataclass(frozen=True)
class Record:
    """One event as a source delivered it.

    Attributes:
        payload: The event's bytes.
        position: Where it sits in the source (``file.jsonl:1234``, a stream
            entry id); with the source's name it derives an id for events
            without ``event_id``.
        arrived_at: When it reached the source (Unix seconds): the file's
            modification time, or the stream entry id's time.
        checkpoint: ``(key, position)`` to commit with it (directory source:
            the file and the byte offset after the line).
        ack_id: What acknowledges it (Redis: the entry id).
        rejection: Why the source itself could not read it, if it could not.
    """

    payload: bytes
    position: str
    arrived_at: float
    checkpoint: tuple[str, int] | None = None
    ack_id: str | None = None
    rejection: str | None = None


class EventSource(abc.ABC):
    """A source of transaction events and the home of its dead-letter list."""

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """A stable name: it keys committed positions and derived event ids."""

    @abc.abstractmethod
    def open(self, positions: Mapping[str, int]) -> list[str]:
        """Start reading after the committed ``positions``.

        Returns:
            Position keys the consumer may forget (finished files).
        """

    @abc.abstractmethod
    def read(self, limit: int, wait_s: float) -> list[Record]:
        """Up to ``limit`` records, as soon as any arrive; ``[]`` after ``wait_s``."""

    @abc.abstractmethod
    def ack(self, records: Sequence[Record]) -> list[str]:
        """Acknowledge records whose effect is committed and pushed.

        Returns:
            Position keys the consumer may forget.
        """

    @abc.abstractmethod
    def publish(self, payloads: Sequence[bytes]) -> int:
        """Append events (used by :func:`publish_events`); returns how many."""

    @abc.abstractmethod
    def write_dead_letters(self, letters: Sequence[DeadLetter], state_id: str) -> None:
        """Append dead letters to the list, marked with the state that wrote them."""

    @abc.abstractmethod
    def last_dead_letter_seq(self, state_id: str) -> int:
        """The ``seq`` of the last dead letter the state wrote (0 if the last is not its)."""

    @abc.abstractmethod
    def dead_letters(self) -> list[DeadLetter]:
        """The dead-letter list, oldest first."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def _letter_json(letter: DeadLetter, state_id: str) -> dict[str, Any]:
    return {
        "seq": letter.seq,
        "state_id": state_id,
        "at": letter.at,
        "source": letter.source,
        "position": letter.position,
        "reason": letter.reason,
        "raw": letter.raw,
    }


def _letter(data: Mapping[str, Any]) -> DeadLetter:
    return DeadLetter(
        seq=int(data.get("seq") or 0),
        source=str(data.get("source") or ""),
        position=str(data.get("position") or ""),
        reason=str(data.get("reason") or ""),
        raw=str(data.get("raw") or ""),
        at=str(data.get("at") or ""),
    )


# --------------------------------------------------------------------------- directory


class DirectorySource(EventSource):
    """Events in JSON-lines files dropped into ``<path>/incoming``.

    Producers write each file elsewhere and rename it into ``incoming/``
    (:func:`publish_events` does), under a unique name ending ``.jsonl``;
    names starting with ``.`` are ignored. Files are read in name order, one
    event per line (blank lines are skipped). The consumer commits the byte
    offset reached in each file with its state, so a restart resumes in the
    middle of a file; a file read to its end and committed is moved to
    ``processed/`` (a rename). Dead letters are appended to
    ``<path>/dead_letter.jsonl``, one JSON object per line.

    Args:
        path: The stream directory; :meth:`from_settings` uses
            ``<workspace>/stream``.
    """

    #: How often an idle read looks for new files.
    POLL_S = 0.01

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._positions: dict[str, int] = {}
        self._finished: list[str] = []

    @classmethod
    def from_settings(cls, settings: Any = None) -> DirectorySource:
        """The workspace's stream directory, ``<home>/stream``."""
        from retailml.core.workspace import Workspace

        return cls(Workspace.from_settings(settings).root / "stream")

    @property
    def incoming(self) -> Path:
        """Where producers drop files."""
        return self.path / INCOMING

    @property
    def processed(self) -> Path:
        """Where fully processed files go."""
        return self.path / PROCESSED

    @property
    def dead_letter_file(self) -> Path:
        """The dead-letter list."""
        return self.path / DEAD_LETTER_FILE

    @property
    def name(self) -> str:
        return f"directory:{self.path.resolve()}"

    def __repr__(self) -> str:
        return f"DirectorySource({str(self.path)!r})"

    def open(self, positions: Mapping[str, int]) -> list[str]:
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.processed.mkdir(parents=True, exist_ok=True)
        self._positions = dict(positions)
        self._finished = []
        live = set(self._listing())
        forget = [key for key in positions if key not in live]
        for name in sorted(live):
            size = _size(self.incoming / name)
            if size is not None and positions.get(name, 0) >= size:
                self._finished.append(name)  # committed to its end before a crash
        return forget + self._move_finished()

    def _listing(self) -> list[str]:
        try:
            entries = list(os.scandir(self.incoming))
        except FileNotFoundError:
            return []
        return sorted(
            e.name
            for e in entries
            if e.name.endswith(".jsonl") and not e.name.startswith(".") and e.is_file()
        )

    def read(self, limit: int, wait_s: float) -> list[Record]:
        deadline = time.monotonic() + wait_s
        while True:
            records = self._read_now(limit)
            if records:
                return records
            # Files with nothing but blank lines: nothing to commit for them.
            self._move_finished()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            time.sleep(min(self.POLL_S, remaining))

    def _read_now(self, limit: int) -> list[Record]:
        records: list[Record] = []
        for name in self._listing():
            if len(records) >= limit:
                break
            if name in self._finished:
                continue
            path = self.incoming / name
            try:
                stat = path.stat()
                handle = path.open("rb")
            except FileNotFoundError:
                continue
            offset = self._positions.get(name, 0)
            with handle:
                handle.seek(offset)
                while len(records) < limit:
                    line = handle.readline()
                    if not line:
                        break
                    start, offset = offset, offset + len(line)
                    payload = line.rstrip(b"\r\n")
                    if payload.strip():
                        records.append(
                            Record(
                                payload=payload,
                                position=f"{name}:{start}",
                                arrived_at=stat.st_mtime,
                                checkpoint=(name, offset),
                            )
                        )
            self._positions[name] = offset
            if offset >= stat.st_size:
                self._finished.append(name)
        return records

    def ack(self, records: Sequence[Record]) -> list[str]:
        return self._move_finished()

    def _move_finished(self) -> list[str]:
        moved = []
        for name in self._finished:
            with contextlib.suppress(FileNotFoundError):
                (self.incoming / name).replace(self.processed / name)
            self._positions.pop(name, None)
            moved.append(name)
        self._finished = []
        return moved

    def publish(self, payloads: Sequence[bytes]) -> int:
        for payload in payloads:
            if b"\n" in payload or b"\r" in payload:
                raise DataValidationError(
                    problem(
                        "one event per line (no line breaks inside an event)",
                        repr(payload[:80]),
                        "publish the event as compact JSON",
                        subject="publish_events",
                    )
                )
        if not payloads:
            return 0
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        with atomic_path(self.incoming / name) as tmp:
            tmp.write_bytes(b"".join(p + b"\n" for p in payloads))
        return len(payloads)

    def write_dead_letters(self, letters: Sequence[DeadLetter], state_id: str) -> None:
        if not letters:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        with self.dead_letter_file.open("ab+") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size:
                handle.seek(size - 1)
                if handle.read(1) != b"\n":  # a crash cut the last line short
                    handle.write(b"\n")
            for letter in letters:
                handle.write(json.dumps(_letter_json(letter, state_id)).encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())

    def last_dead_letter_seq(self, state_id: str) -> int:
        for line in _lines_backwards(self.dead_letter_file):
            try:
                data = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash
            if isinstance(data, dict) and data.get("state_id") == state_id:
                return int(data.get("seq") or 0)
            return 0
        return 0

    def dead_letters(self) -> list[DeadLetter]:
        try:
            lines = self.dead_letter_file.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        letters = []
        for line in lines:
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if isinstance(data, dict):
                    letters.append(_letter(data))
        return letters


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _lines_backwards(path: Path, chunk: int = 1 << 16) -> list[bytes]:
    """The non-blank lines at the end of a file, last first (at least one if there is one).

    Reads backwards in chunks; the first line of a window that does not start
    at the beginning of the file may be cut, so it is left out.
    """
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return []
    with handle:
        position = handle.seek(0, os.SEEK_END)
        data = b""
        while position > 0:
            step = min(chunk, position)
            position -= step
            handle.seek(position)
            data = handle.read(step) + data
            lines = data.split(b"\n")
            complete = lines if position == 0 else lines[1:]
            found = [line for line in complete if line.strip()]
            if found:
                return found[::-1]
        return []


# --------------------------------------------------------------------------- Redis


class RedisStreamSource(EventSource):
    """Events on a Redis stream, read by a consumer group.

    Each entry holds one event as JSON in its ``event`` field (``XADD
    retailml:transactions * event '{...}'``). The group is created at the
    start of the stream (``0``) if it does not exist, so events added before
    the first consumer started are read too. Entries are acknowledged
    (``XACK``) after the online write. On open, the consumer takes over every
    entry another consumer of the group read and did not acknowledge
    (``XAUTOCLAIM`` from ``0-0``, any idle time: a group is consumed by one
    retailml consumer at a time, see :mod:`.stream`) and reads its own
    pending entries (``XREADGROUP`` from ``0``) before new ones (``>``);
    consumers of the group left with nothing pending are deleted. Dead
    letters are added to the stream ``<stream>:dead``. Trimming the stream
    (``MAXLEN``) is left to producers.

    Args:
        url: ``redis://host:port/db`` (``rediss://`` for TLS).
        stream: The stream's key.
        group: The consumer group.
        consumer: This consumer's name in the group; default ``<hostname>-<pid>``.
        dead_letter_stream: Where dead letters go; default ``<stream>:dead``.
    """

    def __init__(
        self,
        url: str,
        stream: str = DEFAULT_STREAM,
        group: str = DEFAULT_GROUP,
        consumer: str | None = None,
        *,
        dead_letter_stream: str | None = None,
    ) -> None:
        if not url.startswith(("redis://", "rediss://")):
            raise ConfigError(
                problem(
                    "a Redis URL like redis://127.0.0.1:6379/0",
                    repr(url),
                    "pass redis://host:port/db (or set RETAILML_REDIS_URL)",
                    subject="RedisStreamSource",
                )
            )
        self.url = url
        self.stream = stream
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.dead_letter_stream = dead_letter_stream or f"{stream}:dead"
        self._redis: redis.Redis | None = None
        self._pending_from: str | None = None

    @classmethod
    def from_settings(cls, settings: Any = None, **kwargs: Any) -> RedisStreamSource:
        """A source on the Redis of the ``redis_url`` setting (``RETAILML_REDIS_URL``)."""
        from retailml.core.settings import get_settings

        return cls((settings or get_settings()).redis_url, **kwargs)

    @property
    def name(self) -> str:
        parts = urlsplit(self.url)
        db = parts.path.strip("/") or "0"
        return f"redis://{parts.hostname}:{parts.port or 6379}/{db}/{self.stream}#{self.group}"

    def __repr__(self) -> str:
        return (
            f"RedisStreamSource(stream={self.stream!r}, group={self.group!r}, "
            f"consumer={self.consumer!r})"
        )

    @property
    def client(self) -> redis.Redis:
        """The Redis client (connected on first use)."""
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(
                self.url, socket_connect_timeout=5, health_check_interval=30
            )
        return self._redis

    def open(self, positions: Mapping[str, int]) -> list[str]:
        import redis

        client = self.client
        try:
            client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        start: Any = "0-0"
        while True:
            reply: Any = client.xautoclaim(
                self.stream, self.group, self.consumer, 0, start_id=start, count=1000
            )
            start = reply[0]
            if start in (b"0-0", "0-0"):
                break
        consumers: Any = client.xinfo_consumers(self.stream, self.group)
        for info in consumers:
            name = _text(info["name"])
            if name != self.consumer and int(info["pending"]) == 0:
                client.xgroup_delconsumer(self.stream, self.group, name)
        self._pending_from = "0"
        return list(positions)

    def read(self, limit: int, wait_s: float) -> list[Record]:
        client = self.client
        while self._pending_from is not None:
            pending: Any = client.xreadgroup(
                self.group, self.consumer, {self.stream: self._pending_from}, count=limit
            )
            entries = pending[0][1] if pending else []
            if not entries:
                self._pending_from = None
                break
            self._pending_from = _text(entries[-1][0])
            records = self._records(entries)
            if records:
                return records
        block = None if wait_s <= 0 else max(1, round(wait_s * 1000))
        reply: Any = client.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=limit, block=block
        )
        return self._records(reply[0][1] if reply else [])

    def _records(self, entries: Sequence[tuple[Any, Mapping[Any, Any] | None]]) -> list[Record]:
        records = []
        gone = []
        for raw_id, fields in entries:
            entry_id = _text(raw_id)
            if not fields:  # deleted from the stream while pending: nothing to read
                gone.append(entry_id)
                continue
            payload = fields.get(EVENT_FIELD.encode(), fields.get(EVENT_FIELD))
            rejection = None
            if payload is None:
                payload = json.dumps({_text(k): _text(v) for k, v in fields.items()}).encode()
                rejection = (
                    f"missing_event_field: expected the event as JSON in the entry's "
                    f"{EVENT_FIELD!r} field; got fields {sorted(_text(k) for k in fields)}"
                )
            records.append(
                Record(
                    payload=payload if isinstance(payload, bytes) else str(payload).encode(),
                    position=entry_id,
                    arrived_at=int(entry_id.split("-", 1)[0]) / 1000,
                    ack_id=entry_id,
                    rejection=rejection,
                )
            )
        if gone:
            self.client.xack(self.stream, self.group, *gone)
        return records

    def ack(self, records: Sequence[Record]) -> list[str]:
        ids = [r.ack_id for r in records if r.ack_id is not None]
        for start in range(0, len(ids), 1000):
            self.client.xack(self.stream, self.group, *ids[start : start + 1000])
        return []

    def publish(self, payloads: Sequence[bytes]) -> int:
        with self.client.pipeline(transaction=False) as pipe:
            for payload in payloads:
                pipe.xadd(self.stream, {EVENT_FIELD: payload})
            pipe.execute()
        return len(payloads)

    def write_dead_letters(self, letters: Sequence[DeadLetter], state_id: str) -> None:
        if not letters:
            return
        with self.client.pipeline(transaction=True) as pipe:
            for letter in letters:
                fields = {k: str(v) for k, v in _letter_json(letter, state_id).items()}
                pipe.xadd(self.dead_letter_stream, fields)  # type: ignore[arg-type]
            pipe.execute()

    def last_dead_letter_seq(self, state_id: str) -> int:
        last: Any = self.client.xrevrange(self.dead_letter_stream, count=1)
        if not last:
            return 0
        fields = {_text(k): _text(v) for k, v in last[0][1].items()}
        return int(fields.get("seq") or 0) if fields.get("state_id") == state_id else 0

    def dead_letters(self) -> list[DeadLetter]:
        entries: Any = self.client.xrange(self.dead_letter_stream)
        return [_letter({_text(k): _text(v) for k, v in fields.items()}) for _, fields in entries]

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
            self._redis = None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
