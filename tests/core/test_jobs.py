"""Job records and database leases, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from retailml.core import jobs
from retailml.core.db import PlatformDB
from retailml.core.errors import NotFoundError

INPUTS = {"model_name": "m", "model_type": "sales_forecast", "algorithm": "theta"}


def test_a_job_records_its_life_from_queued_to_succeeded(platform_db: PlatformDB) -> None:
    job = jobs.create_job(platform_db, kind="train", model_name="m", inputs=INPUTS)
    assert job.status == "queued"
    assert job.started_at is None
    running = jobs.start_job(platform_db, job.id, owner="host:1")
    assert (running.status, running.owner) == ("running", "host:1")
    done = jobs.finish_job(platform_db, job.id, {"metrics": {"mape": 0.1}})
    assert done.status == "succeeded"
    assert done.outcome == {"metrics": {"mape": 0.1}}
    assert done.duration_s is not None
    assert done.duration_s >= 0
    assert jobs.get_job(platform_db, job.id).inputs == INPUTS
    assert [j.id for j in jobs.list_jobs(platform_db, model_name="m")] == [job.id]


def test_a_failure_keeps_the_real_exception(platform_db: PlatformDB) -> None:
    job = jobs.create_job(platform_db, kind="train", model_name="m", inputs=INPUTS)
    jobs.start_job(platform_db, job.id)
    try:
        raise MemoryError("cannot allocate 8 GiB")
    except MemoryError as error:
        failed = jobs.fail_job(platform_db, job.id, error)
    assert failed.status == "failed"
    assert failed.error_type == "builtins.MemoryError"
    assert failed.error_message == "cannot allocate 8 GiB"
    assert failed.error_traceback is not None
    assert "raise MemoryError" in failed.error_traceback


def test_an_unknown_job_is_a_clear_error(platform_db: PlatformDB) -> None:
    with pytest.raises(NotFoundError, match="nope"):
        jobs.get_job(platform_db, "nope")


def test_stale_running_jobs_are_marked_abandoned(platform_db: PlatformDB) -> None:
    stale = jobs.create_job(platform_db, kind="retrain", model_name="m", inputs=INPUTS)
    jobs.start_job(platform_db, stale.id, owner="dead:1")
    assert jobs.reap_stale_jobs(platform_db, timedelta(hours=1)) == []
    reaped = jobs.reap_stale_jobs(platform_db, timedelta(seconds=-1))
    assert [j.id for j in reaped] == [stale.id]
    record = jobs.get_job(platform_db, stale.id)
    assert record.status == "abandoned"
    assert record.error_message is not None
    assert "dead:1" in record.error_message


def test_a_lease_has_one_holder_until_it_expires_or_is_released(platform_db: PlatformDB) -> None:
    ttl = timedelta(minutes=5)
    assert jobs.acquire_lease(platform_db, "retrain:m", ttl, owner="a")
    assert not jobs.acquire_lease(platform_db, "retrain:m", ttl, owner="b")
    assert jobs.acquire_lease(platform_db, "retrain:m", ttl, owner="a")  # renew by the holder
    holder = jobs.lease_holder(platform_db, "retrain:m")
    assert holder is not None
    assert holder[0] == "a"
    assert jobs.renew_lease(platform_db, "retrain:m", ttl, owner="a")
    assert not jobs.renew_lease(platform_db, "retrain:m", ttl, owner="b")
    jobs.release_lease(platform_db, "retrain:m", owner="b")  # not b's: nothing happens
    assert jobs.lease_holder(platform_db, "retrain:m") is not None
    jobs.release_lease(platform_db, "retrain:m", owner="a")
    assert jobs.lease_holder(platform_db, "retrain:m") is None
    assert jobs.acquire_lease(platform_db, "retrain:m", ttl, owner="b")


def test_an_expired_lease_is_taken_over(platform_db: PlatformDB) -> None:
    assert jobs.acquire_lease(platform_db, "k", timedelta(seconds=-1), owner="a")
    assert jobs.acquire_lease(platform_db, "k", timedelta(minutes=5), owner="b")
    holder = jobs.lease_holder(platform_db, "k")
    assert holder is not None
    assert holder[0] == "b"


def test_contenders_racing_for_one_lease_get_exactly_one_winner(
    platform_db: PlatformDB,
) -> None:
    barrier = threading.Barrier(8)
    wins: list[str] = []

    def contend(name: str) -> None:
        barrier.wait()
        if jobs.acquire_lease(platform_db, "race", timedelta(minutes=5), owner=name):
            wins.append(name)

    threads = [threading.Thread(target=contend, args=(f"w{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1
