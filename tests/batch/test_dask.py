"""The Dask backend: the shared batch suite on one Dask cluster for the session, plus
a local cluster of the client's own and an unreachable scheduler."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

import altus
from abstract import tasks
from abstract.batch import BatchBackendSuite
from altus.errors import BackendError


@pytest.fixture(scope="session")
def dask_address() -> Iterator[str]:
    """A scheduler and two one-thread worker processes, as a user's cluster would be."""
    from distributed import LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    yield cluster.scheduler_address
    cluster.close()


@pytest.fixture
def backend_name() -> str:
    return "dask"


@pytest.fixture
def knot_options(dask_address: str) -> dict[str, Any]:
    return {"address": dask_address}


@pytest.mark.slow
class TestDask(BatchBackendSuite):
    pass


def test_without_an_address_the_client_starts_a_local_cluster(store_url: str) -> None:
    job = altus.Knot(tasks.square, backend="dask", store=store_url, workers=2).map(range(10))
    assert job.results() == [x * x for x in range(10)]


def test_an_unreachable_scheduler_is_named_within_a_bounded_wait(store_url: str) -> None:
    knot = altus.Knot(tasks.square, backend="dask", store=store_url, address="tcp://127.0.0.1:9")
    started = time.monotonic()
    with pytest.raises(
        BackendError, match=r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:9"
    ):
        knot.map([1])
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_a_dask_worker_killed_under_a_chunk_loses_and_duplicates_nothing(
    dask_address: str, store_url: str, tmp_path: Any
) -> None:
    import os
    import signal

    from distributed import Client

    from abstract.batch import recorded_counts, wait_until

    knot = altus.Knot(tasks.nap, backend="dask", store=store_url, address=dask_address)
    job = knot.map([0.5] * 8, chunksize=4)
    wait_until(lambda: len(job.record.recorded_tasks(0)) >= 1, 60, "a task recorded")
    with Client(dask_address) as client:
        victim = next(iter(client.run(os.getpid).values()))
    os.kill(victim, signal.SIGKILL)  # the nanny starts another; Dask reschedules its chunk
    assert job.results() == [0.5] * 8
    assert set(recorded_counts(job).values()) == {1}


def test_remove_force_of_a_running_job_on_s3_leaves_nothing(
    dask_address: str, s3_env: dict[str, str], s3_bucket: str
) -> None:
    """On S3 a late commit lands in a removed prefix as anywhere (a gone ``file://``
    folder refuses it): a chunk whose supervisor still runs must keep the job active."""
    from abstract.batch import remove_a_running_job

    store_url = f"s3://{s3_bucket}/jobs"
    knot = altus.Knot(tasks.nap, backend="dask", store=store_url, address=dask_address)
    remove_a_running_job(knot, store_url)
