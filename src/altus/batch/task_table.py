"""Where each task of a job stands, built up from its status files as they appear.

One byte per task (pending, done, failed, damaged) and three integer arrays
(which batch, which position in it, which round), so counting a 100,000-task
job costs about 1.3 MB and no result is read to do it.

A damaged file affects only what it holds. A status file that cannot be read
as one (broken JSON, tasks outside the chunk its name gives, columns that do
not match) is named in ``damaged`` and skipped; the tasks of its chunk that no
other file settles are *damaged*: finished, without a result, counted as
pending. A damaged round file is named too, and the round is left out: its
tasks keep what earlier rounds recorded.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Any

from altus.batch.record import BatchName, BatchStatus, JobRecord
from altus.errors import RecordDamaged, RecordError

__all__ = ["DAMAGED", "DONE", "FAILED", "PENDING", "TaskTable"]

PENDING, DONE, FAILED, DAMAGED = 0, 1, 2, 3


class TaskTable:
    """Where each task stands, built up from status files as they appear."""

    def __init__(self, record: JobRecord) -> None:
        record.check_size()  # before anything of the spec's size is allocated
        n = record.spec.n_tasks
        self.record = record
        self.codes = bytearray(n)
        self.batch = array("i", bytes(4 * n))
        self.position = array("i", bytes(4 * n))
        self.round = array("i", bytes(4 * n))
        self.batches: list[str] = []
        self.sizes: dict[str, int] = {}
        """How many tasks each batch applied lists (its results file holds as many)."""
        self.damaged: dict[str, str] = {}
        """Key of every damaged file of the record → the one-line error that names it."""
        self.bad_rounds: set[int] = set()
        self.ranges: list[tuple[int, int]] = []
        """(first task, batch index) of every batch applied as a whole, fresh range."""
        self.seen: set[str] = set()
        self.rounds = [0]
        self.cancelled: set[int] = set()
        self.done = self.failed = self.n_damaged = 0

    def refresh(self) -> list[int]:
        """Read what is new in the record; returns the tasks resolved by it."""
        names = sorted(set(self.record.status_names()) - self.seen)
        parsed = [(stem, BatchName.parse(stem)) for stem in names]
        if any(name and name.round > self.rounds[-1] for _, name in parsed):
            self.load_rounds()
        resolved: list[int] = []
        for stem, name in parsed:
            if name is not None and name.round <= self.rounds[-1]:
                if name.round not in self.bad_rounds:
                    resolved.extend(self._read_and_apply(stem, name))
                self.seen.add(stem)
        self.cancelled = self.record.cancelled_rounds()
        return resolved

    def load_rounds(self) -> None:
        for round_ in self.record.rounds():
            if round_ > self.rounds[-1]:
                self.start_round(round_)

    def start_round(self, round_: int) -> None:
        try:
            chunks = self.record.round_chunks(round_)
        except RecordDamaged as exc:
            self.damaged[exc.key] = str(exc)
            self.bad_rounds.add(round_)
            chunks = []
        for chunk in chunks:
            for task in chunk:
                self._set(task, PENDING)
                self.round[task] = round_
        self.rounds.append(round_)

    def _read_and_apply(self, stem: str, name: BatchName) -> Sequence[int]:
        try:
            status = self.record.read_status(stem)
        except RecordDamaged as exc:
            self.damaged[exc.key] = str(exc)
            return self._mark_damaged(stem, name)
        return self._apply(stem, name.round, status)

    def _mark_damaged(self, stem: str, name: BatchName) -> list[int]:
        """The tasks of a damaged batch's chunk that nothing settled yet: damaged, pointing at it."""
        index = len(self.batches)
        self.batches.append(stem)
        marked = []
        for task in self.chunk_tasks(name.round, name.chunk):
            if self.codes[task] == PENDING and self.round[task] == name.round:
                self._set(task, DAMAGED)
                self.batch[task] = index
                marked.append(task)
        return marked

    def chunk_tasks(self, round_: int, chunk: int) -> Sequence[int]:
        """The tasks of a chunk of a round this table knows; none for a damaged or unknown one."""
        if round_ in self.bad_rounds or round_ not in self.rounds:
            return ()
        try:
            return self.record.chunk_tasks(round_, chunk)
        except RecordError:
            return ()

    def _apply(self, stem: str, round_: int, status: BatchStatus) -> Sequence[int]:
        failures = status.failures
        index = len(self.batches)
        self.batches.append(stem)
        self.sizes[stem] = len(status.tasks)
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
        self.n_damaged += (code == DAMAGED) - (old == DAMAGED)
        self.codes[task] = code

    @property
    def unresolved(self) -> int:
        """Tasks without an outcome: pending, running, cancelled or damaged."""
        return len(self.codes) - self.done - self.failed

    def finished(self) -> bool:
        """Nothing is left to come: every task is done, failed, cancelled or damaged."""
        return self.unresolved == self.n_damaged + self.n_cancelled()

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
