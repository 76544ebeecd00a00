"""``retailml monitor``: performance history, data drift and alerts of deployed models."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from retailml.cli._console import out
from retailml.core.errors import ConfigError, problem
from retailml.core.settings import get_settings

monitor_app = typer.Typer(
    help="Model monitoring: performance history, data drift and alerts.", no_args_is_help=True
)

#: The version ``monitor performance`` passes when it reads every version.
_ANY_VERSION = "*"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


@monitor_app.command("performance")
def performance(
    model: Annotated[str, typer.Option(help="The model name.")],
    version: Annotated[
        str | None, typer.Option(help="Only this version (default: every version).")
    ] = None,
    since: Annotated[str, typer.Option(help="How far back: e.g. 24h, 7d, 4w.")] = "7d",
    metric: Annotated[str | None, typer.Option(help="Only this metric, e.g. mape.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the stored performance history (one row per metric and window), oldest first.

    Example: retailml monitor performance --model sales_forecast --version 1.2.0 --since 7d
    """
    from retailml.core.db import utcnow
    from retailml.monitoring.enterprise_dashboard import parse_duration
    from retailml.monitoring.model_monitor import ModelMonitor

    start = utcnow() - parse_duration(since)
    with ModelMonitor(model, version or _ANY_VERSION, get_settings()) as monitor:
        history = monitor.performance_history(metric, start, all_versions=version is None)
    if as_json:
        records = [
            {key: (None if value != value else value) for key, value in row.items()}  # NaN
            for row in history.to_dict(orient="records")
        ]
        out.print_json(json.dumps(records, default=lambda v: v.isoformat()))
        return
    if history.empty:
        out.print(f"no performance records of {model} since {start:%Y-%m-%d %H:%M} UTC")
        return
    table = Table(title=f"{model}: performance since {start:%Y-%m-%d %H:%M} UTC")
    columns = ["model_version", "arm", "metric", "value", "n", "window_end"]
    for column in columns:
        table.add_column(column)
    for row in history.itertuples(index=False):
        table.add_row(*(_cell(getattr(row, column)) for column in columns))
    out.print(table)


def _read_frame(path: Path) -> Any:
    import pandas as pd

    if not path.exists():
        raise ConfigError(
            problem("an existing Parquet or CSV file", str(path), "check the path", subject="drift")
        )
    if path.suffix.lower() == ".csv":
        return pd.read_csv(path)
    return pd.read_parquet(path)


@monitor_app.command("drift")
def drift(
    model: Annotated[str, typer.Option(help="The model name.")],
    reference: Annotated[Path, typer.Option(help="Training features (Parquet or CSV).")],
    current: Annotated[Path, typer.Option(help="Serving features (Parquet or CSV).")],
    version: Annotated[
        str | None,
        typer.Option(
            help="The model version (default: its active deployment, else 'unversioned')."
        ),
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="p-value / distance limit (default: the test's own).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Compare serving features with training features column by column and store the run.

    Exits 0 whether or not the data drifted; the verdict is printed (and shown on
    the dashboard).

    Example: retailml monitor drift --model sales_forecast --reference ref.parquet
    --current cur.parquet
    """
    from retailml.monitoring.model_monitor import ModelMonitor

    reference_frame = _read_frame(reference)
    current_frame = _read_frame(current)
    settings = get_settings()
    with ModelMonitor(model, version or _active_version(model), settings) as monitor:
        result = monitor.detect_data_drift(reference_frame, current_frame, threshold)
        used = monitor.model_version
    if as_json:
        out.print_json(json.dumps({"model": model, "version": used, **result.to_dict()}))
        return
    verdict = "DATASET DRIFT" if result.dataset_drift else "no dataset drift"
    out.print(
        f"{model} {used}: {verdict}, {result.n_drifted} of {result.n_columns} columns drifted"
    )
    table = Table()
    for heading in ("column", "kind", "test", "statistic", "threshold", "verdict"):
        table.add_column(heading)
    for name, verdict_of in result.columns.items():
        table.add_row(
            name,
            verdict_of.kind,
            verdict_of.test,
            _cell(verdict_of.statistic),
            _cell(verdict_of.threshold),
            "DRIFTED" if verdict_of.drifted else "stable",
        )
    out.print(table)


def _active_version(model: str) -> str:
    """The version the model's active deployment serves (production first), or 'unversioned'."""
    from sqlalchemy import select

    from retailml.core.db import PlatformDB
    from retailml.core.db_deploy import Deployment

    db = PlatformDB.from_settings(get_settings())
    try:
        with db.session() as session:
            rows = session.execute(
                select(Deployment.environment, Deployment.version).where(
                    Deployment.model_name == model, Deployment.status == "active"
                )
            ).all()
    finally:
        db.dispose()
    by_environment = {environment: version for environment, version in rows}
    return by_environment.get("production") or by_environment.get("staging") or "unversioned"


@monitor_app.command("alerts")
def alerts(
    state: Annotated[
        str | None, typer.Option(help="Only this state: open, acknowledged or resolved.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    ack: Annotated[str | None, typer.Option("--ack", help="Acknowledge this alert id.")] = None,
    by: Annotated[str | None, typer.Option(help="Who acknowledges (with --ack).")] = None,
    resolve: Annotated[str | None, typer.Option(help="Resolve this alert id.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many alerts.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List alerts (newest first), or acknowledge / resolve one.

    Example: retailml monitor alerts --state open;
    retailml monitor alerts --ack 3f2a... --by on-call; retailml monitor alerts --resolve 3f2a...
    """
    from retailml.monitoring.alerts import AlertManager

    if ack is not None and not by:
        raise ConfigError(
            problem("--by NAME with --ack", "no --by", "say who handles it", subject="alerts")
        )
    manager = AlertManager(get_settings(), channels="log,database")
    try:
        changed = []
        if ack is not None:
            assert by is not None
            changed.append(manager.acknowledge(ack, by=by))
        if resolve is not None:
            changed.append(manager.resolve(resolve))
        if changed:
            if as_json:
                out.print_json(json.dumps([a.to_dict() for a in changed]))
            else:
                for alert in changed:
                    out.print(f"alert {alert.id}: {alert.state}")
            return
        found = manager.list_alerts(state, model_name=model, limit=limit)
    finally:
        manager.close()
        manager.db.dispose()
    if as_json:
        out.print_json(json.dumps([a.to_dict() for a in found]))
        return
    if not found:
        out.print("no alerts" + (f" in state {state}" if state else ""))
        return
    table = Table()
    for column in ("id", "severity", "state", "type", "model", "count", "last seen", "message"):
        table.add_column(column)
    for alert in found:
        table.add_row(
            alert.id or "",
            alert.severity,
            alert.state,
            alert.alert_type,
            " ".join(p for p in (alert.model_name, alert.model_version) if p),
            str(alert.count),
            _cell(alert.last_seen),
            alert.message,
        )
    out.print(table)
