"""Layer 7: the prediction service (``retailml serve``), a FastAPI application.

::

    from retailml.serving import create_app

    app = create_app()          # uvicorn --factory retailml.serving.app:create_app

See :mod:`retailml.serving.app` for the endpoints.
"""

from __future__ import annotations

from retailml.serving.app import create_app

__all__ = ["create_app"]
