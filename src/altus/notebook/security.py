"""Secrets and certificates for a notebook server, none of them ever on a command line.

- The token: 256 random bits, kept in a 0600 file and in the server's 0600
  config file; altus sends it in an ``Authorization`` header, never in a URL it
  logs.
- The password (``--public`` only): hashed with argon2 by jupyter_server's own
  ``passwd`` in the server's environment, the clear text going in on stdin.
- The certificate (``--public`` without ``--certfile``): self-signed with
  ``cryptography``, valid for this host's names and addresses, so a browser
  shows its usual warning once and the connection is encrypted from then on.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import secrets
import socket
import ssl
import subprocess
from pathlib import Path

from altus.detached import write_private
from altus.errors import NotebookError

__all__ = ["check_certificate", "hash_password", "host_names", "new_token", "self_signed"]

TOKEN_BYTES = 32
CERTIFICATE_DAYS = 365
_HASH = (
    "import sys; from jupyter_server.auth import passwd; print(passwd(sys.stdin.read(), 'argon2'))"
)


def new_token() -> str:
    """A URL-safe token of 256 random bits (the issue asks for at least 128)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_password(python: Path, password: str) -> str:
    """``argon2:$argon2id$...`` from jupyter_server's ``passwd`` in the server's environment."""
    if not password:
        raise NotebookError("the password is empty")
    try:
        done = subprocess.run(
            [str(python), "-c", _HASH],
            input=password,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NotebookError(f"cannot hash the password with {python}: {exc}") from exc
    hashed = done.stdout.strip()
    if done.returncode != 0 or not hashed.startswith("argon2:"):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise NotebookError(f"cannot hash the password with jupyter_server in {python}: {last}")
    return hashed


def host_names() -> tuple[list[str], list[str]]:
    """This machine's DNS names and IP addresses, for a certificate's SANs and for URLs."""
    names = {"localhost", socket.gethostname()}
    with contextlib.suppress(OSError):
        names.add(socket.getfqdn())
    addresses = {"127.0.0.1", "::1"}
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None):
            addresses.add(str(info[4][0]))
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing address
        addresses.add(probe.getsockname()[0])
    return sorted(n for n in names if n), sorted(addresses)


def self_signed(folder: Path) -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` (0600) for this host into ``folder``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    names, addresses = host_names()
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, socket.gethostname())])
    now = datetime.datetime.now(datetime.UTC)
    alternatives: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
    alternatives += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERTIFICATE_DAYS))
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    write_private(key_path, key_pem.decode())
    write_private(cert_path, certificate.public_bytes(serialization.Encoding.PEM).decode())
    return cert_path, key_path


def check_certificate(certfile: Path, keyfile: Path) -> None:
    """Fail in one line unless the pair loads (readable, PEM, key matching the certificate)."""
    for path in (certfile, keyfile):
        if not path.is_file():
            raise NotebookError(f"{path}: no such file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile, keyfile)
    except PermissionError as exc:
        raise NotebookError(f"{exc.filename or certfile}: cannot read it ({exc.strerror})") from exc
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise NotebookError(
            f"{certfile} / {keyfile}: not a usable certificate and key ({reason})"
        ) from exc
