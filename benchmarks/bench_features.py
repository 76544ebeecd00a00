"""Benchmark the feature pipeline against the guide's pandas functions: time and peak memory.

For each size, the same generated transactions (fixed seed) are ingested once
into a fresh workspace, so the silver Parquet parts exist; that setup is not
timed and is cached in ``--work-dir``. Then, each in its own subprocess (peak
RSS from ``os.wait4``, see ``_common.py``), with the interpreter and imports
outside the timed span:

* **retailml**: ``FeatureEngineeringPipeline`` with every feature set
  (customer_rfm, product_popularity, seasonal_trends, temporal, daily_sales),
  Parquet partitioned by year/month, ``force=True`` so it really computes;
  the time covers reading silver, computing, writing, validating and
  recording lineage.
* **retailml, like-for-like**: the same, restricted to the sets the guide's
  functions also compute (customer_rfm, product_popularity, temporal).
* **pandas**: ``pd.read_parquet`` of the same silver parts and the columns the
  retailml SQL reads, the guide's ``create_customer_rfm_features``,
  ``create_temporal_features`` and ``create_product_features`` (read from the
  vendored ``docs/ML_PIPELINE_GUIDE.md`` and run as written), and each result
  written with ``df.to_parquet(path, partition_cols=...)``.

* **ablation** (only with ``--ablation``): every set, with each exact
  distinct count (distinct invoices, distinct customers) replaced by a count
  of lines. The values are wrong; the path shows how much of the time the
  exact counts take, i.e. what the pipeline could reach without them.

Target (the issue's acceptance), at 10M rows: retailml at least 4x faster than
the pandas path, with at most a third of its peak memory.

Usage::

    python benchmarks/bench_features.py --rows 1000000 10000000 --work-dir /tmp/bench_features
    python benchmarks/bench_features.py --rows 10000000 --ablation --work-dir /tmp/bench_features
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import load_average, run_measured

if TYPE_CHECKING:
    import pandas as pd

TARGET_ROWS = 10_000_000
TARGET_SPEEDUP = 4.0
TARGET_PEAK_SHARE = 1 / 3

ALL_SETS = ("customer_rfm", "product_popularity", "seasonal_trends", "temporal", "daily_sales")
#: The sets the guide's three functions also compute.
COMPARABLE_SETS = ("customer_rfm", "product_popularity", "temporal")
#: The silver columns the feature SQL reads (DuckDB reads no others), given to pandas too.
INPUT_COLUMNS = (
    "invoice_no",
    "stock_code",
    "quantity",
    "invoice_date",
    "unit_price",
    "customer_id",
    "country",
    "total_amount",
    "is_cancellation",
    "is_non_product",
    "is_adjustment",
)

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "ML_PIPELINE_GUIDE.md"
GUIDE_HEADING = "### Customer Features"
GUIDE_FUNCTIONS = (
    "create_customer_rfm_features",
    "create_product_features",
    "create_temporal_features",
)

#: The measured paths: key -> label in the table.
PATHS = {
    "retailml": f"retailml, all {len(ALL_SETS)} sets",
    "like": f"retailml, {len(COMPARABLE_SETS)} comparable sets",
    "pandas": "pandas, guide functions",
    "ablation": "ablation: no distinct counts",
}
#: Paths run unless asked otherwise (``--ablation`` adds the last).
DEFAULT_PATHS = ("retailml", "like", "pandas")


# --------------------------------------------------------------------------- children


def _guide_functions() -> dict[str, Callable[..., Any]]:
    """The namespace of the guide's feature functions, run from the vendored guide as written.

    The guide is the contract, so its code is read from the file rather than
    copied (as the tests do): the benchmark always measures what it says. The
    caller adds ``get_holidays``, which the guide uses but never defines.
    """
    text = GUIDE.read_text(encoding="utf-8")
    found = re.search(r"```python\n(.*?)```", text[text.index(GUIDE_HEADING) :], re.DOTALL)
    assert found, f"no python block after {GUIDE_HEADING!r} in {GUIDE}"
    namespace: dict[str, Any] = {}
    exec(compile(found.group(1), str(GUIDE), "exec"), namespace)
    return namespace


def _uk_holidays(years: Iterable[int]) -> list[pd.Timestamp]:
    """UK public holidays in ``years`` (the guide calls ``get_holidays()`` but never defines it)."""
    import holidays
    import pandas as pd

    return [pd.Timestamp(day) for day in holidays.country_holidays("GB", years=sorted(years))]


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _silver_parts(home: Path) -> list[Path]:
    from retailml.core.workspace import Workspace

    return sorted(Workspace(home.resolve()).transactions.glob("part-*.parquet"))


def _child_setup(rows: int, seed: int, home: Path, source: Path) -> dict[str, Any]:
    """Generate ``rows`` transactions and ingest them into the workspace at ``home``."""
    from retailml.data.generate import GeneratorConfig, generate_transactions, write_transactions
    from retailml.data.ingest import ingest_file

    started = time.perf_counter()
    write_transactions(generate_transactions(GeneratorConfig(rows=rows, seed=seed)), source)
    generated = time.perf_counter()
    result = ingest_file(source)
    ingested = time.perf_counter()
    return {
        "generate_s": generated - started,
        "ingest_s": ingested - generated,
        "silver_rows": result.report.silver_rows,
        "silver_mb": sum(p.stat().st_size for p in _silver_parts(home)) / 2**20,
    }


class _SetTimes(logging.Handler):
    """Each computed set's own time (computed, written, validated), as the pipeline logs it.

    Sets computed at the same time overlap, so their times add up to more than the run.
    """

    def __init__(self, started: float) -> None:
        super().__init__(logging.INFO)
        self.last = started
        self.seconds: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "%s: computed version %s (%d rows) in %.2f s" and isinstance(
            record.args, tuple
        ):
            self.seconds[str(record.args[0])] = float(record.args[3])
            self.last = time.perf_counter()


def _child_retailml(sets: Sequence[str], engine_options: dict[str, Any]) -> dict[str, Any]:
    """Run the pipeline over the workspace named by ``RETAILML_HOME``."""
    from retailml.feature_engineering._duckdb_engine import CONCURRENT_SETS, default_memory_limit
    from retailml.feature_engineering.feature_pipeline import FeatureEngineeringPipeline

    pipeline = FeatureEngineeringPipeline(
        config={
            "source_tables": ["silver_transactions"],
            "feature_sets": list(sets),
            "output_format": "parquet",
            "partitioning": ["year", "month"],
            "engine_options": engine_options,
            # Validation still runs; a failure is reported instead of ending the benchmark.
            "on_validation_failure": "warn",
        }
    )
    logger = logging.getLogger("retailml.feature_engineering.feature_pipeline")
    logger.setLevel(logging.INFO)
    cpu_started, started = time.process_time(), time.perf_counter()
    timer = _SetTimes(started)
    logger.addHandler(timer)
    result = pipeline.run(force=True)
    finished = time.perf_counter()
    # Each set's own time (sets computed at once overlap); what follows the
    # last set is its manifest, publishing (renames, _latest) and lineage rows.
    steps = {**timer.seconds, "publish + lineage": finished - timer.last}
    return {
        "seconds": finished - started,
        "cpu_s": time.process_time() - cpu_started,
        "steps": steps,
        "rows_out": {name: r.row_count for name, r in result.items()},
        "out_mb": sum(_tree_bytes(r.path) for r in result.values()) / 2**20,
        "warnings": list(result.warnings),
        "engine": "duckdb threads={} memory_limit={} concurrent_sets={}".format(
            engine_options.get("threads", os.cpu_count()),
            engine_options.get("memory_limit", default_memory_limit()),
            engine_options.get("concurrent_sets", CONCURRENT_SETS),
        ),
    }


def _without_distinct_counts(sql: str) -> str:
    """``sql`` with every exact distinct count replaced by a count of lines (ablation only).

    ``COUNT(DISTINCT x)`` becomes ``COUNT(x)``, and ``daily_sales``' product
    series count purchase lines without taking off the lines that repeat a
    product, invoice and day. The values are then wrong wherever a product
    appears twice in an invoice, or a customer buys a product twice in a
    month; the point is the time the exact counts cost, which this path
    leaves out.
    """
    sql = sql.replace("COUNT(DISTINCT ", "COUNT(")
    correction = (
        "p.purchase_lines - COALESCE(r.lines, 0) AS n_invoices",
        "LEFT JOIN repeated_lines AS r ON r.stock_code = p.stock_code AND r.date = p.date",
    )
    if "repeated_lines" in sql:
        assert all(text in sql for text in correction), "daily_sales SQL changed: update this"
        sql = sql.replace(correction[0], "p.purchase_lines AS n_invoices")
        sql = sql.replace(correction[1], "")
    return sql


def _ablate_distinct_counts() -> None:
    """Make every feature set's SQL count lines where it counts distinct values."""
    import dataclasses

    from retailml.feature_engineering._definitions import FEATURE_SETS

    for name, feature_set in FEATURE_SETS.items():
        build = feature_set.build
        FEATURE_SETS[name] = dataclasses.replace(
            feature_set, build=lambda params, build=build: _without_distinct_counts(build(params))
        )


