"""Swapping the production model while requests are in flight fails none of them.

A real server (uvicorn on 127.0.0.1, a free port) serves ``swap_forecast``
1.0.0; 2000 concurrent requests (16 at a time, loopback only) run while the
active deployment moves to 1.1.0. Every request must succeed, and traffic
must end on the new version.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from retailml.serving.app import create_app

from .helpers import AUTH, deploy, serving_settings

REQUESTS = 2000
CONCURRENCY = 16


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_swapping_the_production_model_fails_no_request(serving_home: Path) -> None:
    settings = serving_settings(serving_home, serve_default_model="swap_forecast")
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
    )
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        statuses, versions = asyncio.run(_load(port, settings))
    finally:
        server.should_exit = True
        thread.join(30)
        deploy(settings, "swap_forecast", "1.0.0")
    failed = [s for s in statuses if s != 200]
    assert len(statuses) == REQUESTS
    assert not failed, f"{len(failed)} failed requests: {sorted(set(failed))}"
    assert versions[0] == "1.0.0"
    assert versions[-1] == "1.1.0"
    assert {"1.0.0", "1.1.0"} <= set(versions)


async def _load(port: int, settings: object) -> tuple[list[int], list[str]]:
    url = f"http://127.0.0.1:{port}/api/v1/ml/predict"
    statuses: list[int] = []
    versions: list[str] = []
    counter = iter(range(REQUESTS))
    swapped = asyncio.Event()

    async with httpx.AsyncClient(
        headers=AUTH, timeout=30, limits=httpx.Limits(max_connections=CONCURRENCY)
    ) as client:

        async def worker() -> None:
            for n in counter:
                if n == REQUESTS // 4 and not swapped.is_set():
                    swapped.set()
                    await asyncio.to_thread(deploy, settings, "swap_forecast", "1.1.0")
                if n >= REQUESTS * 3 // 4:
                    await asyncio.sleep(0.002)  # spread the tail past the routing reload
                try:
                    response = await client.post(
                        url, json={"features": {"series_id": "s0"}, "horizon": 7}
                    )
                except httpx.HTTPError:
                    statuses.append(-1)
                    continue
                statuses.append(response.status_code)
                if response.status_code == 200:
                    versions.append(response.json()["model_version"])

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        # The tail must be on the new version once the routing table reloads.
        deadline = time.monotonic() + 10
        while versions[-1] != "1.1.0" and time.monotonic() < deadline:
            response = await client.post(url, json={"features": {"series_id": "s0"}})
            assert response.status_code == 200, response.text
            versions.append(response.json()["model_version"])
            await asyncio.sleep(0.1)
    return statuses, versions
