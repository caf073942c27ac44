"""The local S3 server (``altus data serve``): its lifecycle, its security and its S3.

Lifecycle tests start their own servers in temporary state folders; the S3
behaviour is checked on the session's ``s3_server``, one fresh bucket per test.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import json
import os
import shlex
import signal
import socket
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from altus.cli.data_serve import serve
from altus.errors import ServerError, StoreError
from altus.storage import server
from altus.storage.server import ServerInfo

boto3 = pytest.importorskip("boto3")
psutil = pytest.importorskip("psutil")

from botocore import UNSIGNED  # noqa: E402  (after the skip: boto3 brings botocore)
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def weed_installed() -> None:
    try:
        server.find_weed()
    except ServerError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def state_dir(tmp_path: Path, weed_installed: None) -> Iterator[Path]:
    """A state folder of this test's own; whatever server it records is stopped afterwards."""
    folder = tmp_path / "state"
    yield folder
    server.stop(state_dir=folder, timeout=5)


def client(info: ServerInfo, **overrides: Any) -> Any:
    options: dict[str, Any] = {
        "endpoint_url": info.endpoint,
        "aws_access_key_id": info.access_key,
        "aws_secret_access_key": info.secret_key,
        "region_name": info.region,
        "config": Config(retries={"max_attempts": 1}),
    }
    return boto3.client("s3", **{**options, **overrides})


def error_code(exc: ClientError) -> tuple[int, str]:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"], exc.response["Error"]["Code"]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, f"pid {pid} still runs"
        time.sleep(0.05)


# --- lifecycle ----------------------------------------------------------------------


def test_start_is_idempotent_and_stop_ends_the_server(state_dir: Path) -> None:
    info = server.start(state_dir=state_dir)
    assert info.endpoint.startswith("http://127.0.0.1:")
    assert info.region == "us-east-1"
    assert server.start(state_dir=state_dir) == info
    assert server.status(state_dir=state_dir) == info
    client(info).create_bucket(Bucket="kept-bucket")

    assert server.stop(state_dir=state_dir) is True
    wait_gone(info.pid)
    assert server.status(state_dir=state_dir) is None
    assert server.stop(state_dir=state_dir) is False
    for name in ("server.json", "security.toml", "tls-cert.pem", "tls-key.pem"):
        assert not (state_dir / name).exists(), name

    again = server.start(state_dir=state_dir)
    assert again.pid != info.pid
    assert (again.access_key, again.secret_key) == (info.access_key, info.secret_key)
    assert again.data_dir == str(state_dir / "data")
    buckets = client(again).list_buckets()["Buckets"]
    assert [bucket["Name"] for bucket in buckets] == ["kept-bucket"]


def test_a_running_server_is_not_replaced_by_a_different_one(state_dir: Path) -> None:
    info = server.start(state_dir=state_dir)
    port = int(info.endpoint.rpartition(":")[2])
    assert server.start(state_dir=state_dir, port=port, data_dir=Path(info.data_dir)) == info
    with pytest.raises(ServerError, match="already running"):
        server.start(state_dir=state_dir, port=port + 1)
    with pytest.raises(ServerError, match="already running"):
        server.start(state_dir=state_dir, data_dir=state_dir / "elsewhere")


def test_a_dead_servers_record_is_removed(state_dir: Path) -> None:
    info = server.start(state_dir=state_dir)
    os.killpg(info.pid, signal.SIGKILL)
    wait_gone(info.pid)

    assert server.status(state_dir=state_dir) is None
    assert not (state_dir / "server.json").exists()
    assert server.stop(state_dir=state_dir) is False
    assert server.start(state_dir=state_dir).pid != info.pid


def test_a_server_that_does_not_answer_in_time_is_reported_and_stopped(state_dir: Path) -> None:
    with pytest.raises(ServerError) as raised:
        server.start(state_dir=state_dir, timeout=0)
    message = str(raised.value)
    assert isinstance(raised.value, StoreError)
    assert "\n" not in message
    assert str(state_dir / "server.log") in message
    assert server.status(state_dir=state_dir) is None
    left = [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(state_dir) in " ".join(p.info["cmdline"] or [])
    ]
    assert left == []


