"""Model validation: score a trained model on held-out data and gate it on thresholds.

:class:`ModelValidator` is the guide's ``ModelValidator`` ("### 2. Model
Validation")::

    result = ModelValidator().validate_model(
        model=training_result,                  # ModelTrainer.train's result
        test_data=test_features,
        validation_config={
            "performance_thresholds": {"mape": 0.15, "mae": 1000, "rmse": 1500},
            "bias_detection": True,
            "drift_detection": True,
            "fairness_metrics": ["demographic_parity", "equalized_odds"],
        },
    )
    result.status, result.performance_score, result.bias_score   # "passed", 1.0, 0.08
    result.metrics                                               # {"mape": 0.11, ...}
    result.failures                                              # the failed checks
    print(result)                                                # one line per check

The model
---------
A :class:`~retailml.training.model_trainer.TrainingResult` (preferred: it
knows its model type, target, column names and a sample of its training
inputs, the drift reference), or a bare fitted ``SalesForecaster``,
``CustomerSegmenter``, ``AnomalyDetector`` or ``DemandPredictor``: the type
comes from the class, the target from ``validation_config["target"]`` (else
the ``DemandPredictor``'s own ``target``, else the type's default), and drift
needs ``validation_config["reference_data"]``.

Test data
---------
The shape the model type trains on (see :mod:`retailml.training._tasks`),
prepared the same way, and scored by the type's ``Task.score`` so training
and validation never disagree on a metric:

* **sales_forecast**: the held-out periods of the panel (``series_id``,
  ``date``, target). The forecast starts where the model's training data
  ends (the model knows where: its one-step forecast gives each series'
  first forecast date); test rows before that are ignored (and counted in
  ``notes``), and the horizon reaches the last test date, gaps included.
  MASE needs the training history: pass ``train_data``; without it ``mase``
  is undefined (NaN), so a ``mase`` threshold fails.
* **demand_prediction**: feature rows, or ``daily_sales`` rows from which
  the lag features are derived. With ``train_data`` (``daily_sales`` rows
  too) the lags of the first test days come from the training days instead
  of being missing.
* **anomaly_detection**: feature rows or raw transaction lines; the labels
  (``is_anomaly``) are used when present. With raw ``train_data`` lines the
  product and customer medians of the features come from training and test
  lines together, not from the (possibly small) test batch alone.
* **customer_segmentation**: one row per customer.

``validation_config``
---------------------
=========================  ======================================================
key                        meaning (default)
=========================  ======================================================
``performance_thresholds`` ``{metric: limit}`` ({}). Error metrics are maxima
                           (``mape``, ``smape``, ``mae``, ``rmse``, ``mase``,
                           ``davies_bouldin_score``, ``anomaly_rate``), score
                           metrics minima (``silhouette_score``,
                           ``calinski_harabasz_score``, ``precision``,
                           ``recall``, ``f1``, ``r2``). A limit is met at
                           equality. Percentage errors are fractions (0.15 is 15 %).
``bias_detection``         measure the type's group disparity (False):
                           ``group_error_disparity`` for forecasts and demand,
                           ``demographic_parity`` (and ``equalized_odds`` with
                           labels) for anomalies and segments.
``drift_detection``        compare the model's inputs in the test data with the
                           reference (False).
``fairness_metrics``       disparities to measure, among ``demographic_parity``,
                           ``equalized_odds``, ``group_error_disparity`` ([]).
``group_column``           the groups compared ("country" when the test data has
                           it, else for forecasts the series id).
``target``                 the target column (the model's).
``reference_data``         drift reference (``train_data``, else the
                           TrainingResult's sample of its training inputs).
``train_data``             the training data (MASE, lags, medians; drift reference).
``fairness_threshold``     limit of the parity and odds differences (0.1).
``bias_threshold``         limit of ``group_error_disparity`` (0.25).
``drift_threshold``        threshold of each column's drift test (the test's default).
``group_error_metric``     per-group error of ``group_error_disparity``:
                           ``"wape"``, ``"mae"`` or ``"smape"`` ("wape").
``min_group_size``         rows a group needs to be compared (10); for
                           ``equalized_odds``, anomalous and normal rows each.
=========================  ======================================================

An unknown key, an unknown fairness metric or a threshold on a metric the model
type does not compute is a :class:`~retailml.core.errors.ConfigError` listing
the valid names.

Checks and scores
-----------------
Every check is a :class:`CheckOutcome`; ``passed`` is None for a check that
could not run or does not apply (``detail`` says why), and such a check never
fails the model. ``status`` is ``"failed"`` when any check failed.

* **Performance**: one check per threshold, e.g. ``mape 0.21 > 0.15 (by
  0.06)``. An undefined (NaN) or uncomputable metric (``f1`` without labels)
  fails its check. ``performance_score`` is the mean over the thresholds of
  each one's attainment: 1 when met; when missed, ``limit / value`` for a
  maximum and ``value / limit`` for a minimum (0 when that is not positive,
  and for an undefined value). It is 1.0 exactly when every threshold is
  met (and when none is set), and shrinks with how far they are missed: a
  ``mape`` of 0.30 against 0.15 scores 0.5.
* **Fairness** compares the model's behaviour across the groups of
  ``group_column`` with fairlearn:

  - ``demographic_parity``: fairlearn's ``demographic_parity_difference``,
    the largest gap between groups in the share of rows flagged as
    anomalous; for segments, the share of rows put in a segment, one segment
    against the rest, for the worst segment. In [0, 1].
  - ``equalized_odds``: fairlearn's ``equalized_odds_difference``, the
    larger of the gaps in true and false positive rates between groups of
    anomaly flags against the labels. Segments have no labels: skipped.
  - ``group_error_disparity`` (forecasts and demand): the error of each group
    (fairlearn's ``MetricFrame``) and ``(worst - best) / overall``: how far
    apart the best- and worst-served groups are, relative to the model's
    overall error (0 when every group is served alike; 1 when the gap equals
    the overall error). The error is the WAPE by default, ``sum |y - f| /
    sum |y|``: scale-free, so a country selling ten times more is not
    "worse served" for having ten times the absolute errors (MAE would say
    so), and unlike sMAPE it is stable on days of zero or few sales.

  Only groups with at least ``min_group_size`` rows are compared (a flag
  rate or an error over three rows is noise); for ``equalized_odds`` the
  rates are over a group's anomalous and its normal rows, so it needs that
  many of each. The groups left out are counted in ``detail``.

  Parity and odds need classifying outputs: for a forecast or demand model
  they are reported as not applicable and ``group_error_disparity`` is
  measured in their place (so the guide's snippet, written with a forecast,
  still measures the model's bias). ``group_error_disparity`` asked of an
  anomaly or segment model is not applicable either (``equalized_odds``
  compares a classifier's error rates). Without a group column, or with fewer than
  two groups large enough, fairness checks are skipped with the reason.

  ``bias_score`` is the largest measured disparity, each capped at 1:
  ``max(min(1, d) for d in disparities)``, in [0, 1]; 0 means no measured
  bias (or nothing measured: see the skipped checks).
* **Drift**: :func:`~retailml.validators.drift.detect_drift` of the model's
  input columns (its ``feature_names_in_``; for forecasts the series id and,
  when the reference has it, the target), reference against test rows. Time
  columns and the calendar fields of demand features (:data:`CALENDAR_FEATURES`)
  are left out: a held-out period lies later by construction, so their shift
  is the split, not drift. The check fails when the dataset drifts (the share
  of drifted columns reaches 0.5); the report is ``ValidationResult.drift``.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
from fairlearn.metrics import (  # type: ignore[import-untyped]
    MetricFrame,
    demographic_parity_difference,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import r2_score

from retailml.core.errors import ConfigError, DataValidationError, problem
from retailml.training import _metrics
from retailml.training._anomaly import VALUE_FEATURES, AnomalyDetector
from retailml.training._demand import DemandPredictor
from retailml.training._forecast import SalesForecaster
from retailml.training._segmentation import CustomerSegmenter
from retailml.training._tasks import Task, make_task
from retailml.training._trainer import TrainingResult
from retailml.validators.drift import DriftReport, detect_drift

__all__ = [
    "CONFIG_KEYS",
    "FAIRNESS_METRICS",
    "HIGHER_IS_BETTER",
    "LOWER_IS_BETTER",
    "METRICS",
    "CheckOutcome",
    "ModelValidator",
    "ValidationResult",
]

#: Metrics whose threshold is a maximum.
LOWER_IS_BETTER: Final = frozenset(
    {"mape", "smape", "mae", "rmse", "mase", "davies_bouldin_score", "anomaly_rate"}
)
#: Metrics whose threshold is a minimum.
HIGHER_IS_BETTER: Final = frozenset(
    {"silhouette_score", "calinski_harabasz_score", "precision", "recall", "f1", "r2"}
)
#: The metrics each model type computes on test data (thresholds may name these).
METRICS: Final[Mapping[str, tuple[str, ...]]] = {
    "sales_forecast": ("mape", "smape", "mae", "rmse", "mase"),
    "demand_prediction": ("mae", "rmse", "mape", "smape", "r2"),
    "customer_segmentation": (
        "silhouette_score",
        "calinski_harabasz_score",
        "davies_bouldin_score",
    ),
    "anomaly_detection": ("precision", "recall", "f1", "anomaly_rate"),
}
#: The group disparities ``fairness_metrics`` may name.
FAIRNESS_METRICS: Final = ("demographic_parity", "equalized_odds", "group_error_disparity")
#: Per-group errors of ``group_error_disparity``.
GROUP_ERROR_METRICS: Final = ("wape", "mae", "smape")
#: The keys ``validation_config`` accepts.
CONFIG_KEYS: Final = (
    "performance_thresholds",
    "bias_detection",
    "drift_detection",
    "fairness_metrics",
    "group_column",
    "target",
    "reference_data",
    "train_data",
    "fairness_threshold",
    "bias_threshold",
    "drift_threshold",
    "group_error_metric",
    "min_group_size",
)
DEFAULT_FAIRNESS_THRESHOLD: Final = 0.1
DEFAULT_BIAS_THRESHOLD: Final = 0.25
DEFAULT_GROUP_COLUMN: Final = "country"
DEFAULT_MIN_GROUP_SIZE: Final = 10
#: Calendar fields of demand features: determined by the date, so a later test period
#: shifts them by construction; drift leaves them out, like the time column.
CALENDAR_FEATURES: Final = (
    "day_of_week",
    "day_of_month",
    "month",
    "week_of_year",
    "is_weekend",
    "days_since_first_sale",
)
DRIFT_CHECK: Final = "data_drift"

_CLASSIFYING: Final = frozenset({"anomaly_detection", "customer_segmentation"})
_ESTIMATORS: Final[tuple[tuple[type, str], ...]] = (
    (SalesForecaster, "sales_forecast"),
    (CustomerSegmenter, "customer_segmentation"),
    (AnomalyDetector, "anomaly_detection"),
    (DemandPredictor, "demand_prediction"),
)
_GROUP: Final = "__group__"

Array = npt.NDArray[Any]


# --- results -------------------------------------------------------------------------------


def _json_float(value: float | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{float(value):.4g}"


@dataclass(frozen=True)
class CheckOutcome:
    """The outcome of one validation check.

    Attributes:
        name: The metric (``"mape"``), the disparity (``"demographic_parity"``)
            or ``"data_drift"``.
        passed: True or False; None when the check was skipped or does not
            apply (``detail`` says why); a skipped check never fails the model.
        value: The measured value (None when skipped).
        threshold: The limit it was held against.
        detail: A readable account, e.g. ``"mape 0.21 > 0.15 (by 0.06)"``.
        kind: ``"performance"``, ``"fairness"`` or ``"drift"``.
        by_group: Fairness checks: the value of each group.
    """

    name: str
    passed: bool | None
    value: float | None
    threshold: float | None
    detail: str
    kind: str = "performance"
    by_group: dict[str, float] = field(default_factory=dict, hash=False)

    @property
    def skipped(self) -> bool:
        """True when the check did not run (not applicable, or nothing to measure)."""
        return self.passed is None

    def to_dict(self) -> dict[str, Any]:
        """The outcome as JSON-safe data (non-finite numbers become None)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "passed": self.passed,
            "skipped": self.skipped,
            "value": _json_float(self.value),
            "threshold": _json_float(self.threshold),
            "detail": self.detail,
            "by_group": {str(k): _json_float(v) for k, v in self.by_group.items()},
        }

    def __str__(self) -> str:
        mark = "SKIP" if self.passed is None else ("PASS" if self.passed else "FAIL")
        return f"[{mark}] {self.name}: {self.detail}"


