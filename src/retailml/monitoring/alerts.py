"""Alerts: one call, every configured channel, de-duplicated, never blocking the caller.

::

    alerts = AlertManager()                      # channels from RETAILML_ALERT_CHANNELS
    alert = alerts.send("performance_degradation", "critical", "MAPE rose to 23%",
                        model_name="sales_forecast", model_version="1.2.0",
                        details={"mape": 0.23})
    alerts.list_alerts(state="open")
    alerts.acknowledge(alert.id, by="on-call")
    alerts.resolve(alert.id)

Channels (``RETAILML_ALERT_CHANNELS``, comma-separated):

============  =================================================================
``log``       always on: the ``retailml.monitoring.alerts`` logger, at the
              alert's severity (info, warning, critical -> INFO, WARNING, ERROR)
``database``  the platform table ``alerts``: state, count, first and last seen;
              needed by :meth:`AlertManager.acknowledge`, ``resolve`` and
              ``list_alerts``
``webhook``   ``POST`` of Slack-compatible JSON ``{"text": ...}`` to
              ``RETAILML_ALERT_WEBHOOK_URL``
``email``     an e-mail through ``RETAILML_SMTP_HOST:RETAILML_SMTP_PORT`` from
              ``RETAILML_SMTP_FROM`` to ``RETAILML_ALERT_EMAIL_TO``
============  =================================================================

Severities are ``info``, ``warning`` and ``critical``; the usual synonyms are
accepted and stored as one of those three: ``low`` -> ``info``, ``medium`` ->
``warning``, ``high`` and ``error`` -> ``critical`` (the guide's
``severity="high"`` is a critical alert).

De-duplication: an alert's fingerprint is its type, model, version and
severity. While an alert with that fingerprint is open, a repeat raises its
``count`` and ``last_seen`` (and replaces ``message`` and ``details`` with the
newest) instead of adding a row; the channels are notified again only when
``RETAILML_ALERT_COOLDOWN_S`` (default 300 s) has passed since they were last
notified, so a lasting problem reminds every cool-down instead of flooding.
An acknowledged alert is never re-notified (somebody is on it); a resolved one
is closed, and the next repeat opens a new alert. Without the ``database``
channel the same rule runs in memory, per process.

Delivery: the log and the database are written in the caller's thread (both
are local and fast); the webhook and e-mail run in a background thread per
channel, so :meth:`AlertManager.send` returns at once even when the webhook
hangs. When the database cannot be written, the alert is still logged and
sent, de-duplicated in memory, and returned with ``id`` None: an outage of
the platform database must not silence the alerts about it. A failed delivery
(an exception, a non-2xx answer, a timeout of ``timeout_s``) is retried with
exponential back-off, ``backoff_s * 2**k`` after the k-th failure, up to
``attempts`` tries; then it is logged as lost. At most ``max_pending``
deliveries wait per channel; beyond that new ones are dropped and counted
(:attr:`AlertManager.delivery_stats`). A channel's thread exits after 30 s
without work and the next alert starts a new one, so idle managers hold no
threads. :meth:`flush` waits for the queues to drain; pending deliveries are
also given a few seconds at interpreter exit.
"""

from __future__ import annotations

import atexit
import hashlib
import heapq
import itertools
import json
import logging
import math
import smtplib
import threading
import time
import urllib.request
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from retailml.core.db import PlatformDB, new_id, utcnow
from retailml.core.db_monitoring import AlertRecord
from retailml.core.errors import ConfigError, NotFoundError, StateError, problem
from retailml.core.settings import Settings, get_settings

__all__ = [
    "ALERT_CHANNELS",
    "ALERT_STATES",
    "SEVERITIES",
    "Alert",
    "AlertManager",
    "alert_fingerprint",
    "normalise_severity",
]

logger = logging.getLogger(__name__)

#: The channels ``RETAILML_ALERT_CHANNELS`` may name.
ALERT_CHANNELS: tuple[str, ...] = ("log", "database", "webhook", "email")
#: The stored severities, least severe first.
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
#: The life cycle of an alert: open -> acknowledged -> resolved (or open -> resolved).
ALERT_STATES: tuple[str, ...] = ("open", "acknowledged", "resolved")
_SEVERITY_ALIASES = {
    "low": "info",
    "medium": "warning",
    "warn": "warning",
    "high": "critical",
    "error": "critical",
}
_LOG_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}
#: Seconds pending deliveries get at interpreter exit.
_EXIT_FLUSH_S = 5.0
#: Seconds a delivery thread waits for work before it exits (a new alert starts another).
_IDLE_EXIT_S = 30.0


