"""ModelMonitor: the guide's snippet, performance time series, the prediction-log join,
concept drift and stored data-drift runs; on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

import guide
from retailml.core.db_deploy import PredictionLogEntry
from retailml.core.db_monitoring import DriftReportRecord, ModelPerformanceRecord
from retailml.core.errors import ConfigError, DataValidationError
from retailml.core.settings import Settings, get_settings
from retailml.monitoring._performance import concept_drift
from retailml.monitoring.model_monitor import ModelMonitor
from retailml.training._metrics import mae, mape, rmse, smape
from retailml.validators.drift import DriftReport

T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def db_settings(settings: Settings, database_url: str) -> Settings:
    return settings.model_copy(update={"database_url": database_url})


@pytest.fixture
def monitor(db_settings: Settings) -> Iterator[ModelMonitor]:
    mon = ModelMonitor(model_name="sales_forecast", model_version="1.2.0", settings=db_settings)
    yield mon
    mon.db.dispose()


def test_the_guide_snippet_runs_as_written_and_alerts_on_a_high_mape(
    settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The snippet builds its monitor from the process settings: point them at the backend.
    monkeypatch.setenv("RETAILML_DATABASE_URL", database_url)
    get_settings.cache_clear()
    rng = np.random.default_rng(7)
    actual = rng.uniform(50, 150, 200)
    reference = pd.DataFrame({"price": rng.normal(10, 2, 500), "qty": rng.poisson(5, 500)})
    current = pd.DataFrame({"price": rng.normal(14, 2, 500), "qty": rng.poisson(5, 500)})
    namespace = {
        "model_predictions": actual * 1.3,  # 30 % too high: MAPE 0.30 > 0.20
        "actual_sales": actual,
        "training_features": reference,
        "production_features": current,
    }
    code = guide.block("### Model Performance Monitoring")
    guide.run(code, namespace)

    metrics = namespace["performance_metrics"]
    assert metrics["mape"] == pytest.approx(0.30)
    assert set(metrics) == {"mape", "mae", "rmse"}
    drift = namespace["drift_results"]
    assert isinstance(drift, DriftReport)
    assert "price" in drift.drifted_columns
    monitor: ModelMonitor = namespace["monitor"]
    assert monitor.db.url == database_url
    assert len(monitor.performance_history()) == 3
    assert len(monitor.drift_history()) == 1
    try:
        alerts = monitor.alerts.list_alerts(state="open")
        assert len(alerts) == 1
        assert alerts[0].alert_type == "performance_degradation"
        assert alerts[0].severity == "critical"  # the guide's "high"
        assert alerts[0].model_name == "sales_forecast_prophet"
        assert alerts[0].model_version == "1.2.0"
        assert alerts[0].message == "Model MAPE increased to 30.00%"
    finally:
        monitor.db.dispose()


def test_track_performance_stores_each_metric_as_the_metric_functions_compute_it(
    monitor: ModelMonitor,
) -> None:
    rng = np.random.default_rng(1)
    actual = rng.uniform(1, 100, 50)
    predicted = actual + rng.normal(0, 5, 50)
    names = ["mape", "mae", "rmse", "smape"]
    values = monitor.track_performance(predicted, actual, metrics=names, arm="green", timestamp=T0)
    expected = {
        "mape": mape(actual, predicted),
        "mae": mae(actual, predicted),
        "rmse": rmse(actual, predicted),
        "smape": smape(actual, predicted),
    }
    assert values == pytest.approx(expected)
    with monitor.db.session() as session:
        rows = session.query(ModelPerformanceRecord).all()
        stored = {row.metric: row.value for row in rows}
        assert {row.arm for row in rows} == {"green"}
        assert {row.n for row in rows} == {50}
        assert {row.model_version for row in rows} == {"1.2.0"}
    assert stored == pytest.approx(expected)
    history = monitor.performance_history("mae")
    assert list(history["value"]) == pytest.approx([expected["mae"]])
    assert history["window_end"].iloc[0] == pd.Timestamp(T0)


def test_track_performance_skips_missing_pairs_and_stores_an_undefined_mape_as_null(
    monitor: ModelMonitor,
) -> None:
    values = monitor.track_performance([1.0, 2.0, 5.0], [0.0, 0.0, np.nan], metrics=["mape"])
    assert np.isnan(values["mape"])
    history = monitor.performance_history("mape")
    assert history["n"].tolist() == [2]
    assert np.isnan(history["value"].iloc[0])


def test_track_performance_rejects_unknown_metrics_and_mismatched_lengths(
    monitor: ModelMonitor,
) -> None:
    with pytest.raises(ConfigError, match="mape, mae, rmse"):
        monitor.track_performance([1.0], [1.0], metrics=["accuracy"])
    with pytest.raises(DataValidationError, match="2 predictions and 3 actual values"):
        monitor.track_performance([1.0, 2.0], [1.0, 2.0, 3.0])


def test_history_is_per_version_and_ordered_by_window(db_settings: Settings) -> None:
    old = ModelMonitor("sales_forecast", "1.1.0", db_settings)
    new = ModelMonitor("sales_forecast", "1.2.0", db_settings, db=old.db)
    try:
        new.track_performance([2.0], [1.0], metrics=["mae"], timestamp=T0 + timedelta(days=2))
        new.track_performance([3.0], [1.0], metrics=["mae"], timestamp=T0 + timedelta(days=1))
        old.track_performance([9.0], [1.0], metrics=["mae"], timestamp=T0)
        assert new.performance_history("mae")["value"].tolist() == [2.0, 1.0]
        assert new.performance_history("mae", since=T0 + timedelta(days=2))["value"].tolist() == [
            1.0
        ]
        everything = new.performance_history("mae", all_versions=True)
        assert everything["model_version"].tolist() == ["1.1.0", "1.2.0", "1.2.0"]
    finally:
        old.db.dispose()


def log_entry(
    request_id: str,
    output: object,
    *,
    arm: str | None = None,
    version: str = "1.2.0",
    entity_key: str | None = None,
    created_at: datetime = T0,
    status_code: int = 200,
) -> PredictionLogEntry:
    return PredictionLogEntry(
        request_id=request_id,
        model_name="sales_forecast",
        model_version=version,
        environment="production",
        arm=arm,
        entity_key=entity_key,
        features_hash="0" * 64,
        output=output,
        latency_ms=3.0,
        status_code=status_code,
        error=None if status_code < 400 else "boom",
        created_at=created_at,
    )


def test_performance_from_log_joins_actuals_by_request_id_per_arm(monitor: ModelMonitor) -> None:
    rng = np.random.default_rng(3)
    n = 60
    predictions = rng.uniform(10, 20, n)
    actual = predictions * rng.uniform(0.8, 1.2, n)
    arms = ["blue" if i % 3 else "green" for i in range(n)]
    entries = []
    for i in range(n):
        # Every output shape the log may hold: a number, a dict, a one-element list.
        output: object = [
            float(predictions[i]),
            {"prediction": float(predictions[i])},
            {"prediction": [float(predictions[i]), 99.0]},
        ][i % 3]
        entries.append(
            log_entry(f"r{i}", output, arm=arms[i], created_at=T0 + timedelta(minutes=i))
        )
    # Noise the join must ignore: another version, a failed request, an unparseable output.
    entries.append(log_entry("other-version", 1.0, version="1.1.0"))
    entries.append(log_entry("failed", 1.0, status_code=500))
    entries.append(log_entry("no-number", {"label": "x"}))
    with monitor.db.session() as session:
        session.add_all(entries)
    actuals = pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(n)] + ["other-version", "failed", "no-number"],
            "actual": [*actual, 1000.0, 1000.0, 1000.0],
        }
    )

    result = monitor.performance_from_log(actuals, join="request_id")

    for arm in ("blue", "green"):
        mask = np.array([a == arm for a in arms])
        rows = result[result["arm"] == arm].set_index("metric")
        assert rows.loc["mape", "value"] == pytest.approx(mape(actual[mask], predictions[mask]))
        assert rows.loc["rmse", "value"] == pytest.approx(rmse(actual[mask], predictions[mask]))
        assert rows.loc["mae", "n"] == mask.sum()
        times = [T0 + timedelta(minutes=i) for i in range(n) if mask[i]]
        assert rows.loc["mae", "window_start"] == pd.Timestamp(times[0])
        assert rows.loc["mae", "window_end"] == pd.Timestamp(times[-1])
    history = monitor.performance_history("mape")
    assert sorted(history["arm"]) == ["blue", "green"]

    later = monitor.performance_from_log(actuals, since=T0 + timedelta(minutes=30), record=False)
    assert later.groupby("arm")["n"].first().to_dict() == {"blue": 20, "green": 10}


def test_performance_from_log_joins_by_entity_and_date_and_by_step(
    monitor: ModelMonitor,
) -> None:
    with monitor.db.session() as session:
        session.add_all(
            [
                # The output names the day it forecasts; otherwise the serving day counts.
                log_entry("a", {"prediction": 10.0, "date": "2026-11-05"}, entity_key="store-1"),
                log_entry("b", 20.0, entity_key="store-2", created_at=T0 + timedelta(hours=5)),
                log_entry("c", {"prediction": [30.0, 40.0]}, entity_key="store-3"),
            ]
        )
    actuals = pd.DataFrame(
        {
            "entity_key": ["store-1", "store-2", "store-3", "store-1"],
            "date": ["2026-11-05", "2026-11-01", "2026-11-01", "2026-11-01"],
            "actual": [12.0, 25.0, 30.0, 1000.0],
        }
    )
    result = monitor.performance_from_log(actuals, join=("entity_key", "date"), record=False)
    mae_row = result.set_index("metric").loc["mae"]
    assert mae_row["n"] == 3
    assert mae_row["value"] == pytest.approx((2 + 5 + 0) / 3)
    assert monitor.performance_history().empty  # record=False

    by_step = pd.DataFrame({"request_id": ["c", "c"], "step": [1, 2], "actual": [33.0, 44.0]})
    result = monitor.performance_from_log(by_step, metrics=["mae"])
    assert result["value"].tolist() == pytest.approx([3.5])
    assert result["n"].tolist() == [2]


def test_performance_from_log_rejects_a_frame_without_the_join_columns(
    monitor: ModelMonitor,
) -> None:
    with pytest.raises(DataValidationError, match="request_id"):
        monitor.performance_from_log(pd.DataFrame({"id": ["a"], "actual": [1.0]}))
    with pytest.raises(ConfigError, match="join="):
        monitor.performance_from_log(pd.DataFrame({"id": ["a"]}), join="id")
    empty = monitor.performance_from_log(pd.DataFrame({"request_id": ["zz"], "actual": [1.0]}))
    assert empty.empty


def test_concept_drift_detects_a_planted_degradation_and_not_a_stable_series(
    monitor: ModelMonitor,
) -> None:
    rng = np.random.default_rng(11)
    daily_mape = np.concatenate([rng.normal(0.10, 0.01, 28), rng.normal(0.14, 0.01, 7)])
    for day, value in enumerate(daily_mape):
        stamp = T0 + timedelta(days=day)
        with monitor.db.session() as session:
            session.add(
                ModelPerformanceRecord(
                    model_name="sales_forecast",
                    model_version="1.2.0",
                    arm=None,
                    metric="mape",
                    value=float(value),
                    n=100,
                    window_start=stamp,
                    window_end=stamp,
                    recorded_at=stamp,
                )
            )
    for method in ("mannwhitney", "page_hinkley"):
        result = monitor.detect_concept_drift(metric="mape", window=7, method=method)
        assert result.drifted, result
        assert result.n_current == 7
        assert result.n_reference == 28
        assert result.current_median > result.reference_median
    # The 28 stable days alone, tested as if the last 7 were recent: no drift.
    stable = concept_drift(
        daily_mape[:28],
        metric="mape",
        window=7,
        reference_window=None,
        method="mannwhitney",
        threshold=None,
    )
    assert not stable.drifted
    assert stable.statistic > stable.threshold == 0.01


@pytest.mark.parametrize("method", ["mannwhitney", "page_hinkley"])
def test_concept_drift_false_alarms_and_detections_over_seeded_series(method: str) -> None:
    """200 seeded series each: stable ones rarely alarm, a +3 sd rise is nearly always found."""
    false_alarms = detections = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        stable = rng.normal(0.10, 0.01, 35)
        degraded = np.concatenate([stable[:28], rng.normal(0.13, 0.01, 7)])
        for series in (stable, degraded):
            result = concept_drift(
                series,
                metric="mape",
                window=7,
                reference_window=None,
                method=method,
                threshold=None,
            )
            if series is stable:
                false_alarms += result.drifted
            else:
                detections += result.drifted
    # Measured: Mann-Whitney 3 false alarms (nominal 1 %: 2 of 200), Page-Hinkley 1;
    # both 200 of 200 detections.
    assert false_alarms <= 6
    assert detections >= 196


def test_concept_drift_needs_enough_points(monitor: ModelMonitor) -> None:
    monitor.track_performance([1.0], [2.0], metrics=["mape"])
    with pytest.raises(DataValidationError, match="at least 7 recent"):
        monitor.detect_concept_drift("mape", window=7)
    with pytest.raises(ConfigError, match="mannwhitney"):
        concept_drift(
            np.ones(20), metric="m", window=7, reference_window=None, method="x", threshold=None
        )


def test_detect_data_drift_stores_one_summary_row_per_run(monitor: ModelMonitor) -> None:
    rng = np.random.default_rng(5)
    reference = pd.DataFrame({"a": rng.normal(0, 1, 300), "b": rng.choice(["x", "y"], 300)})
    current = pd.DataFrame({"a": rng.normal(2, 1, 300), "b": rng.choice(["x", "y"], 300)})
    report = monitor.detect_data_drift(reference, current)
    assert report.drifted_columns == ("a",)
    monitor.detect_data_drift(reference, reference.copy())
    with monitor.db.session() as session:
        rows = session.query(DriftReportRecord).order_by(DriftReportRecord.created_at).all()
        assert [(r.n_drifted, r.n_columns, r.share_drifted, r.dataset_drift) for r in rows] == [
            (1, 2, 0.5, True),
            (0, 2, 0.0, False),
        ]
        assert rows[0].details["columns"]["a"]["drifted"] is True
        assert rows[0].model_version == "1.2.0"
    history = monitor.drift_history()
    assert history["drifted_columns"].tolist() == [["a"], []]


def test_a_monitor_closes_what_it_opened_and_leaves_a_shared_database_open(
    db_settings: Settings,
) -> None:
    with ModelMonitor("sales_forecast", "1.2.0", db_settings) as owner:
        owner.track_performance([1.0], [2.0], metrics=["mae"])
        shared = owner.db
        with ModelMonitor("sales_forecast", "1.2.0", db_settings, db=shared) as borrower:
            borrower.track_performance([1.0], [3.0], metrics=["mae"])
        # The borrower left the shared database usable.
        assert owner.performance_history("mae")["value"].tolist() == [1.0, 2.0]
    assert owner._db is None
