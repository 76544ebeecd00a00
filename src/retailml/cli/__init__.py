"""Layer 8: the ``retailml`` command line (Typer + Rich).

The only layer that formats for a terminal.
"""

from __future__ import annotations

from retailml.cli.main import app, main, run

__all__ = ["app", "main", "run"]
