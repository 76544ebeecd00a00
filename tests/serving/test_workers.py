"""`retailml serve --workers 2`: a real multi-process service whose /metrics adds up every worker.

The service runs as the CLI starts it (uvicorn's supervisor and two spawned
workers) against a workspace with one deployed forecast. Requests on fresh
connections land on both workers; every scrape, whichever worker answers it,
must count all of them.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from retailml.core.settings import Settings

from .helpers import ADMIN_TOKEN, API_KEY, AUTH, deployed_forecast

PREDICT = "/api/v1/ml/predict"
REQUESTS = re.compile(r"^retailml_prediction_requests_total\{([^}]*)\} (\S+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with one forecast deployed to production."""
    home = tmp_path_factory.mktemp("workers") / "workspace"
    deployed_forecast(Settings(home=home))
    return home


@pytest.fixture
def service(home: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`retailml serve --workers 2` on a free port; stopped with SIGTERM afterwards."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RETAILML_", "PROMETHEUS_"))}
    env.update(
        RETAILML_HOME=str(home),
        RETAILML_CONFIG=str(home / "no-settings.yaml"),
        RETAILML_API_KEYS=API_KEY,
        RETAILML_ADMIN_TOKEN=ADMIN_TOKEN,
    )
    command = [sys.executable, "-m", "retailml", "serve", "--workers", "2"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "retailml serve did not start in 120 s"
        time.sleep(0.2)
    try:
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def served_requests(url: str) -> float:
    """The successful predictions /metrics counts (one scrape, on a fresh connection)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(float(value) for labels, value in REQUESTS.findall(text) if 'status="200"' in labels)


def test_metrics_add_up_every_workers_requests(
    home: Path, service: tuple[str, subprocess.Popen[bytes]]
) -> None:
    url, process = service
    (shared,) = (home / "tmp").glob("prometheus-*")  # made by `retailml serve` for the workers
    workers: set[str] = set()
    sent = 0
    # Fresh connections until both workers have answered some (they share the socket).
    while len(workers) < 2 or sent < 20:
        assert sent < 400, f"one worker answered all {sent} requests: {workers}"
        response = httpx.post(
            f"{url}{PREDICT}", json={"features": {"series_id": "s0"}}, headers=AUTH, timeout=30
        )
        assert response.status_code == 200, response.text
        sent += 1
        workers = {p.stem.rsplit("_", 1)[1] for p in shared.glob("counter_*.db")}
    # Whichever worker answers a scrape, it counts every worker's requests.
    for _ in range(8):
        assert served_requests(url) == sent
    assert "process_resident_memory_bytes" in httpx.get(f"{url}/metrics", timeout=10).text

    process.send_signal(signal.SIGTERM)
    assert process.wait(60) == 0
    assert not shared.exists(), "the shared metrics directory outlived the service"


# What a fresh interpreter prints: the requests /metrics counts for one observed request.
_SCRIPT = """
import os, sys
if sys.argv[1] == "before":
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[2]
import prometheus_client
if sys.argv[1] == "after":
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[2]  # as importing feast.metrics does
from retailml.serving._metrics import ServingMetrics
metrics = ServingMetrics()
metrics.observe("sales_forecast", "1.0.0", None, "predict", 200, 0.01)
print(metrics.multiprocess_dir is not None)
print(metrics.render().decode())
"""


@pytest.mark.parametrize("set_when", ["before", "after"])
def test_the_mode_follows_prometheus_client_not_a_variable_set_later(
    set_when: str, tmp_path: Path
) -> None:
    """Multiprocess mode is fixed when prometheus_client is imported; a variable set later
    (feast.metrics sets PROMETHEUS_MULTIPROC_DIR on import) must not hide the counts."""
    env = {k: v for k, v in os.environ.items() if not k.lower().startswith("prometheus_")}
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, set_when, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    mode, text = done.stdout.split("\n", 1)
    assert mode == str(set_when == "before")
    (count,) = [float(v) for labels, v in REQUESTS.findall(text) if 'status="200"' in labels]
    assert count == 1
    assert any(tmp_path.glob("counter_*.db")) is (set_when == "before")
