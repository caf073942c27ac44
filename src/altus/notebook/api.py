"""The few calls altus makes to a running Jupyter server's REST API, over loopback.

Every call carries the token in an ``Authorization`` header and asks the
server not to count it as activity (``no_track_activity``), so that
``altus notebook list`` never keeps an idle server alive.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from altus.notebook.records import ServerRecord

__all__ = ["ServerAPI"]


class ServerAPI:
    def __init__(self, record: ServerRecord, token: str, timeout: float = 5.0) -> None:
        self.base = record.api_url.rstrip("/")
        self._headers = {"Authorization": f"token {token}"}
        self._timeout = timeout
        context = _tls_context(record) if self.base.startswith("https:") else None
        # No proxy: an http_proxy without 127.0.0.1 in no_proxy (common on clusters)
        # would send the token to the proxy and never reach the server.
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )

    def status(self) -> dict[str, Any]:
        """``started``, ``last_activity``, ``connections`` and ``kernels`` (counts)."""
        return dict(self._call("GET", "/api/status"))

    def sessions(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/sessions"))

    def kernels(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/kernels"))

    def start_kernel(self) -> dict[str, Any]:
        return dict(self._call("POST", "/api/kernels", {}))

    def shutdown(self) -> None:
        """Ask the server to stop its kernels and exit."""
        self._call("POST", "/api/shutdown", {})

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.base}{path}?no_track_activity=1", data=data, method=method,
            headers=self._headers | ({"Content-Type": "application/json"} if data else {}),
        )  # fmt: skip
        with self._opener.open(request, timeout=self._timeout) as response:
            text = response.read()
        return json.loads(text) if text else None


def _tls_context(record: ServerRecord) -> ssl.SSLContext:
    """Trust exactly the server's certificate when altus made it (its SANs name 127.0.0.1).

    A certificate the user brought may name only the public host, and a leaf is not a
    trust anchor to OpenSSL; for those, over loopback to the pid altus started, the
    token is sent without checking the certificate.
    """
    if record.self_signed and record.certfile:
        return ssl.create_default_context(cafile=record.certfile)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def reachable(api: ServerAPI) -> bool:
    try:
        api.status()
    except (OSError, urllib.error.URLError, ValueError):
        return False
    return True
