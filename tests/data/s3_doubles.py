"""Stand-ins for S3 in tests: a moto server and a fault-injecting proxy in front of any endpoint.

``MotoServer`` runs ``python -m moto.server`` in a child process. Unlike SeaweedFS, moto
stores keys that would escape a download folder (see ``HOSTILE_KEYS``), so the code that
turns keys into local paths can be tested against a real listing.

``FaultProxy`` sits between a client and an S3 endpoint and forwards each request unchanged:
method, request target, every header (``Host`` and ``Authorization`` included, so a SigV4
signature made for the proxy's address still holds) and the body. Rules make it answer
``503 SlowDown``, reset the connection, or hold a response back, for the first N requests
that match, and count what they did::

    with MotoServer().start() as moto, FaultProxy(moto.endpoint).start() as proxy:
        rule = proxy.slow_down(times=2, method="PUT")
        s3_client(proxy.endpoint).put_object(Bucket="b", Key="k", Body=b"...")
        assert rule.injected == 2
"""

from __future__ import annotations

import contextlib
import http.client
import io
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, TYPE_CHECKING, Any, Literal, Self
from urllib.parse import urlsplit

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "HOSTILE_KEYS",
    "REGION",
    "SLOW_DOWN_BODY",
    "FaultProxy",
    "FaultRule",
    "MakeFaultProxy",
    "MotoServer",
    "SeenRequest",
    "s3_client",
]

REGION = "us-east-1"
# Moto takes any credentials; tests pass them explicitly because AWS_* is cleared.
ACCESS_KEY = "testing"
SECRET_KEY = "testing"

# Keys that moto 5 stores and lists back unchanged through boto3 ``put_object`` (real S3
# accepts them too, except where noted). SeaweedFS refuses most of them. Moto refuses a
# key containing a newline (``"a\nb"`` answers 404), so none is listed here.
HOSTILE_KEYS: tuple[str, ...] = (
    "plain.txt",  # contrast: an ordinary key at the top
    "data/normal.txt",  # contrast: an ordinary nested key
    "../escape.txt",  # parent segment: joined onto a folder, lands beside it
    "a/../../escape.txt",  # traversal hidden behind an innocent first segment
    "a/./b/../../../x",  # `.` and `..` mixed; normalizes to one level above the folder
    "a/b/../../../../../../etc/passwd",  # deep traversal aimed at a system file
    "..",  # the whole key is the parent folder
    ".",  # the whole key is the folder itself
    "dir/..",  # `dir/` + `..`: normalizes to the folder itself
    "/etc/passwd-like",  # absolute: os.path.join(folder, key) throws the folder away
    "//server/share.txt",  # double leading slash: absolute, and a UNC path on Windows
    "..\\..\\windows.txt",  # backslash traversal: harmless on POSIX, escapes on Windows
    "C:\\Windows\\evil.txt",  # drive-absolute on Windows
    "%2e%2e/escape.txt",  # percent-encoded `..`: escapes if anything URL-decodes keys
    "a/%2e%2e%2f%2e%2e%2fescape.txt",  # encoded dots and slashes in one segment
    "~/tilde.txt",  # escapes if anything calls expanduser on keys
    "a//b.txt",  # empty segment between slashes
    "trailing/",  # a folder marker: writing it as a file fails or clobbers a folder
    "clash",  # a file whose name is also a folder (next key); SeaweedFS refuses the pair
    "clash/inner.txt",  # lives under the file above
    "nul\x00byte.txt",  # NUL: C strings end there; open() raises ValueError
    "long/" + "n" * 300,  # one segment longer than NAME_MAX (255 bytes)
    "k" * 1025,  # longer than the 1024 bytes real S3 allows; moto does not check
)

SLOW_DOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
    b"<RequestId>FAULTPROXY0000001</RequestId>"
    b"<HostId>injected-by-altus-test-fault-proxy</HostId></Error>"
)

_BLOCK = 64 * 1024
_NO_BODY_STATUSES = frozenset({204, 304})


