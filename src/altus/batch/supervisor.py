"""Run one chunk to its end on this host, whatever its worker does: the unit of work of
backends that start a process per chunk elsewhere (a Slurm array element)::

    python -m altus.batch.supervisor RECORD_URL CHUNK [--round R]

It forks a worker for the chunk and watches which task the worker runs (a
shared-memory slot, as the local pool does). If the worker dies, the death is
charged to that task (or to the chunk, between tasks) under the record's
retry rule (``failures``), and a fresh worker goes on with the tasks that
have no outcome yet; a task past its timeout is killed and fails. It exits 0
once every task of the chunk has an outcome, or the round was cancelled.

A worker leads a process group that holds what its tasks start; whenever a
worker ends, its group is killed with it (``WorkerGroups``, shared with the
local pool), and a guard process does the same if the supervisor itself dies.

Attempts are numbered past any this chunk already has in the record, so a
supervisor that Slurm requeued (node failure, preemption) resumes where the
record says, and never writes a batch under a name already used. Warned of its
time limit (``SIGUSR1``, from ``--signal=B:USR1@N``), it stops its worker and
requeues its own element, failing the running task only if not one task of
the chunk could finish within the limit.
"""

from __future__ import annotations

import argparse
import contextlib
import mmap
import os
import re
import signal
import struct
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from types import FrameType

from altus.batch.failures import (
    TASK_TIMEOUT,
    WORKER_DIED,
    DeathCounter,
    death_reason,
    record_failures,
    unrecorded_tasks,
)
from altus.batch.record import BatchName, JobRecord

__all__ = ["SLOT", "WorkerGroups", "die_with_parent", "exited", "kill_group", "main", "supervise"]

SLOT = struct.Struct("qd")
"""What a worker runs now, in shared memory: task index (-1: none), time.time() it began."""
_GROUP = struct.Struct("q")
"""A worker's process group in the guard's table (0: none)."""
_GUARD_SIGNAL = signal.SIGTERM
"""What the kernel sends the guard when its owner dies (the guard blocks it and waits)."""
_MAX_FD = 1 << 16
POLL_SECONDS = 0.1
CANCEL_CHECK_SECONDS = 1.0
TIMEOUT_GRACE = 2.0
_ATTEMPT = re.compile(r"^r(\d+)-c(\d+)-a(\d+)")


class _SlotMonitor:
    def __init__(self, shared: mmap.mmap) -> None:
        self.shared = shared

    def task_started(self, task: int, wall_time: float) -> None:
        SLOT.pack_into(self.shared, 0, task, wall_time)

    def committed(self, batch: str, n_tasks: int) -> None:
        pass

    def chunk_ending(self) -> None:
        pass


class WorkerGroups:
    """The process groups of the workers this process forked, ended with them.

    A worker leads a group that holds what its tasks start. When a worker ends,
    its owner kills the group before reaping the worker (a pid not yet reaped
    keeps the group's number from going to another process). When the owner
    dies, its workers die too (``die_with_parent``) but nobody is left to kill
    their groups, so a guard process, forked by ``guarded``, waits for the
    owner's death and then kills every group still in a table they share. A
    process a task moves out of its worker's group (``setsid``) escapes both.
    """

    def __init__(self, capacity: int) -> None:
        self.table = mmap.mmap(-1, _GROUP.size * capacity)
        self.guard = 0

    @classmethod
    def guarded(cls, capacity: int) -> WorkerGroups:
        """A table for ``capacity`` workers, and its guard, started now."""
        groups = cls(capacity)
        groups.guard = _start_guard(groups.table)
        return groups

    def add(self, index: int, pid: int) -> None:
        """Note the group of the worker ``pid``, just forked, under ``index``."""
        _GROUP.pack_into(self.table, index * _GROUP.size, pid)

    def end(self, index: int, pid: int) -> int:
        """Kill the worker's group, forget it and reap the worker: its ``waitpid`` status."""
        kill_group(pid)
        _GROUP.pack_into(self.table, index * _GROUP.size, 0)
        return os.waitpid(pid, 0)[1]

    def close(self) -> None:
        """Stop the guard, once every worker has ended."""
        if self.guard:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.guard, signal.SIGKILL)
            os.waitpid(self.guard, 0)
            self.guard = 0


def kill_group(pid: int) -> None:
    """SIGKILL the process group that the worker ``pid`` leads."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def exited(pid: int) -> bool:
    """Whether the child ``pid`` has ended, leaving it unreaped (so its group can be killed)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _start_guard(table: mmap.mmap) -> int:
    owner = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    try:
        _guard(owner, table)
    finally:
        os._exit(0)


def _guard(owner: int, table: mmap.mmap) -> None:
    """The guard's life: hold nothing of the owner's, wait for its death, kill the groups."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {_GUARD_SIGNAL})
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.setsid()  # a kill of the owner's process group must not take the guard along
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # not the owner's pipes: their readers wait for the owner's end
        os.dup2(devnull, fd)
    os.closerange(3, _MAX_FD)
    die_with_parent(signum=_GUARD_SIGNAL)
    while os.getppid() == owner:
        signal.sigtimedwait({_GUARD_SIGNAL}, 5.0)
    for (pgid,) in _GROUP.iter_unpack(table):
        if pgid > 0:
            kill_group(pgid)


def supervise(record: JobRecord, round_: int, chunk: int) -> int:
    """Run the chunk's tasks until each has an outcome; the exit status for the element."""
    groups = WorkerGroups.guarded(1)
    try:
        return _supervise(record, round_, chunk, groups)
    finally:
        groups.close()


