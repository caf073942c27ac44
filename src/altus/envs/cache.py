"""Built environments on disk: one folder per spec digest, complete only with its metadata.

Layout, under ``<cache_dir>/envs/`` (``~/.cache/altus/envs/``)::

    <name>/                 the virtual environment; <name> is the digest's first 12 hex
    <name>/altus-env.json   its metadata, written last: present means complete
    .locks/<name>.lock      flock held while the environment is built, touched or removed
    .trash-<name>-<random>/ an environment being removed (renamed first, then deleted)

An environment is built in place, not in a temporary folder that is renamed,
because a virtual environment records its own path in its scripts. Safety
comes from the lock (one builder per digest; the others wait, then reuse) and
from the metadata being written last: a folder without it is a build that was
killed, which the next build of that digest deletes and starts again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

from altus.config import resolve_paths
from altus.envs.requirements import canonical_name
from altus.errors import EnvError

__all__ = [
    "METADATA",
    "Environment",
    "envs_root",
    "find_env",
    "list_envs",
    "load",
    "locked",
    "prune",
    "remove",
    "save",
    "touch",
]

METADATA = "altus-env.json"
FORMAT = 1
LOCKS = ".locks"
TRASH = ".trash-"


@dataclass(frozen=True)
class Environment:
    """A built, complete environment, as its metadata file records it."""

    name: str
    path: Path
    digest: str
    source: Path
    python_version: str
    created: float
    last_used: float
    files: tuple[str, ...] = ()
    requirements: tuple[str, ...] = ()
    apt_packages: tuple[str, ...] = ()
    apt_not_installed: tuple[str, ...] = ()
    conda_only: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()

    @property
    def python(self) -> Path:
        """Its Python interpreter."""
        if os.name == "nt":
            return self.path / "Scripts" / "python.exe"
        return self.path / "bin" / "python"

    @property
    def bin_dir(self) -> Path:
        """The folder of its scripts (``jupyter``, ``python``), to put first on PATH."""
        return self.python.parent

    @property
    def size_bytes(self) -> int:
        """Bytes on disk, each file once (uv hard-links files from its cache, so less is new)."""
        return _tree_size(self.path)

    def packages(self) -> dict[str, str]:
        """Installed distributions, name to version, read from its site-packages."""
        found = metadata.distributions(path=[str(folder) for folder in self._site_packages()])
        pairs = ((dist.metadata["Name"], dist.version) for dist in found)
        return dict(sorted((name, version) for name, version in pairs if name))

    def has(self, distribution: str) -> bool:
        """Whether ``distribution`` (any spelling: ``Jupyter_Lab``, ``jupyterlab``) is installed."""
        wanted = canonical_name(distribution)
        return any(canonical_name(name) == wanted for name in self.packages())

    def to_dict(self) -> dict[str, Any]:
        """Everything about it, for ``--json``: paths as text, times as epoch seconds."""
        return {**_plain(self), "python": str(self.python), "size_bytes": self.size_bytes}

    def _site_packages(self) -> list[Path]:
        return sorted(self.path.glob("lib/*/site-packages")) + sorted(
            self.path.glob("Lib/site-packages")
        )


def envs_root(envs_dir: Path | None = None) -> Path:
    """Where environments live: ``envs_dir``, else ``<XDG cache>/altus/envs``."""
    return envs_dir if envs_dir is not None else resolve_paths(os.environ).cache_dir / "envs"


def load(folder: Path) -> Environment | None:
    """The environment in ``folder`` if it is complete; None for a missing or partial one."""
    try:
        data = json.loads((folder / METADATA).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    try:
        return _from_metadata(folder, data)
    except (KeyError, TypeError, ValueError):
        return None


def save(env: Environment) -> Environment:
    """Write ``env``'s metadata atomically; once it is there the environment counts as built."""
    data = {"format": FORMAT, **_plain(env)}
    del data["path"]  # the folder it is in says that
    temporary = env.path / f".{METADATA}.{uuid.uuid4().hex}"
    temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, env.path / METADATA)
    return env


def touch(env: Environment) -> Environment:
    """``env`` marked as used now."""
    return save(dataclasses.replace(env, last_used=time.time()))


