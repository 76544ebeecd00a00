"""Retraining triggers: each fires alone and together, none fires while the model is healthy."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
import pytest

from retailml.automation.retraining import AutoRetrainingPipeline
from retailml.core.db import PlatformDB
from retailml.core.errors import ConfigError
from retailml.core.jobs import create_job, finish_job, start_job
from retailml.core.settings import Settings
from retailml.monitoring.model_monitor import ModelMonitor

from .conftest import MODEL

#: Thursday 2026-11-26 12:00 UTC; weekly (Sunday 00:00) last fell on 2026-11-22.
NOW = dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)
#: April's ingestion added 4,000 rows minus quarantined/duplicate ones.
NEW_ROWS_LIMIT = 1000


def check(settings: Settings, triggers: dict[str, Any], now: dt.datetime = NOW) -> Any:
    with AutoRetrainingPipeline(MODEL, triggers, settings=settings) as pipeline:
        return asyncio.run(pipeline.check_retrain_conditions(now=now))


def monitor(settings: Settings, mape: float, version: str = "1.0.0") -> None:
    actual = np.full(10, 100.0)
    with ModelMonitor(MODEL, version, settings=settings) as watched:
        watched.track_performance(actual * (1 + mape), actual, metrics=["mape", "mae"])


def drift(settings: Settings, shifted: bool) -> None:
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"price": rng.normal(10, 1, 400), "qty": rng.normal(5, 1, 400)})
    current = pd.DataFrame(
        {"price": rng.normal(13 if shifted else 10, 1, 400), "qty": rng.normal(5, 1, 400)}
    )
    with ModelMonitor(MODEL, "1.0.0", settings=settings) as watched:
        watched.detect_data_drift(reference, current)


def mark_retrained(settings: Settings, when: dt.datetime, data_version: str | None = None) -> None:
    """A finished retrain job created at ``when`` (what the schedule measures from)."""
    from retailml.core.db_jobs import TrainingJob

    db = PlatformDB.from_settings(settings)
    inputs = {"data": {"source": "silver", "data_version": data_version}}
    job = create_job(db, kind="retrain", model_name=MODEL, inputs=inputs)
    start_job(db, job.id)
    finish_job(db, job.id, {})
    with db.session() as session:
        row = session.get(TrainingJob, job.id)
        assert row is not None
        row.created_at = when
    db.dispose()


def test_the_schedule_fires_once_a_time_of_it_passed_since_the_last_retrain(
    retail: Settings,
) -> None:
    mark_retrained(retail, NOW - dt.timedelta(days=1))
    quiet = check(retail, {"schedule": "weekly"})
    assert not quiet.should_retrain
    assert "next due at 2026-11-29 00:00" in quiet.reason
    mark_retrained(retail, NOW - dt.timedelta(days=5))  # Saturday 21st: Sunday 22nd passed
    # The latest retrain (1 day ago) still counts: not due.
    assert not check(retail, {"schedule": "weekly"}).should_retrain
    due = check(retail, {"schedule": "0 3 * * *"})  # daily at 03:00, last retrain yesterday
    assert due.should_retrain
    assert [f.trigger for f in due.fired] == ["schedule"]
    assert "was due at 2026-11-26 03:00" in due.reason


def test_the_schedule_counts_from_the_registration_without_a_retrain(retail: Settings) -> None:
    decision = check(retail, {"schedule": "monthly"}, now=dt.datetime.now(dt.UTC))
    assert not decision.should_retrain  # registered minutes ago
    assert "1.0.0 registered" in decision.reason
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=32)
    assert check(retail, {"schedule": "monthly"}, now=later).should_retrain


def test_performance_fires_when_the_production_metric_is_worse_than_the_limit(
    retail: Settings,
) -> None:
    assert not check(retail, {"performance_threshold": {"mape": 0.2}}).should_retrain  # no data
    monitor(retail, 0.1)
    healthy = check(retail, {"performance_threshold": {"mape": 0.2}})
    assert not healthy.should_retrain and "mape 0.1 <= 0.2" in healthy.reason
    monitor(retail, 0.31)
    decision = check(retail, {"performance_threshold": {"mape": 0.2, "mae": 50}})
    assert decision.should_retrain
    assert [(f.trigger, f.metric) for f in decision.fired] == [("performance_threshold", "mape")]
    assert decision.fired[0].value == pytest.approx(0.31)
    assert "mape 0.31 > 0.2 (production 1.0.0" in decision.reason
    # Another version's numbers do not count.
    monitor(retail, 0.9, version="1.1.0")
    assert check(retail, {"performance_threshold": {"mae": 50}}).should_retrain is False


def test_a_score_fires_below_its_limit_not_above_it(retail: Settings) -> None:
    from retailml.core.db_monitoring import ModelPerformanceRecord

    db = PlatformDB.from_settings(retail)
    with db.session() as session:
        now = dt.datetime.now(dt.UTC)
        session.add(
            ModelPerformanceRecord(
                model_name=MODEL,
                model_version="1.0.0",
                metric="f1",
                value=0.4,
                n=50,
                window_start=now,
                window_end=now,
            )
        )
    db.dispose()
    assert check(retail, {"performance_threshold": {"f1": 0.5}}).should_retrain
    assert not check(retail, {"performance_threshold": {"f1": 0.3}}).should_retrain


def test_drift_fires_when_the_share_of_drifted_columns_exceeds_the_limit(
    retail: Settings,
) -> None:
    drift(retail, shifted=False)
    calm = check(retail, {"data_drift_threshold": 0.05})
    assert not calm.should_retrain and "share of drifted columns 0 <= 0.05" in calm.reason
    drift(retail, shifted=True)
    decision = check(retail, {"data_drift_threshold": 0.05})
    assert decision.should_retrain
    assert decision.fired[0].value == pytest.approx(0.5)
    assert "(1/2: price; production 1.0.0)" in decision.reason
    assert not check(retail, {"data_drift_threshold": 0.5}).should_retrain


def test_new_data_counts_silver_rows_ingested_after_the_champions_training_data(
    retail: Settings,
) -> None:
    decision = check(retail, {"min_new_data_points": NEW_ROWS_LIMIT})
    assert decision.should_retrain
    fired = decision.fired[0]
    assert fired.trigger == "min_new_data_points"
    assert 3000 <= float(fired.value or 0) <= 4000  # April's rows, less quarantine
    assert "trained on silver" in fired.detail
    assert not check(retail, {"min_new_data_points": 10_000}).should_retrain


def test_every_fired_trigger_is_named_with_its_value_and_limit(retail: Settings) -> None:
    monitor(retail, 0.5)
    drift(retail, shifted=True)
    decision = check(
        retail,
        {
            "schedule": "hourly",
            "performance_threshold": {"mape": 0.2},
            "data_drift_threshold": 0.05,
            "min_new_data_points": NEW_ROWS_LIMIT,
        },
        now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=2),
    )
    assert decision.should_retrain
    assert [f.trigger for f in decision.fired] == [
        "schedule",
        "performance_threshold",
        "data_drift_threshold",
        "min_new_data_points",
    ]
    for part in ("schedule 'hourly' was due", "mape 0.5 > 0.2", "0.5 > 0.05", "new silver rows"):
        assert part in decision.reason
    assert decision.to_dict()["fired"][1]["limit"] == 0.2


def test_nothing_fires_while_the_model_is_healthy(retail: Settings) -> None:
    monitor(retail, 0.1)
    drift(retail, shifted=False)
    decision = check(
        retail,
        {
            "schedule": "weekly",
            "performance_threshold": {"mape": 0.2},
            "data_drift_threshold": 0.05,
            "min_new_data_points": 50_000,
        },
        now=dt.datetime.now(dt.UTC),
    )
    assert not decision.should_retrain
    assert decision.fired == ()
    assert len(decision.checks) == 4
    assert decision.reason.startswith("no trigger fired: ")


def test_bad_triggers_are_reported_all_at_once(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="4 problems in triggers") as caught:
        AutoRetrainingPipeline(
            MODEL,
            {
                "schedule": "fortnightly",
                "performance_threshold": {"accuracy_ish": 0.2},
                "data_drift_threshold": 5,
                "min_new_data_points": 0,
            },
            settings=settings,
        )
    message = str(caught.value)
    assert "'fortnightly'" in message and "'accuracy_ish'" in message
    with pytest.raises(ConfigError, match="unknown 'shedule'"):
        AutoRetrainingPipeline(MODEL, {"shedule": "weekly"}, settings=settings)


def test_evidence_a_retrain_already_acted_upon_does_not_fire_again(retail: Settings) -> None:
    from retailml.data.ingest import SILVER_TABLE

    monitor(retail, 0.5)
    drift(retail, shifted=True)
    triggers = {
        "performance_threshold": {"mape": 0.2},
        "data_drift_threshold": 0.05,
        "min_new_data_points": NEW_ROWS_LIMIT,
    }
    now = dt.datetime.now(dt.UTC)
    assert len(check(retail, triggers, now=now).fired) == 3
    db = PlatformDB.from_settings(retail)
    latest = db.latest_data_version(SILVER_TABLE)
    db.dispose()
    assert latest is not None
    # A retrain on the current data just ran (its challenger may have lost): the same
    # evidence must not retrain the model again at every tick.
    mark_retrained(retail, dt.datetime.now(dt.UTC), latest.version)
    decision = check(retail, triggers, now=now + dt.timedelta(minutes=1))
    assert not decision.should_retrain, decision.reason
    assert "no monitored value since the last retrain" in decision.reason
    assert "no drift report for production 1.0.0 since the last retrain" in decision.reason
    assert "0 new silver rows < 1,000 (last retrained on silver" in decision.reason
    monitor(retail, 0.4)  # new evidence after the retrain counts again
    again = check(retail, triggers, now=now + dt.timedelta(minutes=2))
    assert [f.trigger for f in again.fired] == ["performance_threshold"]