def s3_client(
    endpoint: str,
    *,
    attempts: int = 3,
    read_timeout: float = 10,
    connect_timeout: float = 5,
) -> Any:
    """A boto3 S3 client for ``endpoint`` with test credentials and ``standard`` retries.

    ``attempts`` counts the first try: 1 means no retries.
    """
    config = Config(
        retries={"mode": "standard", "total_max_attempts": attempts},
        read_timeout=read_timeout,
        connect_timeout=connect_timeout,
        s3={"addressing_style": "path"},
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
        config=config,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class MotoServer:
    """``python -m moto.server`` on 127.0.0.1, in a child process, with every service in it.

    Nothing starts until ``start()``; ``stop()`` (or leaving a ``with`` block) ends it.
    """

    def __init__(
        self, *, env: Mapping[str, str] | None = None, startup_timeout: float = 30
    ) -> None:
        self.env = dict(env or {})
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._port = 0

    @property
    def endpoint(self) -> str:
        if self._process is None:
            raise RuntimeError("MotoServer is not running; call start() first")
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> Self:
        self._port = _free_port()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115  (open until stop())
        # The server must not see the developer's AWS settings, whatever this process has.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ALTUS_"))}
        env.update(self.env)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self._port)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            self._wait_until_up()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_up(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"moto server exited early:\n{self.log()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1),
            ):
                return
            time.sleep(0.05)
        raise TimeoutError(f"moto server did not answer in {self.startup_timeout} s:\n{self.log()}")

    def reset(self) -> None:
        """Forget every bucket and object (moto's ``POST /moto-api/reset``)."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def log(self) -> str:
        """What the server printed so far."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self if self._process is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


FaultKind = Literal["slow_down", "reset", "delay"]


@dataclass
class FaultRule:
    """Inject ``kind`` into the first ``times`` requests that match (every one if ``None``).

    ``method`` is compared exactly (case-insensitive); ``path`` is a regular expression
    searched in the request target as sent, query string included. ``matched`` counts the
    requests that matched, ``injected`` the faults this rule caused.
    """

    kind: FaultKind
    times: int | None = 1
    method: str | None = None
    path: str | None = None
    seconds: float = 0.0
    matched: int = 0
    injected: int = 0

    def matches(self, method: str, target: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path is None or re.search(self.path, target) is not None

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.injected >= self.times


@dataclass(frozen=True)
class SeenRequest:
    """One request that reached the proxy, and the fault it got, if any."""

    method: str
    target: str
    fault: FaultKind | None = None


@dataclass
class _ProxyState:
    rules: list[FaultRule] = field(default_factory=list)
    requests: list[SeenRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)

    def choose(self, method: str, target: str) -> FaultRule | None:
        """Count the request against every rule it matches; the first with faults left fires."""
        with self.lock:
            chosen = None
            for rule in self.rules:
                if rule.matches(method, target):
                    rule.matched += 1
                    if chosen is None and not rule.exhausted:
                        chosen = rule
                        rule.injected += 1
            fault = chosen.kind if chosen else None
            self.requests.append(SeenRequest(method, target, fault))
            return chosen


class FaultProxy:
    """A threaded HTTP reverse proxy on 127.0.0.1 that forwards to ``upstream`` and injects faults.

    Nothing listens until ``start()``; ``close()`` (or leaving a ``with`` block) stops it.
    Add rules with ``slow_down``, ``reset`` and ``delay``; read ``requests`` and each rule's
    counters to check what the client did.
    """

    def __init__(self, upstream: str, *, upstream_timeout: float = 60) -> None:
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream must be an http(s) URL, not {upstream!r}")
        self.upstream = upstream
        self.upstream_timeout = upstream_timeout
        self._state = _ProxyState()
        self._server: _ProxyServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("FaultProxy is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> list[SeenRequest]:
        """Every request seen so far, in arrival order (a copy)."""
        with self._state.lock:
            return list(self._state.requests)

    @property
    def rules(self) -> list[FaultRule]:
        return list(self._state.rules)

    def slow_down(
        self, times: int | None = 1, *, method: str | None = None, path: str | None = None
    ) -> FaultRule:
        """Answer ``503 SlowDown`` (S3's XML error) without forwarding the request."""
        return self.add(FaultRule("slow_down", times, method, path))

    def reset(
        self, times: int | None = 1, *, method: str | None = None, path: str | None = None
    ) -> FaultRule:
        """Reset the client's connection (RST, no response) without forwarding the request."""
        return self.add(FaultRule("reset", times, method, path))

    def delay(
        self,
        seconds: float,
        times: int | None = 1,
        *,
        method: str | None = None,
        path: str | None = None,
    ) -> FaultRule:
        """Forward the request, then hold the response back ``seconds`` before sending it.

        The upstream has acted on the request by then, as when a real response is lost to
        a client timeout.
        """
        return self.add(FaultRule("delay", times, method, path, seconds))

    def add(self, rule: FaultRule) -> FaultRule:
        with self._state.lock:
            self._state.rules.append(rule)
        return rule

    def start(self) -> Self:
        server = _ProxyServer(("127.0.0.1", 0), _ProxyHandler)
        server.proxy = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is None:
            return
        self._state.stopping.set()
        self._server.shutdown()
        self._server.close_open_connections()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self if self._server is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _connect_upstream(self) -> http.client.HTTPConnection:
        parts = urlsplit(self.upstream)
        assert parts.hostname is not None
        if parts.scheme == "https":
            return http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=self.upstream_timeout
            )
        return http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.upstream_timeout)


