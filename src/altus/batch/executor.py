"""``Executor``: altus behind the standard ``concurrent.futures`` interface.

Code written for ``ProcessPoolExecutor`` switches to durable, retried,
logged execution on any backend by changing the line that builds the pool.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor as _StdExecutor
from concurrent.futures import Future
from typing import Any

from altus.batch.job import Job
from altus.batch.knot import Knot

__all__ = ["Executor"]


class Executor(_StdExecutor):
    """A ``concurrent.futures.Executor`` whose tasks run as altus jobs.

    Keyword arguments are those of ``Knot`` (backend, workers, retries,
    timeout, store, resources…).
    """

    def __init__(self, backend: str = "local", **knot_options: Any) -> None:
        self._options = {"backend": backend, **knot_options}
        self._maps: list[Job] = []
        self._knots: dict[Callable[..., Any], Knot] = {}
        self._closed = False

    def _knot(self, fn: Callable[..., Any]) -> Knot:
        if self._closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if fn not in self._knots:
            self._knots[fn] = Knot(fn, **self._options)
        return self._knots[fn]

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self._knot(fn).submit(*args, **kwargs)

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
    ) -> Iterator[Any]:
        """Like ``Executor.map``; chunks are sized automatically unless ``chunksize`` is given."""
        job = self._knot(fn).map(zip(*iterables, strict=False), chunksize=chunksize, starmap=True)
        self._maps.append(job)
        return _ordered_results(job, timeout)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closed = True
        for knot in self._knots.values():
            knot.flush()
        for job in self.jobs:
            if cancel_futures and not job.finished():
                job.cancel()
            if wait:
                job.wait()

    @property
    def jobs(self) -> list[Job]:
        """The jobs this executor has started (maps, then batches of submits)."""
        return self._maps + [job for knot in self._knots.values() for job in knot.submitted]


def _ordered_results(job: Job, timeout: float | None) -> Iterator[Any]:
    deadline = None if timeout is None else time.monotonic() + timeout
    futures = job.futures
    try:
        for future in futures:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            yield future.result(remaining)
    except (KeyboardInterrupt, GeneratorExit):
        if not job.finished():
            job.cancel()
        raise