@dataclass
class ValidationResult:
    """What :meth:`ModelValidator.validate_model` returns.

    Attributes:
        status: ``"passed"``, or ``"failed"`` when any check failed.
        performance_score: Mean attainment of the performance thresholds, in
            [0, 1] (1.0 when all are met; see the module docstring).
        bias_score: The largest measured group disparity, capped at 1, in
            [0, 1]; 0 means no measured bias.
        metrics: The performance metrics computed on the test data
            (percentage errors as fractions; NaN where undefined).
        checks: Every check, performance first, then fairness, then drift.
        model_type: The guide's model type.
        target: The target column (None for segments).
        n_rows: Test rows scored.
        group_column: The column whose groups fairness compared, if any.
        notes: What the validator did with the data that is worth knowing
            (rows ignored, derived features, ...).
        drift: The drift report, when drift was measured.
    """

    status: str
    performance_score: float
    bias_score: float
    metrics: dict[str, float]
    checks: list[CheckOutcome]
    model_type: str
    target: str | None = None
    n_rows: int = 0
    group_column: str | None = None
    notes: list[str] = field(default_factory=list)
    drift: DriftReport | None = field(default=None, repr=False)

    @property
    def passed(self) -> bool:
        """True when no check failed."""
        return self.status == "passed"

    @property
    def failures(self) -> list[CheckOutcome]:
        """The failed checks."""
        return [check for check in self.checks if check.passed is False]

    @property
    def skipped(self) -> list[CheckOutcome]:
        """The checks that did not run, with their reasons in ``detail``."""
        return [check for check in self.checks if check.passed is None]

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-safe data (non-finite numbers become None)."""
        return {
            "status": self.status,
            "performance_score": _json_float(self.performance_score),
            "bias_score": _json_float(self.bias_score),
            "metrics": {name: _json_float(value) for name, value in self.metrics.items()},
            "checks": [check.to_dict() for check in self.checks],
            "failures": [check.name for check in self.failures],
            "model_type": self.model_type,
            "target": self.target,
            "n_rows": self.n_rows,
            "group_column": self.group_column,
            "notes": list(self.notes),
            "drift": None if self.drift is None else self.drift.to_dict(),
        }

    def summary(self) -> str:
        """A readable report: the verdict, the scores, then one line per check."""
        target = f", target {self.target!r}" if self.target else ""
        lines = [
            f"Validation {self.status.upper()}: {self.model_type}{target}, {self.n_rows} test rows",
            f"performance score {self.performance_score:.3f}, bias score {self.bias_score:.3f}",
        ]
        if self.metrics:
            lines.append("metrics: " + ", ".join(f"{k} {_fmt(v)}" for k, v in self.metrics.items()))
        lines += [f"  {check}" for check in self.checks]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


# --- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Config:
    thresholds: dict[str, float]
    bias_detection: bool
    drift_detection: bool
    fairness_metrics: tuple[str, ...]
    group_column: str | None
    target: str | None
    reference_data: pd.DataFrame | None
    train_data: pd.DataFrame | None
    fairness_threshold: float
    bias_threshold: float
    drift_threshold: float | None
    group_error_metric: str
    min_group_size: int


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _config_error(key: str, expected: str, value: object, fix: str) -> ConfigError:
    return ConfigError(problem(expected, repr(value), fix, subject=f"validation_config[{key!r}]"))


def _real(
    config: Mapping[str, Any],
    key: str,
    default: float | None,
    low: float,
    high: float,
    *,
    low_open: bool = False,
) -> float | None:
    value = config.get(key)
    if value is None:
        return default
    ok = _is_real(value) and (low < value if low_open else low <= value) and value <= high
    if not ok:
        bounds = f"{'(' if low_open else '['}{low:g}, {high:g}{']' if high < math.inf else ')'}"
        raise _config_error(key, f"a number in {bounds}", value, f"pass e.g. {key}=0.1")
    return float(value)


def _text(config: Mapping[str, Any], key: str) -> str | None:
    value = config.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise _config_error(key, "a column name", value, "pass the column's name as a string")
    return value


def _frame(config: Mapping[str, Any], key: str) -> pd.DataFrame | None:
    value = config.get(key)
    if value is not None and not isinstance(value, pd.DataFrame):
        raise _config_error(
            key, "a pandas DataFrame", type(value).__name__, "pass the data as a DataFrame"
        )
    return value


def _flag(config: Mapping[str, Any], key: str) -> bool:
    value = config.get(key, False)
    if not isinstance(value, bool | np.bool_):
        raise _config_error(key, "True or False", value, f"pass {key}=True")
    return bool(value)


def _parse_config(config: object) -> _Config:
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise ConfigError(
            problem(
                "validation_config as a dict",
                type(config).__name__,
                "pass e.g. {'performance_thresholds': {'mape': 0.15}}",
                subject="validation_config",
            )
        )
    unknown = [key for key in config if key not in CONFIG_KEYS]
    if unknown:
        raise ConfigError(
            problem(
                f"keys among {', '.join(CONFIG_KEYS)}",
                f"unknown {', '.join(map(repr, unknown))}",
                "rename or drop them",
                subject="validation_config",
            )
        )
    raw_thresholds = config.get("performance_thresholds") or {}
    if not isinstance(raw_thresholds, Mapping):
        raise _config_error(
            "performance_thresholds",
            "a dict of metric name to limit",
            raw_thresholds,
            "pass e.g. {'mape': 0.15, 'mae': 1000}",
        )
    thresholds: dict[str, float] = {}
    for name, limit in raw_thresholds.items():
        if not _is_real(limit) or not math.isfinite(float(limit)):
            raise ConfigError(
                problem(
                    "a finite number as each limit",
                    f"{name!r}: {limit!r}",
                    "pass e.g. {'mape': 0.15}",
                    subject="validation_config['performance_thresholds']",
                )
            )
        thresholds[str(name)] = float(limit)
    fairness = config.get("fairness_metrics") or []
    if isinstance(fairness, str) or not isinstance(fairness, Sequence | set | frozenset):
        raise _config_error(
            "fairness_metrics",
            f"a list among {', '.join(FAIRNESS_METRICS)}",
            fairness,
            f"wrap it in a list: [{fairness!r}]",
        )
    wrong = [name for name in fairness if name not in FAIRNESS_METRICS]
    if wrong:
        raise ConfigError(
            problem(
                f"fairness metrics among {', '.join(FAIRNESS_METRICS)}",
                f"unknown {', '.join(map(repr, wrong))}",
                "rename or drop them",
                subject="validation_config['fairness_metrics']",
            )
        )
    error_metric = config.get("group_error_metric", "wape")
    if error_metric not in GROUP_ERROR_METRICS:
        raise _config_error(
            "group_error_metric",
            f"one of {', '.join(map(repr, GROUP_ERROR_METRICS))}",
            error_metric,
            "pass 'wape' (scale-free, the default)",
        )
    fairness_threshold = _real(config, "fairness_threshold", DEFAULT_FAIRNESS_THRESHOLD, 0, 1)
    bias_threshold = _real(config, "bias_threshold", DEFAULT_BIAS_THRESHOLD, 0, math.inf)
    assert fairness_threshold is not None and bias_threshold is not None
    min_group_size = config.get("min_group_size", DEFAULT_MIN_GROUP_SIZE)
    if (
        not isinstance(min_group_size, numbers.Integral)
        or isinstance(min_group_size, bool)
        or (min_group_size < 1)
    ):
        raise _config_error(
            "min_group_size", "an int >= 1", min_group_size, "pass e.g. min_group_size=10"
        )
    return _Config(
        thresholds=thresholds,
        bias_detection=_flag(config, "bias_detection"),
        drift_detection=_flag(config, "drift_detection"),
        fairness_metrics=tuple(dict.fromkeys(str(name) for name in fairness)),
        group_column=_text(config, "group_column"),
        target=_text(config, "target"),
        reference_data=_frame(config, "reference_data"),
        train_data=_frame(config, "train_data"),
        fairness_threshold=fairness_threshold,
        bias_threshold=bias_threshold,
        drift_threshold=_real(config, "drift_threshold", None, 0, 1, low_open=True),
        group_error_metric=str(error_metric),
        min_group_size=int(min_group_size),
    )


# --- the model -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Subject:
    estimator: Any
    model_type: str
    target: str | None
    id_col: str
    time_col: str
    reference: pd.DataFrame | None
    history: pd.DataFrame | None = None

    def task(self) -> Task:
        return make_task(self.model_type, self.target, id_col=self.id_col, time_col=self.time_col)


def _subject(model: object, config: _Config) -> _Subject:
    if isinstance(model, TrainingResult):
        segments = model.model_type == "customer_segmentation"
        return _Subject(
            estimator=model.model,
            model_type=model.model_type,
            target=None if segments else (config.target or model.target),
            id_col=model.id_col,
            time_col=model.time_col,
            reference=model.reference_data,
            history=model.history,
        )
    for kind, model_type in _ESTIMATORS:
        if isinstance(model, kind):
            target = config.target
            if target is None and isinstance(model, DemandPredictor):
                target = str(model.target)
            if model_type == "customer_segmentation":
                target = None
            return _Subject(model, model_type, target, "series_id", "date", None)
    raise ConfigError(
        problem(
            "a TrainingResult (what ModelTrainer.train returns) or a fitted SalesForecaster, "
            "CustomerSegmenter, AnomalyDetector or DemandPredictor",
            type(model).__name__,
            "pass the result of ModelTrainer(...).train_sync(...) or a fitted estimator",
            subject="model",
        )
    )


def _check_metric_names(model_type: str, thresholds: Mapping[str, float]) -> None:
    available = METRICS[model_type]
    unknown = [name for name in thresholds if name not in available]
    if unknown:
        raise ConfigError(
            problem(
                f"metrics of {model_type} among {', '.join(available)}",
                f"{', '.join(map(repr, unknown))}",
                "rename or drop them",
                subject="validation_config['performance_thresholds']",
            )
        )


# --- scoring the test data -----------------------------------------------------------------


@dataclass
class _Evaluation:
    """Scores, per-row outputs and the rows scored."""

    metrics: dict[str, float]
    current: pd.DataFrame  # the prepared test rows scored: drift's current frame
    y_pred: Array
    y_true: Array | None  # actual values, or labels; None when unlabelled
    groups: pd.Series | None  # aligned with y_pred
    group_column: str | None
    group_note: str
    notes: list[str]
    target: str | None


@dataclass(frozen=True)
class _Forecast:
    """A forecast already made, in the shape ``ForecastTask.score`` asks a model for."""

    frame: pd.DataFrame
    season_length_: int

    def predict(self, horizon: int | None = None, level: float | None = None) -> pd.DataFrame:
        return self.frame


def _group_values(
    config: _Config, raw: pd.DataFrame, prepared: pd.DataFrame, subject: _Subject, task: Task
) -> tuple[str | None, pd.Series | None, str]:
    """The group of each prepared row (aligned with its index), or None and why."""
    name = config.group_column
    if name is None:
        if DEFAULT_GROUP_COLUMN in raw.columns or DEFAULT_GROUP_COLUMN in prepared.columns:
            name = DEFAULT_GROUP_COLUMN
        elif subject.model_type == "sales_forecast":
            name = task.id_col
        else:
            return (
                None,
                None,
                f"no group column: the test data has no {DEFAULT_GROUP_COLUMN!r} column; "
                "name one with validation_config['group_column']",
            )
    elif name not in raw.columns and name not in prepared.columns:
        raise ConfigError(
            problem(
                f"group_column among the test data's columns {list(map(str, raw.columns))}",
                repr(name),
                "name a column of test_data, e.g. 'country'",
                subject="validation_config['group_column']",
            )
        )
    values: pd.Series | None = None
    if name in prepared.columns:
        values = prepared[name]
    elif subject.model_type != "demand_prediction" and prepared.index.isin(raw.index).all():
        # Preparation keeps the rows' index (raw's index was reset, so it is unique).
        values = raw[name].reindex(prepared.index)
    elif task.id_col in raw.columns and task.id_col in prepared.columns:
        per_series = raw.groupby(task.id_col, sort=False)[name].nunique(dropna=False)
        if (per_series <= 1).all():
            mapping = raw.drop_duplicates(task.id_col).set_index(task.id_col)[name]
            values = prepared[task.id_col].map(mapping)
    if values is None:
        return (
            name,
            None,
            f"the group column {name!r} cannot be matched to the prepared rows: they do not "
            f"keep it, and it does not hold one value per {task.id_col!r}",
        )
    labels = values.astype(object).where(values.notna(), "<missing>").map(str)
    return name, labels, ""


def _same_dtype(values: pd.Series, like: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(like.dtype):
        return pd.Series(pd.to_datetime(values).astype(like.dtype), index=values.index)
    return values.astype(like.dtype)


def _periods(model: Any, start: Any, end: Any) -> int:
    """Periods from ``start`` to ``end`` inclusive on the model's calendar."""
    if isinstance(start, numbers.Integral) and isinstance(end, numbers.Integral):
        return max(int(end) - int(start) + 1, 1)
    freq = getattr(model, "freq_", None)
    if freq:
        return max(len(pd.date_range(pd.Timestamp(start), pd.Timestamp(end), freq=freq)), 1)
    raise ConfigError(
        problem(
            "a forecaster with a fitted calendar (freq_)",
            type(model).__name__,
            "validate a fitted SalesForecaster",
            subject="model",
        )
    )


