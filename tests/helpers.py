"""What tests import by name (a conftest cannot be imported reliably: several share the
name): the second local user, and a boto3 client of an altus S3 server."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from altus.storage.server import ServerInfo

__all__ = ["OtherUser", "s3_client"]


@dataclass(frozen=True)
class OtherUser:
    """A second local account, as on a shared login node: no altus, no credentials.

    It cannot run this test's Python (it lives under ``/root``); ``run`` gives it
    Debian's ``/usr/bin/python3``, ``curl`` and whatever a test copies into a
    folder it can reach (``shared_tmp``).
    """

    name: str
    uid: int
    gid: int
    home: str

    def run(
        self, args: Sequence[str], *, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``args`` as this user, with a clean environment of its own."""
        return subprocess.run(
            list(args),
            user=self.uid,
            group=self.gid,
            extra_groups=[],
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": self.home, "LANG": "C.UTF-8"},
            cwd="/",
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def s3_client(info: ServerInfo) -> Any:
    """A boto3 S3 client signed with the keys of the server ``info`` describes."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=info.endpoint,
        aws_access_key_id=info.access_key,
        aws_secret_access_key=info.secret_key,
        region_name=info.region,
    )
