"""``retailml report``: the HTML performance report of the guide's weekly retraining script."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from retailml.cli._console import err, out
from retailml.core.settings import get_settings


def report(
    period: Annotated[
        str, typer.Option(help="The period: daily (24 h), weekly (7 days) or monthly (30 days).")
    ] = "weekly",
    models: Annotated[str, typer.Option(help="'all' or comma-separated model names.")] = "all",
    output: Annotated[
        Path, typer.Option(help="The HTML file to write (directories are created).")
    ] = Path("reports/model_performance.html"),
    as_json: Annotated[
        bool, typer.Option("--json", help="Print what was written as JSON (for scripts).")
    ] = False,
) -> None:
    """Write an HTML report of each model's performance, drift and alerts over the period.

    The file is self-contained (plotly.js inline): it opens offline with interactive charts.

    Example: retailml report --period weekly --models all
    --output reports/weekly_model_performance.html
    """
    from retailml.monitoring.reports import write_report

    with err.status(f"writing the {period} report ..."):
        result = write_report(period, models, output, get_settings())
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "path": str(result.path),
                    "period": result.period,
                    "start": result.start.isoformat(),
                    "end": result.end.isoformat(),
                    "models": list(result.models),
                    "charts": result.charts,
                }
            )
        )
        return
    shown = ", ".join(result.models) or "no models"
    out.print(f"wrote {result.path} ({result.period}, {result.charts} charts; {shown})")
