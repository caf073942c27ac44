"""Every way into an altus S3 server but its keys, tried by another local user.

Run with Debian's ``/usr/bin/python3`` (stdlib only) by an account that cannot read
the server's state folder: ``isolation_probe.py PLAN.json`` prints a JSON list of
``[probe, outcome]``, where an outcome is ``"no answer: <why>"`` (refused, reset,
TLS handshake failure, timeout), ``"HTTP <status> <body>"``, ``"HTTP/2 <frame>"`` or
``"shell exited <code>: <output>"``. ``tests/storage/test_server_isolation.py``
judges them. The plan names the host, the ports (as ``ss -ltn`` would show them to
anyone), weed's Unix sockets in /tmp (``ls /tmp`` shows them), a bucket and key to
aim at, a ``weed`` binary, and a certificate and key of the prober's own making.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import socket
import ssl
import subprocess
import sys

TIMEOUT = 5.0
SHELL_TIMEOUT = 10.0
EMPTY_SETTINGS_FRAME = bytes(3) + b"\x04" + bytes(5)
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + EMPTY_SETTINGS_FRAME


def main() -> None:
    with open(sys.argv[1]) as file:
        plan = json.load(file)
    jobs = [*admin_probes(plan), *grpc_probes(plan), *socket_probes(plan)]
    jobs += [*s3_probes(plan), *shell_probes(plan)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(lambda job: [job[0], job[1]()], jobs))
    print(json.dumps(outcomes))


def admin_probes(plan: dict) -> list:
    """Master, volume, filer and admin HTTP APIs, on every port but S3's."""
    bucket, key = plan["bucket"], plan["key"]
    requests = [
        ("GET", f"/col/delete?collection={bucket}"),
        ("POST", f"/col/delete?collection={bucket}"),
        ("GET", f"/vol/grow?collection={bucket}&count=1"),
        ("GET", "/vol/status"),
        ("GET", "/dir/status"),
        ("GET", "/cluster/status"),
        ("GET", "/dir/assign"),
        ("GET", "/dir/lookup?volumeId=1"),
        ("GET", "/status"),
        ("GET", "/health"),
        ("GET", "/metrics"),
        ("GET", "/"),
        ("GET", "/buckets/"),
        ("GET", f"/buckets/{bucket}/{key}"),
        ("PUT", f"/buckets/{bucket}/planted"),
        ("DELETE", f"/buckets/{bucket}/{key}"),
    ]
    contexts = {"http": None, "https": tls_context(plan, own=False)}
    contexts["https+own-cert"] = tls_context(plan, own=True)
    return [
        (
            f"{scheme}://{plan['host']}:{port}{path} {method} ({name})",
            bind(http_request, plan["host"], port, contexts[scheme], method, path),
        )
        for name, port in plan["ports"].items()
        if name != "s3.port"
        for scheme in contexts
        for method, path in requests
    ]


def grpc_probes(plan: dict) -> list:
    """An HTTP/2 (gRPC) connection to every port but S3's, in the clear and over TLS."""
    contexts = {"h2": None, "h2+tls": tls_context(plan, own=False, alpn=True)}
    contexts["h2+tls+own-cert"] = tls_context(plan, own=True, alpn=True)
    return [
        (f"{scheme} {plan['host']}:{port} ({name})", bind(h2_settings, plan["host"], port, context))
        for name, port in plan["ports"].items()
        if name != "s3.port"
        for scheme, context in contexts.items()
    ]


def socket_probes(plan: dict) -> list:
    """An HTTP/2 (gRPC) connection to weed's Unix sockets in /tmp, which anyone can list."""
    return [(f"h2 unix:{path}", bind(h2_settings, path, None, None)) for path in plan["sockets"]]


def s3_probes(plan: dict) -> list:
    """Unsigned S3 requests: the S3 port is the one open door, and it wants a signature."""
    bucket, key, port = plan["bucket"], plan["key"], plan["ports"]["s3.port"]
    requests = [
        ("GET", "/"),
        ("GET", f"/{bucket}"),
        ("GET", f"/{bucket}/{key}"),
        ("PUT", f"/{bucket}/planted"),
        ("DELETE", f"/{bucket}/{key}"),
        ("DELETE", f"/{bucket}"),
        ("PUT", "/planted-bucket"),
    ]
    return [
        (f"s3 {method} {path}", bind(http_request, plan["host"], port, None, method, path))
        for method, path in requests
    ]


def shell_probes(plan: dict) -> list:
    """``weed shell`` against the master and filer gRPC ports, one command per shell."""
    ports, bucket, key = plan["ports"], plan["bucket"], plan["key"]
    master = f"{plan['host']}:{ports['master.port']}.{ports['master.port.grpc']}"
    filer = f"{plan['host']}:{ports['filer.port']}.{ports['filer.port.grpc']}"
    commands = [
        "collection.list",
        "volume.list",
        "fs.ls /buckets",
        f"fs.ls -l /buckets/{bucket}",
        f"fs.rm /buckets/{bucket}/{key}",
        "fs.mkdir /buckets/planted-bucket",
    ]
    argv = [plan["weed"], "shell", f"-master={master}", f"-filer={filer}"]
    return [(f"weed shell: {command}", bind(run_shell, argv, command)) for command in commands]


def bind(function, *arguments):
    return lambda: function(*arguments)


def tls_context(plan: dict, *, own: bool, alpn: bool = False) -> ssl.SSLContext:
    """TLS that trusts any server, without a client certificate or with one's own."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if own:
        context.load_cert_chain(plan["own_cert"], plan["own_key"])
    if alpn:
        context.set_alpn_protocols(["h2"])
    return context


def http_request(host, port, context, method, path) -> str:
    if context is None:
        connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    else:
        connection = http.client.HTTPSConnection(host, port, timeout=TIMEOUT, context=context)
    try:
        connection.request(method, path, body=b"planted" if method in ("PUT", "POST") else None)
        response = connection.getresponse()
        return f"HTTP {response.status} {response.read(400)!r}"
    except (OSError, http.client.HTTPException) as exc:
        return f"no answer: {type(exc).__name__}: {exc}"
    finally:
        connection.close()


def h2_settings(host, port, context) -> str:
    """The server's first HTTP/2 frame after our preface: a gRPC server sends SETTINGS.

    ``port`` None: ``host`` is the path of a Unix socket.
    """
    try:
        with connect(host, port) as raw:
            stream = raw if context is None else context.wrap_socket(raw)
            stream.sendall(H2_PREFACE)
            header = stream.recv(9)
    except OSError as exc:
        return f"no answer: {type(exc).__name__}: {exc}"
    if len(header) == 9 and header[3] == 0x04:
        return f"HTTP/2 SETTINGS frame {header.hex()}"
    return f"no answer: {header!r}"


def connect(host, port) -> socket.socket:
    if port is not None:
        return socket.create_connection((host, port), timeout=TIMEOUT)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.settimeout(TIMEOUT)
    try:
        unix.connect(host)
    except OSError:
        unix.close()
        raise
    return unix


def run_shell(argv, command) -> str:
    try:
        done = subprocess.run(
            argv, input=command + "\n", capture_output=True, text=True, timeout=SHELL_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        return f"no answer: no connection within {SHELL_TIMEOUT:g}s"
    return f"shell exited {done.returncode}: {(done.stdout + done.stderr)[-600:]}"


if __name__ == "__main__":
    main()
