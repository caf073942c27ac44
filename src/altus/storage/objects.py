"""Locations (``s3://bucket/key`` or a local path) and listing what is there.

Listings of S3 go through botocore's ListObjectsV2 paginator, which returns
every key exactly as stored, whatever characters it holds. Wildcards follow
s5cmd: ``*`` and ``?`` match across ``/``, and only the part of the key after
the last literal character before the first wildcard is listed.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from altus.errors import StoreError
from altus.storage.s3 import S3Client, translate_error

__all__ = ["Entry", "Location", "Selection", "list_local", "list_remote", "parse_location"]

_WILDCARDS = "*?["


@dataclass(frozen=True)
class Location:
    """A local path (``bucket == ""``) or an object key or prefix in a bucket."""

    bucket: str
    path: str

    @property
    def is_remote(self) -> bool:
        return bool(self.bucket)

    @property
    def has_wildcard(self) -> bool:
        return any(char in self.path for char in _WILDCARDS)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.path}" if self.is_remote else self.path


def parse_location(text: str) -> Location:
    """``s3://bucket/key`` or a local path (``file://`` accepted)."""
    parsed = urlparse(text)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StoreError(f"{text}: an s3:// URL needs a bucket")
        return Location(parsed.netloc, text[len("s3://") + len(parsed.netloc) :].lstrip("/"))
    if parsed.scheme == "file":
        return Location("", parsed.path)
    if parsed.scheme and len(parsed.scheme) > 1:
        raise StoreError(
            f"{text}: the {parsed.scheme}:// scheme is not supported (s3:// or a path)"
        )
    return Location("", text)


@dataclass(frozen=True)
class Entry:
    """One object or file: its key (or path), size, modification time and ETag."""

    key: str
    size: int
    modified: float
    etag: str | None = None
    is_folder: bool = False


@dataclass(frozen=True)
class Selection:
    """Which entries below a prefix take part: a wildcard pattern, includes, excludes."""

    pattern: str | None = None
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()

    def accepts(self, relative: str) -> bool:
        if self.pattern is not None and not fnmatch.fnmatchcase(relative, self.pattern):
            return False
        if self.include and not any(fnmatch.fnmatchcase(relative, p) for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(relative, p) for p in self.exclude)


def split_wildcard(path: str) -> tuple[str, str | None]:
    """``("data/sub-", "0*/anat/*.nii.gz")`` for ``data/sub-0*/anat/*.nii.gz``: what to
    list, and the pattern its keys (relative to it) must match."""
    first = min((path.index(c) for c in _WILDCARDS if c in path), default=-1)
    if first < 0:
        return path, None
    return path[:first], path[first:]


def list_remote(
    client: S3Client, bucket: str, prefix: str, *, recursive: bool = True
) -> Iterator[Entry]:
    """Objects below ``prefix`` (and, not recursive, its sub-folders as folder entries).

    obstore lists first (fast, and no botocore to load); a bucket holding a key
    it cannot represent (``..``, control characters, empty segments) makes it
    fail as a whole, and then botocore lists it again, every key as stored.
    """
    from obstore.exceptions import InvalidPathError

    try:
        entries = _list_with_obstore(client, bucket, prefix, recursive)
    except (InvalidPathError, ValueError):
        yield from _list_with_botocore(client, bucket, prefix, recursive)
        return
    except Exception as exc:
        raise translate_error(exc, "list", f"s3://{bucket}/{prefix}") from exc
    yield from entries


def _list_with_obstore(client: S3Client, bucket: str, prefix: str, recursive: bool) -> list[Entry]:
    import obstore

    store = client.store(bucket)
    folder = prefix[: prefix.rfind("/") + 1]  # obstore lists whole path segments
    entries: list[Entry] = []
    if recursive:
        for batch in obstore.list(store, folder or None, chunk_size=1000):
            entries.extend(_entry(meta) for meta in batch if meta["path"].startswith(prefix))
        return entries
    listing = obstore.list_with_delimiter(store, folder.rstrip("/") or None)
    for name in listing["common_prefixes"]:
        if (name + "/").startswith(prefix):
            entries.append(Entry(name + "/", 0, 0.0, is_folder=True))
    entries.extend(_entry(meta) for meta in listing["objects"] if meta["path"].startswith(prefix))
    return entries


def _entry(meta: Any) -> Entry:
    return Entry(
        meta["path"],
        int(meta["size"]),
        meta["last_modified"].timestamp(),
        str(meta.get("e_tag") or "").strip('"') or None,
    )


def _list_with_botocore(
    client: S3Client, bucket: str, prefix: str, recursive: bool
) -> Iterator[Entry]:
    arguments = {"Bucket": bucket, "Prefix": prefix}
    if not recursive:
        arguments["Delimiter"] = "/"
    try:
        for page in client.boto.get_paginator("list_objects_v2").paginate(**arguments):
            for folder in page.get("CommonPrefixes", ()):
                yield Entry(folder["Prefix"], 0, 0.0, is_folder=True)
            for item in page.get("Contents", ()):
                yield Entry(
                    item["Key"],
                    int(item["Size"]),
                    item["LastModified"].timestamp(),
                    str(item.get("ETag", "")).strip('"') or None,
                )
    except Exception as exc:
        raise translate_error(exc, "list", f"s3://{bucket}/{prefix}") from exc


def list_local(root: Path, *, recursive: bool = True) -> Iterator[Entry]:
    """Files below ``root`` (keys relative to it, ``/``-separated); one file if it is one."""
    if root.is_file():
        stat = root.stat()
        yield Entry(root.name, stat.st_size, stat.st_mtime)
        return
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such file or folder")
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        relative = os.path.relpath(folder, root)
        for name in sorted(files):
            path = os.path.join(folder, name)
            key = name if relative == "." else f"{relative}/{name}".replace(os.sep, "/")
            stat = os.stat(path)
            yield Entry(key, stat.st_size, stat.st_mtime)
        if not recursive:
            for name in dirs:
                yield Entry(name + "/", 0, 0.0, is_folder=True)
            return
