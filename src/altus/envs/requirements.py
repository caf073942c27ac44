"""Reading pip requirement lines the way pip and uv read them, without running either.

The spec needs three things from a requirements file before anything is
installed: its content in a normal form (for the digest, so that a comment or a
reordering does not build a new environment), the files it includes with
``-r``/``-c`` (whose content changes the build too), and the distribution names
it asks for (so that ``with_packages`` adds no duplicate).
"""

from __future__ import annotations

import re
from pathlib import Path

from altus.errors import EnvError

__all__ = [
    "canonical_name",
    "included_files",
    "is_local",
    "logical_lines",
    "normal_form",
    "requirement_name",
]

_INCLUDE = re.compile(
    r"^(?:-r|-c|--requirement|--constraint)(?:\s*=\s*|\s+|(?=[^\s-]))(?P<file>\S+)$"
)
_NAME = re.compile(r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:$|[\[<>=!~;@ (])")
_EDITABLE = re.compile(r"^(?:-e|--editable)(?:\s*=\s*|\s+)(?P<target>\S.*)$")
_SPACED_OPERATOR = re.compile(r"\s*([<>=!~]=?|===|[,;\[\]()])\s*")
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def logical_lines(text: str) -> list[str]:
    """Requirement lines with comments, blank lines and backslash continuations resolved."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = pending + raw
        if line.endswith("\\"):
            pending = line[:-1]
            continue
        pending = ""
        line = _strip_comment(line).strip()
        if line:
            lines.append(" ".join(line.split()))
    if pending.strip():
        lines.append(" ".join(_strip_comment(pending).split()))
    return lines


def normal_form(line: str) -> str:
    """``line`` without the spaces around operators that do not change it (``a >= 1`` is ``a>=1``)."""
    return _SPACED_OPERATOR.sub(r"\1", line)


def included_files(path: Path) -> list[Path]:
    """``path`` and every local file it includes with ``-r``/``-c``, recursively, once each."""
    found: list[Path] = []
    _collect(path, found)
    return found


def requirement_name(line: str) -> str | None:
    """The canonical distribution name a line asks for; None for options, paths and URLs."""
    if line.startswith("-") or is_local(line) or _URL.match(line):
        return None
    match = _NAME.match(line)
    return canonical_name(match["name"]) if match else None


def canonical_name(name: str) -> str:
    """A distribution name as PEP 503 compares them (``Foo_Bar`` is ``foo-bar``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def is_local(line: str) -> bool:
    """Whether a requirement names something on this disk (a folder, a file, ``-e .``).

    The same text means different code in another project, so the digest adds
    the project folder for such lines.
    """
    editable = _EDITABLE.match(line)
    target = editable["target"] if editable else line
    return target.startswith((".", "/", "~", "file:")) or " @ file:" in target


def _collect(path: Path, found: list[Path]) -> None:
    resolved = path.resolve()
    if resolved in found:
        return
    try:
        text = resolved.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise EnvError(f"{path}: requirements file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise EnvError(f"{path}: cannot read requirements file: {exc}") from exc
    found.append(resolved)
    for line in logical_lines(text):
        include = _INCLUDE.match(line)
        if include and not _URL.match(include["file"]):
            _collect(resolved.parent / include["file"], found)


def _strip_comment(line: str) -> str:
    """``line`` up to a ``#`` at its start or after whitespace (pip's rule; URLs keep theirs)."""
    match = re.search(r"(^|\s)#", line)
    return line[: match.start()] if match else line
