"""Transaction anomaly detection: Isolation Forest, One-Class SVM or an autoencoder.

:func:`transaction_features` turns silver transaction lines into numeric
per-line features; :class:`AnomalyDetector` learns what normal lines look
like and scores new ones.

One scoring convention for every algorithm
------------------------------------------
* :meth:`AnomalyDetector.score_samples`: **higher is more anomalous**
  (scikit-learn's own ``score_samples`` is the opposite: lower is more
  abnormal). Isolation Forest: the negated scikit-learn score (shorter
  average path); One-Class SVM: the negated distance to the learnt boundary;
  autoencoder: the mean squared reconstruction error.
* ``threshold_``: the ``1 - contamination`` quantile of the training
  scores, so about ``contamination`` of the training lines are flagged.
* :meth:`AnomalyDetector.decision_function`: ``score - threshold_``,
  positive for an anomaly.
* :meth:`AnomalyDetector.predict`: **1 for an anomaly, 0 for a normal
  line** (not scikit-learn's -1/1), so the result sums to a count and
  compares directly with a boolean label such as ``is_anomaly``.

Inputs are standardised (fitted on the training rows) for every algorithm;
Isolation Forest does not need it, but one preprocessing keeps the three
comparable.

The autoencoder is a small PyTorch MLP (encoder layers ``hidden_layer_sizes``,
the last one the bottleneck, and a mirrored decoder; ReLU between layers)
trained on the CPU with Adam for ``epochs`` passes. It trains on the Huber
loss rather than squared error, so the anomalies among the (unlabelled)
training rows pull it less towards reconstructing them; the score is still
the squared reconstruction error. The bottleneck must be narrow (2 by
default): a wide one learns the identity and reconstructs anomalies too. An
autoencoder finds rows *off* the pattern of the others (a price that does not
fit its product); a row that is only more extreme *along* it (a quantity 50
times the usual, with the amount 50 times too) reconstructs well, which is
what Isolation Forest catches. Training is repeatable:
it seeds a forked PyTorch random state from ``random_state`` (the global
state is left as it was) and runs with ``n_jobs`` threads (at most 2; the
previous thread count is restored).

The One-Class SVM (RBF kernel, ``nu = contamination``) costs time quadratic to
cubic in its training rows, so it fits on a random sample of at most
``svm_max_samples`` rows (10,000 by default); the threshold still comes from
the scores of every training row.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.ensemble import IsolationForest
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

from retailml.core.errors import DataValidationError, problem
from retailml.training._params import (
    Constraint,
    ContractEstimator,
    FloatMatrix,
    column_names,
    int_tuple,
    integer,
    numeric_matrix,
    one_of,
    real,
    resolve_columns,
    seed,
    thread_limit,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "CONTEXT_FEATURES",
    "TRANSACTION_FEATURES",
    "VALUE_FEATURES",
    "AnomalyDetector",
    "transaction_features",
]

#: How unusual a line's quantity and price are: the features to detect anomalies with.
VALUE_FEATURES: Final[tuple[str, ...]] = (
    "log_quantity",
    "log_unit_price",
    "log_total_amount",
    "log_price_ratio",
    "log_quantity_ratio",
    "log_customer_quantity_ratio",
)
#: What kind of line it is and when: context, not evidence of an anomaly by itself.
CONTEXT_FEATURES: Final[tuple[str, ...]] = ("hour", "is_cancellation")
#: Every column :func:`transaction_features` returns, in order.
TRANSACTION_FEATURES: Final[tuple[str, ...]] = VALUE_FEATURES + CONTEXT_FEATURES

_REQUIRED: Final = ("stock_code", "quantity", "unit_price", "invoice_date")
_MAX_TORCH_THREADS: Final = 2

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _floats(values: pd.Series[Any]) -> FloatArray:
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def _signed_log1p(values: FloatArray) -> FloatArray:
    """``sign(x) * log1p(|x|)``; missing values become 0."""
    out = np.sign(values) * np.log1p(np.abs(values))
    return np.asarray(np.nan_to_num(out, nan=0.0), dtype=np.float64)


def _log_ratio(values: FloatArray, reference: FloatArray) -> FloatArray:
    """``log(values / reference)``; 0 (no information) where either is missing or not positive."""
    valid = (values > 0) & (reference > 0)  # NaN compares False
    out = np.zeros(values.shape, dtype=np.float64)
    out[valid] = np.log(values[valid] / reference[valid])
    return out


def _check_columns(frame: pd.DataFrame, name: str) -> None:
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing:
        raise DataValidationError(
            problem(
                f"the columns {', '.join(_REQUIRED)}",
                f"no {', '.join(map(repr, missing))} among {list(map(str, frame.columns))}",
                "pass silver transactions (retailml.data.ingest.read_silver)",
                subject=f"transaction_features({name})",
            )
        )


def _is_cancellation(transactions: pd.DataFrame) -> FloatArray:
    if "is_cancellation" in transactions.columns:
        flag = transactions["is_cancellation"].astype("boolean").fillna(False)
    elif "invoice_no" in transactions.columns:
        flag = transactions["invoice_no"].astype("string").str.startswith("C").fillna(False)
    else:
        return np.zeros(len(transactions), dtype=np.float64)
    return np.asarray(flag.to_numpy(dtype=bool), dtype=np.float64)


def transaction_features(
    transactions: pd.DataFrame, reference: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Numeric per-line features for anomaly detection, vectorised.

    Value features (:data:`VALUE_FEATURES`), how unusual the line is:

    * ``log_quantity``, ``log_unit_price``, ``log_total_amount``: signed
      ``log1p`` (cancellations and adjustments are negative);
    * ``log_price_ratio``: ``log(unit_price / the product's median unit
      price)``;
    * ``log_quantity_ratio``: ``log(|quantity| / the product's median
      quantity)``;
    * ``log_customer_quantity_ratio``: ``log_quantity_ratio`` less the
      customer's median ``log_quantity_ratio``, so a wholesaler's usual bulk
      order is not unusual for them (guests and unknown customers: no
      adjustment).

    Ratios are logs, so half and double are equally far from 0; a ratio is 0
    where the product is unknown or a value is not positive.

    Context features (:data:`CONTEXT_FEATURES`): ``hour`` of
    ``invoice_date`` (0-23) and ``is_cancellation`` (1.0 or 0.0). They say
    what kind of line it is, not whether it is odd: a detector given them
    flags rare kinds of lines (cancellations are about 2 % of the lines) and
    odd hours, so leave them out to find unusual quantities and prices
    (``AnomalyDetector(features=list(VALUE_FEATURES))``).

    Args:
        transactions: Silver-shaped lines with at least ``stock_code``,
            ``quantity``, ``unit_price`` and ``invoice_date``;
            ``total_amount`` and ``is_cancellation`` are derived when absent
            (``quantity * unit_price``; an ``invoice_no`` starting with "C"),
            and ``customer_id`` is optional.
        reference: Lines the product and customer medians come from, e.g. the
            training data when scoring new lines (a small batch is a poor
            reference for itself); None uses ``transactions``. Medians are
            taken over lines with positive quantity and price.

    Returns:
        One row per input line with the :data:`TRANSACTION_FEATURES` columns,
        index aligned with ``transactions``.

    Raises:
        DataValidationError: when a required column is missing.
    """
    _check_columns(transactions, "transactions")
    source = transactions if reference is None else reference
    _check_columns(source, "reference")

    usual = source.loc[(source["quantity"] > 0) & (source["unit_price"] > 0)]
    medians = usual.groupby("stock_code")[["quantity", "unit_price"]].median()

    quantity = _floats(transactions["quantity"])
    price = _floats(transactions["unit_price"])
    if "total_amount" in transactions.columns:
        amount = _floats(transactions["total_amount"])
    else:
        amount = quantity * price
    product = transactions["stock_code"]
    quantity_ratio = _log_ratio(np.abs(quantity), _floats(product.map(medians["quantity"])))

    customer_ratio = quantity_ratio
    if "customer_id" in transactions.columns and "customer_id" in usual.columns:
        known = usual.loc[usual["customer_id"].notna()]
        usual_ratio = _log_ratio(
            _floats(known["quantity"]), _floats(known["stock_code"].map(medians["quantity"]))
        )
        by_customer = pd.Series(usual_ratio, index=known.index).groupby(known["customer_id"])
        customer_usual = _floats(transactions["customer_id"].map(by_customer.median()))
        customer_ratio = quantity_ratio - np.nan_to_num(customer_usual, nan=0.0)

    hours = pd.to_datetime(transactions["invoice_date"]).dt.hour
    return pd.DataFrame(
        {
            "log_quantity": _signed_log1p(quantity),
            "log_unit_price": _signed_log1p(price),
            "log_total_amount": _signed_log1p(amount),
            "log_price_ratio": _log_ratio(price, _floats(product.map(medians["unit_price"]))),
            "log_quantity_ratio": quantity_ratio,
            "log_customer_quantity_ratio": customer_ratio,
            "hour": hours.to_numpy(dtype=np.float64, na_value=0.0),
            "is_cancellation": _is_cancellation(transactions),
        },
        index=transactions.index,
    )


