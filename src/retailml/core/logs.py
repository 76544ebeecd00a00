"""Logging: one file per workspace, ``<home>/logs/retailml.log``, at ``RETAILML_LOG_LEVEL``."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

from retailml.core.settings import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
_HANDLER_NAME = "retailml-workspace-log"


class _WorkspaceFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating file handler that creates its directory on the first record.

    Opening lazily keeps read-only commands (``--help``) from creating a workspace.
    """

    def _open(self):  # type: ignore[no-untyped-def]
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def configure_logging(settings: Settings) -> Path:
    """Send ``retailml.*`` records to the workspace log file (idempotent).

    Returns:
        The log file path.
    """
    path = settings.home.resolve() / "logs" / "retailml.log"
    root = logging.getLogger("retailml")
    root.setLevel(settings.log_level)
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
            handler.close()
    handler = _WorkspaceFileHandler(path, maxBytes=10 << 20, backupCount=5, delay=True)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    return path
