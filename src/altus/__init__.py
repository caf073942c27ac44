"""altus: research computing in the cloud and on clusters, without the operations work."""

from __future__ import annotations

import importlib
import typing as _typing
from importlib import metadata as _metadata

from altus.errors import AltusError

if _typing.TYPE_CHECKING:
    from altus.batch import Executor, Job, Knot, jobs

try:
    __version__ = _metadata.version("altus")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

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
    raise AttributeError(f"module 'altus' has no attribute {name!r}")
