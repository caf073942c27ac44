"""The Store: a URL root under which everything durable lives.

A store is deliberately tiny: whole-object reads and writes, an exclusive
create, listing and deletion. Every write is atomic — a reader sees the old
object, the new object or nothing, never a torn one — which is what lets a
job record be shared by a client and workers on other hosts with no other
coordination. The same few methods map onto a filesystem (temp file +
rename/link) and onto S3 (one PUT, ``If-None-Match: *`` for create).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator

__all__ = ["Store", "redact"]

_USERINFO = re.compile(r"(?<=://)[^/\s]*@")


def redact(text: str) -> str:
    """``text`` with the ``user:password@`` of every URL in it taken out.

    Endpoint and store URLs may carry credentials; every message that shows a
    URL (and the CLI's one error line, as a last guard) goes through here.
    """
    return _USERINFO.sub("", text)


class Store(ABC):
    """Keys are ``/``-separated relative paths below the store's root URL."""

    url: str

    @abstractmethod
    def read(self, key: str) -> bytes:
        """The whole object; ``FileNotFoundError`` if there is none."""

    @abstractmethod
    def write(self, key: str, data: bytes) -> None:
        """Write or replace the object atomically."""

    @abstractmethod
    def create(self, key: str, data: bytes) -> bool:
        """Write the object only if it does not exist yet; False if it did."""

    def has_root(self) -> bool:
        """Whether the root is there to list; an object store's prefix always is."""
        return True

    def make_root(self) -> None:
        """Create the root where the store has folders; object stores have none."""
        return None

    def sync(self) -> None:
        """Make every object written below the store so far durable, whoever wrote it on
        this host; a no-op where each write already is when it returns (S3)."""
        return None

    def size(self, key: str) -> int | None:
        """The object's size in bytes where the store can tell cheaply (``FileNotFoundError``
        if there is none); None elsewhere. Used to find files a power cut tore, which only
        stores that flush late (files) can have."""
        return None

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether the object exists."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[str]:
        """Keys of every object below ``prefix`` (a folder), in no set order."""

    @abstractmethod
    def children(self, prefix: str) -> Iterator[str]:
        """Names directly below ``prefix``; sub-folders end with ``/``."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one object; missing is fine."""

    @abstractmethod
    def delete_tree(self, prefix: str) -> None:
        """Remove every object below ``prefix``."""

    def child(self, prefix: str) -> Store:
        """A store rooted at ``prefix`` below this one."""
        from altus.storage import open_store

        return open_store(self.url.rstrip("/") + "/" + prefix.strip("/"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact(self.url)!r})"
