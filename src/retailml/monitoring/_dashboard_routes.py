"""The dashboard as FastAPI routes, for the prediction service to include.

::

    app.include_router(dashboard_router(settings))

=================================  ==========================================================
``GET /dashboard``                 the HTML page (Plotly charts of every panel)
``GET /dashboard/data.json``       the panels rebuilt from the platform database; the page
                                   fetches it every ``refresh_s`` seconds and redraws
``GET /dashboard/static/plotly.min.js``  plotly.js from the installed ``plotly`` package
                                   (served locally: the page loads nothing from a CDN)
=================================  ==========================================================

The routes are plain ``def`` endpoints: FastAPI runs them in its thread pool,
so the database queries never block the event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import plotly
from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from retailml.core.db import utcnow
from retailml.core.settings import Settings, get_settings
from retailml.monitoring.enterprise_dashboard import MLOpsDashboard, Panel

__all__ = ["PLOTLY_JS", "dashboard_router"]

#: plotly.js as shipped inside the installed plotly Python package.
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def dashboard_router(
    settings: Settings | None = None,
    *,
    prefix: str = "/dashboard",
    refresh_s: float = 30.0,
    panels: Callable[[MLOpsDashboard], list[Panel]] | None = None,
    dependencies: list[Any] | None = None,
) -> APIRouter:
    """Routes serving the MLOps dashboard.

    Args:
        settings: Database and workspace (default: the process settings).
        prefix: Where the dashboard lives.
        refresh_s: Seconds between the page's refreshes of ``data.json``.
        panels: Builds the panels to show from a dashboard (default: performance
            over 7 days, drift over 30 days and health of every model).
        dependencies: FastAPI dependencies of every route (e.g. authentication).
    """
    router = APIRouter(prefix=prefix, tags=["dashboard"], dependencies=dependencies or [])
    lock = threading.Lock()
    state: dict[str, MLOpsDashboard] = {}

    def dashboard() -> MLOpsDashboard:
        with lock:
            if "dashboard" not in state:
                state["dashboard"] = MLOpsDashboard(settings or get_settings())
            return state["dashboard"]

    def build() -> list[Panel]:
        board = dashboard()
        if panels is None:
            return board.default_panels()
        with board._detached():
            return panels(board)

    @router.get("", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        board = dashboard()
        body = board.render_html(
            build(),
            plotly_src=f"{prefix}/static/plotly.min.js",
            data_url=f"{prefix}/data.json",
            refresh_s=refresh_s,
        )
        return HTMLResponse(body, headers={"Cache-Control": "no-store"})

    @router.get("/data.json")
    def data() -> JSONResponse:
        payload = {"generated_at": utcnow().isoformat(), "panels": [p.to_dict() for p in build()]}
        return JSONResponse(payload, headers={"Cache-Control": "no-store"})

    @router.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_js() -> FileResponse:
        return FileResponse(
            PLOTLY_JS,
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    return router