def test_a_port_in_use_is_refused(state_dir: Path) -> None:
    with socket_listening() as port, pytest.raises(ServerError, match=f"port {port}"):
        server.start(state_dir=state_dir, port=port)


def test_the_state_is_private(state_dir: Path) -> None:
    info = server.start(state_dir=state_dir)
    assert mode(state_dir) == 0o700
    private = ("credentials.json", "server.json", "server.log", "s3-identities.json")
    for name in (*private, "security.toml", "tls-cert.pem", "tls-key.pem"):
        assert mode(state_dir / name) == 0o600, name
    keys = json.loads((state_dir / "credentials.json").read_text())
    assert keys == {"access_key": info.access_key, "secret_key": info.secret_key}
    record = (state_dir / "server.json").read_text()
    assert info.secret_key not in record
    assert info.secret_key not in (state_dir / "server.log").read_text()
    assert info.secret_key not in repr(info)
    assert "secret_key" not in info.to_public_dict()


# --- security of the session's server -----------------------------------------------


def test_the_secret_is_on_no_command_line(s3_server: ServerInfo) -> None:
    secret = s3_server.secret_key.encode()
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            assert secret not in path.read_bytes(), path
        except OSError:
            continue  # the process ended meanwhile
    weed_environment = Path(f"/proc/{s3_server.pid}/environ").read_bytes()
    assert secret not in weed_environment
    assert s3_server.access_key.encode() not in weed_environment


def test_nothing_listens_beyond_loopback(s3_server: ServerInfo) -> None:
    sockets = psutil.Process(s3_server.pid).net_connections(kind="inet")
    listening = [s for s in sockets if s.status == psutil.CONN_LISTEN or not s.raddr]
    assert len(listening) >= 8  # master, volume, filer, S3 and their gRPC ports at least
    assert {s.laddr.ip for s in listening} == {"127.0.0.1"}


def test_wrong_or_missing_keys_are_refused(s3_server: ServerInfo, s3_bucket: str) -> None:
    attempts = {
        "wrong secret": client(s3_server, aws_secret_access_key="not-the-secret"),
        "unknown key": client(s3_server, aws_access_key_id="AKIDUNKNOWN0000000000"),
        "unsigned": client(s3_server, config=Config(signature_version=UNSIGNED)),
    }
    for name, bad in attempts.items():
        for call in (
            lambda bad=bad: bad.list_buckets(),
            lambda bad=bad: bad.list_objects_v2(Bucket=s3_bucket),
            lambda bad=bad: bad.put_object(Bucket=s3_bucket, Key="intruder", Body=b"x"),
        ):
            with pytest.raises(ClientError) as raised:
                call()
            assert error_code(raised.value)[0] == 403, name
    assert "Contents" not in client(s3_server).list_objects_v2(Bucket=s3_bucket)


def test_weeds_other_ports_do_not_serve_objects(s3_server: ServerInfo, s3_bucket: str) -> None:
    """The filer and volume HTTP ports would bypass S3 auth; their JWT keys lock them."""
    body = uuid.uuid4().hex.encode() * 4
    client(s3_server).put_object(Bucket=s3_bucket, Key="private", Body=body)
    s3_port = int(s3_server.endpoint.rpartition(":")[2])
    ports = {
        s.laddr.port
        for s in psutil.Process(s3_server.pid).net_connections(kind="tcp")
        if s.status == psutil.CONN_LISTEN and s.laddr.port != s3_port
    }
    for port in ports:
        for path in (f"/buckets/{s3_bucket}/private", f"/{s3_bucket}/private"):
            assert body not in http_get(port, path), f"port {port} served {path}"


def http_get(port: int, path: str) -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        connection.request("GET", path)
        return connection.getresponse().read()
    except (OSError, http.client.HTTPException):
        return b""  # a gRPC port speaks no HTTP/1.1
    finally:
        connection.close()


# --- S3 behaviour that altus relies on ----------------------------------------------


