"""Rollout judgement: traffic splits, rollback thresholds, arm statistics and the decision.

Pure functions (no database, no registry), so the rules are tested directly.

Metrics, per arm (``blue`` = current version, ``green`` = new version), over
the prediction-log rows written since the rollout started:

* ``error_rate``: share of requests with ``status_code >= 500`` or an error;
* ``latency_p95``: the 95th percentile of ``latency_ms`` (linear
  interpolation, numpy's default);
* ``performance_drop``: the relative increase of the green version's *error
  metric* over the blue one's, ``(green - blue) / blue``. The prediction log
  has no actuals yet, so the metric comes from whoever computes it (an
  evaluation job, the monitoring issue): ``ModelServer.record_performance(
  rollout_id, arm, value)`` stores one value per arm, lower is better
  (MAPE, MAE, RMSE). It is judged only once both arms have a value.

The green arm crosses a threshold when its value is strictly above it
(``performance_drop`` as above; ``error_rate`` and ``latency_p95`` are
absolute limits on green). Error rate and latency are judged only once green
has served ``min_requests`` requests, so a handful of early errors cannot
decide. Green is promoted when it crossed nothing, served at least
``min_requests`` and ``healthy_window_s`` passed since the start.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

import numpy as np

from retailml.core.errors import ConfigError, problem

#: Limits the guide's production deployment uses; any of them may be overridden.
DEFAULT_THRESHOLDS: Final[dict[str, float]] = {
    "error_rate": 0.01,
    "latency_p95": 1000.0,
    "performance_drop": 0.05,
}
#: Seconds green must stay healthy before it takes all traffic.
DEFAULT_WINDOW_S: Final = 300.0
#: Green requests needed before error rate and latency are judged.
DEFAULT_MIN_REQUESTS: Final = 50
#: Keys a rollback_threshold mapping may hold.
THRESHOLD_KEYS: Final = (*DEFAULT_THRESHOLDS, "window_seconds", "min_requests")
UNITS: Final = {"error_rate": "", "latency_p95": " ms", "performance_drop": ""}

Action = Literal["wait", "promote", "rollback"]


def _is_number(value: object) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def parse_split(traffic_split: object) -> dict[str, float]:
    """``{"blue": 90, "green": 10}``: two colours, non-negative, green > 0, summing to 100.

    Raises:
        ConfigError: naming what is wrong.
    """
    fix = 'pass e.g. traffic_split={"blue": 90, "green": 10}'
    if not isinstance(traffic_split, Mapping) or set(traffic_split) != {"blue", "green"}:
        got = sorted(traffic_split) if isinstance(traffic_split, Mapping) else traffic_split
        raise ConfigError(
            problem("exactly the keys 'blue' and 'green'", repr(got), fix, subject="traffic_split")
        )
    split = {}
    for colour in ("blue", "green"):
        value = traffic_split[colour]
        if not _is_number(value) or float(value) < 0:
            raise ConfigError(
                problem("a percentage >= 0", f"{colour}={value!r}", fix, subject="traffic_split")
            )
        split[colour] = float(value)
    if split["green"] <= 0 or abs(split["blue"] + split["green"] - 100) > 1e-9:
        raise ConfigError(
            problem(
                "percentages summing to 100 with green > 0",
                f"blue={split['blue']:g}, green={split['green']:g}",
                fix,
                subject="traffic_split",
            )
        )
    return split


def parse_thresholds(rollback_threshold: object) -> dict[str, float]:
    """The guide's thresholds merged over :data:`DEFAULT_THRESHOLDS` (plus window and evidence).

    Raises:
        ConfigError: for unknown keys or values that are not non-negative numbers.
    """
    if rollback_threshold is None:
        rollback_threshold = {}
    if not isinstance(rollback_threshold, Mapping):
        raise ConfigError(
            problem(
                "a mapping of threshold name to limit",
                repr(rollback_threshold),
                'pass e.g. rollback_threshold={"error_rate": 0.01, "latency_p95": 1000}',
                subject="rollback_threshold",
            )
        )
    unknown = sorted(str(key) for key in set(rollback_threshold) - set(THRESHOLD_KEYS))
    if unknown:
        raise ConfigError(
            problem(
                f"keys among {list(THRESHOLD_KEYS)}",
                f"unknown {unknown}",
                "rename or drop them",
                subject="rollback_threshold",
            )
        )
    merged: dict[str, float] = dict(DEFAULT_THRESHOLDS)
    for key, value in rollback_threshold.items():
        if not _is_number(value) or float(value) < 0:
            raise ConfigError(
                problem(
                    "a number >= 0", f"{key}={value!r}", "correct it", subject="rollback_threshold"
                )
            )
        merged[str(key)] = float(value)
    if "min_requests" in merged and merged["min_requests"] != int(merged["min_requests"]):
        raise ConfigError(
            problem(
                "a whole number of requests",
                f"min_requests={merged['min_requests']!r}",
                "pass e.g. 50",
                subject="rollback_threshold",
            )
        )
    return merged


@dataclasses.dataclass(frozen=True)
class ArmStats:
    """What one arm served since the rollout started."""

    version: str
    requests: int
    errors: int
    error_rate: float | None
    latency_p95: float | None
    latency_mean: float | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def arm_stats(version: str, rows: Iterable[tuple[float, int, str | None]]) -> ArmStats:
    """Statistics of ``(latency_ms, status_code, error)`` rows."""
    latencies: list[float] = []
    errors = 0
    for latency, status, error in rows:
        latencies.append(float(latency))
        if status >= 500 or error is not None:
            errors += 1
    n = len(latencies)
    if n == 0:
        return ArmStats(version, 0, 0, None, None, None)
    values = np.asarray(latencies, dtype=float)
    return ArmStats(
        version=version,
        requests=n,
        errors=errors,
        error_rate=errors / n,
        latency_p95=float(np.percentile(values, 95)),
        latency_mean=float(values.mean()),
    )


def performance_drop(performance: Mapping[str, Any]) -> float | None:
    """``(green - blue) / blue`` of the recorded error metrics, or None until both exist."""
    values: list[Any] = [(performance.get(arm) or {}).get("value") for arm in ("blue", "green")]
    if not all(_is_number(value) for value in values):
        return None
    blue, green = float(values[0]), float(values[1])
    if blue == 0:
        return 0.0 if green == 0 else math.inf
    return (green - blue) / abs(blue)


@dataclasses.dataclass(frozen=True)
class Decision:
    """What to do with a running rollout, and why."""

    action: Action
    reason: str
    #: The threshold crossed (for a rollback), else None.
    threshold: str | None = None
    value: float | None = None


def decide(
    green: ArmStats,
    drop: float | None,
    thresholds: Mapping[str, float],
    *,
    elapsed_s: float,
) -> Decision:
    """Roll back on the first threshold green crosses, promote after a healthy window, or wait."""
    min_requests = int(thresholds.get("min_requests", DEFAULT_MIN_REQUESTS))
    window = float(thresholds.get("window_seconds", DEFAULT_WINDOW_S))
    measured: dict[str, float | None] = {"performance_drop": drop}
    if green.requests >= min_requests:
        measured["error_rate"] = green.error_rate
        measured["latency_p95"] = green.latency_p95
    for name in ("error_rate", "latency_p95", "performance_drop"):
        value = measured.get(name)
        limit = thresholds.get(name)
        if value is not None and limit is not None and value > limit:
            unit = UNITS[name]
            return Decision(
                "rollback",
                f"{name} {value:.4g}{unit} crossed the threshold {limit:g}{unit} "
                f"(green {green.version}, {green.requests} requests)",
                threshold=name,
                value=value,
            )
    if green.requests < min_requests:
        return Decision(
            "wait", f"green has served {green.requests} of the {min_requests} requests needed"
        )
    if elapsed_s < window:
        return Decision("wait", f"healthy for {elapsed_s:.0f} s of the {window:g} s window")
    return Decision(
        "promote",
        f"healthy for {elapsed_s:.0f} s (window {window:g} s) over {green.requests} requests: "
        f"error_rate {green.error_rate:.4g}, latency_p95 {green.latency_p95:.4g} ms"
        + (f", performance_drop {drop:.4g}" if drop is not None else ""),
    )