class AnomalyDetector(ContractEstimator):
    """Scores transaction lines by how unusual they are; flags the top ``contamination``.

    Args:
        algorithm: ``"isolation_forest"``, ``"one_class_svm"`` or ``"autoencoder"``.
        contamination: Expected share of anomalies in the training data; sets
            ``threshold_`` (and the SVM's ``nu``).
        features: Numeric columns to use; None means every numeric or
            boolean column of the frame passed to ``fit`` (pass a feature
            frame, not raw lines with identifiers or labels). For
            :func:`transaction_features`' output, :data:`VALUE_FEATURES`.
        random_state: Seed of the forest, the SVM sample and the network;
            None is not repeatable.
        n_estimators: Trees of the Isolation Forest.
        svm_max_samples: Most rows the One-Class SVM fits on.
        hidden_layer_sizes: Autoencoder encoder widths, the last being the
            bottleneck; the decoder mirrors them.
        epochs: Autoencoder passes over the training rows.
        batch_size: Autoencoder rows per gradient step.
        learning_rate: Autoencoder Adam step size.
        n_jobs: Threads for the forest, native thread pools and PyTorch
            (PyTorch uses at most 2).

    Attributes:
        threshold_: Scores above it are anomalies.
        feature_names_in_: The feature columns.
        n_features_in_: Their number.
        scaler_: The fitted standardiser.
        model_: The fitted IsolationForest, OneClassSVM or PyTorch module.
        train_losses_: Autoencoder only: mean training loss of each epoch.
    """

    ALGORITHMS: ClassVar[tuple[str, ...]] = ("isolation_forest", "one_class_svm", "autoencoder")
    _param_constraints: ClassVar[Mapping[str, Constraint]] = {
        "algorithm": one_of(*ALGORITHMS),
        "contamination": real(0.0, 0.5, low_open=True),
        "features": column_names(example=list(VALUE_FEATURES)),
        "random_state": seed(),
        "n_estimators": integer(low=1),
        "svm_max_samples": integer(low=10),
        "hidden_layer_sizes": int_tuple(low=1),
        "epochs": integer(low=1),
        "batch_size": integer(low=1),
        "learning_rate": real(0.0, 1.0, low_open=True),
        "n_jobs": integer(low=1),
    }

    def __init__(
        self,
        algorithm: str = "isolation_forest",
        contamination: float = 0.01,
        features: Sequence[str] | None = None,
        random_state: int | None = 0,
        n_estimators: int = 100,
        svm_max_samples: int = 10_000,
        hidden_layer_sizes: Sequence[int] = (16, 2),
        epochs: int = 10,
        batch_size: int = 256,
        learning_rate: float = 0.005,
        n_jobs: int = 1,
    ) -> None:
        self.algorithm = algorithm
        self.contamination = contamination
        self.features = features
        self.random_state = random_state
        self.n_estimators = n_estimators
        self.svm_max_samples = svm_max_samples
        self.hidden_layer_sizes = hidden_layer_sizes
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.n_jobs = n_jobs

    def fit(self, X: pd.DataFrame, y: object = None) -> AnomalyDetector:  # noqa: N803
        """Learn normal lines and set ``threshold_``.

        Args:
            X: One row per line, numeric feature columns.
            y: Ignored (the methods are unsupervised); accepted for
                scikit-learn compatibility.

        Returns:
            self.

        Raises:
            ConfigError: for an invalid parameter.
            DataValidationError: for unknown, non-numeric or missing feature values.
        """
        self._validate_params()
        frame = self._check_frame(X)
        if self.features is None:
            features = [
                str(c)
                for c in frame.columns
                if pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c])
            ]
        else:
            features = resolve_columns(frame, list(self.features), owner=type(self).__name__)
        matrix = numeric_matrix(frame, features, owner=type(self).__name__)
        self.feature_names_in_ = np.asarray(features, dtype=object)
        self.n_features_in_ = len(features)
        scaler = StandardScaler().fit(matrix)
        points = np.asarray(scaler.transform(matrix), dtype=np.float64)
        self.scaler_ = scaler
        with thread_limit(self.n_jobs):
            self._fit_model(points)
            scores = self._score(points)
        self.threshold_ = float(np.quantile(scores, 1.0 - float(self.contamination)))
        return self

    def _fit_model(self, points: FloatMatrix) -> None:
        if self.algorithm == "isolation_forest":
            self.model_: Any = IsolationForest(
                n_estimators=self.n_estimators,
                random_state=self.random_state,
                n_jobs=self.n_jobs,
            ).fit(points)
        elif self.algorithm == "one_class_svm":
            rng = np.random.default_rng(self.random_state)
            n = points.shape[0]
            sample = (
                rng.choice(n, size=self.svm_max_samples, replace=False)
                if n > self.svm_max_samples
                else np.arange(n)
            )
            self.model_ = OneClassSVM(nu=self.contamination, kernel="rbf", gamma="scale")
            self.model_.fit(points[sample])
        else:
            self.model_, self.train_losses_ = _train_autoencoder(
                points,
                hidden=tuple(int(h) for h in self.hidden_layer_sizes),
                epochs=self.epochs,
                batch_size=self.batch_size,
                learning_rate=float(self.learning_rate),
                seed=self._torch_seed(),
                threads=min(self.n_jobs, _MAX_TORCH_THREADS),
            )

    def _torch_seed(self) -> int:
        if self.random_state is not None:
            return int(self.random_state)
        return int(np.random.default_rng().integers(0, 2**31 - 1))

    def _points(self, X: pd.DataFrame) -> FloatMatrix:  # noqa: N803
        self._check_fitted()
        frame = self._check_frame(X)
        owner = type(self).__name__
        features = resolve_columns(frame, list(self.feature_names_in_), owner=owner)
        matrix = numeric_matrix(frame, features, owner=owner)
        return np.asarray(self.scaler_.transform(matrix), dtype=np.float64)

    def _score(self, points: FloatMatrix) -> FloatArray:
        if self.algorithm == "autoencoder":
            return _reconstruction_error(
                self.model_, points, threads=min(self.n_jobs, _MAX_TORCH_THREADS)
            )
        return np.asarray(-self.model_.score_samples(points), dtype=np.float64)

    def score_samples(self, X: pd.DataFrame) -> FloatArray:  # noqa: N803
        """Anomaly score of each row: higher is more anomalous (see the module docstring).

        Raises:
            StateError: before ``fit``.
            DataValidationError: when feature columns are missing or invalid.
        """
        points = self._points(X)
        with thread_limit(self.n_jobs):
            return self._score(points)

    def decision_function(self, X: pd.DataFrame) -> FloatArray:  # noqa: N803
        """``score_samples(X) - threshold_``: positive for an anomaly."""
        return self.score_samples(X) - self.threshold_

    def predict(self, X: pd.DataFrame) -> IntArray:  # noqa: N803
        """1 for an anomaly (score above ``threshold_``), 0 for a normal row."""
        return (self.score_samples(X) > self.threshold_).astype(np.int64)


