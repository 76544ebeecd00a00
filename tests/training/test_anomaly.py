"""Anomaly detection on generated transactions with labelled anomalies."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

from retailml.core.errors import DataValidationError
from retailml.data.generate import GeneratorConfig, generate_transactions
from retailml.training._anomaly import (
    TRANSACTION_FEATURES,
    VALUE_FEATURES,
    AnomalyDetector,
    transaction_features,
)
from retailml.training._registry import ALGORITHMS

ANOMALY_RATE = 0.01
DETECTORS = list(ALGORITHMS["anomaly_detection"])

_SILVER_NAMES = {
    "InvoiceNo": "invoice_no",
    "StockCode": "stock_code",
    "Description": "description",
    "Quantity": "quantity",
    "InvoiceDate": "invoice_date",
    "UnitPrice": "unit_price",
    "CustomerID": "customer_id",
    "Country": "country",
}


@pytest.fixture(scope="module")
def lines() -> pd.DataFrame:
    """50,000 generated lines, 1 % labelled anomalies, in silver's column names."""
    config = GeneratorConfig(rows=50_000, seed=11, anomaly_rate=ANOMALY_RATE)
    frame = generate_transactions(config).to_pandas().rename(columns=_SILVER_NAMES)
    frame["total_amount"] = frame["quantity"] * frame["unit_price"]
    frame["is_cancellation"] = frame["invoice_no"].str.startswith("C")
    return frame


@pytest.fixture(scope="module")
def features(lines: pd.DataFrame) -> pd.DataFrame:
    return transaction_features(lines)


@pytest.fixture(scope="module")
def flags(features: pd.DataFrame) -> dict[str, np.ndarray[tuple[int], np.dtype[np.int64]]]:
    """Each detector's 0/1 flags over the training lines (fitted once per module)."""
    detectors = {
        name: AnomalyDetector(algorithm=name, features=list(VALUE_FEATURES)) for name in DETECTORS
    }
    return {name: d.fit(features).predict(features) for name, d in detectors.items()}


def _random_f1(prevalence: float, flag_rate: float) -> float:
    """Expected F1 of flagging lines at random at ``flag_rate``: precision = prevalence."""
    return 2 * prevalence * flag_rate / (prevalence + flag_rate)


@pytest.mark.parametrize("algorithm", DETECTORS)
def test_every_algorithm_finds_labelled_anomalies_far_better_than_random_flags(
    algorithm: str,
    lines: pd.DataFrame,
    flags: dict[str, np.ndarray[tuple[int], np.dtype[np.int64]]],
) -> None:
    truth = lines["is_anomaly"].to_numpy()
    flagged = flags[algorithm]
    assert set(np.unique(flagged)) <= {0, 1}
    baseline = _random_f1(truth.mean(), flagged.mean())
    assert baseline == pytest.approx(0.01, abs=0.002)
    assert f1_score(truth, flagged) > 10 * baseline


def test_isolation_forest_is_clearly_the_best_detector(
    lines: pd.DataFrame, flags: dict[str, np.ndarray[tuple[int], np.dtype[np.int64]]]
) -> None:
    truth = lines["is_anomaly"].to_numpy()
    f1 = {name: f1_score(truth, flagged) for name, flagged in flags.items()}
    assert f1["isolation_forest"] > 0.55
    assert f1["isolation_forest"] > max(v for k, v in f1.items() if k != "isolation_forest") + 0.15


@pytest.mark.parametrize("algorithm", DETECTORS)
def test_scores_rise_with_abnormality_and_the_threshold_flags_the_contamination_share(
    algorithm: str, lines: pd.DataFrame, features: pd.DataFrame
) -> None:
    detector = AnomalyDetector(
        algorithm=algorithm, features=list(VALUE_FEATURES), contamination=0.02
    ).fit(features)
    scores = detector.score_samples(features)
    truth = lines["is_anomaly"].to_numpy()
    assert scores[truth].mean() > scores[~truth].mean()  # higher is more anomalous
    flagged = detector.predict(features)
    assert flagged.mean() == pytest.approx(0.02, abs=0.002)
    decision = detector.decision_function(features)
    np.testing.assert_array_equal(flagged == 1, decision > 0)
    np.testing.assert_allclose(decision, scores - detector.threshold_)


