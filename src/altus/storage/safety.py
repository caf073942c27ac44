"""Where an object may be written on disk: below the destination folder, nowhere else.

S3 accepts any key, including ``../../.bashrc``, ``/etc/cron.d/x``, keys with
a NUL byte or Windows separators. A download maps a key's relative part to a
file below the destination; ``local_target`` refuses every key for which that
mapping is not a plain, one-to-one path below it, so that a hostile bucket can
at worst fail its own files.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from altus.errors import UnsafeKeyError

__all__ = ["local_target", "unsafe_reason"]

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
