"""The local pool: a detached process that keeps worker processes warm.

``LocalBackend`` starts one pool per client process (``python -m
altus.batch.backends.local_pool``, in its own session) and talks to it with
JSON lines: commands on the pool's stdin, events on its stdout. The pool
forks long-lived workers; each takes one chunk at a time, runs it with
``altus.batch.worker.TaskRunner`` and tells the pool when it committed a
batch, which the pool passes on to the client so futures resolve at once.
A worker also says when it ran the last task of a chunk, so the pool can
send the next chunk while the worker still commits: no worker waits on the
pool between chunks, and none holds more than one chunk in reserve.

Because the pool is not the client, a job goes on when the client dies; when
the client is gone and no job is left, the pool exits. The pool is also the
one that sees workers die: it reads the task a worker was on from a shared
memory slot, charges that task one death, fails it once it died more than
``retries`` times, and hands the rest of the chunk to a fresh worker.

A death is seen on the worker's process (a pidfd; ``waitid`` polling where
there is none), never on the end of its event pipe, which a child its task
forked may hold open for ever. A worker's process group (what its tasks
started) ends with it, and the workers and their groups end with the pool
(``die_with_parent`` and the guard of ``WorkerGroups``): a pool killed under a
job leaves nothing that goes on committing to its record.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import selectors
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from altus.batch.failures import (
    TASK_TIMEOUT,
    WORKER_DIED,
    DeathCounter,
    death_reason,
    record_failures,
    unrecorded_tasks,
)
from altus.batch.record import BatchName, JobRecord
from altus.batch.supervisor import SLOT, WorkerGroups, die_with_parent, exited, kill_group
from altus.errors import AltusError

__all__ = ["main"]

MAX_WORKERS = 4096
TIMEOUT_GRACE = 2.0
"""Seconds past a task's timeout before the pool kills a worker that ignored SIGALRM."""
IDLE_EXIT = 600.0
"""Seconds a pool with no jobs and no client waits before it exits."""
IDLE_WORKER = 300.0
"""Seconds an idle worker is kept for the next job."""


@dataclass
class Job:
    """One launch: a round of a record, its queue of chunks and its rules."""

    url: str
    round: int
    keys: list[str]
    """One environment key per worker it may use (GPU ids and thread counts)."""
    retries: int
    timeout: float | None
    environment: dict[str, str] = field(default_factory=dict)
    """The client's environment at launch (credentials for the store included): what its
    tasks see, also when the pool was started before the client set it."""
    queue: deque[tuple[int, int]] = field(default_factory=deque)
    busy: dict[int, str] = field(default_factory=dict)
    """pid → environment key of the workers running its chunks."""
    deaths: DeathCounter = field(init=False)
    cancelled: bool = False
    _record: JobRecord | None = None

    def __post_init__(self) -> None:
        self.deaths = DeathCounter(self.retries)

    @property
    def record(self) -> JobRecord:
        if self._record is None:
            self._record = JobRecord.open(self.url)
        return self._record

    @property
    def finished(self) -> bool:
        return not self.queue and not self.busy


@dataclass
class Worker:
    pid: int
    key: str
    slot: int
    commands: int
    events: int
    """The read end of its event pipe, non-blocking; -1 once closed."""
    pidfd: int | None
    """Readable once it died; None where Linux has no ``pidfd_open`` (then polled)."""
    job: Job | None = None
    chunks: deque[tuple[int, int]] = field(default_factory=deque)
    """(chunk, attempt) sent to it, the one it runs first."""
    environment: dict[str, str] | None = None
    """The environment last sent to it: sent again only when a job brings another."""
    ending: bool = False
    """It ran the last task of its only chunk and is committing: it may take the next."""
    idle_since: float = field(default_factory=time.monotonic)
    kill_reason: str | None = None
    buffer: bytes = b""


class Pool:
    def __init__(self) -> None:
        self.shared = mmap.mmap(-1, SLOT.size * MAX_WORKERS)
        self.groups = WorkerGroups.guarded(MAX_WORKERS)
        self.selector = selectors.DefaultSelector()
        self.jobs: dict[tuple[str, int], Job] = {}
        self.workers: dict[int, Worker] = {}
        self.free_slots = list(range(MAX_WORKERS - 1, -1, -1))
        self.client_gone = False
        self.last_busy = time.monotonic()
        self.selector.register(sys.stdin.buffer, selectors.EVENT_READ, self.on_command)
        os.set_blocking(sys.stdin.fileno(), False)
        self._stdin_buffer = b""

    # -- talking to the client --------------------------------------------------

    def emit(self, **event: Any) -> None:
        if self.client_gone:
            return
        try:
            sys.stdout.write(json.dumps(event) + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, OSError):
            self.client_gone = True

    def on_command(self, stream: Any) -> None:
        data = os.read(stream.fileno(), 1 << 16)
        if not data:
            self.client_gone = True
            self.selector.unregister(stream)
            return
        lines, self._stdin_buffer = _split_lines(self._stdin_buffer, data)
        for line in lines:
            self.handle(json.loads(line))

    def handle(self, command: dict[str, Any]) -> None:
        op = command["op"]
        if op == "launch":
            job = Job(
                url=command["record"],
                round=command["round"],
                keys=command["keys"],
                retries=command["retries"],
                timeout=command["timeout"],
                environment=command.get("environment", {}),
                queue=deque((chunk, 0) for chunk in range(command["n_chunks"])),
            )
            if job.environment:  # the pool reads the record too (cancel markers, failures)
                _replace_environ(job.environment)
            self.jobs[(job.url, job.round)] = job
        elif op == "cancel":
            job_or_none = self.jobs.get((command["record"], command["round"]))
            if job_or_none is not None:
                self.cancel(job_or_none)

    # -- scheduling -------------------------------------------------------------------

    def dispatch(self) -> None:
        for job in list(self.jobs.values()):
            for worker in self.workers.values():
                if job.queue and worker.job is job and worker.ending:
                    self.assign(worker, job, job.queue.popleft())
            while job.queue:
                key = self._free_key(job)
                if key is None:
                    break
                worker = self._idle_worker(key) or self.fork_worker(key)
                self.assign(worker, job, job.queue.popleft())
            if job.finished:
                self.finish(job)

    def _free_key(self, job: Job) -> str | None:
        used = list(job.busy.values())
        for key in job.keys:
            if key in used:
                used.remove(key)
            else:
                return key
        return None

    def _idle_worker(self, key: str) -> Worker | None:
        for worker in self.workers.values():
            if worker.job is None and worker.key == key:
                return worker
        return None

    def assign(self, worker: Worker, job: Job, chunk: tuple[int, int]) -> None:
        message: dict[str, Any] = {
            "record": job.url,
            "round": job.round,
            "chunk": chunk[0],
            "attempt": chunk[1],
        }
        if job.environment and worker.environment != job.environment:
            message["environment"] = job.environment
        try:
            os.write(worker.commands, json.dumps(message).encode() + b"\n")
        except OSError:  # it just died; its death is handled when its pidfd says so
            job.queue.appendleft(chunk)
            self.kill(worker, "unreachable")
            return
        worker.job, worker.ending = job, False
        if "environment" in message:
            worker.environment = job.environment
        worker.chunks.append(chunk)
        job.busy[worker.pid] = worker.key

    def finish(self, job: Job, error: str | None = None) -> None:
        del self.jobs[(job.url, job.round)]
        with contextlib.suppress(AltusError, OSError):  # its record may be gone
            job.record.end_round(job.round)  # no worker of ours runs it: retry or remove may go
        self.emit(
            ev="finished", record=job.url, round=job.round, cancelled=job.cancelled, error=error
        )

    def abandon(self, job: Job, reason: str) -> None:
        """Give a job up when its record cannot be read or written from here; the
        client hears why instead of waiting for tasks nobody runs."""
        job.cancelled = True
        job.queue.clear()
        for pid in list(job.busy):
            self.kill(self.workers[pid], "abandoned")
        if (job.url, job.round) in self.jobs:
            self.finish(job, error=reason)

    def cancel(self, job: Job) -> None:
        job.cancelled = True
        job.queue.clear()
        for pid in list(job.busy):
            self.kill(self.workers[pid], "cancelled")

    def kill(self, worker: Worker, reason: str) -> None:
        """Kill a worker and every process its tasks started (its process group)."""
        worker.kill_reason = reason
        kill_group(worker.pid)

    # -- workers ------------------------------------------------------------------------

    def fork_worker(self, key: str) -> Worker:
        slot = self.free_slots.pop()
        SLOT.pack_into(self.shared, slot * SLOT.size, -1, 0.0)
        command_read, command_write = os.pipe()
        event_read, event_write = os.pipe()
        pool = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker; never returns
            die_with_parent(pool)
            os.close(command_write)
            os.close(event_read)
            _worker_main(key, slot, self.shared, command_read, event_write)
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)  # also here, so a kill right after the fork finds the group
        self.groups.add(slot, pid)
        os.close(command_read)
        os.close(event_write)
        os.set_blocking(event_read, False)
        worker = Worker(pid, key, slot, command_write, event_read, _pidfd(pid))
        self.workers[pid] = worker
        self.selector.register(event_read, selectors.EVENT_READ, lambda _s: self.on_worker(worker))
        if worker.pidfd is not None:
            self.selector.register(
                worker.pidfd, selectors.EVENT_READ, lambda _s: self.on_death(worker)
            )
        return worker

    def on_worker(self, worker: Worker) -> None:
        data = _read_events(worker.events)
        if data == b"":  # its death comes from its pidfd: a child may hold this pipe
            self._stop_reading(worker)
        elif data:
            self._handle_events(worker, data)

    def _handle_events(self, worker: Worker, data: bytes) -> None:
        lines, worker.buffer = _split_lines(worker.buffer, data)
        for line in lines:
            self.on_worker_event(worker, json.loads(line))

    def _drain(self, worker: Worker) -> None:
        """Take the events a dead worker wrote last (its final commit, say) without waiting
        for an end of file that a child of its task could put off for ever."""
        while data := _read_events(worker.events):
            self._handle_events(worker, data)
        self._stop_reading(worker)

    def _stop_reading(self, worker: Worker) -> None:
        if worker.events >= 0:
            self.selector.unregister(worker.events)
            os.close(worker.events)
            worker.events = -1

    def on_worker_event(self, worker: Worker, event: dict[str, Any]) -> None:
        job = worker.job
        if job is None:
            return
        if event["ev"] == "commit":
            self.emit(ev="commit", record=job.url, batch=event["batch"])
        elif event["ev"] == "ending":
            worker.ending = len(worker.chunks) == 1
        elif event["ev"] in ("done", "error"):
            chunk = worker.chunks.popleft()
            worker.ending = False
            if event["ev"] == "error":
                try:
                    self._fail_rest(job, chunk, "worker error", event["message"])
                except Exception as exc:
                    self.abandon(
                        job, f"{event['message']} (and the pool could not record it: {exc})"
                    )
            if not worker.chunks:
                job.busy.pop(worker.pid, None)
                worker.job = None
                worker.idle_since = time.monotonic()

    def on_death(self, worker: Worker) -> None:
        if worker.pid not in self.workers:
            return  # already handled in this round of the selector
        status = self.groups.end(worker.slot, worker.pid)  # what its tasks started goes too
        self._drain(worker)
        if worker.pidfd is not None:
            self.selector.unregister(worker.pidfd)
            os.close(worker.pidfd)
        os.close(worker.commands)
        del self.workers[worker.pid]
        self.free_slots.append(worker.slot)
        job = worker.job
        if job is None or not worker.chunks:
            return
        job.busy.pop(worker.pid, None)
        if job.cancelled:
            return
        chunk = worker.chunks.popleft()
        job.queue.extendleft(reversed(worker.chunks))  # sent, never started: as they were
        task, _started = SLOT.unpack_from(self.shared, worker.slot * SLOT.size)
        if task >= 0:
            self._charge(job, chunk, task, worker, status)
        elif self._charge_chunk(job, chunk, status):
            return
        job.queue.appendleft((chunk[0], chunk[1] + 1))

    def _charge_chunk(self, job: Job, chunk: tuple[int, int], status: int) -> bool:
        """A worker died between tasks (loading the function, say): True once it gave up."""
        deaths = job.deaths.charge_chunk(chunk[0])
        if deaths is None:
            return False
        reason = death_reason(status)
        message = f"{reason} before running a task of chunk {chunk[0]} ({deaths} attempts)"
        self._fail_rest(job, chunk, reason, message, WORKER_DIED)
        return True

    def _charge(
        self, job: Job, chunk: tuple[int, int], task: int, worker: Worker, status: int
    ) -> None:
        """A worker died under ``task``: fail it now (timeout) or after ``retries`` deaths."""
        if worker.kill_reason == "timeout":
            message = f"task {task} ran past the timeout of {job.timeout:g} s and was killed"
            self._record_failures(job, chunk, [task], "timeout", TASK_TIMEOUT, message)
            return
        deaths = job.deaths.charge_task(task)
        if deaths is not None:
            reason = death_reason(status)
            message = f"{reason} while running task {task} ({deaths} attempts)"
            self._record_failures(job, chunk, [task], reason, WORKER_DIED, message)

    def _fail_rest(
        self,
        job: Job,
        chunk: tuple[int, int] | None,
        reason: str,
        message: str,
        error: str = "altus.errors.TaskFailed",
    ) -> None:
        """Fail every task of the chunk that has no status yet."""
        if chunk is None:
            return
        tasks = unrecorded_tasks(job.record, job.round, chunk[0])
        if tasks:
            self._record_failures(job, chunk, tasks, reason, error, message)

    def _record_failures(
        self,
        job: Job,
        chunk: tuple[int, int],
        tasks: list[int],
        reason: str,
        error: str,
        message: str,
    ) -> None:
        name = BatchName(job.round, chunk[0], chunk[1], f"died{tasks[0]}")
        if record_failures(job.record, name, tasks, reason, error, message):
            self.emit(ev="commit", record=job.url, batch=str(name))

    # -- watching ------------------------------------------------------------------------

    def check_timeouts(self) -> None:
        now = time.time()
        for worker in list(self.workers.values()):
            job = worker.job
            if job is None or not job.timeout or worker.kill_reason:
                continue
            task, started = SLOT.unpack_from(self.shared, worker.slot * SLOT.size)
            if task >= 0 and now - started > job.timeout + TIMEOUT_GRACE:
                self.kill(worker, "timeout")

    def check_cancelled(self) -> None:
        """Jobs cancelled (``altus jobs cancel``) or removed from another process."""
        for job in list(self.jobs.values()):
            if job.cancelled:
                continue
            try:
                record = job.record
                stop = record.is_cancelled(job.round) or not record.store.exists("spec.json")
            except (AltusError, OSError) as exc:
                self.abandon(job, f"its record cannot be read: {exc}")
                continue
            if stop:
                self.cancel(job)

    def check_deaths(self) -> None:
        """Where there is no pidfd: workers that ended, seen by polling."""
        for worker in list(self.workers.values()):
            if worker.pidfd is None and exited(worker.pid):
                self.on_death(worker)

    def reap_idle(self) -> None:
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if worker.job is None and now - worker.idle_since > IDLE_WORKER:
                self.kill(worker, "idle")

    def should_exit(self) -> bool:
        if self.jobs or any(worker.job for worker in self.workers.values()):
            self.last_busy = time.monotonic()
            return False
        return self.client_gone or time.monotonic() - self.last_busy > IDLE_EXIT

    def run(self) -> None:
        self.emit(ev="ready", pid=os.getpid())
        last_check = 0.0
        while not self.should_exit():
            try:
                self.dispatch()
                for key, _mask in self.selector.select(timeout=0.1):
                    key.data(key.fileobj)
                self.check_deaths()
                if time.monotonic() - last_check > 0.25:
                    last_check = time.monotonic()
                    self.check_timeouts()
                    self.check_cancelled()
                    self.reap_idle()
            except Exception:  # one bad record must not take every other job down
                traceback.print_exc(file=sys.stderr)
        for worker in list(self.workers.values()):
            self.groups.end(worker.slot, worker.pid)
        self.groups.close()