@contextlib.contextmanager
def locked(root: Path, name: str, *, wait: bool = True) -> Iterator[bool]:
    """Hold the lock of environment ``name``; yields False if ``wait`` is off and it is taken."""
    folder = root / LOCKS
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{name}.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def list_envs(envs_dir: Path | None = None) -> list[Environment]:
    """The complete environments, most recently used first."""
    root = envs_root(envs_dir)
    if not root.is_dir():
        return []
    found = [load(folder) for folder in root.iterdir() if not folder.name.startswith(".")]
    return sorted((env for env in found if env), key=lambda env: env.last_used, reverse=True)


def find_env(name: str, envs_dir: Path | None = None) -> Environment:
    """The environment called ``name`` or the only one whose name starts with it."""
    envs = list_envs(envs_dir)
    exact = [env for env in envs if env.name == name]
    matches = exact or [env for env in envs if name and env.name.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise EnvError(f"no environment named {name!r} (altus env list shows them)")
    names = ", ".join(sorted(env.name for env in matches))
    raise EnvError(f"{name!r} matches {len(matches)} environments ({names}); give more of the name")


def remove(name: str, envs_dir: Path | None = None) -> Environment:
    """Delete an environment (waiting for a build of it to finish); returns what it was."""
    root = envs_root(envs_dir)
    env = find_env(name, root)
    with locked(root, env.name):
        _discard(env.path)
    return env


def prune(
    unused_for: timedelta, *, dry_run: bool = False, envs_dir: Path | None = None
) -> list[Environment]:
    """Delete the environments not used for ``unused_for``; returns them.

    Also deletes what killed builds and removals left behind. An environment
    that is being built or touched right now is left alone.
    """
    root = envs_root(envs_dir)
    cutoff = time.time() - unused_for.total_seconds()
    stale = [env for env in list_envs(root) if env.last_used < cutoff]
    if dry_run:
        return stale
    removed = []
    for env in stale:
        with locked(root, env.name, wait=False) as held:
            current = load(env.path) if held else None
            if current is not None and current.last_used < cutoff:
                _discard(env.path)
                removed.append(current)
    _clear_leftovers(root)
    return removed


def _discard(folder: Path) -> None:
    """Take ``folder`` out of use at once (a rename), then delete it."""
    trash = folder.with_name(f"{TRASH}{folder.name}-{uuid.uuid4().hex[:8]}")
    try:
        folder.rename(trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _clear_leftovers(root: Path) -> None:
    if not root.is_dir():
        return
    for folder in root.iterdir():
        if folder.name.startswith(TRASH):
            shutil.rmtree(folder, ignore_errors=True)
        elif not folder.name.startswith(".") and folder.is_dir():
            with locked(root, folder.name, wait=False) as held:
                if held and load(folder) is None:
                    shutil.rmtree(folder, ignore_errors=True)


def _from_metadata(folder: Path, data: dict[str, Any]) -> Environment:
    def strings(key: str) -> tuple[str, ...]:
        return tuple(str(item) for item in data.get(key, ()))

    return Environment(
        name=str(data["name"]),
        path=folder,
        digest=str(data["digest"]),
        source=Path(data["source"]),
        python_version=str(data["python_version"]),
        created=float(data["created"]),
        last_used=float(data["last_used"]),
        files=strings("files"),
        requirements=strings("requirements"),
        apt_packages=strings("apt_packages"),
        apt_not_installed=strings("apt_not_installed"),
        conda_only=strings("conda_only"),
        ignored=strings("ignored"),
    )


def _plain(env: Environment) -> dict[str, Any]:
    """``env``'s fields as JSON values."""
    data = dataclasses.asdict(env)
    for key, value in data.items():
        if isinstance(value, Path):
            data[key] = str(value)
        elif isinstance(value, tuple):
            data[key] = list(value)
    return data


def _tree_size(folder: Path) -> int:
    total = 0
    seen: set[tuple[int, int]] = set()
    for directory, _folders, names in os.walk(folder):
        for name in names:
            try:
                info = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_size
    return total
