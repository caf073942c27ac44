"""``LocalStore``: private modes, a root it never re-creates, durable commits, clear errors."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

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


def test_sync_flushes_the_stores_filesystem_in_one_call(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However many files were written, ``sync`` is one ``syncfs`` of the root's filesystem."""
    import altus.storage.local as local

    real = local._syncfs()
    assert real is not None, "Linux's C library has syncfs"
    synced: list[str] = []

    def syncfs(fd: int) -> int:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(local, "_syncfs", lambda: syncfs)
    for n in range(20):
        store.write(f"results/r{n}.pkl", b"x")
    store.sync()
    assert synced == [store.root]


def test_sync_of_a_removed_store_is_nothing_to_do(store: LocalStore) -> None:
    shutil.rmtree(store.root)
    store.sync()
