"""Customer segmentation, and the estimator contract every registered algorithm follows.

The contract test runs over the registry (``retailml.training._registry``), so
an algorithm joins it by being registered; a model type joins by adding its
name to ``CONTRACT_MODEL_TYPES`` and a small data set to ``CONTRACT_DATA``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.metrics import silhouette_score

import guide
from retailml.core.errors import ConfigError, DataValidationError, StateError
from retailml.data.generate import GeneratorConfig, generate_transactions
from retailml.feature_engineering.feature_pipeline import FEATURE_SETS
from retailml.training import _segmentation
from retailml.training._registry import ALGORITHMS, make_estimator
from retailml.training._segmentation import (
    FEATURE_ALIASES,
    HEAVY_TAILED,
    LABEL_WORDS,
    CustomerSegmenter,
)

RFM = ["recency_days", "frequency_orders", "monetary_total"]

# --- the estimator contract --------------------------------------------------------

#: The model types whose algorithms the contract test covers.
CONTRACT_MODEL_TYPES = ("customer_segmentation", "anomaly_detection", "demand_prediction")


def _rfm_like(n: int = 150, seed: int = 0) -> tuple[pd.DataFrame, None]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "recency_days": rng.integers(0, 400, n),
            "frequency_orders": 1 + rng.poisson(rng.lognormal(0.5, 1.0, n)),
            "monetary_total": rng.lognormal(6.0, 1.2, n),
        }
    )
    return frame, None


def _lines(n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, None]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "log_quantity": rng.normal(2.0, 1.0, n),
            "log_unit_price": rng.normal(1.0, 0.5, n),
            "log_price_ratio": np.where(rng.random(n) < 0.02, 2.3, rng.normal(0.0, 0.05, n)),
        }
    )
    return frame, None


def _demand(n: int = 240, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "series_id": rng.choice(["product:A", "product:B", "product:C"], n),
            "day_of_week": rng.integers(0, 7, n),
            "quantity_lag_7": rng.gamma(2.0, 10.0, n),
        }
    )
    frame.loc[rng.random(n) < 0.1, "quantity_lag_7"] = np.nan
    target = 0.8 * frame["quantity_lag_7"].fillna(20.0) + 5 * (frame["series_id"] == "product:B")
    return frame, np.asarray(target + rng.normal(0, 2, n))


#: A small data set (X, y or None) per model type.
CONTRACT_DATA: dict[str, Callable[[], tuple[pd.DataFrame, Any]]] = {
    "customer_segmentation": _rfm_like,
    "anomaly_detection": _lines,
    "demand_prediction": _demand,
}

CONTRACT_CASES = [
    pytest.param(model_type, name, id=f"{model_type}:{name}")
    for model_type in CONTRACT_MODEL_TYPES
    for name in ALGORITHMS[model_type]
]


class _Invalid:
    """A value no parameter accepts."""

    def __repr__(self) -> str:
        return "<invalid>"


_FITTED_METHODS = ("predict", "score_samples", "decision_function", "transform")


@pytest.mark.parametrize(("model_type", "algorithm"), CONTRACT_CASES)
def test_every_algorithm_follows_the_estimator_contract(model_type: str, algorithm: str) -> None:
    data, y = CONTRACT_DATA[model_type]()
    estimator = ALGORITHMS[model_type][algorithm]()
    name = type(estimator).__name__
    params = estimator.get_params(deep=False)
    assert params["algorithm"] == algorithm

    # __init__ stores its arguments and nothing else.
    assert vars(estimator) == params

    # Unfitted: every method that needs a model says so, naming the class.
    methods = [m for m in _FITTED_METHODS if hasattr(estimator, m)]
    for method in methods:
        with pytest.raises(StateError, match=rf"^{name} is not fitted; call fit\(\.\.\.\) first$"):
            getattr(estimator, method)(data)

    # fit returns self; learned state ends in "_" and did not exist before.
    assert estimator.fit(data, y) is estimator
    learned = set(vars(estimator)) - set(params)
    assert learned
    assert all(a.endswith("_") and not a.startswith("_") for a in learned), sorted(learned)
    assert estimator.get_params(deep=False) == params  # fit leaves the parameters alone
    prediction = np.asarray(estimator.predict(data))
    assert prediction.shape[0] == len(data)

    # get_params / set_params round-trip.
    fresh = ALGORITHMS[model_type][algorithm]()
    assert fresh.set_params(**params) is fresh
    assert fresh.get_params(deep=False) == params

    # clone: same parameters, not fitted.
    twin = clone(estimator)
    assert type(twin) is type(estimator)
    assert twin.get_params(deep=False) == params
    with pytest.raises(StateError, match=name):
        twin.predict(data)

    # Deterministic given random_state.
    np.testing.assert_array_equal(np.asarray(twin.fit(data, y).predict(data)), prediction)
    for method in methods:
        np.testing.assert_array_equal(getattr(twin, method)(data), getattr(estimator, method)(data))

    # Every parameter is checked in fit (not __init__), with one message template.
    for key in params:
        bad = clone(estimator).set_params(**{key: _Invalid()})
        template = (
            rf"^The '{key}' parameter of {name} must be .+\. Got <invalid> instead\. "
            rf"Fix: pass e\.g\. {name}\({key}=.+\)\.$"
        )
        with pytest.raises(ConfigError, match=template):
            bad.fit(data, y)

    # An unknown algorithm lists the valid ones.
    with pytest.raises(ConfigError) as caught:
        clone(estimator).set_params(algorithm="nope").fit(data, y)
    assert all(repr(a) in str(caught.value) for a in ALGORITHMS[model_type])


def test_every_bad_parameter_is_reported_at_once() -> None:
    data, _ = _rfm_like()
    bad = CustomerSegmenter(algorithm="kmean", n_clusters=1, scaling="std")
    with pytest.raises(ConfigError, match=r"^3 invalid parameters of CustomerSegmenter:\n") as e:
        bad.fit(data)
    assert (
        "The 'n_clusters' parameter of CustomerSegmenter must be an int >= 2. Got 1 instead. "
        "Fix: pass e.g. CustomerSegmenter(n_clusters=5)."
    ) in str(e.value)


def test_the_registry_builds_estimators_by_model_type_and_algorithm() -> None:
    segmenter = make_estimator("customer_segmentation", "dbscan", eps=0.3)
    assert isinstance(segmenter, CustomerSegmenter)
    assert segmenter.get_params()["algorithm"] == "dbscan"
    assert segmenter.get_params()["eps"] == 0.3
    with pytest.raises(ConfigError, match=r"'customer_segmentation', 'anomaly_detection'"):
        make_estimator("churn", "kmeans")
    with pytest.raises(ConfigError, match=r"'kmeans', 'dbscan', 'hierarchical'"):
        make_estimator("customer_segmentation", "gmm")
    with pytest.raises(ConfigError, match="named once"):
        make_estimator("customer_segmentation", "kmeans", algorithm="dbscan")


# --- segmentation on generated customers -------------------------------------------


def _customer_rfm(rows: int, seed: int) -> pd.DataFrame:
    """The guide's RFM features of generated transactions, computed with pandas."""
    lines = generate_transactions(GeneratorConfig(rows=rows, seed=seed)).to_pandas()
    lines = lines.rename(
        columns={
            "InvoiceNo": "invoice_no",
            "InvoiceDate": "invoice_date",
            "Quantity": "quantity",
            "UnitPrice": "unit_price",
            "CustomerID": "customer_id",
        }
    )
    lines = lines.loc[lines["customer_id"].notna()]
    lines["total_amount"] = lines["quantity"] * lines["unit_price"]
    purchases = lines.loc[~lines["invoice_no"].str.startswith("C") & (lines["quantity"] > 0)]
    snapshot = lines["invoice_date"].max()
    by_customer = purchases.groupby("customer_id")
    rfm = pd.DataFrame(
        {
            "recency_days": (snapshot - by_customer["invoice_date"].max()).dt.days,
            "frequency_orders": by_customer["invoice_no"].nunique(),
            "monetary_total": lines.groupby("customer_id")["total_amount"].sum(),
            "order_count": lines.groupby("customer_id").size(),
        }
    )
    return rfm.dropna().rename_axis("customer_id").reset_index()