def _evaluate_forecast(
    subject: _Subject, raw: pd.DataFrame, config: _Config, task: Task
) -> _Evaluation:
    model = subject.estimator
    test = task.prepare(raw)
    # Without train_data: what the TrainingResult kept of its training panel.
    history: pd.DataFrame | None = (
        task.prepare(config.train_data) if config.train_data is not None else subject.history
    )
    id_col, time_col, target = task.id_col, task.time_col, str(task.target)
    group_name, groups, group_note = _group_values(config, raw, test, subject, task)
    first = model.predict(horizon=1)[["series_id", "date"]].rename(columns={"date": "__start__"})
    keyed = test.rename(columns={id_col: "series_id", time_col: "date", target: "y"})
    keyed["date"] = _same_dtype(keyed["date"], first["__start__"])
    if groups is not None:
        keyed[_GROUP] = groups
    notes: list[str] = []
    known = keyed.merge(first, on="series_id", how="inner")
    if len(known) < len(keyed):
        unknown = keyed.loc[~keyed["series_id"].isin(first["series_id"]), "series_id"]
        notes.append(
            f"{len(keyed) - len(known)} test rows of {unknown.nunique()} series the model was "
            f"not trained on were ignored (e.g. {unknown.iloc[0]!r})"
        )
    ahead = known[known["date"] >= known["__start__"]]
    if history is not None:
        last = _same_dtype(history[time_col], first["__start__"]).max()
        ahead = ahead[ahead["date"] > last]
    if len(ahead) < len(known):
        notes.append(
            f"{len(known) - len(ahead)} test rows dated before the forecast start were ignored"
        )
    if ahead.empty:
        raise DataValidationError(
            problem(
                "test rows dated after the model's training data",
                f"none of {len(test)} rows (the forecast starts at {first['__start__'].min()!r})",
                "pass the periods that follow the training history",
                subject="sales_forecast test data",
            )
        )
    horizon = _periods(model, first["__start__"].min(), ahead["date"].max())
    forecast = model.predict(horizon=horizon)
    merged = forecast.merge(ahead.drop(columns="__start__"), on=["series_id", "date"])
    scored = ahead.drop(columns=["__start__"]).rename(
        columns={"series_id": id_col, "date": time_col, "y": target}
    )
    current = scored[[id_col, time_col, target]]
    season = int(getattr(model, "season_length_", 1))
    if history is not None:
        history = history.assign(**{time_col: _same_dtype(history[time_col], first["__start__"])})
    metrics = task.score(_Forecast(forecast, season), current, history)
    if history is None:
        notes.append(
            "mase is undefined without the training history: pass train_data "
            "(a TrainingResult from ModelTrainer keeps it)"
        )
    row_groups = None if groups is None else merged[_GROUP].reset_index(drop=True)
    return _Evaluation(
        metrics=dict(metrics),
        current=current,
        y_pred=merged["prediction"].to_numpy(dtype=np.float64),
        y_true=merged["y"].to_numpy(dtype=np.float64),
        groups=row_groups,
        group_column=group_name if groups is not None else None,
        group_note=group_note,
        notes=notes,
        target=target,
    )


