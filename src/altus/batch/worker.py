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
from collections.abc import Callable, Iterator, Sequence
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

    def chunk_ending(self) -> None:
        """The chunk's last task ran; only its last batch is left to commit."""


class _Silent:
    def task_started(self, task: int, wall_time: float) -> None:
        pass

    def committed(self, batch: str, n_tasks: int) -> None:
        pass

    def chunk_ending(self) -> None:
        pass


class _WatchedStream(io.TextIOWrapper):
    """``sys.stdout``/``sys.stderr`` of a worker: unbuffered, and it notes that it was used."""

    printed: list[bool]
    """Shared by both streams, so the task loop checks one flag."""

    def write(self, text: str) -> int:
        self.printed[0] = True
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
        self.printed = [False]
        """True once Python code printed; the task loop reads and resets it."""
        sys.stdout, sys.stderr = _watched(1, self.printed), _watched(2, self.printed)

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


def _watched(fd: int, printed: list[bool]) -> _WatchedStream:
    raw = io.FileIO(fd, "w", closefd=False)
    stream = _WatchedStream(raw, encoding="utf-8", errors="backslashreplace", write_through=True)
    stream.printed = printed
    return stream


_SHORT = 0.001
"""Tasks shorter than this (seconds) skip the costlier per-task measurements."""


class PeakMemory:
    """The process's resident-memory high-water mark, which ``reset`` lowers again (Linux).

    Reading and resetting the mark costs a few microseconds, as much as a tiny
    task itself, so it is done after each task that ran for a millisecond or
    more, and once per batch for the short ones: they share the mark of the
    batch, an upper bound.
    """

    def __init__(self) -> None:
        try:
            self._clear = os.open("/proc/self/clear_refs", os.O_WRONLY)
        except OSError:
            self._clear = -1
        self.reset()

    def reset(self) -> int:
        """The peak since the last reset, in bytes; starts a new measurement."""
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
    """The tasks run since the last commit: ``tasks[first:first + len(values)]``."""

    first: int
    starts: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)
    peaks: dict[int, int] = field(default_factory=dict)
    """position → peak memory, for the tasks measured one by one."""
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)
    output: dict[str, list[int]] = field(default_factory=dict)
    logs: list[tuple[int, int, int, int, int]] = field(default_factory=list)


