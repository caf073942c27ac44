"""Downloads never write through a link planted at a name altus uses (issue 12, item 1).

Someone who can write to the destination folder (a shared project folder)
knows the names altus gives its temp files and part ledgers; a symbolic or
hard link planted there, a forged ledger, or a sub-folder swapped for a link
between planning and writing must never send a byte outside the destination
nor change the bytes the copy lands. Each test plants the trap against the
real S3 server and checks that the victim is untouched and the final file is
a regular file holding the object's bytes (or that the copy failed, saying
why in one line).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import altus.data
from altus.storage.copy_plan import CopyPlan, execute
from altus.storage.s3 import S3Client
from altus.storage.transfer import CopyReport, Transfers
from helpers import OtherUser

RunAltus = Callable[..., subprocess.CompletedProcess[str]]
MiB = 1 << 20
VICTIM = b"the victim's own data, which no download may touch\n"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file of the user's outside the destination, which the traps point at."""
    path = tmp_path / "victim.txt"
    path.write_bytes(VICTIM)
    return path


@pytest.fixture
def umask() -> Iterator[int]:
    """A known umask for the test (002, so the final mode differs from a fixed 0644)."""
    old = os.umask(0o002)
    yield 0o002
    os.umask(old)


def small_parts(client: S3Client, bucket: str) -> Transfers:
    """Transfers that take anything over 1 MiB in 1 MiB parts: big objects stay cheap."""
    return Transfers(client, bucket, part_size=MiB, download_part_size=MiB, parts_in_flight=2)


def run_plan(todo: CopyPlan, client: S3Client, bucket: str) -> CopyReport:
    return execute(todo, small_parts(client, bucket), CopyReport())


def download(bucket: str, source: str, dest: Path, **options: Any) -> CopyReport:
    """Plan and run a download of ``s3://BUCKET/SOURCE`` into the folder ``dest``."""
    client = S3Client()
    todo = altus.data.plan(f"s3://{bucket}/{source}", f"{dest}/", client=client, **options)
    return run_plan(todo, client, bucket)


def forged_ledger(client: S3Client, todo: CopyPlan) -> dict[str, Any]:
    """A ledger for the plan's one big object that says every part is on disk."""
    item = todo.items[0]
    identity = small_parts(client, todo.bucket)._identity(item)
    return {"identity": identity, "done": list(range(0, item.size, MiB))}


def put_big(s3: Any, bucket: str, key: str) -> bytes:
    content = os.urandom(3 * MiB + 5)  # four 1 MiB parts
    s3.put_object(Bucket=bucket, Key=key, Body=content)
    return content


def assert_regular(path: Path, content: bytes) -> None:
    assert not path.is_symlink()
    assert stat.S_ISREG(path.lstat().st_mode)
    assert path.read_bytes() == content


def assert_one_line_failure(report: CopyReport, *needles: str) -> None:
    assert len(report.failed) == 1
    reason = report.failed[0][1]
    assert "\n" not in reason
    for needle in needles:
        assert needle in reason


# -- the resume temp file of a big object -----------------------------------------------------


def test_cli_a_link_planted_by_another_user_at_the_resume_name_is_not_written_through(
    s3_env: dict[str, str],
    s3_bucket: str,
    s3: Any,
    shared_tmp: Path,
    other_user: OtherUser,
    run_altus: RunAltus,
) -> None:
    """The issue's exploit: a shared folder, ``ln -s ~/victim dest/.big.bin.altus-resume``."""
    content = os.urandom(16 * MiB + 1)  # over the default part size: a resumable download
    s3.put_object(Bucket=s3_bucket, Key="big.bin", Body=content)
    victim = shared_tmp / "victim.txt"
    victim.write_bytes(VICTIM)
    dest = shared_tmp / "dest"
    dest.mkdir()
    dest.chmod(0o777)  # a folder the other user can write to (not sticky)
    planted = other_user.run(["ln", "-s", str(victim), str(dest / ".big.bin.altus-resume")])
    assert planted.returncode == 0, planted.stderr

    done = run_altus("data", "cp", "-r", "-q", f"s3://{s3_bucket}/", str(dest))
    assert done.returncode == 0, done.stderr
    assert victim.read_bytes() == VICTIM
    assert_regular(dest / "big.bin", content)
    assert sorted(os.listdir(dest)) == ["big.bin"]  # the planted link is gone with the temp


def test_a_hard_link_at_the_resume_name_is_not_reused(
    s3_env: dict[str, str], s3_bucket: str, s3: Any, tmp_path: Path, victim: Path
) -> None:
    content = put_big(s3, s3_bucket, "big.bin")
    dest = tmp_path / "dest"
    dest.mkdir()
    os.link(victim, dest / ".big.bin.altus-resume")
    report = download(s3_bucket, "big.bin", dest)
    assert report.failed == []
    assert victim.read_bytes() == VICTIM
    assert victim.stat().st_nlink == 1  # only the planted name was removed, not the victim
    assert_regular(dest / "big.bin", content)