def _prepare_demand(
    raw: pd.DataFrame,
    config: _Config,
    task: Task,
    notes: list[str],
    history: pd.DataFrame | None = None,
) -> pd.DataFrame:
    target, id_col, time_col = str(task.target), task.id_col, task.time_col
    train = config.train_data if config.train_data is not None else history
    derives = (
        f"{target}_lag_1" not in raw.columns
        and id_col in raw.columns
        and time_col in raw.columns
        and train is not None
        and all(c in train.columns for c in (id_col, time_col, target))
    )
    if not derives or train is None:
        return task.prepare(raw)
    # Lags of the first test days come from the training days before them.
    combined = pd.concat([train, raw], ignore_index=True)
    combined[time_col] = pd.to_datetime(combined[time_col])
    combined = combined.drop_duplicates([id_col, time_col], keep="last")
    features = task.prepare(combined)
    start = pd.to_datetime(raw[time_col]).min()
    keep = (features[time_col] >= start) & features[id_col].isin(raw[id_col])
    notes.append("lag features of the test days were derived with the training days before them")
    return features.loc[keep].reset_index(drop=True)


def _prepare_anomaly(
    raw: pd.DataFrame, config: _Config, task: Task, notes: list[str]
) -> pd.DataFrame:
    train = config.train_data
    lines = not any(c in raw.columns for c in VALUE_FEATURES)
    if train is None or not lines or any(c in train.columns for c in VALUE_FEATURES):
        return task.prepare(raw)
    # Product and customer medians from the training and test lines together.
    combined = pd.concat([train, raw], ignore_index=True)
    features = task.prepare(combined).iloc[len(train) :]
    features.index = raw.index
    notes.append("line features used product and customer medians of training and test lines")
    return features


