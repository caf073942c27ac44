"""Copying many objects, or big ones, as fast as the network and the server allow.

A copy is planned first (what goes where, what is already there, which keys
are refused) and then run over obstore: small objects one request each on a
pool of threads, a big object in ranged parts streamed to their place in the
file, so memory stays near ``parts_in_flight`` blocks whatever the object's
size. Those parts go first over a signed URL into reused buffers
(``ranged_get``), obstore taking over if that fails. Uploads above
``part_size`` are multipart. obstore retries 5xx answers
(503 SlowDown included), dropped connections and timeouts with exponential
backoff and jitter.

Every download is written to a hidden temp file next to its target and
renamed only once complete and of the expected size, with the object's
modification time, so an interrupted copy leaves no partial file at a final
name and a rerun skips what is complete (same size, same time).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from altus.storage.ranged_get import SignedRanges
from altus.storage.s3 import S3Client, translate_error

__all__ = ["CopyItem", "CopyReport", "Transfers"]

log = logging.getLogger(__name__)

MiB = 1 << 20
MAX_SINGLE_COPY = 5 << 30
"""S3's limit for one CopyObject request."""
STREAM_BLOCK = 1 * MiB
"""A big object's parts arrive in blocks of about this size, each written where it goes."""


@dataclass(frozen=True)
class CopyItem:
    """One file or object to copy: a key and a local path, one of them the source."""

    key: str
    path: Path
    size: int
    modified: float
    etag: str | None = None
    target_key: str | None = None
    """For a copy between buckets: the key it gets there (``path`` is unused)."""


@dataclass
class CopyReport:
    """What a copy did; ``failed`` holds (what, one-line reason)."""

    copied: int = 0
    skipped: int = 0
    bytes: int = 0
    seconds: float = 0.0
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "copied": self.copied,
            "skipped": self.skipped,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "failed": [{"item": item, "error": error} for item, error in self.failed],
        }


class Progress:
    """Counts bytes and files; the CLI hands in a tqdm bar, the library none."""

    def __init__(self, bar: Any = None) -> None:
        self.bar = bar

    def add(self, n_bytes: int) -> None:
        if self.bar is not None:
            self.bar.update(n_bytes)

    def file_done(self) -> None:
        if self.bar is not None:
            self.bar.files_done = getattr(self.bar, "files_done", 0) + 1
            self.bar.set_postfix(files=self.bar.files_done, refresh=False)


