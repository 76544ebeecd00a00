"""Self-contained HTML performance reports: ``retailml report --period weekly --models all``.

:func:`write_report` builds, per model, the dashboard's performance and drift
panels over the period plus the alerts seen in it, and writes one HTML file
with plotly.js inline (the first chart carries it, the others reuse it): the
file opens offline, mailed or archived, with interactive charts.

Periods: ``daily`` (the last 24 hours), ``weekly`` (7 days), ``monthly`` (30 days),
ending now (UTC).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from sqlalchemy import select

from retailml.core.db import utcnow
from retailml.core.db_monitoring import AlertRecord
from retailml.core.errors import ConfigError, problem
from retailml.core.io import atomic_write_text
from retailml.core.settings import Settings, get_settings
from retailml.monitoring.enterprise_dashboard import MLOpsDashboard, Panel

__all__ = ["PERIODS", "ReportResult", "write_report"]

#: Report periods and their length.
PERIODS: dict[str, timedelta] = {
    "daily": timedelta(days=1),
    "weekly": timedelta(days=7),
    "monthly": timedelta(days=30),
}
_REPORT_METRICS = ("accuracy", "mape", "latency", "throughput", "error_rate")


@dataclass(frozen=True)
class ReportResult:
    """What :func:`write_report` wrote.

    Attributes:
        path: The HTML file.
        period: ``daily``, ``weekly`` or ``monthly``.
        start: Start of the period (UTC).
        end: End of the period (UTC).
        models: The models reported, in order.
        charts: The number of charts.
    """

    path: Path
    period: str
    start: datetime
    end: datetime
    models: tuple[str, ...]
    charts: int


def write_report(
    period: str,
    models: Sequence[str] | str,
    output: Path | str,
    settings: Settings | None = None,
    *,
    now: datetime | None = None,
) -> ReportResult:
    """Write the HTML performance report of ``models`` over ``period`` to ``output``.

    Args:
        period: ``daily``, ``weekly`` or ``monthly``.
        models: ``"all"`` (every model the platform database knows), a list of
            names, or a comma-separated string of names.
        output: The HTML file to write (atomically; parent directories are created).
        settings: Database and workspace (default: the process settings).
        now: End of the period (default: now, UTC).

    Raises:
        ConfigError: For an unknown period.
    """
    if period not in PERIODS:
        raise ConfigError(
            problem(
                f"a period among {', '.join(PERIODS)}",
                repr(period),
                "pass e.g. --period weekly",
                subject="report",
            )
        )
    settings = settings or get_settings()
    end = now or utcnow()
    end = end.replace(tzinfo=UTC) if end.tzinfo is None else end.astimezone(UTC)
    window = PERIODS[period]
    start = end - window
    with MLOpsDashboard(settings) as board:
        names = board.resolve_models(models)
        sections: list[str] = []
        charts = 0
        for name in names:
            performance = board.create_performance_panel(
                [name], metrics=_REPORT_METRICS, time_window=window, now=end
            )
            drift = board.create_drift_panel([name], time_window=window, now=end)
            alerts = _alerts(board, name, start)
            body, drawn = _model_section(name, performance, drift, alerts, first=charts == 0)
            sections.append(body)
            charts += drawn
    page = _page(period, start, end, names, sections)
    path = atomic_write_text(Path(output), page)
    return ReportResult(
        path=path, period=period, start=start, end=end, models=tuple(names), charts=charts
    )


def _alerts(board: MLOpsDashboard, name: str, start: datetime) -> list[dict[str, Any]]:
    record = AlertRecord
    query = (
        select(record)
        .where(record.model_name == name, record.last_seen >= start)
        .order_by(record.last_seen.desc(), record.id)
    )
    with board.db.session() as session:
        return [
            {
                "severity": r.severity,
                "type": r.alert_type,
                "state": r.state,
                "version": r.model_version,
                "count": r.count,
                "message": r.message,
                "last_seen": _stamp(r.last_seen),
            }
            for r in session.scalars(query)
        ]


def _stamp(value: datetime | None) -> str:
    if value is None:
        return ""
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return aware.strftime("%Y-%m-%d %H:%M UTC")


def _has_data(figure: dict[str, Any]) -> bool:
    return any(
        len(trace.get("x") or trace.get("y") or trace.get("z") or []) > 0
        for trace in figure.get("data", [])
    )


def _model_section(
    name: str,
    performance: Panel,
    drift: Panel,
    alerts: list[dict[str, Any]],
    *,
    first: bool,
) -> tuple[str, int]:
    parts = [f'<section class="model" id="model-{html.escape(name)}">']
    parts.append(f"<h2>{html.escape(name)}</h2>")
    drawn = 0
    for panel in (performance, drift):
        parts.append(
            f'<h3>{html.escape(panel.title)} <span class="status {html.escape(panel.status)}">'
            f"{html.escape(panel.status)}</span></h3>"
        )
        parts.append(_table(panel.rows))
        figures = [f for f in panel.figures if _has_data(f)]
        if not figures:
            parts.append('<p class="empty">no data in the period</p>')
        parts.append('<div class="charts">')
        for figure in figures:
            include = first and drawn == 0
            parts.append(
                pio.to_html(
                    go.Figure(figure),
                    include_plotlyjs=include,
                    full_html=False,
                    config={"displaylogo": False, "responsive": True},
                    default_height="320px",
                )
            )
            drawn += 1
        parts.append("</div>")
        parts.append(
            "<ul class=notes>"
            + "".join(f"<li>{html.escape(note)}</li>" for note in panel.notes)
            + "</ul>"
        )
    parts.append("<h3>Alerts in the period</h3>")
    parts.append(_table(alerts) if alerts else '<p class="empty">no alerts</p>')
    parts.append("</section>")
    return "\n".join(parts), drawn


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(row.get(k)))}</td>" for k in keys) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


#: Charts draw before the page is laid out; fit each to its final box once it is.
_RESIZE = """<script>
window.addEventListener("load", function () {
  if (!window.Plotly) return;
  document.querySelectorAll(".plotly-graph-div").forEach(function (div) {
    window.Plotly.Plots.resize(div);
  });
});
</script>
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 19px; border-bottom: 2px solid #1f2937; }
h3 { font-size: 15px; margin-top: 18px; }
section.model { margin-bottom: 36px; }
table { border-collapse: collapse; font-size: 12px; margin: 6px 0; }
th, td { border-bottom: 1px solid #e5e7eb; padding: 3px 8px; text-align: left; }
.status { padding: 1px 8px; border-radius: 8px; color: #fff; font-size: 12px; background: #888; }
.status.healthy { background: #2ca02c; } .status.degraded { background: #ff7f0e; }
.status.unhealthy { background: #d62728; }
.charts { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 8px; }
.charts > div { min-width: 0; }
.notes, .empty { font-size: 12px; color: #555; }
"""


def _page(
    period: str,
    start: datetime,
    end: datetime,
    names: list[str],
    sections: list[str],
) -> str:
    title = f"retailml {period} model performance report"
    toc = "".join(f'<li><a href="#model-{html.escape(n)}">{html.escape(n)}</a></li>' for n in names)
    empty = "" if names else "<p>No model has performance, drift, serving or alert records.</p>"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        f"<p>Period: {_stamp(start)} to {_stamp(end)} ({len(names)} model(s)). "
        "Accuracy is 1 - MAPE (forecast models); latency and throughput come from the "
        "prediction log.</p>\n"
        f"<ul>{toc}</ul>\n{empty}\n" + "\n".join(sections) + f"\n{_RESIZE}</body>\n</html>\n"
    )
