"""Secure, detached JupyterLab servers on this machine (``altus notebook``).

``start`` runs JupyterLab in an environment (one altus builds from Binder-style
files, one the user has, or the Python running altus), on loopback with a
random token, or ``public`` with TLS and a strong password, failed logins
throttled per client address (``LoginThrottle``); it survives the terminal
that started it and shuts itself down when idle. ``servers`` lists them with
their kernels and idle time, ``stop`` ends one and its kernels.
"""

from __future__ import annotations

from altus.notebook.records import ServerRecord
from altus.notebook.security import LoginThrottle
from altus.notebook.server import ServerState, Started, open_page, servers, start, stop, stop_all

__all__ = [
    "LoginThrottle",
    "ServerRecord",
    "ServerState",
    "Started",
    "open_page",
    "servers",
    "start",
    "stop",
    "stop_all",
]
