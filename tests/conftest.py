"""Fixtures every test gets: no test sees the real home, AWS account or altus settings."""

from __future__ import annotations

import os
from pathlib import Path

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