def _r2(actual: Array, predicted: Array) -> float:
    if actual.size < 2:
        return math.nan
    return float(r2_score(actual, predicted))


def _evaluate(subject: _Subject, test_data: object, config: _Config) -> _Evaluation:
    task = subject.task()
    if not isinstance(test_data, pd.DataFrame):
        task.prepare(test_data)  # type: ignore[arg-type]  # raises, naming the type
    assert isinstance(test_data, pd.DataFrame)
    raw = test_data.reset_index(drop=True)
    model = subject.estimator
    if subject.model_type == "sales_forecast":
        return _evaluate_forecast(subject, raw, config, task)
    notes: list[str] = []
    y_true: Array | None
    if subject.model_type == "demand_prediction":
        test = _prepare_demand(raw, config, task, notes, subject.history)
        y_pred = np.asarray(model.predict(test), dtype=np.float64)
        y_true = test[str(task.target)].to_numpy(dtype=np.float64)
        metrics = task.score(model, test)
        metrics["r2"] = _r2(y_true, y_pred)
        current = test
    elif subject.model_type == "anomaly_detection":
        test = _prepare_anomaly(raw, config, task, notes)
        current = task.inputs(test)
        y_pred = np.asarray(model.predict(current)).astype(np.int64)
        labelled = bool(task.target) and str(task.target) in test.columns
        y_true = test[str(task.target)].to_numpy().astype(np.int64) if labelled else None
        metrics = task.score(model, test)
    else:
        test = task.prepare(raw)
        current = test
        y_pred = np.asarray(model.predict(test)).astype(np.int64)
        y_true = None
        metrics = task.score(model, test)
    name, groups, note = _group_values(config, raw, test, subject, task)
    return _Evaluation(
        metrics=dict(metrics),
        current=current,
        y_pred=y_pred,
        y_true=y_true,
        groups=None if groups is None else groups.reset_index(drop=True),
        group_column=name if groups is not None else None,
        group_note=note,
        notes=notes,
        target=None if task.target is None else str(task.target),
    )