def test_features_none_means_every_numeric_column(features: pd.DataFrame) -> None:
    frame = features.assign(label=["x"] * len(features))
    detector = AnomalyDetector().fit(frame)
    assert list(detector.feature_names_in_) == list(TRANSACTION_FEATURES)


def test_transaction_features_compare_lines_with_their_product_and_customer() -> None:
    day = dt.datetime(2023, 5, 2, 9, 30)
    lines = pd.DataFrame(
        {
            "invoice_no": ["1", "1", "2", "2", "3", "C4", "5"],
            "stock_code": ["A", "B", "A", "B", "A", "A", "NEW"],
            "quantity": [10, 2, 10, 2, 400, -10, 1],
            "unit_price": [2.0, 5.0, 2.0, 5.0, 2.0, 2.0, 1.0],
            "customer_id": ["c1", "c1", "c2", "c2", "big", "c1", None],
            "invoice_date": [day + dt.timedelta(hours=h) for h in range(7)],
        }
    )
    got = transaction_features(lines)
    assert list(got.columns) == list(TRANSACTION_FEATURES)
    assert got.index.equals(lines.index)
    # Product A's median quantity over purchase lines is 10: 400 is 40 times it.
    assert got.loc[4, "log_quantity_ratio"] == pytest.approx(np.log(40))
    # ... but it is the customer's usual quantity, so not unusual for them.
    assert got.loc[4, "log_customer_quantity_ratio"] == pytest.approx(0.0)
    assert got.loc[5, "log_quantity_ratio"] == pytest.approx(0.0)  # |-10| against 10
    assert got.loc[5, "is_cancellation"] == 1.0
    assert got.loc[5, "log_quantity"] == pytest.approx(-np.log1p(10))
    assert got.loc[6, ["log_price_ratio", "log_quantity_ratio"]].tolist() == [0.0, 0.0]  # unknown
    assert got["hour"].tolist() == [9, 10, 11, 12, 13, 14, 15]

    # Scoring a new line against the training lines' medians.
    new = lines.iloc[[0]].assign(unit_price=20.0)
    alone = transaction_features(new)
    against = transaction_features(new, reference=lines)
    assert alone.loc[0, "log_price_ratio"] == 0.0  # its own median
    assert against.loc[0, "log_price_ratio"] == pytest.approx(np.log(10))


def test_transaction_features_name_missing_columns() -> None:
    with pytest.raises(DataValidationError, match=r"no 'unit_price'"):
        transaction_features(pd.DataFrame({"stock_code": ["A"], "quantity": [1]}))


def test_autoencoder_leaves_pytorch_global_state_as_it_was(features: pd.DataFrame) -> None:
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    sample = features.sample(2_000, random_state=0)
    detector = AnomalyDetector(algorithm="autoencoder", epochs=2, random_state=7).fit(sample)
    detector.score_samples(sample)
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.rand(3), expected)
    assert len(detector.train_losses_) == 2
    assert detector.train_losses_[-1] < detector.train_losses_[0]


def test_one_class_svm_fits_on_a_capped_sample(features: pd.DataFrame) -> None:
    sample = features.head(3_000)
    detector = AnomalyDetector(algorithm="one_class_svm", svm_max_samples=500).fit(sample)
    assert detector.model_.shape_fit_[0] == 500
    # The threshold still comes from every training line.
    assert detector.predict(sample).mean() == pytest.approx(0.01, abs=0.002)


def test_missing_or_infinite_feature_values_are_named(features: pd.DataFrame) -> None:
    broken = features.head(100).copy()
    broken.loc[broken.index[:3], "log_price_ratio"] = np.inf
    with pytest.raises(DataValidationError, match=r"'log_price_ratio' \(3 rows\)"):
        AnomalyDetector().fit(broken)