KEYS = ["a/1", "a/2", "a/3", "a/sub/x", "a/sub/y", "a/t/z", "b/1"]


def one_key_pages(s3: Any, bucket: str, **arguments: Any) -> list[tuple[list[str], list[str]]]:
    pages: list[tuple[list[str], list[str]]] = []
    token: dict[str, str] = {}
    while True:
        page = s3.list_objects_v2(Bucket=bucket, MaxKeys=1, **arguments, **token)
        keys = [entry["Key"] for entry in page.get("Contents", [])]
        prefixes = [entry["Prefix"] for entry in page.get("CommonPrefixes", [])]
        pages.append((keys, prefixes))
        assert len(keys) + len(prefixes) == 1
        if not page["IsTruncated"]:
            return pages
        token = {"ContinuationToken": page["NextContinuationToken"]}
        assert len(pages) <= len(KEYS)


def test_listing_pages_one_key_at_a_time(s3_server: ServerInfo, s3_bucket: str) -> None:
    s3 = client(s3_server)
    for key in KEYS:
        s3.put_object(Bucket=s3_bucket, Key=key, Body=key.encode())

    assert one_key_pages(s3, s3_bucket) == [([key], []) for key in KEYS]
    assert one_key_pages(s3, s3_bucket, Prefix="a/") == [([key], []) for key in KEYS[:-1]]
    assert one_key_pages(s3, s3_bucket, Prefix="a/", Delimiter="/") == [
        (["a/1"], []),
        (["a/2"], []),
        (["a/3"], []),
        ([], ["a/sub/"]),
        ([], ["a/t/"]),
    ]
    assert one_key_pages(s3, s3_bucket, Delimiter="/") == [([], ["a/"]), ([], ["b/"])]


