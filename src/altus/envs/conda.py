"""The part of a conda ``environment.yml`` that a uv environment can honour.

Binder installs an ``environment.yml`` with conda; altus has no conda, so it
takes what pip can install (the ``pip:`` list), the Python version
(``python=3.X``), and reports every other dependency as conda-only.

The file is read with a small parser for the subset that environment files use
in practice, so that altus needs no YAML library: top-level ``key:`` entries,
block lists (``- item``, indented or not), one nested ``- pip:`` list, flow
lists (``[a, b]``), quoted scalars and comments. Keys other than
``dependencies`` are skipped. Anything else inside ``dependencies`` is
refused with its line number rather than guessed at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from altus.errors import EnvError

__all__ = ["CondaEnvironment", "parse_environment_yml"]

_KEY = re.compile(r"^(?P<key>[A-Za-z_][\w.-]*)\s*:(?:\s+(?P<value>.*))?$")
_PIP_ITEM = re.compile(r"^pip\s*:(?:\s+(?P<value>.*))?$")
_PYTHON_PIN = re.compile(r"^python(?:\s*==?\s*|\s+)(?P<version>\d+(?:\.\d+)*)(?:\.\*)?$")
_NAME = re.compile(r"^(?:[\w.-]+::)?(?P<name>[A-Za-z0-9_][\w.-]*)")


@dataclass(frozen=True)
class CondaEnvironment:
    """What altus takes from an ``environment.yml``."""

    pip: tuple[str, ...] = ()
    conda_only: tuple[str, ...] = ()
    python_version: str | None = None


@dataclass(frozen=True)
class _Line:
    number: int
    indent: int
    text: str


def parse_environment_yml(text: str, where: Path | str) -> CondaEnvironment:
    """The pip list, conda-only packages and Python pin of an ``environment.yml``."""
    lines = _content_lines(text)
    dependencies: list[str | list[str]] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.indent != 0 or _KEY.match(line.text) is None:
            raise EnvError(f"{where}:{line.number}: expected a top-level 'key:' line")
        block, index = _block(lines, index + 1)
        match = _KEY.match(line.text)
        if match is not None and match["key"] == "dependencies":
            dependencies = _dependencies(match["value"], block, where)
    return _split(dependencies)


def _content_lines(text: str) -> list[_Line]:
    """Non-blank lines without comments or document markers, with their indent."""
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = _strip_comment(raw).rstrip()
        if not stripped.strip() or stripped in ("---", "..."):
            continue
        body = stripped.lstrip(" ")
        lines.append(_Line(number, len(stripped) - len(body), body))
    return lines


def _strip_comment(raw: str) -> str:
    """``raw`` up to a ``#`` that starts a comment (at the start or after a space, unquoted)."""
    quote = ""
    for position, char in enumerate(raw):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (position == 0 or raw[position - 1] in " \t"):
            return raw[:position]
    return raw


def _block(lines: list[_Line], start: int) -> tuple[list[_Line], int]:
    """The lines that belong to the key before ``start``: indented, or a list at column 0."""
    end = start
    while end < len(lines) and (lines[end].indent > 0 or lines[end].text.startswith("- ")):
        end += 1
    return lines[start:end], end


def _dependencies(
    value: str | None, block: list[_Line], where: Path | str
) -> list[str | list[str]]:
    if value:
        if block:
            raise EnvError(f"{where}:{block[0].number}: 'dependencies' has a value and a list")
        return list(_flow_list(value, where))
    items: list[str | list[str]] = []
    index = 0
    while index < len(block):
        line = block[index]
        item = _list_item(line, where)
        pip = _PIP_ITEM.match(item)
        if pip is None:
            items.append(_scalar(item))
            index += 1
            continue
        nested, index = _nested_list(block, index + 1, line.indent, where)
        if pip["value"] and nested:
            raise EnvError(f"{where}:{line.number}: 'pip' has a value and a list")
        pip_items = _flow_list(pip["value"], where) if pip["value"] else nested
        items.append([*pip_items])
    return items


def _nested_list(
    block: list[_Line], start: int, parent_indent: int, where: Path | str
) -> tuple[list[str], int]:
    """The ``- item`` lines deeper than the ``- pip:`` line at ``parent_indent``."""
    end = start
    while end < len(block) and block[end].indent > parent_indent:
        end += 1
    return [_scalar(_list_item(line, where)) for line in block[start:end]], end


def _list_item(line: _Line, where: Path | str) -> str:
    if not line.text.startswith("-") or line.text[1:2] not in ("", " "):
        message = "expected a '- item' line (altus reads a list of dependencies"
        raise EnvError(f"{where}:{line.number}: {message} with an optional 'pip:' list)")
    return line.text[1:].strip()


def _flow_list(value: str, where: Path | str) -> list[str]:
    value = value.strip()
    if not (value.startswith("[") and value.endswith("]")):
        raise EnvError(f"{where}: expected a list, got {value!r}")
    return [_scalar(item) for item in value[1:-1].split(",") if item.strip()]


def _scalar(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _split(dependencies: list[str | list[str]]) -> CondaEnvironment:
    pip: list[str] = []
    conda_only: list[str] = []
    python_version: str | None = None
    for item in dependencies:
        if isinstance(item, list):
            pip.extend(item)
            continue
        name = _NAME.match(item)
        pin = _PYTHON_PIN.match(item.split("::")[-1].strip())
        if pin is not None:
            python_version = pin["version"]
        elif name is None or name["name"].lower() not in ("python", "pip"):
            conda_only.append(item)
    return CondaEnvironment(tuple(pip), tuple(conda_only), python_version)
