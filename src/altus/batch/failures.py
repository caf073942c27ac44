"""Failures recorded for tasks whose worker died under them, and the retry policy.

Whatever watches workers (the local pool, or the supervisor that runs a chunk
on a Slurm node or a Dask worker) applies the same rule: a worker that dies
under a task costs that task one attempt; past ``retries`` deaths the task is
recorded as failed (``WorkerDied``) and the rest of the chunk goes on in a
fresh worker. A worker that dies between tasks (loading the function, say)
costs the chunk an attempt instead, and past ``retries`` the chunk's remaining
tasks fail. A task killed for running past its timeout fails at once.
"""

from __future__ import annotations

import os
import pickle
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from altus.batch.record import BatchName, Commit, JobRecord

__all__ = [
    "TASK_TIMEOUT",
    "WORKER_DIED",
    "DeathCounter",
    "death_reason",
    "record_failures",
    "unrecorded_tasks",
]

WORKER_DIED = "altus.errors.WorkerDied"
TASK_TIMEOUT = "altus.errors.TaskTimeout"


def death_reason(status: int) -> str:
    """``worker died: signal 9 (SIGKILL)`` from a ``waitpid`` status."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        return f"worker died: signal {number} ({signal.Signals(number).name})"
    return f"worker died: exit code {os.WEXITSTATUS(status)}"


def record_failures(
    record: JobRecord,
    name: BatchName,
    tasks: Sequence[int],
    reason: str,
    error: str,
    message: str,
) -> bool:
    """Commit ``tasks`` as failed with ``error``; False if that batch was already there."""
    n = len(tasks)
    failure = {"exit_reason": reason, "error_type": error, "message": message, "traceback": ""}
    commit = Commit(
        list(tasks),
        clock=time.time(),
        start=[0.0] * n,
        duration=[0.0] * n,
        peak_memory=[0] * n,
        failures={str(task): failure for task in tasks},
    )
    return record.commit(name, commit, pickle.dumps([None] * n))


def unrecorded_tasks(record: JobRecord, round_: int, chunk: int) -> list[int]:
    """The tasks of a chunk with no outcome recorded yet."""
    recorded = record.recorded_tasks(round_)
    return [task for task in record.chunk_tasks(round_, chunk) if task not in recorded]


@dataclass
class DeathCounter:
    """Deaths charged to tasks and to chunks of one round, and when to give up."""

    retries: int
    tasks: dict[int, int] = field(default_factory=dict)
    chunks: dict[int, int] = field(default_factory=dict)

    def charge_task(self, task: int) -> int | None:
        """One more death under ``task``; its count once past ``retries``, else None."""
        self.tasks[task] = deaths = self.tasks.get(task, 0) + 1
        return deaths if deaths > self.retries else None

    def charge_chunk(self, chunk: int) -> int | None:
        """One more death between tasks of ``chunk``; its count once past ``retries``."""
        self.chunks[chunk] = deaths = self.chunks.get(chunk, 0) + 1
        return deaths if deaths > self.retries else None