def _child_pandas(home: Path) -> dict[str, Any]:
    """Read silver with pandas, apply the guide's functions, write partitioned Parquet."""
    import pandas as pd

    guide = _guide_functions()
    out = home / "features_pandas"
    shutil.rmtree(out, ignore_errors=True)
    parts = _silver_parts(home)
    steps: dict[str, float] = {}
    cpu_started, started = time.process_time(), time.perf_counter()
    last = started

    def step(name: str) -> None:
        nonlocal last
        now = time.perf_counter()
        steps[name] = now - last
        last = now

    frames = [pd.read_parquet(part, columns=list(INPUT_COLUMNS)) for part in parts]
    df = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    del frames
    dates = df["invoice_date"]
    years = range(dates.min().year, dates.max().year + 1)
    guide["get_holidays"] = lambda: _uk_holidays(years)
    step("read")

    rfm = guide["create_customer_rfm_features"](df)
    step("customer_rfm")
    # Adds year, month, ... to df in place; create_product_features groups by that month.
    temporal = guide["create_temporal_features"](df)
    step("temporal")
    product = guide["create_product_features"](df)
    step("product")

    # The RFM table has no period: put it in the snapshot's year/month (one
    # partition), as the retailml table does.
    snapshot = df["invoice_date"].max()
    rfm["year"], rfm["month"] = snapshot.year, snapshot.month
    rfm.to_parquet(out / "customer_rfm", partition_cols=["year", "month"])
    step("write customer_rfm")
    # Parquet needs flat string column names: ("quantity", "sum") -> "quantity_sum".
    product.columns = ["_".join(part for part in column if part) for column in product.columns]
    # The guide groups by month only (years merged), so there is no year to partition by.
    product.to_parquet(out / "product_popularity", partition_cols=["month"])
    step("write product")
    temporal.to_parquet(out / "temporal", partition_cols=["year", "month"])
    step("write temporal")
    return {
        "seconds": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu_started,
        "steps": steps,
        "rows_out": {"customer_rfm": len(rfm), "product": len(product), "temporal": len(temporal)},
        "out_mb": _tree_bytes(out) / 2**20,
        "holiday_rows": int(temporal["is_holiday"].sum()),
    }