def _split_lines(pending: bytes, data: bytes) -> tuple[list[bytes], bytes]:
    """Complete, non-blank lines of a stream read in pieces, and the unfinished rest."""
    *lines, rest = (pending + data).split(b"\n")
    return [line for line in lines if line.strip()], rest


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when the child ``pid`` dies; None if unsupported."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _read_events(fd: int) -> bytes | None:
    """What a worker wrote since the last read: b"" at end of file, None if nothing yet."""
    if fd < 0:
        return b""
    try:
        return os.read(fd, 1 << 16)
    except BlockingIOError:
        return None


# -- the worker side ---------------------------------------------------------------------


class _SlotMonitor:
    """Tells the pool, at almost no cost, which task runs and which batches landed."""

    def __init__(self, shared: mmap.mmap, slot: int, events: int) -> None:
        self.shared, self.offset, self.events = shared, slot * SLOT.size, events

    def task_started(self, task: int, wall_time: float) -> None:
        SLOT.pack_into(self.shared, self.offset, task, wall_time)

    def idle(self) -> None:
        SLOT.pack_into(self.shared, self.offset, -1, 0.0)

    def committed(self, batch: str, n_tasks: int) -> None:
        self.send(ev="commit", batch=batch, n=n_tasks)

    def chunk_ending(self) -> None:
        self.send(ev="ending")

    def send(self, **event: Any) -> None:
        os.write(self.events, json.dumps(event).encode() + b"\n")