class TaskRunner:
    """Runs tasks of one record; kept across chunks so the function loads once."""

    def __init__(
        self,
        record: JobRecord,
        capture: OutputCapture,
        monitor: Monitor,
        memory: PeakMemory | None = None,
    ) -> None:
        self.record = record
        self.capture = capture
        self.monitor = monitor
        self.memory = memory or PeakMemory()
        """One per process: a long-lived worker passes the same one to every runner."""
        self._call: Callable[[Any], Any] | None = None
        self.calling = record.spec.calling
        self.timeout = record.spec.timeout
        self._inputs: tuple[int, Sequence[Any]] = (0, [])
        self._unreadable = False
        """Whether an input chunk could not be read (its tasks then fail one by one)."""
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
        self._marks = self.capture.mark()
        pending = zip(tasks, self._items(tasks), strict=True)
        every = 0.0 if attempt else FLUSH_SECONDS  # after a crash, commit task by task
        done = seq = 0
        started = time.perf_counter()
        while done < len(tasks):
            batch = _Batch(first=done)
            self._run_batch(pending, batch, time.perf_counter() + every)
            if done + len(batch.values) == len(tasks):
                self.monitor.chunk_ending()
            elif not claimed:
                self.record.claim(round_, chunk, attempt)  # it outlasts a flush: show it running
                claimed = True
            done += self._flush(BatchName(round_, chunk, attempt, f"b{seq}"), tasks, batch)
            seq += 1
            if done < len(tasks) and self.record.is_cancelled(round_):
                break
        self._last_chunk_seconds = time.perf_counter() - started
        return done

    def _items(self, tasks: Sequence[int]) -> Sequence[Any]:
        """The inputs of ``tasks``, in order, reading each input chunk once."""
        bounds = self.record.spec.bounds
        if isinstance(tasks, range) and tasks:
            chunk = self.record.input_chunk_of(tasks[0])
            if tasks[-1] < bounds[chunk + 1]:  # the usual case: one input chunk
                items = self._input_chunk(chunk)
                return items[tasks[0] - bounds[chunk] : tasks[-1] + 1 - bounds[chunk]]
        found = []
        for task in tasks:
            chunk = self.record.input_chunk_of(task)
            found.append(self._input_chunk(chunk)[task - bounds[chunk]])
        return found

    def _input_chunk(self, chunk: int) -> Sequence[Any]:
        """One chunk's inputs; if they cannot be read, each of its tasks fails with why."""
        if self._inputs[0] != chunk or not self._inputs[1]:
            bounds = self.record.spec.bounds
            try:
                items = cloudpickle.loads(self.record.input_blob(chunk))
            except Exception as exc:
                items = [_Unreadable(exc)] * (bounds[chunk + 1] - bounds[chunk])
                self._unreadable = True
            self._inputs = (chunk, items)
        return self._inputs[1]

    @property
    def call(self) -> Callable[[Any], Any]:
        """``item -> result``; the function is loaded on the first task, so a rerun with
        nothing left to do never imports it."""
        if self._call is None:
            function = cloudpickle.loads(self.record.function_blob())
            if self.calling == "item":
                call = function
            elif self.calling == "star":
                call = lambda item: function(*item)  # noqa: E731
            else:
                call = lambda item: function(*item[0], **item[1])  # noqa: E731
            self._call = _with_alarm(call, self.timeout) if self.timeout else call
        return self._call

    def _checked_call(self) -> Callable[[Any], Any]:
        """``call``, or, when the function or some inputs cannot be read, a slower one
        that raises why inside each task concerned, so the task records it."""
        try:
            call = self.call
        except Exception:
            return lambda item: self.call(item)
        if not self._unreadable:
            return call

        def checked(item: Any) -> Any:
            if isinstance(item, _Unreadable):
                raise item.error()
            return call(item)

        return checked

    def _run_batch(self, pending: Iterator[tuple[int, Any]], batch: _Batch, until: float) -> None:
        """Run tasks from ``pending`` into ``batch`` until the clock passes ``until``.

        Whatever a task raises is its own outcome, ``KeyboardInterrupt`` and
        ``SystemExit`` too (as ``ProcessPoolExecutor`` records them): it is
        recorded with its traceback and the worker goes on with the next task.

        This loop is the whole per-task cost of a tiny task, so it does only
        what every task needs; the rest happens per batch or in ``_measure``.
        """
        perf, epoch, started = time.perf_counter, self._epoch, self.monitor.task_started
        call, printed = self._checked_call(), self.capture.printed
        starts, durations, values = batch.starts, batch.durations, batch.values
        for task, item in pending:
            start = perf()
            started(task, epoch + start)
            try:
                value = call(item)
            except BaseException as exc:  # the task's own, whatever it is: recorded, not raised
                value = self._failed(task, exc, batch)
            end = perf()
            starts.append(start)
            durations.append(end - start)
            values.append(value)
            if end - start >= _SHORT or printed[0]:
                self._measure(task, batch)
            if end >= until:
                return

    def _failed(self, task: int, exc: BaseException, batch: _Batch) -> Any:
        """Record a task's error; returns what goes into the results list for it."""
        if isinstance(exc, _Alarm):
            exc = TaskTimeout(f"task {task} ran past the timeout of {self.timeout:g} s", task=task)
            batch.failures[str(task)] = _failure(exc, "timeout", "")
        else:
            batch.failures[str(task)] = _failure(exc, "raised", _remote_traceback(exc))
        return _exception_blob(exc)

    def _measure(self, task: int, batch: _Batch) -> None:
        """Slice the output of a task that printed or ran long, and take its peak memory."""
        self.capture.printed[0] = False
        (out0, err0), (out1, err1) = self._marks, self.capture.mark()
        if (out1, err1) != (out0, err0):
            batch.output[str(task)] = [out1 - out0, err1 - err0]
            batch.logs.append((task, out0, out1, err0, err1))
            self._marks = (out1, err1)
        batch.peaks[len(batch.values) - 1] = self.memory.reset()

    def _flush(self, name: BatchName, tasks: Sequence[int], batch: _Batch) -> int:
        n = len(batch.values)
        if not n:
            return 0
        batch_tasks = tasks[batch.first : batch.first + n]
        self._log_stray_output(batch_tasks[-1], batch)
        for task, out0, out1, err0, err1 in batch.logs:
            if out1 > out0:
                self.record.write_log(task, "out", self.capture.read(0, out0, out1))
            if err1 > err0:
                self.record.write_log(task, "err", self.capture.read(1, err0, err1))
        if batch.logs:
            self.capture.reset()
            self._marks = (0, 0)
        shared_peak = self.memory.reset()
        commit = Commit(
            tasks=batch_tasks,
            clock=self._epoch,
            start=batch.starts,
            duration=batch.durations,
            peak_memory=[batch.peaks.get(i, shared_peak) for i in range(n)]
            if batch.peaks
            else [shared_peak] * n,
            failures=batch.failures,
            output=batch.output,
        )
        results = _dumps_values(batch.values, commit)
        self.record.commit(name, commit, results)
        self.monitor.committed(str(name), n)
        return n

    def _log_stray_output(self, last: int, batch: _Batch) -> None:
        """Short tasks wrote below Python since the last slice: log it with the batch's last task."""
        (out0, err0), (out1, err1) = self._marks, self.capture.mark()
        if (out1, err1) == (out0, err0):
            return
        if batch.logs and batch.logs[-1][0] == last:  # extend its own slice
            _task, out0, _, err0, _ = batch.logs.pop()
        batch.logs.append((last, out0, out1, err0, err1))
        batch.output[str(last)] = [out1 - out0, err1 - err0]
        self._marks = (out1, err1)


class _Unreadable:
    """Stands in for the inputs of a chunk whose file could not be read."""

    def __init__(self, error: Exception) -> None:
        self._error = error

    def error(self) -> Exception:
        """A fresh copy of the error, so each task raises its own."""
        try:
            return type(self._error)(*self._error.args)
        except Exception:
            return self._error


def _with_alarm(call: Callable[[Any], Any], timeout: float) -> Callable[[Any], Any]:
    """``call`` with a SIGALRM after ``timeout`` seconds, which raises ``_Alarm`` in the task."""

    def alarmed(item: Any) -> Any:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            return call(item)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    return alarmed


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
