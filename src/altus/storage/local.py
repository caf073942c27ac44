"""A store on a local or shared filesystem (``file://`` URLs and plain paths)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from urllib.parse import quote

from altus.storage.store import Store

__all__ = ["LocalStore"]


class LocalStore(Store):
    """Objects are files below ``root``; writes go to a hidden temp file first.

    ``write`` renames the temp file over the key (atomic replace); ``create``
    hard-links it to the key, which fails if the key exists — so of two
    writers racing to record the same thing, exactly one wins, also on NFS.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(os.path.expanduser(os.fspath(root)))
        self.url = "file://" + quote(self.root)  # what Path.as_uri gives, without pathlib
        self._prefix = self.root.rstrip(os.sep) + os.sep

    def path(self, key: str) -> str:
        """The file for ``key`` (plain string joins: this runs for every file written)."""
        return self._prefix + key

    def read(self, key: str) -> bytes:
        with open(self._prefix + key, "rb") as file:
            return file.read()

    def write(self, key: str, data: bytes) -> None:
        tmp = self._write_temp(key, data)
        os.replace(tmp, self.path(key))

    def create(self, key: str, data: bytes) -> bool:
        tmp = self._write_temp(key, data)
        try:
            os.link(tmp, self.path(key))
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True

    def exists(self, key: str) -> bool:
        return os.path.exists(self._prefix + key)

    def list(self, prefix: str) -> Iterator[str]:
        base = self.path(prefix)
        for folder, _dirs, files in os.walk(base):
            rel = os.path.relpath(folder, self.root)
            for name in files:
                if not name.startswith(".tmp-"):
                    yield name if rel == "." else f"{rel}/{name}".replace(os.sep, "/")

    def children(self, prefix: str) -> Iterator[str]:
        try:
            entries = list(os.scandir(self.path(prefix)))
        except FileNotFoundError:
            return
        for entry in entries:
            if not entry.name.startswith(".tmp-"):
                yield entry.name + "/" if entry.is_dir() else entry.name

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._prefix + key)

    def delete_tree(self, prefix: str) -> None:
        shutil.rmtree(self.path(prefix), ignore_errors=True)

    def _write_temp(self, key: str, data: bytes) -> str:
        folder = os.path.dirname(self._prefix + key)
        tmp = f"{folder}/.tmp-{os.urandom(8).hex()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        return tmp