def _child(args: argparse.Namespace) -> None:
    home = Path(os.environ["RETAILML_HOME"])
    if args.child == "setup":
        result = _child_setup(args.rows[0], args.seed, home, args.source)
    elif args.child == "retailml":
        result = _child_retailml(ALL_SETS, _engine_options(args.engine_option))
    elif args.child == "like":
        result = _child_retailml(COMPARABLE_SETS, _engine_options(args.engine_option))
    elif args.child == "ablation":
        _ablate_distinct_counts()
        result = _child_retailml(ALL_SETS, _engine_options(args.engine_option))
    else:
        result = _child_pandas(home)
    print(json.dumps(result), flush=True)
    # The measurement is done. One interpreter exit in three or so after the
    # pandas path's partitioned pyarrow writes aborts ("terminate called
    # without an active exception", a worker thread torn down at exit), which
    # would discard a finished run; leave without tearing down.
    os._exit(0)


# --------------------------------------------------------------------------- parent


def _engine_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``["threads=1", "memory_limit=1GB"]`` -> ``{"threads": 1, "memory_limit": "1GB"}``."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator:
            raise SystemExit(f"--engine-option: expected KEY=VALUE, e.g. threads=1; got {pair!r}")
        options[key] = int(value) if value.isdigit() else value
    return options