MakeFaultProxy = Callable[[str], FaultProxy]
"""The ``fault_proxy`` fixture: start a proxy in front of an endpoint."""


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    proxy: FaultProxy

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        """Unblock handler threads still waiting on kept-alive client connections."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


def _copy_exact(source: io.BufferedIOBase, send: Callable[[bytes], object], size: int) -> None:
    while size > 0:
        block = source.read(min(size, _BLOCK))
        if not block:
            raise ConnectionError("client closed the connection in the middle of a body")
        send(block)
        size -= len(block)


def _copy_chunked(source: io.BufferedIOBase, send: Callable[[bytes], object]) -> None:
    """Copy a chunked body with its framing (sizes, extensions, trailers) as it came."""
    while True:
        line = source.readline(_BLOCK)
        if not line:
            raise ConnectionError("client closed the connection in the middle of a body")
        send(line)
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            break
        _copy_exact(source, send, size + 2)  # the data and its CRLF
    while True:
        line = source.readline(_BLOCK)
        send(line)
        if line in (b"\r\n", b"\n", b""):
            return


def _discard(_: bytes) -> None:
    return None


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def handle_expect_100(self) -> bool:
        """Hold ``100 Continue`` back until we know whether this request gets a fault."""
        return True

    def _proxy_request(self) -> None:
        # self.path has had leading slashes collapsed by http.server; the request line has not.
        target = self.requestline.split()[1]
        state = self.server.proxy._state
        rule = state.choose(self.command, target)
        try:
            if rule is not None and rule.kind == "reset":
                self._reset()
            elif rule is not None and rule.kind == "slow_down":
                self._slow_down()
            else:
                self._forward(target, 0.0 if rule is None else rule.seconds)
        except (OSError, http.client.HTTPException):
            self.close_connection = True

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = _proxy_request

    @property
    def _expects_continue(self) -> bool:
        return self.headers.get("Expect", "").lower() == "100-continue"

    def _send_continue(self) -> None:
        if self._expects_continue:
            self.send_response_only(100)
            self.end_headers()

    def _copy_request_body(self, send: Callable[[bytes], object]) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            _copy_chunked(self.rfile, send)
        elif length := int(self.headers.get("Content-Length", 0)):
            _copy_exact(self.rfile, send, length)

    def _reset(self) -> None:
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()
        self.connection.close()

    def _slow_down(self) -> None:
        if self._expects_continue:
            # The client is waiting for 100 Continue and will not send the body.
            self.close_connection = True
        else:
            self._copy_request_body(_discard)
        self.send_response_only(503, "Slow Down")
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(SLOW_DOWN_BODY)))
        self.send_header("x-amz-request-id", "FAULTPROXY0000001")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(SLOW_DOWN_BODY)

    def _forward(self, target: str, delay: float) -> None:
        upstream = self.server.proxy._connect_upstream()
        try:
            try:
                response = self._send_upstream(upstream, target)
            except (OSError, http.client.HTTPException) as exc:
                self.send_error(502, f"FaultProxy got no answer from upstream: {exc}")
                return
            if delay and self.server.proxy._state.stopping.wait(delay):
                self.close_connection = True
                return
            self._relay(response)
        finally:
            upstream.close()

    def _send_upstream(
        self, upstream: http.client.HTTPConnection, target: str
    ) -> http.client.HTTPResponse:
        upstream.putrequest(self.command, target, skip_host=True, skip_accept_encoding=True)
        for name, value in self.headers.items():
            upstream.putheader(name, value)
        upstream.endheaders()
        self._send_continue()
        self._copy_request_body(upstream.send)
        return upstream.getresponse()

    def _relay(self, response: http.client.HTTPResponse) -> None:
        self.send_response_only(response.status, response.reason)
        hop_by_hop = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}
        for name, value in response.msg.items():
            if name.lower() not in hop_by_hop:
                self.send_header(name, value)
        has_body = self.command != "HEAD" and response.status not in _NO_BODY_STATUSES
        if has_body and response.chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while block := response.read1(_BLOCK):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
            self.wfile.write(b"0\r\n\r\n")
            return
        if has_body and response.length is None:
            # No length and not chunked: the body ends when the connection does.
            self.close_connection = True
            self.send_header("Connection", "close")
        self.end_headers()
        while has_body and (block := response.read(_BLOCK)):
            self.wfile.write(block)
