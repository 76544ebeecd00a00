"""``retailml features stream``: the real-time consumer from the command line.

Every test runs the real consumer through the CLI entry point (``main``, so
errors go through the same one-line handler as in a terminal): events are
published into a temporary workspace's stream directory or onto a stream of
its own on the Redis on the machine, and the online values are read back with
``retailml features get``. The online store is the workspace's SQLite one.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import redis

from retailml.cli import main
from retailml.core.settings import Settings, get_settings
from retailml.feature_engineering.stream import (
    DirectorySource,
    EventSource,
    RedisStreamSource,
    publish_events,
)

REDIS_URL = os.environ.get("RETAILML_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

Event = dict[str, Any]


def event(
    event_id: str,
    invoice: str,
    code: str,
    quantity: int,
    price: float,
    *,
    customer: str | None = "12345",
    hours_ago: float = 1.0,
) -> Event:
    """One transaction line as an event, dated ``hours_ago`` before now (UTC)."""
    when = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=hours_ago)
    return {
        "event_id": event_id,
        "invoice_no": invoice,
        "stock_code": code,
        "description": f"item {code}",
        "quantity": quantity,
        "invoice_date": when.isoformat(),
        "unit_price": price,
        "customer_id": customer,
        "country": "United Kingdom",
    }


#: Customer 12345: two invoices (15.30 + 6.00 + 10.00); a guest buys too.
EVENTS: list[Event] = [
    event("e1", "1000", "85123A", 6, 2.55, hours_ago=3),
    event("e2", "1000", "22423", 2, 3.0, hours_ago=3),
    event("e3", "1001", "85123A", 1, 10.0, hours_ago=1),
    event("e4", "1002", "85123A", 4, 2.55, customer=None, hours_ago=0.5),
]


def units_on_latest_day(events: Sequence[Event], code: str) -> int:
    """Net units of ``code`` on the UTC day of its latest event (what ``units_today`` means)."""
    dated = [(dt.datetime.fromisoformat(e["invoice_date"]), e) for e in events]
    mine = [(when, e) for when, e in dated if e["stock_code"] == code]
    day = max(when for when, _ in mine).date()
    return sum(int(e["quantity"]) for when, e in mine if when.date() == day)


def publish(source: EventSource, events: Sequence[Event | str]) -> None:
    try:
        assert publish_events(events, source) == len(events)
    finally:
        source.close()


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``retailml <args>``: exit code, stdout, stderr."""
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out, err = run(capsys, *args)
    assert code == 0, err
    return json.loads(out)


def online(capsys: pytest.CaptureFixture[str], feature_set: str, entity: str) -> Any:
    return run_json(capsys, "features", "get", "--set", feature_set, "--entity", entity, "--json")


def use(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    """Set ``RETAILML_*`` variables and return the settings the commands will read."""
    for name, value in env.items():
        monkeypatch.setenv(f"RETAILML_{name.upper()}", value)
    get_settings.cache_clear()
    return get_settings()


# --------------------------------------------------------------------------- directory


def test_help_explains_the_command_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "features", "stream", "--help")
    assert code == 0
    assert "Example:" in out
    assert "features stream --once" in out
    for option in ("--source", "--stream", "--max-events", "--idle-timeout", "--dead-letters"):
        assert option in out


