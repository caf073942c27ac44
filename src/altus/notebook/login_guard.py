"""Failed logins throttled per client address, inside a running notebook server.

This file runs in the server's own Python, which need not have altus: altus
copies it into the server's 0700 folder as ``altus_login_guard.py`` and starts
the server with it (``python <folder>/altus_login_guard.py --config=...``),
which puts that folder, not the notebook root, first on ``sys.path`` and runs
JupyterLab. The config names ``altus_login_guard.ThrottledLoginHandler`` as
``IdentityProvider.login_handler_class`` (jupyter_server 2's hook for the login
form) and holds the policy in ``ServerApp.tornado_settings``, written by altus
from ``security.LoginThrottle``. It imports only the standard library, tornado
and jupyter_server.

The policy, as fail2ban's and JupyterHub's: the n-th failure in a row from an
address is answered after ``first_delay * 2**(n-1)`` seconds (at most
``max_delay``); at ``max_failures`` failures within ``window`` seconds the
address is locked out for ``lockout`` seconds, in which every login from it is
answered 429 without looking at the password; a success forgets the address.
The count goes up before the wait, so guesses sent in parallel count too. The
wait is an ``asyncio.sleep``: the server answers everyone else meanwhile. The
address is the peer's own (jupyter_server trusts no ``X-Forwarded-For`` unless
``trust_xheaders`` is set, which altus never sets). Failures are logged with
the address, never with what was typed.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from jupyter_server.auth.login import LoginFormHandler

__all__ = ["SETTINGS_KEY", "ThrottledLoginHandler"]

SETTINGS_KEY = "altus_login_throttle"
TRACKED_AT_MOST = 10_000
"""Addresses remembered before the stale ones are dropped (many addresses, bounded memory)."""

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _allow_unauthenticated(method: _Method) -> _Method:
    """jupyter_server's own marker (2.13+) that the login form needs no login."""
    try:
        from jupyter_server.auth.decorator import allow_unauthenticated
    except ImportError:  # older: no such check to pass
        return method
    return allow_unauthenticated(method)


@dataclass
class _Address:
    """Failed logins from one client address."""

    failures: int = 0
    last_failure: float = 0.0
    locked_until: float = 0.0


_ADDRESSES: dict[str, _Address] = {}


class ThrottledLoginHandler(LoginFormHandler):
    """jupyter_server's login form, answering failures slowly and lock-outs with 429."""

    @_allow_unauthenticated
    async def post(self) -> None:
        policy: dict[str, float] = self.settings[SETTINGS_KEY]
        address = str(self.request.remote_ip or "unknown")
        now = time.monotonic()
        state = _current(address, policy, now)
        if state.locked_until > now:
            self.log.warning("refused a login from %s: locked out", address)
            self._locked_out(state.locked_until - now)
            return
        super().post()  # type: ignore[no-untyped-call]
        if self.get_status() != 401:
            _ADDRESSES.pop(address, None)
            return
        await self._failed(address, state, policy, now)

    async def _failed(
        self, address: str, state: _Address, policy: dict[str, float], now: float
    ) -> None:
        state.failures += 1
        state.last_failure = now
        delay = min(policy["max_delay"], policy["first_delay"] * 2 ** (state.failures - 1))
        self.log.warning("failed login from %s (%d in a row)", address, state.failures)
        locked = state.failures >= policy["max_failures"]
        if locked:
            state.locked_until = now + policy["lockout"]
            self.log.warning("locked out %s for %gs", address, policy["lockout"])
        await asyncio.sleep(delay)
        if locked:
            self.clear()
            self._locked_out(state.locked_until - time.monotonic())

    def _locked_out(self, seconds: float) -> None:
        minutes = max(1, round(seconds / 60))
        self.set_status(429)
        self.set_header("Retry-After", str(max(1, int(seconds) + 1)))
        message = f"Too many failed logins from your address; try again in {minutes} min."
        self._render(message={"error": message})  # type: ignore[no-untyped-call]


def _current(address: str, policy: dict[str, float], now: float) -> _Address:
    """The address's record: fresh after its lock-out ends or its failures grow old."""
    state = _ADDRESSES.get(address)
    expired = state is not None and (
        0 < state.locked_until <= now
        or (not state.locked_until and now - state.last_failure > policy["window"])
    )
    if state is None or expired:
        _forget_stale(policy, now)
        state = _ADDRESSES[address] = _Address()
    return state


def _forget_stale(policy: dict[str, float], now: float) -> None:
    if len(_ADDRESSES) < TRACKED_AT_MOST:
        return
    for address, state in list(_ADDRESSES.items()):
        if state.locked_until <= now and now - state.last_failure > policy["window"]:
            del _ADDRESSES[address]


def _serve() -> None:
    """Run JupyterLab with this file importable under its own name (the config names it),
    writing no ``jpserver-<pid>-open.html``: that page carries the token, Jupyter writes it
    with the server's umask (the user's, for the notebooks), and its switch
    ``no_browser_open_file`` cannot be set from a config file."""
    sys.modules.setdefault(Path(__file__).stem, sys.modules[__name__])
    import jupyter_server
    from jupyter_server.serverapp import ServerApp

    if int(jupyter_server.__version__.split(".")[0]) < 2:  # would ignore altus's login form
        sys.exit("altus needs jupyter_server 2 or later in the notebook's environment")
    from jupyterlab.labapp import main  # type: ignore[import-untyped]

    ServerApp.write_browser_open_files = _no_open_page  # type: ignore[method-assign,assignment]
    sys.exit(main())


def _no_open_page(app: object) -> None:
    """altus's own page (``altus notebook open``) is 0600 in the server's folder."""


if __name__ == "__main__":
    _serve()
