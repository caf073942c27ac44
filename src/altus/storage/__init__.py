"""Stores: where everything durable lives (``file://`` today, ``s3://`` next)."""

from __future__ import annotations

import os
from urllib.parse import unquote, urlparse

from altus.errors import StoreError
from altus.storage.local import LocalStore
from altus.storage.store import Store

__all__ = ["LocalStore", "Store", "open_store"]


def open_store(url: str | os.PathLike[str] | Store) -> Store:
    """The store for a URL: a plain path, ``file://…``; other schemes name their extra."""
    if isinstance(url, Store):
        return url
    text = os.fspath(url)
    parsed = urlparse(text)
    if parsed.scheme in ("", "file"):
        return LocalStore(unquote(parsed.path) if parsed.scheme else text)
    if len(parsed.scheme) == 1:  # a Windows drive letter, not a scheme
        return LocalStore(text)
    raise StoreError(f"store {text!r}: the {parsed.scheme}:// scheme is not supported yet")
