"""A real single-node Slurm cluster for the tests, started by ``scripts/slurm-cluster``.

Import the fixture into a ``conftest.py`` to use it::

    from slurm_cluster import slurm_cluster_env  # noqa: F401  (a session fixture)

``slurm_cluster_env`` is a dict of environment variables (``SLURM_CONF``) that
points Slurm's commands, in the test process or in any child process, at the
cluster. The session starts the cluster, or reuses one that already runs in the
same state dir, and stops it at the end only if test sessions started it and
no other test session still uses it. A cluster a developer started with
``scripts/slurm-cluster start`` is reused and left running.

Where Slurm is not installed the fixture fails rather than skips: CI installs
it (``apt-get install -y slurm-wlm``) and must run these tests.

This module knows nothing of altus: only the script and Slurm's commands.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "slurm-cluster"

# The script's default, passed explicitly so that no XDG folder (which the
# tests point at per-test temporary homes) decides it, and short because Slurm
# makes unix sockets under it. Every test session on this machine shares it.
STATE_DIR = Path("/tmp/altus-slurm")
# Test sessions that use the cluster: one file per session, named by its pid.
SESSIONS = STATE_DIR / "test-sessions"
# The slurmctld pid of a cluster that a test session started (so tests stop
# that cluster, never one a developer started).
STARTED_BY_TESTS = SESSIONS / "started-slurmctld"
SLURMCTLD_PID = STATE_DIR / "run" / "slurmctld.pid"  # where the script keeps it

INSTALL_HINT = "apt-get install -y slurm-wlm"
SCRIPT_TIMEOUT = 180  # seconds; start itself takes about one
ALREADY_RUNNING = "already running"  # what the script says when it starts nothing


def _run_script(command: str, transcript: Path) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/slurm-cluster COMMAND``; its stderr is appended to TRANSCRIPT."""
    done = subprocess.run(
        [str(SCRIPT), command, "--state-dir", str(STATE_DIR)],
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT,
        check=False,
    )
    with transcript.open("a") as file:
        file.write(f"$ {SCRIPT.name} {command}\n{done.stderr}")
    return done


def parse_exports(text: str) -> dict[str, str]:
    """The variables of ``export NAME=VALUE`` lines (shell-quoted values)."""
    environment: dict[str, str] = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            environment[name] = value
    return environment


@contextlib.contextmanager
def _sessions_locked() -> Iterator[None]:
    """Hold the lock that orders test sessions starting, joining and leaving the cluster."""
    # Made here before the script makes it: never writable by others (the script checks).
    STATE_DIR.mkdir(mode=0o755, exist_ok=True)
    SESSIONS.mkdir(mode=0o755, exist_ok=True)
    with (SESSIONS / "lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _other_live_sessions() -> list[int]:
    """Pids of the other test sessions that use the cluster; files of dead ones are removed."""
    alive = []
    for file in SESSIONS.glob("*.session"):
        pid = int(file.stem)
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            file.unlink(missing_ok=True)
            continue
        except PermissionError:  # alive, another user's
            pass
        alive.append(pid)
    return alive


def _slurmctld_pid() -> str:
    try:
        return SLURMCTLD_PID.read_text().strip()
    except FileNotFoundError:
        return ""


@pytest.fixture(scope="session")
def slurm_cluster_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment variables that point Slurm's commands at the test cluster."""
    if shutil.which("slurmctld", path=f"{os.environ.get('PATH', '')}:/usr/sbin") is None:
        pytest.fail(
            f"Slurm is not installed; the Slurm tests need it: {INSTALL_HINT}", pytrace=False
        )
    transcript = tmp_path_factory.mktemp("slurm-cluster") / "transcript.log"
    session = SESSIONS / f"{os.getpid()}.session"
    with _sessions_locked():
        done = _run_script("start", transcript)
        if done.returncode != 0:
            pytest.fail(
                f"scripts/slurm-cluster start failed (exit {done.returncode}):\n{done.stderr}",
                pytrace=False,
            )
        if ALREADY_RUNNING not in done.stderr:
            STARTED_BY_TESTS.write_text(_slurmctld_pid())
        session.touch()
    environment = parse_exports(done.stdout)
    if "SLURM_CONF" not in environment:
        pytest.fail(f"scripts/slurm-cluster start printed no SLURM_CONF:\n{done.stdout}")

    yield environment

    # The last test session out stops a cluster that tests started (this
    # session or another, even one that was killed); a developer's runs on.
    with _sessions_locked():
        session.unlink(missing_ok=True)
        started_by_tests = STARTED_BY_TESTS.exists() and (
            STARTED_BY_TESTS.read_text() == _slurmctld_pid()
        )
        if started_by_tests and not _other_live_sessions():
            stopped = _run_script("stop", transcript)
            assert stopped.returncode == 0, stopped.stderr
            STARTED_BY_TESTS.unlink(missing_ok=True)
