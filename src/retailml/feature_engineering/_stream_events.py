"""Transaction events as the stream consumer reads them: parsing, checking, ids.

An event is one transaction line as a JSON object with the canonical columns
(:data:`retailml.data.schema.CANONICAL_COLUMNS`) and an optional ``event_id``.
The typing rules follow ingestion's (:mod:`retailml.data.ingest`), so a line
means the same in a file and on the stream:

* ``invoice_no`` and ``stock_code``: non-empty text (a number is written in
  decimal);
* ``quantity``: an integer (``6``, ``6.0`` or ``"6"``; not ``1.5``);
* ``unit_price``: a finite number (or decimal text); negative only on an
  adjustment invoice (prefix ``A``);
* ``invoice_date``: ISO 8601 text; without an offset it is UTC, with one it is
  converted to UTC; more than a day after the consumer's clock it is refused,
  because one mistyped year would otherwise move the window of every entity;
* ``customer_id``: text or an integer (``17850.0`` -> ``"17850"``), or
  null/absent for a guest; ``country`` and ``description``: text or null;
* ``event_id``: non-empty text of at most 200 characters, or absent; other
  fields are ignored.

A line that breaks a rule becomes a :class:`Rejection` whose reason starts
with a short code (``invalid_json``, ``not_an_object``, ``empty_invoice``,
``missing_stock_code``, ``missing_date``, ``unparseable_date``,
``future_date``, ``invalid_quantity``, ``invalid_price``, ``negative_price``,
``invalid_customer_id``, ``invalid_text``, ``invalid_event_id``,
``invalid_encoding``, ``missing_event_field``), then says what was expected
and what was got.

Money is kept in integer millionths (``micros``) so sums are exact and do
not depend on the order they are added in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from retailml.data.schema import ADJUSTMENT_PREFIX, CANCELLATION_PREFIX, NON_PRODUCT_CODES

MICROS = 1_000_000
_US_PER_DAY = 86_400 * MICROS
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_INTEGER = re.compile(r"^[+-]?\d+(\.0*)?$")
_CUSTOMER_INTEGER = re.compile(r"^([+-]?\d+)\.0*$")
#: Events dated further than this after the consumer's clock are refused.
MAX_FUTURE_US = _US_PER_DAY
MAX_EVENT_ID = 200


@dataclass(frozen=True, slots=True)
class Transaction:
    """One valid transaction line.

    Attributes:
        event_id: The event's ``event_id``, or the id derived from its source
            position and bytes.
        invoice_no: Invoice number (``C...`` is a cancellation).
        stock_code: Product code.
        quantity: Units (negative on cancellations and returns).
        ts_us: ``invoice_date`` in microseconds since the epoch (UTC).
        amount_micros: ``quantity * unit_price`` in millionths.
        customer_id: The customer, or None for a guest.
        is_product_line: Not a non-product code and not an adjustment: the
            lines every feature counts.
        is_purchase_line: A product line of a non-cancelled invoice with a
            positive quantity: what makes an order and a purchase time.
    """

    event_id: str
    invoice_no: str
    stock_code: str
    quantity: int
    ts_us: int
    amount_micros: int
    customer_id: str | None
    is_product_line: bool
    is_purchase_line: bool

    @property
    def day(self) -> int:
        """The UTC calendar day, as days since 1970-01-01."""
        return self.ts_us // _US_PER_DAY


@dataclass(frozen=True, slots=True)
class Rejection:
    """A line that is not a valid event: it goes to the dead-letter list.

    Attributes:
        reason: ``code: what was expected and what was got``.
    """

    reason: str


def day_of(ts_us: int) -> int:
    """The UTC day (days since 1970-01-01) of a time in microseconds."""
    return ts_us // _US_PER_DAY


def to_datetime(ts_us: int) -> dt.datetime:
    """A UTC datetime from microseconds since the epoch."""
    return _EPOCH + dt.timedelta(microseconds=ts_us)


def to_micros(when: dt.datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * MICROS + delta.microseconds


def derived_id(source: str, position: str, payload: bytes) -> str:
    """The id of an event without ``event_id``: its source, position and bytes.

    The same bytes at the same place (a redelivery, a re-read after a
    restart) get the same id; the same bytes published twice are two events.
    """
    digest = hashlib.sha256(source.encode() + b"\n" + position.encode() + b"\n" + payload)
    return f"derived:{digest.hexdigest()[:40]}"


class _InvalidEventError(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")


def parse_event(payload: bytes, fallback_id: str, now_us: int) -> Transaction | Rejection:
    """Parse and check one event.

    Args:
        payload: The event's bytes (a JSON object, UTF-8).
        fallback_id: The id to use when the event has no ``event_id``.
        now_us: The consumer's clock, for refusing far-future dates.

    Returns:
        The transaction, or the reason it was rejected.
    """
    try:
        return _parse(payload, fallback_id, now_us)
    except _InvalidEventError as exc:
        return Rejection(str(exc))


def _parse(payload: bytes, fallback_id: str, now_us: int) -> Transaction:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _InvalidEventError("invalid_encoding", f"expected UTF-8 text; got {exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise _InvalidEventError("invalid_json", f"expected a JSON object; got {exc}") from None
    if not isinstance(data, dict):
        raise _InvalidEventError(
            "not_an_object", f"expected a JSON object; got {type(data).__name__}"
        )
    invoice_no = _code(data.get("invoice_no"), "invoice_no", "empty_invoice")
    stock_code = _code(data.get("stock_code"), "stock_code", "missing_stock_code")
    ts_us = _timestamp(data.get("invoice_date"), now_us)
    quantity = _quantity(data.get("quantity"))
    is_adjustment = invoice_no.startswith(ADJUSTMENT_PREFIX)
    price = _price(data.get("unit_price"), is_adjustment)
    customer_id = _customer(data.get("customer_id"))
    for name in ("country", "description"):
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            raise _InvalidEventError(
                "invalid_text", f"expected {name} as text or null; got {value!r}"
            )
    event_id = data.get("event_id", fallback_id)
    if not isinstance(event_id, str) or not event_id.strip() or len(event_id) > MAX_EVENT_ID:
        raise _InvalidEventError(
            "invalid_event_id",
            f"expected event_id as non-empty text of at most {MAX_EVENT_ID} characters, "
            f"or no event_id; got {event_id!r}",
        )
    is_cancellation = invoice_no.startswith(CANCELLATION_PREFIX)
    is_product_line = stock_code.upper() not in NON_PRODUCT_CODES and not is_adjustment
    return Transaction(
        event_id=event_id,
        invoice_no=invoice_no,
        stock_code=stock_code,
        quantity=quantity,
        ts_us=ts_us,
        # round() of the float product: 6 * 2.55 is 15.299999999999999.
        amount_micros=round(quantity * price * MICROS),
        customer_id=customer_id,
        is_product_line=is_product_line,
        is_purchase_line=is_product_line and not is_cancellation and quantity > 0,
    )


def _code(value: Any, name: str, code: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _InvalidEventError(code, f"expected {name} as non-empty text; got {value!r}")
    text = str(value).strip()
    if not text:
        raise _InvalidEventError(code, f"expected {name} as non-empty text; got {value!r}")
    return text


def _timestamp(value: Any, now_us: int) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise _InvalidEventError(
            "missing_date", f"expected invoice_date as ISO 8601 text; got {value!r}"
        )
    if not isinstance(value, str):
        raise _InvalidEventError(
            "unparseable_date", f"expected invoice_date as ISO 8601 text; got {value!r}"
        )
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise _InvalidEventError(
            "unparseable_date",
            f"expected invoice_date as ISO 8601 text (2011-12-09T12:50:00); got {value!r}",
        ) from None
    when = when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)
    ts_us = to_micros(when)
    if ts_us > now_us + MAX_FUTURE_US:
        raise _InvalidEventError(
            "future_date",
            f"expected invoice_date at most a day after the consumer's clock "
            f"({to_datetime(now_us).isoformat()}); got {value!r}",
        )
    return ts_us


def _quantity(value: Any) -> int:
    if isinstance(value, bool):
        raise _InvalidEventError(
            "invalid_quantity", f"expected quantity as an integer; got {value!r}"
        )
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.match(value.strip()):
        return int(value.strip().split(".")[0])
    raise _InvalidEventError("invalid_quantity", f"expected quantity as an integer; got {value!r}")


def _price(value: Any, is_adjustment: bool) -> float:
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        raise _InvalidEventError(
            "invalid_price", f"expected unit_price as a finite number; got {value!r}"
        )
    if number < 0 and not is_adjustment:
        raise _InvalidEventError(
            "negative_price",
            f"expected unit_price >= 0 (negative only on adjustment invoices); got {value!r}",
        )
    return number


def _customer(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise _InvalidEventError(
            "invalid_customer_id", f"expected customer_id as text; got {value!r}"
        )
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        match = _CUSTOMER_INTEGER.match(text)
        return match.group(1) if match else text
    raise _InvalidEventError("invalid_customer_id", f"expected customer_id as text; got {value!r}")