def test_once_applies_published_events_and_get_reads_them(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    publish(DirectorySource.from_settings(settings), EVENTS)

    stats = run_json(capsys, "features", "stream", "--once", "--json")

    assert stats == {
        "processed": 4,
        "duplicates_skipped": 0,
        "dead_lettered": 0,
        "batches": 1,
        "last_lag_s": pytest.approx(stats["last_lag_s"]),
    }
    assert stats["last_lag_s"] >= 0
    customer = online(capsys, "customer_realtime", "12345")
    assert customer["found"] is True
    assert customer["features"]["spend_7d"] == pytest.approx(15.3 + 6.0 + 10.0)
    assert customer["features"]["orders_7d"] == 2
    assert customer["features"]["last_purchase_at"] == str(
        dt.datetime.fromisoformat(EVENTS[2]["invoice_date"])
    )
    product = online(capsys, "product_realtime", "85123A")
    # Units on the UTC day of the product's latest event: all 11 of them, unless
    # the test runs in the first hours of a UTC day and some fell the day before.
    assert product["features"]["units_today"] == units_on_latest_day(EVENTS, "85123A")
    assert (settings.home / "stream" / "processed").is_dir()
    assert not list((settings.home / "stream" / "incoming").glob("*.jsonl"))

    # Nothing new: nothing applied. The same events again: duplicates, values unchanged.
    again = run_json(capsys, "features", "stream", "--once", "--json")
    assert (again["processed"], again["batches"]) == (0, 0)
    publish(DirectorySource.from_settings(settings), EVENTS[:2])
    repeated = run_json(capsys, "features", "stream", "--once", "--json")
    assert (repeated["processed"], repeated["duplicates_skipped"]) == (0, 2)
    assert online(capsys, "customer_realtime", "12345")["features"] == customer["features"]


def test_without_json_it_prints_a_summary_table(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    publish(DirectorySource.from_settings(settings), EVENTS)

    code, out, err = run(capsys, "features", "stream", "--once")

    assert code == 0, err
    for row in ("events applied", "duplicates skipped", "dead letters", "batches", "lag"):
        assert row in out
    applied = next(line for line in out.splitlines() if "events applied" in line)
    assert applied.split()[-2] == "4"


def test_malformed_events_are_listed_by_dead_letters(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    no_code = {k: v for k, v in event("e9", "1003", "X", 1, 1.0).items() if k != "stock_code"}
    publish(
        DirectorySource.from_settings(settings),
        [EVENTS[0], '{"event_id": "truncated", "invoice_no": "5', json.dumps(no_code)],
    )

    code, out, err = run(capsys, "features", "stream", "--once", "--json")
    assert code == 0, err
    stats = json.loads(out)
    assert (stats["processed"], stats["dead_lettered"]) == (1, 2)
    assert "features stream --dead-letters" in err

    letters = run_json(capsys, "features", "stream", "--dead-letters", "--json")
    assert [letter["reason"].split(":", 1)[0] for letter in letters] == [
        "invalid_json",
        "missing_stock_code",
    ]
    assert letters[0]["raw"] == '{"event_id": "truncated", "invoice_no": "5'
    code, out, err = run(capsys, "features", "stream", "--dead-letters")
    assert code == 0, err
    assert "invalid_json:" in out
    assert "missing_stock_code" in out
    assert "dead_letter.jsonl" in out
    # The good event went through.
    assert online(capsys, "customer_realtime", "12345")["found"] is True


def test_dead_letters_of_a_fresh_workspace_is_an_empty_list(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_json(capsys, "features", "stream", "--dead-letters", "--json") == []
    code, out, _ = run(capsys, "features", "stream", "--dead-letters")
    assert code == 0
    assert "no dead letters" in out


def test_max_events_stops_the_consumer(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    events = [event(f"m{i}", f"20{i:02d}", "85123A", 1, 1.0) for i in range(10)]
    publish(DirectorySource.from_settings(settings), events)

    started = time.monotonic()
    # The idle timeout only keeps a broken --max-events from hanging the test.
    stats = run_json(
        capsys,
        "features", "stream", "--max-events", "4", "--batch-size", "3",
        "--idle-timeout", "60", "--json",
    )  # fmt: skip

    assert time.monotonic() - started < 60
    assert (stats["processed"], stats["batches"]) == (4, 2)  # batches of 3, then 1
    rest = run_json(capsys, "features", "stream", "--once", "--json")
    assert rest["processed"] == 6
    assert online(capsys, "customer_realtime", "12345")["features"]["orders_7d"] == 10


def test_idle_timeout_stops_a_quiet_consumer(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    publish(DirectorySource.from_settings(settings), EVENTS[:1])

    stats = run_json(capsys, "features", "stream", "--idle-timeout", "0.5", "--json")

    assert stats["processed"] == 1


def test_usage_errors(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "features", "stream", "--stream", "s", "--once")
    assert code == 2
    assert "--source redis" in err
    code, _, err = run(capsys, "features", "stream", "--once", "--idle-timeout", "3")
    assert code == 2
    assert "--idle-timeout" in err
    code, _, err = run(capsys, "features", "stream", "--source", "kafka", "--once")
    assert code == 2
    assert "kafka" in err


def test_an_invalid_stream_source_setting_is_reported(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RETAILML_STREAM_SOURCE", "kafka")
    code, _, err = run(capsys, "features", "stream", "--once")
    assert code == 1
    assert "RETAILML_STREAM_SOURCE" in err


# --------------------------------------------------------------------------- Redis


@pytest.fixture
def redis_stream(settings: Settings) -> Iterator[str]:
    """A stream key of its own on the Redis on the machine, deleted afterwards (fails if down)."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL!r} ({exc}); start redis-server")
    name = f"retailml_test:{uuid.uuid4().hex[:12]}:transactions"
    yield name
    client.delete(name, f"{name}:dead")
    client.close()


def test_redis_source_applies_events_and_lists_dead_letters(
    settings: Settings,
    redis_stream: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    use(monkeypatch, redis_url=REDIS_URL)
    publish(RedisStreamSource(REDIS_URL, stream=redis_stream), [*EVENTS, "not json"])

    code, out, err = run(
        capsys, "features", "stream", "--source", "redis", "--stream", redis_stream, "--once",
        "--json",
    )  # fmt: skip

    assert code == 0, err
    stats = json.loads(out)
    assert (stats["processed"], stats["dead_lettered"]) == (4, 1)
    assert f"--source redis --stream {redis_stream} --dead-letters" in err
    customer = online(capsys, "customer_realtime", "12345")
    assert customer["features"]["spend_7d"] == pytest.approx(31.3)
    letters = run_json(
        capsys, "features", "stream", "--source", "redis", "--stream", redis_stream,
        "--dead-letters", "--json",
    )  # fmt: skip
    assert [(letter["raw"], letter["reason"].split(":")[0]) for letter in letters] == [
        ("not json", "invalid_json")
    ]

    # The same source from the settings; the group has acknowledged everything so far.
    use(monkeypatch, stream_source="redis", stream_name=redis_stream)
    publish(
        RedisStreamSource(REDIS_URL, stream=redis_stream), [event("e5", "1004", "22423", 1, 3.0)]
    )
    more = run_json(capsys, "features", "stream", "--once", "--json")
    assert (more["processed"], more["duplicates_skipped"], more["dead_lettered"]) == (1, 0, 0)
    assert online(capsys, "customer_realtime", "12345")["features"]["orders_7d"] == 3


@pytest.mark.parametrize("extra", [["--once"], ["--dead-letters"]], ids=" ".join)
def test_unreachable_redis_fails_with_one_line(
    extra: list[str],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # Rich would wrap the line at 80 columns
    use(monkeypatch, redis_url="redis://localhost:1/0")

    code, out, err = run(capsys, "features", "stream", "--source", "redis", *extra)

    assert code == 1
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Redis" in lines[0]
    assert "localhost:1" in lines[0]
    assert "RETAILML_REDIS_URL" in lines[0]