# --- the autoencoder ---------------------------------------------------------------


def _autoencoder(n_features: int, hidden: tuple[int, ...]) -> torch.nn.Sequential:
    """Linear layers through ``hidden`` and back, ReLU between them, linear output."""
    from torch import nn

    widths = [n_features, *hidden, *reversed(hidden[:-1]), n_features]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class _TorchThreads:
    """Run with a given PyTorch thread count, restoring the previous one afterwards."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.previous = 0

    def __enter__(self) -> None:
        import torch

        self.previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.set_num_threads(self.previous)


def _train_autoencoder(
    points: FloatMatrix,
    *,
    hidden: tuple[int, ...],
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    threads: int,
) -> tuple[torch.nn.Sequential, list[float]]:
    """Fit the autoencoder on standardised rows; returns it and each epoch's mean loss."""
    import torch

    data = torch.as_tensor(points, dtype=torch.float32)
    n = data.shape[0]
    losses: list[float] = []
    with _TorchThreads(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _autoencoder(data.shape[1], hidden)
        optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
        shuffle = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(n, generator=shuffle)
            total = 0.0
            for start in range(0, n, batch_size):
                batch = data[order[start : start + batch_size]]
                optimiser.zero_grad()
                # Huber, not squared error: the anomalies among the training rows
                # then pull the network less towards reconstructing them.
                loss = torch.nn.functional.smooth_l1_loss(model(batch), batch)
                loss.backward()  # type: ignore[no-untyped-call]
                optimiser.step()
                total += float(loss.detach()) * batch.shape[0]
            losses.append(total / n)
        model.eval()
    if not all(math.isfinite(x) for x in losses):  # pragma: no cover - defensive
        raise DataValidationError(
            problem(
                "a finite autoencoder training loss",
                f"{losses[-1]!r}",
                "lower learning_rate or check the features for extreme values",
                subject="AnomalyDetector",
            )
        )
    return model, losses


def _reconstruction_error(
    model: torch.nn.Sequential, points: FloatMatrix, *, threads: int
) -> FloatArray:
    """Mean squared reconstruction error of each row."""
    import torch

    data = torch.as_tensor(points, dtype=torch.float32)
    with _TorchThreads(threads), torch.no_grad():
        errors = ((model(data) - data) ** 2).mean(dim=1)
    return np.asarray(errors.numpy(), dtype=np.float64)
