"""The worker: run one chunk of a job record's tasks and commit the outcomes.

Every backend does the same thing N times: start this module on some host
that can reach the record's store::

    python -m altus.batch.worker RECORD_URL CHUNK [--round R] [--attempt A]

A worker reads the function and its chunk of inputs, runs the tasks in order,
and commits what they returned (or raised) in batches (see ``record.py``).
On a later attempt it first skips the tasks already recorded, so rerunning a
chunk after a crash neither loses nor duplicates a result.

Each task's stdout and stderr are captured at the file-descriptor level, so
output of C libraries and subprocesses lands in the task's log too; the
per-task cost is two ``lseek`` calls.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import pickle
import resource
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

import cloudpickle

from altus.batch.record import BatchName, Commit, JobRecord
from altus.errors import TaskTimeout

__all__ = ["FLUSH_SECONDS", "Monitor", "TaskRunner", "main", "run_chunk"]

FLUSH_SECONDS = 0.2
"""A worker commits finished tasks at least this often (and at the end of a chunk)."""

CLAIM_SECONDS = 0.05
"""A chunk is claimed (shown as running) at its start when the last one took this long;
a chunk of quicker tasks is claimed at its first commit, if it lasts that long."""
FLUSH_TASKS = 100_000
"""…and as soon as this many tasks are waiting."""


class Monitor(Protocol):
    """What a backend's worker loop may want to hear about, cheaply."""

    def task_started(self, task: int, wall_time: float) -> None: ...

    def committed(self, batch: str, n_tasks: int) -> None: ...


class _Silent:
    def task_started(self, task: int, wall_time: float) -> None:
        pass

    def committed(self, batch: str, n_tasks: int) -> None:
        pass


class _WatchedStream(io.TextIOWrapper):
    """``sys.stdout``/``sys.stderr`` of a worker: unbuffered, and it notes that it was used."""

    used = False

    def write(self, text: str) -> int:
        self.used = True
        return super().write(text)


class OutputCapture:
    """Send fd 1 and 2 to two temp files and cut them into per-task slices.

    Slicing costs two ``lseek`` calls, as much as a tiny task, so a task is
    sliced on its own only if it printed through Python or ran for a
    millisecond or more; output that a shorter task writes below Python (from
    C) is logged with the next task that is sliced.
    """

    def __init__(self) -> None:
        self.console = os.dup(2)
        sys.stdout.flush()
        sys.stderr.flush()
        self.files = [tempfile.TemporaryFile(prefix="altus-out-") for _ in range(2)]  # noqa: SIM115
        for target, file in zip((1, 2), self.files, strict=True):
            os.dup2(file.fileno(), target)
        self.streams = [_watched(1), _watched(2)]
        sys.stdout, sys.stderr = self.streams

    def used(self) -> bool:
        """Whether Python code printed since the last call."""
        out, err = self.streams
        if out.used or err.used:
            out.used = err.used = False
            return True
        return False

    def mark(self) -> tuple[int, int]:
        return os.lseek(1, 0, os.SEEK_CUR), os.lseek(2, 0, os.SEEK_CUR)

    def read(self, stream: int, start: int, end: int) -> bytes:
        return os.pread(stream + 1, end - start, start)

    def reset(self) -> None:
        """Empty both files once their slices have been saved."""
        for target in (1, 2):
            os.ftruncate(target, 0)
            os.lseek(target, 0, os.SEEK_SET)

    def say(self, line: str) -> None:
        """Print to the worker's own stderr, not into a task's log."""
        os.write(self.console, line.encode() + b"\n")


def _watched(fd: int) -> _WatchedStream:
    raw = io.FileIO(fd, "w", closefd=False)
    return _WatchedStream(raw, encoding="utf-8", errors="backslashreplace", write_through=True)


_SHORT = 0.001
"""Tasks shorter than this (seconds) share the costlier per-task measurements."""


class PeakMemory:
    """Peak resident memory of a task, from the process's high-water mark (Linux).

    Reading and resetting the mark costs a few microseconds, as much as a tiny
    task itself, so it is done only after tasks that ran for a millisecond or
    more: a short task reports the mark since the last reset, an upper bound
    that includes the tasks just before it.
    """

    def __init__(self) -> None:
        try:
            self._clear = os.open("/proc/self/clear_refs", os.O_WRONLY)
        except OSError:
            self._clear = -1
        self._last = self._read_and_reset()
        self._short_run = 0

    def after(self, duration: float) -> int:
        """The peak for a task that just ran ``duration`` seconds."""
        if duration < _SHORT and self._short_run < 1000:
            self._short_run += 1
            return self._last
        self._short_run = 0
        self._last = self._read_and_reset()
        return self._last

    def _read_and_reset(self) -> int:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if self._clear >= 0:
            try:
                os.write(self._clear, b"5")
            except OSError:
                self._clear = -1
        return peak


