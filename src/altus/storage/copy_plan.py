"""What a copy will do, worked out before any byte moves (and all ``--dry-run`` shows).

The rules follow the AWS CLI and s5cmd: copying a prefix recursively (or a
wildcard) puts each object at its key relative to that prefix below the
destination folder; a single object copied to a folder (an existing one, or a
destination ending in ``/``) keeps its name. An object already at the
destination with the same size and time is skipped, so rerunning an
interrupted copy only copies what is missing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG

from altus.errors import StoreError, UnsafeKeyError
from altus.storage.objects import (
    Entry,
    Location,
    Selection,
    list_local,
    list_remote,
    split_wildcard,
)
from altus.storage.s3 import S3Client, translate_error
from altus.storage.safety import local_target
from altus.storage.transfer import CopyItem, CopyReport, Transfers

__all__ = ["CopyPlan", "execute", "plan_copy"]


@dataclass
class CopyPlan:
    """Items to copy, how many are already there, and keys refused as unsafe."""

    direction: str  # "download", "upload" or "copy" (bucket to bucket)
    bucket: str
    target_bucket: str = ""
    items: list[CopyItem] = field(default_factory=list)
    skipped: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)
    root: Path = field(default_factory=Path)
    """A download's destination folder: every item's path lies below it, and below it
    nothing is written through a symbolic link (``safety.DestinationFolders``)."""

    @property
    def total_bytes(self) -> int:
        return sum(item.size for item in self.items)


def plan_copy(
    client: S3Client,
    source: Location,
    target: Location,
    *,
    recursive: bool = False,
    selection: Selection | None = None,
    force: bool = False,
) -> CopyPlan:
    selection = selection or Selection()
    if source.is_remote and not target.is_remote:
        return _plan_download(client, source, Path(target.path), recursive, selection, force)
    if target.is_remote and not source.is_remote:
        return _plan_upload(client, Path(source.path), target, recursive, selection, force)
    if source.is_remote and target.is_remote:
        return _plan_bucket_copy(client, source, target, recursive, selection, force)
    raise StoreError(f"copying {source} to {target}: at least one side must be s3://")


def execute(plan: CopyPlan, transfers: Transfers, report: CopyReport) -> CopyReport:
    """Run a plan: downloads, uploads or copies between buckets."""
    if plan.direction == "download":
        return transfers.download(plan.items, report, plan.root)
    if plan.direction == "upload":
        return transfers.upload(plan.items, report)
    return transfers.copy(plan.items, plan.target_bucket, report)


def _plan_bucket_copy(
    client: S3Client,
    source: Location,
    target: Location,
    recursive: bool,
    selection: Selection,
    force: bool,
) -> CopyPlan:
    """Server-side copies: the bytes never leave the S3 service."""
    plan = CopyPlan("copy", source.bucket, target_bucket=target.bucket)
    listed, pattern = split_wildcard(source.path)
    if pattern is None and not recursive:
        entry = _head(client, source)
        name = source.path.rsplit("/", 1)[-1]
        key = target.path + name if not target.path or target.path.endswith("/") else target.path
        pairs = [(entry, key)]
    else:
        base = listed if pattern is not None else _as_folder(listed)
        base = base[: base.rfind("/") + 1]
        selection = Selection(_relative_pattern(listed, base, pattern), *_filters(selection))
        folder = _as_folder(target.path)
        pairs = [
            (entry, folder + entry.key[len(base) :])
            for entry in list_remote(client, source.bucket, listed if pattern else base)
            if not entry.key.endswith("/") and selection.accepts(entry.key[len(base) :])
        ]
    existing = {} if force else _remote_index(client, target.bucket, _common_prefix(pairs))
    for entry, key in pairs:
        there = existing.get(key)
        if there is not None and there.size == entry.size and there.etag == entry.etag:
            plan.skipped += 1
            continue
        plan.items.append(
            CopyItem(entry.key, Path(key), entry.size, entry.modified, entry.etag, target_key=key)
        )
    return plan


def _common_prefix(pairs: list[tuple[Entry, str]]) -> str:
    keys = [key for _, key in pairs]
    prefix = os.path.commonprefix(keys) if keys else ""  # noqa: RUF071 - keys, not paths
    return prefix[: prefix.rfind("/") + 1]


def _plan_download(
    client: S3Client,
    source: Location,
    root: Path,
    recursive: bool,
    selection: Selection,
    force: bool,
) -> CopyPlan:
    plan = CopyPlan("download", source.bucket, root=root)
    listed, pattern = split_wildcard(source.path)
    if pattern is None and not recursive:
        entry = _head(client, source)
        name = source.path.rsplit("/", 1)[-1]
        into_folder = root.is_dir() or str(root).endswith(("/", os.sep))
        target = root / name if into_folder else root
        plan.root = target.parent
        _add_download(plan, entry, target, force)
        return plan
    base = listed if pattern is not None else _as_folder(listed)
    base = base[: base.rfind("/") + 1]  # the relative part starts after a "/"
    selection = Selection(_relative_pattern(listed, base, pattern), *_filters(selection))
    checked: dict[str, bool] = {}
    for entry in list_remote(client, source.bucket, listed if pattern is not None else base):
        relative = entry.key[len(base) :]
        if entry.key.endswith("/") or not selection.accepts(relative):
            continue  # folder markers hold nothing to copy
        try:
            path = local_target(root, relative, checked)
        except UnsafeKeyError as exc:
            plan.refused.append((f"s3://{source.bucket}/{entry.key}", str(exc)))
            continue
        _add_download(plan, entry, path, force)
    return plan


def _add_download(plan: CopyPlan, entry: Entry, path: Path, force: bool) -> None:
    if not force and _same_file(path, entry.size, entry.modified):
        plan.skipped += 1
        return
    plan.items.append(CopyItem(entry.key, path, entry.size, entry.modified, entry.etag))


def _plan_upload(
    client: S3Client,
    root: Path,
    target: Location,
    recursive: bool,
    selection: Selection,
    force: bool,
) -> CopyPlan:
    plan = CopyPlan("upload", target.bucket)
    if root.is_file():
        key = (
            target.path + root.name if target.path.endswith("/") or not target.path else target.path
        )
        stat = root.stat()
        plan.items.append(CopyItem(key, root, stat.st_size, stat.st_mtime))
        return plan
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such file or folder")
    if not recursive:
        raise StoreError(f"{root} is a folder: copy it with --recursive")
    prefix = _as_folder(target.path)
    existing = {} if force else _remote_index(client, target.bucket, prefix)
    for entry in list_local(root):
        if not selection.accepts(entry.key):
            continue
        there = existing.get(prefix + entry.key)
        if there is not None and there.size == entry.size and there.modified >= int(entry.modified):
            plan.skipped += 1
            continue
        plan.items.append(
            CopyItem(prefix + entry.key, root / entry.key, entry.size, entry.modified)
        )
    return plan


def _head(client: S3Client, location: Location) -> Entry:
    import obstore

    try:
        meta = obstore.head(client.store(location.bucket), location.path)
    except Exception as exc:
        raise translate_error(exc, "read", str(location)) from exc
    return Entry(
        location.path,
        int(meta["size"]),
        meta["last_modified"].timestamp(),
        str(meta.get("e_tag") or "").strip('"') or None,
    )


def _remote_index(client: S3Client, bucket: str, prefix: str) -> dict[str, Entry]:
    try:
        return {entry.key: entry for entry in list_remote(client, bucket, prefix)}
    except FileNotFoundError:
        return {}


def _same_file(path: Path, size: int, modified: float) -> bool:
    """A regular file already at ``path`` with the object's size and time; a link there is
    never looked through (its target may be anyone's), so it is replaced by the copy."""
    try:
        stat = path.lstat()
    except OSError:
        return False
    return S_ISREG(stat.st_mode) and stat.st_size == size and int(stat.st_mtime) == int(modified)


def _as_folder(prefix: str) -> str:
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def _relative_pattern(listed: str, base: str, pattern: str | None) -> str | None:
    return None if pattern is None else listed[len(base) :] + pattern


def _filters(selection: Selection) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(selection.include), tuple(selection.exclude)
