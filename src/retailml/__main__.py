"""``python -m retailml`` runs the command line."""

from __future__ import annotations

from retailml.cli import run

if __name__ == "__main__":
    run()
