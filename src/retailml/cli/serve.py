"""``retailml serve``: run the prediction service (FastAPI on uvicorn)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from retailml.cli._console import err
from retailml.core.settings import Settings, get_settings


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
    processes = workers or settings.serve_workers
    err.print(
        f"retailml serve: http://{bind_host}:{bind_port} ({processes} worker(s), docs at /docs)"
    )
    with _shared_metrics(processes, settings):
        uvicorn.run(
            "retailml.serving.app:create_app",
            factory=True,
            host=bind_host,
            port=bind_port,
            workers=processes,
            log_level=log_level,
            access_log=False,
            loop="uvloop",
            http="httptools",
        )


@contextlib.contextmanager
def _shared_metrics(processes: int, settings: Settings) -> Iterator[None]:
    """With several workers, a fresh directory they share Prometheus values through.

    The workers inherit PROMETHEUS_MULTIPROC_DIR, so /metrics adds up every
    worker's counts whichever one answers the scrape. A directory the user set
    is used as it is; one made here is removed when the service stops.
    """
    from retailml.core.workspace import Workspace
    from retailml.serving._metrics import MULTIPROCESS_ENV

    if processes < 2 or os.environ.get(MULTIPROCESS_ENV):
        yield
        return
    scratch = Workspace.from_settings(settings).tmp
    scratch.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="prometheus-", dir=scratch))
    os.environ[MULTIPROCESS_ENV] = str(directory)
    try:
        yield
    finally:
        os.environ.pop(MULTIPROCESS_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)
