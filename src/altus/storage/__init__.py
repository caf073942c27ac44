"""Stores: where everything durable lives (``file://`` paths and ``s3://`` buckets)."""

from __future__ import annotations

import os
from urllib.parse import unquote, urlparse

from altus.errors import StoreError
from altus.storage.local import LocalStore
from altus.storage.store import Store, redact

__all__ = ["LocalStore", "Store", "open_store", "redact"]


def open_store(url: str | os.PathLike[str] | Store, mode: str = "private") -> Store:
    """The store for a URL: a plain path, ``file://…``; other schemes name their extra.

    ``mode`` (the ``[store] mode`` setting) is who may read what a ``file://``
    store makes: ``private`` (the owner) or ``group``; S3 has its own policies.
    """
    if isinstance(url, Store):
        return url
    text = os.fspath(url)
    parsed = urlparse(text)
    if parsed.scheme in ("", "file"):
        return LocalStore(unquote(parsed.path) if parsed.scheme else text, mode)
    if len(parsed.scheme) == 1:  # a Windows drive letter, not a scheme
        return LocalStore(text, mode)
    if parsed.scheme == "s3":
        from altus.storage.s3 import S3Client
        from altus.storage.s3_store import S3Store

        if "@" in parsed.netloc:
            raise StoreError(
                f"store {redact(text)!r}: an s3:// URL holds no credentials;"
                " use AWS_PROFILE or the AWS_* variables"
            )
        if not parsed.netloc:
            raise StoreError(f"store {text!r}: an s3:// URL needs a bucket")
        return S3Store(parsed.netloc, unquote(parsed.path), S3Client())
    raise StoreError(f"store {redact(text)!r}: the {parsed.scheme}:// scheme is not supported")
