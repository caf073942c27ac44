"""What a backend is: something that starts, watches and cancels workers.

A backend never carries results: workers write them to the job record, and
the client reads them from there. That keeps this interface to a few methods
on typed records, so a new backend (Slurm, Dask, AWS Batch) is small.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar

from altus.batch.record import JobRecord
from altus.errors import ConfigError

__all__ = ["Backend", "Launch", "Resources", "cancel_on_interrupt", "worker_environment"]

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@dataclass(frozen=True)
class Resources:
    """What one task needs; each backend maps it onto its own knobs."""

    cpus: int = 1
    memory: int | None = None
    """Bytes; ``Resources.from_user`` also takes ``"4G"``, ``"512MB"``."""
    gpus: int = 0
    time: float | None = None
    """Wall-clock seconds a worker may run (Slurm's ``--time``)."""

    @classmethod
    def from_user(cls, value: Resources | dict[str, Any] | None) -> Resources:
        if value is None or isinstance(value, Resources):
            return value or cls()
        unknown = set(value) - {"cpus", "memory", "gpus", "time"}
        if unknown:
            raise ConfigError(f"unknown resources {sorted(unknown)}; use cpus, memory, gpus, time")
        memory = value.get("memory")
        resources = cls(
            cpus=int(value.get("cpus", 1)),
            memory=parse_bytes(memory) if memory is not None else None,
            gpus=int(value.get("gpus", 0)),
            time=float(value["time"]) if value.get("time") is not None else None,
        )
        if resources.cpus < 1 or resources.gpus < 0:
            raise ConfigError(f"resources need cpus >= 1 and gpus >= 0, got {value}")
        return resources

    def to_dict(self) -> dict[str, Any]:
        return {"cpus": self.cpus, "memory": self.memory, "gpus": self.gpus, "time": self.time}


def parse_bytes(value: int | str) -> int:
    """``4096``, ``"4G"``, ``"4 GiB"``, ``"512MB"`` → bytes (binary units)."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(value), re.IGNORECASE)
    if not match:
        raise ConfigError(f"cannot read {value!r} as a memory size; write e.g. '4G' or '512M'")
    return int(float(match[1]) * _UNITS[match[2].upper()])


@dataclass(frozen=True)
class Launch:
    """One request to a backend: run chunks ``0..n_chunks-1`` of a round of a record."""

    record: JobRecord
    round: int
    n_chunks: int
    workers: int | None
    resources: Resources


class Backend(ABC):
    """Starts N workers for a record, reports whether they still run, cancels them."""

    name: ClassVar[str]
    single_task_chunks_per_worker: ClassVar[int] = 0
    """A map of at most this many tasks per worker gets one task per chunk (when no
    ``chunksize`` is given): few tasks are likely long ones, and one-task chunks even
    them out. Backends that start something per chunk (a Slurm element, a Python) say 0."""

    @abstractmethod
    def launch(self, launch: Launch) -> None:
        """Start workers for every chunk of the launch; returns once they are on their way."""

    @abstractmethod
    def cancel(self, record: JobRecord, round_: int) -> None:
        """Stop the workers of a round as soon as possible (its marker is already written)."""

    @abstractmethod
    def is_active(self, record: JobRecord) -> bool:
        """Whether anything may still commit tasks to this record."""

    def why_inactive(self, record: JobRecord) -> str | None:
        """Why nothing runs the record any more, when the backend knows (for ``JobLost``)."""
        return None

    def describe(self, record: JobRecord) -> str | None:
        """What the engine says of the record's workers, for ``altus jobs show`` (a queue's
        states and reasons); None where there is nothing to add."""
        return None

    def wait_for_change(self, record: JobRecord, timeout: float) -> None:
        """Block until the record may have changed; backends that can push events do better."""
        time.sleep(timeout)


def worker_environment(same_python: bool = True) -> dict[str, str]:
    """The client's environment, with its import path, so workers import what it imports.

    Workers on another Python (an altus environment) get only the client's own folders
    (scripts, the working folder), not its interpreter's standard library and packages.
    """
    paths = [entry or os.getcwd() for entry in sys.path]
    if not same_python:
        own = (sys.prefix, sys.base_prefix, sys.exec_prefix)
        paths = [p for p in paths if not p.startswith(own) and "-packages" not in p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}


_launched: list[tuple[Backend, JobRecord, int]] = []
_hook_lock = threading.Lock()


def cancel_on_interrupt(backend: Backend, record: JobRecord, round_: int) -> None:
    """If an uncaught Ctrl-C ends this process, cancel this launch first (unless it ended):
    Ctrl-C leaves nothing running, on any backend. A process that dies otherwise leaves
    its jobs running, for a later ``Job.attach``."""
    with _hook_lock:
        if not _launched:
            previous = sys.excepthook

            def hook(
                kind: type[BaseException], value: BaseException, tb: TracebackType | None
            ) -> None:
                if issubclass(kind, KeyboardInterrupt):
                    _cancel_launched()
                previous(kind, value, tb)

            sys.excepthook = hook
        _launched.append((backend, record, round_))


def _cancel_launched() -> None:
    for backend, record, round_ in _launched:
        try:
            chunks = range(record.n_chunks(round_))
            size = sum(len(record.chunk_tasks(round_, chunk)) for chunk in chunks)
            finished = len(record.recorded_tasks(round_)) >= size
            if not finished and not record.is_cancelled(round_):
                record.cancel(round_)
                backend.cancel(record, round_)
        except Exception as exc:  # one unreachable record must not keep the others running
            print(f"altus: could not cancel {record.id}: {exc}", file=sys.stderr)
