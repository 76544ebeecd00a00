"""Benchmark data drift: retailml's ``detect_drift`` against Evidently's ``DataDriftPreset``.

The same generated data (fixed seed) is written once to Parquet in
``--work-dir``: a reference frame and a current frame of ``--rows`` rows each
and ``--columns`` columns, four fifths numeric (float64: normal, log-normal,
uniform, Poisson counts) and one fifth categorical (strings, 3 to 40
categories). Drift is injected in a known fifth of the columns: numeric ones
shifted by 0.15 to 0.5 reference standard deviations, categorical ones with
their category shares reshuffled. One stable numeric column is shifted by
0.02 standard deviations: a move a two-sample test rejects on a million rows
but no distance should flag. Generation is not timed and is cached.

Then, ``--repeat`` times and alternating the tools so both see the same load
(the ratio is the figure to read on a shared machine), each in its own
subprocess (peak RSS from ``os.wait4``, see ``_common.py``), with the
interpreter and imports outside the timed span:

* **read only**: ``pd.read_parquet`` of both frames and nothing else, the
  memory floor both tools share.
* **retailml**: ``detect_drift(reference, current)`` with its defaults
  (``method="auto"``: normed Wasserstein > 0.1 for numeric columns,
  Jensen-Shannon > 0.1 for categorical ones, as the reference has more than
  1000 rows).
* **evidently**: ``Report([DataDriftPreset()]).run(current, reference)``, the
  frames wrapped with ``Dataset.from_pandas`` and a ``DataDefinition`` naming
  the numeric and categorical columns (inside the timed span). Evidently's
  defaults for more than 1000 rows are the same tests and thresholds
  (normed Wasserstein for numeric columns with more than 5 values,
  Jensen-Shannon for categorical ones, both "drift when >= 0.1"); its
  per-column verdicts are derived from each ``ValueDrift`` value, method and
  threshold. Evidently computes Jensen-Shannon with the natural logarithm and
  retailml in base 2, so the statistics are compared after converting
  (``distance_base2 = distance_e / sqrt(ln 2)``) and the same threshold 0.1 is
  slightly stricter in retailml: a column between 0.083 and 0.1 (natural log)
  would drift in retailml only. The generated drift stays clear of that band.

Reading the Parquet files is timed separately (``read_s``) and not included
in ``drift_s`` (wall time). ``CPU s`` is the process's CPU time over the same
span (every thread), which a loaded machine distorts less than wall time.
The table shows medians over the repeats.

Target (issue 6): retailml under 2 s at 1M rows x 50 columns, and at least 5x
faster than Evidently.

Evidently 0.7 pins ``plotly<6`` while retailml installs plotly 6, so it may be
installed apart from the project's environment and given with
``--evidently-path`` (prepended to the Evidently child's ``PYTHONPATH``)::

    pip install --no-deps --target /tmp/bench_drift/evidently-site evidently==0.7.23 ...

Usage::

    python benchmarks/bench_drift.py --rows 1000000 --columns 50 --repeat 3 \\
        --work-dir /tmp/bench_drift --evidently-path /tmp/bench_drift/evidently-site

Evidently takes minutes at 1M rows; ``--evidently-repeat 1`` runs it in the
first repeat only (retailml still runs every repeat, right next to it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import load_average, run_measured

if TYPE_CHECKING:
    import pandas as pd

TARGET_ROWS = 1_000_000
TARGET_COLUMNS = 50
TARGET_SECONDS = 2.0
TARGET_SPEEDUP = 5.0
SEED = 20261126
OUT_DIR = Path(__file__).resolve().parent / "out"

#: The measured children: key -> label in the table.
TOOLS = {
    "read": "read only",
    "retailml": "retailml",
    "retailml_verdict": "retailml, statistics='verdict'",
    "evidently": "evidently",
}


# --- Data -----------------------------------------------------------------------------


def column_plan(columns: int) -> list[dict[str, Any]]:
    """Each column's name, kind, distribution and injected drift (deterministic)."""
    n_categorical = max(1, columns // 5)
    n_numeric = columns - n_categorical
    n_drift_numeric = max(1, n_numeric // 5)
    n_drift_categorical = max(1, n_categorical // 5)
    shapes = ("normal", "lognormal", "uniform", "poisson")
    plan: list[dict[str, Any]] = []
    for i in range(n_numeric):
        drifted = i < n_drift_numeric
        # Shifts from 0.15 to 0.5 reference stds: clearly above the 0.1 threshold.
        shift = 0.15 + 0.35 * i / max(1, n_drift_numeric - 1) if drifted else 0.0
        if i == n_drift_numeric:  # stable, but a KS test on 1M rows would reject
            shift = 0.02
        plan.append(
            {
                "name": f"num_{i:02d}",
                "kind": "numeric",
                "shape": shapes[i % len(shapes)],
                "shift_std": shift,
                "expected_drift": drifted,
            }
        )
    for i in range(n_categorical):
        plan.append(
            {
                "name": f"cat_{i:02d}",
                "kind": "categorical",
                "categories": 3 + (i * 37) % 38,
                "expected_drift": i < n_drift_categorical,
            }
        )
    return plan


def _numeric(rng: Any, shape: str, rows: int) -> Any:
    if shape == "normal":
        return rng.normal(100.0, 15.0, rows)
    if shape == "lognormal":
        return rng.lognormal(3.0, 0.6, rows)
    if shape == "uniform":
        return rng.uniform(0.0, 50.0, rows)
    return rng.poisson(20.0, rows).astype("float64")


def generate(rows: int, columns: int, work_dir: Path) -> tuple[Path, Path, list[dict[str, Any]]]:
    """Write reference.parquet and current.parquet (cached by rows, columns and seed)."""
    import numpy as np
    import pandas as pd

    plan = column_plan(columns)
    folder = work_dir / f"data_{rows}x{columns}_seed{SEED}"
    ref_path, cur_path = folder / "reference.parquet", folder / "current.parquet"
    if ref_path.exists() and cur_path.exists():
        return ref_path, cur_path, plan
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    reference: dict[str, Any] = {}
    current: dict[str, Any] = {}
    for spec in plan:
        name = spec["name"]
        if spec["kind"] == "numeric":
            ref = _numeric(rng, spec["shape"], rows)
            cur = _numeric(rng, spec["shape"], rows) + spec["shift_std"] * ref.std()
        else:
            k = spec["categories"]
            labels = np.array([f"{name}_v{v:02d}" for v in range(k)], dtype=object)
            weights = rng.dirichlet(np.full(k, 2.0))
            cur_weights = weights
            if spec["expected_drift"]:
                # Move 40 % of the mass from the first half of the categories to the rest.
                cur_weights = weights.copy()
                half = max(1, k // 2)
                moved = 0.4 * cur_weights[:half]
                cur_weights[:half] -= moved
                cur_weights[half:] += moved.sum() / (k - half)
            ref_codes = rng.choice(k, rows, p=weights)
            cur_codes = rng.choice(k, rows, p=cur_weights / cur_weights.sum())
            ref = labels[ref_codes]
            cur = labels[cur_codes]
        reference[name] = ref
        current[name] = cur
    pd.DataFrame(reference).to_parquet(ref_path, index=False)
    pd.DataFrame(current).to_parquet(cur_path, index=False)
    return ref_path, cur_path, plan


# --- Children -------------------------------------------------------------------------


def _read(ref_path: str, cur_path: str) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    import pandas as pd

    start = time.perf_counter()
    reference = pd.read_parquet(ref_path)
    current = pd.read_parquet(cur_path)
    return reference, current, time.perf_counter() - start


def child_read(ref_path: str, cur_path: str) -> dict[str, Any]:
    """Read both frames, nothing else: the memory floor."""
    _, _, read_s = _read(ref_path, cur_path)
    return {"read_s": read_s, "drift_s": 0.0, "columns": {}}


def child_retailml(ref_path: str, cur_path: str, scope: str = "all") -> dict[str, Any]:
    """detect_drift with its defaults (every statistic), or only the deciding statistics."""
    from retailml.validators.drift import detect_drift

    reference, current, read_s = _read(ref_path, cur_path)
    start, cpu_start = time.perf_counter(), time.process_time()
    report = detect_drift(reference, current, statistics=scope)
    drift_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    columns = {
        name: {
            "drifted": result.drifted,
            "test": result.test,
            "statistic": result.statistic,
            "threshold": result.threshold,
        }
        for name, result in report.columns.items()
    }
    return {
        "read_s": read_s,
        "drift_s": drift_s,
        "drift_cpu_s": cpu_s,
        "columns": columns,
        "dataset_drift": report.dataset_drift,
    }


def child_evidently(ref_path: str, cur_path: str) -> dict[str, Any]:
    """Evidently's DataDriftPreset with its defaults (0.7 API, or the legacy one)."""
    import warnings

    import evidently

    warnings.filterwarnings("ignore")
    reference, current, read_s = _read(ref_path, cur_path)
    numeric = [str(c) for c in reference.columns if reference[c].dtype.kind in "fiu"]
    categorical = [str(c) for c in reference.columns if str(c) not in numeric]
    version = evidently.__version__
    try:
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset
    except ImportError:  # evidently < 0.7
        return _evidently_legacy(reference, current, numeric, categorical, read_s, version)

    start, cpu_start = time.perf_counter(), time.process_time()
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    snapshot = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    drift_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    columns: dict[str, Any] = {}
    dataset_drift = None
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            method = str(config["method"])
            value, limit = float(metric["value"]), float(config["threshold"])
            # Evidently's stattests: p-values drift below the threshold, distances at or above.
            is_p_value = "p_value" in method.lower() or "p-value" in method.lower()
            columns[config["column"]] = {
                "drifted": value < limit if is_p_value else value >= limit,
                "test": method,
                "statistic": value,
                "threshold": limit,
            }
        elif config["type"].endswith("DriftedColumnsCount"):
            dataset_drift = metric["value"]["share"] >= config["drift_share"]
    return {
        "read_s": read_s,
        "drift_s": drift_s,
        "drift_cpu_s": cpu_s,
        "columns": columns,
        "dataset_drift": dataset_drift,
        "version": version,
    }


def _evidently_legacy(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    read_s: float,
    version: str,
) -> dict[str, Any]:
    from evidently import ColumnMapping  # type: ignore[attr-defined, unused-ignore]
    from evidently.metric_preset import DataDriftPreset  # type: ignore[import-not-found]
    from evidently.report import Report  # type: ignore[import-not-found]

    start = time.perf_counter()
    report = Report(metrics=[DataDriftPreset()])
    report.run(
        reference_data=reference,
        current_data=current,
        column_mapping=ColumnMapping(numerical_features=numeric, categorical_features=categorical),
    )
    result = report.as_dict()
    drift_s = time.perf_counter() - start
    columns: dict[str, Any] = {}
    dataset_drift = None
    for metric in result["metrics"]:
        found = metric["result"]
        if "drift_by_columns" in found:
            for name, column in found["drift_by_columns"].items():
                columns[name] = {
                    "drifted": bool(column["drift_detected"]),
                    "test": column["stattest_name"],
                    "statistic": float(column["drift_score"]),
                    "threshold": float(column["stattest_threshold"]),
                }
        if "dataset_drift" in found:
            dataset_drift = bool(found["dataset_drift"])
    return {
        "read_s": read_s,
        "drift_s": drift_s,
        "columns": columns,
        "dataset_drift": dataset_drift,
        "version": version,
    }


def child_retailml_verdict(ref_path: str, cur_path: str) -> dict[str, Any]:
    """detect_drift computing only the statistics each verdict needs."""
    return child_retailml(ref_path, cur_path, scope="verdict")


CHILDREN = {
    "read": child_read,
    "retailml": child_retailml,
    "retailml_verdict": child_retailml_verdict,
    "evidently": child_evidently,
}


# --- Parent ---------------------------------------------------------------------------


def _comparable(retailml_column: dict[str, Any]) -> float:
    """retailml's statistic on Evidently's scale (Jensen-Shannon in natural log)."""
    value = float(retailml_column["statistic"])
    if retailml_column["test"] == "jensenshannon":
        return value * math.sqrt(math.log(2))
    return value


def compare(
    plan: list[dict[str, Any]], ours: dict[str, Any], theirs: dict[str, Any]
) -> list[dict[str, Any]]:
    """One row per column: the expected verdict, each tool's verdict and statistic."""
    rows = []
    for spec in plan:
        name = spec["name"]
        mine, other = ours["columns"][name], theirs["columns"].get(name)
        rows.append(
            {
                "column": name,
                "kind": spec["kind"],
                "expected_drift": spec["expected_drift"],
                "retailml_drifted": mine["drifted"],
                "evidently_drifted": None if other is None else other["drifted"],
                "retailml_test": mine["test"],
                "evidently_test": None if other is None else other["test"],
                "retailml_statistic": mine["statistic"],
                "retailml_statistic_evidently_scale": _comparable(mine),
                "evidently_statistic": None if other is None else other["statistic"],
                "agree": other is not None and mine["drifted"] == other["drifted"],
            }
        )
    return rows


def _median(runs: list[dict[str, Any]], key: str) -> float:
    values = [run[key] for run in runs if key in run]
    return float(statistics.median(values)) if values else math.nan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=TARGET_ROWS, help="rows per frame")
    parser.add_argument("--columns", type=int, default=TARGET_COLUMNS)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/bench_drift"))
    parser.add_argument(
        "--evidently-path",
        type=Path,
        default=None,
        help="a folder with Evidently installed, prepended to the Evidently child's PYTHONPATH",
    )
    parser.add_argument(
        "--evidently-repeat",
        type=int,
        default=None,
        help="run Evidently only in the first N repeats (default: every repeat); it is slow",
    )
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--paths", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        result = CHILDREN[args.child](*args.paths)
        print(json.dumps(result))
        return 0

    start = time.perf_counter()
    ref_path, cur_path, plan = generate(args.rows, args.columns, args.work_dir)
    print(f"data: {ref_path.parent} ({time.perf_counter() - start:.1f} s incl. cache check)")
    tools = ["read", "retailml", "retailml_verdict"]
    tools += [] if args.skip_evidently else ["evidently"]
    runs: dict[str, list[dict[str, Any]]] = {tool: [] for tool in tools}
    loads = [load_average()]
    evidently_repeat = args.repeat if args.evidently_repeat is None else args.evidently_repeat
    for attempt in range(args.repeat):
        for tool in tools:
            if tool == "read" and attempt > 0:
                continue  # the floor needs one run
            if tool == "evidently" and attempt >= evidently_repeat:
                continue
            env = dict(os.environ)
            if tool == "evidently" and args.evidently_path is not None:
                extra = str(args.evidently_path)
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra, env.get("PYTHONPATH")]))
            command = [sys.executable, __file__, "--child", tool, "--paths"]
            command += [str(ref_path), str(cur_path)]
            result = run_measured(command, what=f"the {tool} run", env=env)
            runs[tool].append(result)
            print(
                f"  run {attempt + 1} {tool:>16}: drift {result['drift_s']:7.2f} s, "
                f"read {result['read_s']:5.2f} s, peak {result['peak_mb']:7.0f} MB",
                flush=True,
            )
        loads.append(load_average())

    summary: dict[str, Any] = {}
    for tool in tools:
        summary[tool] = {
            "drift_s_median": _median(runs[tool], "drift_s"),
            "drift_s_runs": [run["drift_s"] for run in runs[tool]],
            "drift_cpu_s_median": _median(runs[tool], "drift_cpu_s"),
            "read_s_median": _median(runs[tool], "read_s"),
            "peak_mb_median": _median(runs[tool], "peak_mb"),
            "peak_mb_runs": [run["peak_mb"] for run in runs[tool]],
            "drift_cpu_s_runs": [run.get("drift_cpu_s") for run in runs[tool]],
        }
    expected = {spec["name"]: spec["expected_drift"] for spec in plan}
    report: dict[str, Any] = {
        "rows_per_frame": args.rows,
        "columns": args.columns,
        "repeat": args.repeat,
        "evidently_repeat": 0 if args.skip_evidently else evidently_repeat,
        "python": platform.python_version(),
        "load_average": loads,
        "summary": summary,
    }

    print()
    print(
        f"{args.rows:,} rows per frame x {args.columns} columns, median of {args.repeat} "
        f"(Evidently: {0 if args.skip_evidently else evidently_repeat})"
    )
    print(
        f"{'tool':<31} {'drift s':>8} {'CPU s':>7} {'read s':>7} {'peak RSS MB':>12} "
        f"{'over read MB':>13}"
    )
    floor = summary["read"]["peak_mb_median"]
    for tool in tools:
        line = summary[tool]
        print(
            f"{TOOLS[tool]:<31} {line['drift_s_median']:>8.2f} "
            f"{line['drift_cpu_s_median']:>7.2f} {line['read_s_median']:>7.2f} "
            f"{line['peak_mb_median']:>12.0f} {line['peak_mb_median'] - floor:>13.0f}"
        )
    for mode in ("retailml", "retailml_verdict"):
        ours = runs[mode][-1]
        right = sum(ours["columns"][name]["drifted"] == want for name, want in expected.items())
        seconds = summary[mode]["drift_s_median"]
        verdict = "meets" if seconds < TARGET_SECONDS else "misses"
        section: dict[str, Any] = {
            "matches_injected": f"{right}/{len(plan)}",
            "dataset_drift": ours["dataset_drift"],
        }
        print(f"\n{TOOLS[mode]}: {seconds:.2f} s, {verdict} the {TARGET_SECONDS:g} s target")
        print(f"  verdicts matching the injected drift: {right}/{len(plan)}")
        if not args.skip_evidently:
            theirs = runs["evidently"][-1]
            rows = compare(plan, ours, theirs)
            agree = sum(row["agree"] for row in rows)
            speedup = summary["evidently"]["drift_s_median"] / seconds
            # Ratios per repeat: each pair ran back to back under the same load
            # (only the repeats in which Evidently ran).
            pairs = [
                e["drift_s"] / r["drift_s"]
                for r, e in zip(runs[mode], runs["evidently"], strict=False)
            ]
            differences = [
                abs(row["retailml_statistic_evidently_scale"] - row["evidently_statistic"])
                for row in rows
                if row["evidently_statistic"] is not None
            ]
            disagree = [row["column"] for row in rows if not row["agree"]]
            section.update(
                {
                    "speedup_median": speedup,
                    "speedup_per_repeat": pairs,
                    "peak_ratio_evidently_over_retailml": summary["evidently"]["peak_mb_median"]
                    / summary[mode]["peak_mb_median"],
                    "verdicts_agree": f"{agree}/{len(rows)}",
                    "disagreeing_columns": disagree,
                    "max_statistic_difference": max(differences, default=math.nan),
                    "per_column": rows,
                }
            )
            verdict = "meets" if speedup >= TARGET_SPEEDUP else "misses"
            print(
                f"  {speedup:.1f}x faster than Evidently (per repeat "
                f"{', '.join(f'{p:.1f}x' for p in pairs)}); {verdict} the "
                f"{TARGET_SPEEDUP:g}x target"
            )
            print(
                f"  per-column verdicts agree with Evidently: {agree}/{len(rows)}"
                + (f"; disagree: {disagree}" if disagree else "")
            )
            print(
                "  largest statistic difference (Evidently's scale): "
                f"{max(differences, default=math.nan):.2e}"
            )
        report[mode] = section
    if not args.skip_evidently:
        theirs = runs["evidently"][-1]
        report["evidently_version"] = theirs.get("version")
        report["evidently_dataset_drift"] = theirs["dataset_drift"]
        print(f"\nevidently {theirs.get('version')}, dataset drift {theirs['dataset_drift']}")
    print(f"load average: {loads[0]} -> {loads[-1]}")

    OUT_DIR.mkdir(exist_ok=True)
    out = OUT_DIR / f"drift_{args.rows}x{args.columns}.json"
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
