"""The parts of a big download, fetched over a signed URL straight into a reused buffer.

obstore reads a response through reqwest, which hands over every chunk in a
freshly allocated buffer; on two cores, faulting in those pages and copying
them cost a fifth of a 1 GiB download from a local server. Here each thread
reads its ranged GET into one small buffer with ``recv_into`` and writes it at
its offset, as s5cmd does: the bytes are copied once in and once out by the
kernel, and never by us.

This is only the fast path. Its caller falls back to obstore, which has the
retry policy and the error messages, whenever anything here fails: a refused
signature, an unexpected status, a reset, a timeout. The signed URL carries
a signature and the access key's id, so no message here ever includes it.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

__all__ = ["SignedRanges"]

log = logging.getLogger(__name__)

BUFFER = 256 << 10
"""Bytes read at a time. Larger buffers measured slower: the kernel then spends its time
faulting and reclaiming pages rather than copying."""
SIGNATURE_LIFETIME = timedelta(hours=1)
"""Parts asked for after this (a very big object on a slow link) fall back to obstore."""
MAX_HEADER = 64 << 10


class RangeFailed(Exception):
    """The fast path could not fetch a range; the message never names the URL."""


class SignedRanges:
    """Ranged GETs of one object, one keep-alive connection and one buffer per thread.

    The requests are plain HTTP/1.1 written by hand rather than through
    ``http.client``, whose import (the ``email`` package) alone costs a fifth
    of the time Python takes to start: a reply that is not a plain ``206`` with
    a ``Content-Length`` is a failure, and obstore takes the part over.
    """

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("a signed URL must be http(s)")
        self._https = parts.scheme == "https"
        self._address = (parts.hostname, parts.port or (443 if self._https else 80))
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        self._request = f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        self._timeout = timeout
        self._local = threading.local()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    @classmethod
    def for_object(cls, store: Any, key: str, timeout: float) -> SignedRanges | None:
        """Sign a GET of ``key``, or None where the store cannot (anonymous access)."""
        import obstore

        try:
            url = obstore.sign(store, "GET", key, SIGNATURE_LIFETIME)
            return cls(url, timeout)
        except Exception as exc:
            log.debug("no signed URL for a fast ranged download (%s)", type(exc).__name__)
            return None

    def fetch(self, start: int, end: int, write: Callable[[memoryview, int], None]) -> None:
        """Bytes ``[start, end)`` of the object, handed to ``write(block, offset)`` in order."""
        sock, buffer = self._connection()
        try:
            request = f"{self._request}Range: bytes={start}-{end - 1}\r\n\r\n"
            sock.sendall(request.encode("ascii"))
            body, keep_alive = self._read_head(sock, end - start)
            if body:
                write(memoryview(body), start)
            offset = start + len(body)
            while offset < end:
                n = sock.recv_into(buffer, min(BUFFER, end - offset))
                if n == 0:
                    raise RangeFailed(f"the response ended {end - offset} bytes short")
                write(buffer[:n], offset)
                offset += n
            if not keep_alive:
                self._drop(sock)
        except Exception:
            self._drop(sock)
            raise

    def close(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()

    @staticmethod
    def _read_head(sock: socket.socket, length: int) -> tuple[bytes, bool]:
        """Read the status line and headers; return the body bytes that came with them and
        whether the connection stays open. Anything but ``206`` of ``length`` bytes fails."""
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            if not chunk or len(head) > MAX_HEADER:
                raise RangeFailed("no complete response head")
            head += chunk
        header, _, body = head.partition(b"\r\n\r\n")
        status, *lines = header.decode("latin-1").split("\r\n")
        fields: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip().lower()
        code = status.split(" ", 2)[1] if " " in status else "no status"
        if code != "206":
            raise RangeFailed(f"HTTP {code} instead of 206 for a ranged GET")
        if fields.get("content-length") != str(length) or "transfer-encoding" in fields:
            raise RangeFailed("a ranged GET answered with another length")
        if len(body) > length:
            raise RangeFailed("the response is longer than the range")
        return body, fields.get("connection") != "close" and status.startswith("HTTP/1.1")

    def _connection(self) -> tuple[socket.socket, memoryview]:
        sock = getattr(self._local, "socket", None)
        if sock is None:
            sock = socket.create_connection(self._address, timeout=self._timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._https:
                import ssl

                context = ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=self._address[0])
            self._local.socket = sock
            self._local.buffer = memoryview(bytearray(BUFFER))
            with self._lock:
                self._sockets.append(sock)
        return sock, self._local.buffer

    def _drop(self, sock: socket.socket) -> None:
        """A failed or closing connection is closed and forgotten; the next part opens another."""
        sock.close()
        self._local.socket = None
        with self._lock:
            if sock in self._sockets:
                self._sockets.remove(sock)
