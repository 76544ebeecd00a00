"""The data a challenger trains on: ``data_source="production"`` or a path.

``"production"`` means the workspace's current data, read the way the model
trains on it (a training config's ``data:`` section, see
:mod:`retailml.training._data`), in this order:

1. the ``data:`` section of the training config given to the pipeline;
2. the champion's recorded ``training_data`` (registry metadata);
3. the model type's default: the ``daily_sales`` feature set (forecasts: the
   ``total`` series; demand: product series), ``customer_rfm`` (segments),
   silver transactions (anomalies).

A feature set computed from an older silver data version is rebuilt from the
current silver transactions first, so new rows reach the challenger.

A path (a Parquet or CSV file, or a directory of Parquet) is read as it is.

Unless the spec sets ``holdout``, the most recent periods are kept back as the
holdout the challenger and the champion are compared on: the forecast horizon
(28 periods for demand) for time series, a fifth of the rows otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from retailml.core.db import PlatformDB
from retailml.core.errors import NotFoundError
from retailml.core.settings import Settings
from retailml.data.ingest import SILVER_TABLE
from retailml.feature_engineering.feature_pipeline import (
    FeatureEngineeringPipeline,
    load_feature_set,
)
from retailml.training._data import TrainingData, load_training_data

__all__ = ["DEFAULT_SPECS", "ResolvedData", "resolve_data"]

logger = logging.getLogger(__name__)

#: The ``data:`` section used for ``"production"`` when nothing else records one.
DEFAULT_SPECS: Final[Mapping[str, Mapping[str, Any]]] = {
    "sales_forecast": {
        "source": "feature_set",
        "name": "daily_sales",
        "filter": {"level": "total"},
    },
    "demand_prediction": {
        "source": "feature_set",
        "name": "daily_sales",
        "filter": {"level": "product"},
        "top_series": 30,
    },
    "customer_segmentation": {"source": "feature_set", "name": "customer_rfm"},
    "anomaly_detection": {"source": "silver"},
}


@dataclass
class ResolvedData:
    """Training rows, the holdout, and what the job records about them."""

    data: TrainingData
    spec: dict[str, Any]
    record: dict[str, Any]


def _refresh_feature_set(name: str, settings: Settings) -> None:
    """Rebuild a feature set whose published version predates the current silver data."""
    db = PlatformDB.from_settings(settings)
    try:
        latest = db.latest_data_version(SILVER_TABLE)
    finally:
        db.dispose()
    if latest is None:
        return
    try:
        published = load_feature_set(name, settings=settings).input_data_version
    except NotFoundError:
        published = None
    if published == latest.version:
        return
    logger.info("rebuilding feature set %s from silver %s", name, latest.version[:12])
    FeatureEngineeringPipeline({"feature_sets": [name]}, settings=settings).run()


def _default_holdout(model_type: str, hyperparameters: Mapping[str, Any]) -> int | float:
    if model_type == "sales_forecast":
        return int(hyperparameters.get("horizon") or 28)
    if model_type == "demand_prediction":
        return 28
    return 0.2


def resolve_data(
    data_source: str | Path,
    *,
    model_type: str,
    target: str | None,
    hyperparameters: Mapping[str, Any],
    config_spec: Mapping[str, Any] | None,
    champion_spec: Mapping[str, Any] | None,
    window: str | None,
    settings: Settings,
) -> ResolvedData:
    """Read the challenger's training data and holdout (see the module docstring).

    Raises:
        ConfigError, NotFoundError, DataValidationError: as ``load_training_data``.
    """
    if str(data_source) == "production":
        spec = dict(config_spec or champion_spec or DEFAULT_SPECS[model_type])
        # Silver, directly or through feature sets built from it; a config may name a file.
        from_file = spec.get("source") == "file"
        source = "path" if from_file else "silver"
        path = str(spec.get("path")) if from_file else None
    else:
        spec = {"source": "file", "path": str(data_source)}
        source = "path"
        path = str(data_source)
    if spec.get("holdout") in (None, 0):
        spec["holdout"] = _default_holdout(model_type, hyperparameters)
    if spec.get("source", "feature_set") == "feature_set" and spec.get("name"):
        _refresh_feature_set(str(spec["name"]), settings)
    data = load_training_data(spec, target=target, window=window, settings=settings)
    if data.data_version is None and source == "silver":
        db = PlatformDB.from_settings(settings)
        try:
            latest = db.latest_data_version(SILVER_TABLE)
        finally:
            db.dispose()
        data.data_version = latest.version if latest is not None else None
    record = {
        "source": source,
        "path": path,
        "window": window or spec.get("window"),
        "data_version": data.data_version,
        "spec": spec,
        "feature_set_versions": dict(data.feature_set_versions),
        "rows": len(data.train),
        "holdout_rows": 0 if data.test is None else len(data.test),
    }
    return ResolvedData(data=data, spec=spec, record=record)