def test_another_users_resume_file_and_ledger_are_not_trusted(
    s3_env: dict[str, str],
    s3_bucket: str,
    s3: Any,
    shared_tmp: Path,
    other_user: OtherUser,
) -> None:
    """A forged ledger that says every part is there would make the copy land the
    planter's bytes at the final name; files altus did not make are never reused."""
    content = put_big(s3, s3_bucket, "big.bin")
    dest = shared_tmp / "dest"
    dest.mkdir()
    dest.chmod(0o777)
    client = S3Client()
    todo = altus.data.plan(f"s3://{s3_bucket}/big.bin", f"{dest}/", client=client)
    planted = {
        ".big.bin.altus-resume": "X" * len(content),
        ".big.bin.altus-resume.json": json.dumps(forged_ledger(client, todo)),
    }
    for name, data in planted.items():
        made = other_user.run(["sh", "-c", f"cat > '{dest / name}'"], input=data)
        assert made.returncode == 0, made.stderr
    report = run_plan(todo, client, s3_bucket)
    assert report.failed == []
    assert_regular(dest / "big.bin", content)
    assert (dest / "big.bin").stat().st_uid == os.geteuid()


# -- the part ledger ----------------------------------------------------------------------------


@pytest.mark.parametrize("resume_there", [False, True], ids=["fresh", "resumed"])
def test_a_link_at_the_ledger_name_is_not_followed(
    s3_env: dict[str, str],
    s3_bucket: str,
    s3: Any,
    tmp_path: Path,
    resume_there: bool,
) -> None:
    """A link to a forged ledger (every part done) is not read: every part is fetched."""
    content = put_big(s3, s3_bucket, "big.bin")
    dest = tmp_path / "dest"
    dest.mkdir()
    client = S3Client()
    todo = altus.data.plan(f"s3://{s3_bucket}/big.bin", f"{dest}/", client=client)
    forged = tmp_path / "forged.json"
    ledger = forged_ledger(client, todo)
    forged.write_text(json.dumps(ledger))
    (dest / ".big.bin.altus-resume.json").symlink_to(forged)
    if resume_there:  # a resume file of our own, as a killed copy leaves it
        (dest / ".big.bin.altus-resume").write_bytes(b"\0" * len(content))
    report = run_plan(todo, client, s3_bucket)
    assert report.failed == []
    assert_regular(dest / "big.bin", content)
    assert forged.read_text() == json.dumps(ledger)
    assert sorted(os.listdir(dest)) == ["big.bin"]


def test_a_link_at_the_ledger_temp_name_is_not_written_through(
    s3_env: dict[str, str], s3_bucket: str, s3: Any, tmp_path: Path, victim: Path
) -> None:
    """The ledger's temp name was ``LEDGER.<pid>``, easy to guess; now it is random and
    created exclusively."""
    content = put_big(s3, s3_bucket, "big.bin")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / f".big.bin.altus-resume.json.{os.getpid()}").symlink_to(victim)
    report = download(s3_bucket, "big.bin", dest)
    assert report.failed == []
    assert victim.read_bytes() == VICTIM
    assert_regular(dest / "big.bin", content)