def test_default_checksums_are_accepted(s3_server: ServerInfo, s3_bucket: str) -> None:
    """botocore >= 1.36 sends CRC32 by default: as a header over http, aws-chunked over https."""
    s3 = client(s3_server)
    sent: list[dict[str, str]] = []
    s3.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_: sent.append(dict(request.headers))
    )
    body = b"checksummed " * 1000
    answer = s3.put_object(Bucket=s3_bucket, Key="header", Body=body)
    assert "x-amz-checksum-crc32" in {name.lower() for name in sent[-1]}
    assert answer["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'

    s3.meta.events.register("before-call.s3.PutObject", _checksum_in_trailer)
    s3.meta.events.register("before-call.s3.UploadPart", _checksum_in_trailer)
    answer = s3.put_object(Bucket=s3_bucket, Key="chunked", Body=io.BytesIO(body))
    assert {"content-encoding": "aws-chunked"}.items() <= _lower(sent[-1]).items()
    assert answer["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    assert s3.get_object(Bucket=s3_bucket, Key="chunked")["Body"].read() == body

    large = os.urandom(6 * MIB)
    s3.upload_fileobj(io.BytesIO(large), s3_bucket, "chunked-parts", Config=_multipart())
    assert s3.get_object(Bucket=s3_bucket, Key="chunked-parts")["Body"].read() == large


def _checksum_in_trailer(params: dict[str, Any], **_: Any) -> None:
    """Make botocore send aws-chunked with a trailing checksum, as it does over https."""
    algorithm = params["context"].get("checksum", {}).get("request_algorithm")
    if isinstance(algorithm, dict):
        algorithm["in"] = "trailer"


def _lower(headers: dict[str, Any]) -> dict[str, str]:
    return {
        name.lower(): value.decode() if isinstance(value, bytes) else value
        for name, value in headers.items()
    }


def _multipart() -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)


def test_a_wrong_checksum_is_refused(s3_server: ServerInfo, s3_bucket: str) -> None:
    with pytest.raises(ClientError) as raised:
        client(s3_server).put_object(
            Bucket=s3_bucket, Key="bad", Body=b"hello", ChecksumCRC32="AAAAAA=="
        )
    assert error_code(raised.value) == (400, "BadDigest")


def test_multipart_upload(s3_server: ServerInfo, s3_bucket: str) -> None:
    s3 = client(s3_server)
    parts = [os.urandom(5 * MIB), b"the last part"]
    upload = s3.create_multipart_upload(Bucket=s3_bucket, Key="joined")["UploadId"]
    done = [
        {
            "PartNumber": number,
            "ETag": s3.upload_part(
                Bucket=s3_bucket, Key="joined", UploadId=upload, PartNumber=number, Body=part
            )["ETag"],
        }
        for number, part in enumerate(parts, start=1)
    ]
    answer = s3.complete_multipart_upload(
        Bucket=s3_bucket, Key="joined", UploadId=upload, MultipartUpload={"Parts": done}
    )
    assert answer["ETag"].endswith('-2"')
    assert s3.get_object(Bucket=s3_bucket, Key="joined")["Body"].read() == b"".join(parts)

    whole = os.urandom(11 * MIB)
    s3.upload_fileobj(io.BytesIO(whole), s3_bucket, "transferred", Config=_multipart())
    assert s3.head_object(Bucket=s3_bucket, Key="transferred")["ContentLength"] == len(whole)
    assert s3.get_object(Bucket=s3_bucket, Key="transferred")["Body"].read() == whole


def test_conditional_create_refuses_an_existing_key(s3_server: ServerInfo, s3_bucket: str) -> None:
    """``If-None-Match: *`` works, so a job record can claim a key with one PUT."""
    s3 = client(s3_server)
    s3.put_object(Bucket=s3_bucket, Key="claimed", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as raised:
        s3.put_object(Bucket=s3_bucket, Key="claimed", Body=b"second", IfNoneMatch="*")
    assert error_code(raised.value) == (412, "PreconditionFailed")
    assert s3.get_object(Bucket=s3_bucket, Key="claimed")["Body"].read() == b"first"


def test_fixtures_point_at_the_session_server(
    s3_server: ServerInfo, s3_bucket: str, s3_env: dict[str, str]
) -> None:
    assert s3_env == s3_server.environment()
    assert os.environ["AWS_ENDPOINT_URL"] == s3_server.endpoint
    s3 = boto3.client("s3")  # configured from the environment alone
    s3.put_object(Bucket=s3_bucket, Key="from-env", Body=b"1")
    assert [entry["Key"] for entry in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]] == [
        "from-env"
    ]


# --- the command --------------------------------------------------------------------


def test_the_serve_command(weed_installed: None) -> None:
    """``altus data serve`` in the per-test XDG folders that ``clean_environ`` set up."""
    runner = CliRunner()
    try:
        started = runner.invoke(serve, [], catch_exceptions=False)
        assert started.exit_code == 0, started.output
        exports = dict(
            shlex.split(line.removeprefix("export "))[0].split("=", 1)
            for line in started.stdout.splitlines()
        )
        info = server.status()
        assert info is not None
        assert exports == info.environment()
        assert "started" in started.stderr

        shown = runner.invoke(serve, ["--status"])
        assert shown.exit_code == 0
        assert info.endpoint in shown.output
        assert info.secret_key not in shown.output

        shown_json = json.loads(runner.invoke(serve, ["--status", "--json"]).stdout)
        assert shown_json == {"running": True, **info.to_public_dict()}

        again = json.loads(runner.invoke(serve, ["--json"]).stdout)
        assert again["started_now"] is False
        assert again["environment"] == info.environment()
        assert again["pid"] == info.pid
    finally:
        stopped = runner.invoke(serve, ["--stop", "--json"])
    assert json.loads(stopped.stdout) == {"stopped": True}
    gone = runner.invoke(serve, ["--status"])
    assert gone.exit_code == 3
    assert "no S3 server" in gone.output
    assert runner.invoke(serve, ["--stop"]).output.strip() == "no S3 server was running"


def test_the_serve_command_refuses_mixed_options() -> None:
    runner = CliRunner()
    assert runner.invoke(serve, ["--status", "--stop"]).exit_code == 2
    assert runner.invoke(serve, ["--stop", "--port", "9000"]).exit_code == 2


@contextlib.contextmanager
def socket_listening() -> Iterator[int]:
    """A loopback port that something else listens on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]
