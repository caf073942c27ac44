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
name and a rerun skips what is complete (same size, same time). The temp file
is the user's alone (0600) until then, and gets the mode ``cp`` would give it
(0666 less the umask) just before the rename.

Someone else may be able to write to the destination folder. So every name in
it is opened, made, renamed and removed relative to a descriptor of its folder,
opened once without following links (``safety.DestinationFolders``); temp
names are created exclusively, and a resume file or part ledger already there
is reused only if it is a plain file of ours linked nowhere else
(``safety.open_own``), else the download starts over.
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

from altus.errors import UnsafeKeyError
from altus.storage.ranged_get import SignedRanges
from altus.storage.s3 import S3Client, translate_error
from altus.storage.safety import DestinationFolders, create_private, open_own

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
    _fast_failed: bool = False
    """Set once a signed ranged GET failed: the remaining parts all go through obstore."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def download(self, items: Sequence[CopyItem], report: CopyReport, root: Path) -> CopyReport:
        """Download ``items``, whose paths all lie below the destination folder ``root``."""
        started = time.perf_counter()
        folders = DestinationFolders(root)
        try:
            small = [item for item in items if item.size <= self.part_size]
            self._on_threads(
                small, lambda item, rep: self._download_one(item, rep, folders), report
            )
            for item in items:
                if item.size > self.part_size:
                    self._download_one(item, report, folders)
        finally:
            folders.close()
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

    def _download_one(
        self, item: CopyItem, report: CopyReport, folders: DestinationFolders
    ) -> None:
        where = f"s3://{self.bucket}/{item.key}"
        try:
            relative = item.path.relative_to(folders.root)
            folder = relative.parent.as_posix()
            place = _Place(self._hold(folders, folder), relative.name, folders.file_mode)
            try:
                if item.size > self.part_size:
                    self._download_parts(item, place)
                else:
                    self._download_whole(item, place)
            finally:
                folders.release(folder)
        except Exception as exc:
            self._failed(report, where, _reason(exc, "download", where))
            return
        self._done(report, item)

    @staticmethod
    def _hold(folders: DestinationFolders, folder: str) -> int:
        """The folder's descriptor; the first time, cleared of what killed copies left."""
        fd, first = folders.hold(folder)
        if first:
            try:
                _remove_orphaned_temp_files(fd)
            except BaseException:
                folders.release(folder)
                raise
        return fd

    def _download_whole(self, item: CopyItem, place: _Place) -> None:
        """One GET, streamed to a temp file in blocks: a thread holds about ``STREAM_BLOCK``
        of it at a time, so many threads on mid-sized objects stay small in memory."""
        import obstore

        tmp = _temp_name(f".{place.name}")
        response = obstore.get(self._store, item.key)  # no temp file until the server answers
        fd = create_private(place.folder, tmp)
        try:
            try:
                self._stream_whole(response, fd, item)
                place.finish(fd, item.modified)
            finally:
                os.close(fd)
            place.rename(tmp)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=place.folder)
            raise

    def _stream_whole(self, response: Any, fd: int, item: CopyItem) -> None:
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

    def _download_parts(self, item: CopyItem, place: _Place) -> None:
        """Ranged GETs on ``parts_in_flight`` threads, each streamed to its place in the
        file in blocks of ``STREAM_BLOCK``: buffers stay small, not one per part.

        The temp file keeps a stable name and a ledger of the parts on disk, so a copy
        that failed or was killed half-way fetches only the missing parts next time
        (while the object is unchanged); a lock keeps two copies from sharing it. Both
        are reused only if they are plain files of ours (``_open_resume``).
        """
        resume = f".{place.name}.altus-resume"
        fd, reused = _open_resume(place.folder, resume)
        try:
            _lock_or_fail(fd, resume)
            identity = self._identity(item)
            ledger = (
                PartLedger.load(place.folder, resume + ".json", identity)
                if reused
                else PartLedger(place.folder, resume + ".json", identity, set())
            )
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
            place.finish(fd, item.modified)
            place.rename(resume)
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


@dataclass(frozen=True)
class _Place:
    """Where a download lands: its folder's descriptor, its name there, its final mode."""

    folder: int
    name: str
    mode: int

    def finish(self, fd: int, modified: float) -> None:
        """The object's time and the user's mode, set on the complete temp file."""
        os.utime(fd, (modified, modified))
        os.fchmod(fd, self.mode)

    def rename(self, tmp: str) -> None:
        """Put ``tmp`` at the final name; a link there is replaced, never followed."""
        os.replace(tmp, self.name, src_dir_fd=self.folder, dst_dir_fd=self.folder)


class PartLedger:
    """The parts of a big download already on disk, in a JSON file beside its temp file."""

    def __init__(self, folder: int, name: str, identity: dict[str, Any], done: set[int]) -> None:
        self.folder = folder
        self.name = name
        self.identity = identity
        self.done = done

    @classmethod
    def load(cls, folder: int, name: str, identity: dict[str, Any]) -> PartLedger:
        """The ledger ``name`` in ``folder`` if it is a plain file of ours that describes
        the same object, else an empty one."""
        try:
            fd = open_own(folder, name, os.O_RDONLY)
            if fd is not None:
                with open(fd, "rb") as file:
                    saved = json.load(file)
                if saved.get("identity") == identity:
                    return cls(folder, name, identity, {int(start) for start in saved["done"]})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
        return cls(folder, name, identity, set())

    def add(self, start: int) -> None:
        """Record a part, written to a new temp file renamed over the ledger."""
        self.done.add(start)
        data = json.dumps({"identity": self.identity, "done": sorted(self.done)}).encode()
        tmp = _temp_name(self.name)
        fd = create_private(self.folder, tmp)
        try:
            try:
                _write_all(fd, memoryview(data), 0)
            finally:
                os.close(fd)
            os.replace(tmp, self.name, src_dir_fd=self.folder, dst_dir_fd=self.folder)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=self.folder)
            raise

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.name, dir_fd=self.folder)


def _temp_name(hidden: str) -> str:
    """A temp name for the hidden name ``hidden``, which ``_remove_orphaned_temp_files``
    recognises once this process is gone."""
    return f"{hidden}.altus-{os.getpid()}-{secrets.token_hex(4)}"


def _open_resume(folder: int, resume: str) -> tuple[int, bool]:
    """The resume file of a big download and whether it was already there. One that is
    not a plain file of ours (a link, another user's, a hard link) is removed with its
    ledger, and a new one made exclusively: nothing is ever written through it."""
    fd = open_own(folder, resume, os.O_RDWR)
    if fd is not None:
        return fd, True
    for name in (resume + ".json", resume):
        try:
            os.unlink(name, dir_fd=folder)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise UnsafeKeyError(
                f"{name} is not a plain file of yours and cannot be removed ({exc.strerror})"
            ) from exc
    return create_private(folder, resume, os.O_RDWR), False


def _lock_or_fail(fd: int, path: str) -> None:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise OSError(f"another copy is downloading to {path} right now") from None


_TEMP_FILE = re.compile(r"^\..+\.altus-(\d+)-[0-9a-f]{8}$")


def _remove_orphaned_temp_files(folder: int) -> None:
    """Delete temp files of downloads whose process is gone (killed mid-copy)."""
    with os.scandir(folder) as entries:
        for entry in entries:
            match = _TEMP_FILE.match(entry.name)
            if match and not _alive(int(match[1])):
                with contextlib.suppress(OSError):
                    os.unlink(entry.name, dir_fd=folder)


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
