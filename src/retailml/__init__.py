"""retailml: an MLOps platform for retail sales data.

The public faces are the modules named in ARCHITECTURE.md (for example
``retailml.validators.data_quality``); this package re-exports only the
version and the error hierarchy.
"""

from __future__ import annotations

from retailml.core.errors import (
    ConfigError,
    DataValidationError,
    InputFileError,
    NotFoundError,
    RetailMLError,
    StateError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataValidationError",
    "InputFileError",
    "NotFoundError",
    "RetailMLError",
    "StateError",
    "__version__",
]