def test_temp_names_are_created_exclusively_even_when_guessed(
    s3_env: dict[str, str],
    s3_bucket: str,
    s3: Any,
    tmp_path: Path,
    victim: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the random part of temp names fixed (as if guessed), a link planted at the
    small file's and the ledger's temp names makes the copy fail; it is never followed."""
    s3.put_object(Bucket=s3_bucket, Key="a.bin", Body=b"small")
    put_big(s3, s3_bucket, "big.bin")
    monkeypatch.setattr(secrets, "token_hex", lambda n=None: "0badf00d")
    dest = tmp_path / "dest"
    dest.mkdir()
    pid = os.getpid()
    for name in (
        f".a.bin.altus-{pid}-0badf00d",
        f".big.bin.altus-resume.json.altus-{pid}-0badf00d",
    ):
        (dest / name).symlink_to(victim)
    report = download(s3_bucket, "", dest, recursive=True)
    assert sorted(what for what, _ in report.failed) == [
        f"s3://{s3_bucket}/a.bin",
        f"s3://{s3_bucket}/big.bin",
    ]
    assert all("\n" not in reason for _, reason in report.failed)
    assert victim.read_bytes() == VICTIM
    assert not (dest / "a.bin").exists()
    assert not (dest / "big.bin").exists()


# -- small objects and final names ------------------------------------------------------------


def test_a_link_at_the_final_name_is_replaced_not_followed(
    s3_env: dict[str, str], s3_bucket: str, s3: Any, tmp_path: Path, victim: Path
) -> None:
    """rename(2) replaces a link at the final name itself; the victim stays as it was.
    (This held before the fix too; it guards the fd-relative renames.)"""
    s3.put_object(Bucket=s3_bucket, Key="a.bin", Body=b"small object")
    content = put_big(s3, s3_bucket, "big.bin")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "a.bin").symlink_to(victim)
    (dest / "big.bin").symlink_to(victim)
    report = download(s3_bucket, "", dest, recursive=True, force=True)
    assert report.failed == []
    assert victim.read_bytes() == VICTIM
    assert_regular(dest / "a.bin", b"small object")
    assert_regular(dest / "big.bin", content)


def test_a_link_at_the_final_name_is_never_taken_for_the_copy(
    s3_env: dict[str, str], s3_bucket: str, s3: Any, tmp_path: Path
) -> None:
    """The skip check does not look through a link: a link whose target has the object's
    size and time is replaced by the object, not kept as if it were the finished copy."""
    s3.put_object(Bucket=s3_bucket, Key="a.bin", Body=VICTIM)
    modified = s3.head_object(Bucket=s3_bucket, Key="a.bin")["LastModified"].timestamp()
    lookalike = tmp_path / "lookalike.txt"
    lookalike.write_bytes(VICTIM)
    os.utime(lookalike, (modified, modified))
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "a.bin").symlink_to(lookalike)
    report = download(s3_bucket, "", dest, recursive=True)
    assert (report.failed, report.copied, report.skipped) == ([], 1, 0)
    assert_regular(dest / "a.bin", VICTIM)
    assert lookalike.read_bytes() == VICTIM


def test_partial_downloads_are_private_and_final_files_get_the_users_mode(
    s3_env: dict[str, str],
    s3_bucket: str,
    s3: Any,
    tmp_path: Path,
    umask: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No other user can read a half-written download; the finished file has the mode
    ``cp`` would give it (0666 less the umask)."""
    import altus.storage.transfer as transfer

    s3.put_object(Bucket=s3_bucket, Key="a.bin", Body=b"small object")
    put_big(s3, s3_bucket, "big.bin")
    modes: set[int] = set()
    real_write = transfer._write_all

    def recording_write(fd: int, view: memoryview, offset: int) -> None:
        modes.add(stat.S_IMODE(os.fstat(fd).st_mode))
        real_write(fd, view, offset)

    monkeypatch.setattr(transfer, "_write_all", recording_write)
    dest = tmp_path / "dest"
    report = download(s3_bucket, "", dest, recursive=True)
    assert report.failed == []
    assert modes == {0o600}
    for name in ("a.bin", "big.bin"):
        assert stat.S_IMODE((dest / name).stat().st_mode) == 0o666 & ~umask


# -- folders swapped for links ----------------------------------------------------------------


def test_a_folder_swapped_for_a_link_after_planning_gets_nothing(
    s3_env: dict[str, str], s3_bucket: str, s3: Any, tmp_path: Path
) -> None:
    s3.put_object(Bucket=s3_bucket, Key="sub/a.bin", Body=b"small object")
    put_big(s3, s3_bucket, "sub/big.bin")
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    (dest / "sub").mkdir(parents=True)
    outside.mkdir()
    client = S3Client()
    todo = altus.data.plan(f"s3://{s3_bucket}/", str(dest), recursive=True, client=client)
    assert len(todo.items) == 2
    (dest / "sub").rmdir()
    (dest / "sub").symlink_to(outside)
    report = run_plan(todo, client, s3_bucket)
    assert os.listdir(outside) == []
    assert len(report.failed) == 2
    for _, reason in report.failed:
        assert "\n" not in reason
        assert "link" in reason


def test_a_folder_swapped_for_a_link_while_writing_is_not_followed(
    s3_env: dict[str, str],
    s3_bucket: str,
    s3: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The swap comes after altus looked at the folder and before it writes the file:
    the file lands in the folder that was checked, through its open descriptor."""
    import obstore

    s3.put_object(Bucket=s3_bucket, Key="sub/a.bin", Body=b"small object")
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    outside.mkdir()
    real_get = obstore.get

    def swapping_get(store: Any, key: str, **kwargs: Any) -> Any:
        if (dest / "sub").is_dir() and not (dest / "sub").is_symlink():
            (dest / "sub").rename(dest / "moved")
            (dest / "sub").symlink_to(outside)
        return real_get(store, key, **kwargs)

    monkeypatch.setattr(obstore, "get", swapping_get)
    report = download(s3_bucket, "", dest, recursive=True)
    assert report.failed == []
    assert os.listdir(outside) == []
    assert_regular(dest / "moved" / "a.bin", b"small object")


def test_folder_descriptors_are_bounded_and_all_closed(
    s3_env: dict[str, str],
    s3_bucket: str,
    s3: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Idle folders beyond ``KEEP_IDLE`` are closed as the copy goes (never one a file is
    being written in: every file lands), the rest at its end."""
    import altus.storage.safety as safety

    monkeypatch.setattr(safety, "KEEP_IDLE", 2)
    files = {f"sub-{i}/ses-{j}/a.bin": os.urandom(100) for i in range(4) for j in range(3)}
    for key, data in files.items():
        s3.put_object(Bucket=s3_bucket, Key=key, Body=data)
    dest = tmp_path / "dest"
    report = download(s3_bucket, "", dest, recursive=True)
    assert report.failed == []
    for key, data in files.items():
        assert_regular(dest / key, data)
    still_open = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone
            still_open.append(os.readlink(f"/proc/self/fd/{fd}"))
    assert [path for path in still_open if path.startswith(str(dest))] == []
