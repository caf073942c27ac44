"""Running uv, apt-get and postBuild: output kept for the error, shown only when asked.

A build's tools print a lot; the user needs it while waiting (``quiet=False``)
and needs its end when something fails. So every command's stdout and stderr
are read together, echoed to stderr unless quiet, and the last lines kept.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from altus.errors import EnvError

__all__ = ["Finished", "condense_uv_error", "run_logged", "uv_binary"]

TAIL_LINES = 200
UV_MISSING = "building environments needs uv: pip install 'uv>=0.5'"


@dataclass(frozen=True)
class Finished:
    """A command's exit status and the last lines it printed."""

    returncode: int
    tail: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def last_lines(self, count: int) -> list[str]:
        """The last ``count`` non-blank lines, for an error message."""
        return [line for line in self.tail if line.strip()][-count:]


def uv_binary() -> str:
    """The uv executable: the one from the ``uv`` package, else one on PATH."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found is None:
            raise EnvError(UV_MISSING) from None
        return found


def run_logged(
    command: Sequence[str],
    *,
    quiet: bool,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Finished:
    """Run ``command`` to the end; echo its output to stderr unless ``quiet``."""
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    try:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    except OSError as exc:
        raise EnvError(f"cannot run {command[0]}: {exc.strerror or exc}") from exc
    with process:
        assert process.stdout is not None  # stdout=PIPE above
        for line in process.stdout:
            tail.append(line.rstrip("\n"))
            if not quiet:
                sys.stderr.write(line)
                sys.stderr.flush()
    return Finished(process.wait(), tuple(tail))


def condense_uv_error(lines: Sequence[str]) -> str:
    """uv's ``error:`` and the ``cause:`` lines under it as one line, in uv's own words.

    uv explains a failed resolve as ``error: No solution found…`` followed by
    ``cause: Because …`` lines, wrapped with indented continuations. The
    caret lines that point into a bad requirement are dropped; hints and
    warnings are left out.
    """
    parts: list[str] = []
    inside = False
    for raw in lines:
        line = raw.strip()
        if raw.startswith("error:"):
            inside = True
            parts.append(line.removeprefix("error:").strip())
        elif not raw[:1].isspace():  # any other line at column 0 (or a blank one) ends it
            inside = False
        elif inside and line.startswith("cause:"):
            parts.append(line.removeprefix("cause:").strip())
        elif inside and set(line) - set("^~- "):
            parts[-1] = f"{parts[-1]} {line}"
    if not parts:
        return " ".join(line.strip() for line in lines if line.strip())[-500:] or "uv failed"
    return ": ".join(dict.fromkeys(parts))
