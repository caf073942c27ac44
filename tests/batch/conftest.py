"""Fixtures shared by the batch tests of every backend."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    """A fresh, empty ``file://`` store for one test."""
    root = tmp_path / "store"
    root.mkdir()
    return root.as_uri()
