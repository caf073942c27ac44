"""The local backend: the shared batch suite plus what only this machine's pool does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import psutil
import pytest

import altus
from abstract import tasks
from abstract.batch import BatchBackendSuite, is_running, wait_until
from altus.errors import BackendError, JobLost


@pytest.fixture
def backend_name() -> str:
    return "local"


@pytest.fixture
def knot_options() -> dict[str, Any]:
    return {"workers": 2}


class TestLocal(BatchBackendSuite):
    pass


def most_at_once(job: altus.Job) -> int:
    """The largest number of the job's tasks that ran at the same moment."""
    edges = []
    for task in range(len(job)):
        status = job.task_status(task)
        assert status is not None
        edges += [(status["start"] + 0.01, 1), (status["end"] - 0.01, -1)]
    running = peak = 0
    for _moment, change in sorted(edges):
        running += change
        peak = max(peak, running)
    return peak


@pytest.mark.timeout(60)
def test_wait_with_a_progress_bar_raises_nothing_when_a_task_fails(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    job = altus.Knot(tasks.fail_on_three, store=store_url).map(range(5))
    assert job.wait(progress=True) is True
    assert job.status()["failed"] == 1
    assert "5/5" in capsys.readouterr().err


def test_a_short_map_gets_one_task_per_chunk_a_long_one_a_few_chunks_per_worker(
    store_url: str,
) -> None:
    from altus.batch.knot import auto_chunksize

    assert auto_chunksize(32, 2, single_task_chunks_per_worker=16) == 1
    assert auto_chunksize(33, 2, single_task_chunks_per_worker=16) == 5
    assert auto_chunksize(10_000, 2, single_task_chunks_per_worker=16) == 1_250
    assert auto_chunksize(32, 2) == 4  # Slurm and Dask: each chunk starts something
    job = altus.Knot(tasks.square, store=store_url, workers=2).map(range(20))
    assert job.spec.n_chunks == 20
    assert job.results() == [x * x for x in range(20)]


def test_workers_are_long_lived(store_url: str) -> None:
    job = altus.Knot(tasks.nap, store=store_url, workers=2).map([0.01] * 20, chunksize=1)
    job.wait(timeout=30)
    pids = set()
    for task in range(20):
        status = job.task_status(task)
        assert status is not None
        pids.add(status["pid"])
    assert len(pids) <= 2


def test_a_long_lived_worker_keeps_no_files_open_between_jobs(store_url: str) -> None:
    knot = altus.Knot(tasks.pid_and_open_files, store=store_url, workers=1)
    seen = [knot.map([0]).results()[0] for _ in range(12)]
    assert len({pid for pid, _ in seen}) == 1
    assert seen[-1][1] == seen[1][1]


@pytest.mark.timeout(60)
def test_two_cpus_per_task_halves_the_workers(store_url: str) -> None:
    cores = len(os.sched_getaffinity(0))
    n_tasks = 2 * cores
    job = altus.Knot(tasks.nap, store=store_url, resources={"cpus": 2}).map(
        [0.3] * n_tasks, chunksize=1
    )
    assert job.wait(timeout=30)
    assert most_at_once(job) <= max(1, cores // 2)


@pytest.mark.timeout(60)
def test_gpus_without_a_gpu_is_a_backend_error(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(BackendError, match="GPU"):
        altus.Knot(tasks.square, store=store_url, resources={"gpus": 1}).map(range(2))


@pytest.mark.timeout(60)
def test_gpus_on_a_machine_without_nvidia_smi_is_a_backend_error(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BackendError, match="GPU"):
        altus.Knot(tasks.square, store=store_url, resources={"gpus": 1}).map(range(2))


@pytest.mark.timeout(60)
def test_each_gpu_task_sees_one_of_the_visible_gpus(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    job = altus.Knot(tasks.env_var, store=store_url, workers=2, resources={"gpus": 1}).map(
        ["CUDA_VISIBLE_DEVICES"] * 4, chunksize=1
    )
    results = job.results()
    assert set(results) == {"3", "5"}


@pytest.mark.timeout(60)
def test_gpu_pinning_in_a_fresh_client(store_url: str) -> None:
    """The pool inherits the client's environment: a client started with GPUs set."""
    script = textwrap.dedent(
        """
        import json, os, sys, time
        import altus

        def visible(x):
            time.sleep(0.2)
            return os.environ["CUDA_VISIBLE_DEVICES"]

        knot = altus.Knot(visible, store=sys.argv[1], workers=2, resources={"gpus": 1})
        print(json.dumps(knot.map(range(4), chunksize=1).results()))
        """
    )
    environ = {**os.environ, "CUDA_VISIBLE_DEVICES": "3,5"}
    done = subprocess.run(
        [sys.executable, "-c", script, store_url],
        capture_output=True,
        text=True,
        env=environ,
        timeout=50,
    )
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)) == {"3", "5"}


@pytest.mark.timeout(60)
def test_pool_exits_once_its_client_is_gone(store_url: str) -> None:
    script = textwrap.dedent(
        """
        import os, sys
        import altus

        def double(x):
            return 2 * x

        job = altus.Knot(double, store=sys.argv[1], workers=2).map(range(4))
        assert job.results() == [0, 2, 4, 6]
        print(job.id, os.getpid())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, store_url], capture_output=True, text=True, timeout=50
    )
    assert done.returncode == 0, done.stderr
    job_id, client_pid = done.stdout.split()
    job = altus.Job.attach(job_id, store=store_url)
    state = job.record.backend_state("local")
    assert state is not None
    assert state["client"] == int(client_pid)
    wait_until(lambda: not is_running(int(state["pid"])), timeout=15, what="the pool to exit")


@pytest.mark.timeout(60)
def test_default_store_is_under_the_data_dir(clean_environ: Path) -> None:
    job = altus.Knot(tasks.square, workers=2).map(range(3))
    assert job.results() == [0, 1, 4]
    assert (clean_environ / "data").as_uri() in job.record.url
    assert [summary.id for summary in altus.jobs()] == [job.id]


@pytest.mark.timeout(60)
def test_killed_pool_makes_the_job_lost_and_retry_finishes_it(store_url: str) -> None:
    job = altus.Knot(tasks.nap, store=store_url, workers=2).map([0.5] * 6, chunksize=1)
    state = job.record.backend_state("local")
    assert state is not None
    pool = psutil.Process(int(state["pid"]))
    wait_until(lambda: len(pool.children()) >= 2, what="the pool to start workers")
    workers = [child.pid for child in pool.children()]
    os.kill(pool.pid, signal.SIGKILL)
    with pytest.raises(JobLost, match=job.id):
        job.wait(timeout=30)
    assert job.state() == "lost"
    wait_until(lambda: not any(map(is_running, workers)), timeout=15, what="orphan workers")
    job.retry(failed_only=False)
    assert job.results() == [0.5] * 6
    assert job.state() == "done"


@pytest.mark.timeout(60)
def test_store_path_with_spaces_and_accents(tmp_path: Path) -> None:
    root = tmp_path / "my jobs — été"
    job = altus.Knot(tasks.square, store=str(root), workers=2).map(range(4))
    assert job.results() == [0, 1, 4, 9]
    assert (root / job.id / "spec.json").is_file()
    assert altus.Job.attach(job.id, store=root.as_uri()).results() == [0, 1, 4, 9]
