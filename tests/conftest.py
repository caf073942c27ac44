"""Fixtures every test gets: no test sees the real home, AWS account or altus settings.

Also ``s3_server`` (one SeaweedFS S3 server per session), ``s3_bucket`` (a fresh
bucket on it) and ``s3_env`` (``AWS_*`` pointing at it), for the tests that ask;
``other_user`` (a second local account) and ``shared_tmp`` (a folder that account
can reach) for the tests of what another user on a shared machine can see.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from helpers import OtherUser, s3_client

if TYPE_CHECKING:
    from altus.storage.server import ServerInfo

XDG_FOLDERS = {
    "XDG_CONFIG_HOME": "config",
    "XDG_DATA_HOME": "data",
    "XDG_STATE_HOME": "state",
    "XDG_CACHE_HOME": "cache",
}


@pytest.fixture(scope="session")
def uv_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """uv's package cache, shared by the whole session so each wheel is downloaded once.

    A ``UV_CACHE_DIR`` set outside the tests (a CI cache) is kept.
    """
    given = os.environ.get("UV_CACHE_DIR")
    return Path(given) if given else tmp_path_factory.mktemp("uv-cache")


@pytest.fixture(autouse=True)
def clean_environ(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory, uv_cache_dir: Path
) -> Path:
    """Clear ``AWS_*`` and ``ALTUS_*``; point XDG folders and AWS files at a fresh home.

    Returns that home, whose ``config``, ``data``, ``state`` and ``cache``
    folders are the XDG homes for this test and any process it starts. uv's
    package cache is the session's (``uv_cache_dir``), not under that home.
    """
    for name in list(os.environ):
        if name.startswith(("AWS_", "ALTUS_")):
            monkeypatch.delenv(name)
    home = tmp_path_factory.mktemp("home")
    for variable, folder in XDG_FOLDERS.items():
        monkeypatch.setenv(variable, str(home / folder))
    monkeypatch.setenv("UV_CACHE_DIR", str(uv_cache_dir))
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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
    """One SeaweedFS S3 server for the whole session, stopped at its end.

    It has its own state folder under the session's temporary folder, so it
    never meets a developer's ``altus data serve`` nor the per-test XDG folders.
    SeaweedFS comes with the test extra; where it is missing the tests that
    use it fail (they are never skipped, so CI cannot pass without them).
    """
    from altus.storage import server

    state_dir = tmp_path_factory.mktemp("s3-server")
    info = server.start(state_dir=state_dir)
    yield info
    server.stop(state_dir=state_dir, timeout=5)  # its data is throwaway: no long grace


@pytest.fixture
def s3_bucket(s3_server: ServerInfo) -> Iterator[str]:
    """A new bucket on the session's S3 server, removed with its objects afterwards."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
        region_name=s3_server.region,
    )
    name = f"test-{uuid.uuid4().hex[:20]}"
    client.create_bucket(Bucket=name)
    yield name
    # SeaweedFS deletes a bucket with its objects (-s3.allowDeleteBucketNotEmpty),
    # which also gives back the volume weed set aside for it.
    client.delete_bucket(Bucket=name)


@pytest.fixture
def s3(s3_server: ServerInfo) -> Any:
    """A boto3 client of the session's S3 server, to put and inspect objects directly."""
    return s3_client(s3_server)


@pytest.fixture
def s3_env(s3_server: ServerInfo, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point ``AWS_*`` at the session's S3 server, for this test and what it starts."""
    environment = s3_server.environment()
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return environment


OTHER_USER = "altus-other"


@pytest.fixture(scope="session")
def other_user() -> OtherUser:
    """The account ``altus-other``, created if this machine lacks it (the tests run as root)."""
    if os.geteuid() != 0:
        pytest.fail("the tests of what other users can reach run as root, to add a user")
    try:
        entry = pwd.getpwnam(OTHER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--create-home", "--shell", "/bin/sh", OTHER_USER],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(OTHER_USER)
    return OtherUser(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A fresh folder that every user can reach (0755 under ``/tmp``), removed afterwards.

    pytest's own ``tmp_path`` is below a 0700 folder, where another user could not
    look whatever altus did; here only the modes altus sets can keep them out.
    """
    folder = Path(tempfile.mkdtemp(prefix="altus-shared-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
