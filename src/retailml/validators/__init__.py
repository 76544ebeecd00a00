"""Layer 2: data-quality checks on feature frames.

The public face is :mod:`retailml.validators.data_quality` (the guide's
``src.domain.validators.data_quality``); its names are re-exported here.
"""

from __future__ import annotations

from retailml.validators.data_quality import (
    LOGICAL_TYPES,
    OUTLIER_METHODS,
    CheckResult,
    DataQualityValidator,
    Finding,
)

__all__ = [
    "LOGICAL_TYPES",
    "OUTLIER_METHODS",
    "CheckResult",
    "DataQualityValidator",
    "Finding",
]
