"""Benchmark the stream consumer: event -> online-visible latency, and burst throughput.

For each source (the directory of JSON-lines files on the SQLite online store,
and Redis Streams on the Redis online store), a ``StreamConsumer`` runs in its
own process (``run()`` with the default ``batch_size=500``,
``max_wait_s=0.1``), as it would in production, in a temporary workspace.

Latency: ``--events`` events are published one at a time, at random gaps of
0-20 ms, each one unit of one product; after publishing, this process polls
``FeatureStore.get_online_features("product_realtime", ...)`` until
``units_today`` shows the event. Latency runs from just before the publish
call to the first read that sees the value, so it includes the producer's
write (file rename or ``XADD``), the consumer's read, commit and Feast push,
and the reader's poll interval (0.5 ms).

Throughput: a burst of ``--burst`` events (2,000 customers, 500 products,
invoices of one to four lines) is published at once; the time runs from the
start of the publish to the moment the consumer's state has applied every
event and the last event's value is visible online.

Target: every event online within a second (p99 < 1000 ms).

Usage::

    python benchmarks/bench_stream.py [--events 300] [--burst 10000] [--sources directory redis]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from _common import load_average
from retailml.core.errors import NotFoundError
from retailml.core.settings import Settings, load_settings
from retailml.feature_engineering.feature_store import FeatureStore
from retailml.feature_engineering.stream import (
    DirectorySource,
    EventSource,
    RedisStreamSource,
    StreamConsumer,
    publish_events,
)

TARGET_MS = 1000.0
POLL_S = 0.0005
GROUP = "retailml-features"

CONSUMER = """
import json, sys
from retailml.feature_engineering.stream import RedisStreamSource, StreamConsumer
kind, url, stream, group = sys.argv[1:5]
source = RedisStreamSource(url, stream=stream, group=group) if kind == "redis" else None
stats = StreamConsumer(source=source).run()
print(json.dumps(stats.__dict__))
"""


def event(
    event_id: str, customer: str, code: str, when: dt.datetime, invoice: str
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "invoice_no": invoice,
        "stock_code": code,
        "quantity": 1,
        "invoice_date": when.isoformat(),
        "unit_price": 2.55,
        "customer_id": customer,
        "country": "United Kingdom",
    }


def burst_events(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    start = dt.datetime(2024, 3, 2, 8)
    events: list[dict[str, Any]] = []
    invoice = 0
    while len(events) < count:
        invoice += 1
        when = start + dt.timedelta(seconds=invoice * 3)
        customer = f"c{rng.randrange(2000)}"
        for line in range(rng.randint(1, 4)):
            code = f"P{rng.randrange(500):03d}"
            events.append(event(f"burst-{invoice}-{line}", customer, code, when, f"B{invoice}"))
    return events[:count]


def percentiles(latencies_ms: Sequence[float]) -> dict[str, float]:
    ordered = sorted(latencies_ms)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {
        "p50": at(0.50),
        "p95": at(0.95),
        "p99": at(0.99),
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


async def units_today(store: FeatureStore, code: str) -> int | None:
    try:
        served = await store.get_online_features("product_realtime", code)
    except NotFoundError:
        return None  # the consumer has not registered its feature sets yet
    return served["units_today"] if served.found else None


async def wait_for(store: FeatureStore, code: str, units: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while await units_today(store, code) != units:
        if time.monotonic() > deadline:
            raise SystemExit(f"{code} never reached {units} units online")
        await asyncio.sleep(POLL_S)


async def measure_latency(
    store: FeatureStore, source: EventSource, events: int, seed: int
) -> list[float]:
    rng = random.Random(seed)
    when = dt.datetime(2024, 3, 1, 9)
    # Warm-up: the consumer process starts (imports Feast) and registers its sets.
    publish_events([event("warm", "c-warm", "WARM", when, "W1")], source)
    await wait_for(store, "WARM", 1, timeout_s=180)
    latencies = []
    for number in range(1, events + 1):
        await asyncio.sleep(rng.uniform(0, 0.02))
        stamp = when + dt.timedelta(seconds=number)
        started = time.perf_counter()
        publish_events([event(f"lat-{number}", "c-lat", "LAT", stamp, f"L{number}")], source)
        await wait_for(store, "LAT", number)
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def measure_burst(
    store: FeatureStore, consumer: StreamConsumer, source: EventSource, burst: int, seed: int
) -> tuple[float, float]:
    events = burst_events(burst, seed)
    before = consumer.status().events
    last = events[-1]
    final_units = sum(
        1
        for e in events
        if e["stock_code"] == last["stock_code"]
        and e["invoice_date"][:10] == last["invoice_date"][:10]
    )
    started = time.perf_counter()
    if isinstance(source, DirectorySource):
        for start in range(0, len(events), 1000):  # ten producers' files
            publish_events(events[start : start + 1000], source)
    else:
        publish_events(events, source)
    published = time.perf_counter() - started
    while consumer.status().events < before + burst:
        await asyncio.sleep(0.001)
    await wait_for(store, last["stock_code"], final_units)
    return published, time.perf_counter() - started


def run_source(kind: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:10]
    project = "retailml" if kind == "directory" else f"retailml_bench_{tag}"
    stream = f"retailml_bench:{tag}:transactions"
    online = "sqlite" if kind == "directory" else "redis"
    settings: Settings = load_settings(
        home=root, online_store=online, redis_url=args.redis_url, feast_project=project
    )
    env = dict(os.environ)
    env.update(
        RETAILML_HOME=str(root),
        RETAILML_ONLINE_STORE=online,
        RETAILML_REDIS_URL=args.redis_url,
        RETAILML_FEAST_PROJECT=project,
    )
    source: EventSource = (
        DirectorySource.from_settings(settings)
        if kind == "directory"
        else RedisStreamSource(args.redis_url, stream=stream, group=GROUP)
    )
    consumer = StreamConsumer(settings, source=source)
    process = subprocess.Popen(
        [sys.executable, "-c", CONSUMER, kind, args.redis_url, stream, GROUP],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    store = FeatureStore(settings)
    try:

        async def measure() -> tuple[list[float], tuple[float, float]]:
            latencies = await measure_latency(store, source, args.events, args.seed)
            burst = await measure_burst(store, consumer, source, args.burst, args.seed)
            return latencies, burst

        latencies, (published_s, burst_s) = asyncio.run(measure())
    finally:
        process.send_signal(signal.SIGTERM)  # a graceful stop: the batch in hand is finished
        output, _ = process.communicate(timeout=120)
        store.close()
        source.close()
        if kind == "redis":
            client = redis.Redis.from_url(args.redis_url)
            client.delete(stream, f"{stream}:dead")
            keys = list(client.scan_iter(match=f"*{project}", count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start : start + 1000])
            client.close()
    stats = json.loads(output.strip().splitlines()[-1]) if output.strip() else {}
    return {
        "kind": kind,
        "latency": percentiles(latencies),
        "published_s": published_s,
        "burst_s": burst_s,
        "throughput": args.burst / burst_s,
        "consumer": stats,
        "exit": process.returncode,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--burst", type=int, default=10_000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--sources", nargs="+", choices=["directory", "redis"], default=["directory", "redis"]
    )
    args = parser.parse_args(argv)

    results = []
    with tempfile.TemporaryDirectory(prefix="bench_stream_") as tmp:
        for kind in args.sources:
            print(f"{kind}: starting the consumer process ...", flush=True)
            results.append(run_source(kind, Path(tmp) / kind, args))

    print(
        f"\n{args.events} events for latency, a burst of {args.burst:,} for throughput; "
        f"load average {load_average()}"
    )
    header = (
        f"{'source':10} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'burst s':>8} {'events/s':>9} {'batches':>8} {'exit':>5}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        lat = r["latency"]
        print(
            f"{r['kind']:10} {lat['p50']:8.1f} {lat['p95']:8.1f} {lat['p99']:8.1f} "
            f"{lat['max']:8.1f} {r['burst_s']:8.2f} {r['throughput']:9,.0f} "
            f"{r['consumer'].get('batches', 0):8} {r['exit']:5}"
        )
    print(
        "\n(burst s: from the start of publishing to the last value online; publishing alone "
        + ", ".join(f"{r['kind']} {r['published_s']:.2f} s" for r in results)
        + ")"
    )
    passed = all(r["latency"]["p99"] < TARGET_MS and r["exit"] == 0 for r in results)
    summary = ", ".join(
        f"{r['kind']} p99 {r['latency']['p99']:.0f} ms, {r['throughput']:,.0f} events/s"
        for r in results
    )
    print(f"\nVerdict: {'PASS' if passed else 'FAIL'} (within a second of the event): {summary}")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
