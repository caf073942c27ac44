"""``Job``: a handle on one map, rebuilt from its record alone.

A handle keeps no state the record does not have: it reads the status files
it has not seen yet, keeps one byte per task (pending, done, failed), and
reads results only when asked. That is why ``Job.attach`` works from any
process, days later, and why counting a 100,000-task job loads no result.
"""

from __future__ import annotations

import contextlib
import pickle
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any, Literal

from altus.batch.backends import Backend, Launch, Resources, get_backend
from altus.batch.record import BatchName, BatchStatus, JobRecord, JobSpec, job_ids
from altus.batch.task_table import DAMAGED, DONE, FAILED, PENDING, TaskTable
from altus.config import load_settings
from altus.errors import (
    AltusError,
    JobBusy,
    JobLost,
    JobNotFound,
    JobRemoved,
    RecordDamaged,
    RecordError,
    StoreError,
    TaskCancelled,
    TaskError,
    TaskFailed,
    TaskTimeout,
    WorkerDied,
)
from altus.storage import Store, open_store

__all__ = ["Job", "JobSummary", "TaskErrorInfo", "TaskLogs", "jobs"]

LIVENESS_CHECK_SECONDS = 1.0
"""How often a waiting handle asks the backend whether anything still runs the job."""
STATES = ("pending", "running", "done", "failed", "cancelled")
STOP_TIMEOUT = 30.0
"""Seconds a retry or a removal waits for the workers of a cancelled round to stop."""
LAUNCH_GRACE = 120.0
"""Seconds a retry round may take from its creation to its launch before it counts as lost."""
_TASK_ERRORS: dict[str, type[TaskError]] = {
    "altus.errors.TaskTimeout": TaskTimeout,
    "altus.errors.WorkerDied": WorkerDied,
    "altus.errors.TaskFailed": TaskFailed,
}


@dataclass(frozen=True)
class TaskErrorInfo:
    """Why one task has no result."""

    task: int
    error_type: str
    message: str
    traceback: str
    exit_reason: str


@dataclass(frozen=True)
class TaskLogs:
    """What one task printed (its last attempt)."""

    task: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class JobSummary:
    """One line of ``altus.jobs()``."""

    id: str
    name: str
    function: str
    backend: str
    created: float
    host: str
    n_tasks: int
    counts: dict[str, int]
    state: str
    damaged: list[str] = field(default_factory=list)
    """One line per file of the record that cannot be read, naming it."""


