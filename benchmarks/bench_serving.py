"""Benchmark ``retailml serve`` against ``mlflow models serve`` on the same registered model.

A sales forecast (seasonal naive, two daily series, horizon 14) is trained,
registered with :class:`ModelRegistry` as ``sales_forecast`` 1.0.0 and given
the ``production`` alias in a fresh workspace. Then, one server at a time on
127.0.0.1 with the same number of workers:

* ``retailml serve --workers N``: ``POST /api/v1/ml/predict`` with
  ``{"features": {"series_id": "s0"}, "horizon": 14, "confidence_interval": 0.95}``
  (API key header, routing, metrics and the prediction log all on);
* ``mlflow models serve -w N --env-manager local`` on the registry's verified
  copy of the same model: ``POST /invocations`` with the same request as a
  DataFrame (``series_id``, ``horizon``).

Load: ``wrk`` (1 thread, 32 connections, a warm-up run and then the measured
run) when installed, else an asyncio/httpx generator with the same 32
connections. Loopback only, bounded in time. Reported: requests/s, p50 and
p99 latency, non-2xx responses.

Why retailml is faster: a fitted forecaster is deterministic, so the service
computes each (version, horizon, level) forecast once and then answers from
memory without pandas; MLflow's generic server builds a DataFrame, enforces
the signature and runs the model on every request.

Target: retailml >= 2x mlflow's requests/s, with p99 < 25 ms.

Usage::

    python benchmarks/bench_serving.py --workers 1 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

API_KEY = "bench-key"
CONNECTIONS = 32
#: One wrk thread drives 32 connections easily and leaves the CPUs to the server.
THREADS = 1
HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _panel(days: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    dates = pd.date_range("2024-01-01", periods=days, freq="D")
    weekly = np.array([1.0, 1.1, 1.2, 1.15, 1.3, 0.4, 0.6])[dates.dayofweek]
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "series_id": f"s{i}",
                    "date": dates,
                    "sales_amount": 1000 * (i + 1) * weekly * rng.lognormal(0, 0.08, days),
                }
            )
            for i in range(2)
        ],
        ignore_index=True,
    )


def prepare(home: Path) -> Path:
    """Train and register the model; returns the verified local copy of its MLflow model."""
    from retailml.core.settings import Settings
    from retailml.governance.model_governance import ModelGovernance
    from retailml.registry import ModelRegistry
    from retailml.training.model_trainer import ModelTrainer

    settings = Settings(home=home)
    result = ModelTrainer(
        model_type="sales_forecast",
        algorithm="seasonal_naive",
        hyperparameters={"horizon": 14},
        validation_strategy="holdout",
        settings=settings,
    ).train_sync(_panel(), target="sales_amount", model_name="sales_forecast")
    with ModelRegistry(settings) as registry:
        registry.register_model("sales_forecast", "1.0.0", result)
        # Production needs an approved governance request, benchmarks included.
        governance = ModelGovernance(settings, db=registry.db)
        request = governance.request_approval(
            "sales_forecast",
            "1.0.0",
            "production",
            "serving benchmark",
            approvers=["ml_engineer"],
        )
        governance.approve(request.id, approver="bench", role="ml_engineer", comment="benchmark")
        registry.set_alias("sales_forecast", "1.0.0", "production")
        path = registry.download_model("sales_forecast", "1.0.0")
    return Path(path)


def _wait(url: str, timeout_s: float, process: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with code {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"{url} not ready after {timeout_s:.0f} s")


def _group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) used so far by every live process of a process group."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # pgrp; utime and stime follow at 11 and 12
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wrk(
    url: str, body: Mapping[str, Any], headers: Mapping[str, str], duration: int
) -> dict[str, Any]:
    """One wrk run of ``duration`` seconds."""
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = {json.dumps(json.dumps(body))}",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write("\n".join(lines) + "\n")
    try:
        command = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", "--latency", "-s", script.name, url]
        done = subprocess.run(
            [*command[:1], f"-d{duration}s", *command[1:]],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        Path(script.name).unlink()
    try:
        return _parse_wrk(done.stdout)
    except (AttributeError, SystemExit):
        print(done.stdout, file=sys.stderr)
        raise


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if found is None:
        raise SystemExit(f"cannot read wrk's latency {text!r}")
    value, unit = found.groups()
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
    return float(value) * scale[unit]


def _parse_wrk(output: str) -> dict[str, Any]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors:.*", output)
    return {
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "requests": total,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(0) if errors else "",
    }


def _httpx_load(
    url: str, body: Mapping[str, Any], headers: Mapping[str, str], duration: int
) -> dict[str, Any]:
    import httpx

    async def run(seconds: float) -> tuple[list[float], int, float]:
        latencies: list[float] = []
        bad = 0
        limits = httpx.Limits(max_connections=CONNECTIONS)
        async with httpx.AsyncClient(headers=dict(headers), limits=limits, timeout=30) as client:
            end = time.perf_counter() + seconds

            async def worker() -> None:
                nonlocal bad
                while time.perf_counter() < end:
                    start = time.perf_counter()
                    response = await client.post(url, json=body)
                    latencies.append((time.perf_counter() - start) * 1000)
                    bad += response.status_code >= 300

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
            return latencies, bad, time.perf_counter() - started

    latencies, bad, elapsed = asyncio.run(run(duration))
    values = np.asarray(latencies)
    return {
        "rps": len(values) / elapsed,
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
        "requests": len(values),
        "non_2xx": bad,
        "socket_errors": "",
    }


def bench(
    name: str,
    command: list[str],
    env: Mapping[str, str],
    ready_url: str,
    url: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    duration: int,
) -> dict[str, Any]:
    """Start a server, load it, stop it."""
    process = subprocess.Popen(
        command,
        env=dict(env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait(ready_url, 180, process)
        import httpx

        check = httpx.post(url, json=body, headers=dict(headers), timeout=30)
        if check.status_code != 200:
            raise SystemExit(f"{name}: {check.status_code} {check.text[:300]}")
        load = _wrk if shutil.which("wrk") else _httpx_load
        load(url, body, headers, 2)  # warm-up, not measured
        cpu_before = _group_cpu_s(process.pid)
        result = load(url, body, headers, duration)
        result["tool"] = "wrk" if load is _wrk else "httpx"
        result["server_cpu_s"] = _group_cpu_s(process.pid) - cpu_before
    finally:
        _stop(process)
    result["server"] = name
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1, help="Workers of both servers.")
    parser.add_argument("--duration", type=int, default=10, help="Seconds of measured load.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary workspace.")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    home = root / "workspace"
    bin_dir = Path(sys.executable).parent
    try:
        model_dir = prepare(home)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RETAILML_", "MLFLOW_"))}
        env.update({"RETAILML_HOME": str(home), "RETAILML_API_KEYS": API_KEY})
        # mlflow models serve execs `uvicorn` from PATH: the one beside this interpreter.
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        results = []
        port = _free_port()
        results.append(
            bench(
                "retailml serve",
                [
                    str(bin_dir / "retailml"),
                    "serve",
                    "--host",
                    HOST,
                    "--port",
                    str(port),
                    "--workers",
                    str(args.workers),
                ],
                env,
                f"http://{HOST}:{port}/ready",
                f"http://{HOST}:{port}/api/v1/ml/predict",
                {"features": {"series_id": "s0"}, "horizon": 14, "confidence_interval": 0.95},
                {"X-API-Key": API_KEY},
                args.duration,
            )
        )
        port = _free_port()
        results.append(
            bench(
                "mlflow models serve",
                [
                    str(bin_dir / "mlflow"),
                    "models",
                    "serve",
                    "-m",
                    str(model_dir),
                    "-h",
                    HOST,
                    "-p",
                    str(port),
                    "-w",
                    str(args.workers),
                    "--env-manager",
                    "local",
                ],
                env,
                f"http://{HOST}:{port}/ping",
                f"http://{HOST}:{port}/invocations",
                {"dataframe_split": {"columns": ["series_id", "horizon"], "data": [["s0", 14]]}},
                {},
                args.duration,
            )
        )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    print(
        f"\nserving benchmark: {args.workers} worker(s), {CONNECTIONS} connections, "
        f"{args.duration} s, loopback, load tool {results[0]['tool']}, "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    print(
        f"{'server':<22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'requests':>10}"
        f"{'non-2xx':>9}{'CPU ms/req':>12}"
    )
    for r in results:
        print(
            f"{r['server']:<22}{r['rps']:>10.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}"
            f"{r['requests']:>10}{r['non_2xx']:>9}"
            f"{1000 * r['server_cpu_s'] / max(r['requests'], 1):>12.3f}"
        )
    ours, theirs = results
    ratio = ours["rps"] / theirs["rps"] if theirs["rps"] else float("inf")
    per_core = ours["requests"] / ours["server_cpu_s"] if ours["server_cpu_s"] else 0.0
    print(
        f"retailml used {ours['server_cpu_s']:.1f} CPU s for {ours['requests']} requests: "
        f"{per_core:.0f} requests per CPU second (what one uncontended core would serve)"
    )
    ok = ratio >= 2 and ours["p99_ms"] < 25 and ours["non_2xx"] == 0
    print(
        f"verdict: retailml {ratio:.1f}x mlflow's requests/s, p99 {ours['p99_ms']:.1f} ms "
        f"-> {'PASS' if ok else 'FAIL'} (target >= 2x and p99 < 25 ms, no errors)"
    )
    print(json.dumps({"ratio": ratio, "results": results}))


if __name__ == "__main__":
    main()