class _Alarm(BaseException):
    """Raised inside a task by SIGALRM; a BaseException so user code rarely swallows it."""


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise _Alarm


@dataclass
class _Batch:
    commit: Commit = field(default_factory=Commit)
    values: list[Any] = field(default_factory=list)
    logs: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    last: int = -1


class TaskRunner:
    """Runs tasks of one record; kept across chunks so the function loads once."""

    def __init__(self, record: JobRecord, capture: OutputCapture, monitor: Monitor) -> None:
        self.record = record
        self.capture = capture
        self.monitor = monitor
        self.memory = PeakMemory()
        self._call: Callable[[Any], Any] | None = None
        self.calling = record.spec.calling
        self.timeout = record.spec.timeout
        self._current: tuple[int, list[Any]] = (0, [])
        self._epoch = time.time() - time.perf_counter()
        self._last_chunk_seconds = math.inf  # unknown: the first chunk is claimed

    def run_chunk(self, round_: int, chunk: int, attempt: int) -> int:
        """Run what is left of a chunk; returns how many tasks were committed."""
        tasks: Sequence[int] = self.record.chunk_tasks(round_, chunk)
        if attempt > 0:
            recorded = self.record.recorded_tasks(round_)
            tasks = [task for task in tasks if task not in recorded]
        claimed = attempt > 0 or self._last_chunk_seconds >= CLAIM_SECONDS
        if claimed:
            self.record.claim(round_, chunk, attempt)
        self._current = (0, [])
        self._marks = self.capture.mark()
        done = 0
        seq = 0
        batch = _Batch()
        started = last_flush = time.perf_counter()
        every = 0.0 if attempt else FLUSH_SECONDS  # after a crash, commit task by task
        for task in tasks:
            self._run_one(task, batch)
            now = time.perf_counter()
            if now - last_flush >= every or len(batch.values) >= FLUSH_TASKS:
                if not claimed:
                    self.record.claim(round_, chunk, attempt)
                    claimed = True
                done += self._flush(BatchName(round_, chunk, attempt, f"b{seq}"), batch)
                seq, batch, last_flush = seq + 1, _Batch(), now
                if self.record.is_cancelled(round_):
                    return done
        if batch.commit.tasks:
            done += self._flush(BatchName(round_, chunk, attempt, f"b{seq}"), batch)
        self._last_chunk_seconds = time.perf_counter() - started
        return done

    def _item(self, task: int) -> Any:
        first, items = self._current
        if not first <= task < first + len(items):
            chunk = self.record.input_chunk_of(task)
            first = self.record.spec.bounds[chunk]
            items = cloudpickle.loads(self.record.input_blob(chunk))
            self._current = (first, items)
        return items[task - first]

    @property
    def call(self) -> Callable[[Any], Any]:
        """``item -> result``; the function is loaded on the first task, so a rerun with
        nothing left to do never imports it."""
        if self._call is None:
            function = cloudpickle.loads(self.record.function_blob())
            if self.calling == "item":
                self._call = function
            elif self.calling == "star":
                self._call = lambda item: function(*item)
            else:
                self._call = lambda item: function(*item[0], **item[1])
        return self._call

    def _run_one(self, task: int, batch: _Batch) -> None:
        out0, err0 = self._marks
        start = time.perf_counter()
        self.monitor.task_started(task, self._epoch + start)
        failure: dict[str, Any] | None = None
        try:
            if self.timeout:
                signal.setitimer(signal.ITIMER_REAL, self.timeout)
            try:
                value = self.call(self._item(task))
            finally:
                if self.timeout:
                    signal.setitimer(signal.ITIMER_REAL, 0)
        except _Alarm:
            value = TaskTimeout(
                f"task {task} ran past the timeout of {self.timeout:g} s", task=task
            )
            failure = _failure(value, "timeout", "")
        except (Exception, SystemExit) as exc:  # the task's own error: recorded, not raised
            value = exc
            failure = _failure(exc, "raised", _remote_traceback(exc))
        duration = time.perf_counter() - start
        if duration >= _SHORT or self.capture.used():
            out1, err1 = self._marks = self.capture.mark()
        else:
            out1, err1 = out0, err0
        commit = batch.commit
        if failure is not None:
            commit.failures[str(task)] = failure
            value = _exception_blob(value)
        commit.tasks.append(task)
        commit.start_us.append(int((self._epoch + start) * 1e6))
        commit.duration_us.append(int(duration * 1e6))
        commit.peak_memory.append(self.memory.after(duration))
        if out1 > out0 or err1 > err0:
            commit.output[str(task)] = [out1 - out0, err1 - err0]
            batch.logs.append((task, out0, out1, err0, err1))
        batch.values.append(value)
        batch.last = task

    def _flush(self, name: BatchName, batch: _Batch) -> int:
        self._log_stray_output(batch)
        for task, out0, out1, err0, err1 in batch.logs:
            if out1 > out0:
                self.record.write_log(task, "out", self.capture.read(0, out0, out1))
            if err1 > err0:
                self.record.write_log(task, "err", self.capture.read(1, err0, err1))
        if batch.logs:
            self.capture.reset()
            self._marks = (0, 0)
        results = _dumps_values(batch.values, batch.commit)
        self.record.commit(name, batch.commit, results)
        self.monitor.committed(str(name), len(batch.commit))
        return len(batch.commit)

    def _log_stray_output(self, batch: _Batch) -> None:
        """Short tasks wrote below Python since the last slice: log it with the batch's last task."""
        (out0, err0), (out1, err1) = self._marks, self.capture.mark()
        if (out1, err1) == (out0, err0):
            return
        if batch.logs and batch.logs[-1][0] == batch.last:  # extend its own slice
            _task, out0, _, err0, _ = batch.logs.pop()
        batch.logs.append((batch.last, out0, out1, err0, err1))
        batch.commit.output[str(batch.last)] = [out1 - out0, err1 - err0]
        self._marks = (out1, err1)