def _supervise(record: JobRecord, round_: int, chunk: int, groups: WorkerGroups) -> int:
    spec = record.spec
    deaths = DeathCounter(spec.retries)
    shared = mmap.mmap(-1, SLOT.size)
    attempt = next_attempt(record, round_, chunk)
    # Every death either charges a task or the chunk, so this many attempts always suffice;
    # the bound only guards against a record that refuses the failures being committed.
    left_at_start = len(unrecorded_tasks(record, round_, chunk))
    last = attempt + (left_at_start + 1) * (spec.retries + 1)
    signal.signal(signal.SIGUSR1, _on_walltime_warning)
    while attempt <= last and unrecorded_tasks(record, round_, chunk):
        if record.is_cancelled(round_):
            return 0
        SLOT.pack_into(shared, 0, -1, 0.0)
        pid = _fork_worker(record, round_, chunk, attempt, shared)
        groups.add(0, pid)
        status, reason = _watch(pid, shared, groups, spec.timeout, record, round_)
        if reason == "cancelled" or (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
            return 0
        task, _started = SLOT.unpack_from(shared, 0)
        first = task if task >= 0 else min(unrecorded_tasks(record, round_, chunk))
        name = BatchName(round_, chunk, attempt, f"died{first}")
        if reason == "walltime":
            left = unrecorded_tasks(record, round_, chunk)
            if task >= 0 and len(left) == left_at_start:  # not one task fits in the time limit
                message = f"task {task} ran past the Slurm job's time limit and was killed"
                record_failures(record, name, [task], "walltime", TASK_TIMEOUT, message)
            return _requeue_self() if unrecorded_tasks(record, round_, chunk) else 0
        if reason == "timeout":
            message = f"task {task} ran past the timeout of {spec.timeout:g} s and was killed"
            record_failures(record, name, [task], "timeout", TASK_TIMEOUT, message)
        elif task >= 0:
            count = deaths.charge_task(task)
            if count is not None:
                why = death_reason(status)
                message = f"{why} while running task {task} ({count} attempts)"
                record_failures(record, name, [task], why, WORKER_DIED, message)
        elif (count := deaths.charge_chunk(chunk)) is not None:
            why = death_reason(status)
            message = f"{why} before running a task of chunk {chunk} ({count} attempts)"
            rest = unrecorded_tasks(record, round_, chunk)
            record_failures(record, name, rest, why, WORKER_DIED, message)
        attempt += 1
    return 0 if not unrecorded_tasks(record, round_, chunk) else 1


def next_attempt(record: JobRecord, round_: int, chunk: int) -> int:
    """One past the highest attempt this chunk has claimed or committed (0 for none)."""
    highest = -1
    names = [*record.status_names(), *record.store.children("claims")]
    for name in names:
        match = _ATTEMPT.match(name)
        if match and int(match[1]) == round_ and int(match[2]) == chunk:
            highest = max(highest, int(match[3]))
    return highest + 1


def _fork_worker(
    record: JobRecord, round_: int, chunk: int, attempt: int, shared: mmap.mmap
) -> int:
    from altus.batch.worker import install_alarm, run_chunk

    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        die_with_parent(parent)
        os.setpgid(0, 0)  # a group of its own: a kill takes what its tasks started too
        install_alarm()
        run_chunk(record, round_, chunk, attempt, monitor=_SlotMonitor(shared))
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def _watch(
    pid: int,
    shared: mmap.mmap,
    groups: WorkerGroups,
    timeout: float | None,
    record: JobRecord,
    round_: int,
) -> tuple[int, str | None]:
    """Wait for the worker; kill it past a task's timeout or when the round is cancelled.
    However it ends, its group goes with it: a child its task started must neither run on
    nor hold the supervisor's output open."""
    next_check = time.monotonic() + CANCEL_CHECK_SECONDS
    reason: str | None = None
    while not exited(pid):
        task, started = SLOT.unpack_from(shared, 0)
        if timeout and task >= 0 and time.time() - started > timeout + TIMEOUT_GRACE:
            reason = "timeout"
        elif _walltime_warned:
            reason = "walltime"
        elif time.monotonic() >= next_check:
            next_check = time.monotonic() + CANCEL_CHECK_SECONDS
            reason = "cancelled" if record.is_cancelled(round_) else None
        if reason:
            break
        time.sleep(POLL_SECONDS)
    return groups.end(0, pid), reason


def die_with_parent(parent: int | None = None, signum: int = signal.SIGKILL) -> None:
    """Have Linux send ``signum`` to this process when its parent dies
    (``PR_SET_PDEATHSIG``): a supervisor whose Dask worker was killed, and a worker whose
    pool or supervisor was, must not run on (and commit) beside what replaces them. Given
    the ``parent`` it was forked by, a process whose parent already died dies at once."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signum)  # 1 = PR_SET_PDEATHSIG
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signum)


_walltime_warned = False


def _on_walltime_warning(signum: int, frame: FrameType | None) -> None:
    """Slurm's ``--signal=B:USR1@N``: the element's time limit is N seconds away."""
    global _walltime_warned
    _walltime_warned = True


def _requeue_self() -> int:
    """Put this array element back in Slurm's queue: it resumes from the record."""
    element = f"{os.environ.get('SLURM_ARRAY_JOB_ID')}_{os.environ.get('SLURM_ARRAY_TASK_ID')}"
    done = subprocess.run(["scontrol", "requeue", element], capture_output=True, check=False)
    return 0 if done.returncode == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m altus.batch.supervisor",
        description="Run one chunk of an altus job record to its end, retrying dead workers.",
    )
    parser.add_argument("record", help="URL of the job record (its folder in a store)")
    parser.add_argument("chunk", type=int)
    parser.add_argument("--round", type=int, default=0, dest="round_")
    args = parser.parse_args(argv)
    return supervise(JobRecord.open(args.record), args.round_, args.chunk)


if __name__ == "__main__":
    sys.exit(main())
