"""The statistics of A/B tests, free of the database.

:mod:`retailml.deployment.ab_testing` documents the choices; this module holds
the arithmetic so it can be checked directly (and simulated thousands of
times) on summaries built from arrays with :meth:`Summary.of`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats  # type: ignore[import-untyped]

Direction = Literal["lower", "higher"]
TestName = Literal["welch_t", "two_proportion_z"]

#: Name tokens that make a metric lower-is-better (errors, losses, latency, cost).
LOWER_IS_BETTER_TOKENS = frozenset(
    {
        "mape",
        "smape",
        "wape",
        "mase",
        "mae",
        "mse",
        "rmse",
        "rmsle",
        "error",
        "errors",
        "loss",
        "latency",
        "duration",
        "cost",
        "churn",
        "bounce",
        "abandonment",
    }
)

#: Fewest observations per arm a comparison needs (a variance needs two).
MIN_OBSERVATIONS = 2


def default_direction(metric: str) -> Direction:
    """``"lower"`` when a token of the name is in :data:`LOWER_IS_BETTER_TOKENS`.

    The name is split at every non-alphanumeric character, so ``latency_ms``,
    ``error-rate`` and ``MAPE`` are lower-is-better; ``conversion_rate`` and
    ``revenue`` are higher-is-better.
    """
    tokens = {t for t in re.split(r"[^a-z0-9]+", metric.lower()) if t}
    return "lower" if tokens & LOWER_IS_BETTER_TOKENS else "higher"


@dataclass(frozen=True)
class Summary:
    """The sufficient statistics of one arm's values of one metric.

    Attributes:
        n: Number of observations.
        mean: Their mean (0.0 when ``n == 0``).
        variance: Sample variance (``ddof=1``; 0.0 when ``n < 2``).
        binary: Every value is 0 or 1 (vacuously true when ``n == 0``).
    """

    n: int
    mean: float
    variance: float
    binary: bool

    @classmethod
    def of(cls, values: Iterable[float]) -> Summary:
        """Summarise raw values."""
        if isinstance(values, np.ndarray):
            array = values.astype(float, copy=False).ravel()
        else:
            array = np.fromiter(values, dtype=float)
        n = int(array.size)
        if n == 0:
            return cls(0, 0.0, 0.0, True)
        variance = float(array.var(ddof=1)) if n > 1 else 0.0
        binary = bool(np.isin(array, (0.0, 1.0)).all())
        return cls(n, float(array.mean()), variance, binary)


@dataclass(frozen=True)
class ArmMetricStats:
    """One arm's observations of one metric.

    ``ci_low``/``ci_high`` bound the arm's mean at the requested confidence: a
    Student t interval, or the Wilson score interval for a 0/1 metric. Values
    that need more observations are None (no std or interval below two).
    """

    arm: str
    metric: str
    n: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True)
class MetricComparison:
    """A challenger arm against the control on one success metric.

    Attributes:
        metric: The success metric.
        arm: The challenger.
        control: The control arm (the test's first arm).
        direction: ``"lower"`` or ``"higher"`` is better for the metric.
        test: ``"welch_t"`` (means) or ``"two_proportion_z"`` (0/1 values).
        n_control: Control observations.
        n_arm: Challenger observations.
        effect: Challenger mean minus control mean, in the metric's units.
        relative_effect: ``effect / |control mean|`` (None when that mean is 0).
        ci_low: Lower bound of the confidence interval of ``effect``.
        ci_high: Upper bound of that interval.
        p_value: Two-sided p-value of the test, before correction.
        p_value_adjusted: Holm-adjusted p-value across every comparison of the test.
        significant: ``p_value_adjusted < 1 - confidence``.
        better: Whether the challenger is better than the control (in the
            metric's direction) when ``significant``; None otherwise.
    """

    metric: str
    arm: str
    control: str
    direction: Direction
    test: TestName
    n_control: int
    n_arm: int
    effect: float | None
    relative_effect: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    p_value_adjusted: float | None
    significant: bool
    better: bool | None


@dataclass(frozen=True)
class Outcome:
    """The raw result of one two-sample test."""

    test: TestName
    effect: float
    ci_low: float
    ci_high: float
    p_value: float


@dataclass(frozen=True)
class Analysis:
    """Everything :func:`analyze` concludes."""

    arms: dict[str, dict[str, ArmMetricStats]]
    comparisons: tuple[MetricComparison, ...]
    winner: str | None
    reason: str


def _critical(confidence: float, df: float | None = None) -> float:
    q = 0.5 + confidence / 2
    return float(stats.norm.ppf(q) if df is None else stats.t.ppf(q, df))


def wilson_interval(p: float, n: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` observed on ``n`` trials."""
    z = _critical(confidence)
    z2 = z * z
    denominator = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


def welch(control: Summary, arm: Summary, confidence: float) -> Outcome:
    """Welch's unequal-variance t-test of the difference of means (arm - control).

    The p-value equals ``scipy.stats.ttest_ind(arm, control, equal_var=False)``;
    the interval uses the same Welch–Satterthwaite degrees of freedom.
    """
    effect = arm.mean - control.mean
    a = arm.variance / arm.n
    b = control.variance / control.n
    se2 = a + b
    if se2 == 0.0:  # both arms constant: the difference is known exactly
        return Outcome("welch_t", effect, effect, effect, 1.0 if effect == 0.0 else 0.0)
    se = math.sqrt(se2)
    df = se2 * se2 / (a * a / (arm.n - 1) + b * b / (control.n - 1))
    p_value = float(2 * stats.t.sf(abs(effect) / se, df))
    half = _critical(confidence, df) * se
    return Outcome("welch_t", effect, effect - half, effect + half, p_value)


def two_proportions(control: Summary, arm: Summary, confidence: float) -> Outcome:
    """Two-proportion z-test (pooled) with Newcombe's hybrid score interval.

    The p-value is the score test's (the 2x2 chi-square without continuity
    correction); the interval of ``p_arm - p_control`` is Newcombe's method 10,
    built from the two Wilson intervals.
    """
    p0, p1 = control.mean, arm.mean
    effect = p1 - p0
    pooled = (p0 * control.n + p1 * arm.n) / (control.n + arm.n)
    se = math.sqrt(pooled * (1 - pooled) * (1 / control.n + 1 / arm.n))
    if se == 0.0:  # both arms all 0 or all 1
        p_value = 1.0 if effect == 0.0 else 0.0
    else:
        p_value = float(2 * stats.norm.sf(abs(effect) / se))
    l0, u0 = wilson_interval(p0, control.n, confidence)
    l1, u1 = wilson_interval(p1, arm.n, confidence)
    low = effect - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2)
    high = effect + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)
    return Outcome("two_proportion_z", effect, low, high, p_value)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm step-down adjusted p-values (None entries are skipped and kept None)."""
    present = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(present)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def arm_stats(arm: str, metric: str, summary: Summary, confidence: float) -> ArmMetricStats:
    """The per-arm description of one metric."""
    if summary.n == 0:
        return ArmMetricStats(arm, metric, 0, None, None, None, None)
    if summary.n < MIN_OBSERVATIONS:
        return ArmMetricStats(arm, metric, summary.n, summary.mean, None, None, None)
    std = math.sqrt(summary.variance)
    if summary.binary:
        low, high = wilson_interval(summary.mean, summary.n, confidence)
    else:
        half = _critical(confidence, summary.n - 1) * std / math.sqrt(summary.n)
        low, high = summary.mean - half, summary.mean + half
    return ArmMetricStats(arm, metric, summary.n, summary.mean, std, low, high)


def analyze(
    summaries: Mapping[str, Mapping[str, Summary]],
    arms: Sequence[str],
    metrics: Sequence[tuple[str, Direction]],
    confidence: float = 0.95,
) -> Analysis:
    """Compare every challenger with the control on every metric and pick a winner.

    Args:
        summaries: ``summaries[arm][metric]``; missing entries count as no data.
        arms: Arm names, control first.
        metrics: ``(name, direction)`` pairs, primary first.
        confidence: Confidence level of the intervals; ``1 - confidence`` is
            the family-wise significance level of the Holm-corrected tests.
    """
    alpha = 1 - confidence
    empty = Summary(0, 0.0, 0.0, True)

    def summary(arm: str, metric: str) -> Summary:
        return summaries.get(arm, {}).get(metric, empty)

    per_arm = {
        arm: {m: arm_stats(arm, m, summary(arm, m), confidence) for m, _ in metrics} for arm in arms
    }
    control, challengers = arms[0], arms[1:]
    raw: list[tuple[str, Direction, str, TestName, Summary, Summary, Outcome | None]] = []
    for metric, direction in metrics:
        binary = all(summary(arm, metric).binary for arm in arms)
        test: TestName = "two_proportion_z" if binary else "welch_t"
        base = summary(control, metric)
        for arm in challengers:
            other = summary(arm, metric)
            outcome = None
            if base.n >= MIN_OBSERVATIONS and other.n >= MIN_OBSERVATIONS:
                compare = two_proportions if binary else welch
                outcome = compare(base, other, confidence)
            raw.append((metric, direction, arm, test, base, other, outcome))
    adjusted = holm([o.p_value if o else None for *_, o in raw])
    comparisons: list[MetricComparison] = []
    for (metric, direction, arm, test, base, other, outcome), p_adj in zip(
        raw, adjusted, strict=True
    ):
        if outcome is None or p_adj is None:
            comparisons.append(
                MetricComparison(
                    metric=metric,
                    arm=arm,
                    control=control,
                    direction=direction,
                    test=test,
                    n_control=base.n,
                    n_arm=other.n,
                    effect=None,
                    relative_effect=None,
                    ci_low=None,
                    ci_high=None,
                    p_value=None,
                    p_value_adjusted=None,
                    significant=False,
                    better=None,
                )
            )
            continue
        significant = p_adj < alpha
        better = None
        if significant:
            better = outcome.effect < 0 if direction == "lower" else outcome.effect > 0
        relative = outcome.effect / abs(base.mean) if base.mean != 0 else None
        comparisons.append(
            MetricComparison(
                metric=metric,
                arm=arm,
                control=control,
                direction=direction,
                test=outcome.test,
                n_control=base.n,
                n_arm=other.n,
                effect=outcome.effect,
                relative_effect=relative,
                ci_low=outcome.ci_low,
                ci_high=outcome.ci_high,
                p_value=outcome.p_value,
                p_value_adjusted=p_adj,
                significant=significant,
                better=better,
            )
        )
    winner, reason = choose_winner(comparisons, arms, metrics)
    return Analysis(per_arm, tuple(comparisons), winner, reason)


def choose_winner(
    comparisons: Sequence[MetricComparison],
    arms: Sequence[str],
    metrics: Sequence[tuple[str, Direction]],
) -> tuple[str | None, str]:
    """The winning arm (or None) and why, by the rule of the module docstring."""
    control, challengers = arms[0], arms[1:]
    primary, direction = metrics[0]
    by_key = {(c.metric, c.arm): c for c in comparisons}

    def worse_elsewhere(arm: str) -> list[str]:
        return [m for m, _ in metrics[1:] if by_key[(m, arm)].better is False]

    def better_elsewhere(arm: str) -> list[str]:
        return [m for m, _ in metrics[1:] if by_key[(m, arm)].better is True]

    candidates = [a for a in challengers if by_key[(primary, a)].better and not worse_elsewhere(a)]
    if candidates:
        sign = -1.0 if direction == "lower" else 1.0
        best = max(candidates, key=lambda a: sign * (by_key[(primary, a)].effect or 0.0))
        c = by_key[(primary, best)]
        return best, (
            f"{best!r} is significantly better than {control!r} on {primary!r} "
            f"(effect {c.effect:+.6g}, Holm-adjusted p {c.p_value_adjusted:.3g}) "
            "and not significantly worse on any other success metric"
        )
    primary_worse = [a for a in challengers if by_key[(primary, a)].better is False]
    if len(primary_worse) == len(challengers) and not any(better_elsewhere(a) for a in challengers):
        return control, (
            f"every challenger is significantly worse than the control {control!r} on "
            f"{primary!r} and none is significantly better on another success metric"
        )
    blocked = [a for a in challengers if by_key[(primary, a)].better and worse_elsewhere(a)]
    if blocked:
        details = "; ".join(f"{a!r} on {', '.join(map(repr, worse_elsewhere(a)))}" for a in blocked)
        return None, (
            f"better on {primary!r} but significantly worse on another success metric: {details}"
        )
    missing = [a for a in challengers if by_key[(primary, a)].p_value is None]
    if missing:
        return None, (
            f"not enough observations of {primary!r} (at least {MIN_OBSERVATIONS} per arm) "
            f"for {', '.join(map(repr, missing))} or the control {control!r}"
        )
    return None, f"no arm differs significantly from the control {control!r} on {primary!r}"
