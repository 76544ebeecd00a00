"""Two pipelines never retrain the same model at once: the lease, on PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from retailml.automation.retraining import AutoRetrainingPipeline, RetrainedModel
from retailml.core import jobs
from retailml.core.db import PlatformDB
from retailml.core.settings import Settings

from .conftest import MODEL, Base

pytestmark = pytest.mark.postgres


def test_a_second_contender_skips_while_the_first_holds_the_lease(
    retail: Settings, base: Base, postgres_url: str
) -> None:
    settings = retail.model_copy(update={"database_url": postgres_url})
    config: dict[str, Any] = {
        "model_type": "sales_forecast",
        "algorithm": "seasonal_naive",
        "hyperparameters": {"horizon": 7},
        "validation_strategy": "holdout",
        "n_splits": 1,
        "data": {"source": "file", "path": str(base.inflated)},
    }
    start = threading.Barrier(2)
    results: list[RetrainedModel] = []
    errors: list[BaseException] = []

    def contender() -> None:
        try:
            with AutoRetrainingPipeline(MODEL, config=config, settings=settings) as pipeline:
                start.wait(timeout=30)
                results.append(asyncio.run(pipeline.retrain(data_source="production")))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=contender) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert sorted(r.status for r in results) == ["skipped", "trained"]
    [skipped] = [r for r in results if r.status == "skipped"]
    [trained] = [r for r in results if r.status == "trained"]
    assert skipped.reason.startswith(f"{MODEL} is already being retrained by ")
    assert skipped.result is None
    db = PlatformDB(postgres_url)
    try:
        records = {job.id: job for job in jobs.list_jobs(db, model_name=MODEL)}
        assert records[trained.job_id].status == "succeeded"
        assert records[skipped.job_id].status == "skipped"
        owner = records[trained.job_id].owner
        assert records[skipped.job_id].outcome["lease_holder"] == owner
        assert skipped.reason.endswith(str(owner))
        assert records[trained.job_id].inputs["data"]["source"] == "path"  # the config's file
        assert records[trained.job_id].inputs["data"]["path"] == str(base.inflated)
        assert jobs.lease_holder(db, f"retrain:{MODEL}") is None  # released when done
    finally:
        db.dispose()
