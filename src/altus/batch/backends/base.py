"""What a backend is: something that starts, watches and cancels workers.

A backend never carries results: workers write them to the job record, and
the client reads them from there. That keeps this interface to a few methods
on typed records, so a new backend (Slurm, Dask, AWS Batch) is small.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from altus.batch.record import JobRecord
from altus.errors import ConfigError

__all__ = ["Backend", "Launch", "Resources"]

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

    def wait_for_change(self, record: JobRecord, timeout: float) -> None:
        """Block until the record may have changed; backends that can push events do better."""
        time.sleep(timeout)
