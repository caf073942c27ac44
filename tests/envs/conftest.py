"""Fixtures for the environment tests: project folders written from a mapping of files."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from envs.helpers import MakeProject


@pytest.fixture
def make_project(tmp_path: Path) -> MakeProject:
    """Write ``{relative path: text}`` into a new project folder and return the folder."""

    def make(files: Mapping[str, str], name: str = "project") -> Path:
        root = tmp_path / name
        root.mkdir(parents=True, exist_ok=True)
        for relative, text in files.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return root

    return make
