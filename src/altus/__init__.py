"""altus: research computing in the cloud and on clusters, without the operations work."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from altus.batch import Executor, Job, Knot, jobs
from altus.errors import AltusError

try:
    __version__ = version("altus")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["AltusError", "Executor", "Job", "Knot", "__version__", "jobs"]