def _commands(fd: int) -> Iterator[dict[str, Any]]:
    with os.fdopen(fd, "rb") as stream:
        for line in stream:
            yield json.loads(line)


def _worker_main(key: str, slot: int, shared: mmap.mmap, commands: int, events: int) -> None:
    """Loop in a forked worker: take a chunk, run it, say so; exit when the pool goes."""
    from altus.batch.worker import OutputCapture, PeakMemory, TaskRunner, install_alarm

    code = 0
    try:
        os.setpgid(0, 0)  # a group of its own, so the pool can kill what its tasks start
        _close_fds_but(commands, events)  # the pool's selector and other workers' pipes
        _apply_key(key)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)  # not the pool's command pipe
        os.close(devnull)
        install_alarm()
        monitor = _SlotMonitor(shared, slot, events)
        capture, memory = OutputCapture(), PeakMemory()
        runners: dict[str, TaskRunner] = {}
        for command in _commands(commands):
            try:
                if "environment" in command:
                    _apply_environment(command["environment"], key)
                runner = runners.get(command["record"])
                if runner is None:
                    runners.clear()
                    runner = runners[command["record"]] = TaskRunner(
                        JobRecord.open(command["record"]), capture, monitor, memory
                    )
                runner.run_chunk(command["round"], command["chunk"], command["attempt"])
                monitor.idle()
                monitor.send(ev="done")
            except Exception as exc:
                monitor.idle()
                capture.say(f"altus worker {os.getpid()}: {type(exc).__name__}: {exc}")
                monitor.send(ev="error", message=f"{type(exc).__name__}: {exc}")
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _close_fds_but(*keep: int) -> None:
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 16)


