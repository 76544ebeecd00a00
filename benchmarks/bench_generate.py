"""Benchmark the synthetic transaction generator: generate + write, time and peak memory.

Each size runs in its own subprocess so its peak resident memory (``ru_maxrss``
from ``os.wait4``, see ``_common.py``) belongs to that size alone. Target: 10
million rows generated and written to Parquet in about a minute.

Usage::

    python benchmarks/bench_generate.py --rows 1000000 10000000 --format parquet
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _common import run_measured

TARGET_ROWS = 10_000_000
TARGET_SECONDS = 60.0
#: "About a minute": allow a quarter more before calling it a miss.
TOLERANCE = 1.25


def _child(rows: int, seed: int, path: Path) -> None:
    """Generate and write one table; print the timings as JSON."""
    from retailml.data.generate import GeneratorConfig, generate_transactions, write_transactions

    started = time.perf_counter()
    table = generate_transactions(GeneratorConfig(rows=rows, seed=seed))
    generated = time.perf_counter()
    write_transactions(table, path)
    written = time.perf_counter()
    result = {
        "generate": generated - started,
        "write": written - generated,
        "bytes": path.stat().st_size,
    }
    print(json.dumps(result))


def _run(rows: int, seed: int, path: Path) -> dict[str, float]:
    """Run one size in a subprocess; add its peak RSS in MB."""
    command = [sys.executable, __file__, "--child", "--rows", str(rows), "--seed", str(seed)]
    command += ["--out-path", str(path)]
    return run_measured(command, what=f"the {rows:,}-row run")


def _verdict(results: dict[int, dict[str, float]]) -> str:
    limit = TARGET_SECONDS * TOLERANCE
    if TARGET_ROWS in results:
        seconds = results[TARGET_ROWS]["generate"] + results[TARGET_ROWS]["write"]
        basis = f"10M rows took {seconds:.1f} s"
    else:
        rows = max(results)
        per_row = (results[rows]["generate"] + results[rows]["write"]) / rows
        seconds = per_row * TARGET_ROWS
        basis = f"10M rows extrapolated from {rows:,} rows: {seconds:.1f} s"
    met = "MEETS" if seconds <= limit else "MISSES"
    return f"{met} the target of 10M rows in about a minute ({basis})"


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run every size and print a table and a verdict."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, TARGET_ROWS])
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    parser.add_argument("--out-dir", type=Path, default=None, help="keep the files here")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out-path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        _child(args.rows[0], args.seed, args.out_path)
        return

    with tempfile.TemporaryDirectory(prefix="bench_generate.") as scratch:
        out_dir = args.out_dir or Path(scratch)
        results: dict[int, dict[str, float]] = {}
        for rows in args.rows:
            path = out_dir / f"transactions_{rows}.{args.format}"
            results[rows] = _run(rows, args.seed, path)
            if args.out_dir is None:
                path.unlink(missing_ok=True)

    header = (
        f"{'rows':>12} {'generate s':>11} {'write s':>8} {'total s':>8} "
        f"{'rows/s':>11} {'peak MB':>8} {'file MB':>8}"
    )
    print(f"format: {args.format}, seed: {args.seed}")
    print(header)
    print("-" * len(header))
    for rows, r in results.items():
        total = r["generate"] + r["write"]
        print(
            f"{rows:>12,} {r['generate']:>11.2f} {r['write']:>8.2f} {total:>8.2f} "
            f"{rows / total:>11,.0f} {r['peak_mb']:>8,.0f} {r['bytes'] / 2**20:>8,.1f}"
        )
    print(_verdict(results))


if __name__ == "__main__":
    main()
