"""altus: research computing in the cloud and on clusters, without the operations work."""

from __future__ import annotations

import importlib
import typing as _typing

from altus.errors import AltusError

if _typing.TYPE_CHECKING:
    from altus.batch import Executor, Job, Knot, jobs

    __version__: str

__all__ = ["AltusError", "Executor", "Job", "Knot", "__version__", "jobs"]

_LAZY = {
    "Executor": "altus.batch",
    "Job": "altus.batch",
    "Knot": "altus.batch",
    "jobs": "altus.batch",
}


def __getattr__(name: str) -> _typing.Any:
    """Import the batch core on first use, so ``altus --help`` and ``import altus`` stay quick."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name == "__version__":  # importlib.metadata costs 15 ms: only when asked
        globals()[name] = _version()
        return globals()[name]
    raise AttributeError(f"module 'altus' has no attribute {name!r}")


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("altus")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0"