@dataclass
class Transfers:
    """Runs downloads and uploads between one bucket and the local disk.

    Everything runs on threads with obstore's blocking calls, which release
    the GIL: for many small files that costs less than bridging thousands of
    Rust futures into asyncio. Objects up to ``part_size`` go one request each
    on ``concurrency`` threads; bigger downloads come in ranged parts on
    ``parts_in_flight`` threads, bigger uploads are multipart, obstore sending
    ``parts_in_flight`` parts at once.
    """

    client: S3Client
    bucket: str
    concurrency: int = 64
    part_size: int = 16 * MiB
    download_part_size: int = 64 * MiB
    """The largest range one thread fetches of a big object: from a local SeaweedFS, 64 MiB
    parts made a 1 GiB download a tenth faster than 16 MiB ones (fewer, longer disk reads)."""
    parts_in_flight: int = 6
    checksum: bool = False
    """Also compare MD5 sums with the server's ETags, where an ETag is one (not multipart)."""
    progress: Progress = field(default_factory=Progress)
    _folders: set[str] = field(default_factory=set)
    _fast_failed: bool = False
    """Set once a signed ranged GET failed: the remaining parts all go through obstore."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def download(self, items: Sequence[CopyItem], report: CopyReport) -> CopyReport:
        started = time.perf_counter()
        small = [item for item in items if item.size <= self.part_size]
        self._on_threads(small, self._download_one, report)
        for item in items:
            if item.size > self.part_size:
                self._download_one(item, report)
        report.seconds += time.perf_counter() - started
        return report

    def upload(self, items: Sequence[CopyItem], report: CopyReport) -> CopyReport:
        started = time.perf_counter()
        self._on_threads(items, self._upload_one, report)
        report.seconds += time.perf_counter() - started
        return report

    def copy(self, items: Sequence[CopyItem], target_bucket: str, report: CopyReport) -> CopyReport:
        """Server-side copies into ``target_bucket`` (one request each, up to 5 GiB)."""
        started = time.perf_counter()
        self._on_threads(items, lambda item, rep: self._copy_one(item, target_bucket, rep), report)
        report.seconds += time.perf_counter() - started
        return report

    def _copy_one(self, item: CopyItem, target_bucket: str, report: CopyReport) -> None:
        source = f"s3://{self.bucket}/{item.key}"
        try:
            if item.size > MAX_SINGLE_COPY:
                raise OSError("objects over 5 GiB cannot be copied between buckets yet")
            self.client.boto.copy_object(
                Bucket=target_bucket,
                Key=item.target_key,
                CopySource={"Bucket": self.bucket, "Key": item.key},
            )
        except Exception as exc:
            self._failed(report, source, _reason(exc, "copy", source))
            return
        self.progress.add(item.size)
        self._done(report, item)

    def _on_threads(
        self,
        items: Sequence[CopyItem],
        one: Callable[[CopyItem, CopyReport], None],
        report: CopyReport,
    ) -> None:
        if not items:
            return
        workers = max(1, min(self.concurrency, len(items)))
        with ThreadPoolExecutor(workers, thread_name_prefix="altus-copy") as pool:
            for _ in pool.map(lambda item: one(item, report), items):
                pass

    @property
    def _store(self) -> Any:
        return self.client.store(self.bucket)

    def _done(self, report: CopyReport, item: CopyItem) -> None:
        with self._lock:
            report.copied += 1
            report.bytes += item.size
        self.progress.file_done()

    def _failed(self, report: CopyReport, what: str, reason: str) -> None:
        with self._lock:
            report.failed.append((what, reason))

    # -- downloads ----------------------------------------------------------------------

    def _download_one(self, item: CopyItem, report: CopyReport) -> None:
        where = f"s3://{self.bucket}/{item.key}"
        final = str(item.path)
        folder, name = os.path.split(final)
        folder = folder or "."
        try:
            self._make_folder(folder)
            if item.size > self.part_size:
                self._download_parts(item, os.path.join(folder, f".{name}.altus-resume"), final)
            else:
                self._download_whole(item, folder, name, final)
        except Exception as exc:
            self._failed(report, where, _reason(exc, "download", where))
            return
        self._done(report, item)

    def _make_folder(self, folder: str) -> None:
        """Each destination folder is made (or cleaned of what killed copies left) once."""
        with self._lock:
            if folder in self._folders:
                return
            self._folders.add(folder)
        os.makedirs(folder, exist_ok=True)
        _remove_orphaned_temp_files(folder)

    def _download_whole(self, item: CopyItem, folder: str, name: str, final: str) -> None:
        """One GET, streamed to a temp file in blocks: a thread holds about ``STREAM_BLOCK``
        of it at a time, so many threads on mid-sized objects stay small in memory."""
        import obstore

        tmp = os.path.join(folder, f".{name}.altus-{os.getpid()}-{secrets.token_hex(4)}")
        response = obstore.get(self._store, item.key)  # no temp file until the server answers
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            digest = _md5() if self.checksum else None
            offset = 0
            for block in response.stream(min_chunk_size=STREAM_BLOCK):
                _write_all(fd, memoryview(block), offset)
                offset += len(block)
                if digest is not None:
                    digest.update(block)
                self.progress.add(len(block))
            if offset != item.size:
                raise OSError(f"got {offset} bytes, expected {item.size} (changed while copying?)")
            if digest is not None:
                _check_md5(digest.hexdigest(), item.etag)
            os.utime(fd, (item.modified, item.modified))
            os.close(fd)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _download_parts(self, item: CopyItem, tmp: str, final: str) -> None:
        """Ranged GETs on ``parts_in_flight`` threads, each streamed to its place in the
        file in blocks of ``STREAM_BLOCK``: buffers stay small, not one per part.

        The temp file keeps a stable name and a ledger of the parts on disk, so a copy
        that failed or was killed half-way fetches only the missing parts next time
        (while the object is unchanged); a lock keeps two copies from sharing it.
        """
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock_or_fail(fd, tmp)
            ledger = PartLedger.load(tmp + ".json", self._identity(item))
            if not ledger.done:
                os.ftruncate(fd, 0)
                _preallocate(fd, item.size)
            step = self._download_step(item)
            missing = [s for s in range(0, item.size, step) if s not in ledger.done]
            self.progress.add(item.size - sum(min(s + step, item.size) - s for s in missing))
            fast = SignedRanges.for_object(self._store, item.key, self.client.options.read_timeout)
            try:
                with ThreadPoolExecutor(
                    self.parts_in_flight, thread_name_prefix="altus-part"
                ) as pool:
                    for start in pool.map(
                        lambda s: self._download_part(item, fd, s, fast), missing
                    ):
                        ledger.add(start)
            finally:
                if fast is not None:
                    fast.close()
            os.utime(fd, (item.modified, item.modified))
            os.replace(tmp, final)
            ledger.remove()
        finally:
            os.close(fd)

    def _identity(self, item: CopyItem) -> dict[str, Any]:
        """What must not have changed for the parts on disk to be reused."""
        return {
            "key": item.key,
            "size": item.size,
            "etag": item.etag,
            "modified": item.modified,
            "part_size": self._download_step(item),
        }

    def _download_step(self, item: CopyItem) -> int:
        """Each part's size: enough parts to keep every thread busy, none over
        ``download_part_size`` nor under ``part_size``."""
        per_thread = -(-item.size // self.parts_in_flight)
        per_thread = -(-per_thread // MiB) * MiB
        return max(self.part_size, min(self.download_part_size, per_thread))

    def _download_part(
        self, item: CopyItem, fd: int, start: int, fast: SignedRanges | None = None
    ) -> int:
        import obstore

        end = min(start + self._download_step(item), item.size)
        if fast is not None and not self._fast_failed:
            got = [0]

            def write(block: memoryview, offset: int) -> None:
                _write_all(fd, block, offset)
                got[0] += len(block)
                self.progress.add(len(block))

            try:
                fast.fetch(start, end, write)
                return start
            except Exception as exc:  # obstore retries it, with its backoff and messages
                log.debug("fast ranged GET failed (%s); obstore takes over", type(exc).__name__)
                self._fast_failed = True
                self.progress.add(-got[0])
        response = obstore.get(self._store, item.key, options={"range": (start, end)})
        offset = start
        for block in response.stream(min_chunk_size=STREAM_BLOCK):
            _write_all(fd, memoryview(block), offset)
            offset += len(block)
            self.progress.add(len(block))
        if offset != end:
            raise OSError(f"part at {start}: got {offset - start} bytes, expected {end - start}")
        return start

    # -- uploads ------------------------------------------------------------------------

    def _upload_one(self, item: CopyItem, report: CopyReport) -> None:
        import obstore

        where = f"s3://{self.bucket}/{item.key}"
        try:
            if item.size > self.part_size:
                obstore.put(
                    self._store,
                    item.key,
                    item.path,
                    chunk_size=self.part_size,
                    max_concurrency=self.parts_in_flight,
                )
            else:
                data = item.path.read_bytes()
                sent = obstore.put(self._store, item.key, data, use_multipart=False)
                if self.checksum:
                    _check_md5(data, sent.get("e_tag"))
        except Exception as exc:
            self._failed(report, str(item.path), _reason(exc, "upload", where))
            return
        self.progress.add(item.size)
        self._done(report, item)


class PartLedger:
    """The parts of a big download already on disk, in a JSON file beside its temp file."""

    def __init__(self, path: str, identity: dict[str, Any], done: set[int]) -> None:
        self.path = path
        self.identity = identity
        self.done = done

    @classmethod
    def load(cls, path: str, identity: dict[str, Any]) -> PartLedger:
        """The ledger at ``path`` if it describes the same object, else an empty one."""
        try:
            with open(path, "rb") as file:
                saved = json.load(file)
            if saved.get("identity") == identity:
                return cls(path, identity, {int(start) for start in saved["done"]})
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return cls(path, identity, set())

    def add(self, start: int) -> None:
        self.done.add(start)
        tmp = f"{self.path}.{os.getpid()}"
        with open(tmp, "w") as file:
            json.dump({"identity": self.identity, "done": sorted(self.done)}, file)
        os.replace(tmp, self.path)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _lock_or_fail(fd: int, path: str) -> None:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise OSError(f"another copy is downloading to {path} right now") from None


_TEMP_FILE = re.compile(r"^\..+\.altus-(\d+)-[0-9a-f]{8}$")


def _remove_orphaned_temp_files(folder: str) -> None:
    """Delete temp files of downloads whose process is gone (killed mid-copy)."""
    with os.scandir(folder) as entries:
        for entry in entries:
            match = _TEMP_FILE.match(entry.name)
            if match and not _alive(int(match[1])):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _check_md5(data_or_digest: Any, etag: str | None) -> None:
    """Raise if a single-part object's ETag (its MD5) does not match the bytes (or their
    hex MD5 digest, already computed)."""
    etag = (etag or "").strip('"')
    if len(etag) == 32 and all(c in "0123456789abcdef" for c in etag):
        if isinstance(data_or_digest, str):
            digest = data_or_digest
        else:
            digest = _md5(data_or_digest).hexdigest()
        if digest != etag:
            raise OSError(f"checksum mismatch: MD5 {digest}, the server's ETag {etag}")


def _md5(data: bytes = b"") -> Any:
    import hashlib  # only for --checksum: loading OpenSSL's hashes costs 10 ms at start-up

    return hashlib.md5(data, usedforsecurity=False)


def _preallocate(fd: int, size: int) -> None:
    """Reserve the file's blocks first: parts then land in place, not in a sparse file
    the filesystem extends piece by piece out of order (a third faster on ext4)."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError:  # not every filesystem can (tmpfs on old kernels, some network ones)
        os.ftruncate(fd, size)


def _write_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _reason(exc: BaseException, operation: str, where: str) -> str:
    if isinstance(exc, OSError) and not type(exc).__module__.startswith("obstore"):
        if isinstance(exc, FileNotFoundError | PermissionError) and exc.filename is None:
            return str(translate_error(exc, operation, where))
        return f"{operation} {where}: {exc.strerror or exc}"
    return str(translate_error(exc, operation, where))
