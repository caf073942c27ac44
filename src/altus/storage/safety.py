"""Where an object may be written on disk: below the destination folder, nowhere else.

S3 accepts any key, including ``../../.bashrc``, ``/etc/cron.d/x``, keys with
a NUL byte or Windows separators. A download maps a key's relative part to a
file below the destination; ``local_target`` refuses every key for which that
mapping is not a plain, one-to-one path below it, so that a hostile bucket can
at worst fail its own files.

A check of paths at planning time cannot hold while the copy runs: someone who
can write to the destination (a shared project folder) may swap a sub-folder
for a symbolic link, or plant a link at a temp name altus is about to open.
So the writing side never uses a path below the destination root: each folder
is opened once as a descriptor, component by component, refusing links
(``DestinationFolders``), and every file is created, reopened, renamed and
removed relative to its folder's descriptor, new names exclusively
(``create_private``), existing ones only when they are plain files of ours
linked nowhere else (``open_own``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import threading
from pathlib import Path

from altus.errors import UnsafeKeyError

__all__ = [
    "DestinationFolders",
    "create_private",
    "local_target",
    "open_own",
    "unsafe_reason",
    "user_file_mode",
]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")
_MAX_NAME_BYTES = 255


def unsafe_reason(relative: str) -> str | None:
    """Why ``relative`` (a key below the copied prefix) cannot be a file path; None if it can."""
    if not relative:
        return "it is empty"
    if _CONTROL.search(relative):
        return "it contains a NUL or control character"
    if "\\" in relative:
        return "it contains a backslash"
    if relative.startswith("/") or _DRIVE.match(relative):
        return "it is an absolute path"
    for part in relative.split("/"):
        if part in ("", ".", ".."):
            what = "an empty" if not part else f"a {part!r}"
            return f"it has {what} path segment"
        if len(part.encode()) > _MAX_NAME_BYTES:
            return f"a path segment is longer than {_MAX_NAME_BYTES} bytes"
    return None


def local_target(root: Path, relative: str, checked: dict[str, bool] | None = None) -> Path:
    """The file below ``root`` for ``relative``; ``UnsafeKeyError`` if it would not be one.

    Beyond the checks on the text, the resolved path must stay below the
    resolved root, so a symbolic link inside the destination that points
    elsewhere is not followed out of it either. ``checked`` remembers folders
    already resolved, so a copy of many files resolves each folder once.
    """
    reason = unsafe_reason(relative)
    if reason:
        raise UnsafeKeyError(f"refusing key {relative!r}: {reason}")
    target = root / relative
    parent = os.path.dirname(relative)
    checked = {} if checked is None else checked
    if parent not in checked:
        real_root = os.path.realpath(root)
        real_parent = os.path.realpath(root / parent)
        checked[parent] = os.path.commonpath([real_root, real_parent]) == real_root
    if not checked[parent]:
        raise UnsafeKeyError(f"refusing key {relative!r}: it leads outside {root}")
    return target


_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NOT_A_FOLDER = (errno.ELOOP, errno.ENOTDIR)
_NOT_A_PLAIN_FILE = (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.EACCES, errno.EPERM)
KEEP_IDLE = 64
"""Folder descriptors kept open while no file of theirs is being written: enough that
a copy going through folders in turn rarely opens one twice, few enough for any fd limit."""


class DestinationFolders:
    """The folders below a download's destination ``root``, each opened as a descriptor.

    ``root`` is the user's own path and is followed like any path they name;
    below it no symbolic link is followed and a missing folder is made, so a
    folder swapped for a link fails its files instead of receiving them. A
    descriptor stays valid whatever happens to the names afterwards. A folder
    is held while a file in it is written; idle ones are closed beyond
    ``KEEP_IDLE``, and all of them by ``close``.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.file_mode = user_file_mode()
        self._root_fd: int | None = None
        self._open: dict[str, list[int]] = {}  # folder -> [descriptor, files being written]
        self._idle: dict[str, None] = {}  # in the order they fell idle
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def hold(self, folder: str) -> tuple[int, bool]:
        """A descriptor of ``folder`` (relative to the root, ``"."`` for the root itself)
        and whether this is the first time it was asked for."""
        with self._lock:
            entry = self._open.get(folder)
            if entry is None:
                entry = self._open[folder] = [self._walk(folder), 0]
            entry[1] += 1
            self._idle.pop(folder, None)
            first = folder not in self._seen
            self._seen.add(folder)
            return entry[0], first

    def release(self, folder: str) -> None:
        with self._lock:
            entry = self._open[folder]
            entry[1] -= 1
            if entry[1] == 0:
                self._idle[folder] = None
            if len(self._idle) > KEEP_IDLE:
                oldest = next(iter(self._idle))
                del self._idle[oldest]
                os.close(self._open.pop(oldest)[0])

    def close(self) -> None:
        with self._lock:
            for fd, _ in self._open.values():
                os.close(fd)
            self._open.clear()
            self._idle.clear()
            if self._root_fd is not None:
                os.close(self._root_fd)
                self._root_fd = None

    def _walk(self, folder: str) -> int:
        fd = os.dup(self._root_descriptor())
        parts = [] if folder == "." else folder.split("/")
        for depth, name in enumerate(parts):
            try:
                child = _open_folder(fd, name, self.root.joinpath(*parts[: depth + 1]))
            finally:
                os.close(fd)
            fd = child
        return fd

    def _root_descriptor(self) -> int:
        if self._root_fd is None:
            os.makedirs(self.root, exist_ok=True)
            self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return self._root_fd


def _open_folder(parent: int, name: str, shown: Path) -> int:
    """The sub-folder ``name`` of ``parent``, made if missing; never through a link."""
    if name in ("", ".", ".."):
        raise UnsafeKeyError(f"refusing to write below {shown}: a {name!r} path segment")
    try:
        try:
            return os.open(name, _FOLDER, dir_fd=parent)
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o777, dir_fd=parent)
            return os.open(name, _FOLDER, dir_fd=parent)
    except OSError as exc:
        if exc.errno not in _NOT_A_FOLDER:
            raise
        raise UnsafeKeyError(
            f"refusing to write below {shown}: it is a symbolic link or a file, not a folder"
        ) from exc


def create_private(folder: int, name: str, flags: int = os.O_WRONLY) -> int:
    """A new file ``name`` in ``folder``, readable by its owner alone; whatever is already
    at that name (a link planted there) fails it and is never opened."""
    try:
        return os.open(
            name,
            flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=folder,
        )
    except FileExistsError as exc:
        raise UnsafeKeyError(
            f"refusing to reuse {name}: something is already at that name"
        ) from exc


def open_own(folder: int, name: str, flags: int) -> int | None:
    """The file ``name`` in ``folder`` if it is a plain file of this user's linked nowhere
    else; None if there is none, or what is there is not one (a link, another user's
    file, a hard link to a file elsewhere, a fifo), so that nothing is done through it."""
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in _NOT_A_PLAIN_FILE:
            return None
        raise
    found = os.fstat(fd)
    if stat.S_ISREG(found.st_mode) and found.st_uid == os.geteuid() and found.st_nlink == 1:
        return fd
    os.close(fd)
    return None


def user_file_mode() -> int:
    """The mode ``cp`` gives a new file: 0666 less the umask. Linux shows the umask in
    /proc; elsewhere it is read by setting it, which races other threads making files."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask
