"""Demand prediction: units a product sells on a day, from lags, calendar and price.

:func:`demand_features` turns the ``daily_sales`` feature set (one row per
series and day with ``series_id, level, date, sales_amount, quantity,
n_invoices``) into a leakage-free training frame; :class:`DemandPredictor`
regresses the target on it with a random forest, XGBoost or a neural network.

No leakage
----------
A row for day *t* holds the target of day *t* and features known at the end
of day *t - 1*: lags and rolling windows are computed per series on the
shifted target, the price is the last average selling price before *t*, and
the same day's ``sales_amount`` and ``n_invoices`` (which contain the
target) are dropped. Calendar fields of *t* are known in advance. So the
frame trains a one-day-ahead model and a time-ordered split of it is an
honest holdout.

Encoding inside the estimator
-----------------------------
Numeric and boolean columns are used as they are. Text and categorical
columns (``series_id``, ``level``) are encoded inside :class:`DemandPredictor`
so the same fitted model takes the same raw frame at prediction time:

* random forest and XGBoost: **ordinal codes** (categories unseen in
  training and missing values become -1). Trees split on codes well enough
  and the width stays one column however many products there are.
* neural network: **one-hot** columns for the ``max_categories`` most
  frequent categories (the others share one column; unseen ones are all
  zeros), because codes would impose a false order on a network. Numeric
  columns get median imputation with missing-value indicators and
  standardisation; the target is standardised too.

Heavy-tailed targets
--------------------
Daily units are heavy-tailed: a wholesaler's order can be fifty ordinary
days' worth. With ``target_transform="log1p"`` (the default) every algorithm
fits the signed ``log1p`` of the target and predictions are transformed back,
so a few spikes do not drag every prediction up: predictions sit near the
typical (median-like) day, which is what the mean absolute error rewards, and
their sum underestimates totals that spikes dominate. Use None to fit the
target as it is (squared error, mean-like predictions) when totals matter
more than typical days.

Random forests and XGBoost take missing values (lags at a series' start) as
they are. Datetime columns are not features (a timestamp is an order, not a
pattern): :func:`demand_features` already turns the date into calendar fields.

The neural network is scikit-learn's ``MLPRegressor`` (Adam, L2 penalty,
early stopping on a held-out tenth of the training rows): nothing in a
tabular regressor needs a hand-written PyTorch loop, scikit-learn's is
repeatable from ``random_state`` alone without process-wide PyTorch state,
and the model pickles, clones and fits in a pipeline like the other two.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.ensemble import RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from retailml.core.errors import DataValidationError, problem
from retailml.training._params import (
    Constraint,
    ContractEstimator,
    column_names,
    int_tuple,
    integer,
    one_of,
    optional,
    real,
    resolve_columns,
    seed,
    thread_limit,
)

__all__ = [
    "DemandPredictor",
    "demand_features",
]

_DAILY_SALES_REQUIRED: Final = ("series_id", "date")
_MEASURES: Final = ("sales_amount", "quantity", "n_invoices")
#: Learning rate when ``learning_rate=None``: XGBoost's step shrinkage, the network's Adam step.
_DEFAULT_LEARNING_RATE: Final = {"xgboost": 0.05, "neural_network": 0.001}
_XGBOOST_DEFAULT_DEPTH: Final = 6

FloatArray = npt.NDArray[np.float64]


def _signed_log1p(values: FloatArray) -> FloatArray:
    return np.asarray(np.sign(values) * np.log1p(np.abs(values)), dtype=np.float64)


def _signed_expm1(values: FloatArray) -> FloatArray:
    return np.asarray(np.sign(values) * np.expm1(np.abs(values)), dtype=np.float64)


def _check_positive_ints(values: Sequence[int], name: str) -> None:
    if not values or any(
        not isinstance(v, int | np.integer) or isinstance(v, bool) or v < 1 for v in values
    ):
        raise DataValidationError(
            problem(
                "a non-empty sequence of whole days >= 1",
                f"{list(values)!r}",
                f"pass e.g. {name}=(1, 7, 14, 28)",
                subject=f"demand_features({name})",
            )
        )


def _fill_days(daily: pd.DataFrame, measures: Sequence[str]) -> pd.DataFrame:
    """One row per series and day from its first day to the data's last; missing days are 0."""
    first = daily.groupby("series_id", sort=True)["date"].min()
    last = daily["date"].max()
    n_days = ((last - first).dt.days + 1).to_numpy()
    offsets = np.arange(int(n_days.sum())) - np.repeat(np.cumsum(n_days) - n_days, n_days)
    grid = pd.DataFrame(
        {
            "series_id": np.repeat(first.index.to_numpy(), n_days),
            "date": np.repeat(first.to_numpy(), n_days) + pd.to_timedelta(offsets, unit="D"),
        }
    )
    filled = grid.merge(daily, on=["series_id", "date"], how="left")
    filled[list(measures)] = filled[list(measures)].fillna(0)
    if "level" in filled.columns:
        filled["level"] = filled.groupby("series_id")["level"].transform("first")
    return filled


