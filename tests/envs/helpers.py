"""Shared by the environment tests: the project-folder maker's type and a tiny project."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

PROJECT_TOML = """\
[project]
name = "altus-demo-project"
version = "0.1"
dependencies = ["six"]

[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"
"""


class MakeProject(Protocol):
    def __call__(self, files: Mapping[str, str], name: str = ...) -> Path: ...
