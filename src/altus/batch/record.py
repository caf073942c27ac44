"""The job record: everything about one map, in one folder of a store.

The record is the only thing a client and its workers share, so it is a
fixed, documented layout in which every object is written atomically and
never changed afterwards (format 2)::

    <store>/<job id>/
      spec.json                       JobSpec: function, backend, resources, counts, chunk bounds
      function.pkl                    the function, cloudpickled
      inputs/<chunk>.pkl              the inputs of one chunk (a list), cloudpickled
      rounds/<round>.json             tasks a retry runs again, split into chunks (round >= 1)
      launched/r<R>                   the backend took round R (R >= 1): it is no longer starting
      claims/r<R>-c<chunk>-a<A>.json  a worker took chunk <chunk> of round R, attempt A
      results/<batch>.pkl             one pickled list: each task's return value (or exception)
      status/<batch>.json             per-task status of the same tasks; the commit point
      logs/<task>.out, <task>.err     what a task printed, only when it printed anything
      cancelled/r<R>                  round R was cancelled
      ended/r<R>                      no worker of the local pool that ran round R is left
      removed                         the record is being removed: handles say so, not "lost"
      backend/<name>.json             what the backend needs to watch or cancel its workers

A worker commits the tasks it finished as a *batch* named
``r<R>-c<chunk>-a<A>-b<seq>``: the results file first, then the status file,
created exclusively. A task is done exactly when a status file lists it, so
a result is recorded once or not at all, and a worker killed between the two
writes loses only work that is run again. Batching (a worker commits at most
every ``FLUSH_SECONDS``) is what makes 10,000 tiny tasks cost a few dozen
writes instead of 20,000.

Status files are compact, columnar JSON, in the order of the results list:
``tasks`` is a list of ``[first, stop)`` runs of consecutive task indices
(usually one); ``start`` and ``duration`` (seconds, float64; a task started at
``clock + start`` on the wall clock) and ``peak_memory`` (bytes, int64) hold
one number per task, each column packed as base64 of its little-endian
bytes — parsing 10,000 numbers as JSON text costs the client more than
running 10,000 tiny tasks. ``failures``
maps a failed task to its error fields and ``output`` maps a task that
printed to its stdout and stderr byte counts; ``results_bytes`` is the size of
the batch's results file, so a file that a power cut left short (the record
is made durable where results are handed out, not at each commit) is found
and its tasks run again by a retry. A task belongs to the newest round that
lists it; entries of older rounds are history.
"""

from __future__ import annotations

import base64
import getpass
import itertools
import json
import os
import re
import secrets
import socket
import sys
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from altus.errors import JobNotFound, RecordDamaged, RecordError, StoreError
from altus.storage import Store, open_store

__all__ = [
    "FAILURE_FIELDS",
    "FORMAT",
    "BatchName",
    "BatchStatus",
    "Commit",
    "JobRecord",
    "JobSpec",
    "new_job_id",
]

FORMAT = 2
"""The layout version written into every spec; readers refuse any other."""
MAX_TASKS = (1 << 31) - 1
"""The most tasks one job can have: a task's position in its batch is a 32-bit integer."""
LARGE_JOB_TASKS = 1 << 20
"""Above this many tasks (13 MB of per-task state) a reader checks the spec against inputs/ first."""

_BATCH = re.compile(r"^r(\d+)-c(\d+)-a(\d+)-(b\d+|died\d*)$")
_CLAIM = re.compile(r"^r(\d+)-c(\d+)-a\d+\.json$")
_ROUND = re.compile(r"^(\d+)\.json$")
_INPUT = re.compile(r"^\d{6,}\.pkl$")