@pytest.fixture(scope="module")
def rfm() -> pd.DataFrame:
    return _customer_rfm(rows=100_000, seed=3)


def _guide_segmentation_config() -> dict[str, Any]:
    """The ``segmentation_config`` dict literal of the guide, read from the guide."""
    code = guide.block("### Sales Forecasting Model")
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "segmentation_config" for t in node.targets
        ):
            config: dict[str, Any] = ast.literal_eval(node.value)
            return config
    raise AssertionError("no segmentation_config in the guide")


def test_the_guides_segmentation_config_works_as_arguments(rfm: pd.DataFrame) -> None:
    config = _guide_segmentation_config()
    assert set(config) == {"algorithm", "n_clusters", "features", "scaling", "random_state"}
    segmenter = CustomerSegmenter(**config).fit(rfm)
    assert list(segmenter.feature_names_in_) == RFM  # the guide's short names resolved
    assert segmenter.n_clusters_ == config["n_clusters"]
    assert segmenter.cluster_centers_.shape == (config["n_clusters"], 3)


def test_guide_feature_names_stand_for_customer_rfm_columns() -> None:
    columns = set(FEATURE_SETS["customer_rfm"].column_names)
    assert set(FEATURE_ALIASES.values()) <= columns
    assert columns >= HEAVY_TAILED
    assert {c for cols, _ in LABEL_WORDS.values() for c in cols} <= columns


