"""The predictive engine: the guide's ``src.ml.analytics.predictive_engine``.

:class:`PredictiveEngine` runs the guide's "Model Training and Validation"
recipes end to end on the workspace's silver transactions::

    from retailml.analytics.predictive_engine import PredictiveEngine

    engine = PredictiveEngine()
    sales = await engine.load_sales_data(start_date="2022-01-01", end_date="2024-01-01")
    features = engine.engineer_features(sales, feature_sets=["temporal", "seasonal"])
    model = await engine.train_forecast_model(
        data=features, config={"algorithm": "prophet", "holidays": True}
    )
    scores = await engine.validate_model(model=model, test_data=held_out)

    customers = await engine.load_customer_data(feature_window="12M")
    rfm = engine.create_rfm_features(customers)
    segments = await engine.train_segmentation_model(
        features=rfm, config={"algorithm": "kmeans", "n_clusters": 5}
    )
    engine.evaluate_segmentation(model=segments, features=rfm)

Data comes from the silver transactions through the feature-set definitions
(``daily_sales`` and ``customer_rfm`` SQL run by DuckDB over the silver
Parquet parts), so sales here are the published features' sales: product
lines only (no postage, fees or accounting adjustments), net of
cancellations. Training goes through
:class:`~retailml.training.model_trainer.ModelTrainer`, so every model is
cross-validated and tracked in MLflow like any other. Coroutines do their
work in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import pandas as pd

from retailml.analytics import _features, _silver
from retailml.core.errors import ConfigError, DataValidationError, problem
from retailml.core.settings import Settings, get_settings
from retailml.feature_engineering._definitions import COUNTRY_CODES
from retailml.training import _metrics
from retailml.training._forecast import SalesForecaster
from retailml.training._segmentation import CustomerSegmenter
from retailml.training._tasks import Task, make_task
from retailml.training.model_trainer import ModelTrainer, TrainingResult

__all__ = [
    "FEATURE_SETS",
    "FORECAST_METRICS",
    "HOLIDAY_COUNTRY",
    "LEVELS",
    "SEGMENTATION_METRICS",
    "PredictiveEngine",
]

#: Series levels :meth:`PredictiveEngine.load_sales_data` accepts.
LEVELS: Final = _silver.LEVELS
#: Feature sets of :meth:`PredictiveEngine.engineer_features` and the columns each adds.
FEATURE_SETS: Final = _features.FEATURE_SETS
#: Metrics :meth:`PredictiveEngine.validate_model` computes (percentage errors as fractions).
FORECAST_METRICS: Final = ("mape", "smape", "mae", "rmse", "mase")
#: Metrics :meth:`PredictiveEngine.evaluate_segmentation` computes.
SEGMENTATION_METRICS: Final = (
    "silhouette_score",
    "calinski_harabasz_score",
    "davies_bouldin_score",
    "n_segments",
)
#: Holiday calendar of ``"holidays": True`` and of non-country series: the data is UK retail.
HOLIDAY_COUNTRY: Final = _features.DEFAULT_HOLIDAY_COUNTRY

#: Config keys that configure the trainer or the run rather than the estimator.
_TRAINER_KEYS: Final = ("n_splits", "test_size", "tuning", "experiment_name")
_RUN_KEYS: Final = ("target", "model_name")
_DEFAULT_FEATURE_SETS: Final = ("temporal", "seasonal", "trend", "external")
_DEFAULT_FORECAST_METRICS: Final = ("mape", "mae", "rmse", "smape")
_DEFAULT_SEGMENTATION_METRICS: Final = ("silhouette_score", "calinski_harabasz_score")

DateLike = str | dt.date | pd.Timestamp | None


def _check_metrics(metrics: Sequence[str], valid: Sequence[str], subject: str) -> list[str]:
    if isinstance(metrics, str) or not isinstance(metrics, Sequence):
        raise ConfigError(
            problem(
                "metrics as a list of names",
                repr(metrics),
                f"pass e.g. metrics={list(valid)!r}",
                subject=subject,
            )
        )
    names = list(dict.fromkeys(metrics))
    unknown = [m for m in names if m not in valid]
    if unknown or not names:
        raise ConfigError(
            problem(
                f"metrics among {list(valid)!r}",
                f"unknown {', '.join(map(repr, unknown))}" if unknown else "no metric",
                "drop or rename them",
                subject=subject,
            )
        )
    return names


def _check_config(config: Mapping[str, Any], subject: str) -> dict[str, Any]:
    if not isinstance(config, Mapping):
        raise ConfigError(
            problem(
                "config as a dict (the guide's model_config)",
                type(config).__name__,
                "pass e.g. config={'algorithm': 'prophet'}",
                subject=subject,
            )
        )
    return dict(config)


def _holiday_setting(value: Any) -> Any:
    """The guide's ``"holidays"`` value as SalesForecaster's ``holidays`` parameter."""
    if value is True:
        return HOLIDAY_COUNTRY
    if value is None:
        return False
    if isinstance(value, str) and value in COUNTRY_CODES:
        return COUNTRY_CODES[value][0]  # a UCI country name such as "United Kingdom"
    return value  # False, or a country code the forecaster validates


class PredictiveEngine:
    """Sales forecasting and customer segmentation over the workspace's silver data.

    Args:
        settings: retailml settings naming the workspace (and the MLflow store);
            default the process settings (``RETAILML_HOME``).

    The engine remembers the training history of every forecast model it
    trains (until the model is garbage-collected), so :meth:`validate_model`
    can tell held-out rows from training rows and scale MASE.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self._histories: weakref.WeakKeyDictionary[Any, pd.DataFrame] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"PredictiveEngine(home={str(self.settings.home)!r})"

    # --- sales forecasting ----------------------------------------------------------------

    async def load_sales_data(
        self,
        start_date: DateLike = None,
        end_date: DateLike = None,
        level: str = "total",
    ) -> pd.DataFrame:
        """Daily sales from the silver transactions, as the ``daily_sales`` feature set has them.

        Product lines only (postage, fees, manual entries and accounting
        adjustments are left out), net of cancellations (a cancellation
        counts, negatively, on the day it was recorded). Days without any
        line for a series are omitted, as in the feature set; the forecaster
        counts them as zero sales.

        Args:
            start_date: First day (inclusive); default the data's first day.
            end_date: Last day (inclusive); default the data's last day.
            level: ``"total"`` (one series, ``series_id="total"``),
                ``"country"`` (``"country:<name>"``) or ``"product"``
                (``"product:<stock_code>"``).

        Returns:
            Columns ``series_id``, ``date`` (midnight timestamps), ``sales_amount``,
            ``quantity`` and ``n_invoices`` (distinct purchase invoices), sorted
            by series and date. ``attrs["data_version"]`` is the silver data
            version when one is recorded for exactly these rows (training
            records it).

        Raises:
            ConfigError: for an unknown level, a value that is not a date, or
                a start after the end.
            NotFoundError: when the workspace has no silver data (run
                ``retailml data ingest <file>`` first).
            DataValidationError: when the range holds no sales; the message
                names the range the data covers.
        """
        if level not in LEVELS:
            raise ConfigError(
                problem(
                    f"a level among {list(LEVELS)!r}",
                    repr(level),
                    "pass level='total', 'country' or 'product'",
                    subject="load_sales_data",
                )
            )
        start = _silver.to_timestamp(start_date, "start_date")
        end = _silver.to_timestamp(end_date, "end_date")
        if start is not None and end is not None and start.normalize() > end.normalize():
            raise ConfigError(
                problem(
                    "start_date on or before end_date",
                    f"start_date={start_date!r}, end_date={end_date!r}",
                    "swap the dates",
                    subject="load_sales_data",
                )
            )
        return await asyncio.to_thread(self._load_sales_sync, level, start, end)

    def _load_sales_sync(
        self, level: str, start: pd.Timestamp | None, end: pd.Timestamp | None
    ) -> pd.DataFrame:
        silver = _silver.silver_range(self.settings)
        frame = _silver.daily_sales(silver, level, start, end)
        version = _silver.data_version(self.settings, silver)
        if version is not None:
            frame.attrs["data_version"] = version
        return frame

    def engineer_features(
        self,
        sales_data: pd.DataFrame,
        feature_sets: Sequence[str] = _DEFAULT_FEATURE_SETS,
        *,
        target: str = "sales_amount",
        holiday_country: str = HOLIDAY_COUNTRY,
    ) -> pd.DataFrame:
        """Add calendar, seasonal, trend and "external" features to a daily sales panel.

        Rows are neither added, dropped nor reordered, and ``series_id``,
        ``date`` and the target are kept, so the result trains a forecaster.
        Compute features over the whole period and split afterwards: the
        trend set's rolling means need the 28 days before a row.

        ========== ================================================================
        set        columns
        ========== ================================================================
        temporal   ``year``, ``month``, ``day_of_week`` (0 = Monday), ``quarter``,
                   ``is_weekend``, ``is_holiday``
        seasonal   ``day_of_year_sin``/``_cos``, ``month_sin``/``_cos``,
                   ``day_of_week_sin``/``_cos``
        trend      ``time_index`` (days since 1970-01-01), ``<target>_mean_7d``,
                   ``<target>_mean_28d``: means over the 7 / 28 days *before*
                   the row's day (days without a row count as 0; NaN until a
                   series has that much history)
        external   ``days_to_holiday``, ``days_since_holiday``,
                   ``days_to_christmas``, ``is_black_friday``
        ========== ================================================================

        There are no external data sources (weather, promotions, economic
        series); the "external" set holds calendar signals known in advance.
        Holidays: a ``country:<name>`` series uses its country's public
        holidays, every other series ``holiday_country`` (the UK by default).
        See :mod:`retailml.analytics._features` for the exact definitions.

        Args:
            sales_data: A daily panel: ``date``, the target and optionally
                ``series_id`` (as :meth:`load_sales_data` returns).
            feature_sets: Names among ``temporal``, ``seasonal``, ``trend``, ``external``.
            target: The column the trend set averages.
            holiday_country: Holiday calendar (country code or UCI country
                name) of series that are not a country's.

        Returns:
            A new frame: the input's columns plus the requested features.

        Raises:
            ConfigError: for an unknown feature set (listing the valid ones).
            DataValidationError: for missing columns, dates with a time of day,
                a non-numeric target or duplicate (series, date) rows.
        """
        return _features.engineer_features(
            sales_data, feature_sets, target=target, holiday_country=holiday_country
        )

    async def train_forecast_model(
        self,
        data: pd.DataFrame,
        config: Mapping[str, Any],
        validation_method: str = "time_series_split",
    ) -> TrainingResult:
        """Train, cross-validate and track a sales forecaster with the guide's ``model_config``.

        The config maps onto
        :class:`~retailml.training.model_trainer.ModelTrainer` and
        ``SalesForecaster`` as follows:

        * ``algorithm``: the forecaster (``auto``, ``prophet``, ``arima``,
          ``ets``, ``theta``, ``seasonal_naive``, ``xgboost``, ``lightgbm``);
          default ``auto``.
        * ``seasonality``: Prophet's ``{"yearly": ..., "weekly": ..., "daily": ...}``.
        * ``holidays``: True means the **United Kingdom's** public holidays
          (``"GB"``; the data is UK online retail, whereas the bare
          forecaster's True means the US); a country code or a UCI country
          name picks another calendar; False none.
        * ``growth``: Prophet's trend, ``"linear"`` or ``"flat"``.
        * ``n_splits``, ``test_size``, ``tuning``, ``experiment_name``: the
          trainer's settings; ``target`` (default ``sales_amount``) and
          ``model_name``: the run's.
        * anything else (``horizon``, ``level``, ``changepoint_prior_scale``,
          ...) is a forecaster hyperparameter; an unknown name is a
          ConfigError listing the valid ones.

        Only ``series_id``, ``date`` and the target are trained on: every
        forecaster builds its own inputs from the history (the statistical
        models use the target alone; Prophet adds its seasonalities and the
        holidays; the boosting models their own lags and date features), so
        columns added by :meth:`engineer_features` are ignored.

        Args:
            data: The daily panel (from :meth:`load_sales_data` or
                :meth:`engineer_features`).
            config: The guide's ``model_config``.
            validation_method: ``"time_series_split"`` (expanding windows of
                ``horizon`` days) or ``"holdout"``.

        Returns:
            The :class:`~retailml.training.model_trainer.TrainingResult`
            (``.model`` the fitted forecaster, ``.metrics`` the
            cross-validated errors, ``.run_id`` the MLflow run).

        Raises:
            ConfigError: for an unknown algorithm, hyperparameter or validation method.
            DataValidationError: when the data lacks the columns a forecast needs.
        """
        options = _check_config(config, "train_forecast_model")
        result, history = await asyncio.to_thread(
            self._train_forecast_sync, data, options, validation_method
        )
        self._histories[result.model] = history
        return result

    def _train_forecast_sync(
        self, data: pd.DataFrame, config: dict[str, Any], validation_method: str
    ) -> tuple[TrainingResult, pd.DataFrame]:
        algorithm = config.pop("algorithm", None)
        trainer_options = {k: config.pop(k) for k in _TRAINER_KEYS if k in config}
        run_options = {k: config.pop(k) for k in _RUN_KEYS if k in config}
        if "holidays" in config:
            config["holidays"] = _holiday_setting(config["holidays"])
        trainer = ModelTrainer(
            model_type="sales_forecast",
            algorithm=algorithm,
            hyperparameters=config,
            validation_strategy=validation_method,
            settings=self.settings,
            **trainer_options,
        )
        version = data.attrs.get("data_version") if isinstance(data, pd.DataFrame) else None
        result = trainer.train_sync(
            data,
            target=run_options.get("target"),
            model_name=run_options.get("model_name"),
            data_version=version if isinstance(version, str) else None,
        )
        return result, result.task().prepare(data)

    async def validate_model(
        self,
        model: TrainingResult | SalesForecaster,
        test_data: pd.DataFrame,
        metrics: Sequence[str] = _DEFAULT_FORECAST_METRICS,
        *,
        history: pd.DataFrame | None = None,
    ) -> dict[str, float]:
        """Score a forecast model on held-out periods that follow its training data.

        The model forecasts from the end of its history up to the last test
        date, and every test row dated after the history is scored (rows of
        series the model does not know, and rows within the history, are
        not). Days missing from the test data are skipped, not counted as
        zero, as in the trainer's cross-validation. Metrics are the
        trainer's: averaged over series; ``mape`` and ``smape`` as fractions
        (0.15 is 15 %).

        Args:
            model: What :meth:`train_forecast_model` returned, or a fitted forecaster.
            test_data: A panel (``series_id``, ``date``, target) of the periods
                after the training data; extra feature columns are ignored.
            metrics: Names among ``mape``, ``smape``, ``mae``, ``rmse``, ``mase``.
            history: The training panel, for MASE's scale. Default: the data
                the model was trained on when this engine trained it; else
                MASE is NaN.

        Returns:
            ``metric -> value`` for the requested metrics, in the order asked.

        Raises:
            ConfigError: for an unknown metric or a model that is not a sales forecast.
            DataValidationError: when no test row follows the training data or
                matches a forecast series.
        """
        names = _check_metrics(metrics, FORECAST_METRICS, "validate_model")
        estimator, task = self._forecaster(model)
        past = history if history is not None else self._histories.get(estimator)
        return await asyncio.to_thread(self._validate_sync, estimator, task, test_data, past, names)

    @staticmethod
    def _forecaster(model: object) -> tuple[SalesForecaster, Task]:
        if isinstance(model, TrainingResult) and model.model_type == "sales_forecast":
            return model.model, model.task()
        if isinstance(model, SalesForecaster):
            return model, make_task("sales_forecast")
        kind = model.model_type if isinstance(model, TrainingResult) else type(model).__name__
        raise ConfigError(
            problem(
                "a sales_forecast model (train_forecast_model's result or a SalesForecaster)",
                repr(kind),
                "pass the result of train_forecast_model",
                subject="validate_model",
            )
        )

    @staticmethod
    def _validate_sync(
        estimator: SalesForecaster,
        task: Task,
        test_data: pd.DataFrame,
        history: pd.DataFrame | None,
        names: Sequence[str],
    ) -> dict[str, float]:
        test = task.prepare(test_data)
        id_col, time_col, target = task.id_col, task.time_col, str(task.target)
        test = test.rename(columns={id_col: "series_id", time_col: "date", target: "y"})
        calendar = estimator.calendar_
        first = estimator.predict(horizon=1)  # each series' first forecast period

        def positions(values: pd.Series) -> np.ndarray[Any, np.dtype[np.int64]]:
            if calendar.integer_origin is not None:
                return np.asarray(values.to_numpy(dtype=np.int64))
            return calendar.positions(pd.DatetimeIndex(pd.to_datetime(values)))

        if calendar.integer_origin is None:
            test["date"] = pd.to_datetime(test["date"]).astype("datetime64[ns]")
            first["date"] = pd.to_datetime(first["date"]).astype("datetime64[ns]")
        steps = int(positions(test["date"]).max() - positions(first["date"]).min()) + 1
        if steps < 1:
            raise DataValidationError(
                problem(
                    "test rows dated after the training data",
                    f"test dates up to {test['date'].max()!r}, before the first forecast "
                    f"period {first['date'].min()!r}",
                    "pass the periods that follow the training history",
                    subject="validate_model",
                )
            )
        forecast = estimator.predict(horizon=steps)
        if calendar.integer_origin is None:
            forecast["date"] = pd.to_datetime(forecast["date"]).astype("datetime64[ns]")
        merged = forecast.merge(test[["series_id", "date", "y"]], on=["series_id", "date"])
        if merged.empty:
            raise DataValidationError(
                problem(
                    "test rows whose series and dates follow the model's training data",
                    f"no match among {len(test)} rows (series e.g. "
                    f"{list(test['series_id'].unique()[:3])!r})",
                    "pass held-out periods of the series the model was trained on",
                    subject="validate_model",
                )
            )
        past = (
            history.rename(columns={id_col: "series_id", time_col: "date", target: "y"})
            if history is not None
            else pd.DataFrame({"series_id": [], "date": [], "y": []})
        )
        scores = _metrics.forecast_metrics(merged, past, int(estimator.season_length_), target="y")
        return {name: float(scores[name]) for name in names}

    # --- customer segmentation ------------------------------------------------------------

    async def load_customer_data(self, feature_window: str = "12M") -> pd.DataFrame:
        """Silver transactions of the last ``feature_window`` of the data.

        The window ends at the data's last invoice date (not today: the data
        may be historical), so ``"12M"`` means the twelve months up to the
        last recorded transaction: ``last - 12 months < invoice_date <= last``.

        Args:
            feature_window: A count and a unit: ``"12M"`` (months), ``"90D"``
                (days), ``"4W"`` (weeks), ``"1Y"`` (years).

        Returns:
            The silver data columns (``invoice_no``, ``stock_code``, ...,
            ``total_amount`` and the ``is_*`` flags) of every row in the
            window, cancellations and non-product lines included (the RFM
            features decide what counts). ``attrs["window_start"]`` and
            ``attrs["window_end"]`` give the window.

        Raises:
            ConfigError: for a window that is not of that form.
            NotFoundError: when the workspace has no silver data.
        """
        window = _silver.parse_window(feature_window)
        return await asyncio.to_thread(self._load_customers_sync, window)

    def _load_customers_sync(self, window: pd.DateOffset) -> pd.DataFrame:
        return _silver.customer_window(_silver.silver_range(self.settings), window)

    def create_rfm_features(self, customer_data: pd.DataFrame) -> pd.DataFrame:
        """Recency, frequency and monetary value per customer, as ``customer_rfm`` computes them.

        Runs the ``customer_rfm`` feature set's SQL (one snapshot) over the
        given rows: product lines of customers with an id; the snapshot is
        the rows' last ``invoice_date``. ``recency_days`` is whole days from a
        customer's last purchase line to the snapshot; ``frequency_orders``
        counts distinct invoices with a purchase line (a cancelled invoice is
        never an order); ``monetary_total`` sums line amounts *including*
        cancellation lines, so it is net of what was cancelled. Customers
        with only cancellations in the window have no row.

        The columns keep the feature set's names; the guide's short names
        ``recency``, ``frequency`` and ``monetary`` stand for
        ``recency_days``, ``frequency_orders`` and ``monetary_total`` in the
        segmentation config (the segmenter resolves them, and log-transforms
        the heavy-tailed ones).

        Args:
            customer_data: Silver transactions (from :meth:`load_customer_data`).

        Returns:
            One row per customer: ``customer_id``, ``recency_days``,
            ``frequency_orders``, ``monetary_total``, ``monetary_avg``,
            ``monetary_std`` (null for one line), ``order_count`` (lines) and
            ``avg_order_value``, sorted by customer; ``attrs["snapshot"]`` is
            the snapshot instant.

        Raises:
            DataValidationError: when silver columns are missing or no
                customer has a purchase line.
        """
        return _silver.rfm_features(customer_data)

    async def train_segmentation_model(
        self, features: pd.DataFrame, config: Mapping[str, Any]
    ) -> TrainingResult:
        """Train, cross-validate and track a customer segmenter with the guide's config.

        ``algorithm`` (``kmeans``, ``dbscan``, ``hierarchical``; default
        ``kmeans``) picks the segmenter; ``n_splits``, ``test_size``,
        ``tuning``, ``experiment_name`` and ``model_name`` configure the
        trainer and run; every other key (``n_clusters``, ``features``,
        ``scaling``, ``random_state``, ``log_transform``, ...) is a
        ``CustomerSegmenter`` hyperparameter.

        Args:
            features: One row per customer (:meth:`create_rfm_features`).
            config: The guide's ``segmentation_config``.

        Returns:
            The :class:`~retailml.training.model_trainer.TrainingResult`;
            ``.model.profiles_`` describes the segments.

        Raises:
            ConfigError: for an unknown algorithm or hyperparameter.
            DataValidationError: for missing or non-numeric feature columns.
        """
        options = _check_config(config, "train_segmentation_model")
        return await asyncio.to_thread(self._train_segmentation_sync, features, options)

    def _train_segmentation_sync(
        self, features: pd.DataFrame, config: dict[str, Any]
    ) -> TrainingResult:
        algorithm = config.pop("algorithm", None)
        trainer_options = {k: config.pop(k) for k in _TRAINER_KEYS if k in config}
        model_name = config.pop("model_name", None)
        trainer = ModelTrainer(
            model_type="customer_segmentation",
            algorithm=algorithm,
            hyperparameters=config,
            settings=self.settings,
            **trainer_options,
        )
        return trainer.train_sync(features, model_name=model_name)

    def evaluate_segmentation(
        self,
        model: TrainingResult | CustomerSegmenter,
        features: pd.DataFrame,
        metrics: Sequence[str] = _DEFAULT_SEGMENTATION_METRICS,
    ) -> dict[str, float]:
        """Cluster-quality metrics of a segmentation on the given customers.

        The customers are assigned to their nearest segment and scored in the
        model's clustering space (log-transformed and scaled features).

        Args:
            model: What :meth:`train_segmentation_model` returned, or a fitted segmenter.
            features: One row per customer, with the model's feature columns.
            metrics: Names among ``silhouette_score`` (-1 .. 1, higher is
                better), ``calinski_harabasz_score`` (higher is better),
                ``davies_bouldin_score`` (lower is better) and ``n_segments``.

        Returns:
            ``metric -> value`` for the requested metrics; NaN when the
            customers fall in fewer than two segments.

        Raises:
            ConfigError: for an unknown metric or a model that is not a segmentation.
            DataValidationError: when feature columns are missing or invalid.
        """
        names = _check_metrics(metrics, SEGMENTATION_METRICS, "evaluate_segmentation")
        if isinstance(model, TrainingResult) and model.model_type == "customer_segmentation":
            estimator, task = model.model, model.task()
        elif isinstance(model, CustomerSegmenter):
            estimator, task = model, make_task("customer_segmentation")
        else:
            kind = model.model_type if isinstance(model, TrainingResult) else type(model).__name__
            raise ConfigError(
                problem(
                    "a customer_segmentation model (train_segmentation_model's result "
                    "or a CustomerSegmenter)",
                    repr(kind),
                    "pass the result of train_segmentation_model",
                    subject="evaluate_segmentation",
                )
            )
        scores = task.score(estimator, task.prepare(features))
        return {name: float(scores[name]) for name in names}
