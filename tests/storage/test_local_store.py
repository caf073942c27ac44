"""``LocalStore``: private modes, a root it never re-creates, durable commits, clear errors."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from altus.batch.record import BatchName, Commit, JobRecord, JobSpec
from altus.errors import StoreError
from altus.storage import LocalStore, open_store


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def every_path(root: Path) -> Iterator[Path]:
    yield root
    yield from root.rglob("*")


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    made = LocalStore(tmp_path / "records" / "job")
    made.make_root()
    return made


# -- the root ---------------------------------------------------------------------------------


def test_make_root_creates_missing_parents_private(tmp_path: Path) -> None:
    LocalStore(tmp_path / "a" / "b").make_root()
    assert mode(tmp_path / "a") == 0o700
    assert mode(tmp_path / "a" / "b") == 0o700


def test_subfolders_are_created_on_demand(store: LocalStore) -> None:
    store.write("results/deep/r.pkl", b"x")
    assert store.read("results/deep/r.pkl") == b"x"


def test_a_write_never_recreates_a_removed_root(store: LocalStore) -> None:
    store.write("status/a.json", b"1")
    shutil.rmtree(store.root)
    with pytest.raises(FileNotFoundError):
        store.write("results/late.pkl", b"late")
    with pytest.raises(FileNotFoundError):
        store.create("status/late.json", b"late")
    with pytest.raises(FileNotFoundError):
        store.write("spec.json", b"late")
    assert not os.path.exists(store.root)


def test_a_store_on_a_file_is_one_store_error(tmp_path: Path) -> None:
    plain = tmp_path / "a-file"
    plain.write_text("not a folder")
    store = open_store(str(plain))
    with pytest.raises(StoreError, match="not a folder"):
        list(store.children(""))
    with pytest.raises(StoreError, match="not a folder"):
        store.read("spec.json")


# -- modes ------------------------------------------------------------------------------------


def test_everything_written_is_private_to_its_owner(store: LocalStore) -> None:
    store.write("spec.json", b"{}")
    store.create("status/r0-c000000-a0-b0.json", b"{}")
    store.write("logs/000001.out", b"a password")
    root = Path(store.root)
    for path in every_path(root):
        assert mode(path) == (0o700 if path.is_dir() else 0o600), path


def test_group_mode_lets_the_group_read_and_nobody_else(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "shared" / "job", mode="group")
    store.make_root()
    store.write("results/r.pkl", b"x")
    for path in every_path(Path(store.root)):
        assert mode(path) == (0o2750 if path.is_dir() else 0o640), path


def test_a_late_writer_follows_the_mode_of_the_record(tmp_path: Path) -> None:
    """A worker opens the record by URL alone; it writes with the folder's own mode."""
    LocalStore(tmp_path / "job", mode="group").make_root()
    worker_side = open_store(f"file://{tmp_path / 'job'}")
    worker_side.write("logs/000001.err", b"x")
    assert mode(tmp_path / "job" / "logs") == 0o2750
    assert mode(tmp_path / "job" / "logs" / "000001.err") == 0o640


def test_an_unknown_mode_is_one_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"'public'.*private, group"):
        LocalStore(tmp_path, mode="public")


# -- durability ---------------------------------------------------------------------------------


class SyscallLog:
    """os.fsync, os.link and os.replace as they happen, with the paths they touched."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, str]] = []
        real_fsync, real_link, real_replace = os.fsync, os.link, os.replace

        def fsync(fd: int) -> None:
            self.events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            real_fsync(fd)

        def link(src: str, dst: str) -> None:
            real_link(src, dst)
            self.events.append(("link", os.fspath(dst)))

        def replace(src: str, dst: str) -> None:
            real_replace(src, dst)
            self.events.append(("replace", os.fspath(dst)))

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "link", link)
        monkeypatch.setattr(os, "replace", replace)

    def index(self, kind: str, path: str | Path) -> int:
        return self.events.index((kind, str(path)))

    def last_index(self, kind: str, path: str | Path) -> int:
        return len(self.events) - 1 - self.events[::-1].index((kind, str(path)))

    def fsynced_temp_before(self, kind: str, path: Path) -> bool:
        """Whether a temp file in ``path``'s folder was fsynced since the previous file was
        put in place, before this one was."""
        for event, touched in reversed(self.events[: self.index(kind, path)]):
            if event != "fsync":
                return False
            if touched.startswith(f"{path.parent}/.tmp-"):
                return True
        return False


def test_a_commit_is_on_disk_before_its_status_file_is_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = JobSpec(id="job", name="job", function="f", backend="local", n_tasks=1, bounds=(0, 1))
    record = JobRecord.create(LocalStore(tmp_path / "jobs"), spec, b"f", [b"inputs"])
    assert record is not None
    log = SyscallLog(monkeypatch)
    name = BatchName(0, 0, 0, "b0")
    record.commit(name, Commit(tasks=[0], start=[0.0], duration=[0.0], peak_memory=[0]), b"r")
    job = tmp_path / "jobs" / "job"
    results, status = job / "results" / f"{name}.pkl", job / "status" / f"{name}.json"
    assert log.fsynced_temp_before("replace", results)
    assert log.index("replace", results) < log.index("fsync", job / "results")
    assert log.index("fsync", job / "results") < log.index("link", status)
    assert log.fsynced_temp_before("link", status)
    assert log.index("link", status) < log.last_index("fsync", job / "status")


def test_a_new_record_is_on_disk_when_create_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = SyscallLog(monkeypatch)
    spec = JobSpec(id="job", name="job", function="f", backend="local", n_tasks=1, bounds=(0, 1))
    assert JobRecord.create(LocalStore(tmp_path / "jobs"), spec, b"f", [b"inputs"]) is not None
    job = tmp_path / "jobs" / "job"
    assert log.fsynced_temp_before("replace", job / "spec.json")
    for folder in (tmp_path / "jobs", job, job / "inputs"):
        assert ("fsync", str(folder)) in log.events
    assert log.index("replace", job / "spec.json") < log.last_index("fsync", job)