def demand_features(
    daily_sales: pd.DataFrame,
    *,
    target: str = "quantity",
    lags: Sequence[int] = (1, 7, 14, 28),
    windows: Sequence[int] = (7, 28),
    fill_missing_days: bool = True,
) -> pd.DataFrame:
    """Lag, rolling, price and calendar features per series and day, without leakage.

    Args:
        daily_sales: Rows shaped like the ``daily_sales`` feature set:
            ``series_id``, ``date`` and the target, optionally ``level``,
            ``sales_amount``, ``quantity`` and ``n_invoices`` (other columns
            are dropped).
        target: The measure to predict (``quantity`` or ``sales_amount``).
        lags: Days back of the lag features ``<target>_lag_<k>``.
        windows: Lengths of the trailing windows ``<target>_mean_<w>`` and
            ``<target>_std_<w>`` (ending the day before).
        fill_missing_days: ``daily_sales`` omits days without a sale; fill
            them with zeros from each series' first day to the data's last,
            so a lag of *k* rows is *k* days. Turn off only for data that is
            already complete.

    Returns:
        One row per series and day, sorted by series and date, with
        ``series_id``, ``level`` (when given), ``date``, the target and the
        features: the lags and windows; ``price_lag_1`` (the last average
        selling price, ``sales_amount / quantity`` on a day with positive
        quantity, before the day; needs ``sales_amount`` and ``quantity``)
        and ``price_ratio_28`` (it over its mean over the previous 28 days);
        ``day_of_week`` (0 = Monday), ``day_of_month``, ``month``,
        ``week_of_year``, ``is_weekend``; and ``days_since_first_sale``.
        Early rows have missing lags and windows.

    Raises:
        DataValidationError: when a required column is missing or lags or
            windows are not positive whole days.
    """
    required = (*_DAILY_SALES_REQUIRED, target)
    missing = [c for c in required if c not in daily_sales.columns]
    if missing:
        raise DataValidationError(
            problem(
                f"the daily_sales columns {', '.join(required)}",
                f"no {', '.join(map(repr, missing))} among {list(map(str, daily_sales.columns))}",
                "pass the daily_sales feature set (retailml features build) or rename columns",
                subject="demand_features",
            )
        )
    _check_positive_ints(lags, "lags")
    _check_positive_ints(windows, "windows")

    measures = [c for c in _MEASURES if c in daily_sales.columns]
    if target not in measures:
        measures.append(target)
    keep = [c for c in ("series_id", "level", "date", *measures) if c in daily_sales.columns]
    daily = daily_sales.loc[:, keep].copy()
    daily["date"] = pd.to_datetime(daily["date"]).dt.normalize()
    if daily.duplicated(["series_id", "date"]).any():
        raise DataValidationError(
            problem(
                "one row per series_id and date",
                "repeated (series_id, date) pairs",
                "aggregate the rows per series and day first",
                subject="demand_features",
            )
        )
    if fill_missing_days:
        daily = _fill_days(daily, measures)
    daily = daily.sort_values(["series_id", "date"], kind="stable").reset_index(drop=True)

    series = daily.groupby("series_id", sort=False)
    values = daily[target].astype(np.float64)
    previous = series[target].shift(1).astype(np.float64)
    out = daily[[c for c in ("series_id", "level", "date") if c in daily.columns]].copy()
    out[target] = values
    for k in lags:
        out[f"{target}_lag_{k}"] = series[target].shift(k).astype(np.float64)
    shifted = previous.groupby(daily["series_id"], sort=False)
    for w in windows:
        rolling = shifted.rolling(w, min_periods=1)
        out[f"{target}_mean_{w}"] = rolling.mean().reset_index(level=0, drop=True)
        out[f"{target}_std_{w}"] = rolling.std().reset_index(level=0, drop=True)

    if "sales_amount" in daily.columns and "quantity" in daily.columns:
        quantity = daily["quantity"].astype(np.float64)
        price = (daily["sales_amount"].astype(np.float64) / quantity).where(quantity > 0)
        last_price = price.groupby(daily["series_id"], sort=False).ffill()
        price_lag = last_price.groupby(daily["series_id"], sort=False).shift(1)
        out["price_lag_1"] = price_lag
        mean_28 = (
            price.groupby(daily["series_id"], sort=False)
            .shift(1)
            .groupby(daily["series_id"], sort=False)
            .rolling(28, min_periods=1)
            .mean()
            .reset_index(level=0, drop=True)
        )
        out["price_ratio_28"] = price_lag / mean_28

    dates = daily["date"]
    out["day_of_week"] = dates.dt.dayofweek
    out["day_of_month"] = dates.dt.day
    out["month"] = dates.dt.month
    out["week_of_year"] = dates.dt.isocalendar().week.astype(np.int64).to_numpy()
    out["is_weekend"] = dates.dt.dayofweek >= 5
    out["days_since_first_sale"] = (dates - series["date"].transform("min")).dt.days
    return out