def _environment(home: Path) -> dict[str, str]:
    """This environment with retailml pointed at ``home`` and at no settings file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETAILML_")}
    env["RETAILML_HOME"] = str(home)
    env["RETAILML_CONFIG"] = str(home.parent / "no-settings.yaml")
    return env


def _setup(rows: int, seed: int, work_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The workspace holding ``rows`` ingested transactions, made once per size and seed."""
    base = work_dir / f"rows-{rows}-seed-{seed}"
    home = base / "home"
    marker = base / "setup.json"
    if marker.is_file() and _silver_parts(home):
        return home, {**json.loads(marker.read_text(encoding="utf-8")), "cached": True}
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    command = [sys.executable, __file__, "--child", "setup", "--rows", str(rows)]
    command += ["--seed", str(seed), "--source", str(base / "transactions.parquet")]
    print(f"setting up {rows:,} rows in {base} ...", file=sys.stderr, flush=True)
    result = run_measured(command, what=f"the {rows:,}-row setup", env=_environment(home))
    marker.write_text(json.dumps(result), encoding="utf-8")
    return home, {**result, "cached": False}


def _measure(
    paths: Sequence[str], rows: int, home: Path, repeat: int, engine_options: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The fastest of ``repeat`` runs of each path, with the load average before it.

    The paths take turns (a, b, c, a, b, c) so that a burst of other work on
    the machine does not fall on the runs of one path only.
    """
    best: dict[str, dict[str, Any]] = {}
    for _ in range(repeat):
        for path in paths:
            load = os.getloadavg()[0]
            print(f"  {rows:,} rows: {PATHS[path]} ...", file=sys.stderr, flush=True)
            command = [sys.executable, __file__, "--child", path]
            command += [f"--engine-option={option}" for option in engine_options]
            result = run_measured(
                command, what=f"the {rows:,}-row {PATHS[path]} run", env=_environment(home)
            )
            result["load"] = load
            if path not in best or result["seconds"] < best[path]["seconds"]:
                best[path] = result
    return best


def _steps(result: dict[str, Any]) -> str:
    return ", ".join(f"{name} {seconds:.2f}" for name, seconds in result["steps"].items())


def _verdicts(results: dict[int, dict[str, dict[str, Any]]]) -> list[str]:
    with_pandas = [rows for rows, r in results.items() if "pandas" in r]
    if not with_pandas:
        return ["no verdict: the pandas path was skipped (--skip-pandas)"]
    rows = TARGET_ROWS if TARGET_ROWS in with_pandas else max(with_pandas)
    basis = "" if rows == TARGET_ROWS else f" (measured at {rows:,} rows, not at the target 10M)"
    pandas = results[rows]["pandas"]
    whole, like = results[rows]["retailml"], results[rows]["like"]
    speedup = pandas["seconds"] / whole["seconds"]
    share = whole["peak_mb"] / pandas["peak_mb"]
    like_speedup = pandas["seconds"] / like["seconds"]
    like_share = like["peak_mb"] / pandas["peak_mb"]
    speed = "MEETS" if speedup >= TARGET_SPEEDUP else "MISSES"
    memory = "MEETS" if share <= TARGET_PEAK_SHARE else "MISSES"
    ablation = []
    if "ablation" in results[rows]:
        ablated = pandas["seconds"] / results[rows]["ablation"]["seconds"]
        ablation = [
            f"with no exact distinct count at all (wrong values), the whole pipeline would be "
            f"{ablated:.2f}x faster than pandas{basis}"
        ]
    return [
        f"{speed} the target of >= {TARGET_SPEEDUP:.0f}x faster than pandas at 10M rows: "
        f"{speedup:.2f}x for the whole pipeline, {like_speedup:.2f}x like-for-like{basis}",
        f"{memory} the target of <= 1/3 of pandas' peak memory at 10M rows: "
        f"{share:.2f} for the whole pipeline, {like_share:.2f} like-for-like{basis}",
        *ablation,
    ]


def _report(
    results: dict[int, dict[str, dict[str, Any]]], setups: dict[int, dict[str, Any]], seed: int
) -> None:
    engine = next((r["retailml"]["engine"] for r in results.values()), "")
    print(f"seed: {seed}; retailml engine: {engine}; load average now: {load_average()}")
    for rows, setup in setups.items():
        origin = "cached" if setup["cached"] else "made now"
        print(
            f"setup {rows:,} rows ({origin}, not timed): generate {setup['generate_s']:.1f} s, "
            f"ingest {setup['ingest_s']:.1f} s, {setup['silver_rows']:,} silver rows, "
            f"{setup['silver_mb']:.0f} MB silver Parquet"
        )
    header = (
        f"{'rows':>12}  {'path':<30} {'seconds':>8} {'CPU s':>7} {'peak MB':>8} {'out MB':>7} "
        f"{'pandas s / this s':>17} {'this peak / pandas peak':>23} {'load':>5}"
    )
    print(header)
    print("-" * len(header))
    for rows, by_path in results.items():
        pandas = by_path.get("pandas")
        for path, r in by_path.items():
            speedup = share = "-"
            if pandas is not None:
                speedup = f"{pandas['seconds'] / r['seconds']:.2f}x"
                share = f"{r['peak_mb'] / pandas['peak_mb']:.2f}"
            print(
                f"{rows:>12,}  {PATHS[path]:<30} {r['seconds']:>8.2f} {r['cpu_s']:>7.2f} "
                f"{r['peak_mb']:>8,.0f} "
                f"{r['out_mb']:>7,.1f} {speedup:>17} {share:>23} {r['load']:>5.2f}"
            )
    print(
        "CPU s: CPU time of every thread in the timed span (pandas computes on one core, "
        "DuckDB on all); load: the 1-minute load average when the run started."
    )
    print()
    print(
        "seconds per step (the fastest run of each path; retailml: each set's own time, "
        "sets computed at the same time overlap):"
    )
    for rows, by_path in results.items():
        for path, r in by_path.items():
            print(f"  {rows:>12,} {PATHS[path]}: {_steps(r)}")
    print()
    print(
        f"retailml computes {', '.join(ALL_SETS)}; like-for-like only "
        f"{', '.join(COMPARABLE_SETS)}. Both runs also validate each set, write its "
        "manifest and record lineage."
    )
    print(
        "pandas computes the guide's customer RFM, product (per stock code and month of "
        "year, years merged: partitioned by month only) and temporal features (one row per "
        "transaction line, written in full, where retailml's temporal set has one row per "
        "country and day); the RFM table is written to the snapshot's year/month, one partition."
    )
    runs = [r for by_path in results.values() for r in by_path.values()]
    warnings = {w for r in runs for w in r.get("warnings", [])}
    if warnings:
        print(f"retailml validation warnings: {'; '.join(sorted(warnings))}")
    for rows, by_path in results.items():
        if "pandas" in by_path:
            holidays = by_path["pandas"]["holiday_rows"]
            print(
                f"  {rows:,} rows: the guide's is_holiday is true on {holidays:,} rows "
                "(it compares invoice timestamps with midnight dates)"
            )
    print()
    for verdict in _verdicts(results):
        print(verdict)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, set up and measure every size, print a table and verdicts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, TARGET_ROWS])
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="keep the generated and ingested data here, reused by later runs; delete it "
        "to set up again (default: a temporary directory, removed at the end)",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per path; the fastest one is reported"
    )
    parser.add_argument("--skip-pandas", action="store_true", help="measure retailml only")
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="also run all sets with every exact distinct count replaced by a line count "
        "(wrong values; shows what the exact counts cost)",
    )
    parser.add_argument(
        "--engine-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a retailml engine_options entry, e.g. threads=1 or memory_limit=1GB "
        "(default: the engine's own defaults)",
    )
    parser.add_argument("--child", choices=["setup", *PATHS], help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        _child(args)
        return

    paths = [p for p in DEFAULT_PATHS if not (args.skip_pandas and p == "pandas")]
    if args.ablation:
        paths.append("ablation")
    with tempfile.TemporaryDirectory(prefix="bench_features.") as scratch:
        work_dir = (args.work_dir or Path(scratch)).resolve()
        setups: dict[int, dict[str, Any]] = {}
        results: dict[int, dict[str, dict[str, Any]]] = {}
        for rows in args.rows:
            home, setups[rows] = _setup(rows, args.seed, work_dir)
            results[rows] = _measure(paths, rows, home, args.repeat, args.engine_option)
    _report(results, setups, args.seed)


if __name__ == "__main__":
    main()
