"""``BatchBackendSuite``: what every batch backend must do, with real processes.

A backend's test module inherits the class and supplies three fixtures:

``backend_name``
    the name given to ``altus.Knot(backend=...)``;
``knot_options``
    extra ``Knot`` keyword arguments (JSON-serialisable: client scripts get them too);
``store_url``
    a fresh, empty store URL for each test that the workers can reach.

Tests that kill workers or read their pids assume the workers run on this host.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import altus
from abstract import tasks
from altus.batch.record import BatchName
from altus.errors import (
    AltusError,
    JobNotFound,
    RecordError,
    SubmitError,
    TaskCancelled,
    TaskError,
    TaskFailed,
    TaskTimeout,
    WorkerDied,
)

__all__ = ["BatchBackendSuite"]

CLIENT_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path

    import altus

    backend, options, store, folder, mode = sys.argv[1:6]
    options = json.loads(options)

    def slow_triple(x):
        time.sleep(0.4)
        return x * 3

    def record_pid_and_sleep(x):
        tmp = Path(folder) / f".{x}.tmp"
        tmp.write_text(str(os.getpid()))
        os.replace(tmp, Path(folder) / f"{x}.pid")
        time.sleep(60)
        return x

    def knot(func):
        return altus.Knot(func, backend=backend, store=store, **options)

    if mode == "killed":
        job = knot(slow_triple).map(range(8), chunksize=1)
        print(job.id, flush=True)
        time.sleep(600)
    elif mode == "finish":
        job = knot(slow_triple).map(range(4), chunksize=1)
        assert job.results() == [0, 3, 6, 9]
        print(job.id, flush=True)
    elif mode == "interrupt":
        job = knot(record_pid_and_sleep).map(range(4), chunksize=1)
        print(job.id, flush=True)
        job.results()
    """
)


