"""Customer segmentation: KMeans, DBSCAN or hierarchical clustering of RFM features.

:class:`CustomerSegmenter` takes the guide's ``segmentation_config`` keys as
its arguments (``CustomerSegmenter(**segmentation_config)``) and fits on a
frame with one row per customer, such as the ``customer_rfm`` feature set.

Preprocessing, in order:

1. **Features.** ``features`` names columns; the guide's short names
   ``recency``, ``frequency`` and ``monetary`` stand for ``recency_days``,
   ``frequency_orders`` and ``monetary_total`` (:data:`FEATURE_ALIASES`).
   None means those three.
2. **Log transform.** RFM counts and amounts are heavy-tailed (a few
   wholesalers buy a hundred times the median), and scaled raw they would
   put almost every customer in one cluster and each whale in its own. With
   ``log_transform=True`` the heavy-tailed RFM columns
   (:data:`HEAVY_TAILED`) go through a signed ``log1p`` (net monetary values
   can be negative); a list names the columns to transform instead.
3. **Scaling** with a standard, robust or min-max scaler, or none.

The clusters live in that transformed space: ``cluster_centers_`` and
:meth:`CustomerSegmenter.transform` are in it. Segment ids are ordered by
size, largest first (id 0), whatever order the algorithm found them in.

Assigning new customers (:meth:`CustomerSegmenter.predict`) uses the nearest
centre for every algorithm: for KMeans that is KMeans' own rule; DBSCAN and
hierarchical clustering have no rule for new points, so the centroids of the
clusters they found stand in. DBSCAN's noise points keep the label ``-1`` in
``labels_`` (and a ``noise`` row in ``profiles_``), but :meth:`predict`
always assigns a segment. Hierarchical clustering needs memory quadratic in
the rows, so above :data:`HIERARCHICAL_MAX_SAMPLES` customers it clusters a
random sample and assigns every customer to the nearest centroid of the
sample's clusters (those centroids are then ``cluster_centers_``).

Readable labels
---------------
Each segment's label comes from where its mean of each feature sits among
the population's tertiles (the 1/3 and 2/3 quantiles over the fitted
customers): at or below the first tertile is *low*, above the second is
*high*, otherwise *mid*. Means and tertiles are taken after the log
transform (before scaling, which keeps the order): the raw mean of a
heavy-tailed column follows its few largest customers, so a segment of
ordinary buyers with one wholesaler would read "high value". Profiles still
show raw means. The words are fixed (:data:`LABEL_WORDS`):

* monetary (``monetary_total``, else ``avg_order_value``, else
  ``monetary_avg``): "low value" / "mid value" / "high value";
* recency (``recency_days``, where *low* days is good): "recent" /
  "lapsing" / "lapsed";
* frequency (``frequency_orders``, else ``order_count``): "rare" /
  "occasional" / "frequent";
* any other feature: "low <name>" / "high <name>", nothing when mid.

The words join in that order, e.g. "high value, recent, frequent" or "low
value, lapsed, rare". Segments that would share a label get " (2)", " (3)"
in id order, so every label names one segment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.cluster import DBSCAN, AgglomerativeClustering, KMeans
from sklearn.metrics import pairwise_distances_argmin
from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

from retailml.core.errors import ConfigError, DataValidationError, problem
from retailml.training._params import (
    Constraint,
    ContractEstimator,
    FloatMatrix,
    column_names,
    integer,
    numeric_matrix,
    one_of,
    real,
    resolve_columns,
    seed,
    thread_limit,
)

__all__ = [
    "FEATURE_ALIASES",
    "HEAVY_TAILED",
    "HIERARCHICAL_MAX_SAMPLES",
    "LABEL_WORDS",
    "CustomerSegmenter",
]

#: The guide's short feature names and the ``customer_rfm`` columns they stand for.
FEATURE_ALIASES: Final[Mapping[str, str]] = {
    "recency": "recency_days",
    "frequency": "frequency_orders",
    "monetary": "monetary_total",
}

#: ``customer_rfm`` columns that ``log_transform=True`` transforms.
HEAVY_TAILED: Final[frozenset[str]] = frozenset(
    {
        "frequency_orders",
        "monetary_total",
        "monetary_avg",
        "monetary_std",
        "order_count",
        "avg_order_value",
    }
)

#: Above this many rows, hierarchical clustering fits a random sample of this size.
HIERARCHICAL_MAX_SAMPLES: Final = 10_000

#: Label words per RFM dimension: (columns in order of preference, (low, mid, high) words).
LABEL_WORDS: Final[Mapping[str, tuple[tuple[str, ...], tuple[str, str, str]]]] = {
    "monetary": (
        ("monetary_total", "avg_order_value", "monetary_avg"),
        ("low value", "mid value", "high value"),
    ),
    "recency": (("recency_days",), ("recent", "lapsing", "lapsed")),
    "frequency": (("frequency_orders", "order_count"), ("rare", "occasional", "frequent")),
}

NOISE: Final = -1
_SCALERS: Final = {"standard": StandardScaler, "robust": RobustScaler, "minmax": MinMaxScaler}

IntArray = npt.NDArray[np.int64]


def _signed_log1p(values: FloatMatrix) -> FloatMatrix:
    return np.asarray(np.sign(values) * np.log1p(np.abs(values)), dtype=np.float64)


def _centroids(points: FloatMatrix, labels: IntArray, n_clusters: int) -> FloatMatrix:
    """Mean of the points of each cluster ``0 .. n_clusters - 1`` (noise left out)."""
    keep = labels >= 0
    sums = np.zeros((n_clusters, points.shape[1]))
    np.add.at(sums, labels[keep], points[keep])
    counts = np.bincount(labels[keep], minlength=n_clusters).astype(np.float64)
    return np.asarray(sums / counts[:, None], dtype=np.float64)


def _by_size(labels: IntArray, n_ids: int) -> tuple[IntArray, IntArray]:
    """Relabel clusters ``0 .. n_ids - 1`` so that 0 is the largest; noise stays -1.

    Returns:
        The new labels, and the old id of each new id (ties: lower old id
        first; empty clusters last).
    """
    sizes = np.bincount(labels[labels >= 0], minlength=n_ids)
    order = np.lexsort((np.arange(sizes.size), -sizes)).astype(np.int64)
    new_id = np.empty(sizes.size, dtype=np.int64)
    new_id[order] = np.arange(sizes.size)
    relabelled = np.where(labels >= 0, new_id[np.maximum(labels, 0)], NOISE).astype(np.int64)
    return relabelled, order


def _level(mean: float, low: float, high: float) -> int:
    """0, 1 or 2: the mean at or below the first tertile, between, or above the second."""
    if mean <= low:
        return 0
    return 2 if mean > high else 1


def _segment_labels(
    means: pd.DataFrame, population: pd.DataFrame, features: Sequence[str]
) -> list[str]:
    """Readable labels of segments from their feature means (rules in the module docstring).

    Args:
        means: One row per segment, one column per feature (log-transformed
            where the model transforms).
        population: The same features of every customer, for the tertiles.
        features: The features, in the order they were selected.
    """
    tertiles = population[list(features)].quantile([1 / 3, 2 / 3])
    used: set[str] = set()
    plan: list[tuple[str, tuple[str, str, str]]] = []
    for columns, dimension_words in LABEL_WORDS.values():
        chosen = next((c for c in columns if c in features), None)
        if chosen is not None:
            plan.append((chosen, dimension_words))
            used.update(columns)
    plan += [(f, (f"low {f}", "", f"high {f}")) for f in features if f not in used]

    labels: list[str] = []
    for _, row in means.iterrows():  # one row per segment: a handful
        chosen_words = [
            words[_level(float(row[c]), float(tertiles[c].iloc[0]), float(tertiles[c].iloc[1]))]
            for c, words in plan
        ]
        labels.append(", ".join(w for w in chosen_words if w) or "typical")
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return unique


class CustomerSegmenter(ContractEstimator):
    """Segments customers by clustering their (RFM) features.

    Args:
        algorithm: ``"kmeans"``, ``"dbscan"`` or ``"hierarchical"``
            (agglomerative clustering).
        n_clusters: Number of segments for kmeans and hierarchical; DBSCAN
            finds its own number and ignores it.
        features: Columns to cluster on; the aliases ``recency``,
            ``frequency`` and ``monetary`` are accepted. None means those three.
        scaling: ``"standard"``, ``"robust"``, ``"minmax"`` or None.
        random_state: Seed for KMeans' initialisation and the hierarchical
            sample; None is not repeatable.
        log_transform: True: signed ``log1p`` of the heavy-tailed RFM features
            (:data:`HEAVY_TAILED`) before scaling; False: none; a list: of
            those features (aliases accepted).
        eps: DBSCAN's neighbourhood radius, in the scaled space.
        min_samples: DBSCAN's neighbours for a core point.
        linkage: Hierarchical clustering's linkage: ``"ward"``,
            ``"complete"``, ``"average"`` or ``"single"``.
        n_init: KMeans restarts; the best of them is kept.
        n_jobs: Threads for clustering and distances.

    Attributes:
        labels_: Segment of each fitted row (``-1``: DBSCAN noise).
        n_clusters_: Number of segments found (noise not counted).
        cluster_centers_: ``(n_clusters_, n_features)`` centres in the
            transformed space; row ``i`` is segment ``i``.
        profiles_: One row per segment: ``segment``, ``label``, ``size``,
            ``share`` and the mean of each raw feature (DBSCAN noise last, as
            segment -1 labelled "noise").
        segment_names_: ``segment id -> label``.
        feature_names_in_: The feature columns, aliases resolved.
        n_features_in_: Their number.
        log_features_: The features that were log-transformed.
        scaler_: The fitted scaler, or None.

    Example:
        >>> segmenter = CustomerSegmenter(algorithm="kmeans", n_clusters=5)
        >>> segmenter.fit(rfm).profiles_[["segment", "label", "share"]]  # doctest: +SKIP
    """

    ALGORITHMS: ClassVar[tuple[str, ...]] = ("kmeans", "dbscan", "hierarchical")
    _param_constraints: ClassVar[Mapping[str, Constraint]] = {
        "algorithm": one_of(*ALGORITHMS),
        "n_clusters": integer(low=2),
        "features": column_names(example=["recency", "frequency", "monetary"]),
        "scaling": one_of(*_SCALERS, None),
        "random_state": seed(),
        "log_transform": Constraint(
            lambda v: isinstance(v, bool) or (v is not None and column_names().accepts(v)),
            "a bool or a non-empty list of feature names",
        ),
        "eps": real(0.0, low_open=True),
        "min_samples": integer(low=1),
        "linkage": one_of("ward", "complete", "average", "single"),
        "n_init": integer(low=1),
        "n_jobs": integer(low=1),
    }

    def __init__(
        self,
        algorithm: str = "kmeans",
        n_clusters: int = 5,
        features: Sequence[str] | None = None,
        scaling: str | None = "standard",
        random_state: int | None = 42,
        log_transform: bool | Sequence[str] = True,
        eps: float = 0.5,
        min_samples: int = 5,
        linkage: str = "ward",
        n_init: int = 10,
        n_jobs: int = 1,
    ) -> None:
        self.algorithm = algorithm
        self.n_clusters = n_clusters
        self.features = features
        self.scaling = scaling
        self.random_state = random_state
        self.log_transform = log_transform
        self.eps = eps
        self.min_samples = min_samples
        self.linkage = linkage
        self.n_init = n_init
        self.n_jobs = n_jobs

    # --- fitting -------------------------------------------------------------------

    def fit(self, X: pd.DataFrame, y: object = None) -> CustomerSegmenter:  # noqa: N803
        """Cluster the customers of ``X`` and profile the segments.

        Args:
            X: One row per customer with the feature columns (e.g. ``customer_rfm``).
            y: Ignored; accepted for scikit-learn compatibility.

        Returns:
            self.

        Raises:
            ConfigError: for an invalid parameter, or when DBSCAN finds no cluster.
            DataValidationError: for unknown, non-numeric or missing feature values.
        """
        self._validate_params()
        frame = self._check_frame(X)
        owner = type(self).__name__
        requested = list(self.features) if self.features is not None else list(FEATURE_ALIASES)
        features = resolve_columns(frame, requested, owner=owner, aliases=FEATURE_ALIASES)
        raw = self._raw_matrix(frame, features)
        if raw.shape[0] < 2:
            raise DataValidationError(
                problem(
                    "at least 2 customers",
                    f"{raw.shape[0]}",
                    "fit on more customers",
                    subject=owner,
                )
            )
        if self.log_transform is True:
            log_features = [f for f in features if f in HEAVY_TAILED]
        elif self.log_transform is False:
            log_features = []
        else:
            log_features = resolve_columns(
                frame[features], list(self.log_transform), owner=owner, aliases=FEATURE_ALIASES
            )
        self.feature_names_in_ = np.asarray(features, dtype=object)
        self.n_features_in_ = len(features)
        self.log_features_ = log_features
        scaler_class = _SCALERS.get(self.scaling) if self.scaling is not None else None
        scaler = scaler_class() if scaler_class is not None else None
        logged = self._log(raw)
        points = scaler.fit_transform(logged) if scaler is not None else logged
        self.scaler_ = scaler

        with thread_limit(self.n_jobs):
            labels, centers = self._cluster(np.asarray(points, dtype=np.float64))
        self.labels_ = labels
        self.n_clusters_ = centers.shape[0]
        self.cluster_centers_ = centers
        self.profiles_ = self._profiles(
            frame[features], pd.DataFrame(logged, columns=features), labels
        )
        self.segment_names_ = {
            int(s): str(lbl)
            for s, lbl in zip(self.profiles_["segment"], self.profiles_["label"], strict=True)
            if s != NOISE
        }
        return self

    def _raw_matrix(self, frame: pd.DataFrame, features: Sequence[str]) -> FloatMatrix:
        return numeric_matrix(frame, features, owner=type(self).__name__)

    def _log(self, raw: FloatMatrix) -> FloatMatrix:
        out = raw.copy()
        names = list(self.feature_names_in_)
        for column in self.log_features_:
            j = names.index(column)
            out[:, j] = _signed_log1p(raw[:, j])
        return out

    def _cluster(self, points: FloatMatrix) -> tuple[IntArray, FloatMatrix]:
        """Labels (ordered by size) and centres of the chosen algorithm."""
        n = points.shape[0]
        if self.algorithm != "dbscan" and n < self.n_clusters:
            raise DataValidationError(
                problem(
                    f"at least n_clusters={self.n_clusters} customers",
                    f"{n}",
                    "fit on more customers or lower n_clusters",
                    subject=type(self).__name__,
                )
            )
        given_centers: FloatMatrix | None = None  # centres that assigned the labels, if any
        if self.algorithm == "kmeans":
            model = KMeans(
                n_clusters=self.n_clusters, n_init=self.n_init, random_state=self.random_state
            )
            raw_labels = np.asarray(model.fit_predict(points), dtype=np.int64)
        elif self.algorithm == "dbscan":
            model = DBSCAN(eps=self.eps, min_samples=self.min_samples)
            raw_labels = np.asarray(model.fit_predict(points), dtype=np.int64)
            if not (raw_labels >= 0).any():
                raise ConfigError(
                    problem(
                        "DBSCAN to find at least one cluster",
                        f"only noise with eps={self.eps!r}, min_samples={self.min_samples!r}",
                        "raise eps or lower min_samples (eps is in the scaled feature space)",
                        subject=type(self).__name__,
                    )
                )
        else:
            raw_labels, given_centers = self._hierarchical(points)
        n_ids = int(raw_labels.max()) + 1
        labels, order = _by_size(raw_labels, n_ids)
        n_found = int(labels.max()) + 1
        if given_centers is not None:
            # Keep the centres the labels were assigned with, so predict(X) == labels_.
            return labels, given_centers[order][:n_found]
        return labels, _centroids(points, labels, n_found)

    def _hierarchical(self, points: FloatMatrix) -> tuple[IntArray, FloatMatrix | None]:
        """Labels, and the sample's centroids when the rows were too many to cluster at once."""
        model = AgglomerativeClustering(n_clusters=self.n_clusters, linkage=self.linkage)
        n = points.shape[0]
        if n <= HIERARCHICAL_MAX_SAMPLES:
            return np.asarray(model.fit_predict(points), dtype=np.int64), None
        rng = np.random.default_rng(self.random_state)
        sample = rng.choice(n, size=HIERARCHICAL_MAX_SAMPLES, replace=False)
        sample_labels = np.asarray(model.fit_predict(points[sample]), dtype=np.int64)
        centers = _centroids(points[sample], sample_labels, self.n_clusters)
        labels = np.asarray(pairwise_distances_argmin(points, centers), dtype=np.int64)
        return labels, centers

    def _profiles(self, raw: pd.DataFrame, logged: pd.DataFrame, labels: IntArray) -> pd.DataFrame:
        """Size, share and raw means per segment; labels from the log-space means."""
        features = list(raw.columns)
        grouped = raw.groupby(labels, sort=True)
        means = grouped.mean()
        sizes = grouped.size()
        order = [s for s in means.index if s != NOISE] + ([NOISE] if NOISE in means.index else [])
        means, sizes = means.loc[order], sizes.loc[order]
        segments = [s for s in order if s != NOISE]
        logged_means = logged.groupby(labels, sort=True).mean().loc[segments]
        names = _segment_labels(logged_means, logged, features)
        names += ["noise"] if NOISE in order else []
        profiles = pd.DataFrame(
            {
                "segment": np.asarray(order, dtype=np.int64),
                "label": names,
                "size": sizes.to_numpy(dtype=np.int64),
                "share": sizes.to_numpy(dtype=np.float64) / len(labels),
            }
        )
        for column in features:
            profiles[column] = means[column].to_numpy(dtype=np.float64)
        return profiles

    # --- using the fitted model ----------------------------------------------------

    def transform(self, X: pd.DataFrame) -> FloatMatrix:  # noqa: N803
        """The features of ``X`` in the clustering space (log-transformed, scaled).

        ``cluster_centers_`` live in this space; use it for silhouette or
        Calinski-Harabasz scores.
        """
        self._check_fitted()
        frame = self._check_frame(X)
        features = resolve_columns(frame, list(self.feature_names_in_), owner=type(self).__name__)
        logged = self._log(self._raw_matrix(frame, features))
        scaled = self.scaler_.transform(logged) if self.scaler_ is not None else logged
        return np.asarray(scaled, dtype=np.float64)

    def predict(self, X: pd.DataFrame) -> IntArray:  # noqa: N803
        """The segment of each row of ``X``: the nearest centre (never -1).

        Raises:
            StateError: before ``fit``.
            DataValidationError: when feature columns are missing or invalid.
        """
        points = self.transform(X)
        with thread_limit(self.n_jobs):
            nearest = pairwise_distances_argmin(points, self.cluster_centers_)
        return np.asarray(nearest, dtype=np.int64)

    def predict_names(self, X: pd.DataFrame) -> pd.Series[str]:  # noqa: N803
        """The segment label of each row of ``X`` (index aligned with ``X``)."""
        segments = self.predict(X)
        names = pd.Series(segments, index=X.index).map(self.segment_names_)
        return names.astype(str)

    def fit_predict(self, X: pd.DataFrame, y: object = None) -> IntArray:  # noqa: N803
        """Fit and return ``labels_`` (DBSCAN noise stays -1, unlike :meth:`predict`)."""
        labels: IntArray = self.fit(X, y).labels_
        return labels
