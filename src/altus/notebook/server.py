"""Start, find and stop JupyterLab servers that outlive the command that started them.

``start`` writes the server's folder (see ``records``), launches
``python -m jupyterlab --config=<folder>/jupyter_server_config.json`` in its
own session with the environment's Python, and returns once the REST API
answers with the token. Every setting is in that 0600 config file, which
jupyter_server reads after the user's own config files, so a user's
``~/.jupyter`` cannot weaken it and no secret is on a command line.

The server is started as ``python <folder>/altus_login_guard.py --config=...``:
that file is ``login_guard`` (copied, so the server's environment needs no
altus), which runs JupyterLab with a login form that throttles failed logins
per client address (``security.LoginThrottle``). Jupyter's runtime folder
(``JUPYTER_RUNTIME_DIR``: its info file with the token, the cookie secret,
kernel connection files) is ``<folder>/runtime``, 0700, never a shared
``~/.local/share/jupyter/runtime``; and the server writes no ``*-open.html``
page with the token (``login_guard`` turns it off; altus's own ``open`` page is
0600 in the same folder).

Idle policy (``idle_timeout`` seconds, 0 for none): jupyter_server culls
kernels idle that long, even with a browser tab open, and shuts itself down
once no kernel or terminal has run and no request has come for that long.
It checks that once a minute, so a server stops between ``idle_timeout`` and
``idle_timeout`` + 60 s after its last activity.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from altus import detached
from altus.errors import NotebookError
from altus.notebook import records, security
from altus.notebook.api import ServerAPI, reachable
from altus.notebook.environment import notebook_python
from altus.notebook.records import ServerRecord
from altus.notebook.security import LoginThrottle

__all__ = ["ServerState", "Started", "open_page", "servers", "start", "stop", "stop_all"]

DEFAULT_PORT = 8888
PORTS_TO_TRY = 50
READY_TIMEOUT = 120.0
STOP_TIMEOUT = 10.0
GUARD_FILE = "altus_login_guard.py"
"""``login_guard``'s name in a server's folder: the config names it as a module."""
GUARD_HANDLER = "altus_login_guard.ThrottledLoginHandler"
GUARD_SETTINGS_KEY = "altus_login_throttle"
"""``login_guard.SETTINGS_KEY``: named here too, since importing that module imports Jupyter."""
RUNTIME_FOLDER = "runtime"
IDLE_SHUTDOWN_LINE = "shutting down"
"""jupyter_server logs ``No kernels for N seconds; shutting down.`` when it stops for idleness."""


@dataclass
class Started:
    """A server just started, and what the caller should be told about how."""

    record: ServerRecord
    notes: list[str] = field(default_factory=list)


def start(
    root: str | Path = ".",
    *,
    env: str | None = None,
    name: str | None = None,
    port: int = DEFAULT_PORT,
    idle_timeout: float = 3600,
    public: bool = False,
    password: str | None = None,
    certfile: str | Path | None = None,
    keyfile: str | Path | None = None,
    timeout: float = READY_TIMEOUT,
    login_throttle: LoginThrottle | None = None,
) -> Started:
    """Start a JupyterLab server on ``root`` and wait until it answers.

    Loopback only with a random token unless ``public``, which binds every
    address and requires a strong ``password`` (``security.check_password``)
    and TLS (a self-signed certificate unless ``certfile``/``keyfile`` are
    given). Failed logins are throttled per address by ``login_throttle``
    (default ``LoginThrottle()``).
    """
    folder_root = _checked_root(root)
    tls = _checked_tls(public, password, certfile, keyfile)
    python, environment = notebook_python(folder_root, env)
    notes: list[str] = []
    servers()  # forgets the records of dead servers, so their names are free again
    record_name = name or records.free_name(folder_root)
    _replace_stopped(record_name)
    folder = records.make_folder(record_name)
    try:
        bind = "0.0.0.0" if public else "127.0.0.1"
        chosen = _free_port(bind, port)
        if chosen != port:
            notes.append(f"port {port} is in use; using {chosen}")
        token = security.new_token()
        detached.write_private(folder / records.TOKEN_FILE, token + "\n")
        hashed = security.hash_password(python, password) if password else None
        certificate, key, made = _certificate(folder, public, tls)
        config = _server_config(folder_root, bind, chosen, token, hashed, certificate, key)
        config = _guarded(config, login_throttle or LoginThrottle())
        config_path = folder / records.CONFIG_FILE
        detached.write_private(config_path, json.dumps(_idle_policy(config, idle_timeout)))
        pid = _spawn(python, config_path, folder_root, folder)
        record = ServerRecord(
            name=record_name,
            url=_browser_url(public, certificate is not None, chosen),
            api_url=f"{'https' if certificate else 'http'}://127.0.0.1:{chosen}",
            root=str(folder_root),
            environment=environment,
            python=str(python),
            pid=pid,
            port=chosen,
            started=time.time(),
            public=public,
            idle_timeout=idle_timeout,
            certfile=str(certificate) if certificate else None,
            self_signed=made,
        )
        record.save()
        (folder / ".starting").unlink()
        _wait_until_ready(record, token, timeout)
    except BaseException:
        _abandon(folder)
        raise
    return Started(record, notes)


@dataclass
class ServerState:
    """A recorded server and what its API says now (``None`` where it cannot answer)."""

    record: ServerRecord
    running: bool
    kernels: int | None = None
    connections: int | None = None
    sessions: int | None = None
    last_activity: float | None = None

    @property
    def uptime(self) -> float | None:
        return time.time() - self.record.started if self.running else None

    @property
    def idle_seconds(self) -> float | None:
        if self.last_activity is None:
            return None
        return max(0.0, time.time() - self.last_activity)

    @property
    def state(self) -> str:
        if self.running:
            return "running"
        return f"stopped ({self.record.stopped})" if self.record.stopped else "stopped"

    def to_dict(self) -> dict[str, Any]:
        return self.record.to_dict() | {
            "state": self.state,
            "uptime": self.uptime,
            "kernels": self.kernels,
            "connections": self.connections,
            "sessions": self.sessions,
            "last_activity": self.last_activity,
            "idle_seconds": self.idle_seconds,
        }


def servers() -> list[ServerState]:
    """Every recorded server, live ones with their API's figures.

    A server that shut itself down for idleness stays listed as such until
    ``stop`` (or ``stop_all``) clears it; one that died otherwise is forgotten.
    """
    states = []
    for record in records.read_all():
        if _alive(record):
            states.append(_measure(record))
        elif _stopped_for_idleness(record):
            states.append(ServerState(record, running=False))
        else:
            record.forget()
    return states


def stop(name: str) -> ServerRecord:
    """Shut server ``name`` down through its API, then by signals; kernels included."""
    record = records.read_record(name)
    if record is None:
        known = ", ".join(r.name for r in records.read_all()) or "none"
        raise NotebookError(f"no notebook server named {name} (recorded: {known})")
    if _alive(record):
        _shut_down(record)
    record.forget()
    return record


def stop_all() -> list[ServerRecord]:
    return [stop(record.name) for record in records.read_all()]


def open_page(name: str) -> Path:
    """A 0600 page that sends a browser to server ``name`` with its token: opening it keeps
    the token off every command line (a browser's included)."""
    record = records.read_record(name)
    if record is None or not _alive(record):
        raise NotebookError(f"no running notebook server named {name}")
    target = f"{record.url}?token={record.token()}"
    page = record.folder / records.OPEN_FILE
    detached.write_private(
        page,
        f'<!DOCTYPE html><meta http-equiv="refresh" content="0;url={target}">'
        f"<title>altus notebook {record.name}</title>"
        f'<p><a href="{target}">Open notebook server {record.name}</a></p>\n',
    )
    return page


# -- starting -----------------------------------------------------------------------


def _replace_stopped(name: str) -> None:
    """A server that stopped for idleness gives its name to a new one."""
    record = records.read_record(name)
    if record is not None and not _alive(record):
        record.forget()


def _checked_root(root: str | Path) -> Path:
    path = Path(root).expanduser()
    if not path.is_dir():
        raise NotebookError(f"{root}: no such folder")
    return path.resolve()


def _checked_tls(
    public: bool,
    password: str | None,
    certfile: str | Path | None,
    keyfile: str | Path | None,
) -> tuple[Path, Path] | None:
    if public and not password:
        raise NotebookError(
            "--public needs a password: type it at the prompt or pipe it to --password-stdin"
        )
    if password is not None:
        security.check_password(password)
    if (certfile is None) != (keyfile is None):
        raise NotebookError("give both --certfile and --keyfile, or neither")
    if certfile is None or keyfile is None:
        return None
    pair = (Path(certfile).expanduser().resolve(), Path(keyfile).expanduser().resolve())
    security.check_certificate(*pair)
    return pair


def _certificate(
    folder: Path, public: bool, given: tuple[Path, Path] | None
) -> tuple[Path | None, Path | None, bool]:
    """The certificate and key the server uses, and whether altus made them."""
    if given is not None:
        return given[0], given[1], False
    if public:
        certificate, key = security.self_signed(folder)
        return certificate, key, True
    return None, None, False


def _server_config(
    root: Path,
    bind: str,
    port: int,
    token: str,
    hashed_password: str | None,
    certificate: Path | None,
    key: Path | None,
) -> dict[str, Any]:
    server: dict[str, Any] = {
        "ip": bind,
        "port": port,
        "port_retries": 0,
        "open_browser": False,
        "root_dir": str(root),
        "allow_remote_access": bind != "127.0.0.1",
        "allow_root": os.geteuid() == 0,
    }
    if certificate is not None:
        server |= {"certfile": str(certificate), "keyfile": str(key)}
    config: dict[str, Any] = {"ServerApp": server, "IdentityProvider": {"token": token}}
    if hashed_password:
        config["PasswordIdentityProvider"] = {
            "hashed_password": hashed_password,
            "password_required": True,
            "allow_password_change": False,
        }
    return config


def _guarded(config: dict[str, Any], throttle: LoginThrottle) -> dict[str, Any]:
    """The login form ``login_guard`` serves, with ``throttle`` in the server's settings."""
    config["ServerApp"]["tornado_settings"] = {GUARD_SETTINGS_KEY: throttle.settings()}
    config["IdentityProvider"]["login_handler_class"] = GUARD_HANDLER
    return config


def _idle_policy(config: dict[str, Any], idle_timeout: float) -> dict[str, Any]:
    seconds = int(idle_timeout)
    if seconds <= 0:
        return config
    interval = max(1, min(60, seconds // 2))
    config["ServerApp"]["shutdown_no_activity_timeout"] = seconds
    config["MappingKernelManager"] = {
        "cull_idle_timeout": seconds,
        "cull_interval": interval,
        "cull_connected": True,
        "cull_busy": False,
    }
    config["TerminalManager"] = {"cull_inactive_timeout": seconds, "cull_interval": interval}
    return config


def _free_port(bind: str, wanted: int) -> int:
    for port in range(wanted, wanted + PORTS_TO_TRY):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # As the server binds: a port left in TIME_WAIT by a server just stopped is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((bind, port))
            except OSError:
                continue
            return port
    raise NotebookError(f"ports {wanted} to {wanted + PORTS_TO_TRY - 1} are all in use")


def _browser_url(public: bool, tls: bool, port: int) -> str:
    scheme = "https" if tls else "http"
    host = socket.gethostname() if public else "127.0.0.1"
    return f"{scheme}://{host}:{port}/lab"


def _spawn(python: Path, config: Path, root: Path, folder: Path) -> int:
    guard = folder / GUARD_FILE
    detached.write_private(guard, Path(__file__).with_name("login_guard.py").read_text())
    runtime = folder / RUNTIME_FOLDER
    runtime.mkdir(mode=0o700)
    command = [str(python), str(guard), f"--config={config}"]
    environment = _server_environment(python) | {"JUPYTER_RUNTIME_DIR": str(runtime)}
    mask = os.umask(0o022)
    os.umask(mask)  # the server keeps the user's umask for the notebooks it writes
    try:
        return detached.spawn(
            command,
            cwd=root,
            env=environment,
            log=folder / records.LOG_FILE,
            umask=mask,
        )
    except detached.SpawnFailed as exc:
        raise NotebookError(f"cannot start JupyterLab with {python}: {exc}") from exc


def _server_environment(python: Path) -> dict[str, str]:
    """The caller's environment, for kernels to find data and credentials as the user would,
    without variables that would set Jupyter's token or password beside altus's config.

    The server's own environment comes first on ``PATH`` (and is ``VIRTUAL_ENV`` when it
    is a venv), so ``!python``, ``!pip`` and terminals use it, as after ``activate``.
    """
    hidden = {"JUPYTER_TOKEN", "JUPYTER_PASSWORD", "JPY_API_TOKEN", "VIRTUAL_ENV"}
    environment = {k: v for k, v in os.environ.items() if k not in hidden}
    bin_folder = str(python.parent)
    environment["PATH"] = os.pathsep.join([bin_folder, environment.get("PATH", os.defpath)])
    if (python.parent.parent / "pyvenv.cfg").exists():
        environment["VIRTUAL_ENV"] = str(python.parent.parent)
    return environment


def _wait_until_ready(record: ServerRecord, token: str, timeout: float) -> None:
    api = ServerAPI(record, token, timeout=2.0)
    deadline = time.monotonic() + timeout
    while not reachable(api):
        if not detached.pid_exists(record.pid):
            raise NotebookError(
                f"JupyterLab exited while starting; {detached.log_tail(record.log)}"
            )
        if time.monotonic() >= deadline:
            raise NotebookError(
                f"JupyterLab did not answer within {timeout:g}s; {detached.log_tail(record.log)}"
            )
        time.sleep(0.05)


def _abandon(folder: Path) -> None:
    """Undo a start that failed: stop what it launched, remove its folder."""
    record = records.read_record(folder.name)
    if record is not None and detached.pid_exists(record.pid):
        with contextlib.suppress(OSError):
            detached.stop_group(record.pid, lambda: _alive(record), STOP_TIMEOUT)
    log = folder / records.LOG_FILE
    with contextlib.suppress(OSError):
        kept = folder.parent / f".{folder.name}.failed.log"
        log.replace(kept)  # keeps the reason for one look; replaced by the next failure
    shutil.rmtree(folder, ignore_errors=True)


# -- watching and stopping ------------------------------------------------------------


def _alive(record: ServerRecord) -> bool:
    """Whether ``record.pid`` is still this server (not a dead pid reused by another)."""
    if not detached.pid_exists(record.pid):
        return False
    try:
        arguments = Path(f"/proc/{record.pid}/cmdline").read_bytes()
    except OSError:
        return sys.platform != "linux"
    return os.fsencode(str(record.folder / records.CONFIG_FILE)) in arguments


def _measure(record: ServerRecord) -> ServerState:
    state = ServerState(record, running=True)
    try:
        api = ServerAPI(record, record.token())
        status = api.status()
        state.kernels = int(status.get("kernels", 0))
        state.connections = int(status.get("connections", 0))
        state.last_activity = _timestamp(status.get("last_activity"))
        state.sessions = len(api.sessions())
    except (OSError, ValueError, NotebookError):
        pass  # listed without figures: starting, stopping or not answering
    return state


def _timestamp(text: Any) -> float | None:
    from datetime import datetime

    if not isinstance(text, str):
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    return None


def _stopped_for_idleness(record: ServerRecord) -> bool:
    if record.stopped:
        return True
    try:
        text = record.log.read_text(errors="replace")[-4096:]
    except OSError:
        return False
    if "No kernels for" not in text or IDLE_SHUTDOWN_LINE not in text:
        return False
    record.stopped = "idle"
    record.stopped_at = record.log.stat().st_mtime
    record.save()
    return True


def _shut_down(record: ServerRecord) -> None:
    """The API's shutdown first (kernels end cleanly), then signals; any kernel left over
    (jupyter_client starts each in a session of its own) is ended too."""
    kernels = detached.descendants(record.pid)
    with contextlib.suppress(OSError, ValueError, NotebookError):
        ServerAPI(record, record.token()).shutdown()
    stopped = detached.wait_until(lambda: not _alive(record), STOP_TIMEOUT)
    if not stopped and not detached.stop_group(record.pid, lambda: _alive(record), STOP_TIMEOUT):
        raise NotebookError(f"notebook server {record.name} (pid {record.pid}) did not stop")
    left = [pid for pid in kernels if detached.pid_exists(pid)]
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signum)
        if detached.wait_until(lambda: not any(map(detached.pid_exists, left)), 5.0):
            return
