"""``Knot``: a function tied to where and how it runs, and its ``map``."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from typing import Any

import cloudpickle

from altus.batch.backends import Backend, Launch, Resources, get_backend
from altus.batch.job import Job
from altus.batch.record import JobRecord, JobSpec, new_job_id, submission_context
from altus.config import load_settings
from altus.errors import ConfigError, SubmitError
from altus.storage import open_store

__all__ = ["Knot", "auto_chunksize"]

CHUNKS_PER_WORKER = 4
"""Enough chunks per worker to even out uneven tasks, few enough to keep overhead low."""
MAX_CHUNK_BYTES = 64 << 20
"""A chunk of inputs larger than this is split, so no worker downloads one huge pickle."""


def auto_chunksize(n_tasks: int, workers: int) -> int:
    """About ``CHUNKS_PER_WORKER`` chunks per worker: 10,000 tiny tasks → a few dozen chunks."""
    return max(1, math.ceil(n_tasks / (max(1, workers) * CHUNKS_PER_WORKER)))


class Knot:
    """Run ``func`` over many inputs, durably, on a backend.

    >>> job = Knot(fit_subject, resources={"cpus": 2}).map(subjects)
    >>> job.gather()

    Nothing starts until ``map`` or ``submit``; every result, error and log
    goes to a job record in ``store`` (by default a folder under the user's
    data directory) that outlives this process.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        backend: str | None = None,
        workers: int | None = None,
        retries: int | None = None,
        timeout: float | None = None,
        store: str | None = None,
        name: str | None = None,
        resources: Resources | dict[str, Any] | None = None,
        **backend_options: Any,
    ) -> None:
        if not callable(func):
            raise ConfigError(f"Knot needs a function, got {type(func).__name__}")
        resolved = load_settings()
        settings = resolved.batch
        self.func = func
        self.backend_name = backend or settings.backend
        self.workers = workers if workers is not None else settings.workers
        self.retries = retries if retries is not None else settings.retries
        self.timeout = timeout if timeout is not None else settings.timeout
        self.store_url = store or resolved.default_store_url
        self.name: str = name or getattr(func, "__name__", None) or "job"
        self.resources = Resources.from_user(resources)
        self.backend_options = backend_options
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got {self.workers}")
        if self.retries < 0:
            raise ConfigError(f"retries must be 0 or more, got {self.retries}")
        self._backend: Backend | None = None

    def __repr__(self) -> str:
        return f"Knot({self.name}, backend={self.backend_name!r}, store={self.store_url!r})"

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = get_backend(self.backend_name)
        return self._backend

    def map(
        self, iterable: Iterable[Any], *, chunksize: int | None = None, starmap: bool = False
    ) -> Job:
        """Run the function on every item (``f(*item)`` with ``starmap``); returns at once."""
        items = iterable if isinstance(iterable, Sequence) else list(iterable)
        return self._launch(items, chunksize, "star" if starmap else "item")

    def submit(self, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``func(*args, **kwargs)`` once; a real ``concurrent.futures.Future``."""
        return self.submit_job(*args, **kwargs).futures[0]

    def submit_job(self, *args: Any, **kwargs: Any) -> Job:
        """``submit``, returning the one-task ``Job`` instead of its future."""
        return self._launch([(args, kwargs)], 1, "args_kwargs")

    def _launch(self, items: Sequence[Any], chunksize: int | None, calling: str) -> Job:
        backend = self.backend
        workers = self.workers or max(1, len(os.sched_getaffinity(0)) // self.resources.cpus)
        size = chunksize or auto_chunksize(len(items), workers)
        if size < 1:
            raise ConfigError(f"chunksize must be at least 1, got {size}")
        blobs, bounds = _pickle_chunks(items, size)
        spec = JobSpec(
            id=new_job_id(self.name),
            name=self.name,
            function=_qualified_name(self.func),
            backend=self.backend_name,
            n_tasks=len(items),
            bounds=tuple(bounds),
            calling=calling,
            retries=self.retries,
            timeout=self.timeout,
            workers=self.workers,
            resources=self.resources.to_dict(),
            backend_options=self.backend_options,
            **submission_context(),
        )
        root = open_store(self.store_url)
        record = JobRecord.create(root, spec, _pickle_function(self.func), blobs)
        backend.launch(Launch(record, 0, spec.n_chunks, self.workers, self.resources))
        return Job(record, backend)


def _qualified_name(func: Callable[..., Any]) -> str:
    module = getattr(func, "__module__", None) or "?"
    return f"{module}.{getattr(func, '__qualname__', repr(func))}"


def _pickle_function(func: Callable[..., Any]) -> bytes:
    try:
        return bytes(cloudpickle.dumps(func))
    except Exception as exc:
        raise SubmitError(f"cannot pickle the function {_qualified_name(func)}: {exc}") from exc


def _pickle_chunks(items: Sequence[Any], size: int) -> tuple[list[bytes], list[int]]:
    """Pickle ``items`` in chunks of ``size``, halving any chunk over ``MAX_CHUNK_BYTES``."""
    blobs: list[bytes] = []
    bounds = [0]
    pending = [(start, min(start + size, len(items))) for start in range(0, len(items), size)]
    pending.reverse()
    while pending:
        start, stop = pending.pop()
        blob = _pickle_inputs(items, start, stop)
        if len(blob) > MAX_CHUNK_BYTES and stop - start > 1:
            middle = (start + stop) // 2
            pending.extend([(middle, stop), (start, middle)])
            continue
        blobs.append(blob)
        bounds.append(stop)
    return blobs, bounds


def _pickle_inputs(items: Sequence[Any], start: int, stop: int) -> bytes:
    chunk = list(items[start:stop])
    try:
        return bytes(cloudpickle.dumps(chunk, protocol=5))
    except Exception as exc:
        for index in range(start, stop):
            try:
                cloudpickle.dumps(items[index])
            except Exception as item_exc:
                what = type(items[index]).__name__
                raise SubmitError(
                    f"cannot pickle input {index} (a {what}) to send it to a worker: {item_exc}"
                ) from item_exc
        raise SubmitError(f"cannot pickle inputs {start}..{stop - 1}: {exc}") from exc
