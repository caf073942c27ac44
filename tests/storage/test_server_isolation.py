"""``altus data serve`` as another local user sees it: nothing but a signed S3 API.

A second account (``other_user``, no altus, no keys) is given the server's port
numbers, which anyone on the machine can list with ``ss -ltn``, a copy of ``weed``
and a certificate of its own, and runs ``isolation_probe.py`` with Debian's Python:
the master, volume, filer and admin HTTP APIs in the clear and over TLS, raw gRPC,
``weed shell`` and unsigned S3 requests. Every one must go unanswered (refused,
reset, TLS handshake refused, timeout), or for S3 be refused with 403; the owner's
object must then read back byte for byte, and the owner's signed S3 traffic work.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from altus.errors import ServerError
from altus.storage import server
from altus.tls import write_self_signed
from helpers import s3_client

PROBE = Path(__file__).with_name("isolation_probe.py")
BUCKET = "owners-bucket"
KEY = "results/table.csv"
# What Go's TLS server says to a plain HTTP request: nothing about the server.
PLAIN_TO_TLS = "HTTP 400 b'Client sent an HTTP request to an HTTPS server.\\n'"


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """The state folder of a server of this test's own, stopped afterwards."""
    try:
        server.find_weed()
    except ServerError as exc:  # the test extra brings it: missing is a failure, never a skip
        pytest.fail(str(exc))
    state = tmp_path / "state"
    yield state
    server.stop(state_dir=state, timeout=5)


def listening_ports(state: Path) -> dict[str, int]:
    """The server's ports, as the record keeps them (an attacker would use ``ss -ltn``)."""
    ports: dict[str, int] = json.loads((state / "server.json").read_text())["ports"]
    return ports


def tmp_sockets(ports: dict[str, int]) -> list[str]:
    """weed's Unix sockets in /tmp for these ports (``/tmp/seaweedfs-<part>[-grpc]-<port>.sock``)."""
    numbers = {str(port) for port in ports.values()}
    found = Path("/tmp").glob("seaweedfs-*.sock")
    return sorted(str(p) for p in found if p.stem.rpartition("-")[2] in numbers)


def reachable_weed(folder: Path) -> str:
    """A ``weed`` the other user can run: a hard link if the file system allows, else a copy."""
    target = folder / "weed"
    try:
        os.link(server.find_weed(), target)
    except OSError:
        shutil.copyfile(server.find_weed(), target)
    target.chmod(0o755)
    return str(target)


def own_certificate(folder: Path) -> tuple[str, str]:
    """A self-signed client certificate, as any local user can make one."""
    cert_path, key_path = folder / "own-cert.pem", folder / "own-key.pem"
    write_self_signed(cert_path, key_path, common_name="127.0.0.1", addresses=["127.0.0.1"], days=1)
    return str(cert_path), str(key_path)


def grpc_sockets(ports: dict[str, int]) -> list[str]:
    """weed's five gRPC sockets in /tmp; the admin part may open its own a moment after the
    server answers S3, so wait for all of them: each is a door to try."""
    deadline = time.monotonic() + 20
    while True:
        sockets = tmp_sockets(ports)
        if sum("-grpc-" in path for path in sockets) >= 5 or time.monotonic() > deadline:
            return sockets
        time.sleep(0.2)


def probe_plan(folder: Path, ports: dict[str, int]) -> Path:
    own_cert, own_key = own_certificate(folder)
    plan = {
        "host": "127.0.0.1",
        "ports": ports,
        "sockets": grpc_sockets(ports),
        "bucket": BUCKET,
        "key": KEY,
        "weed": reachable_weed(folder),
        "own_cert": own_cert,
        "own_key": own_key,
    }
    path = folder / "plan.json"
    path.write_text(json.dumps(plan))
    shutil.copyfile(PROBE, folder / PROBE.name)
    for entry in folder.iterdir():
        entry.chmod(0o755)
    return path


def went_unanswered(probe: str, outcome: str) -> bool:
    """Whether this outcome gave the prober nothing: no API answered, S3 said 403."""
    if probe.startswith("s3 "):
        return outcome.startswith("HTTP 403 ")
    return outcome.startswith("no answer: ") or outcome == PLAIN_TO_TLS


@pytest.mark.slow
def test_another_user_reaches_nothing_but_the_signed_s3_api(
    state_dir: Path, other_user: Any, shared_tmp: Path
) -> None:
    owner = s3_client(server.start(state_dir=state_dir))
    body = os.urandom(64 * 1024)
    owner.create_bucket(Bucket=BUCKET)
    owner.put_object(Bucket=BUCKET, Key=KEY, Body=body)
    plan = probe_plan(shared_tmp, listening_ports(state_dir))
    sockets = json.loads(plan.read_text())["sockets"]
    assert sum("-grpc-" in path for path in sockets) >= 5, sockets  # all five parts

    done = other_user.run(
        ["/usr/bin/python3", str(shared_tmp / PROBE.name), str(plan)], timeout=120
    )
    assert done.returncode == 0, done.stderr
    outcomes = json.loads(done.stdout)
    answered = [(p, o) for p, o in outcomes if not went_unanswered(p, o)]
    report = "\n".join(f"{probe}: {outcome[:160]}" for probe, outcome in answered)
    assert answered == [], f"{len(answered)} of {len(outcomes)} probes answered:\n{report}"

    assert [b["Name"] for b in owner.list_buckets()["Buckets"]] == [BUCKET]
    assert owner.get_object(Bucket=BUCKET, Key=KEY)["Body"].read() == body
    listed = owner.list_objects_v2(Bucket=BUCKET)["Contents"]
    assert [entry["Key"] for entry in listed] == [KEY]
    owner.put_object(Bucket=BUCKET, Key="after", Body=b"still works")
    assert owner.get_object(Bucket=BUCKET, Key="after")["Body"].read() == b"still works"
