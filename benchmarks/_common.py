"""Helpers shared by the benchmarks: run one measured step in its own process.

A step runs in a child process so that its peak resident memory belongs to it
alone. The peak comes from ``os.wait4``, which returns the rusage of that one
child; ``resource.getrusage(RUSAGE_CHILDREN)`` would instead give the largest
peak of every child waited for so far, hiding a smaller step behind a larger
one. The child prints its measurements as one JSON object on its last line of
standard output.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any


def run_measured(
    command: Sequence[str], *, what: str, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Run ``command`` and return the JSON object it printed last, plus ``peak_mb``.

    Args:
        command: The child's command line.
        what: The step, for the error message (``"the 1,000,000-row run"``).
        env: The child's environment (default: this process's).

    Returns:
        The child's JSON object, with its peak RSS in MB added as ``peak_mb``.

    Raises:
        SystemExit: If the child fails; its standard error has already been shown.
    """
    with subprocess.Popen(
        list(command), stdout=subprocess.PIPE, text=True, env=None if env is None else dict(env)
    ) as process:
        assert process.stdout is not None
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{what} failed with exit code {process.returncode}")
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    result["peak_mb"] = usage.ru_maxrss / 1024  # Linux reports kilobytes
    return result


def load_average() -> str:
    """The 1, 5 and 15 minute load averages with the CPU count, for the report."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"
