"""A full disk, for real: a 2 MiB tmpfs that a map's inputs or a commit's results overflow.

A failed write leaves no ``.tmp-*`` file; a record that cannot be created whole
is removed and reported as one ``StoreError`` line.
"""

from __future__ import annotations

import contextlib
import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from altus import Knot
from altus.batch.record import BatchName, Commit, JobRecord, JobSpec
from altus.errors import StoreError
from altus.storage import LocalStore

SIZE = 2 * 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (the tests run as root), unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mount)],
        check=True,
        capture_output=True,
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


def temp_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.name.startswith(".tmp-")]


def fill(disk: Path) -> None:
    """Write a filler file until the disk is full."""
    with (disk / "filler").open("wb") as stream, contextlib.suppress(OSError):
        while True:
            stream.write(bytes(64 * 1024))
            stream.flush()


def test_a_map_onto_a_full_disk_is_one_line_and_leaves_nothing(small_disk: Path) -> None:
    jobs = small_disk / "jobs"
    inputs = [bytes(500_000) for _ in range(14)]  # about 7 MB of chunks for a 2 MiB disk
    with pytest.raises(StoreError) as caught:
        Knot(len, store=str(jobs), backend="local").map(inputs)
    message = str(caught.value)
    assert (
        message == f"cannot write the job record to {LocalStore(jobs).url}: no space left on device"
    )
    assert "\n" not in message
    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.__cause__.errno == errno.ENOSPC
    assert not list(jobs.iterdir())  # the job folder is gone, not a 2 MiB stray
    assert not temp_files(small_disk)


def test_a_commit_onto_a_full_disk_leaves_no_temp_file(small_disk: Path) -> None:
    spec = JobSpec(id="job", name="job", function="f", backend="local", n_tasks=2, bounds=(0, 2))
    record = JobRecord.create(LocalStore(small_disk / "jobs"), spec, b"f", [b"inputs"])
    assert record is not None
    fill(small_disk)
    commit = Commit(tasks=[0, 1], start=[0.0] * 2, duration=[0.0] * 2, peak_memory=[0] * 2)
    with pytest.raises(OSError, match="No space left") as caught:
        record.commit(BatchName(0, 0, 0, "b0"), commit, bytes(1024 * 1024))
    assert caught.value.errno == errno.ENOSPC
    assert not temp_files(small_disk)
    assert not list(record.status_names())  # nothing committed: the task runs again


def test_a_create_onto_a_full_disk_leaves_no_temp_file(small_disk: Path) -> None:
    (small_disk / "job").mkdir(mode=0o700)
    store = LocalStore(small_disk / "job")
    fill(small_disk)
    with pytest.raises(OSError, match="No space left"):
        store.create("status/s.json", bytes(256 * 1024))
    assert not temp_files(small_disk)
    assert not store.exists("status/s.json")