class RemoteTraceback(Exception):
    """Chained to a re-raised task exception: the traceback as the worker saw it."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n\n" + self.text


class Job:
    """A handle on one map: its status, results, errors and logs, from its record."""

    def __init__(self, record: JobRecord, backend: Backend | None = None) -> None:
        self._record = record
        self._backend = backend
        self._table = TaskTable(record)
        self._lock = threading.RLock()
        self._futures: list[Future[Any]] | None = None
        self._watcher: threading.Thread | None = None
        self._loaded: tuple[str, list[Any] | RecordDamaged] | None = None
        self._status_cache: tuple[str, BatchStatus] | None = None
        self._next_liveness_check = 0.0
        self._removed: JobRemoved | None = None
        self._acknowledged = 0
        """How many batches the table had at the last ``sync``: results up to there are durable."""
        self._table.load_rounds()
        self._table.refresh()

    # -- identity -------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._record.id

    @property
    def spec(self) -> JobSpec:
        return self._record.spec

    @property
    def record(self) -> JobRecord:
        return self._record

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = get_backend(self.spec.backend)
        return self._backend

    def __len__(self) -> int:
        return self.spec.n_tasks

    def __repr__(self) -> str:
        return f"<altus.Job {self.id} {self.state()} {self.status()}>"

    @classmethod
    def attach(cls, job_id: str, store: str | Store | None = None) -> Job:
        """The handle of an existing job, from its record alone."""
        root = open_store(store or load_settings().default_store_url)
        return cls(JobRecord.find(root, job_id))

    # -- state ------------------------------------------------------------------------------

    def refresh(self) -> list[int]:
        """Read what is new in the record; raises ``JobRemoved`` once the job is being removed
        (a removal cancels it first: a newly cancelled round is when to look)."""
        with self._lock:
            if self._removed is not None:
                raise self._removed
            cancelled = self._table.cancelled
            try:
                resolved = self._table.refresh()
            except RecordError as exc:  # a status file listed, then removed
                raise self._explained(exc) from exc
            if self._table.cancelled - cancelled:
                removed = self._removed_error()
                if removed is not None:
                    raise removed
            return resolved

    def _removed_error(self) -> JobRemoved | None:
        """``JobRemoved`` if the record is removed or being removed, else None."""
        if self._removed is None and self._record.is_removed():
            root = self._record.url.removesuffix(f"/{self.id}")
            self._removed = JobRemoved(f"job {self.id} was removed from {root}")
        return self._removed

    def _explained(self, error: Exception) -> Exception:
        """``JobRemoved`` when the record is gone, else ``error`` as it was."""
        with contextlib.suppress(Exception):
            return self._removed_error() or error
        return error

    def status(self) -> dict[str, int]:
        """How many tasks are pending, running, done, failed and cancelled."""
        self.refresh()
        table = self._table
        cancelled = table.n_cancelled()
        waiting = table.unresolved - cancelled
        running = min(waiting, self._running_chunks()) if waiting else 0
        return {
            "pending": waiting - running,
            "running": running,
            "done": table.done,
            "failed": table.failed,
            "cancelled": cancelled,
        }

    def _running_chunks(self) -> int:
        """Chunks a worker has claimed whose tasks are not all recorded."""
        codes, rounds = self._table.codes, self._table.round
        running = 0
        for round_, chunk in self._record.claimed_chunks():
            tasks = self._table.chunk_tasks(round_, chunk)
            if any(codes[task] == PENDING and rounds[task] == round_ for task in tasks):
                running += 1
        return running

    def finished(self) -> bool:
        """Every task is done, failed or cancelled, in the newest round the record has."""
        self.refresh()
        if not self._table.finished():
            return False
        with self._lock:  # another handle may have started a round: look once at the end
            rounds = len(self._table.rounds)
            self._table.load_rounds()
            if len(self._table.rounds) == rounds:
                return True
        self.refresh()
        return self._table.finished()

    def state(self) -> str:
        """``running``, ``done``, ``failed`` (finished with failures), ``cancelled``, ``lost``
        or ``damaged`` (finished, but files of the record cannot be read: see ``damaged``)."""
        if self.finished():
            if self._table.damaged:
                return "damaged"
            if self._table.n_cancelled():
                return "cancelled"
            return "failed" if self._table.failed else "done"
        return "running" if self.backend.is_active(self._record) else "lost"

    def wait(self, timeout: float | None = None, *, progress: bool = False) -> bool:
        """Block until every task is finished; False if ``timeout`` seconds passed first.

        ``progress=True`` shows a progress bar (and needs no ``timeout``); unlike
        ``gather`` it raises nothing when tasks fail.
        """
        if progress:
            self._wait_with_progress()
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.01
        try:
            while not self.finished():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if not self._still_running():
                    raise self._lost()
                pause = min(pause * 1.5, 0.5)
                self.backend.wait_for_change(self._record, min(pause, remaining or pause))
        except KeyboardInterrupt:
            self.cancel()
            raise
        return True

    def _still_running(self) -> bool:
        """False once nothing runs the unfinished tasks; asks the backend at most once a second."""
        now = time.monotonic()
        if now < self._next_liveness_check:
            return True
        self._next_liveness_check = now + LIVENESS_CHECK_SECONDS
        active = self.backend.is_active(self._record)
        return active or self.finished() or self._starting(self._table.rounds[-1])

    def _starting(self, round_: int) -> bool:
        """A retry round created but not launched yet (not for long: then it is lost)."""
        if self._record.is_launched(round_) or self._record.is_cancelled(round_):
            return False
        return time.time() - self._record.round_created(round_) < LAUNCH_GRACE

    def _lost(self) -> JobLost | JobRemoved:
        removed = self._removed_error()
        if removed is not None:
            return removed
        missing = self._table.unresolved - self._table.n_cancelled()
        why = self.backend.why_inactive(self._record) or f"the {self.spec.backend} workers are gone"
        return JobLost(
            f"job {self.id}: {missing} task(s) have no result and nothing is running them "
            f"({why}); job.retry(failed_only=False) runs them"
        )

    # -- results ----------------------------------------------------------------------------

    def results(self, errors: Literal["raise", "return", "skip"] = "raise") -> list[Any]:
        """Every task's result in input order; a failed task raises, returns its error or is left out."""
        if errors not in ("raise", "return", "skip"):
            raise ValueError("errors must be 'raise', 'return' or 'skip'")
        self.wait()
        self._acknowledge()
        table = self._table
        if table.done == self.spec.n_tasks and len(table.ranges) == len(table.batches):
            with contextlib.suppress(RecordDamaged):  # then task by task, naming the file
                return self._values_by_batch()
        return list(self.iter_results(errors))

    def _values_by_batch(self) -> list[Any]:
        """Every task done, every batch a fresh range: whole batches, in order, no call per task."""
        values: list[Any] = []
        for _first, index in sorted(self._table.ranges):
            values.extend(self._batch_values(self._table.batches[index]))
        return values

    def iter_results(self, errors: str = "raise") -> Iterator[Any]:
        """Results in input order, read one batch at a time (the job must be finished)."""
        self._acknowledge()
        table = self._table
        codes, batch, position = table.codes, table.batch, table.position
        index, values = -1, None
        for task in range(self.spec.n_tasks):
            if codes[task] == DONE:  # the fast path: no call per task
                if batch[task] != index:
                    index, values = batch[task], self._readable_values(table.batches[batch[task]])
                if values is not None:
                    yield values[position[task]]
                    continue
            try:
                yield self.result(task)
            except Exception as exc:  # the task's error, or a TaskError standing in for it
                if errors == "raise":
                    raise
                if errors == "return":
                    yield exc

    def result(self, task: int) -> Any:
        """The result of one finished task, or its exception raised."""
        self._acknowledge()
        table = self._table
        code = table.codes[task]
        if code == PENDING:
            if table.is_cancelled(task):
                raise TaskCancelled(f"task {task} of job {self.id} was cancelled", task=task)
            raise AltusError(f"task {task} of job {self.id} has not finished")
        stem = table.batches[table.batch[task]]
        if code == DAMAGED:
            key = f"status/{stem}.json"
            why = table.damaged[key]
            raise RecordDamaged(f"task {task} of job {self.id} has no readable status: {why}", key)
        value = self._batch_values(stem)[table.position[task]]
        if code == DONE:
            return value
        raise self._exception(task, self._status_file(stem).failures[str(task)], value)

    def _acknowledge(self) -> None:
        """Before a result is handed out, the batches it came from are made durable: one
        ``sync`` of the record whenever batches were read since the last one, so a result
        once returned (or set on a future) survives a power cut."""
        seen = len(self._table.batches)
        if seen != self._acknowledged:
            self._record.sync()
            self._acknowledged = seen

    def _status_file(self, stem: str) -> BatchStatus:
        cached = self._status_cache
        if cached is None or cached[0] != stem:
            cached = (stem, self._record.read_status(stem))
            self._status_cache = cached
        return cached[1]

    def _batch_values(self, stem: str) -> list[Any]:
        """The results list of one batch; the last one read is kept (reads go in order),
        and so is its error when it cannot be read: a file is read once, not once a task."""
        if self._loaded is None or self._loaded[0] != stem:
            self._loaded = (stem, self._read_values(stem))
        values = self._loaded[1]
        if isinstance(values, RecordDamaged):
            raise values
        return values

    def _readable_values(self, stem: str) -> list[Any] | None:
        try:
            return self._batch_values(stem)
        except RecordDamaged:
            return None

    def _read_values(self, stem: str) -> list[Any] | RecordDamaged:
        """A batch's results, or the error naming its file: one result per task its status lists."""
        key = f"results/{stem}.pkl"
        try:
            values = pickle.loads(self._record.read_results(stem))
        except Exception as exc:  # unpickling can raise anything
            return RecordDamaged(f"{self._record.url}/{key} cannot be read: {exc}", key)
        expected = self._table.sizes.get(stem)
        if not isinstance(values, list) or len(values) != expected:
            found = len(values) if isinstance(values, list) else type(values).__name__
            why = f"it holds {found} results for the {expected} tasks its status lists"
            return self._record.damaged(key, why)
        return values

    def _exception(self, task: int, failure: dict[str, Any], blob: Any) -> BaseException:
        exc: BaseException | None = None
        if isinstance(blob, bytes):
            with contextlib.suppress(Exception):
                exc = pickle.loads(blob)
        if isinstance(exc, Exception):  # never re-raise a task's SystemExit in the client
            if failure["traceback"]:
                exc.__cause__ = RemoteTraceback(failure["traceback"])
            return exc
        kind = _TASK_ERRORS.get(failure["error_type"], TaskFailed)
        message = f"task {task} failed: {failure['error_type']}: {failure['message']}"
        return kind(message, task=task, traceback=failure["traceback"])

    def gather(self, progress: bool = True) -> list[Any]:
        """Wait with a progress bar, then return every result (raising the first error)."""
        self.wait(progress=progress)
        return self.results(errors="raise")

    def _wait_with_progress(self) -> None:
        from tqdm.auto import tqdm

        with tqdm(total=self.spec.n_tasks, desc=self.spec.name, unit="task") as bar:
            while not self.wait(timeout=0.5):
                counts = self.status()
                bar.update(counts["done"] + counts["failed"] - bar.n)
                bar.set_postfix(failed=counts["failed"], refresh=False)
            bar.update(self.spec.n_tasks - bar.n)

    def errors(self) -> list[TaskErrorInfo]:
        """Every failed task: index, exception type, message and remote traceback."""
        self.refresh()
        found = []
        for task, code in enumerate(self._table.codes):
            if code == FAILED:
                stem = self._table.batches[self._table.batch[task]]
                failure = self._status_file(stem).failures[str(task)]
                found.append(TaskErrorInfo(task=task, **failure))
        return found

    def task_status(self, task: int) -> dict[str, Any] | None:
        """The recorded status of one task (attempt, host, pid, times, memory, error)."""
        self.refresh()
        if not 0 <= task < self.spec.n_tasks:
            raise AltusError(f"job {self.id} has no task {task} (it has {self.spec.n_tasks})")
        if self._table.codes[task] == PENDING:
            return None
        stem = self._table.batches[self._table.batch[task]]
        status, i = self._status_file(stem), self._table.position[task]
        name = BatchName.parse(stem)
        assert name is not None
        entry: dict[str, Any] = {
            "task": task,
            "state": "done" if self._table.codes[task] == DONE else "failed",
            "round": name.round,
            "attempt": name.attempt,
            "host": status.host,
            "pid": status.pid,
            "start": status.clock + status.start[i],
            "end": status.clock + status.start[i] + status.duration[i],
            "duration": status.duration[i],
            "peak_memory": status.peak_memory[i],
            "exit_reason": "returned",
            "error_type": None,
            "message": None,
            "traceback": None,
        }
        entry.update(status.failures.get(str(task), {}))
        return entry

    def logs(self, task: int) -> TaskLogs:
        """What the task printed to stdout and stderr."""
        if not 0 <= task < self.spec.n_tasks:
            raise AltusError(f"job {self.id} has no task {task} (it has {self.spec.n_tasks})")
        read = self._record.read_log
        return TaskLogs(
            task,
            read(task, "out").decode(errors="replace"),
            read(task, "err").decode(errors="replace"),
        )

    # -- futures ----------------------------------------------------------------------------

    @property
    def futures(self) -> list[Future[Any]]:
        """One ``concurrent.futures.Future`` per task, for ``as_completed`` and ``wait``."""
        with self._lock:
            if self._futures is None:
                self._futures = [Future() for _ in range(self.spec.n_tasks)]
                self._settle(range(self.spec.n_tasks))
                self._start_watcher()
            return self._futures

    def _settle(self, tasks: Any) -> None:
        assert self._futures is not None
        table = self._table
        for task in tasks:
            future = self._futures[task]
            if future.done():
                continue
            if table.codes[task] == PENDING and not table.is_cancelled(task):
                continue
            try:
                future.set_result(self.result(task))
            except InvalidStateError:
                pass
            except BaseException as exc:
                with contextlib.suppress(InvalidStateError):
                    future.set_exception(exc)

    def _start_watcher(self) -> None:
        running = self._watcher is not None and self._watcher.is_alive()
        if not running and not self.finished():
            self._watcher = threading.Thread(
                target=self._watch, name=f"altus-{self.id}", daemon=True
            )
            self._watcher.start()

    def _watch(self) -> None:
        """Resolve futures as batches land; if the record becomes unreadable (removed,
        its store unreachable), the futures still open fail with that error."""
        pause = 0.01
        try:
            while True:
                with self._lock:
                    self._settle(self.refresh())
                    if self.finished():
                        self._settle(range(self.spec.n_tasks))
                        return
                if not self._still_running():
                    self._fail_futures(self._lost())
                    return
                pause = min(pause * 1.5, 0.5)
                self.backend.wait_for_change(self._record, pause)
        except Exception as exc:
            self._fail_futures(self._explained(exc))

    def _fail_futures(self, error: BaseException) -> None:
        assert self._futures is not None
        for future in self._futures:
            if not future.done():
                with contextlib.suppress(InvalidStateError):
                    future.set_exception(error)

    # -- control -------------------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop the job: queued tasks never start, running ones are killed."""
        with self._lock:
            self._table.load_rounds()  # another handle may have started a round since
        round_ = self._table.rounds[-1]
        self._record.cancel(round_)
        self.backend.cancel(self._record, round_)
        if self._futures is not None:
            self._settle(range(self.spec.n_tasks))

    def retry(self, failed_only: bool = True) -> Job:
        """Run failed tasks again, and those whose outcome is damaged (a status file that a
        power cut left without its results); cancelled or lost ones too with
        ``failed_only=False``.

        Decided against the record, not this handle's view: the newest round must be
        over and no worker of it may still write (``JobBusy`` otherwise, naming it), and
        the new round is created exclusively under the number read, so of two handles
        retrying at once one starts it and the other is refused.
        """
        self.resubmit(failed_only)
        return self

    def resubmit(self, failed_only: bool = True) -> int:
        """``retry``, returning how many tasks it started again (0: nothing to retry)."""
        with self._lock:
            self._reload()
            newest = self._table.rounds[-1]
            if self._round_running(newest):
                raise self._busy(newest)
            tasks = self._tasks_to_retry(failed_only)
            if not tasks:
                return 0
            self._wait_until_stopped(newest)
            size = self._chunk_size()
            chunks = [tasks[i : i + size] for i in range(0, len(tasks), size)]
            round_ = newest + 1
            if not self._record.add_round(round_, chunks):
                raise self._busy(round_)
            self._table.start_round(round_)
            self._renew_futures(tasks)
        resources = Resources.from_user(self.spec.resources)
        self.backend.launch(Launch(self._record, round_, len(chunks), self.spec.workers, resources))
        self._record.mark_launched(round_)
        return len(tasks)

    def _reload(self) -> None:
        """Every round and status the record has now, whatever this handle saw before."""
        self._table.load_rounds()
        self.refresh()

    def _tasks_to_retry(self, failed_only: bool) -> list[int]:
        """Failed and damaged tasks, those whose results a power cut tore, and with
        ``failed_only=False`` the pending ones too."""
        codes, batch = self._table.codes, self._table.batch
        torn = self._torn_batches()
        return [
            task
            for task, code in enumerate(codes)
            if code in (FAILED, DAMAGED)
            or (code == DONE and batch[task] in torn)
            or (not failed_only and code == PENDING)
        ]

    def _torn_batches(self) -> set[int]:
        torn = set()
        for index, stem in enumerate(self._table.batches):
            with contextlib.suppress(RecordError):  # a damaged status is retried as damaged
                if self._record.is_torn(stem):
                    torn.add(index)
        return torn

    def _renew_futures(self, tasks: list[int]) -> None:
        if self._futures is not None:  # a settled future cannot be reset: replace it
            for task in tasks:
                self._futures[task] = Future()
            self._start_watcher()

    def _round_running(self, round_: int) -> bool:
        """Round ``round_`` has tasks without an outcome, is not cancelled, and something
        runs it (or it is being launched)."""
        table = self._table
        if round_ in table.cancelled:
            return False
        codes, rounds = table.codes, table.round
        if not any(code == PENDING and rounds[t] == round_ for t, code in enumerate(codes)):
            return False
        return self.backend.is_active(self._record) or self._starting(round_)

    def _busy(self, round_: int) -> JobBusy:
        return JobBusy(
            f"round {round_} of job {self.id} is still running; wait for it or cancel it"
        )

    def _wait_until_stopped(self, round_: int) -> None:
        """Return once no worker of the job may still write: the workers of a round that
        ended or was cancelled may take a moment to go (``JobBusy`` after ``STOP_TIMEOUT``).
        Another handle may start the next round meanwhile: its workers are not the ones
        waited for, and the caller is refused at once, naming that round."""
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.backend.is_active(self._record):
            if (newest := self._record.rounds()[-1]) > round_:
                raise self._busy(newest)
            if time.monotonic() > deadline:
                raise JobBusy(
                    f"job {self.id}: workers of round {round_} are still running "
                    f"{STOP_TIMEOUT:g} s after it ended or was cancelled; try again later"
                )
            self.backend.wait_for_change(self._record, 0.1)

    def _chunk_size(self) -> int:
        bounds = self.spec.bounds
        return max(1, bounds[1] - bounds[0]) if len(bounds) > 1 else 1

    def remove(self, force: bool = False) -> None:
        """Delete the record; a running job must be cancelled first (or ``force``).

        The record is marked removed, every round cancelled, and nothing is deleted until
        no worker may still write (``JobBusy`` after ``STOP_TIMEOUT``, record kept): a
        late commit would otherwise bring back part of a removed job.
        """
        with self._lock:
            self._reload()
        if not force and self.state() == "running":
            raise AltusError(f"job {self.id} is still running; cancel it first or use force")
        self._record.mark_removed()
        try:
            self._cancel_every_round()
            self._wait_until_stopped(self._table.rounds[-1])
        except BaseException:
            self._record.mark_removed(False)
            raise
        left = self._record.remove()
        if left:
            raise RecordError(f"job {self.id}: {len(left)} file(s) came back after removal")

    def _cancel_every_round(self) -> None:
        cancelled = self._record.cancelled_rounds()
        for round_ in self._table.rounds:
            if round_ not in cancelled:
                self._record.cancel(round_)
                self.backend.cancel(self._record, round_)

    @property
    def damaged(self) -> dict[str, str]:
        """Files of the record that cannot be read, by key, each with the one-line error
        naming it (as of the last refresh). What they held is left out: their tasks count
        as pending and give a ``RecordDamaged`` instead of a result."""
        return dict(self._table.damaged)

    def summary(self) -> JobSummary:
        spec = self.spec
        counts, state = self.status(), self.state()
        return JobSummary(
            id=spec.id,
            name=spec.name,
            function=spec.function,
            backend=spec.backend,
            created=spec.created,
            host=spec.host,
            n_tasks=spec.n_tasks,
            counts=counts,
            state=state,
            damaged=list(self._table.damaged.values()),
        )


def jobs(store: str | Store | None = None) -> list[JobSummary]:
    """Every job record in the store, oldest first; one that cannot be read is listed as
    ``damaged`` with the error naming its file, so one record never hides the others."""
    root = open_store(store or load_settings().default_store_url)
    if store is not None and not root.has_root():  # the default one is made by the first map
        raise StoreError(f"no store at {root.url}: the folder does not exist")
    found = [summary for job_id in job_ids(root) if (summary := _summarise(root, job_id))]
    return sorted(found, key=lambda summary: summary.created)


def _summarise(root: Store, job_id: str) -> JobSummary | None:
    """The job's summary; None for a folder that is no record (or is one being created)."""
    try:
        record = JobRecord.find(root, job_id)
        return Job(record).summary()
    except JobNotFound:
        return None
    except RecordError as exc:
        return _damaged_summary(job_id, exc)


def _damaged_summary(job_id: str, error: RecordError) -> JobSummary:
    """A summary from the folder's name alone: its spec may be what is damaged."""
    return JobSummary(
        id=job_id,
        name="",
        function="-",
        backend="-",
        created=0.0,
        host="-",
        n_tasks=0,
        counts=dict.fromkeys(STATES, 0),
        state="damaged",
        damaged=[str(error)],
    )
