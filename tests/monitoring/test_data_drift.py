"""Data drift through ModelMonitor.detect_data_drift: detection rates over seeded trials.

Each trial draws a reference and a current frame of six features from the same
generators, except that three features drift in the current frame (prices up
a quarter, one more item per line, the country mix moving away from the UK).
A trial succeeds when exactly the three drifted features are flagged. The
frames are synthetic rather than :class:`retailml.data.generate.DriftSpec`
transactions because the test needs features whose drift is known column by
column (DriftSpec drifts transactions, from which every derived feature moves).

Measured (100 trials each): 2,000 rows per frame with the default thresholds
(normed Wasserstein > 0.1, Jensen-Shannon > 0.1): 100/100. 500 rows (KS and
chi-square at p < 0.05 per column): 90/100, since three stable columns each
alarm 5 % of the time; with the threshold divided by the number of columns
(Bonferroni, 0.05 / 6): 98/100.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from retailml.core.settings import Settings
from retailml.monitoring.model_monitor import ModelMonitor

DRIFTED = {"unit_price", "quantity", "country"}
TRIALS = 100


def frames(seed: int, rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)

    def make(drift: bool) -> pd.DataFrame:
        countries = [0.5, 0.2, 0.2, 0.1] if drift else [0.7, 0.1, 0.1, 0.1]
        return pd.DataFrame(
            {
                "unit_price": rng.lognormal(1.25 if drift else 1.0, 0.5, rows),
                "quantity": rng.poisson(6.0 if drift else 5.0, rows),
                "basket_value": rng.gamma(2.0, 10.0, rows),
                "hour": rng.integers(8, 20, rows),
                "country": rng.choice(["UK", "DE", "FR", "NL"], rows, p=countries),
                "channel": rng.choice(["web", "store", "app"], rows, p=[0.5, 0.3, 0.2]),
            }
        )

    return make(False), make(True)


@pytest.fixture
def monitor(settings: Settings) -> Iterator[ModelMonitor]:
    yield ModelMonitor("sales_forecast", "1.2.0", settings)  # record=False: no database


@pytest.mark.parametrize(
    ("rows", "threshold"),
    [(2000, None), (500, 0.05 / 6)],
    ids=["2000-rows-distances", "500-rows-p-values-bonferroni"],
)
def test_drifted_features_are_flagged_and_stable_ones_are_not_in_95_percent_of_trials(
    monitor: ModelMonitor, rows: int, threshold: float | None
) -> None:
    exact = 0
    flagged: Counter[str] = Counter()
    for seed in range(TRIALS):
        reference, current = frames(seed, rows)
        report = monitor.detect_data_drift(reference, current, threshold=threshold, record=False)
        found = set(report.drifted_columns)
        exact += found == DRIFTED
        flagged.update(found)
        assert report.dataset_drift == (report.share_drifted >= 0.5)
    assert exact >= 95, (exact, flagged)
    for name in DRIFTED:
        assert flagged[name] >= 95, (name, flagged)
