"""Backends by name: a read-only registry, imported on first use.

Third parties add a backend through the ``altus.backends`` entry-point group
(``name = "package.module:Class"``); altus's own are listed here.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from types import MappingProxyType

from altus.batch.backends.base import Backend, Launch, Resources
from altus.errors import BackendUnavailable, ConfigError

__all__ = ["BUILTIN", "Backend", "Launch", "Resources", "get_backend", "known_backends"]

BUILTIN: Mapping[str, tuple[str, str | None]] = MappingProxyType(
    {
        "local": ("altus.batch.backends.local:LocalBackend", None),
        "slurm": ("altus.batch.backends.slurm:SlurmBackend", None),
        "dask": ("altus.batch.backends.dask:DaskBackend", "dask"),
    }
)
"""name → ("module:Class", the pip extra it needs or None)."""


def known_backends() -> dict[str, str]:
    found = {name: target for name, (target, _extra) in BUILTIN.items()}
    for entry in entry_points(group="altus.backends"):
        found.setdefault(entry.name, entry.value)
    return found


def get_backend(name: str) -> Backend:
    """A new backend instance for ``name``; a missing extra is named in the error."""
    target = known_backends().get(name)
    if target is None:
        raise ConfigError(f"unknown backend {name!r}; known: {', '.join(sorted(known_backends()))}")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = BUILTIN.get(name, ("", None))[1]
        hint = (
            f"pip install 'altus[{extra}]'" if extra else f"install the package providing {target}"
        )
        raise BackendUnavailable(f"backend {name!r} is not available ({exc}); {hint}") from exc
    backend: Backend = getattr(module, class_name)()
    return backend