def new_job_id(name: str) -> str:
    """``<name>-<UTC date>-<time>-<4 hex>``: sortable, readable, unique enough."""
    slug = re.sub(r"[^a-z0-9_.]+", "-", name.lower()).strip("-.")[:40] or "job"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"{slug}-{stamp}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class JobSpec:
    """What was submitted; written once as ``spec.json``."""

    id: str
    name: str
    function: str
    backend: str
    n_tasks: int
    bounds: tuple[int, ...]
    """Chunk k holds tasks ``bounds[k]`` to ``bounds[k+1] - 1``."""
    calling: str = "item"
    """How a task's input is passed: ``f(x)`` (item), ``f(*x)`` (star) or ``f(*a, **k)`` (args_kwargs)."""
    retries: int = 2
    timeout: float | None = None
    workers: int | None = None
    resources: dict[str, Any] = field(default_factory=dict)
    backend_options: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0
    host: str = ""
    user: str = ""
    altus_version: str = ""
    python: str = ""
    format: int = FORMAT

    @property
    def n_chunks(self) -> int:
        return len(self.bounds) - 1

    def to_json(self) -> bytes:
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return json.dumps(fields, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> JobSpec:
        try:
            fields = json.loads(data)
            if not isinstance(fields, dict):
                raise TypeError(f"expected an object, found {type(fields).__name__}")
            written = fields.get("format", 0)
            if written != FORMAT:
                who = "a newer altus; upgrade" if written > FORMAT else "an older altus"
                raise RecordError(
                    f"{where} is in record format {written}, written by {who} "
                    f"(this one reads format {FORMAT})"
                )
            fields["bounds"] = _checked_bounds(fields.get("bounds"), fields.get("n_tasks"))
            return cls(**fields)._checked()
        except (ValueError, TypeError, KeyError) as exc:
            raise RecordDamaged(f"{where} is damaged: {exc}", "spec.json") from exc

    def _checked(self) -> JobSpec:
        """Itself, once every field has its type and range; ValueError naming the first that does not."""
        for name, check in _SPEC_CHECKS.items():
            value = getattr(self, name)
            if not check(value):
                raise ValueError(f"{name} is {value!r}, which a spec never holds")
        return self


def _is_count(value: object) -> bool:
    return type(value) is int and value >= 0


def _is_text(value: object) -> bool:
    return isinstance(value, str)


def _is_number(value: object) -> bool:
    return type(value) in (int, float)


_SPEC_CHECKS: dict[str, Callable[[Any], bool]] = {
    "id": _is_text,
    "name": _is_text,
    "function": _is_text,
    "backend": _is_text,
    "calling": lambda value: value in ("item", "star", "args_kwargs"),
    "retries": _is_count,
    "timeout": lambda value: value is None or (_is_number(value) and value > 0),
    "workers": lambda value: value is None or (_is_count(value) and value > 0),
    "resources": lambda value: isinstance(value, dict),
    "backend_options": lambda value: isinstance(value, dict),
    "created": _is_number,
    "host": _is_text,
    "user": _is_text,
    "altus_version": _is_text,
    "python": _is_text,
}
"""What each spec field must be, beyond n_tasks and bounds (checked first, together)."""


def _checked_bounds(bounds: object, n_tasks: object) -> tuple[int, ...]:
    """Chunk bounds as a tuple: integers rising strictly from 0 to ``n_tasks``.

    Checked before anything reads ``n_tasks``: a spec whose count disagrees with
    its own chunks is damaged, so nothing ever allocates for a count alone.
    """
    if not _is_count(n_tasks) or n_tasks > MAX_TASKS:  # type: ignore[operator]
        raise ValueError(f"n_tasks is {n_tasks!r}, not a count of at most {MAX_TASKS}")
    if not isinstance(bounds, list) or not bounds or bounds[0] != 0:
        raise ValueError("bounds is not a list of chunk bounds starting at 0")
    if not all(type(bound) is int for bound in bounds):
        raise ValueError("bounds holds something other than integers")
    if any(low >= high for low, high in itertools.pairwise(bounds)):
        raise ValueError("bounds do not rise strictly")
    if bounds[-1] != n_tasks:
        raise ValueError(f"bounds end at {bounds[-1]}, but n_tasks is {n_tasks}")
    return tuple(bounds)


def submission_context() -> dict[str, Any]:
    """Where and by whom a job is submitted, for the spec."""
    from altus import __version__

    return {
        "created": time.time(),
        "host": socket.gethostname(),
        "user": getpass.getuser(),
        "altus_version": __version__,
        "python": sys.version.split()[0],
    }


@dataclass(frozen=True)
class BatchName:
    """``r<round>-c<chunk>-a<attempt>-<tag>``: who committed a batch."""

    round: int
    chunk: int
    attempt: int
    tag: str

    def __str__(self) -> str:
        return f"r{self.round}-c{self.chunk:06d}-a{self.attempt}-{self.tag}"

    @classmethod
    def parse(cls, stem: str) -> BatchName | None:
        match = _BATCH.match(stem)
        if not match:
            return None
        return cls(int(match[1]), int(match[2]), int(match[3]), match[4])


@dataclass
class Commit:
    """The tasks of one batch, column by column, as a worker builds it."""

    tasks: Sequence[int] = field(default_factory=list)
    clock: float = 0.0
    """Wall-clock time (seconds since the epoch) at ``start == 0``."""
    start: Sequence[float] = field(default_factory=list)
    duration: Sequence[float] = field(default_factory=list)
    peak_memory: Sequence[int] = field(default_factory=list)
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)
    """task → exit_reason, error_type, message, traceback."""
    output: dict[str, list[int]] = field(default_factory=dict)
    """task → [stdout bytes, stderr bytes], for tasks that printed anything."""

    def __len__(self) -> int:
        return len(self.tasks)

    def to_json(self, **extra: Any) -> bytes:
        head = json.dumps(
            {**extra, "tasks": _runs(self.tasks), "failures": self.failures, "output": self.output}
        )
        columns = (
            f'"start": "{_pack("d", self.start)}", '
            f'"duration": "{_pack("d", self.duration)}", '
            f'"peak_memory": "{_pack("q", self.peak_memory)}", '
            f'"clock": {self.clock!r}}}'
        )
        # base64 needs no escaping: splicing it in spares json.dumps a scan of every byte
        return f"{head[:-1]}, {columns}".encode()