def test_kmeans_segments_are_far_better_separated_than_random_assignment(
    rfm: pd.DataFrame,
) -> None:
    segmenter = CustomerSegmenter(algorithm="kmeans", n_clusters=5).fit(rfm)
    points = segmenter.transform(rfm)
    kmeans = silhouette_score(points, segmenter.labels_)
    shuffled = np.random.default_rng(0).permutation(segmenter.labels_)
    random = silhouette_score(points, shuffled)
    assert kmeans > 0.3
    assert kmeans > random + 0.25


def test_every_segment_gets_a_readable_unique_label(rfm: pd.DataFrame) -> None:
    segmenter = CustomerSegmenter().fit(rfm)
    profiles = segmenter.profiles_
    assert list(profiles.columns) == ["segment", "label", "size", "share", *RFM]
    assert list(profiles["segment"]) == list(range(5))
    assert profiles["size"].sum() == len(rfm)
    assert profiles["share"].sum() == pytest.approx(1.0)
    assert list(profiles["size"]) == sorted(profiles["size"], reverse=True)  # 0 is the largest
    words = "|".join(re.escape(w) for _, ws in LABEL_WORDS.values() for w in ws)
    for label in profiles["label"]:
        assert re.fullmatch(rf"({words})(, ({words}))*( \(\d\))?", label), label
    assert profiles["label"].is_unique
    assert segmenter.segment_names_ == dict(
        zip(profiles["segment"], profiles["label"], strict=True)
    )
    # Means are of the raw features.
    first = rfm.loc[segmenter.labels_ == 0, RFM].mean()
    np.testing.assert_allclose(profiles.loc[0, RFM].to_numpy(dtype=float), first.to_numpy())


def test_labels_follow_where_segment_means_sit_among_population_tertiles() -> None:
    # Two obvious groups: recent big spenders who order often, and lapsed one-off buyers.
    frame = pd.DataFrame(
        {
            "recency_days": [1, 2, 3, 2, 1, 300, 310, 320, 330, 305],
            "frequency_orders": [20, 25, 30, 22, 28, 1, 1, 1, 1, 1],
            "monetary_total": [9e3, 1e4, 2e4, 1.5e4, 1.2e4, 20, 25, 30, 22, 28],
        }
    )
    segmenter = CustomerSegmenter(n_clusters=2).fit(frame)
    assert sorted(segmenter.segment_names_.values()) == [
        "high value, recent, frequent",
        "low value, lapsed, rare",
    ]
    assert list(segmenter.predict_names(frame.iloc[[0, 9]])) == [
        "high value, recent, frequent",
        "low value, lapsed, rare",
    ]


def test_log_transform_keeps_a_few_big_customers_from_owning_the_segments(
    rfm: pd.DataFrame,
) -> None:
    raw = CustomerSegmenter(log_transform=False).fit(rfm)
    logged = CustomerSegmenter(log_transform=True).fit(rfm)
    assert logged.log_features_ == ["frequency_orders", "monetary_total"]
    # Scaled raw, the heavy tails put almost everyone in one segment.
    assert raw.profiles_["share"].max() > 2 * logged.profiles_["share"].max()
    assert logged.profiles_["share"].min() > 0.05