def _failure(exc: BaseException, reason: str, remote_tb: str) -> dict[str, Any]:
    return {
        "exit_reason": reason,
        "error_type": _qualname(type(exc)),
        "message": str(exc.args[0]) if isinstance(exc, TaskTimeout) else str(exc),
        "traceback": remote_tb,
    }


def _qualname(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _remote_traceback(exc: BaseException) -> str:
    """The traceback from the user's function down, without the worker's own frames."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _exception_blob(exc: Any) -> bytes | None:
    """The exception pickled on its own, so that a class the client cannot import
    spoils only this task's error, not the batch; None if it cannot be pickled."""
    try:
        return bytes(cloudpickle.dumps(exc))
    except Exception:
        return None


def _dumps_values(values: list[Any], commit: Commit) -> bytes:
    """One pickle for the whole batch; a value that cannot be pickled fails its task."""
    try:
        return pickle.dumps(values, protocol=5)
    except Exception:
        pass
    for position, value in enumerate(values):
        try:
            cloudpickle.dumps(value, protocol=5)
        except Exception as exc:
            task = commit.tasks[position]
            values[position] = None
            commit.failures[str(task)] = {
                "exit_reason": "unpicklable result",
                "error_type": "altus.errors.TaskFailed",
                "message": f"the result of task {task} ({type(value).__name__}) "
                f"cannot be pickled: {exc}",
                "traceback": "",
            }
    return bytes(cloudpickle.dumps(values, protocol=5))


def run_chunk(
    record: JobRecord, round_: int, chunk: int, attempt: int = 0, monitor: Monitor | None = None
) -> int:
    """Run one chunk in this process with output capture; the one-shot worker's core."""
    capture = OutputCapture()
    runner = TaskRunner(record, capture, monitor or _Silent())
    return runner.run_chunk(round_, chunk, attempt)


def install_alarm() -> None:
    signal.signal(signal.SIGALRM, _on_alarm)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m altus.batch.worker",
        description="Run one chunk of an altus job record and commit its results.",
    )
    parser.add_argument("record", help="URL of the job record (its folder in a store)")
    parser.add_argument("chunk", type=int)
    parser.add_argument("--round", type=int, default=0, dest="round_")
    parser.add_argument("--attempt", type=int, default=0)
    args = parser.parse_args(argv)
    install_alarm()
    record = JobRecord.open(args.record)
    run_chunk(record, args.round_, args.chunk, args.attempt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