def wait_until(condition: Callable[[], object], timeout: float = 30.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def is_running(pid: int) -> bool:
    """Alive and not a zombie waiting for its parent to reap it."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def read_pids(folder: Path) -> list[int]:
    return [int(path.read_text()) for path in sorted(folder.glob("*.pid"))]


def recorded_counts(job: altus.Job, round_: int = 0) -> Counter[int]:
    """How many status files of ``round_`` list each task (must be exactly one)."""
    counts: Counter[int] = Counter()
    for stem in job.record.status_names():
        name = BatchName.parse(stem)
        if name is not None and name.round == round_:
            counts.update(job.record.read_status(stem).tasks)
    return counts


def wait_in_a_thread(job: altus.Job) -> tuple[threading.Thread, list[BaseException | None]]:
    """``job.wait`` on a thread of its own; the list gets None, or what the wait raised."""
    outcome: list[BaseException | None] = []

    def wait() -> None:
        try:
            job.wait(timeout=60)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    return thread, outcome


def remove_a_running_job(knot: altus.Knot, store_url: str) -> None:
    """``remove(force=True)`` of a job of many short tasks while it runs: it returns soon,
    nothing of the job is left a second later, and a handle waiting on it hears why.

    A running task commits until its worker sees the cancel: the backend must report it
    active until then, or its commit comes back into the removed folder (on S3 at least:
    a gone ``file://`` folder refuses it); and the queued chunks must be dropped, not each
    started only to see the cancel.
    """
    from altus.errors import JobRemoved
    from altus.storage import open_store

    job = knot.map([0.4] * 400, chunksize=2)
    thread, outcome = wait_in_a_thread(altus.Job.attach(job.id, store=store_url))
    wait_until(lambda: len(job.record.recorded_tasks(0)) >= 2, 60, "commits to flow")
    started = time.monotonic()
    job.remove(force=True)
    assert time.monotonic() - started < 10, "the removal waited for the queued chunks"
    time.sleep(1.0)  # a worker still running would have committed by now
    left = sorted(open_store(store_url).child(job.id).list(""))
    assert left == [], f"{len(left)} file(s) came back after the removal: {left[:5]}"
    thread.join(timeout=30)
    [error] = outcome
    assert isinstance(error, JobRemoved), repr(error)


@pytest.mark.timeout(90)
class BatchBackendSuite:
    """Inherit and supply ``backend_name``, ``knot_options`` and ``store_url``."""

    # -- helpers ----------------------------------------------------------------------

    @pytest.fixture
    def knot(
        self, backend_name: str, knot_options: dict[str, Any], store_url: str
    ) -> Callable[..., altus.Knot]:
        """``knot(func, **overrides)``: a Knot on this backend and this test's store."""

        def make(func: Callable[..., Any], **overrides: Any) -> altus.Knot:
            options = {**knot_options, **overrides}
            return altus.Knot(func, backend=backend_name, store=store_url, **options)

        return make

    @pytest.fixture
    def folder(self, tmp_path: Path) -> Path:
        """Where tasks and the test exchange files (pids, markers)."""
        path = tmp_path / "exchange"
        path.mkdir()
        return path

    @pytest.fixture
    def client(
        self, backend_name: str, knot_options: dict[str, Any], store_url: str, folder: Path
    ) -> Iterator[Callable[[str], subprocess.Popen[str]]]:
        """``client(mode)``: a separate client process running ``CLIENT_SCRIPT``."""
        started: list[subprocess.Popen[str]] = []

        def start(mode: str) -> subprocess.Popen[str]:
            argv = [backend_name, json.dumps(knot_options), store_url, str(folder), mode]
            process = subprocess.Popen(
                [sys.executable, "-c", CLIENT_SCRIPT, *argv],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            started.append(process)
            return process

        yield start
        for process in started:
            if process.poll() is None:
                process.kill()
            process.wait()

    # -- results and ordering --------------------------------------------------------

    def test_results_come_back_in_input_order(self, knot: Callable[..., altus.Knot]) -> None:
        job = knot(tasks.square).map(range(25))
        assert job.results() == [x * x for x in range(25)]
        assert job.state() == "done"

    def test_uneven_chunks_keep_input_order(self, knot: Callable[..., altus.Knot]) -> None:
        job = knot(tasks.square).map(list(range(10)), chunksize=3)
        assert job.spec.n_chunks == 4
        assert job.results() == [x * x for x in range(10)]

    def test_chunksize_one_keeps_input_order(self, knot: Callable[..., altus.Knot]) -> None:
        job = knot(tasks.square).map([5, 3, 9, 1, 7], chunksize=1)
        assert job.spec.n_chunks == 5
        assert job.results() == [25, 9, 81, 1, 49]

    def test_starmap_unpacks_each_item(self, knot: Callable[..., altus.Knot]) -> None:
        job = knot(tasks.add).map([(1, 2), (10, 20), (-5, 5)], starmap=True)
        assert job.results() == [3, 30, 0]

    def test_generator_input(self, knot: Callable[..., altus.Knot]) -> None:
        job = knot(tasks.square).map(x for x in range(12) if x % 2)
        assert job.results() == [1, 9, 25, 49, 81, 121]

    def test_empty_input_finishes_with_no_results(self, knot: Callable[..., altus.Knot]) -> None:
        job = knot(tasks.square).map([])
        assert job.wait(timeout=30)
        assert job.results() == []
        assert job.state() == "done"
        assert job.status() == {"pending": 0, "running": 0, "done": 0, "failed": 0, "cancelled": 0}

    def test_large_arguments_arrive_intact_in_split_input_files(
        self, knot: Callable[..., altus.Knot]
    ) -> None:
        blobs = [bytes([i]) * (20 << 20) + os.urandom(64) for i in range(4)]
        job = knot(tasks.digest).map(blobs, chunksize=len(blobs))
        expected = [(len(blob), hashlib.sha256(blob).hexdigest()) for blob in blobs]
        assert job.results() == expected
        store = job.record.store
        sizes = [len(store.read(f"inputs/{name}")) for name in store.children("inputs")]
        assert len(sizes) > 1, "80 MB of inputs went into one inputs file"
        assert max(sizes) < sum(len(blob) for blob in blobs)

    def test_gather_without_progress_returns_results(self, knot: Callable[..., altus.Knot]) -> None:
        assert knot(tasks.square).map(range(4)).gather(progress=False) == [0, 1, 4, 9]

    def test_wait_with_timeout_returns_false_while_running(
        self, knot: Callable[..., altus.Knot]
    ) -> None:
        job = knot(tasks.nap).map([1.5])
        assert job.wait(timeout=0.1) is False
        assert job.wait(timeout=30) is True
        assert job.results() == [1.5]

    def test_results_keep_input_order_when_tasks_finish_out_of_order(
        self, knot: Callable[..., altus.Knot]
    ) -> None:
        delays = [0.4, 0.3, 0.2, 0.1, 0.0]
        assert knot(tasks.nap).map(delays, chunksize=1).results() == delays

    def test_large_results_arrive_intact(self, knot: Callable[..., altus.Knot]) -> None:
        results = knot(tasks.blob_of).map(range(3), chunksize=3).results()
        assert [len(blob) for blob in results] == [25 << 20] * 3
        assert [blob == bytes([i]) * (25 << 20) for i, blob in enumerate(results)] == [True] * 3

    def test_job_id_collision_does_not_overwrite_a_record(
        self, knot: Callable[..., altus.Knot], store_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Ids are a name, a time to the second and 16 random bits: collisions happen."""
        import altus.batch.knot as knot_module

        real = knot_module.new_job_id
        drawn = iter(["same-20250101-000000-abcd", "same-20250101-000000-abcd"])
        monkeypatch.setattr(knot_module, "new_job_id", lambda name: next(drawn, None) or real(name))
        first = knot(tasks.square).map([1, 2, 3])
        try:
            second: altus.Job | None = knot(tasks.add).map([(5, 5)], starmap=True)
        except AltusError:
            second = None
        assert first.results() == [1, 4, 9]
        assert altus.Job.attach(first.id, store=store_url).results() == [1, 4, 9]
        if second is not None:
            assert second.id != first.id
            assert second.results() == [10]

    # -- errors -----------------------------------------------------------------------

    def test_results_reraise_the_original_exception_with_remote_traceback(
        self, knot: Callable[..., altus.Knot]
    ) -> None:
        job = knot(tasks.fail_on_three).map(range(6), chunksize=2)
        with pytest.raises(ValueError, match="bad input 3") as caught:
            job.results()
        remote = str(caught.value.__cause__)
        assert "fail_on_three" in remote
        assert "ValueError: bad input 3" in remote
        assert job.status()["done"] == 5
        assert job.status()["failed"] == 1
        assert job.state() == "failed"

    def test_errors_return_puts_exceptions_in_place(self, knot: Callable[..., altus.Knot]) -> None:
        results = knot(tasks.fail_on_three).map(range(5)).results(errors="return")
        assert results[:3] == [0, 1, 2]
        assert isinstance(results[3], ValueError)
        assert str(results[3]) == "bad input 3"
        assert results[4] == 4

    def test_errors_skip_leaves_failed_tasks_out(self, knot: Callable[..., altus.Knot]) -> None:
        assert knot(tasks.fail_on_three).map(range(6)).results(errors="skip") == [0, 1, 2, 4, 5]

    def test_errors_lists_index_type_message_and_traceback(
        self, knot: Callable[..., altus.Knot]
    ) -> None:
        job = knot(tasks.fail_on_three).map(range(6))
        job.wait(timeout=60)
        [error] = job.errors()
        assert error.task == 3
        assert error.error_type == "ValueError"
        assert error.message == "bad input 3"
        assert "fail_on_three" in error.traceback
        assert "raise ValueError" in error.traceback

    def test_unrebuildable_exception_is_a_task_failed_with_its_text(
        self, knot: Callable[..., altus.Knot]
    ) -> None:
        job = knot(tasks.raise_needs_two_args).map([1])
        with pytest.raises(TaskFailed, match=r"NeedsTwoArgs.*1 and 2") as caught:
            job.results()
        assert caught.value.task == 0
        assert "raise_needs_two_args" in caught.value.remote_traceback

    def test_unpicklable_result_fails_only_its_task(self, knot: Callable[..., altus.Knot]) -> None:
        results = knot(tasks.unpicklable_result_on_one).map(range(3)).results(errors="return")
        assert results[0] == 0
        assert results[2] == 2
        assert isinstance(results[1], TaskFailed)
        assert "cannot be pickled" in str(results[1])

    def test_task_calling_sys_exit_fails_only_its_task(
        self, knot: Callable[..., altus.Knot]
    ) -> None:
        job = knot(tasks.exit_on_one, retries=0).map(range(4), chunksize=4)
        assert job.wait(timeout=60)
        results = job.results(errors="return")
        assert results[0] == 0
        assert results[2:] == [2, 3]
        assert isinstance(results[1], Exception)
        assert [error.task for error in job.errors()] == [1]

    def test_task_raising_keyboard_interrupt_fails_only_its_task(
        self, knot: Callable[..., altus.Knot]
    ) -> None:
        job = knot(tasks.interrupt_on_one, retries=0).map(range(3), chunksize=3)
        assert job.wait(timeout=60)
        results = job.results(errors="return")
        assert results[0][0] == 0
        assert results[2] == (2, results[0][1]), "the worker did not survive the interrupt"
        assert isinstance(results[1], BaseException)
        [error] = job.errors()
        assert (error.task, error.error_type) == (1, "KeyboardInterrupt")
        assert "stop at 1" in error.message
        assert "interrupt_on_one" in error.traceback
        status = job.task_status(1)
        assert status is not None
        assert status["pid"] == results[0][1], "task 1 was not recorded by its own worker"

    def test_worker_dying_before_its_first_task_is_not_retried_forever(
        self, knot: Callable[..., altus.Knot]
    ) -> None:
        job = knot(tasks.ExitsWhenLoaded(), retries=1).map(range(2), chunksize=1)
        try:
            assert job.wait(timeout=15), "the job never finished: workers are restarted forever"
            results = job.results(errors="return")
            assert all(isinstance(result, TaskError) for result in results)
            assert job.status()["failed"] == 2
        finally:
            job.cancel()

    # -- logs and task status --------------------------------------------------------------

    def test_logs_hold_python_and_subprocess_output_per_task(
        self, knot: Callable[..., altus.Knot]
    ) -> None:
        job = knot(tasks.chatty).map(range(4), chunksize=4)
        assert job.results() == [0, 1, 2, 3]
        logs = job.logs(2)
        assert logs.task == 2
        assert "py-out 2" in logs.stdout
        assert "child-out 2" in logs.stdout
        assert "py-err 2" in logs.stderr
        for other in ("py-out 1", "child-out 1", "py-out 3", "child-out 3"):
            assert other not in logs.stdout

    def test_logs_of_a_failed_task_and_of_a_silent_one(
        self, knot: Callable[..., altus.Knot]
    ) -> None:
        job = knot(tasks.print_then_fail).map([7])
        job.wait(timeout=60)
        assert "about to fail 7" in job.logs(0).stdout
        quiet = knot(tasks.silent_unless_one).map(range(3), chunksize=3)
        quiet.wait(timeout=60)
        assert quiet.logs(0).stdout == quiet.logs(0).stderr == ""
        assert quiet.logs(1).stdout == "only task one speaks\n"
        assert quiet.logs(2).stdout == ""

    def test_each_task_of_a_chunk_has_exactly_its_own_output(
        self, knot: Callable[..., altus.Knot]
    ) -> None:
        job = knot(tasks.say_line).map(range(6), chunksize=6)
        assert job.results() == list(range(6))
        assert [job.logs(task).stdout for task in range(6)] == [f"line {x}\n" for x in range(6)]

    def test_large_output_is_kept_whole(self, knot: Callable[..., altus.Knot]) -> None:
        job = knot(tasks.print_megabytes).map([8])
        assert job.results() == [8]
        assert job.logs(0).stdout == "y" * (8 << 20)

    def test_task_reading_stdin_gets_end_of_file(self, knot: Callable[..., altus.Knot]) -> None:
        job = knot(tasks.read_stdin, timeout=20).map([0])
        assert job.results() == [""]

    def test_task_status_reports_host_pid_times_and_memory(
        self, knot: Callable[..., altus.Knot]
    ) -> None:
        before = time.time()
        job = knot(tasks.hog).map([64])
        assert job.results() == [64 << 20]
        status = job.task_status(0)
        assert status is not None
        assert status["state"] == "done"
        assert status["host"] == socket.gethostname()
        assert isinstance(status["pid"], int)
        assert status["pid"] > 0
        assert status["pid"] != os.getpid()
        assert before - 1 <= status["start"] <= status["end"] <= time.time() + 1
        assert status["duration"] >= 0.05
        assert status["end"] - status["start"] == pytest.approx(status["duration"], abs=1e-3)
        assert status["peak_memory"] >= 64 << 20
        assert status["exit_reason"] == "returned"

    def test_task_status_of_failed_task_has_error(self, knot: Callable[..., altus.Knot]) -> None:
        job = knot(tasks.fail_on_three).map(range(4))
        job.wait(timeout=60)
        status = job.task_status(3)
        assert status is not None
        assert status["state"] == "failed"
        assert status["error_type"] == "ValueError"
        assert status["message"] == "bad input 3"
        assert "fail_on_three" in status["traceback"]

    def test_status_counts_by_state(self, knot: Callable[..., altus.Knot]) -> None:
        job = knot(tasks.fail_on_three).map(range(7))
        first = job.status()
        assert sum(first.values()) == 7
        job.wait(timeout=60)
        assert job.status() == {"pending": 0, "running": 0, "done": 6, "failed": 1, "cancelled": 0}

    # -- futures ----------------------------------------------------------------------------

    def test_futures_work_with_as_completed(self, knot: Callable[..., altus.Knot]) -> None:
        job = knot(tasks.nap).map([0.3, 0.0, 0.2, 0.1], chunksize=1)
        futures = job.futures
        assert all(isinstance(future, concurrent.futures.Future) for future in futures)
        done = [future.result() for future in concurrent.futures.as_completed(futures, timeout=60)]
        assert sorted(done) == [0.0, 0.1, 0.2, 0.3]

    def test_futures_work_with_wait(self, knot: Callable[..., altus.Knot]) -> None:
        job = knot(tasks.square).map(range(6))
        done, not_done = concurrent.futures.wait(job.futures, timeout=60)
        assert not not_done
        assert sorted(future.result() for future in done) == [0, 1, 4, 9, 16, 25]

    def test_future_result_reraises_task_exception(self, knot: Callable[..., altus.Knot]) -> None:
        futures = knot(tasks.fail_on_three).map(range(5)).futures
        with pytest.raises(ValueError, match="bad input 3"):
            futures[3].result(timeout=60)
        assert futures[4].result(timeout=60) == 4

    def test_submit_returns_a_future(self, knot: Callable[..., altus.Knot]) -> None:
        future = knot(tasks.scaled_sum).submit(2, 3, scale=10)
        assert isinstance(future, concurrent.futures.Future)
        assert future.result(timeout=60) == 50

    def test_submitted_future_reraises(self, knot: Callable[..., altus.Knot]) -> None:
        future = knot(tasks.fail_on_three).submit(3)
        with pytest.raises(ValueError, match="bad input 3"):
            future.result(timeout=60)

    def test_submits_in_a_loop_are_separate_jobs(self, knot: Callable[..., altus.Knot]) -> None:
        """A loop of submits in one second must not reuse a job id (and overwrite a record)."""
        square = knot(tasks.square)
        futures = [square.submit(x) for x in range(100)]
        assert [future.result(timeout=60) for future in futures] == [x * x for x in range(100)]

    def test_executor_map_and_submit(
        self, backend_name: str, knot_options: dict[str, Any], store_url: str
    ) -> None:
        with altus.Executor(backend=backend_name, store=store_url, **knot_options) as executor:
            assert list(executor.map(tasks.add, [1, 2, 3], [10, 20, 30])) == [11, 22, 33]
            assert executor.submit(tasks.scaled_sum, 1, 1, scale=3).result(timeout=60) == 6
        assert isinstance(executor, concurrent.futures.Executor)

    def test_executor_map_timeout(
        self, backend_name: str, knot_options: dict[str, Any], store_url: str
    ) -> None:
        with altus.Executor(backend=backend_name, store=store_url, **knot_options) as executor:
            results = executor.map(tasks.nap, [1.0], timeout=0.1)
            with pytest.raises(concurrent.futures.TimeoutError):
                list(results)

    # -- workers that die ------------------------------------------------------------------

    def test_killed_worker_loses_and_duplicates_no_result(
        self, knot: Callable[..., altus.Knot], folder: Path
    ) -> None:
        job = knot(tasks.sleep_until_killed_once).map(
            [(str(folder), x) for x in range(6)], starmap=True, chunksize=3
        )
        wait_until((folder / "pid").exists, what="task 1 to start")
        os.kill(int((folder / "pid").read_text()), signal.SIGKILL)
        assert job.results() == [x * 10 for x in range(6)]
        assert recorded_counts(job) == Counter(range(6))
        status = job.task_status(1)
        assert status is not None
        assert status["attempt"] >= 1
        assert status["pid"] != int((folder / "pid").read_text())

    def test_task_that_always_kills_its_worker_fails_after_retries(
        self, knot: Callable[..., altus.Knot], folder: Path
    ) -> None:
        job = knot(tasks.kill_own_worker_on_two, retries=1).map(
            [(str(folder), x) for x in range(5)], starmap=True, chunksize=5
        )
        results = job.results(errors="return")
        assert results[:2] == [0, 1]
        assert results[3:] == [3, 4]
        assert isinstance(results[2], WorkerDied)
        assert (folder / "attempts").read_text().count("attempt") == 2
        status = job.task_status(2)
        assert status is not None
        assert "signal 9" in status["exit_reason"]
        assert status["error_type"] == "altus.errors.WorkerDied"
        assert recorded_counts(job) == Counter(range(5))

    def test_a_dead_workers_forked_child_neither_stalls_the_job_nor_outlives_it(
        self, knot: Callable[..., altus.Knot], folder: Path
    ) -> None:
        job = knot(tasks.fork_child_then_die_on_one, retries=1).map(
            [(str(folder), x) for x in range(3)], starmap=True, chunksize=3
        )
        try:
            assert job.wait(timeout=30), "the job stalled: the dead worker was never noticed"
            assert job.results() == [0, 10, 20]
            children = read_pids(folder)
            assert len(children) == 2
            wait_until(
                lambda: not any(map(is_running, children)), timeout=10, what="the task's children"
            )
        finally:
            job.cancel()
            for pid in filter(is_running, read_pids(folder)):
                os.kill(pid, signal.SIGKILL)

    # -- timeouts -------------------------------------------------------------------------

    def test_timeout_fails_a_sleeping_task_only(self, knot: Callable[..., altus.Knot]) -> None:
        started = time.monotonic()
        job = knot(tasks.hang_on_one, timeout=1).map(range(4), chunksize=2)
        results = job.results(errors="return")
        assert time.monotonic() - started < 30
        assert results[0] == 0
        assert results[2:] == [2, 3]
        assert isinstance(results[1], TaskTimeout)
        [error] = job.errors()
        assert error.task == 1
        assert error.error_type == "altus.errors.TaskTimeout"

    def test_timeout_applies_to_each_task_not_to_the_chunk(
        self, knot: Callable[..., altus.Knot]
    ) -> None:
        job = knot(tasks.nap, timeout=1).map([0.5] * 4, chunksize=4)
        assert job.results() == [0.5] * 4

    def test_timeout_kills_a_task_that_blocks_the_alarm(
        self, knot: Callable[..., altus.Knot]
    ) -> None:
        started = time.monotonic()
        job = knot(tasks.hang_with_alarm_blocked_on_one, timeout=1).map(range(4), chunksize=2)
        results = job.results(errors="return")
        assert time.monotonic() - started < 30
        assert results[0] == 0
        assert results[2:] == [2, 3]
        assert isinstance(results[1], TaskTimeout)
        assert recorded_counts(job) == Counter(range(4))

    # -- control ----------------------------------------------------------------------------

    def test_cancel_stops_running_tasks_and_their_processes(
        self, knot: Callable[..., altus.Knot], folder: Path
    ) -> None:
        job = knot(tasks.record_pid_and_sleep, workers=2).map(
            [(str(folder), x) for x in range(4)], starmap=True, chunksize=1
        )
        wait_until(lambda: len(read_pids(folder)) >= 2, what="two tasks to start")
        pids = read_pids(folder)
        job.cancel()
        assert job.wait(timeout=30)
        assert job.state() == "cancelled"
        assert job.status()["cancelled"] == 4
        wait_until(lambda: not any(map(is_running, pids)), timeout=15, what="workers to stop")
        time.sleep(1)  # nothing may start the queued tasks after the cancel
        assert len(read_pids(folder)) == 2
        results = job.results(errors="return")
        assert all(isinstance(result, TaskCancelled) for result in results)
        assert isinstance(job.futures[3].exception(timeout=5), TaskCancelled)

    def test_cancel_also_stops_processes_the_tasks_started(
        self, knot: Callable[..., altus.Knot], folder: Path
    ) -> None:
        job = knot(tasks.run_child_that_sleeps, workers=2).map(
            [(str(folder), x) for x in range(2)], starmap=True, chunksize=1
        )
        wait_until(lambda: len(read_pids(folder)) == 2, what="both child processes to start")
        children = read_pids(folder)
        job.cancel()
        try:
            wait_until(
                lambda: not any(map(is_running, children)), timeout=10, what="the tasks' children"
            )
        finally:
            for pid in filter(is_running, children):
                os.kill(pid, signal.SIGKILL)

    def test_status_counts_running_tasks_and_pending_task_has_no_status(
        self, knot: Callable[..., altus.Knot], folder: Path
    ) -> None:
        job = knot(tasks.record_pid_and_sleep, workers=2).map(
            [(str(folder), x) for x in range(4)], starmap=True, chunksize=1
        )
        try:
            wait_until(lambda: len(read_pids(folder)) >= 2, what="two tasks to start")
            assert job.status() == {
                "pending": 2,
                "running": 2,
                "done": 0,
                "failed": 0,
                "cancelled": 0,
            }
            assert job.state() == "running"
            assert job.task_status(0) is None
            with pytest.raises(AltusError, match="no task 4"):
                job.task_status(4)
        finally:
            job.cancel()

    def test_retry_after_cancel_runs_the_cancelled_tasks(
        self, knot: Callable[..., altus.Knot], folder: Path
    ) -> None:
        job = knot(tasks.sleep_first_time, workers=2).map(
            [(str(folder), x) for x in range(3)], starmap=True, chunksize=1
        )
        wait_until(lambda: len(read_pids(folder)) >= 2, what="two tasks to start")
        job.cancel()
        assert job.wait(timeout=30)
        (folder / "started-2").touch()  # the task never started: let it return at once
        job.retry(failed_only=False)
        assert job.results() == [0, 10, 20]
        assert job.state() == "done"

    def test_retry_reruns_failed_tasks(self, knot: Callable[..., altus.Knot], folder: Path) -> None:
        job = knot(tasks.fail_odd_first_time).map(
            [(str(folder), x) for x in range(6)], starmap=True
        )
        assert job.wait(timeout=60)
        assert [error.task for error in job.errors()] == [1, 3, 5]
        job.retry()
        assert job.results() == [x * 10 for x in range(6)]
        assert job.errors() == []
        assert job.status()["done"] == 6
        assert job.state() == "done"

    def test_attach_after_the_client_was_killed(
        self, client: Callable[[str], subprocess.Popen[str]], store_url: str
    ) -> None:
        process = client("killed")
        assert process.stdout is not None
        job_id = process.stdout.readline().strip()
        assert job_id, process.stderr.read() if process.stderr else ""
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        job = altus.Job.attach(job_id, store=store_url)
        assert job.id == job_id
        assert not job.finished(), "the client died after the job: nothing was tested"
        assert job.wait(timeout=60)
        assert job.results() == [x * 3 for x in range(8)]
        assert recorded_counts(job) == Counter(range(8))

    def test_a_second_handle_on_a_running_job_sees_its_results(
        self, knot: Callable[..., altus.Knot], store_url: str
    ) -> None:
        job = knot(tasks.nap).map([0.3, 0.2, 0.1, 0.0], chunksize=1)
        other = altus.Job.attach(job.id, store=store_url)
        done = concurrent.futures.as_completed(other.futures, timeout=60)
        assert sorted(future.result() for future in done) == [0.0, 0.1, 0.2, 0.3]
        assert other.results() == job.results() == [0.3, 0.2, 0.1, 0.0]

    def test_maps_from_several_threads_at_once(self, knot: Callable[..., altus.Knot]) -> None:
        square = knot(tasks.square)
        with concurrent.futures.ThreadPoolExecutor(4) as threads:
            jobs = list(threads.map(lambda k: square.map(range(k, k + 20)), range(4)))
        assert len({job.id for job in jobs}) == 4
        for k, job in enumerate(jobs):
            assert job.results() == [x * x for x in range(k, k + 20)]

    def test_cancel_and_retry_of_a_finished_job_change_nothing(
        self, knot: Callable[..., altus.Knot]
    ) -> None:
        job = knot(tasks.square).map(range(3))
        assert job.results() == [0, 1, 4]
        job.cancel()
        assert job.retry() is job
        assert job.state() == "done"
        assert job.results() == [0, 1, 4]

    def test_removed_job_is_not_found(
        self, knot: Callable[..., altus.Knot], store_url: str
    ) -> None:
        job = knot(tasks.square).map(range(3))
        job.wait(timeout=60)
        job.remove()
        with pytest.raises(JobNotFound, match=job.id):
            altus.Job.attach(job.id, store=store_url)
        assert altus.jobs(store_url) == []

    def test_jobs_lists_the_job(self, knot: Callable[..., altus.Knot], store_url: str) -> None:
        job = knot(tasks.square, name="listed").map(range(3))
        job.wait(timeout=60)
        [summary] = altus.jobs(store_url)
        assert summary.id == job.id
        assert summary.name == "listed"
        assert summary.n_tasks == 3
        assert summary.state == "done"
        assert summary.counts["done"] == 3

    def test_ten_thousand_tiny_tasks(self, knot: Callable[..., altus.Knot]) -> None:
        started = time.monotonic()
        job = knot(tasks.square).map(range(10_000))
        assert job.results() == [x * x for x in range(10_000)]
        assert time.monotonic() - started < 10
        assert len(list(job.record.status_names())) < 500, "one commit per task is too many"

    # -- bad input and damaged records -------------------------------------------------------

    def test_unpicklable_function_is_named_at_submit(
        self, knot: Callable[..., altus.Knot], store_url: str
    ) -> None:
        lock = threading.Lock()

        def holds_a_lock(x: int) -> object:
            return lock, x

        with pytest.raises(SubmitError, match="holds_a_lock"):
            knot(holds_a_lock).map(range(3))
        assert altus.jobs(store_url) == []

    def test_unpicklable_argument_is_named_at_submit(
        self, knot: Callable[..., altus.Knot], store_url: str
    ) -> None:
        with pytest.raises(SubmitError, match=r"input 2 \(a lock\)"):
            knot(tasks.square).map([1, 2, threading.Lock(), 4])
        assert altus.jobs(store_url) == []

    def test_unpicklable_submit_argument_is_named_at_submit(
        self, knot: Callable[..., altus.Knot]
    ) -> None:
        with pytest.raises(SubmitError, match=r"argument 1 \(a lock\)"):
            knot(tasks.scaled_sum).submit(1, threading.Lock())
        with pytest.raises(SubmitError, match="keyword argument 'scale'"):
            knot(tasks.scaled_sum).submit(1, 2, scale=threading.Lock())

    def test_unpicklable_function_is_named_at_submit_too(
        self, knot: Callable[..., altus.Knot]
    ) -> None:
        lock = threading.Lock()

        def holds_a_lock(x: int) -> object:
            return lock, x

        try:
            future = knot(holds_a_lock).submit(1)
        except SubmitError as exc:
            error: BaseException | None = exc
        else:
            assert future.done(), "submit accepted an unpicklable function without an error"
            error = future.exception()
        assert isinstance(error, SubmitError)
        assert "holds_a_lock" in str(error)

    def test_unknown_job_id_is_named(self, store_url: str) -> None:
        with pytest.raises(JobNotFound, match="no-such-job-1234"):
            altus.Job.attach("no-such-job-1234", store=store_url)

    def test_truncated_spec_is_a_record_error_naming_the_file(
        self, knot: Callable[..., altus.Knot], store_url: str
    ) -> None:
        job = knot(tasks.square).map(range(3))
        job.wait(timeout=60)
        spec = job.record.store.read("spec.json")
        job.record.store.write("spec.json", spec[: len(spec) // 2])
        with pytest.raises(RecordError, match=r"spec\.json") as caught:
            altus.Job.attach(job.id, store=store_url)
        assert not isinstance(caught.value, JobNotFound)
        [listed] = altus.jobs(store_url)  # listed, not hidden: named as damaged
        assert (listed.id, listed.state) == (job.id, "damaged")
        assert "spec.json" in listed.damaged[0]

    def test_deleted_results_file_is_a_record_error_naming_the_file(
        self, knot: Callable[..., altus.Knot], store_url: str
    ) -> None:
        job = knot(tasks.square).map(range(3), chunksize=3)
        job.wait(timeout=60)
        [results_file] = job.record.store.children("results")
        job.record.store.delete(f"results/{results_file}")
        with pytest.raises(RecordError, match=f"results/{results_file}"):
            altus.Job.attach(job.id, store=store_url).results()

    def test_deleted_inputs_file_is_a_record_error_naming_the_file(
        self, knot: Callable[..., altus.Knot], folder: Path
    ) -> None:
        job = knot(tasks.wait_for_go_on_zero, workers=1).map(
            [(str(folder), x) for x in range(3)], starmap=True, chunksize=1
        )
        job.record.store.delete("inputs/000001.pkl")
        (folder / "go").touch()
        assert job.wait(timeout=60)
        with pytest.raises(RecordError, match=r"inputs/000001\.pkl"):
            job.results()
        [error] = job.errors()
        assert error.task == 1
        assert "inputs/000001.pkl" in error.message
        assert job.results(errors="skip") == [0, 2]

    # -- processes left behind ----------------------------------------------------------------

    def test_no_worker_process_outlives_its_client(
        self, client: Callable[[str], subprocess.Popen[str]], store_url: str
    ) -> None:
        process = client("finish")
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        job = altus.Job.attach(stdout.strip(), store=store_url)
        pids = set()
        for task in range(4):
            status = job.task_status(task)
            assert status is not None
            pids.add(status["pid"])
        wait_until(lambda: not any(map(is_running, pids)), timeout=15, what="workers to exit")

    def test_ctrl_c_in_the_client_cancels_the_job(
        self, client: Callable[[str], subprocess.Popen[str]], store_url: str, folder: Path
    ) -> None:
        process = client("interrupt")
        assert process.stdout is not None
        job_id = process.stdout.readline().strip()
        assert job_id, process.stderr.read() if process.stderr else ""
        wait_until(lambda: len(read_pids(folder)) >= 1, what="a task to start")
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        assert process.returncode != 0
        job = altus.Job.attach(job_id, store=store_url)
        wait_until(lambda: job.state() == "cancelled", timeout=15, what="the job to be cancelled")
        pids = read_pids(folder)
        wait_until(lambda: not any(map(is_running, pids)), timeout=15, what="tasks to stop")
        assert isinstance(job.results(errors="return")[0], TaskCancelled)

    # -- removal and retry against the record (issue 12, items 5 and 6) ----------------------

    def test_remove_force_of_a_running_job_leaves_nothing_and_tells_a_waiting_handle(
        self, knot: Callable[..., altus.Knot], store_url: str
    ) -> None:
        remove_a_running_job(knot(tasks.nap, workers=2), store_url)

    def test_two_retries_at_once_start_one_round_and_rerun_each_failed_task_once(
        self, knot: Callable[..., altus.Knot], store_url: str, folder: Path
    ) -> None:
        from altus.errors import JobBusy

        job = knot(tasks.count_runs_fail_odd_first, workers=2).map(
            [(str(folder), x) for x in range(6)], starmap=True, chunksize=1
        )
        assert job.wait(timeout=60)
        assert [error.task for error in job.errors()] == [1, 3, 5]
        handles = [altus.Job.attach(job.id, store=store_url) for _ in range(2)]
        start = threading.Barrier(2)

        def retry(handle: altus.Job) -> BaseException | None:
            start.wait(timeout=30)
            try:
                handle.retry()
            except AltusError as exc:
                return exc
            return None

        with concurrent.futures.ThreadPoolExecutor(2) as threads:
            outcomes = list(threads.map(retry, handles))
        (folder / "go").touch()  # the reruns may finish now
        refused = [error for error in outcomes if error is not None]
        assert len(refused) == 1, outcomes
        assert isinstance(refused[0], JobBusy)
        assert f"round 1 of job {job.id} is still running" in str(refused[0]), refused
        assert job.record.rounds() == [0, 1]
        assert job.results() == [x * 10 for x in range(6)]
        runs = [len((folder / f"runs-{x}").read_text().splitlines()) for x in range(6)]
        assert runs == [1, 2, 1, 2, 1, 2]
