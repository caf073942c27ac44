"""Copying many objects, or big ones, as fast as the network and the server allow.

A copy is planned first (what goes where, what is already there, which keys
are refused) and then run on one asyncio loop over obstore: up to
``concurrency`` requests at a time across files, and a big object in ranged
parts fetched ``parts_in_flight`` at a time and written in place, so memory
stays near ``part_size * parts_in_flight`` whatever the object's size.
Uploads above ``part_size`` are multipart. obstore retries 5xx answers
(503 SlowDown included), dropped connections and timeouts with exponential
backoff and jitter.

Every download is written to a hidden temp file next to its target and
renamed only once complete and of the expected size, with the object's
modification time, so an interrupted copy leaves no partial file at a final
name and a rerun skips what is complete (same size, same time).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from altus.storage.s3 import S3Client, translate_error

__all__ = ["CopyItem", "CopyReport", "Transfers"]

MiB = 1 << 20


@dataclass(frozen=True)
class CopyItem:
    """One file or object to copy: a key and a local path, one of them the source."""

    key: str
    path: Path
    size: int
    modified: float


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
    """Runs downloads and uploads between one bucket and the local disk."""

    client: S3Client
    bucket: str
    concurrency: int = 64
    part_size: int = 16 * MiB
    parts_in_flight: int = 8
    progress: Progress = field(default_factory=Progress)

    def download(self, items: Sequence[CopyItem], report: CopyReport) -> CopyReport:
        return self._run(items, self._download_one, report)

    def upload(self, items: Sequence[CopyItem], report: CopyReport) -> CopyReport:
        return self._run(items, self._upload_one, report)

    def _run(
        self,
        items: Sequence[CopyItem],
        one: Callable[[CopyItem, asyncio.Semaphore, CopyReport], Any],
        report: CopyReport,
    ) -> CopyReport:
        started = time.perf_counter()

        async def main() -> None:
            requests = asyncio.Semaphore(self.concurrency)
            await asyncio.gather(*(one(item, requests, report) for item in items))

        asyncio.run(main())
        report.seconds += time.perf_counter() - started
        return report

    @property
    def _store(self) -> Any:
        return self.client.store(self.bucket)

    # -- downloads ----------------------------------------------------------------------

    async def _download_one(
        self, item: CopyItem, requests: asyncio.Semaphore, report: CopyReport
    ) -> None:
        where = f"s3://{self.bucket}/{item.key}"
        tmp = item.path.with_name(f".{item.path.name}.altus-{secrets.token_hex(4)}")
        try:
            item.path.parent.mkdir(parents=True, exist_ok=True)
            if item.size > self.part_size:
                await self._download_parts(item, tmp, requests)
            else:
                await self._download_whole(item, tmp, requests)
            os.utime(tmp, (item.modified, item.modified))
            os.replace(tmp, item.path)
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            report.failed.append((where, _reason(exc, "download", where)))
            return
        report.copied += 1
        report.bytes += item.size
        self.progress.file_done()

    async def _download_whole(self, item: CopyItem, tmp: Path, requests: asyncio.Semaphore) -> None:
        import obstore

        async with requests:
            response = await obstore.get_async(self._store, item.key)
            data = await response.bytes_async()
        if len(data) != item.size:
            raise OSError(f"got {len(data)} bytes, expected {item.size} (changed while copying?)")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _write_all(fd, memoryview(data), 0)
        finally:
            os.close(fd)
        self.progress.add(len(data))

    async def _download_parts(self, item: CopyItem, tmp: Path, requests: asyncio.Semaphore) -> None:
        import obstore

        parts = asyncio.Semaphore(self.parts_in_flight)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)

        async def part(start: int) -> None:
            end = min(start + self.part_size, item.size)
            async with parts, requests:
                data = await obstore.get_range_async(self._store, item.key, start=start, end=end)
                if len(data) != end - start:
                    raise OSError(f"part at {start}: got {len(data)} bytes, expected {end - start}")
                await asyncio.to_thread(_write_all, fd, memoryview(data), start)
            self.progress.add(end - start)

        try:
            os.ftruncate(fd, item.size)
            await asyncio.gather(*(part(s) for s in range(0, item.size, self.part_size)))
        finally:
            os.close(fd)

    # -- uploads ------------------------------------------------------------------------

    async def _upload_one(
        self, item: CopyItem, requests: asyncio.Semaphore, report: CopyReport
    ) -> None:
        import obstore

        where = f"s3://{self.bucket}/{item.key}"
        try:
            if item.size > self.part_size:
                async with requests:
                    await obstore.put_async(
                        self._store,
                        item.key,
                        item.path,
                        chunk_size=self.part_size,
                        max_concurrency=self.parts_in_flight,
                    )
            else:
                data = item.path.read_bytes()
                async with requests:
                    await obstore.put_async(self._store, item.key, data, use_multipart=False)
        except Exception as exc:
            report.failed.append((str(item.path), _reason(exc, "upload", where)))
            return
        self.progress.add(item.size)
        report.copied += 1
        report.bytes += item.size
        self.progress.file_done()


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
