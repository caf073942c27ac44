"""Fixtures every test gets: no test sees the real home, AWS account or altus settings."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import pytest

XDG_FOLDERS = {
    "XDG_CONFIG_HOME": "config",
    "XDG_DATA_HOME": "data",
    "XDG_STATE_HOME": "state",
}


@pytest.fixture(autouse=True)
def clean_environ(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Clear ``AWS_*`` and ``ALTUS_*``; point XDG folders and AWS files at a fresh home.

    Returns that home, whose ``config``, ``data`` and ``state`` folders are the
    XDG config, data and state homes for this test and any process it starts.
    """
    for name in list(os.environ):
        if name.startswith(("AWS_", "ALTUS_")):
            monkeypatch.delenv(name)
    home = tmp_path_factory.mktemp("home")
    for variable, folder in XDG_FOLDERS.items():
        monkeypatch.setenv(variable, str(home / folder))
    # Without these, an AWS SDK would still read ~/.aws or ask the EC2 metadata service.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "aws" / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "aws" / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return home


class RunAltus(Protocol):
    def __call__(
        self, *args: str, input: str | None = None, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]: ...


@pytest.fixture
def run_altus() -> RunAltus:
    """Run the real ``altus`` command (``python -m altus.cli.main``) in a child process."""

    def run(
        *args: str, input: str | None = None, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "altus.cli.main", *args],
            input=input,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run
