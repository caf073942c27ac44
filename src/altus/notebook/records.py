"""Where a notebook server's files live, and its record.

One folder per server in a folder of them, every folder 0700 (the parent too, even
if it was there before), every file 0600, so that another user on the machine can
read nothing, not even the servers' names::

    <XDG state>/altus/notebooks/<name>/
      server.json               the record below: no secret in it
      token                     the server's token
      jupyter_server_config.json  token and password hash, read by the server
      cert.pem, key.pem         the self-signed certificate, for --public without --certfile
      open.html                 a page that logs the browser in (``altus notebook open``)
      server.log                the server's stdout and stderr
      altus_login_guard.py      the server's entry point (``login_guard``)
      runtime/                  Jupyter's runtime folder: its info file, cookie secret and
                                kernel connection files (Jupyter writes them 0600)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from altus.config import resolve_paths
from altus.detached import write_private
from altus.errors import NotebookError

__all__ = ["ServerRecord", "notebooks_dir", "read_all", "read_record", "server_folder"]

RECORD_FILE = "server.json"
TOKEN_FILE = "token"
CONFIG_FILE = "jupyter_server_config.json"
LOG_FILE = "server.log"
OPEN_FILE = "open.html"


@dataclass
class ServerRecord:
    """What ``list``, ``stop`` and ``open`` need to find and talk to one server."""

    name: str
    url: str
    """Where a browser goes, without the token."""
    api_url: str
    """Where altus itself talks to the server: always over loopback."""
    root: str
    environment: str
    python: str
    pid: int
    port: int
    started: float
    public: bool
    idle_timeout: float
    certfile: str | None = None
    self_signed: bool = False
    stopped: str | None = None
    """Why the server is no longer running, when it ended by itself (``idle``)."""
    stopped_at: float | None = None

    @property
    def folder(self) -> Path:
        return server_folder(self.name)

    @property
    def log(self) -> Path:
        return self.folder / LOG_FILE

    def token(self) -> str:
        try:
            return (self.folder / TOKEN_FILE).read_text().strip()
        except OSError as exc:
            raise NotebookError(f"notebook {self.name}: cannot read its token: {exc}") from exc

    def save(self) -> None:
        write_private(self.folder / RECORD_FILE, json.dumps(dataclasses.asdict(self), indent=2))

    def forget(self) -> None:
        """Remove the server's folder: record, secrets, certificate and log."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"log": str(self.log)}


def notebooks_dir() -> Path:
    return resolve_paths(os.environ).state_dir / "notebooks"


def server_folder(name: str) -> Path:
    return notebooks_dir() / name


def read_record(name: str) -> ServerRecord | None:
    """The record of server ``name``, or None if there is none (or it is unreadable)."""
    path = server_folder(name) / RECORD_FILE
    with contextlib.suppress(OSError, ValueError, TypeError):
        data = json.loads(path.read_text())
        fields = {f.name for f in dataclasses.fields(ServerRecord)}
        return ServerRecord(**{k: v for k, v in data.items() if k in fields})
    return None


def read_all() -> list[ServerRecord]:
    """Every recorded server, oldest first; folders without a readable record are removed."""
    folder = notebooks_dir()
    if not folder.is_dir():
        return []
    records = []
    for entry in folder.iterdir():
        record = read_record(entry.name)
        if record is None:
            if not (entry / ".starting").exists():
                shutil.rmtree(entry, ignore_errors=True)
            continue
        records.append(record)
    return sorted(records, key=lambda record: record.started)


def make_folder(name: str) -> Path:
    """Create server ``name``'s folder (0700); NotebookError if the name is taken."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise NotebookError(
            f"{name!r} is not a usable name: letters, digits, '.', '_' and '-', 64 at most"
        )
    parent = notebooks_dir()
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    parent.chmod(0o700)  # made 0755 by an older altus or a user's mkdir -p
    folder = parent / name
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        raise NotebookError(f"a notebook server named {name} is already recorded") from None
    (folder / ".starting").touch(mode=0o600)
    return folder


def free_name(root: Path) -> str:
    """A name for a server of ``root``: its folder's name, with -2, -3... if taken."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", root.name).strip("-.") or "notebook"
    base = base[:56]
    taken = {entry.name for entry in notebooks_dir().glob("*")}
    if base not in taken:
        return base
    number = 2
    while f"{base}-{number}" in taken:
        number += 1
    return f"{base}-{number}"