# --- performance ---------------------------------------------------------------------------


def _performance_check(name: str, limit: float, metrics: Mapping[str, float]) -> CheckOutcome:
    maximum = name in LOWER_IS_BETTER
    if name not in metrics:
        why = (
            "needs labels in the test data (e.g. an 'is_anomaly' column)"
            if name in ("precision", "recall", "f1")
            else "was not computed"
        )
        return CheckOutcome(name, False, None, limit, f"{name} {why}")
    value = float(metrics[name])
    if not math.isfinite(value):
        return CheckOutcome(
            name, False, value, limit, f"{name} is undefined (NaN) on this test data"
        )
    if maximum:
        ok = value <= limit
        relation = "<=" if ok else ">"
    else:
        ok = value >= limit
        relation = ">=" if ok else "<"
    gap = abs(value - limit)
    detail = f"{name} {_fmt(value)} {relation} {_fmt(limit)}"
    detail += f" (margin {_fmt(gap)})" if ok else f" (by {_fmt(gap)})"
    return CheckOutcome(name, ok, value, limit, detail)


def _attainment(check: CheckOutcome) -> float:
    """1 for a met threshold; how close a missed one came, in [0, 1)."""
    if check.passed:
        return 1.0
    value, limit = check.value, check.threshold
    if value is None or limit is None or not math.isfinite(value):
        return 0.0
    ratio = limit / value if check.name in LOWER_IS_BETTER else value / limit
    if limit <= 0 or value <= 0 or not math.isfinite(ratio):
        return 0.0
    return min(max(ratio, 0.0), 1.0)


# --- fairness ------------------------------------------------------------------------------


def _wape(y_true: Array, y_pred: Array) -> float:
    actual = np.asarray(y_true, dtype=np.float64)
    scale = float(np.abs(actual).sum())
    error = float(np.abs(actual - np.asarray(y_pred, dtype=np.float64)).sum())
    if scale == 0:
        return 0.0 if error == 0 else math.nan
    return error / scale


_ERRORS: Final[Mapping[str, Callable[[Array, Array], float]]] = {
    "wape": _wape,
    "mae": _metrics.mae,
    "smape": _metrics.smape,
}


def _by_group(frame: MetricFrame) -> dict[str, float]:
    return {str(k): float(v) for k, v in frame.by_group.items()}


def _extremes(values: Mapping[str, float]) -> tuple[str, str]:
    finite = {k: v for k, v in values.items() if math.isfinite(v)}
    return max(finite, key=lambda k: finite[k]), min(finite, key=lambda k: finite[k])


def _verdict(name: str, value: float, limit: float, text: str) -> tuple[bool, str]:
    ok = value <= limit
    relation = "<=" if ok else ">"
    tail = f"(margin {_fmt(limit - value)})" if ok else f"(by {_fmt(value - limit)})"
    return ok, f"{text}; {name} {_fmt(value)} {relation} {_fmt(limit)} {tail}"


@dataclass(frozen=True)
class _Groups:
    """The rows and groups a fairness check compares."""

    keep: npt.NDArray[np.bool_]  # rows of the compared groups
    labels: npt.NDArray[Any]  # their groups, as text
    n_groups: int
    left_out: int  # groups too small to compare

    def note(self, min_rows: int, what: str) -> str:
        if not self.left_out:
            return ""
        return f"; {self.left_out} groups with fewer than {min_rows} {what} left out"


def _comparable(groups: pd.Series, min_rows: int, labels: Array | None = None) -> _Groups:
    """Groups with at least ``min_rows`` rows (of each label, when labels are given)."""
    values = groups.to_numpy()
    if labels is None:
        counts = groups.value_counts()
        large = counts.index[counts >= min_rows]
    else:
        table = pd.crosstab(values, np.asarray(labels).astype(bool))
        both = table.reindex(columns=[False, True], fill_value=0)
        large = both.index[(both >= min_rows).all(axis=1)]
    keep = np.isin(values, np.asarray(large, dtype=object))
    n_all = int(groups.nunique())
    return _Groups(keep, values[keep], len(large), n_all - len(large))