class BatchStatus:
    """One status file, parsed and checked; the per-task columns are decoded only when used.

    The checks cost a few steps per run and per failure, never per task, so a
    client reading 10,000 tiny tasks pays nothing for them; anything out of
    type or range raises ValueError, which the record turns into a ``RecordDamaged``
    naming the file.
    """

    def __init__(self, data: bytes, n_tasks: int) -> None:
        fields = json.loads(data)
        self.runs = _checked_runs(fields["tasks"], n_tasks)
        """``[first, stop)`` runs of the tasks, as the file lists them."""
        self.tasks: Sequence[int] = (
            range(*self.runs[0])
            if len(self.runs) == 1
            else [task for first, stop in self.runs for task in range(first, stop)]
        )
        self.host: str = _typed(fields, "host", str)
        self.pid: int = _typed(fields, "pid", int)
        self.clock: float = _typed(fields, "clock", (int, float))
        self.failures: dict[str, dict[str, Any]] = _checked_failures(fields["failures"], self.tasks)
        """task → exit_reason, error_type, message, traceback."""
        self.output: dict[str, list[int]] = _typed(fields, "output", dict)
        self.results_bytes: int | None = (
            _typed(fields, "results_bytes", int) if "results_bytes" in fields else None
        )
        """The size of the batch's results file, to tell one a power cut tore (None: older)."""
        self._packed = {name: _checked_column(fields, name, len(self.tasks)) for name in _COLUMNS}

    @cached_property
    def start(self) -> array[float]:
        """Seconds on the worker's clock; ``clock + start[i]`` is the wall-clock start."""
        return self._column("start", "d")

    @cached_property
    def duration(self) -> array[float]:
        return self._column("duration", "d")

    @cached_property
    def peak_memory(self) -> array[int]:
        return self._column("peak_memory", "q")

    def _column(self, name: str, kind: str) -> array[Any]:
        try:
            return _unpack(kind, self._packed[name])
        except ValueError as exc:
            raise RecordError(f"status column {name} cannot be decoded: {exc}") from exc