def _apply_environment(environment: dict[str, str], key: str) -> None:
    """Take on the environment of the client that launched the job, then this worker's key."""
    _replace_environ(environment)
    _apply_key(key)


def _replace_environ(environment: dict[str, str]) -> None:
    """Make ``os.environ`` equal ``environment``, touching only what differs."""
    for name in [name for name in os.environ if name not in environment]:
        del os.environ[name]
    for name, value in environment.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def _apply_key(key: str) -> None:
    """``gpus=0,1;threads=2`` → CUDA_VISIBLE_DEVICES and the usual thread-count variables."""
    for part in filter(None, key.split(";")):
        name, _, value = part.partition("=")
        if name == "gpus":
            os.environ["CUDA_VISIBLE_DEVICES"] = value
        elif name == "threads":
            for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ.setdefault(variable, value)


def main() -> int:
    log = os.environ.get("ALTUS_POOL_LOG")  # read now: a job's launch replaces the environment
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    Pool().run()
    _remove_empty_log(log)
    return 0


def _remove_empty_log(path: str | None) -> None:
    """A pool that had nothing to say leaves no log file behind."""
    with contextlib.suppress(OSError):
        if path and os.fstat(2).st_size == 0 and os.path.samefile(path, "/proc/self/fd/2"):
            os.unlink(path)


if __name__ == "__main__":
    sys.exit(main())
