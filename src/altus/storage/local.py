"""A store on a local or shared filesystem (``file://`` URLs and plain paths).

Three rules beyond the ``Store`` contract:

- **Private by default.** Results and captured output often hold secrets, so
  what a store writes is 0600 in 0700 folders; ``mode="group"`` (the
  ``[store] mode`` setting) makes it 0640 in setgid 2750 folders, readable by
  the group that owns the store's folder and by no one else. The mode is
  chosen once, when the root is made (``make_root``); later writers — workers
  that open the record from its URL alone, on any host — follow the mode of
  the root folder they find, so a record keeps one policy whoever writes it.
- **The root is never re-created by a write.** Sub-folders are made on
  demand, but a write below a root that is gone (a removed job) raises
  ``FileNotFoundError`` instead of bringing a stray folder back.
- **A create is a durable commit point.** Every file is fsynced before it is
  renamed or linked into place; ``create`` first fsyncs the folders that
  earlier writes changed, then its own after the link, so whatever a created
  object (a status file) vouches for survives a power cut with it. Plain
  writes are durable at the next ``create`` or ``sync``; batching the folder
  fsyncs there keeps a commit at a few fsyncs, not a few per file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

from altus.errors import StoreError
from altus.storage.store import Store

__all__ = ["MODES", "LocalStore", "Permissions"]


@dataclass(frozen=True)
class Permissions:
    """The modes of the folders and files a store makes."""

    folder: int
    file: int


MODES = {
    "private": Permissions(folder=0o700, file=0o600),
    "group": Permissions(folder=0o2750, file=0o640),
}
"""``[store] mode`` → modes. Group folders are setgid so files keep the store's group."""

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


class LocalStore(Store):
    """Objects are files below ``root``; writes go to a hidden temp file first.

    ``write`` renames the temp file over the key (atomic replace); ``create``
    hard-links it to the key, which fails if the key exists — so of two
    writers racing to record the same thing, exactly one wins, also on NFS.
    """

    def __init__(self, root: str | os.PathLike[str], mode: str = "private") -> None:
        if mode not in MODES:
            raise StoreError(f"store mode {mode!r} is not one of: {', '.join(MODES)}")
        self.root = os.path.abspath(os.path.expanduser(os.fspath(root)))
        self.url = "file://" + quote(self.root)  # what Path.as_uri gives, without pathlib
        self.mode = mode
        self._prefix = self.root.rstrip(os.sep) + os.sep
        self._permissions: Permissions | None = None
        self._unsynced: set[str] = set()
        """Folders whose entries changed since the last fsync of them."""

    def path(self, key: str) -> str:
        """The file for ``key`` (plain string joins: this runs for every file written)."""
        return self._prefix + key

    def make_root(self) -> None:
        """Create the root and any missing parents with this store's mode; durable."""
        permissions = MODES[self.mode]
        missing = []
        folder = self.root
        while not os.path.isdir(folder):
            missing.append(folder)
            folder = os.path.dirname(folder)
        for folder in reversed(missing):
            self._make_folder(folder, permissions)
        self._permissions = None
        self.sync()

    def read(self, key: str) -> bytes:
        with self._translated(), open(self._prefix + key, "rb") as file:
            return file.read()

    def write(self, key: str, data: bytes) -> None:
        tmp = self._write_temp(key, data)
        try:
            os.replace(tmp, self.path(key))
        except BaseException:
            _discard(tmp)
            raise
        self._unsynced.add(os.path.dirname(tmp))

    def create(self, key: str, data: bytes) -> bool:
        tmp = self._write_temp(key, data)
        try:
            self.sync()
            os.link(tmp, self.path(key))
        except FileExistsError:
            return False
        finally:
            _discard(tmp)
        _fsync_folder(os.path.dirname(tmp))
        return True

    def sync(self) -> None:
        """Make every write so far durable: fsync the folders they changed."""
        while self._unsynced:
            folder = self._unsynced.pop()
            with contextlib.suppress(FileNotFoundError):  # removed since: nothing to keep
                _fsync_folder(folder)

    def exists(self, key: str) -> bool:
        return os.path.exists(self._prefix + key)

    def list(self, prefix: str) -> Iterator[str]:
        base = self.path(prefix)
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise self._not_a_folder()
        for folder, _dirs, files in os.walk(base):
            rel = os.path.relpath(folder, self.root)
            for name in files:
                if not name.startswith(".tmp-"):
                    yield name if rel == "." else f"{rel}/{name}".replace(os.sep, "/")

    def children(self, prefix: str) -> Iterator[str]:
        try:
            with self._translated():
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

    def child(self, prefix: str) -> Store:
        return LocalStore(self._prefix + prefix.strip("/"), self.mode)

    # -- writing ---------------------------------------------------------------------------

    def _write_temp(self, key: str, data: bytes) -> str:
        """A fsynced temp file beside ``key`` holding ``data``; removed again on any failure."""
        folder = os.path.dirname(self._prefix + key)
        tmp = f"{folder}/.tmp-{os.urandom(8).hex()}"
        fd = self._open_temp(tmp, folder)
        try:
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            _discard(tmp)
            raise
        return tmp

    def _open_temp(self, tmp: str, folder: str) -> int:
        permissions = self._inherited()
        with self._translated():
            try:
                fd = os.open(tmp, _FLAGS, permissions.file)
            except FileNotFoundError:
                self._make_subfolders(folder, permissions)
                fd = os.open(tmp, _FLAGS, permissions.file)
        if permissions.file != 0o600:  # the umask may have taken the group's bits
            os.fchmod(fd, permissions.file)
        return fd

    def _inherited(self) -> Permissions:
        """The permissions the root folder has: a record keeps the mode it was made with."""
        if self._permissions is None:
            with self._translated():
                root_mode = os.stat(self.root).st_mode
            if not stat.S_ISDIR(root_mode):
                raise self._not_a_folder()
            self._permissions = MODES["group" if root_mode & stat.S_IRGRP else "private"]
        return self._permissions

    def _make_subfolders(self, folder: str, permissions: Permissions) -> None:
        """Make ``folder``'s missing parts below the root; never the root itself."""
        parts = os.path.relpath(folder, self.root).split(os.sep)
        path = self.root
        for part in parts:
            path = os.path.join(path, part)
            with contextlib.suppress(FileExistsError):
                self._make_folder(path, permissions)

    def _make_folder(self, path: str, permissions: Permissions) -> None:
        os.mkdir(path, permissions.folder)
        if permissions.folder != 0o700:  # setgid and the group's bits, whatever the umask
            os.chmod(path, permissions.folder)
        self._unsynced.add(os.path.dirname(path))
        self._unsynced.add(path)

    # -- errors ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """A root that is a file is a bad store, not an internal error."""
        try:
            yield
        except NotADirectoryError as exc:
            if os.path.isdir(self.root):
                raise
            raise self._not_a_folder() from exc

    def _not_a_folder(self) -> StoreError:
        return StoreError(f"store {self.url}: {self.root} is not a folder")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # folders some filesystems cannot sync
            raise
    finally:
        os.close(fd)


def _discard(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