_COLUMNS = ("start", "duration", "peak_memory")
"""The packed columns of a status file, 8 bytes per task each."""
FAILURE_FIELDS = frozenset({"exit_reason", "error_type", "message", "traceback"})


def _typed(fields: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = fields[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{name} is {type(value).__name__}")
    return value


def _checked_runs(runs: object, n_tasks: int) -> list[list[int]]:
    """``[first, stop)`` runs of tasks, each inside ``range(n_tasks)``."""
    if not isinstance(runs, list):
        raise ValueError("tasks is not a list of runs")
    for run in runs:
        if not (isinstance(run, list) and len(run) == 2 and all(type(end) is int for end in run)):
            raise ValueError(f"tasks holds {run!r}, not a [first, stop) run")
        if not 0 <= run[0] < run[1] <= n_tasks:
            raise ValueError(f"tasks run {run} is empty or outside the job's {n_tasks} tasks")
    return runs


def _checked_failures(failures: object, tasks: Sequence[int]) -> dict[str, dict[str, Any]]:
    """task → failure, for tasks of this batch only, each with exactly the failure fields."""
    if not isinstance(failures, dict):
        raise ValueError("failures is not a map")
    members = tasks if isinstance(tasks, range) or not failures else set(tasks)
    for key, failure in failures.items():
        if not (key.isdigit() and str(int(key)) == key and int(key) in members):
            raise ValueError(f"failures names task {key!r}, which this batch does not hold")
        if not isinstance(failure, dict) or failure.keys() != FAILURE_FIELDS:
            raise ValueError(f"the failure of task {key} lacks its fields")
        if not all(isinstance(text, str) for text in failure.values()):
            raise ValueError(f"the failure of task {key} holds something other than text")
    return failures


def _checked_column(fields: dict[str, Any], name: str, n: int) -> str:
    """A packed column's text, once its length says it holds ``n`` numbers of 8 bytes."""
    text = fields[name]
    if not isinstance(text, str):
        raise ValueError(f"column {name} is not packed")
    if len(text) != 4 * ((8 * n + 2) // 3):
        raise ValueError(f"column {name} does not hold {n} entries")
    return text


def _checked_chunks(data: bytes, n_tasks: int) -> list[list[int]]:
    """The chunks of a rounds file: lists of task indices below ``n_tasks``."""
    chunks = json.loads(data)["chunks"]
    if not isinstance(chunks, list) or not all(isinstance(chunk, list) for chunk in chunks):
        raise ValueError("chunks is not a list of lists of tasks")
    for task in (task for chunk in chunks for task in chunk):
        if type(task) is not int or not 0 <= task < n_tasks:
            raise ValueError(f"a chunk holds {task!r}, not a task below {n_tasks}")
    return chunks


def _runs(tasks: Sequence[int]) -> list[list[int]]:
    """``[first, stop)`` runs of consecutive integers, in order."""
    if isinstance(tasks, range) and tasks.step == 1:
        return [[tasks.start, tasks.stop]] if tasks else []
    if not tasks:
        return []
    first = tasks[0]
    if tasks[-1] - first == len(tasks) - 1 and list(tasks) == list(range(first, tasks[-1] + 1)):
        return [[first, tasks[-1] + 1]]
    runs = [[first, first + 1]]
    for task in tasks[1:]:
        if task == runs[-1][1]:
            runs[-1][1] += 1
        else:
            runs.append([task, task + 1])
    return runs


def _pack(kind: str, values: Sequence[Any]) -> str:
    packed = array(kind, values)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def _unpack(kind: str, text: str) -> array[Any]:
    values = array(kind, base64.b64decode(text))
    if sys.byteorder == "big":
        values.byteswap()
    return values


class JobRecord:
    """One job's folder in a store, with the reads and writes its parts need."""

    def __init__(self, store: Store, spec: JobSpec) -> None:
        self.store = store
        self.spec = spec
        self._rounds: dict[int, list[list[int]]] = {}

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def url(self) -> str:
        return self.store.url

    # -- creating and opening -------------------------------------------------

    @classmethod
    def create(
        cls, root: Store, spec: JobSpec, function_blob: bytes, chunk_blobs: Iterable[bytes]
    ) -> JobRecord | None:
        """Write a new record; None if a record with this id exists (draw another id).

        A record that cannot be written whole (a full disk) is removed again and
        reported as one ``StoreError``: no half-written folder is left behind.
        """
        store = root.child(spec.id)
        claimed = False
        try:
            store.make_root()
            if not store.create("function.pkl", function_blob):  # claims the id
                return None
            claimed = True
            for chunk, blob in enumerate(chunk_blobs):
                store.write(f"inputs/{chunk:06d}.pkl", blob)
            store.write("spec.json", spec.to_json())  # last: a record with a spec is complete
        except OSError as exc:
            if claimed or not any(store.children("")):
                store.delete_tree("")
            reason = (exc.strerror or str(exc)).lower()
            raise StoreError(f"cannot write the job record to {root.url}: {reason}") from exc
        return cls(store, spec)

    @classmethod
    def open(cls, url: str | Store) -> JobRecord:
        store = open_store(url)
        try:
            data = store.read("spec.json")
        except FileNotFoundError:
            raise JobNotFound(f"no job record at {store.url}") from None
        return cls(store, JobSpec.from_json(data, where=f"{store.url}/spec.json"))

    @classmethod
    def find(cls, root: Store, job_id: str) -> JobRecord:
        if not job_id or "/" in job_id or job_id.startswith("."):
            raise JobNotFound(f"no job {job_id!r} in {root.url}")
        try:
            return cls.open(root.child(job_id))
        except JobNotFound:
            raise JobNotFound(f"no job {job_id!r} in {root.url}") from None

    # -- pieces a worker reads ------------------------------------------------

    def function_blob(self) -> bytes:
        return self._read("function.pkl")

    def input_blob(self, chunk: int) -> bytes:
        return self._read(f"inputs/{chunk:06d}.pkl")

    def chunk_tasks(self, round_: int, chunk: int) -> range | list[int]:
        """The task indices that chunk ``chunk`` of round ``round_`` runs."""
        if not 0 <= chunk < self.n_chunks(round_):
            raise RecordError(f"job {self.id} has no chunk {chunk} in round {round_}")
        if round_ == 0:
            return range(self.spec.bounds[chunk], self.spec.bounds[chunk + 1])
        return self.round_chunks(round_)[chunk]

    def input_chunk_of(self, task: int) -> int:
        from bisect import bisect_right

        return bisect_right(self.spec.bounds, task) - 1

    # -- rounds -----------------------------------------------------------------

    def round_chunks(self, round_: int) -> list[list[int]]:
        """The chunks of a retry round; ``RecordDamaged`` naming the file if it is damaged."""
        if round_ not in self._rounds:
            key = f"rounds/{round_}.json"
            try:
                self._rounds[round_] = _checked_chunks(self._read(key), self.spec.n_tasks)
            except (ValueError, TypeError, KeyError) as exc:
                raise self.damaged(key, exc) from exc
        return self._rounds[round_]

    def n_chunks(self, round_: int) -> int:
        return self.spec.n_chunks if round_ == 0 else len(self.round_chunks(round_))

    def rounds(self) -> list[int]:
        """Every round of the job, oldest first; round 0 is the original map."""
        names = map(_ROUND.match, self.store.children("rounds"))
        found = {int(match[1]) for match in names if match} - {0}
        return [0, *sorted(found)]

    def add_round(self, round_: int, chunks: Sequence[Sequence[int]]) -> bool:
        """Create round ``round_`` (the one after the newest the caller read); False if
        another process created it first. The caller names the round, so the loser of a
        race never goes on to create the round after it."""
        body = {"chunks": [list(chunk) for chunk in chunks], "created": time.time()}
        return self.store.create(f"rounds/{round_}.json", json.dumps(body).encode())

    def round_created(self, round_: int) -> float:
        """When round ``round_`` (>= 1) was created; 0 for records older than the field."""
        key = f"rounds/{round_}.json"
        try:
            return float(json.loads(self._read(key)).get("created", 0.0))
        except (ValueError, TypeError, AttributeError) as exc:
            raise self.damaged(key, exc) from exc

    def mark_launched(self, round_: int) -> None:
        self.store.write(f"launched/r{round_}", str(time.time()).encode())

    def is_launched(self, round_: int) -> bool:
        return round_ == 0 or self.store.exists(f"launched/r{round_}")

    # -- claims, commits, logs ------------------------------------------------

    def claim(self, round_: int, chunk: int, attempt: int) -> None:
        body = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()})
        self.store.write(f"claims/r{round_}-c{chunk:06d}-a{attempt}.json", body.encode())

    def claimed_chunks(self) -> set[tuple[int, int]]:
        """(round, chunk) of every chunk a worker has claimed, whatever the attempt."""
        claims = map(_CLAIM.match, self.store.children("claims"))
        return {(int(match[1]), int(match[2])) for match in claims if match}

    def commit(self, name: BatchName, commit: Commit, results: bytes) -> bool:
        """Record a batch: results first, then the status file that makes it count."""
        self.store.write(f"results/{name}.pkl", results)
        status = commit.to_json(
            host=socket.gethostname(), pid=os.getpid(), results_bytes=len(results)
        )
        return self.store.create(f"status/{name}.json", status)

    def is_torn(self, stem: str) -> bool:
        """Whether a batch's results file is not what its status says it wrote: a power cut
        before the results reached the disk (durability comes where results are handed
        out, not at each commit). Only stores that can tell cheaply are asked."""
        expected = self.read_status(stem).results_bytes
        if expected is None:
            return False
        try:
            size = self.store.size(f"results/{stem}.pkl")
        except FileNotFoundError:
            return True
        return size is not None and size != expected

    def status_names(self) -> Iterator[str]:
        for name in self.store.children("status"):
            if name.endswith(".json"):
                yield name[:-5]

    def recorded_tasks(self, round_: int) -> set[int]:
        """Tasks that already have a status in ``round_`` (to skip on a rerun)."""
        recorded: set[int] = set()
        for stem in self.status_names():
            name = BatchName.parse(stem)
            if name is not None and name.round == round_:
                recorded.update(self.read_status(stem).tasks)
        return recorded

    def read_status(self, stem: str) -> BatchStatus:
        """A status file, checked against the chunk its name gives; ``RecordDamaged`` naming it
        if it cannot be read as one (a missing file stays a plain ``RecordError``)."""
        key = f"status/{stem}.json"
        data = self._read(key)
        try:
            status = BatchStatus(data, self.spec.n_tasks)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise self.damaged(key, exc) from exc
        name = BatchName.parse(stem)
        if name is not None:
            self._check_in_chunk(key, status, name)
        return status

    def _check_in_chunk(self, key: str, status: BatchStatus, name: BatchName) -> None:
        """Every run of ``status`` lies in the chunk its batch name gives (runs, not tasks, in round 0)."""
        try:
            chunk = self.chunk_tasks(name.round, name.chunk)
        except RecordError as exc:
            raise self.damaged(key, exc) from exc
        if isinstance(chunk, range):
            inside = all(chunk.start <= first and stop <= chunk.stop for first, stop in status.runs)
        else:
            inside = set(status.tasks) <= set(chunk)
        if not inside:
            raise self.damaged(
                key, f"it lists tasks outside chunk {name.chunk} of round {name.round}"
            )

    def damaged(self, key: str, why: object) -> RecordDamaged:
        """The one-line error for a file of this record that cannot be read as what it is."""
        return RecordDamaged(f"{self.url}/{key} is damaged: {why}", key)

    def read_results(self, stem: str) -> bytes:
        return self._read(f"results/{stem}.pkl")

    def write_log(self, task: int, stream: str, data: bytes) -> None:
        self.store.write(f"logs/{task:06d}.{stream}", data)

    def read_log(self, task: int, stream: str) -> bytes:
        try:
            return self.store.read(f"logs/{task:06d}.{stream}")
        except FileNotFoundError:
            return b""

    # -- cancellation and backend state ---------------------------------------------

    def cancel(self, round_: int) -> None:
        self.store.write(f"cancelled/r{round_}", str(time.time()).encode())

    def cancelled_rounds(self) -> set[int]:
        return {int(name[1:]) for name in self.store.children("cancelled") if name[1:].isdigit()}

    def is_cancelled(self, round_: int) -> bool:
        return self.store.exists(f"cancelled/r{round_}")

    def end_round(self, round_: int) -> None:
        """Say that no worker of this runner writes round ``round_`` any more; never into a
        record already removed (that would bring a removed prefix back)."""
        if self.store.exists("spec.json"):
            self.store.write(f"ended/r{round_}", str(time.time()).encode())

    def has_ended(self, round_: int) -> bool:
        return self.store.exists(f"ended/r{round_}")

    def mark_removed(self, removing: bool = True) -> None:
        """Written before a removal cancels the job (and deleted if it gives up), so every
        handle watching the job can tell a removal from a lost job."""
        if removing:
            self.store.write("removed", str(time.time()).encode())
        else:
            self.store.delete("removed")

    def is_removed(self) -> bool:
        return self.store.exists("removed") or not self.store.exists("spec.json")

    def write_backend_state(self, backend: str, state: dict[str, Any]) -> None:
        self.store.write(f"backend/{backend}.json", json.dumps(state).encode())

    def backend_state(self, backend: str) -> dict[str, Any] | None:
        key = f"backend/{backend}.json"
        try:
            state = json.loads(self.store.read(key))
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise self.damaged(key, exc) from exc
        if not isinstance(state, dict):
            raise self.damaged(key, "it is not an object")
        return state

    def check_size(self) -> None:
        """Before a reader allocates per-task state for a large job, the record must hold
        as many input chunks as the spec declares, each big enough for its tasks (a pickled
        input takes a byte at least): a count alone is never trusted."""
        if self.spec.n_tasks <= LARGE_JOB_TASKS:
            return
        held = sum(1 for name in self.store.children("inputs") if _INPUT.match(name))
        if held != self.spec.n_chunks:
            raise self.damaged(
                "spec.json",
                f"it declares {self.spec.n_tasks} tasks in {self.spec.n_chunks} chunk(s), "
                f"but inputs/ holds {held}",
            )
        bounds = self.spec.bounds
        for chunk in range(self.spec.n_chunks):
            size = self.store.size(f"inputs/{chunk:06d}.pkl")
            if size is not None and size < bounds[chunk + 1] - bounds[chunk]:
                raise self.damaged(
                    "spec.json",
                    f"it declares {bounds[chunk + 1] - bounds[chunk]} tasks in chunk {chunk}, "
                    f"whose inputs hold {size} bytes",
                )

    def sync(self) -> None:
        """Make everything written to the record so far durable: what a client hands out
        as a result must survive a power cut (``Store.sync``; one call, not one per file)."""
        self.store.sync()

    def remove(self) -> list[str]:
        """Delete every object of the record; returns what is still there afterwards (a
        writer the caller did not wait for), after one more try to delete it. The spec goes
        first: whatever order the rest goes in, the record then reads as removed (a handle
        that sees the cancel must not find the ``removed`` marker gone and the spec there)."""
        self.store.delete("spec.json")
        self.store.delete_tree("")
        left = sorted(self.store.list(""))
        if left:
            time.sleep(0.2)
            self.store.delete_tree("")
            left = sorted(self.store.list(""))
        return left

    def _read(self, key: str) -> bytes:
        try:
            return self.store.read(key)
        except FileNotFoundError:
            raise RecordError(f"job record {self.url} is damaged: {key} is missing") from None


def job_ids(root: Store) -> list[str]:
    """Ids of the records directly below ``root``, oldest first by name."""
    return sorted(name[:-1] for name in root.children("") if name.endswith("/"))