def normalise_severity(severity: str) -> str:
    """``info``, ``warning`` or ``critical`` for a severity or one of its synonyms.

    Raises:
        ConfigError: For an unknown severity.
    """
    key = str(severity).strip().lower()
    key = _SEVERITY_ALIASES.get(key, key)
    if key not in SEVERITIES:
        raise ConfigError(
            problem(
                f"one of {', '.join(SEVERITIES)} (or low, medium, high, error)",
                repr(severity),
                "pass e.g. severity='warning'",
                subject="alert severity",
            )
        )
    return key


def alert_fingerprint(
    alert_type: str, model_name: str | None, model_version: str | None, severity: str
) -> str:
    """The de-duplication key of an alert: SHA-256 of type, model, version and severity."""
    parts = (alert_type, model_name or "", model_version or "", severity)
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def _aware(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; the platform stores UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Alert:
    """An alert as stored (or, without the database channel, as held in memory).

    Attributes:
        id: The ``alerts`` row id; None without the database channel.
        notified: Whether this :meth:`AlertManager.send` notified the channels
            (False when it was de-duplicated into an open alert).
    """

    id: str | None
    alert_type: str
    severity: str
    model_name: str | None
    model_version: str | None
    message: str
    details: dict[str, Any]
    state: str
    fingerprint: str
    count: int
    first_seen: datetime
    last_seen: datetime
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    notified: bool = False

    @classmethod
    def from_record(cls, row: AlertRecord, *, notified: bool = False) -> Alert:
        first_seen, last_seen = _aware(row.first_seen), _aware(row.last_seen)
        assert first_seen is not None and last_seen is not None
        return cls(
            id=row.id,
            alert_type=row.alert_type,
            severity=row.severity,
            model_name=row.model_name,
            model_version=row.model_version,
            message=row.message,
            details=dict(row.details or {}),
            state=row.state,
            fingerprint=row.fingerprint,
            count=row.count,
            first_seen=first_seen,
            last_seen=last_seen,
            acknowledged_by=row.acknowledged_by,
            acknowledged_at=_aware(row.acknowledged_at),
            resolved_at=_aware(row.resolved_at),
            notified=notified,
        )

    @property
    def subject(self) -> str:
        """One line: severity, type and model, e.g. ``[CRITICAL] drift: sales 1.2.0``."""
        model = " ".join(part for part in (self.model_name, self.model_version) if part)
        return f"[{self.severity.upper()}] {self.alert_type}" + (f": {model}" if model else "")

    @property
    def text(self) -> str:
        """The subject and the message, as the webhook and the log show them."""
        return f"{self.subject} - {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields (datetimes as ISO 8601)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = value.isoformat() if isinstance(value, datetime) else value
        return out


@dataclass(order=True)
class _Job:
    due: float
    seq: int
    attempt: int = field(compare=False)
    alert: Alert = field(compare=False)


class _Channel:
    """One background delivery thread with retries and exponential back-off."""

    _seq = itertools.count()

    def __init__(
        self,
        name: str,
        deliver: Callable[[Alert], None],
        *,
        attempts: int,
        backoff_s: float,
        max_pending: int,
    ) -> None:
        self.name = name
        self._deliver = deliver
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._max_pending = max_pending
        self._heap: list[_Job] = []
        self._busy = 0
        self._closed = False
        self._cond = threading.Condition()
        self.stats = {"delivered": 0, "retried": 0, "failed": 0, "dropped": 0}
        # The thread runs only while there is work, so idle managers hold no threads
        # and can be garbage-collected.
        self._thread: threading.Thread | None = None

    def submit(self, alert: Alert) -> None:
        with self._cond:
            if self._closed or len(self._heap) + self._busy >= self._max_pending:
                self.stats["dropped"] += 1
                logger.error("alert channel %s: queue full, dropped %s", self.name, alert.subject)
                return
            heapq.heappush(self._heap, _Job(time.monotonic(), next(self._seq), 1, alert))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"retailml-alerts-{self.name}", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                idle_from = time.monotonic()
                while True:
                    if not self._heap:
                        if not self._closed:
                            self._cond.wait(_IDLE_EXIT_S)
                        if self._heap:
                            continue
                        if self._closed or time.monotonic() - idle_from >= _IDLE_EXIT_S:
                            self._thread = None
                            return
                        continue
                    wait = self._heap[0].due - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                job = heapq.heappop(self._heap)
                self._busy += 1
            try:
                self._deliver(job.alert)
            except Exception as exc:
                self._failed(job, exc)
            else:
                with self._cond:
                    self.stats["delivered"] += 1
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def _failed(self, job: _Job, exc: Exception) -> None:
        with self._cond:
            if job.attempt < self._attempts and not self._closed:
                delay = self._backoff_s * 2 ** (job.attempt - 1)
                self.stats["retried"] += 1
                heapq.heappush(
                    self._heap,
                    _Job(time.monotonic() + delay, next(self._seq), job.attempt + 1, job.alert),
                )
                logger.warning(
                    "alert channel %s: attempt %d of %s failed (%r); retrying in %.3g s",
                    self.name,
                    job.attempt,
                    job.alert.subject,
                    exc,
                    delay,
                )
            else:
                self.stats["failed"] += 1
                logger.error(
                    "alert channel %s: %s lost after %d attempts (%r)",
                    self.name,
                    job.alert.subject,
                    job.attempt,
                    exc,
                )

    def flush(self, timeout: float | None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._heap and not self._busy, timeout)

    def close(self, timeout: float | None) -> None:
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)


