"""Where each task of a job stands, built up from its status files as they appear.

One byte per task (pending, done, failed) and three integer arrays (which
batch, which position in it, which round), so counting a 100,000-task job
costs about 1.3 MB and no result is read to do it.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Any

from altus.batch.record import BatchName, JobRecord

__all__ = ["DONE", "FAILED", "PENDING", "TaskTable"]

PENDING, DONE, FAILED = 0, 1, 2


class TaskTable:
    """Where each task stands, built up from status files as they appear."""

    def __init__(self, record: JobRecord) -> None:
        n = record.spec.n_tasks
        self.record = record
        self.codes = bytearray(n)
        self.batch = array("i", bytes(4 * n))
        self.position = array("i", bytes(4 * n))
        self.round = array("i", bytes(4 * n))
        self.batches: list[str] = []
        self.ranges: list[tuple[int, int]] = []
        """(first task, batch index) of every batch applied as a whole, fresh range."""
        self.seen: set[str] = set()
        self.rounds = [0]
        self.cancelled: set[int] = set()
        self.done = self.failed = 0

    def refresh(self) -> list[int]:
        """Read what is new in the record; returns the tasks resolved by it."""
        names = sorted(set(self.record.status_names()) - self.seen)
        parsed = [(stem, BatchName.parse(stem)) for stem in names]
        if any(name and name.round > self.rounds[-1] for _, name in parsed):
            self.load_rounds()
        resolved: list[int] = []
        for stem, name in parsed:
            if name is not None and name.round <= self.rounds[-1]:
                resolved.extend(self._apply(stem, name.round))
                self.seen.add(stem)
        self.cancelled = self.record.cancelled_rounds()
        return resolved

    def load_rounds(self) -> None:
        for round_ in self.record.rounds():
            if round_ > self.rounds[-1]:
                self.start_round(round_)

    def start_round(self, round_: int) -> None:
        for chunk in self.record.round_chunks(round_):
            for task in chunk:
                self._set(task, PENDING)
                self.round[task] = round_
        self.rounds.append(round_)

    def _apply(self, stem: str, round_: int) -> Sequence[int]:
        status = self.record.read_status(stem)
        failures = status.failures
        index = len(self.batches)
        self.batches.append(stem)
        tasks = status.tasks
        if self._is_fresh_range(tasks, round_):
            return self._apply_range(tasks[0], len(tasks), index, failures)
        resolved = []
        for position, task in enumerate(tasks):
            if self.round[task] != round_ or self.codes[task] == DONE:
                continue
            code = FAILED if str(task) in failures else DONE
            if self.codes[task] == FAILED and code == FAILED:
                continue
            self._set(task, code)
            self.batch[task], self.position[task] = index, position
            resolved.append(task)
        return resolved

    def _is_fresh_range(self, tasks: Sequence[int], round_: int) -> bool:
        """The common case: consecutive tasks, all still pending, no retry round yet."""
        if not tasks or len(self.rounds) > 1 or round_ != 0:
            return False
        first, n = tasks[0], len(tasks)
        return tasks[-1] - first == n - 1 and self.codes.count(PENDING, first, first + n) == n

    def _apply_range(self, first: int, n: int, index: int, failures: dict[str, Any]) -> range:
        stop = first + n
        self.ranges.append((first, index))
        self.codes[first:stop] = bytes([DONE]) * n
        self.batch[first:stop] = array("i", [index]) * n
        self.position[first:stop] = array("i", range(n))
        self.done += n
        for task in map(int, failures):
            self._set(task, FAILED)
        return range(first, stop)

    def _set(self, task: int, code: int) -> None:
        old = self.codes[task]
        self.done += (code == DONE) - (old == DONE)
        self.failed += (code == FAILED) - (old == FAILED)
        self.codes[task] = code

    @property
    def unresolved(self) -> int:
        return len(self.codes) - self.done - self.failed

    def is_cancelled(self, task: int) -> bool:
        return self.round[task] in self.cancelled

    def n_cancelled(self) -> int:
        if not self.cancelled or not self.unresolved:
            return 0
        return sum(
            1
            for task, code in enumerate(self.codes)
            if code == PENDING and self.round[task] in self.cancelled
        )
