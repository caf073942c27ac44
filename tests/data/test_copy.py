"""altus.data and ``altus data`` against a real S3 server (SeaweedFS) and, for keys it
refuses to store, a moto server; faults injected by a proxy in front of them."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import altus.data
from altus.storage.server import ServerInfo
from data.s3_doubles import HOSTILE_KEYS, FaultProxy, s3_client

RunAltus = Callable[..., subprocess.CompletedProcess[str]]
MiB = 1 << 20


def make_tree(root: Path, n: int = 12) -> dict[str, bytes]:
    files = {f"sub-{i:02d}/anat/T1w.nii.gz": os.urandom(1000 + i) for i in range(n)}
    files["README"] = b"cohort\n"
    for relative, content in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(content)
    return files


def visible_files(root: Path) -> list[Path]:
    """Files at their final names (temp files are hidden), none if ``root`` is not there yet."""
    if not root.exists():
        return []
    return [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")]


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


# -- the Python API ----------------------------------------------------------------------


def test_upload_then_download_a_tree_round_trips(
    s3_env: dict[str, str], s3_bucket: str, tmp_path: Path
) -> None:
    files = make_tree(tmp_path / "up")
    report = altus.data.copy(str(tmp_path / "up"), f"s3://{s3_bucket}/cohort/", recursive=True)
    assert (report.copied, report.failed) == (len(files), [])
    listed = altus.data.ls(f"s3://{s3_bucket}/cohort/", recursive=True)
    assert sorted(e.key for e in listed) == sorted(f"cohort/{k}" for k in files)
    back = altus.data.copy(f"s3://{s3_bucket}/cohort/", str(tmp_path / "down"), recursive=True)
    assert back.copied == len(files)
    assert read_tree(tmp_path / "down") == files


def test_a_second_copy_skips_what_is_there_and_force_copies_again(
    s3_env: dict[str, str], s3_bucket: str, tmp_path: Path
) -> None:
    files = make_tree(tmp_path / "up", n=5)
    altus.data.copy(str(tmp_path / "up"), f"s3://{s3_bucket}/c/", recursive=True)
    again = altus.data.copy(str(tmp_path / "up"), f"s3://{s3_bucket}/c/", recursive=True)
    assert (again.copied, again.skipped) == (0, len(files))
    altus.data.copy(f"s3://{s3_bucket}/c/", str(tmp_path / "d"), recursive=True)
    down = altus.data.copy(f"s3://{s3_bucket}/c/", str(tmp_path / "d"), recursive=True)
    assert (down.copied, down.skipped) == (0, len(files))
    forced = altus.data.copy(
        f"s3://{s3_bucket}/c/", str(tmp_path / "d"), recursive=True, force=True
    )
    assert forced.copied == len(files)


def test_a_big_object_comes_in_parts_whole_and_leaves_no_temp_file(
    s3_env: dict[str, str], s3_bucket: str, s3: Any, tmp_path: Path
) -> None:
    content = os.urandom(40 * MiB + 7)
    s3.put_object(Bucket=s3_bucket, Key="big/data.bin", Body=content)
    report = altus.data.copy(f"s3://{s3_bucket}/big/data.bin", str(tmp_path) + "/")
    assert report.copied == 1
    assert (tmp_path / "data.bin").read_bytes() == content
    assert os.listdir(tmp_path) == ["data.bin"]
    up = altus.data.copy(str(tmp_path / "data.bin"), f"s3://{s3_bucket}/again/data.bin")
    assert up.copied == 1
    assert s3.get_object(Bucket=s3_bucket, Key="again/data.bin")["Body"].read() == content


def test_big_downloads_take_signed_ranged_gets_and_obstore_only_when_they_fail(
    s3_env: dict[str, str],
    s3_bucket: str,
    s3: Any,
    s3_server: ServerInfo,
    fault_proxy: Callable[[str], FaultProxy],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import obstore

    content = os.urandom(40 * MiB + 7)
    s3.put_object(Bucket=s3_bucket, Key="big/fast.bin", Body=content)
    real_get = obstore.get
    ranged_by_obstore: list[Any] = []

    def counting_get(store: Any, key: str, *, options: Any = None) -> Any:
        if options and "range" in options:
            ranged_by_obstore.append(options["range"])
        return real_get(store, key, options=options)

    monkeypatch.setattr(obstore, "get", counting_get)
    report = altus.data.copy(f"s3://{s3_bucket}/big/fast.bin", str(tmp_path / "fast.bin"))
    assert (report.failed, ranged_by_obstore) == ([], [])  # all three parts over signed URLs
    assert (tmp_path / "fast.bin").read_bytes() == content

    proxy = fault_proxy(s3_server.endpoint)
    reset = proxy.reset(2, method="GET", path=r"/big/fast\.bin")
    again = altus.data.copy(
        f"s3://{s3_bucket}/big/fast.bin", str(tmp_path / "again.bin"), endpoint_url=proxy.endpoint
    )
    assert again.failed == []
    assert reset.injected == 2  # the fast path's GET, then obstore's first try, which it retried
    assert ranged_by_obstore  # the part that failed, and any not started yet, went to obstore
    assert (tmp_path / "again.bin").read_bytes() == content
    assert sorted(os.listdir(tmp_path)) == ["again.bin", "fast.bin"]


def test_wildcards_include_and_exclude_select_keys(
    s3_env: dict[str, str], s3_bucket: str, tmp_path: Path
) -> None:
    make_tree(tmp_path / "up", n=12)
    altus.data.copy(str(tmp_path / "up"), f"s3://{s3_bucket}/ds/", recursive=True)
    wild = altus.data.copy(f"s3://{s3_bucket}/ds/sub-0*/anat/*", str(tmp_path / "w"))
    assert sorted(read_tree(tmp_path / "w")) == [f"sub-0{i}/anat/T1w.nii.gz" for i in range(10)]
    picked = altus.data.copy(
        f"s3://{s3_bucket}/ds/",
        str(tmp_path / "f"),
        recursive=True,
        include=["sub-1*"],
        exclude=["sub-11/*"],
    )
    assert picked.copied == 1
    assert sorted(read_tree(tmp_path / "f")) == ["sub-10/anat/T1w.nii.gz"]
    assert wild.copied == 10


def test_listing_pages_past_a_thousand_keys(
    s3_env: dict[str, str], s3_bucket: str, tmp_path: Path
) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(1005):
        (folder / f"{i:04d}.txt").write_bytes(b"x")
    assert altus.data.copy(str(folder), f"s3://{s3_bucket}/many/", recursive=True).copied == 1005
    assert len(altus.data.ls(f"s3://{s3_bucket}/many/")) == 1005


def test_open_streams_an_object_that_numpy_reads(
    s3_env: dict[str, str], s3_bucket: str, s3: Any
) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.arange(100_000, dtype=np.float32))
    s3.put_object(Bucket=s3_bucket, Key="arr.npy", Body=buffer.getvalue())
    with altus.data.open(f"s3://{s3_bucket}/arr.npy") as reader:
        array = np.load(reader)
    assert array.shape == (100_000,)
    assert array[-1] == 99_999


def test_filesystem_is_fsspec(s3_env: dict[str, str], s3_bucket: str, s3: Any) -> None:
    s3.put_object(Bucket=s3_bucket, Key="t/a.csv", Body=b"x,y\n1,2\n")
    fs = altus.data.filesystem(f"s3://{s3_bucket}")
    with fs.open(f"{s3_bucket}/t/a.csv", "rb") as file:
        assert file.read() == b"x,y\n1,2\n"
    assert fs.size(f"{s3_bucket}/t/a.csv") == 8


# -- hostile keys (moto stores what SeaweedFS refuses) --------------------------------------


def test_hostile_keys_are_refused_and_the_rest_copied(
    moto_s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = s3_client(moto_s3)
    client.create_bucket(Bucket="hostile")
    for key in HOSTILE_KEYS:
        client.put_object(Bucket="hostile", Key=key, Body=b"payload")
    target = tmp_path / "inside" / "dest"
    target.mkdir(parents=True)
    report = altus.data.copy("s3://hostile/", str(target), recursive=True, endpoint_url=moto_s3)
    assert report.copied >= 2  # the plain keys
    assert (target / "plain.txt").read_bytes() == b"payload"
    refused = " ".join(error for _item, error in report.failed)
    assert "'..'" in refused
    assert "absolute" in refused
    assert "backslash" in refused
    assert "NUL" in refused
    outside = [p for p in tmp_path.rglob("*") if target not in p.parents and p != target]
    assert outside == [tmp_path / "inside"]


def test_cli_lists_hostile_keys_escaped_and_exits_1_on_refusals(
    moto_s3: str, tmp_path: Path, run_altus: RunAltus
) -> None:
    client = s3_client(moto_s3)
    client.create_bucket(Bucket="hostile")
    for key in HOSTILE_KEYS:
        client.put_object(Bucket="hostile", Key=key, Body=b"payload")
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    listed = run_altus("data", "ls", "-r", "s3://hostile/", "--endpoint-url", moto_s3, env=env)
    assert listed.returncode == 0, listed.stderr
    assert "nul\\x00byte.txt" in listed.stdout
    done = run_altus(
        "data",
        "cp",
        "-r",
        "-q",
        "s3://hostile/",
        str(tmp_path / "d"),
        "--endpoint-url",
        moto_s3,
        env=env,
    )
    assert done.returncode == 1
    refusals = [line for line in done.stderr.splitlines() if "refusing key" in line]
    assert len(refusals) >= 8
    assert "Traceback" not in done.stderr
    assert (tmp_path / "d" / "plain.txt").exists()


# -- faults -------------------------------------------------------------------------------


def test_throttling_and_resets_are_retried(
    s3_env: dict[str, str],
    s3_bucket: str,
    s3: Any,
    s3_server: ServerInfo,
    fault_proxy: Callable[[str], FaultProxy],
    tmp_path: Path,
) -> None:
    s3.put_object(Bucket=s3_bucket, Key="k/a.bin", Body=b"a" * 1000)
    s3.put_object(Bucket=s3_bucket, Key="k/b.bin", Body=b"b" * 1000)
    proxy = fault_proxy(s3_server.endpoint)
    slow = proxy.slow_down(3, method="GET", path=r"/k/a\.bin")
    reset = proxy.reset(2, method="GET", path=r"/k/b\.bin")
    report = altus.data.copy(
        f"s3://{s3_bucket}/k/", str(tmp_path), recursive=True, endpoint_url=proxy.endpoint
    )
    assert report.failed == []
    assert (tmp_path / "a.bin").read_bytes() == b"a" * 1000
    assert (slow.injected, reset.injected) == (3, 2)


def test_interrupted_copy_leaves_no_partial_file_and_a_rerun_finishes(
    s3_env: dict[str, str],
    s3_bucket: str,
    s3_server: ServerInfo,
    fault_proxy: Callable[[str], FaultProxy],
    tmp_path: Path,
) -> None:
    files = make_tree(tmp_path / "up", n=20)
    altus.data.copy(str(tmp_path / "up"), f"s3://{s3_bucket}/t/", recursive=True)
    proxy = fault_proxy(s3_server.endpoint)
    proxy.delay(8, times=None, method="GET", path=r"sub-1[0-9]")  # these arrive after the kill
    down = tmp_path / "down"
    child = subprocess.Popen(
        [sys.executable, "-m", "altus.cli.main", "data", "cp", "-r", "-q",
         f"s3://{s3_bucket}/t/", str(down), "--endpoint-url", proxy.endpoint],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline and len(visible_files(down)) < 11:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    partial = read_tree(down)
    assert 0 < len([k for k in partial if not Path(k).name.startswith(".")]) < len(files)
    for relative, content in partial.items():
        if not Path(relative).name.startswith("."):
            assert content == files[relative]  # complete, or not there at all
    again = altus.data.copy(f"s3://{s3_bucket}/t/", str(down), recursive=True)
    assert again.skipped >= 11
    assert read_tree(down) == files  # and the killed copy's temp files are gone


# -- the command line -----------------------------------------------------------------------


def test_cli_copy_ls_du_cat_rm(
    s3_env: dict[str, str], s3_bucket: str, tmp_path: Path, run_altus: RunAltus
) -> None:
    files = make_tree(tmp_path / "up", n=3)
    up = run_altus("data", "cp", "-r", "--json", str(tmp_path / "up"), f"s3://{s3_bucket}/x/")
    assert up.returncode == 0, up.stderr
    assert '"copied": 4' in up.stdout
    ls = run_altus("data", "ls", "--json", f"s3://{s3_bucket}/x/")
    assert ls.returncode == 0
    assert '"folder": true' in ls.stdout
    du = run_altus("data", "du", "--json", f"s3://{s3_bucket}/x/")
    total = sum(len(v) for v in files.values())
    assert f'"bytes": {total}' in du.stdout
    human = run_altus("data", "du", f"s3://{s3_bucket}/x/").stdout
    assert human == f"{total / 1024:.1f} KiB ({total:,} bytes) in 4 objects  s3://{s3_bucket}/x/\n"
    cat = run_altus("data", "cat", f"s3://{s3_bucket}/x/README")
    assert cat.stdout == "cohort\n"
    dry = run_altus("data", "rm", "-r", "--dry-run", f"s3://{s3_bucket}/x/")
    assert dry.stdout.count("(dry run) remove") == 4
    refused = run_altus("data", "rm", f"s3://{s3_bucket}/x/")
    assert refused.returncode == 1
    assert "-r" in refused.stderr
    rm = run_altus("data", "rm", "-r", f"s3://{s3_bucket}/x/")
    assert rm.returncode == 0
    buckets = run_altus("data", "ls", "s3://")
    assert f"s3://{s3_bucket}" in buckets.stdout
    assert altus.data.ls(f"s3://{s3_bucket}/x/", recursive=True) == []


def test_cli_dry_run_copies_nothing(
    s3_env: dict[str, str], s3_bucket: str, tmp_path: Path, run_altus: RunAltus
) -> None:
    make_tree(tmp_path / "up", n=2)
    dry = run_altus("data", "sync", "--dry-run", str(tmp_path / "up"), f"s3://{s3_bucket}/y/")
    assert dry.returncode == 0
    assert "3 to copy" in dry.stdout
    assert altus.data.ls(f"s3://{s3_bucket}/y/", recursive=True) == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["cp", "s3://no-such-bucket-here/x", "out"], "no-such-bucket-here"),
        (["cp", "s3://{bucket}/no/such/key", "out"], "no/such/key"),
        (["ls", "s3://{bucket}/", "--endpoint-url", "http://127.0.0.1:9"], "cannot connect"),
        (["ls", "s3://{bucket}/", "--profile", "nobody"], "profile 'nobody'"),
    ],
)
def test_cli_errors_are_one_line_without_secrets(
    s3_env: dict[str, str],
    s3_bucket: str,
    tmp_path: Path,
    run_altus: RunAltus,
    args: list[str],
    expected: str,
) -> None:
    args = [a.replace("{bucket}", s3_bucket).replace("out", str(tmp_path / "out")) for a in args]
    done = run_altus("data", *args)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert expected in lines[0]
    debug = run_altus("--debug", "data", *args)
    secret = s3_env["AWS_SECRET_ACCESS_KEY"]
    for text in (done.stdout, done.stderr, debug.stdout, debug.stderr):
        assert secret not in text


def test_wrong_credentials_are_access_denied(
    s3_env: dict[str, str], s3_bucket: str, run_altus: RunAltus
) -> None:
    done = run_altus(
        "data", "ls", f"s3://{s3_bucket}/", env={"AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    )
    assert done.returncode == 1
    assert "access denied" in done.stderr
    assert s3_bucket in done.stderr


def test_a_profile_from_the_aws_files_is_used(
    s3_server: ServerInfo, s3_bucket: str, s3: Any, clean_environ: Path, run_altus: RunAltus
) -> None:
    s3.put_object(Bucket=s3_bucket, Key="p/one.txt", Body=b"1")
    credentials = clean_environ / "aws" / "credentials"
    credentials.parent.mkdir(parents=True)
    credentials.write_text(
        f"[lab]\naws_access_key_id = {s3_server.access_key}\n"
        f"aws_secret_access_key = {s3_server.secret_key}\n"
    )
    done = run_altus(
        "data", "ls", f"s3://{s3_bucket}/p/", "--profile", "lab",
        "--endpoint-url", s3_server.endpoint, "--region", "us-east-1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "one.txt" in done.stdout
    assert s3_server.secret_key not in done.stdout + done.stderr


def test_anon_sends_unsigned_requests(moto_s3: str, tmp_path: Path, run_altus: RunAltus) -> None:
    client = s3_client(moto_s3)
    client.create_bucket(Bucket="open-data", ACL="public-read")
    client.put_object(Bucket="open-data", Key="ds000030/README", Body=b"public", ACL="public-read")
    listed = run_altus(
        "data", "ls", "s3://open-data/ds000030/", "--anon", "--endpoint-url", moto_s3
    )
    assert listed.returncode == 0, listed.stderr
    assert "README" in listed.stdout
    copied = run_altus(
        "data", "cp", "--no-sign-request", "-q", "s3://open-data/ds000030/README",
        str(tmp_path) + "/", "--endpoint-url", moto_s3,
    )  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    assert (tmp_path / "README").read_bytes() == b"public"


def test_checksums_are_compared_with_etags(
    s3_env: dict[str, str], s3_bucket: str, tmp_path: Path
) -> None:
    files = make_tree(tmp_path / "up", n=3)
    up = altus.data.copy(
        str(tmp_path / "up"), f"s3://{s3_bucket}/c/", recursive=True, checksum=True
    )
    down = altus.data.copy(
        f"s3://{s3_bucket}/c/", str(tmp_path / "d"), recursive=True, checksum=True
    )
    assert (up.copied, down.copied, up.failed, down.failed) == (4, 4, [], [])
    assert read_tree(tmp_path / "d") == files


def test_a_checksum_mismatch_is_an_error() -> None:
    from altus.storage.transfer import _check_md5

    _check_md5(b"abc", '"900150983cd24fb0d6963f7d28e17f72"')
    _check_md5(b"abc", "0123abcd-2")  # a multipart ETag is no MD5 of the bytes: not compared
    with pytest.raises(OSError, match="checksum mismatch"):
        _check_md5(b"abd", "900150983cd24fb0d6963f7d28e17f72")


def test_temp_files_of_killed_copies_are_removed_and_live_ones_kept(
    s3_env: dict[str, str], s3_bucket: str, s3: Any, tmp_path: Path
) -> None:
    s3.put_object(Bucket=s3_bucket, Key="o/a.bin", Body=b"a")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    orphan = tmp_path / f".a.bin.altus-{int(dead.stdout)}-0123abcd"
    live = tmp_path / f".b.bin.altus-{os.getpid()}-0123abcd"
    orphan.write_bytes(b"half a download")
    live.write_bytes(b"another copy, still running")
    altus.data.copy(f"s3://{s3_bucket}/o/", str(tmp_path), recursive=True)
    assert not orphan.exists()
    assert live.exists()
    assert (tmp_path / "a.bin").read_bytes() == b"a"


def test_bucket_to_bucket_copies_are_server_side_and_skip_what_is_there(
    s3_env: dict[str, str], s3_bucket: str, s3: Any, tmp_path: Path
) -> None:
    files = make_tree(tmp_path / "up", n=4)
    altus.data.copy(str(tmp_path / "up"), f"s3://{s3_bucket}/src/", recursive=True)
    other = f"{s3_bucket}-b"
    s3.create_bucket(Bucket=other)
    try:
        first = altus.data.copy(f"s3://{s3_bucket}/src/", f"s3://{other}/dst/", recursive=True)
        again = altus.data.copy(f"s3://{s3_bucket}/src/", f"s3://{other}/dst/", recursive=True)
        one = altus.data.copy(f"s3://{s3_bucket}/src/README", f"s3://{other}/single/")
        assert (first.copied, again.copied, again.skipped, one.copied) == (5, 0, 5, 1)
        got = {e.key: e.size for e in altus.data.ls(f"s3://{other}/", recursive=True)}
        assert got == {
            **{f"dst/{k}": len(v) for k, v in files.items()},
            "single/README": len(files["README"]),
        }
    finally:
        s3.delete_bucket(Bucket=other)  # SeaweedFS removes a bucket with its objects


def test_two_local_paths_are_a_clear_error(tmp_path: Path, run_altus: RunAltus) -> None:
    done = run_altus("data", "cp", str(tmp_path), str(tmp_path / "x"))
    assert done.returncode == 1
    assert "at least one side must be s3://" in done.stderr


def test_a_big_download_that_failed_half_way_fetches_only_the_missing_parts(
    s3_env: dict[str, str], s3_bucket: str, s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from altus.storage.copy_plan import execute
    from altus.storage.s3 import S3Client
    from altus.storage.transfer import CopyReport, Transfers

    content = os.urandom(8 * MiB + 5)
    s3.put_object(Bucket=s3_bucket, Key="big/scan.nii.gz", Body=content)
    client = S3Client()
    todo = altus.data.plan(f"s3://{s3_bucket}/big/scan.nii.gz", str(tmp_path) + "/", client=client)
    fetched: list[int] = []
    network_down_after: list[int | None] = [4 * MiB]
    real_part = Transfers._download_part

    def flaky_part(self: Transfers, item: Any, fd: int, start: int, *fast: Any) -> int:
        limit = network_down_after[0]
        if limit is not None and start >= limit:
            raise OSError("connection lost")
        fetched.append(start)
        return real_part(self, item, fd, start, *fast)

    monkeypatch.setattr(Transfers, "_download_part", flaky_part)
    transfers = Transfers(
        client, s3_bucket, part_size=MiB, download_part_size=MiB, parts_in_flight=1
    )
    first = execute(todo, transfers, CopyReport())
    assert len(first.failed) == 1
    assert not (tmp_path / "scan.nii.gz").exists()  # never a partial file at the final name
    assert sorted(fetched) == [0, MiB, 2 * MiB, 3 * MiB]

    network_down_after[0] = None
    fetched.clear()
    again = execute(
        todo, Transfers(client, s3_bucket, part_size=MiB, download_part_size=MiB), CopyReport()
    )
    assert again.failed == []
    assert sorted(fetched) == [i * MiB for i in range(4, 9)]
    assert (tmp_path / "scan.nii.gz").read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz"]  # no temp, no ledger


def test_a_stalled_response_times_out_and_is_retried(
    s3_env: dict[str, str],
    s3_bucket: str,
    s3: Any,
    s3_server: ServerInfo,
    fault_proxy: Callable[[str], FaultProxy],
    tmp_path: Path,
) -> None:
    from altus.storage.copy_plan import execute, plan_copy
    from altus.storage.objects import parse_location
    from altus.storage.s3 import S3Client, S3Options
    from altus.storage.transfer import CopyReport, Transfers

    s3.put_object(Bucket=s3_bucket, Key="slow/a.bin", Body=b"a" * 1000)
    proxy = fault_proxy(s3_server.endpoint)
    stall = proxy.delay(5, times=1, method="GET", path=r"/slow/a\.bin")
    client = S3Client(S3Options(endpoint_url=proxy.endpoint, read_timeout=1.0))
    todo = plan_copy(
        client, parse_location(f"s3://{s3_bucket}/slow/a.bin"), parse_location(str(tmp_path) + "/")
    )
    started = time.monotonic()
    report = execute(todo, Transfers(client, s3_bucket), CopyReport())
    assert report.failed == []
    assert stall.injected == 1
    assert time.monotonic() - started < 5  # it did not wait out the stall
    assert (tmp_path / "a.bin").read_bytes() == b"a" * 1000


def test_make_bucket_from_python_and_the_cli(
    s3_env: dict[str, str], s3: Any, run_altus: RunAltus
) -> None:
    name = f"mb-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    altus.data.make_bucket(f"s3://{name}")
    altus.data.make_bucket(f"s3://{name}/", exist_ok=True)  # already yours: fine
    assert altus.data.ls(f"s3://{name}/") == []

    again = run_altus("data", "mb", f"s3://{name}")
    assert again.returncode == 1
    assert again.stderr.startswith(f"altus: error: make bucket s3://{name}: ")
    assert len(again.stderr.strip().splitlines()) == 1

    other = run_altus("data", "mb", f"s3://{name}-2")
    assert (other.returncode, other.stderr) == (0, f"made bucket s3://{name}-2\n")
    wrong = run_altus("data", "mb", f"s3://{name}/a/key")
    assert wrong.stderr == f"altus: error: s3://{name}/a/key: give a bucket as s3://NAME\n"
    s3.delete_bucket(Bucket=name)
    s3.delete_bucket(Bucket=f"{name}-2")