class DemandPredictor(ContractEstimator):
    """Predicts demand (e.g. daily units per product) from tabular features.

    Args:
        algorithm: ``"random_forest"``, ``"xgboost"`` or ``"neural_network"``.
        target: The column of ``X`` holding the target when ``fit`` gets no
            ``y``; never used as a feature.
        features: Columns to use; None means every column but the target and
            datetime columns.
        random_state: Seed of every algorithm; None is not repeatable.
        n_estimators: Trees (random forest, XGBoost).
        max_depth: Tree depth; None means unlimited for the forest and 6 for
            XGBoost.
        min_samples_leaf: Random forest: rows per leaf (smooths noisy demand).
        max_features: Random forest: share of the features tried at each
            split (a third, as Breiman recommends for regression: better and
            three times faster than all of them).
        learning_rate: XGBoost's shrinkage or the network's Adam step; None
            means 0.05 and 0.001.
        hidden_layer_sizes: Neural network layer widths.
        max_iter: Neural network epochs at most (early stopping usually ends sooner).
        max_categories: Neural network: one-hot columns per categorical feature.
        target_transform: ``"log1p"``: fit the signed ``log1p`` of the target
            (see the module docstring); None: the target as it is.
        n_jobs: Threads (random forest, XGBoost, native thread pools).

    Attributes:
        model_: The fitted scikit-learn pipeline (encoding, then the regressor).
        feature_names_in_: The feature columns, in order.
        n_features_in_: Their number.
        categorical_features_: The feature columns that were encoded.
        feature_importances_: Random forest and XGBoost only: importance of
            each feature (a Series indexed by ``feature_names_in_``, summing
            to 1).
    """

    ALGORITHMS: ClassVar[tuple[str, ...]] = ("random_forest", "xgboost", "neural_network")
    _param_constraints: ClassVar[Mapping[str, Constraint]] = {
        "algorithm": one_of(*ALGORITHMS),
        "target": Constraint(lambda v: isinstance(v, str) and bool(v), "a column name"),
        "features": column_names(),
        "random_state": seed(),
        "n_estimators": integer(low=1),
        "max_depth": optional(integer(low=1)),
        "min_samples_leaf": integer(low=1),
        "max_features": real(0.0, 1.0, low_open=True),
        "learning_rate": optional(real(0.0, 1.0, low_open=True)),
        "hidden_layer_sizes": int_tuple(low=1),
        "max_iter": integer(low=1),
        "max_categories": integer(low=2),
        "target_transform": one_of("log1p", None),
        "n_jobs": integer(low=1),
    }

    def __init__(
        self,
        algorithm: str = "random_forest",
        target: str = "quantity",
        features: Sequence[str] | None = None,
        random_state: int | None = 0,
        n_estimators: int = 200,
        max_depth: int | None = None,
        min_samples_leaf: int = 5,
        max_features: float = 1 / 3,
        learning_rate: float | None = None,
        hidden_layer_sizes: Sequence[int] = (64, 32),
        max_iter: int = 200,
        max_categories: int = 50,
        target_transform: str | None = "log1p",
        n_jobs: int = 1,
    ) -> None:
        self.algorithm = algorithm
        self.target = target
        self.features = features
        self.random_state = random_state
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.learning_rate = learning_rate
        self.hidden_layer_sizes = hidden_layer_sizes
        self.max_iter = max_iter
        self.max_categories = max_categories
        self.target_transform = target_transform
        self.n_jobs = n_jobs

    def fit(self, X: pd.DataFrame, y: object = None) -> DemandPredictor:  # noqa: N803
        """Fit the regressor.

        Args:
            X: One row per sample (e.g. :func:`demand_features`' output).
            y: The target; None takes it from the ``target`` column of ``X``.

        Returns:
            self.

        Raises:
            ConfigError: for an invalid parameter.
            DataValidationError: for unknown feature columns, a missing or
                non-finite target, or a target of the wrong length.
        """
        self._validate_params()
        frame = self._check_frame(X)
        owner = type(self).__name__
        target = self._target(frame, y)
        if self.features is None:
            features = [
                str(c)
                for c in frame.columns
                if c != self.target and not pd.api.types.is_datetime64_any_dtype(frame[c])
            ]
        else:
            features = resolve_columns(frame, list(self.features), owner=owner)
            if self.target in features:
                raise DataValidationError(
                    problem(
                        "features without the target",
                        f"the target {self.target!r} among the features",
                        f"leave {self.target!r} out of features",
                        subject=owner,
                    )
                )
        if not features:
            raise DataValidationError(
                problem(
                    "at least one feature column besides the target",
                    f"the columns {list(map(str, frame.columns))}",
                    "add feature columns, e.g. with demand_features(daily_sales)",
                    subject=owner,
                )
            )
        categorical = self._categorical(frame, features)
        self.feature_names_in_ = np.asarray(features, dtype=object)
        self.n_features_in_ = len(features)
        self.categorical_features_ = categorical
        model = self._pipeline(features, categorical)
        with thread_limit(self.n_jobs):
            model.fit(self._inputs(frame, features), target)
        self.model_ = model
        importances = self._importances()
        if importances is not None:
            self.feature_importances_ = importances
        return self

    def _target(self, frame: pd.DataFrame, y: object) -> FloatArray:
        owner = type(self).__name__
        if y is None:
            if self.target not in frame.columns:
                raise DataValidationError(
                    problem(
                        f"the target column {self.target!r} in X, or y",
                        f"neither; columns: {list(map(str, frame.columns))}",
                        "pass y, or set target to the column holding it",
                        subject=owner,
                    )
                )
            y = frame[self.target]
        values = np.asarray(y, dtype=np.float64).reshape(-1)
        if values.shape[0] != len(frame):
            raise DataValidationError(
                problem(
                    f"one target value per row of X ({len(frame)})",
                    f"{values.shape[0]}",
                    "pass y aligned with X",
                    subject=owner,
                )
            )
        if not np.isfinite(values).all():
            raise DataValidationError(
                problem(
                    "a finite target for every row",
                    f"{int((~np.isfinite(values)).sum())} missing or infinite values",
                    "drop those rows before fitting",
                    subject=owner,
                )
            )
        return values

    def _categorical(self, frame: pd.DataFrame, features: Sequence[str]) -> list[str]:
        categorical, unusable = [], []
        for column in features:
            dtype = frame[column].dtype
            if pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(
                dtype
            ):
                unusable.append(f"{column!r} ({dtype})")
            elif not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)):
                categorical.append(column)
        if unusable:
            raise DataValidationError(
                problem(
                    "numeric, boolean or categorical feature columns",
                    f"date or duration columns {', '.join(unusable)}",
                    "derive calendar fields (demand_features does) and leave the dates out",
                    subject=type(self).__name__,
                )
            )
        return categorical

    def _inputs(self, frame: pd.DataFrame, features: Sequence[str]) -> pd.DataFrame:
        """The feature columns with booleans as floats and categoricals as strings."""
        part = frame.loc[:, list(features)].copy()
        for column in features:
            if column in self.categorical_features_:
                part[column] = part[column].astype("string").astype(object)
                part.loc[part[column].isna(), column] = np.nan
            elif pd.api.types.is_bool_dtype(part[column].dtype):
                part[column] = part[column].astype(np.float64)
        return part

    def _pipeline(self, features: Sequence[str], categorical: Sequence[str]) -> Pipeline:
        numeric = [c for c in features if c not in categorical]
        if self.algorithm == "neural_network":
            encoder = ColumnTransformer(
                [
                    (
                        "numeric",
                        make_pipeline(
                            SimpleImputer(strategy="median", add_indicator=True),
                            StandardScaler(),
                        ),
                        numeric,
                    ),
                    (
                        "categorical",
                        OneHotEncoder(
                            handle_unknown="infrequent_if_exist",
                            max_categories=self.max_categories,
                            sparse_output=False,
                        ),
                        list(categorical),
                    ),
                ],
                verbose_feature_names_out=False,
            )
            rate = self.learning_rate or _DEFAULT_LEARNING_RATE["neural_network"]
            network = MLPRegressor(
                hidden_layer_sizes=tuple(int(h) for h in self.hidden_layer_sizes),
                learning_rate_init=rate,
                max_iter=self.max_iter,
                early_stopping=True,
                random_state=self.random_state,
            )
            regressor: Any = TransformedTargetRegressor(
                regressor=network, transformer=StandardScaler()
            )
        else:
            encoder = ColumnTransformer(
                [
                    ("numeric", "passthrough", numeric),
                    (
                        "categorical",
                        OrdinalEncoder(
                            handle_unknown="use_encoded_value",
                            unknown_value=-1,
                            encoded_missing_value=-1,
                        ),
                        list(categorical),
                    ),
                ],
                verbose_feature_names_out=False,
            )
            regressor = self._trees()
        if self.target_transform == "log1p":
            regressor = TransformedTargetRegressor(
                regressor=regressor,
                func=_signed_log1p,
                inverse_func=_signed_expm1,
                check_inverse=False,
            )
        return Pipeline([("encode", encoder), ("regress", regressor)])

    def _trees(self) -> Any:
        if self.algorithm == "random_forest":
            return RandomForestRegressor(
                n_estimators=self.n_estimators,
                max_depth=self.max_depth,
                min_samples_leaf=self.min_samples_leaf,
                max_features=self.max_features,
                random_state=self.random_state,
                n_jobs=self.n_jobs,
            )
        from xgboost import XGBRegressor

        return XGBRegressor(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth or _XGBOOST_DEFAULT_DEPTH,
            learning_rate=self.learning_rate or _DEFAULT_LEARNING_RATE["xgboost"],
            random_state=self.random_state,
            n_jobs=self.n_jobs,
            tree_method="hist",
        )

    def _importances(self) -> pd.Series[float] | None:
        regressor = self.model_.named_steps["regress"]
        while isinstance(regressor, TransformedTargetRegressor):
            regressor = regressor.regressor_
        if not hasattr(regressor, "feature_importances_"):
            return None
        names = self.model_.named_steps["encode"].get_feature_names_out()
        values = np.asarray(regressor.feature_importances_, dtype=np.float64)
        return pd.Series(values, index=names, name="importance").reindex(self.feature_names_in_)

    def predict(self, X: pd.DataFrame) -> FloatArray:  # noqa: N803
        """Predicted demand for each row of ``X``.

        Raises:
            StateError: before ``fit``.
            DataValidationError: when feature columns are missing.
        """
        self._check_fitted()
        frame = self._check_frame(X)
        features = resolve_columns(frame, list(self.feature_names_in_), owner=type(self).__name__)
        with thread_limit(self.n_jobs):
            prediction = self.model_.predict(self._inputs(frame, features))
        return np.asarray(prediction, dtype=np.float64).reshape(-1)