def _group_error_disparity(ev: _Evaluation, config: _Config, chosen: _Groups) -> CheckOutcome:
    name, limit = "group_error_disparity", config.bias_threshold
    assert ev.y_true is not None
    frame = MetricFrame(
        metrics=_ERRORS[config.group_error_metric],
        y_true=ev.y_true[chosen.keep],
        y_pred=ev.y_pred[chosen.keep],
        sensitive_features=chosen.labels,
    )
    values = _by_group(frame)
    defined = {k: v for k, v in values.items() if math.isfinite(v)}
    overall = float(frame.overall)
    if len(defined) < 2 or not math.isfinite(overall):
        return CheckOutcome(
            name,
            None,
            None,
            limit,
            f"needs the {config.group_error_metric} of at least two groups; defined for "
            f"{len(defined)} (undefined where a group's actual values are all 0)",
            kind="fairness",
            by_group=values,
        )
    worst, best = _extremes(defined)
    spread = defined[worst] - defined[best]
    value = spread / overall if overall > 0 else (0.0 if spread == 0 else math.inf)
    text = (
        f"{config.group_error_metric} by {ev.group_column}: worst {worst!r} "
        f"{_fmt(defined[worst])}, best {best!r} {_fmt(defined[best])}, overall {_fmt(overall)}; "
        "disparity = (worst - best) / overall"
    )
    text += chosen.note(config.min_group_size, "rows")
    if len(defined) < len(values):
        text += f"; {len(values) - len(defined)} groups without a defined error left out"
    ok, detail = _verdict(name, value, limit, text)
    return CheckOutcome(name, ok, value, limit, detail, kind="fairness", by_group=values)


def _demographic_parity(
    subject: _Subject, ev: _Evaluation, config: _Config, chosen: _Groups
) -> CheckOutcome:
    name, limit = "demographic_parity", config.fairness_threshold
    sensitive = chosen.labels
    outputs = ev.y_pred[chosen.keep]
    rates: dict[str, float] = {}
    if subject.model_type == "anomaly_detection":
        flags = outputs.astype(bool)
        value = float(demographic_parity_difference(flags, flags, sensitive_features=sensitive))
        rates = _by_group(
            MetricFrame(
                metrics=selection_rate, y_true=flags, y_pred=flags, sensitive_features=sensitive
            )
        )
        high, low = _extremes(rates)
        text = (
            f"share flagged by {ev.group_column}: highest {high!r} {_fmt(rates[high])}, "
            f"lowest {low!r} {_fmt(rates[low])}"
        )
    else:
        names: Mapping[Any, Any] = getattr(subject.estimator, "segment_names_", {}) or {}
        value, worst_segment = -1.0, None
        for segment in np.unique(outputs):
            member = outputs == segment
            gap = float(demographic_parity_difference(member, member, sensitive_features=sensitive))
            if gap > value:
                value, worst_segment = gap, segment
                rates = _by_group(
                    MetricFrame(
                        metrics=selection_rate,
                        y_true=member,
                        y_pred=member,
                        sensitive_features=sensitive,
                    )
                )
        high, low = _extremes(rates)
        label = names.get(worst_segment)
        segment_text = f"segment {worst_segment}" + (f" ({label})" if label else "")
        text = (
            f"worst {segment_text}: share of rows by {ev.group_column}: highest {high!r} "
            f"{_fmt(rates[high])}, lowest {low!r} {_fmt(rates[low])}"
        )
    text += chosen.note(config.min_group_size, "rows")
    ok, detail = _verdict(name, value, limit, text)
    return CheckOutcome(name, ok, value, limit, detail, kind="fairness", by_group=rates)


def _equalized_odds(ev: _Evaluation, config: _Config, chosen: _Groups) -> CheckOutcome:
    name, limit = "equalized_odds", config.fairness_threshold
    assert ev.y_true is not None
    labels = ev.y_true[chosen.keep].astype(bool)
    flags = ev.y_pred[chosen.keep].astype(bool)
    sensitive = chosen.labels
    value = float(equalized_odds_difference(labels, flags, sensitive_features=sensitive))
    frame = MetricFrame(
        metrics={"tpr": true_positive_rate, "fpr": false_positive_rate},
        y_true=labels,
        y_pred=flags,
        sensitive_features=sensitive,
    )
    gaps = frame.difference()
    text = (
        f"largest gap between {ev.group_column} groups in true positive rate "
        f"{_fmt(float(gaps['tpr']))}, in false positive rate {_fmt(float(gaps['fpr']))}"
    )
    text += chosen.note(config.min_group_size, "anomalous or normal labelled rows")
    tpr = {str(k): float(v) for k, v in frame.by_group["tpr"].items()}
    ok, detail = _verdict(name, value, limit, text)
    return CheckOutcome(name, ok, value, limit, detail, kind="fairness", by_group=tpr)


def _fairness_checks(subject: _Subject, ev: _Evaluation, config: _Config) -> list[CheckOutcome]:
    classifying = subject.model_type in _CLASSIFYING
    applicable = (
        ("demographic_parity", "equalized_odds") if classifying else ("group_error_disparity",)
    )
    wanted: dict[str, None] = {}
    skipped: list[CheckOutcome] = []
    for name in config.fairness_metrics:
        if name in applicable:
            wanted[name] = None
        elif classifying:
            skipped.append(
                CheckOutcome(
                    name,
                    None,
                    None,
                    None,
                    f"not applicable to {subject.model_type}: it compares regression errors; "
                    "equalized_odds compares a classifier's error rates",
                    kind="fairness",
                )
            )
        else:
            skipped.append(
                CheckOutcome(
                    name,
                    None,
                    None,
                    None,
                    f"not applicable to {subject.model_type}: it needs classifying outputs "
                    "(anomaly flags, segments); measured as group_error_disparity instead",
                    kind="fairness",
                )
            )
            wanted["group_error_disparity"] = None
    if config.bias_detection:
        wanted.update(dict.fromkeys(applicable))
    checks = list(skipped)
    for name in wanted:
        threshold = (
            config.bias_threshold if name == "group_error_disparity" else config.fairness_threshold
        )
        chosen, reason = _fairness_groups(name, subject, ev, config.min_group_size)
        if chosen is None:
            checks.append(CheckOutcome(name, None, None, threshold, reason, kind="fairness"))
        elif name == "group_error_disparity":
            checks.append(_group_error_disparity(ev, config, chosen))
        elif name == "demographic_parity":
            checks.append(_demographic_parity(subject, ev, config, chosen))
        else:
            checks.append(_equalized_odds(ev, config, chosen))
    return checks


