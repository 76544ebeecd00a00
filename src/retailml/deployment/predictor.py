"""Predictors: a loaded model version that answers prediction requests.

The guide's serving snippet, as written::

    from retailml.deployment.model_server import get_model_predictor

    predictor = get_model_predictor("sales_forecast_prophet", "1.2.0")
    prediction = await predictor.predict(
        features={"series_id": "total"}, horizon=14, confidence_interval=0.95
    )
    prediction.values, prediction.lower_bound, prediction.upper_bound

The model is loaded through :meth:`ModelRegistry.load_model`, so its artifact
digest is verified before it serves. What ``features`` means depends on the
model type:

* ``sales_forecast``: ``{"series_id": ...}`` (or ``entity_id``); a model with
  one series (or a ``total`` series) needs no key. ``horizon`` (default: the
  trained horizon) and ``confidence_interval`` (0.95 or 95) pick the forecast.
  A fitted forecaster is deterministic, so each (horizon, level) forecast is
  computed once per model version and cached: serving a forecast is then a
  dictionary lookup.
* ``customer_segmentation``, ``anomaly_detection``, ``demand_prediction``: a
  mapping of feature name to value, or a list of them (one row each); the
  model's signature checks columns and types.

Bad input raises :class:`~retailml.core.errors.DataValidationError` naming the
field and the reason, never a bare exception.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd

from retailml.core.errors import DataValidationError, RetailMLError, problem
from retailml.core.settings import Settings

__all__ = ["Prediction", "Predictor", "get_model_predictor"]

#: Series keys a forecast request may use, in order of preference.
SERIES_KEYS: Final = ("series_id", "entity_id", "store_id")
#: Forecast cache entries per model version (horizon x level combinations).
_FORECAST_CACHE_LIMIT: Final = 256


@dataclass(frozen=True)
class Prediction:
    """What a predictor returns.

    ``values`` are the predictions (a forecast's values per step, a segment
    per row, an anomaly score per row, a demand per row); ``lower_bound`` and
    ``upper_bound`` the forecast's interval (None for other model types).
    ``details`` holds the model's other outputs per row (dates and series of
    a forecast, segment names, anomaly flags).
    """

    values: list[Any]
    lower_bound: list[float] | None
    upper_bound: list[float] | None
    model_name: str
    model_version: str
    model_type: str
    details: dict[str, list[Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Series:
    dates: list[str]
    values: list[float]
    lower: list[float] | None
    upper: list[float] | None


def _floats(column: pd.Series) -> list[float]:
    return [float(v) if v == v else math.nan for v in column.to_numpy(dtype=float)]


def _level(confidence_interval: float | None) -> float:
    if confidence_interval is None:
        return 95.0
    if isinstance(confidence_interval, bool) or not isinstance(confidence_interval, int | float):
        raise DataValidationError(
            problem(
                "a number in (0, 1) or (1, 100)",
                repr(confidence_interval),
                "pass e.g. 0.95",
                subject="confidence_interval",
            )
        )
    value = float(confidence_interval)
    level = value * 100 if 0 < value < 1 else value
    if not (0 < level < 100) or not math.isfinite(level):
        raise DataValidationError(
            problem(
                "a number in (0, 1) or (1, 100)",
                repr(confidence_interval),
                "pass e.g. 0.95 for a 95 % interval",
                subject="confidence_interval",
            )
        )
    return round(level, 6)


class Predictor:
    """One loaded model version (see the module docstring).

    Args:
        model_name: Registered model name.
        model_version: Its semantic version.
        model: The MLflow pyfunc model (``ModelRegistry.load_model``).
    """

    def __init__(self, model_name: str, model_version: str, model: Any) -> None:
        self.model_name = model_name
        self.model_version = model_version
        self.model = model
        python_model = None
        try:
            python_model = model.unwrap_python_model()
        except Exception:  # not a python_function model of retailml's
            python_model = None
        self._python_model = python_model
        self.model_type: str = str(getattr(python_model, "model_type", "unknown"))
        self._forecasts: dict[tuple[int | None, float], dict[str, _Series]] = {}
        self._forecast_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Predictor({self.model_name!r}, {self.model_version!r}, type={self.model_type!r})"

    @property
    def is_forecast(self) -> bool:
        """Whether the model is a sales forecaster."""
        return self.model_type == "sales_forecast"

    # --- forecasts --------------------------------------------------------------------------

    def cached_forecast(
        self, horizon: int | None, confidence_interval: float | None
    ) -> dict[str, _Series] | None:
        """The cached forecast of every series, or None when not computed yet."""
        return self._forecasts.get((horizon, _level(confidence_interval)))

    def forecast_all(
        self, horizon: int | None, confidence_interval: float | None
    ) -> dict[str, _Series]:
        """Every series' forecast at ``horizon`` and the interval's level (cached)."""
        level = _level(confidence_interval)
        if horizon is not None and (
            isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1
        ):
            raise DataValidationError(
                problem("a positive integer", repr(horizon), "pass e.g. 14", subject="horizon")
            )
        key = (horizon, level)
        found = self._forecasts.get(key)
        if found is not None:
            return found
        with self._forecast_lock:
            found = self._forecasts.get(key)
            if found is not None:
                return found
            frame = self._raw_forecast(horizon, level)
            series: dict[str, _Series] = {}
            has_bounds = "lower" in frame.columns and "upper" in frame.columns
            for sid, part in frame.groupby("series_id", sort=False):
                dates = pd.to_datetime(part["date"]).dt.strftime("%Y-%m-%d").tolist()
                series[str(sid)] = _Series(
                    dates=dates,
                    values=_floats(part["prediction"]),
                    lower=_floats(part["lower"]) if has_bounds else None,
                    upper=_floats(part["upper"]) if has_bounds else None,
                )
            if len(self._forecasts) >= _FORECAST_CACHE_LIMIT:
                self._forecasts.clear()
            self._forecasts[key] = series
            return series

    def _raw_forecast(self, horizon: int | None, level: float) -> pd.DataFrame:
        wrapped = self._python_model
        estimator = getattr(wrapped, "model", None)
        try:
            if estimator is not None and hasattr(estimator, "predict"):
                frame: pd.DataFrame = estimator.predict(horizon=horizon, level=level)
            else:  # pragma: no cover - retailml forecasters always expose predict
                frame = self.model.predict(pd.DataFrame({"horizon": [horizon]}))
        except RetailMLError:
            raise
        except (ValueError, TypeError) as exc:
            raise DataValidationError(
                problem(
                    "a horizon and interval the model can forecast",
                    f"horizon={horizon!r}, level={level!r} failing with {exc}",
                    "use a smaller horizon or the 0.8-0.99 interval",
                    subject=f"model {self.model_name!r} {self.model_version}",
                )
            ) from exc
        return frame

    def series_key(self, features: Mapping[str, Any] | None, series: Mapping[str, Any]) -> str:
        """The series a forecast request asks for."""
        for name in SERIES_KEYS:
            if features and name in features and features[name] is not None:
                value = features[name]
                if not isinstance(value, str | int) or isinstance(value, bool):
                    raise DataValidationError(
                        problem(
                            "a string or integer series id",
                            repr(value),
                            'pass e.g. {"series_id": "total"}',
                            subject=f"features.{name}",
                        )
                    )
                key = str(value)
                if key not in series:
                    shown = ", ".join(sorted(series)[:20])
                    raise DataValidationError(
                        problem(
                            f"a series the model forecasts ({shown})",
                            repr(value),
                            "pick one of those series ids",
                            subject=f"features.{name}",
                        )
                    )
                return key
        if len(series) == 1:
            return next(iter(series))
        if "total" in series:
            return "total"
        shown = ", ".join(sorted(series)[:20])
        raise DataValidationError(
            problem(
                "features naming a series (series_id)",
                f"features without one, and the model forecasts {len(series)} series",
                f'pass e.g. {{"series_id": "{sorted(series)[0]}"}} (series: {shown})',
                subject="features.series_id",
            )
        )

    def forecast_prediction(
        self,
        features: Mapping[str, Any] | None,
        horizon: int | None,
        confidence_interval: float | None,
    ) -> Prediction | None:
        """The forecast from the cache alone, or None if it must be computed first."""
        series = self.cached_forecast(horizon, confidence_interval)
        if series is None:
            return None
        return self._forecast_from(series, features)

    def _forecast_from(
        self, series: Mapping[str, _Series], features: Mapping[str, Any] | None
    ) -> Prediction:
        key = self.series_key(features, series)
        found = series[key]
        return Prediction(
            values=found.values,
            lower_bound=found.lower,
            upper_bound=found.upper,
            model_name=self.model_name,
            model_version=self.model_version,
            model_type=self.model_type,
            details={"dates": found.dates, "series_id": [key]},
        )

    # --- rows -------------------------------------------------------------------------------

    def _rows(self, features: Any) -> pd.DataFrame:
        rows: Sequence[Mapping[str, Any]]
        if isinstance(features, Mapping):
            rows = [features]
        elif isinstance(features, Sequence) and not isinstance(features, str | bytes):
            rows = list(features)
        else:
            raise DataValidationError(
                problem(
                    "a mapping of feature name to value, or a list of them",
                    type(features).__name__,
                    'pass e.g. {"recency": 10, "frequency": 3, "monetary": 120.0}',
                    subject="features",
                )
            )
        if not rows:
            raise DataValidationError(
                problem(
                    "at least one row of features", "an empty list", "add a row", subject="features"
                )
            )
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping) or not row:
                raise DataValidationError(
                    problem(
                        "a non-empty mapping of feature name to value",
                        repr(row)[:100],
                        "give each row as {name: value}",
                        subject=f"features[{i}]",
                    )
                )
        return pd.DataFrame(list(rows))

    def predict_sync(
        self,
        features: Any,
        horizon: int | None = None,
        confidence_interval: float | None = 0.95,
    ) -> Prediction:
        """:meth:`predict`, blocking (runs the model in the calling thread)."""
        if self.is_forecast:
            if features is not None and not isinstance(features, Mapping):
                raise DataValidationError(
                    problem(
                        "a mapping such as {'series_id': 'total'}",
                        type(features).__name__,
                        'pass features={"series_id": ...}',
                        subject="features",
                    )
                )
            series = self.forecast_all(horizon, confidence_interval)
            return self._forecast_from(series, features)
        frame = self._rows(features)
        output = self._predict_frame(frame)
        return self._rows_prediction(output)

    def _predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException

        try:
            output = self.model.predict(self._conform(frame))
        except MlflowException as exc:
            raise DataValidationError(
                problem(
                    "features matching the model's signature",
                    _schema_reason(exc.message),
                    "send the model's input columns with their types",
                    subject="features",
                )
            ) from exc
        except RetailMLError:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            raise DataValidationError(
                problem(
                    "features the model can predict from",
                    f"{type(exc).__name__}: {str(exc)[:300]}",
                    "check the feature names, types and missing values",
                    subject="features",
                )
            ) from exc
        return pd.DataFrame(output)

    def _conform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Cast JSON's types to the signature's where no value changes (int64 -> int32,
        ISO strings -> datetimes, ...); what cannot be cast is left for the schema check."""
        try:
            schema = self.model.metadata.get_input_schema()
        except Exception:
            return frame
        if schema is None or not schema.has_input_names():
            return frame
        from mlflow.types import DataType

        casts: dict[Any, np.dtype[Any]] = {
            DataType.integer: np.dtype("int32"),
            DataType.long: np.dtype("int64"),
            DataType.float: np.dtype("float32"),
            DataType.double: np.dtype("float64"),
            DataType.boolean: np.dtype("bool"),
        }
        frame = frame.copy()
        for spec in schema.inputs:
            name = getattr(spec, "name", None)
            kind = getattr(spec, "type", None)
            if name not in frame.columns:
                continue
            column = frame[name]
            try:
                if kind == DataType.datetime:
                    frame[name] = pd.to_datetime(column)
                elif kind in casts and not column.isna().any():
                    cast = column.astype(casts[kind])
                    if (
                        kind in (DataType.integer, DataType.long, DataType.boolean)
                        and not (cast.astype("float64") == column.astype("float64")).all()
                    ):
                        continue
                    frame[name] = cast
                elif kind in (DataType.float, DataType.double):
                    frame[name] = column.astype(casts[kind])
            except (TypeError, ValueError, OverflowError):
                continue
        return frame

    def _rows_prediction(self, output: pd.DataFrame) -> Prediction:
        main = {
            "customer_segmentation": "segment",
            "anomaly_detection": "score",
            "demand_prediction": "prediction",
        }.get(self.model_type, output.columns[0] if len(output.columns) else "prediction")
        values = output[main].tolist() if main in output else []
        details = {
            str(col): output[col].tolist() for col in output.columns if str(col) != str(main)
        }
        return Prediction(
            values=[_plain(v) for v in values],
            lower_bound=None,
            upper_bound=None,
            model_name=self.model_name,
            model_version=self.model_version,
            model_type=self.model_type,
            details={k: [_plain(v) for v in vs] for k, vs in details.items()},
        )

    async def predict(
        self,
        features: Any = None,
        horizon: int | None = None,
        confidence_interval: float | None = 0.95,
    ) -> Prediction:
        """Predict (see the module docstring); model work runs off the event loop.

        Raises:
            DataValidationError: for features, horizon or interval the model cannot use.
        """
        if self.is_forecast and (features is None or isinstance(features, Mapping)):
            cached = self.forecast_prediction(features, horizon, confidence_interval)
            if cached is not None:
                return cached
        return await asyncio.to_thread(self.predict_sync, features, horizon, confidence_interval)