def test_kmeans_predict_assigns_new_customers_to_the_nearest_centre(rfm: pd.DataFrame) -> None:
    segmenter = CustomerSegmenter().fit(rfm)
    assert (segmenter.predict(rfm) == segmenter.labels_).mean() > 0.99
    points = segmenter.transform(rfm.head(50))
    distances = ((points[:, None, :] - segmenter.cluster_centers_[None]) ** 2).sum(axis=2)
    np.testing.assert_array_equal(segmenter.predict(rfm.head(50)), distances.argmin(axis=1))


def test_dbscan_keeps_noise_in_labels_but_predict_assigns_every_customer(
    rfm: pd.DataFrame,
) -> None:
    segmenter = CustomerSegmenter(algorithm="dbscan", eps=0.3, min_samples=10).fit(rfm)
    assert (segmenter.labels_ == -1).any()
    assert segmenter.n_clusters_ == segmenter.cluster_centers_.shape[0] >= 1
    assert segmenter.profiles_.iloc[-1][["segment", "label"]].tolist() == [-1, "noise"]
    assert -1 not in segmenter.segment_names_
    assigned = segmenter.predict(rfm)
    assert assigned.min() >= 0 and assigned.max() < segmenter.n_clusters_
    assert segmenter.fit_predict(rfm).min() == -1


def test_dbscan_that_finds_only_noise_says_which_parameters_to_change(
    rfm: pd.DataFrame,
) -> None:
    with pytest.raises(ConfigError, match="raise eps or lower min_samples"):
        CustomerSegmenter(algorithm="dbscan", eps=1e-6, min_samples=50).fit(rfm)


def test_hierarchical_centres_are_the_centroids_of_the_clusters_found(rfm: pd.DataFrame) -> None:
    segmenter = CustomerSegmenter(algorithm="hierarchical", n_clusters=4).fit(rfm)
    points = segmenter.transform(rfm)
    for segment in range(4):
        np.testing.assert_allclose(
            segmenter.cluster_centers_[segment], points[segmenter.labels_ == segment].mean(axis=0)
        )


def test_hierarchical_clusters_a_sample_of_many_customers_and_assigns_the_rest(
    rfm: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_segmentation, "HIERARCHICAL_MAX_SAMPLES", 200)
    segmenter = CustomerSegmenter(algorithm="hierarchical", n_clusters=4).fit(rfm)
    assert len(segmenter.labels_) == len(rfm)
    assert segmenter.labels_.min() == 0 and segmenter.n_clusters_ == 4
    np.testing.assert_array_equal(segmenter.predict(rfm), segmenter.labels_)


@pytest.mark.parametrize("scaling", ["standard", "robust", "minmax", None])
def test_every_scaling_clusters(rfm: pd.DataFrame, scaling: str | None) -> None:
    segmenter = CustomerSegmenter(scaling=scaling, n_clusters=3).fit(rfm)
    assert segmenter.n_clusters_ == 3
    assert (segmenter.scaler_ is None) == (scaling is None)


def test_unknown_feature_lists_the_available_columns(rfm: pd.DataFrame) -> None:
    with pytest.raises(DataValidationError, match=r"unknown 'tenure'; available: 'customer_id'"):
        CustomerSegmenter(features=["recency", "tenure"]).fit(rfm)


def test_missing_feature_values_are_reported_with_a_fix() -> None:
    frame, _ = _rfm_like()
    frame["monetary_std"] = np.where(frame.index % 10 == 0, np.nan, 1.0)
    with pytest.raises(DataValidationError, match=r"'monetary_std' \(15 rows\).*Fix: fill"):
        CustomerSegmenter(features=[*RFM, "monetary_std"]).fit(frame)


def test_predict_needs_the_fitted_features(rfm: pd.DataFrame) -> None:
    segmenter = CustomerSegmenter().fit(rfm)
    with pytest.raises(DataValidationError, match="'monetary_total'"):
        segmenter.predict(rfm.drop(columns="monetary_total"))