def _fairness_groups(
    name: str, subject: _Subject, ev: _Evaluation, min_rows: int
) -> tuple[_Groups | None, str]:
    """The groups a fairness check compares, or None and why it cannot run."""
    if ev.groups is None:
        return None, ev.group_note
    labels = None
    what = "rows"
    if name == "equalized_odds":
        if ev.y_true is None:
            if subject.model_type == "customer_segmentation":
                return None, "segments have no true labels to compare error rates with"
            return None, "needs labels in the test data (e.g. an 'is_anomaly' column)"
        labels, what = ev.y_true, "anomalous and normal labelled rows each"
    chosen = _comparable(ev.groups, min_rows, labels)
    if chosen.n_groups >= 2:
        return chosen, ""
    n_all = int(ev.groups.nunique())
    only = f" ({ev.groups.iloc[0]!r})" if n_all == 1 else ""
    return None, (
        f"needs at least two {ev.group_column} groups with at least {min_rows} {what}; "
        f"the test data has {n_all} groups{only}, {chosen.n_groups} that large "
        "(lower validation_config['min_group_size'] to compare smaller groups)"
    )


# --- drift ---------------------------------------------------------------------------------


def _drift_check(
    subject: _Subject, ev: _Evaluation, config: _Config
) -> tuple[CheckOutcome, DriftReport | None]:
    name = DRIFT_CHECK
    reference: pd.DataFrame | None
    if config.reference_data is not None:
        reference = config.reference_data
    elif config.train_data is not None:
        reference = config.train_data
    else:
        reference = subject.reference
    if reference is None:
        return (
            CheckOutcome(
                name,
                None,
                None,
                None,
                "no reference data: pass validation_config['reference_data'] (e.g. the "
                "training features) or validate a TrainingResult",
                kind="drift",
            ),
            None,
        )
    task = subject.task()
    model = subject.estimator
    if subject.model_type == "sales_forecast":
        candidates = [task.id_col, str(ev.target)]
    else:
        fitted = getattr(model, "feature_names_in_", None)
        candidates = [str(c) for c in (fitted if fitted is not None else ev.current.columns)]
    if any(c not in reference.columns for c in candidates):
        with contextlib.suppress(DataValidationError):  # else compare the columns it has
            reference = task.prepare(reference)
    current = ev.current
    columns = [
        c
        for c in candidates
        if c in current.columns
        and c in reference.columns
        and c != task.time_col
        and c not in CALENDAR_FEATURES
        and not pd.api.types.is_datetime64_any_dtype(current[c])
        and not pd.api.types.is_datetime64_any_dtype(reference[c])
    ]
    # A column with no value in one frame (e.g. a 28-day lag over a 14-day
    # test set) cannot be compared: leave it out and say so.
    empty = [c for c in columns if current[c].isna().all() or reference[c].isna().all()]
    if empty:
        ev.notes.append(f"drift left out columns without values in one frame: {', '.join(empty)}")
        columns = [c for c in columns if c not in empty]
    if not columns:
        return (
            CheckOutcome(
                name,
                None,
                None,
                None,
                f"no input column of the model ({', '.join(candidates)}) in both the reference "
                "and the test data",
                kind="drift",
            ),
            None,
        )
    categorical = [task.id_col] if subject.model_type == "sales_forecast" else []
    categorical += [str(c) for c in getattr(model, "categorical_features_", [])]
    categorical = [c for c in dict.fromkeys(categorical) if c in columns]
    report = detect_drift(
        reference,
        current,
        columns=columns,
        threshold=config.drift_threshold,
        categorical=categorical or None,
    )
    drifted = ", ".join(report.drifted_columns) or "none"
    relation = ">=" if report.dataset_drift else "<"
    detail = (
        f"{report.n_drifted} of {report.n_columns} input columns drifted "
        f"({report.share_drifted:.1%} {relation} {report.drift_share:.0%}, the dataset-drift "
        f"share): {drifted}"
    )
    check = CheckOutcome(
        name,
        not report.dataset_drift,
        report.share_drifted,
        report.drift_share,
        detail,
        kind="drift",
    )
    return check, report


# --- the validator -------------------------------------------------------------------------


class ModelValidator:
    """Validate a trained model on held-out data: performance, bias and fairness, drift.

    See the module docstring for the checks, formulas and configuration keys.
    """

    def __repr__(self) -> str:
        return "ModelValidator()"

    def validate_model(
        self,
        model: Any,
        test_data: pd.DataFrame,
        validation_config: Mapping[str, Any] | None = None,
    ) -> ValidationResult:
        """Score ``model`` on ``test_data`` and run the configured checks.

        Args:
            model: A :class:`~retailml.training.model_trainer.TrainingResult`, or
                a fitted ``SalesForecaster``, ``CustomerSegmenter``,
                ``AnomalyDetector`` or ``DemandPredictor``.
            test_data: Held-out rows shaped like the training data.
            validation_config: The keys of the module docstring's table.

        Returns:
            A :class:`ValidationResult`.

        Raises:
            ConfigError: for an unknown key, metric or fairness metric, a bad
                value, or a model of another kind, each listing the valid ones.
            DataValidationError: when the test data lacks what the model needs
                (or, for a forecast, no test row follows the training data).
        """
        config = _parse_config(validation_config)
        subject = _subject(model, config)
        _check_metric_names(subject.model_type, config.thresholds)
        evaluation = _evaluate(subject, test_data, config)
        metrics = {k: float(v) for k, v in evaluation.metrics.items()}
        checks = [
            _performance_check(name, limit, metrics) for name, limit in config.thresholds.items()
        ]
        performance_score = (
            float(np.mean([_attainment(check) for check in checks])) if checks else 1.0
        )
        fairness = _fairness_checks(subject, evaluation, config)
        checks += fairness
        measured = [c.value for c in fairness if c.value is not None and not c.skipped]
        bias_score = max((min(1.0, max(0.0, v)) for v in measured), default=0.0)
        report = None
        if config.drift_detection:
            drift_check, report = _drift_check(subject, evaluation, config)
            checks.append(drift_check)
        failed = any(check.passed is False for check in checks)
        return ValidationResult(
            status="failed" if failed else "passed",
            performance_score=performance_score,
            bias_score=float(bias_score),
            metrics=metrics,
            checks=checks,
            model_type=subject.model_type,
            target=evaluation.target,
            n_rows=int(evaluation.y_pred.size),
            group_column=evaluation.group_column,
            notes=evaluation.notes,
            drift=report,
        )
