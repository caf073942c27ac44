"""Data in object storage, from Python: copy, list, open — the API under ``altus data``.

>>> import altus.data
>>> altus.data.copy("s3://openneuro.org/ds000030/sub-10159/", "data/", recursive=True, anon=True)
>>> [e.key for e in altus.data.ls("s3://openneuro.org/ds000030/", anon=True)][:3]
>>> with altus.data.open("s3://bucket/sub-01/dwi.nii.gz") as f:
...     header = f.read(352)

Credentials come from the standard AWS chain (environment, ``~/.aws``
profiles, instance role); ``profile=``, ``endpoint_url=``, ``region=`` and
``anon=True`` (public buckets) override it for one call.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from typing import Any

from altus.storage.copy_plan import CopyPlan, execute, plan_copy
from altus.storage.objects import (
    Entry,
    Location,
    Selection,
    list_local,
    list_remote,
    parse_location,
)
from altus.storage.s3 import S3Client, S3Options
from altus.storage.transfer import CopyReport, Progress, Transfers

__all__ = ["CopyReport", "Entry", "copy", "filesystem", "ls", "make_bucket", "open", "plan", "run"]


def _client(
    profile: str | None, endpoint_url: str | None, region: str | None, anon: bool
) -> S3Client:
    return S3Client(S3Options(profile=profile, endpoint_url=endpoint_url, region=region, anon=anon))


def plan(
    src: str,
    dst: str,
    *,
    recursive: bool = False,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    force: bool = False,
    client: S3Client | None = None,
) -> CopyPlan:
    """What ``copy`` would do, without doing it (``--dry-run``)."""
    return plan_copy(
        client or S3Client(),
        parse_location(src),
        parse_location(dst),
        recursive=recursive,
        selection=Selection(None, tuple(include), tuple(exclude)),
        force=force,
    )


def copy(
    src: str,
    dst: str,
    *,
    recursive: bool = False,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    force: bool = False,
    checksum: bool = False,
    concurrency: int = 64,
    profile: str | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
    anon: bool = False,
    progress: Any = None,
) -> CopyReport:
    """Copy between S3 and a local path (or two buckets, server-side), in parallel; returns
    what was copied, skipped and failed.

    Objects already at the destination with the same size and time are
    skipped unless ``force``; keys that would land outside the destination
    folder are refused (listed in the report's ``failed``) and the rest copied.
    Sizes are always checked; ``checksum`` also compares MD5 sums with the
    server's ETags where they are one (objects not uploaded in parts).
    """
    client = _client(profile, endpoint_url, region, anon)
    todo = plan(
        src, dst, recursive=recursive, include=include, exclude=exclude, force=force, client=client
    )
    return run(todo, client, concurrency=concurrency, checksum=checksum, progress=progress)


def run(
    todo: CopyPlan,
    client: S3Client,
    *,
    concurrency: int = 64,
    checksum: bool = False,
    progress: Any = None,
) -> CopyReport:
    """Carry out a plan from ``plan``; refused keys count as failed in the report."""
    report = CopyReport(skipped=todo.skipped, failed=list(todo.refused))
    transfers = Transfers(
        client, todo.bucket, concurrency=concurrency, checksum=checksum, progress=Progress(progress)
    )
    return execute(todo, transfers, report)


def ls(
    url: str,
    *,
    recursive: bool = False,
    profile: str | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
    anon: bool = False,
) -> list[Entry]:
    """Objects (and, not recursive, sub-folders) at an ``s3://`` URL or a local path."""
    location = parse_location(url)
    if not location.is_remote:
        from pathlib import Path

        return list(list_local(Path(location.path), recursive=recursive))
    client = _client(profile, endpoint_url, region, anon)
    return list(remote_entries(client, location, recursive=recursive))


def remote_entries(client: S3Client, location: Location, *, recursive: bool) -> Iterator[Entry]:
    """Entries at a remote location, its wildcard (if any) applied."""
    from altus.storage.objects import split_wildcard

    listed, pattern = split_wildcard(location.path)
    if pattern is None:
        yield from list_remote(client, location.bucket, listed, recursive=recursive)
        return
    selection = Selection(listed + pattern)
    for entry in list_remote(client, location.bucket, listed, recursive=True):
        if selection.accepts(entry.key):
            yield entry


def make_bucket(
    url: str,
    *,
    exist_ok: bool = False,
    profile: str | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
    anon: bool = False,
) -> None:
    """Make the bucket ``s3://NAME`` (in the client's region on AWS).

    With ``exist_ok``, a bucket that is already yours is fine.
    """
    from altus.errors import StoreError
    from altus.storage.s3 import translate_error

    location = parse_location(url)
    if not location.is_remote or location.path:
        raise StoreError(f"{url}: give a bucket as s3://NAME")
    client = _client(profile, endpoint_url, region, anon)
    arguments: dict[str, Any] = {"Bucket": location.bucket}
    bucket_region = client.region_for(location.bucket)
    if bucket_region != "us-east-1" and not client.endpoint_url:
        arguments["CreateBucketConfiguration"] = {"LocationConstraint": bucket_region}
    try:
        client.boto.create_bucket(**arguments)
    except Exception as exc:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        if exist_ok and code in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
            return
        raise translate_error(exc, "make bucket", url) from exc


def open(
    url: str,
    *,
    profile: str | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
    anon: bool = False,
) -> Any:
    """A seekable binary reader over an object, streamed in blocks (numpy, nibabel, gzip read it)."""
    import builtins

    location = parse_location(url)
    if not location.is_remote:
        return builtins.open(location.path, "rb")
    import obstore

    from altus.storage.s3 import translate_error

    client = _client(profile, endpoint_url, region, anon)
    try:
        reader = obstore.open_reader(client.store(location.bucket), location.path)
    except Exception as exc:
        raise translate_error(exc, "open", url) from exc
    return io.BufferedReader(_ObjectReader(reader), buffer_size=1 << 20)


class _ObjectReader(io.RawIOBase):
    """obstore's reader as a standard raw stream: ``with``, ``readinto``, ``seek``."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._reader.read(len(buffer))
        n = len(data)
        memoryview(buffer)[:n] = memoryview(data)
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return int(self._reader.seek(offset, whence))

    def tell(self) -> int:
        return int(self._reader.tell())

    def close(self) -> None:
        if not self.closed:
            self._reader.close()
        super().close()


def filesystem(
    url: str = "s3://",
    *,
    profile: str | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
    anon: bool = False,
) -> Any:
    """An fsspec filesystem for one bucket (pandas, xarray, zarr take it as ``filesystem=``).

    Needs ``fsspec`` (``pip install altus[fsspec]``).
    """
    from altus.errors import ConfigError

    try:
        from obstore.fsspec import FsspecStore
    except ImportError as exc:
        raise ConfigError(
            "altus.data.filesystem needs fsspec: pip install 'altus[fsspec]'"
        ) from exc
    location = parse_location(url)
    client = _client(profile, endpoint_url, region, anon)
    return FsspecStore("s3", **client.obstore_settings(location.bucket or "-"))
