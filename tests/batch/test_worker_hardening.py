"""Worker runtime hardening (issue 12): what a task does to its worker, and what a dead
worker or pool leaves behind, on the local pool and on the supervisor that Slurm and Dask
run. The shared suite (``tests/abstract/batch.py``) has the cases every backend passes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import altus
from abstract import tasks
from abstract.batch import is_running, read_pids, wait_until
from altus.batch.backends.base import worker_environment
from altus.batch.backends.local import LocalBackend
from altus.config import load_settings

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    """Where tasks leave pids; whatever they name is killed at the end, whatever happened."""
    path = tmp_path / "exchange"
    path.mkdir()
    yield path
    for pid in filter(is_running, read_pids(path)):
        os.kill(pid, signal.SIGKILL)


def unlaunched_job(knot: altus.Knot, items: list[object], chunksize: int) -> altus.Job:
    """A job whose record exists but that no backend started: the test runs it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LocalBackend, "launch", lambda self, launch: None)
        return knot.map(items, chunksize=chunksize, starmap=True)


@pytest.mark.timeout(90)
def test_supervisor_ends_a_dead_workers_group_so_nothing_hangs_on_its_output(
    store_url: str, folder: Path
) -> None:
    """The child a task forked holds the supervisor's stderr: before, the supervisor's
    caller (here as under Dask, reading its output) waited on it for ever."""
    items: list[object] = [(str(folder), x) for x in range(3)]
    knot = altus.Knot(tasks.fork_child_then_die_on_one, store=store_url, retries=1)
    job = unlaunched_job(knot, items, chunksize=3)
    command = [sys.executable, "-m", "altus.batch.supervisor", job.record.url, "0"]
    try:
        done = subprocess.run(command, capture_output=True, env=worker_environment(), timeout=30)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("the supervisor's output never closed: a child held it") from exc
    assert done.returncode == 0, done.stderr
    assert job.results() == [0, 10, 20]
    children = read_pids(folder)
    assert len(children) == 2
    wait_until(lambda: not any(map(is_running, children)), timeout=10, what="the children")


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_killed_pool_takes_its_workers_and_their_children_along(
    store_url: str, folder: Path
) -> None:
    """Before, orphaned workers finished their tasks and wrote them into a record whose
    client already called the job lost, and a retry ran them again."""
    items: list[object] = [(str(folder), x) for x in range(4)]
    job = altus.Knot(tasks.spawn_children_and_nap, store=store_url, workers=2).map(
        items, chunksize=1, starmap=True
    )
    state = job.record.backend_state("local")
    assert state is not None
    wait_until(lambda: len(read_pids(folder)) == 6, what="two tasks and their children")
    os.kill(int(state["pid"]), signal.SIGKILL)
    started = read_pids(folder)
    wait_until(lambda: not any(map(is_running, started)), timeout=5, what="workers and children")
    statuses = len(list(job.record.status_names()))
    time.sleep(3)  # past the end of the tasks that were running
    assert not list(folder.glob("*.finished"))
    assert len(list(job.record.status_names())) == statuses


@pytest.mark.timeout(90)
def test_a_killed_supervisor_takes_its_worker_and_the_tasks_children_along(
    store_url: str, folder: Path
) -> None:
    items: list[object] = [(str(folder), x) for x in range(2)]
    job = unlaunched_job(altus.Knot(tasks.spawn_children_and_nap, store=store_url), items, 2)
    command = [sys.executable, "-m", "altus.batch.supervisor", job.record.url, "0"]
    supervisor = subprocess.Popen(command, env=worker_environment(), stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(read_pids(folder)) == 3, what="a task and its children")
    finally:
        supervisor.kill()
        supervisor.wait()
    started = read_pids(folder)
    wait_until(lambda: not any(map(is_running, started)), timeout=5, what="worker and children")
    assert not list(folder.glob("*.finished"))


def run_client(store_url: str, func: str) -> tuple[str, int, int]:
    """Map ``tasks.<func>`` over two items from a client process that then exits: the job
    id, the client's pid and its pool's pid."""
    script = textwrap.dedent(
        f"""
        import os, sys
        import altus
        from abstract import tasks

        job = altus.Knot(tasks.{func}, store=sys.argv[1], workers=2).map(range(2))
        assert job.results() == [0, 1]
        print(job.id, os.getpid(), job.record.backend_state("local")["pid"])
        """
    )
    environment = {**os.environ, "PYTHONPATH": str(TESTS)}
    done = subprocess.run(
        [sys.executable, "-c", script, store_url],
        capture_output=True, text=True, timeout=60, env=environment,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    job_id, client, pool = done.stdout.split()
    return job_id, int(client), int(pool)


@pytest.mark.timeout(90)
def test_a_client_leaves_no_empty_pool_log_behind(store_url: str) -> None:
    _, client, pool = run_client(store_url, "square")
    wait_until(lambda: not is_running(pool), timeout=20, what="the pool to exit")
    assert not (load_settings().paths.state_dir / "local-pool" / f"client-{client}.log").exists()


@pytest.mark.timeout(90)
def test_a_pool_log_with_something_in_it_is_kept(store_url: str) -> None:
    _, client, pool = run_client(store_url, "write_to_the_pool_log")
    wait_until(lambda: not is_running(pool), timeout=20, what="the pool to exit")
    log = load_settings().paths.state_dir / "local-pool" / f"client-{client}.log"
    assert "a note for the pool log" in log.read_text()
