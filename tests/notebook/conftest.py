"""Fixtures for the notebook tests: a real headless Chromium and a real public server.

Neither is ever skipped. Where Debian's Chromium or Playwright is missing the
tests that use them fail with a message saying what to install, so that CI
cannot pass without running them. Playwright is imported inside the browser
fixture, so that the notebook tests without a browser still run without it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

RunAltus = Callable[..., subprocess.CompletedProcess[str]]


@dataclass(frozen=True)
class PublicNotebook:
    """A server started by ``altus notebook start --public``, as its tests need to reach it."""

    info: dict[str, Any]  # what ``notebook start --json`` printed
    root: Path
    password: str

    @property
    def base_url(self) -> str:
        """The server's root over loopback: ``--public`` binds every address, loopback too."""
        return f"https://127.0.0.1:{self.info['port']}/"


@pytest.fixture(scope="module")
def chromium_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """One headless Chromium per test module, with a fresh profile under the session's tmp.

    A fresh profile means no cookie, cache or certificate exception from a
    developer's own browsing or an earlier run can make a test pass. Module
    scope keeps Chromium (and Playwright's event loop) out of unrelated tests.
    """
    from browser import CHROMIUM, launch_chromium
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (the browser tests need it)")
    with sync_playwright() as playwright:
        context = launch_chromium(playwright, tmp_path_factory.mktemp("chromium-profile"))
        try:
            yield context
        finally:
            context.close()


PASSWORD = "violet kettle orbit lantern"  # 12+ characters, no common password


@pytest.fixture
def public_notebook(tmp_path: Path, run_altus: RunAltus) -> Iterator[PublicNotebook]:
    """Start a public, password-protected server on a free port; stop it afterwards.

    It is started through the real CLI, as a user would, in the per-test XDG
    home that ``clean_environ`` set up, and never shuts itself down for idleness
    mid-test. After a passing test ``notebook stop`` must succeed; whatever still
    runs then, or after a failing test, is killed with its kernels.
    """
    root = tmp_path / "notebooks"
    root.mkdir()
    port = _free_port()
    started = run_altus(
        "notebook", "start", str(root), "--public", "--password-stdin",
        "--port", str(port), "--idle-timeout", "0", "--json",
        input=PASSWORD + "\n",
    )  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    info = json.loads(started.stdout)
    try:
        yield PublicNotebook(info=info, root=root, password=PASSWORD)
        stopped = run_altus("notebook", "stop", info["name"])
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    finally:
        _kill_tree(info["pid"])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        port: int = probe.getsockname()[1]
        return port


def _kill_tree(pid: int) -> None:
    """Kill ``pid`` and its children (kernels) if they outlived ``notebook stop``."""
    try:
        server = psutil.Process(pid)
        processes = [server, *server.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(processes, timeout=10)
