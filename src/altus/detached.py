"""Processes that outlive the command that started them, and their private files.

The local S3 server and notebook servers both run detached: in their own
session (so closing the terminal, or the death of the process that started
them, does not end them), logging to a file, found again later from a record.
Their secrets live in files that are 0600 from the moment they exist, and every
state folder altus keeps (``private_folder``) is 0700: logs and records of
what ran are nobody else's business on a shared machine. POSIX only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

__all__ = [
    "SpawnFailed",
    "descendants",
    "log_tail",
    "open_private",
    "pid_exists",
    "private_folder",
    "spawn",
    "stop_group",
    "write_private",
]

POLL_SECONDS = 0.1

# Started by ``python -c`` so that the service is its grandchild: reparented at once, it
# is never a zombie of (nor a ResourceWarning in) the process that started it.
_LAUNCHER = """\
import subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=sys.stderr,
                         stderr=sys.stderr, start_new_session=True)
print(child.pid)
"""


class SpawnFailed(OSError):
    """The launcher could not start the command (its reason is the message)."""


def spawn(
    command: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log: Path,
    umask: int = 0o077,
) -> int:
    """Start ``command`` in a new session, stdout and stderr to ``log`` (0600); its pid."""
    with open_private(log) as descriptor:
        try:
            done = subprocess.run(
                [sys.executable, "-I", "-c", _LAUNCHER, *command],
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=descriptor,
                umask=umask,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SpawnFailed(str(exc)) from exc
    pid = done.stdout.decode(errors="replace").strip()
    if done.returncode != 0 or not pid.isdigit():
        raise SpawnFailed(f"cannot start {command[0]}")
    return int(pid)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` atomically into a file that is 0600 from the moment it exists."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def private_folder(path: Path) -> Path:
    """``path`` as a folder only its owner can enter (0700), with any missing parents 0700.

    Parents that exist keep their modes (they may be the user's); ``path`` itself is
    altus's own and is made 0700 even if an older version left it open.
    """
    missing = []
    folder = path
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made by another process meanwhile
            folder.mkdir(mode=0o700)
    path.chmod(0o700)
    return path


@contextlib.contextmanager
def open_private(path: Path, *, append: bool = False) -> Iterator[int]:
    """A descriptor on ``path``, 0600 even if it existed with other modes; truncated
    unless ``append``."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    descriptor = os.open(path, flags, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
        yield descriptor
    finally:
        os.close(descriptor)


def log_tail(path: Path, lines: int = 3) -> str:
    """``see PATH, which ends: ...`` with the log's last non-empty lines, for an error."""
    try:
        with path.open("rb") as stream:
            stream.seek(max(0, path.stat().st_size - 4096))
            text = stream.read().decode(errors="replace")
    except OSError:
        return f"see {path}"
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    tail = " | ".join(kept[-lines:])
    return f"see {path}, which ends: {tail}" if tail else f"see {path} (empty)"


def pid_exists(pid: int) -> bool:
    """Whether a process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True  # no procfs (macOS): trust kill(0)
    return state != "Z"


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, grandchildren...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def stop_group(
    pid: int, running: Callable[[], bool], timeout: float, kill_wait: float = 5.0
) -> bool:
    """SIGTERM ``pid``'s process group, SIGKILL it if ``running()`` after ``timeout``;
    whether it is gone. ``pid`` must lead its own session (``spawn`` makes it so)."""
    for signum, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, kill_wait)):
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            return True
        if wait_until(lambda: not running(), wait):
            return True
    return False


def wait_until(done: Callable[[], bool], timeout: float) -> bool:
    """Poll ``done`` every ``POLL_SECONDS`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True
