"""``retailml serve``: run the prediction service (FastAPI on uvicorn)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from retailml.cli._console import err
from retailml.core.settings import get_settings


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default: RETAILML_SERVE_HOST).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Port (default: RETAILML_SERVE_PORT)."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Worker processes (default: RETAILML_SERVE_WORKERS)."),
    ] = None,
    environment: Annotated[
        str | None,
        typer.Option(
            help="Deployment environment to route to: production or staging "
            "(default: RETAILML_SERVE_ENVIRONMENT)."
        ),
    ] = None,
    log_level: Annotated[
        str, typer.Option(help="uvicorn's log level: critical, error, warning, info, debug.")
    ] = "warning",
) -> None:
    """Serve predictions over HTTP: POST /api/v1/ml/predict and friends; docs at /docs.

    Prediction requests need an X-API-Key from RETAILML_API_KEYS; admin endpoints
    'Authorization: Bearer <RETAILML_ADMIN_TOKEN>'.

    Example: RETAILML_API_KEYS=secret retailml serve --host 127.0.0.1 --port 8000 --workers 2
    """
    import uvicorn

    settings = get_settings()
    if environment is not None:
        if environment not in ("production", "staging"):
            raise typer.BadParameter(
                f"expected production or staging; got {environment!r}", param_hint="--environment"
            )
        # Worker processes read their settings from the environment.
        os.environ["RETAILML_SERVE_ENVIRONMENT"] = environment
        get_settings.cache_clear()
    if not settings.api_keys:
        err.print(
            "[yellow]warning:[/yellow] RETAILML_API_KEYS is empty: every prediction request "
            "will be refused (401) until keys are set"
        )
    bind_host = host or settings.serve_host
    bind_port = port or settings.serve_port
    err.print(
        f"retailml serve: http://{bind_host}:{bind_port} "
        f"({workers or settings.serve_workers} worker(s), docs at /docs)"
    )
    uvicorn.run(
        "retailml.serving.app:create_app",
        factory=True,
        host=bind_host,
        port=bind_port,
        workers=workers or settings.serve_workers,
        log_level=log_level,
        access_log=False,
        loop="uvloop",
        http="httptools",
    )
