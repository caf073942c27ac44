"""``Knot``: a function tied to where and how it runs, and its ``map``."""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import replace
from functools import partial
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
SUBMIT_WINDOW = 0.005
"""Seconds ``submit`` waits for more calls to put in the same job."""
SUBMIT_BATCH = 10_000
MAX_CHUNK_BYTES = 64 << 20
"""A chunk of inputs larger than this is split, so no worker downloads one huge pickle."""


def auto_chunksize(n_tasks: int, workers: int, single_task_chunks_per_worker: int = 0) -> int:
    """About ``CHUNKS_PER_WORKER`` chunks per worker (10,000 tiny tasks → a few dozen
    chunks), or one task per chunk for a map of at most ``single_task_chunks_per_worker``
    tasks per worker."""
    workers = max(1, workers)
    if n_tasks <= workers * single_task_chunks_per_worker:
        return 1
    return max(1, math.ceil(n_tasks / (workers * CHUNKS_PER_WORKER)))


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
        given = {"backend": backend, "workers": workers, "retries": retries, "timeout": timeout}
        resolved = load_settings(overrides={"batch": {**given, "store": store}})
        settings = resolved.batch
        self.func = func
        self.backend_name = settings.backend
        self.workers = settings.workers
        self.retries = settings.retries
        self.timeout = settings.timeout
        self.store_url = resolved.default_store_url
        self.store_mode = resolved.store.mode
        self.name: str = name or getattr(func, "__name__", None) or "job"
        self.resources = Resources.from_user(resources)
        self.backend_options = backend_options
        self._backend: Backend | None = None
        self._submit_lock = threading.Lock()
        self._batch: list[tuple[tuple[Any, ...], dict[str, Any], Future[Any]]] | None = None
        self._pickled_function: bytes | None = None
        self.submitted: list[Job] = []
        """Jobs started by ``submit``, oldest first."""

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
        """Run ``func(*args, **kwargs)`` once; a real ``concurrent.futures.Future``.

        Calls made within ``SUBMIT_WINDOW`` seconds of each other become one
        job, so a loop of 10,000 submits is one record, not 10,000.
        """
        self._function_blob()  # fail here, not later in a worker
        _check_arguments(args, kwargs)
        with self._submit_lock:
            if self._batch is None:
                self._batch = []
                timer = threading.Timer(SUBMIT_WINDOW, self._flush_quietly)
                timer.daemon = True
                timer.start()
            future: Future[Any] = Future()
            self._batch.append((args, kwargs, future))
            full = len(self._batch) >= SUBMIT_BATCH
        if full:
            self.flush()
        return future

    def flush(self) -> Job | None:
        """Start the job for the submits gathered so far (``submit`` does this by itself)."""
        with self._submit_lock:
            batch, self._batch = self._batch, None
        calls = [(a, k, f) for a, k, f in batch or () if f.set_running_or_notify_cancel()]
        if not calls:
            return None
        try:
            job = self._launch([(args, kwargs) for args, kwargs, _ in calls], None, "args_kwargs")
        except BaseException as exc:
            for _args, _kwargs, future in calls:
                future.set_exception(exc)
            raise
        self.submitted.append(job)
        for future, proxy in zip(job.futures, (f for _, _, f in calls), strict=True):
            future.add_done_callback(partial(_copy_outcome, proxy))
        return job

    def _flush_quietly(self) -> None:
        """``flush`` from the timer thread: an error is already in every future it concerns,
        and raising it here would only print a thread traceback."""
        with contextlib.suppress(Exception):
            self.flush()

    def _function_blob(self) -> bytes:
        if self._pickled_function is None:
            self._pickled_function = _pickle_function(self.func)
        return self._pickled_function

    def _launch(self, items: Sequence[Any], chunksize: int | None, calling: str) -> Job:
        backend = self.backend
        workers = self.workers or max(1, len(os.sched_getaffinity(0)) // self.resources.cpus)
        size = chunksize or auto_chunksize(
            len(items), workers, backend.single_task_chunks_per_worker
        )
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
        root = open_store(self.store_url, self.store_mode)
        function_blob = self._function_blob()
        record = JobRecord.create(root, spec, function_blob, blobs)
        while record is None:  # the id was taken: same name, same second, same 16 bits
            spec = replace(spec, id=new_job_id(self.name))
            record = JobRecord.create(root, spec, function_blob, blobs)
        try:
            backend.launch(Launch(record, 0, spec.n_chunks, self.workers, self.resources))
        except BaseException:
            record.remove()  # a job that never started leaves no record behind
            raise
        return Job(record, backend)


def _copy_outcome(proxy: Future[Any], future: Future[Any]) -> None:
    if future.cancelled():
        proxy.cancel()
    elif future.exception() is not None:
        proxy.set_exception(future.exception())
    else:
        proxy.set_result(future.result())


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


def _check_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    named = [(f"argument {i}", value) for i, value in enumerate(args)]
    named += [(f"keyword argument {key!r}", value) for key, value in kwargs.items()]
    for what, value in named:
        try:
            cloudpickle.dumps(value)
        except Exception as exc:
            raise SubmitError(
                f"cannot pickle {what} (a {type(value).__name__}) to send it to a worker: {exc}"
            ) from exc


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
