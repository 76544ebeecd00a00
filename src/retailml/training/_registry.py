"""Every training algorithm by model type and name: the one place an estimator is looked up.

:data:`ALGORITHMS` maps the guide's model types to ``algorithm name ->
factory``; a factory takes the estimator's other parameters as keywords::

    ALGORITHMS["customer_segmentation"]["kmeans"](n_clusters=5)
    make_estimator("anomaly_detection", "isolation_forest", contamination=0.02)

A model type whose estimator takes an ``algorithm`` argument and lists its
names in ``ALGORITHMS`` joins with one line, e.g. ``"sales_forecast":
each_algorithm(SalesForecaster),``. Every registered algorithm must pass the
estimator contract test (tests/training), which runs over this registry.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from retailml.core.errors import ConfigError, problem
from retailml.training._anomaly import AnomalyDetector
from retailml.training._demand import DemandPredictor
from retailml.training._forecast import ALGORITHMS as FORECAST_ALGORITHMS
from retailml.training._forecast import SalesForecaster
from retailml.training._segmentation import CustomerSegmenter

__all__ = ["ALGORITHMS", "Estimator", "EstimatorFactory", "each_algorithm", "make_estimator"]


class Estimator(Protocol):
    """What every registered estimator offers (scikit-learn's estimator API)."""

    def fit(self, *args: Any, **kwargs: Any) -> Any:
        """Learn from data; returns the estimator."""

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        """Predict with the fitted estimator."""

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor arguments."""

    def set_params(self, **params: Any) -> Any:
        """Change constructor arguments; returns the estimator."""


EstimatorFactory = Callable[..., Estimator]
E = TypeVar("E", bound=Estimator)


def each_algorithm(
    estimator: Callable[..., E], names: Iterable[str] | None = None
) -> dict[str, Callable[..., E]]:
    """``name -> estimator with algorithm=name`` for each of the estimator's algorithms.

    Args:
        estimator: A class taking an ``algorithm`` argument.
        names: The algorithm names; by default the class's ``ALGORITHMS``.
    """
    chosen = tuple(getattr(estimator, "ALGORITHMS", ()) if names is None else names)
    return {name: functools.partial(estimator, algorithm=name) for name in chosen}


#: ``model type -> algorithm name -> factory``.
ALGORITHMS: dict[str, dict[str, EstimatorFactory]] = {
    "sales_forecast": each_algorithm(SalesForecaster, FORECAST_ALGORITHMS),
    "customer_segmentation": each_algorithm(CustomerSegmenter),
    "anomaly_detection": each_algorithm(AnomalyDetector),
    "demand_prediction": each_algorithm(DemandPredictor),
}


def make_estimator(model_type: str, algorithm: str, /, **params: Any) -> Estimator:
    """A new, unfitted estimator of a registered model type and algorithm.

    Args:
        model_type: e.g. ``"customer_segmentation"``.
        algorithm: e.g. ``"kmeans"``.
        **params: The estimator's other arguments (checked when it is fitted).

    Raises:
        ConfigError: for an unknown model type or algorithm, listing the known
            ones, or when ``params`` names ``algorithm`` again.
    """
    if model_type not in ALGORITHMS:
        raise ConfigError(
            problem(
                f"a model type among {', '.join(map(repr, ALGORITHMS))}",
                f"{model_type!r}",
                "choose one of the listed model types",
                subject="model_type",
            )
        )
    algorithms = ALGORITHMS[model_type]
    if algorithm not in algorithms:
        raise ConfigError(
            problem(
                f"a {model_type} algorithm among {', '.join(map(repr, algorithms))}",
                f"{algorithm!r}",
                "choose one of the listed algorithms",
                subject="algorithm",
            )
        )
    if "algorithm" in params:
        raise ConfigError(
            problem(
                "the algorithm named once",
                f"algorithm={algorithm!r} and again in the parameters as {params['algorithm']!r}",
                "leave 'algorithm' out of the parameters",
                subject="algorithm",
            )
        )
    return algorithms[algorithm](**params)