_MANAGERS: weakref.WeakSet[AlertManager] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:  # pragma: no cover - runs at interpreter exit
    for manager in list(_MANAGERS):
        manager.flush(timeout=_EXIT_FLUSH_S)


class AlertManager:
    """Sends alerts to the configured channels and keeps their state.

    Args:
        settings: Channels, webhook URL, SMTP server, recipients and cool-down
            (default: the process settings).
        db: The platform database of the ``database`` channel (default: the
            one the settings name, migrated).
        channels: Override ``settings.alert_channels`` (``log`` is always added).
        timeout_s: Seconds a webhook POST or an SMTP conversation may take.
        attempts: Tries per delivery before it is given up (at least 1).
        backoff_s: Wait after the first failure; doubled after each further one.
        max_pending: Deliveries that may wait per channel before new ones are dropped.

    Raises:
        ConfigError: For an unknown channel, or a webhook / e-mail channel
            without its URL / server and recipients.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        db: PlatformDB | None = None,
        channels: str | list[str] | tuple[str, ...] | None = None,
        timeout_s: float = 5.0,
        attempts: int = 5,
        backoff_s: float = 1.0,
        max_pending: int = 1000,
    ) -> None:
        self.settings = settings or get_settings()
        self.channels = _parse_channels(
            self.settings.alert_channels if channels is None else channels
        )
        self.cooldown = timedelta(seconds=self.settings.alert_cooldown_s)
        self.timeout_s = timeout_s
        self._db = db
        self._memory: dict[str, Alert] = {}
        self._memory_notified: dict[str, datetime] = {}
        self._lock = threading.Lock()
        self._background: dict[str, _Channel] = {}
        retry: dict[str, Any] = {
            "attempts": max(1, attempts),
            "backoff_s": backoff_s,
            "max_pending": max_pending,
        }
        if "webhook" in self.channels:
            url = self.settings.alert_webhook_url
            if not url or not url.startswith(("http://", "https://")):
                raise ConfigError(
                    problem(
                        "an http:// or https:// RETAILML_ALERT_WEBHOOK_URL for the webhook channel",
                        repr(url),
                        "set RETAILML_ALERT_WEBHOOK_URL or drop 'webhook' from "
                        "RETAILML_ALERT_CHANNELS",
                        subject="alert channels",
                    )
                )
            self._background["webhook"] = _Channel("webhook", self._post_webhook, **retry)
        if "email" in self.channels:
            if not self.settings.smtp_host or not _recipients(self.settings):
                raise ConfigError(
                    problem(
                        "RETAILML_SMTP_HOST and RETAILML_ALERT_EMAIL_TO for the email channel",
                        f"smtp_host={self.settings.smtp_host!r}, "
                        f"alert_email_to={self.settings.alert_email_to!r}",
                        "set both, or drop 'email' from RETAILML_ALERT_CHANNELS",
                        subject="alert channels",
                    )
                )
            self._background["email"] = _Channel("email", self._send_email, **retry)
        _MANAGERS.add(self)

    # --- sending -------------------------------------------------------------------

    def send(
        self,
        alert_type: str,
        severity: str,
        message: str,
        *,
        model_name: str | None = None,
        model_version: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> Alert:
        """Record an alert and notify the channels, unless it repeats an open one.

        Args:
            alert_type: What happened, e.g. ``"performance_degradation"``.
            severity: ``info``, ``warning`` or ``critical`` (or a synonym).
            message: Human-readable text.
            model_name: The model concerned, if any.
            model_version: Its version, if any.
            details: JSON-safe data to keep with the alert (metric values, thresholds).

        Returns:
            The alert as stored; ``notified`` says whether the channels were told.
        """
        level = normalise_severity(severity)
        if not alert_type or not isinstance(alert_type, str):
            raise ConfigError(
                problem("a non-empty alert_type", repr(alert_type), "name what happened")
            )
        payload = _json_safe(details or {})
        key = alert_fingerprint(alert_type, model_name, model_version, level)
        fields = {
            "alert_type": alert_type,
            "severity": level,
            "model_name": model_name,
            "model_version": model_version,
            "message": str(message),
            "details": payload,
        }
        alert = None
        if "database" in self.channels:
            try:
                alert = self._record(key, fields)
            except (SQLAlchemyError, ConfigError) as exc:
                # An alert must not be lost because the database is: notify from memory.
                logger.error("alerts table unavailable (%r); de-duplicating in memory", exc)
        if alert is None:
            alert = self._remember(key, utcnow(), fields)
        if alert.notified:
            logger.log(_LOG_LEVELS[level], "alert %s", alert.text)
            for channel in self._background.values():
                channel.submit(alert)
        else:
            logger.debug("alert repeated (%d times, not re-notified): %s", alert.count, alert.text)
        return alert

    def _record(self, fingerprint: str, fields: dict[str, Any]) -> Alert:
        db = self.db
        for attempt in range(3):
            try:
                with db.session() as session:
                    now = utcnow()
                    row = session.scalars(
                        select(AlertRecord)
                        .where(AlertRecord.open_fingerprint == fingerprint)
                        .with_for_update()
                    ).first()
                    if row is None:
                        row = AlertRecord(
                            id=new_id(),
                            state="open",
                            fingerprint=fingerprint,
                            open_fingerprint=fingerprint,
                            count=1,
                            first_seen=now,
                            last_seen=now,
                            last_notified=now,
                            **fields,
                        )
                        session.add(row)
                        session.flush()
                        return Alert.from_record(row, notified=True)
                    row.count += 1
                    row.last_seen = now
                    row.message = fields["message"]
                    row.details = fields["details"]
                    notify = row.state == "open" and self._cooled_down(
                        _aware(row.last_notified), now
                    )
                    if notify:
                        row.last_notified = now
                    session.flush()
                    return Alert.from_record(row, notified=notify)
            except IntegrityError:
                # Another process opened the same alert between our select and insert.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _remember(self, fingerprint: str, now: datetime, fields: dict[str, Any]) -> Alert:
        with self._lock:
            previous = self._memory.get(fingerprint)
            if previous is None or previous.state == "resolved":
                alert = Alert(
                    id=None,
                    state="open",
                    fingerprint=fingerprint,
                    count=1,
                    first_seen=now,
                    last_seen=now,
                    notified=True,
                    **fields,
                )
                self._memory_notified[fingerprint] = now
            else:
                notify = self._cooled_down(self._memory_notified.get(fingerprint), now)
                if notify:
                    self._memory_notified[fingerprint] = now
                alert = Alert(
                    id=None,
                    state=previous.state,
                    fingerprint=fingerprint,
                    count=previous.count + 1,
                    first_seen=previous.first_seen,
                    last_seen=now,
                    notified=notify,
                    **fields,
                )
            self._memory[fingerprint] = alert
            return alert

    def _cooled_down(self, last_notified: datetime | None, now: datetime) -> bool:
        return last_notified is None or now - last_notified >= self.cooldown

    # --- state ---------------------------------------------------------------------

    def acknowledge(self, alert_id: str, by: str) -> Alert:
        """Mark an open alert as being handled (idempotent for an acknowledged one).

        Raises:
            NotFoundError: No alert has that id.
            StateError: The alert is resolved.
        """
        with self.db.session() as session:
            row = self._row(session, alert_id)
            if row.state == "resolved":
                raise StateError(
                    problem(
                        "an open alert to acknowledge",
                        f"alert {alert_id!r} resolved at {_aware(row.resolved_at)}",
                        "a new occurrence opens a new alert; acknowledge that one",
                        subject="acknowledge",
                    )
                )
            if row.state == "open":
                row.state = "acknowledged"
                row.acknowledged_by = by
                row.acknowledged_at = utcnow()
            session.flush()
            return Alert.from_record(row)

    def resolve(self, alert_id: str) -> Alert:
        """Close an alert (idempotent); its next occurrence opens a new one.

        Raises:
            NotFoundError: No alert has that id.
        """
        with self.db.session() as session:
            row = self._row(session, alert_id)
            if row.state != "resolved":
                row.state = "resolved"
                row.resolved_at = utcnow()
                row.open_fingerprint = None
            session.flush()
            return Alert.from_record(row)

    def list_alerts(
        self,
        state: str | None = None,
        *,
        model_name: str | None = None,
        limit: int | None = None,
    ) -> list[Alert]:
        """Alerts, newest ``last_seen`` first, optionally of one state and model."""
        if state is not None and state not in ALERT_STATES:
            raise ConfigError(
                problem(
                    f"one of {', '.join(ALERT_STATES)} or None",
                    repr(state),
                    "pass e.g. state='open'",
                    subject="list_alerts",
                )
            )
        query = select(AlertRecord).order_by(AlertRecord.last_seen.desc(), AlertRecord.id)
        if state is not None:
            query = query.where(AlertRecord.state == state)
        if model_name is not None:
            query = query.where(AlertRecord.model_name == model_name)
        if limit is not None:
            query = query.limit(limit)
        with self.db.session() as session:
            return [Alert.from_record(row) for row in session.scalars(query)]

    def get(self, alert_id: str) -> Alert:
        """One alert by id (NotFoundError if there is none)."""
        with self.db.session() as session:
            return Alert.from_record(self._row(session, alert_id))

    @staticmethod
    def _row(session: Any, alert_id: str) -> AlertRecord:
        row: AlertRecord | None = session.get(AlertRecord, alert_id, with_for_update=True)
        if row is None:
            raise NotFoundError(
                problem(
                    "the id of a stored alert",
                    repr(alert_id),
                    "list them with list_alerts()",
                    subject="alerts",
                )
            )
        return row

    @property
    def db(self) -> PlatformDB:
        """The platform database (opened on first use)."""
        if "database" not in self.channels:
            raise StateError(
                problem(
                    "the 'database' alert channel for stored alert state",
                    f"channels {','.join(self.channels)!r}",
                    "add 'database' to RETAILML_ALERT_CHANNELS",
                    subject="alerts",
                )
            )
        if self._db is None:
            self._db = PlatformDB.from_settings(self.settings)
        return self._db

    # --- background delivery -------------------------------------------------------

    @property
    def delivery_stats(self) -> dict[str, dict[str, int]]:
        """Per background channel: counts ``delivered``, ``retried``, ``failed``, ``dropped``."""
        return {name: dict(channel.stats) for name, channel in self._background.items()}

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until every pending delivery succeeded or was given up; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        done = True
        for channel in self._background.values():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            done = channel.flush(left) and done
        return done

    def close(self, timeout: float | None = 10.0) -> None:
        """Deliver what is pending (up to ``timeout``), then stop the delivery threads."""
        for channel in self._background.values():
            channel.close(timeout)
        _MANAGERS.discard(self)

    def __enter__(self) -> AlertManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _post_webhook(self, alert: Alert) -> None:
        url = self.settings.alert_webhook_url
        assert url is not None
        body = json.dumps({"text": alert.text}).encode("utf-8")
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            status = response.status
        if not 200 <= status < 300:
            raise OSError(f"webhook answered HTTP {status}")

    def _send_email(self, alert: Alert) -> None:
        host = self.settings.smtp_host
        assert host is not None
        message = EmailMessage()
        message["Subject"] = f"retailml alert {alert.subject}"
        message["From"] = self.settings.smtp_from
        message["To"] = ", ".join(_recipients(self.settings))
        body = [alert.message, ""]
        if alert.details:
            body += ["Details:", json.dumps(alert.details, indent=2, sort_keys=True), ""]
        body.append(f"Alert id: {alert.id}  first seen: {alert.first_seen.isoformat()}")
        message.set_content("\n".join(body))
        with smtplib.SMTP(host, self.settings.smtp_port, timeout=self.timeout_s) as smtp:
            smtp.send_message(message)


def _json_safe(value: Any) -> Any:
    """Plain JSON data: non-finite floats become None (PostgreSQL's JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(item) for item in value]
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):  # numpy scalars
        return _json_safe(value.item())
    return str(value)


def _recipients(settings: Settings) -> list[str]:
    raw = settings.alert_email_to or ""
    return [part.strip() for part in raw.split(",") if part.strip()]


def _parse_channels(channels: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    names = channels.split(",") if isinstance(channels, str) else list(channels)
    cleaned = [name.strip().lower() for name in names if name.strip()]
    unknown = [name for name in cleaned if name not in ALERT_CHANNELS]
    if unknown:
        raise ConfigError(
            problem(
                f"alert channels among {', '.join(ALERT_CHANNELS)}",
                repr(unknown),
                "fix RETAILML_ALERT_CHANNELS, e.g. 'log,database,webhook'",
                subject="alert channels",
            )
        )
    return tuple(dict.fromkeys(["log", *cleaned]))