def _schema_reason(message: str) -> str:
    """The useful part of MLflow's schema error (it starts with the whole frame)."""
    reason = message.rsplit("Error: ", 1)[-1] if "Error: " in message else message
    return " ".join(reason.split())[:500].rstrip(".")


def _plain(value: Any) -> Any:
    """numpy scalars as Python ones (orjson and JSON columns take them)."""
    item = getattr(value, "item", None)
    if callable(item):
        value = item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def get_model_predictor(
    model_name: str,
    version: str | None = None,
    *,
    settings: Settings | None = None,
    registry: Any = None,
) -> Predictor:
    """Load a registered model version (digest verified) as a :class:`Predictor`.

    Args:
        model_name: Registered model name.
        version: Semantic version or alias; None is the production version.
        settings: retailml settings; default the process settings.
        registry: A :class:`~retailml.registry.model_registry.ModelRegistry` to load through.

    Raises:
        NotFoundError: for an unknown model, version or alias.
        ArtifactIntegrityError: when the artifact changed since registration.
    """
    from retailml.registry.model_registry import ModelRegistry

    owned = registry is None
    reg = registry if registry is not None else ModelRegistry(settings)
    try:
        record = reg.get_model_version(model_name, version)
        model = reg.load_model(model_name, record.version)
    finally:
        if owned:
            reg.close()
    return Predictor(model_name, str(record.version), model)
