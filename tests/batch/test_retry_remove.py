"""Retries and removal are decided against the record, never a handle's cached view.

Issue 12, items 5 and 6: two retries at once started two rounds (failed tasks
ran three times), and ``altus jobs rm --force`` of a running job left files of
batches being written when it removed the folder. These run the real local
backend, with the record on a ``file://`` and on an ``s3://`` store; the retry
and the removal come from other processes (the ``altus`` command), as a second
user of the job would send them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cloudpickle
import psutil
import pytest

import altus
from abstract.batch import wait_in_a_thread
from altus.errors import JobBusy, JobLost, JobNotFound, JobRemoved
from altus.storage import open_store

# The retries run in pools of `altus` commands, whose workers cannot import this module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def count_run_fail_odd_once(folder: str, x: int) -> int:
    """Appends a line to ``runs-<x>`` each run; odd tasks fail their first run, and a
    rerun naps two seconds (so a second retry meets the first one's round running)."""
    runs = Path(folder) / f"runs-{x}"
    with open(runs, "a") as log:
        log.write("run\n")
    n = len(runs.read_text().splitlines())
    if x % 2 and n == 1:
        raise RuntimeError(f"first run of {x}")
    if n > 1:
        time.sleep(2)
    return x * 10


def fail_zero_nap_others(x: int) -> int:
    if x == 0:
        raise RuntimeError("zero fails at once")
    time.sleep(3)
    return x


def nap_then_count(folder: str, x: int) -> int:
    """Naps a second, then appends a line to ``done-<x>``: how often the task completed."""
    time.sleep(1)
    with open(Path(folder) / f"done-{x}", "a") as log:
        log.write("done\n")
    return x


def tiny(x: int) -> int:
    time.sleep(0.002)
    return x


@pytest.fixture(params=["file", "s3"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store of each kind; the record's layout must hold on both."""
    if request.param == "file":
        root = tmp_path / "store"
        root.mkdir()
        return root.as_uri()
    request.getfixturevalue("s3_env")
    return f"s3://{request.getfixturevalue('s3_bucket')}/jobs"


def wait_until(condition: Callable[[], object], timeout: float = 60.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def altus_command(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "altus.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_counts(folder: Path, n: int) -> list[int]:
    return [len((folder / f"runs-{x}").read_text().splitlines()) for x in range(n)]


def left_in_store(store_url: str, job_id: str) -> list[str]:
    """Every object or file left below the job's folder."""
    return sorted(open_store(store_url).child(job_id).list(""))


# -- retry -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_retries_at_once_start_one_round(store_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "runs"
    folder.mkdir()
    knot = altus.Knot(count_run_fail_odd_once, store=store_url, workers=2)
    job = knot.map([(str(folder), x) for x in range(6)], starmap=True, chunksize=1)
    assert job.wait(timeout=60)
    assert [error.task for error in job.errors()] == [1, 3, 5]
    first = altus_command("jobs", "retry", job.id, "--store", store_url)
    time.sleep(0.3)
    second = altus_command("jobs", "retry", job.id, "--store", store_url)
    outcomes = [process.communicate(timeout=60) for process in (first, second)]
    codes = sorted(process.returncode for process in (first, second))
    assert codes == [0, 1], outcomes
    [(_out, refusal)] = [out for out, process in zip(outcomes, (first, second), strict=True)
                         if process.returncode]  # fmt: skip
    [line] = refusal.splitlines()
    assert line.startswith("altus: error: ")
    assert f"round 1 of job {job.id} is still running" in line
    assert job.wait(timeout=60)
    assert job.results() == [x * 10 for x in range(6)]
    assert job.record.rounds() == [0, 1]
    assert run_counts(folder, 6) == [1, 2, 1, 2, 1, 2]


@pytest.mark.timeout(60)
def test_a_retry_while_the_round_runs_is_refused(store_url: str) -> None:
    job = altus.Knot(fail_zero_nap_others, store=store_url, workers=2).map(range(3), chunksize=1)
    try:
        wait_until(lambda: job.status()["failed"] == 1, what="task 0 to fail")
        with pytest.raises(JobBusy, match=f"round 0 of job {job.id} is still running") as refused:
            job.retry()
        assert "\n" not in str(refused.value)
        assert job.record.rounds() == [0]
    finally:
        job.cancel()


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_after_a_killed_pool_each_task_completes_once(tmp_path: Path) -> None:
    store = (tmp_path / "store").as_uri()
    folder = tmp_path / "runs"
    folder.mkdir()
    job = altus.Knot(nap_then_count, store=store, workers=2).map(
        [(str(folder), x) for x in range(6)], starmap=True, chunksize=1
    )
    state = job.record.backend_state("local")
    assert state is not None
    pool = psutil.Process(int(state["pid"]))
    wait_until(lambda: job.status()["running"] == 2, what="two tasks to start")
    os.kill(pool.pid, signal.SIGKILL)
    with pytest.raises(JobLost, match=job.id):
        job.wait(timeout=30)
    job.retry(failed_only=False)
    assert job.results() == list(range(6))
    time.sleep(1.5)  # a worker of the killed pool would have finished its task by now
    counts = [len((folder / f"done-{x}").read_text().splitlines()) for x in range(6)]
    assert counts == [1] * 6


# -- remove ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("attempt", range(3))
def test_rm_force_of_a_running_job_leaves_nothing(store_url: str, attempt: int) -> None:
    job = altus.Knot(tiny, store=store_url, workers=2).map(range(20_000), chunksize=25)
    wait_until(lambda: job.status()["done"] > 100, what="commits to flow")
    done = subprocess.run(
        [sys.executable, "-m", "altus.cli.main", "jobs", "rm", job.id, "--yes", "--force",
         "--store", store_url],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"removed job {job.id}\n"
    time.sleep(1.0)  # a worker still writing would have written by now
    assert left_in_store(store_url, job.id) == []
    if store_url.startswith("file://"):
        assert not (Path(open_store(store_url).url.removeprefix("file://")) / job.id).exists()
    assert altus.jobs(store_url) == []
    with pytest.raises(JobRemoved, match=f"job {job.id} was removed"):
        job.wait(timeout=30)


@pytest.mark.timeout(90)
def test_a_client_waiting_on_a_removed_job_hears_it_was_removed(store_url: str) -> None:
    job = altus.Knot(fail_zero_nap_others, store=store_url, workers=2).map(range(4), chunksize=1)
    watcher = altus.Job.attach(job.id, store=store_url)
    futures = watcher.futures
    thread, outcome = wait_in_a_thread(watcher)
    other = altus_command("jobs", "rm", job.id, "--yes", "--force", "--store", store_url)
    _out, err = other.communicate(timeout=60)
    assert other.returncode == 0, err
    thread.join(timeout=30)
    [error] = outcome
    assert isinstance(error, JobRemoved), repr(error)
    assert isinstance(error, JobNotFound)
    assert str(error) == f"job {job.id} was removed from {open_store(store_url).url}"
    assert isinstance(futures[1].exception(timeout=30), JobRemoved)
    with pytest.raises(JobNotFound, match=job.id):
        altus.Job.attach(job.id, store=store_url)
