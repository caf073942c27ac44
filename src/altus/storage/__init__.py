"""Stores: where everything durable lives (``file://`` paths and ``s3://`` buckets)."""

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
    if parsed.scheme == "s3":
        from altus.storage.s3 import S3Client
        from altus.storage.s3_store import S3Store

        if not parsed.netloc:
            raise StoreError(f"store {text!r}: an s3:// URL needs a bucket")
        return S3Store(parsed.netloc, unquote(parsed.path), S3Client())
    raise StoreError(f"store {text!r}: the {parsed.scheme}:// scheme is not supported")
