"""Secrets and certificates for a notebook server, none of them ever on a command line.

- The token: 256 random bits, kept in a 0600 file and in the server's 0600
  config file; altus sends it in an ``Authorization`` header, never in a URL it
  logs.
- The password (``--public`` only): refused unless it is at least 12 characters,
  not one of the most common passwords (``common_passwords``), not a key run or
  a repeat, not the user's name; then hashed with argon2 by jupyter_server's own
  ``passwd`` in the server's environment, the clear text going in on stdin. The
  running server throttles failed logins per client address (``LoginThrottle``,
  applied by ``login_guard``), so a good password cannot be guessed online.
- The certificate (``--public`` without ``--certfile``): self-signed with
  ``cryptography``, valid for this host's names and addresses, so a browser
  shows its usual warning once and the connection is encrypted from then on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import secrets
import socket
import ssl
import string
import subprocess
from dataclasses import dataclass
from pathlib import Path

from altus.errors import NotebookError
from altus.notebook.common_passwords import COMMON_PASSWORDS
from altus.tls import write_self_signed

__all__ = [
    "LoginThrottle",
    "check_certificate",
    "check_password",
    "hash_password",
    "host_names",
    "new_token",
    "self_signed",
]

TOKEN_BYTES = 32
CERTIFICATE_DAYS = 365
MIN_PASSWORD_LENGTH = 12
_RUNS = (
    "abcdefghijklmnopqrstuvwxyz",
    "01234567890123456789",
    "qwertyuiopasdfghjklzxcvbnm",
    "azertyuiopqsdfghjklmwxcvbn",
    "qwertzuiopasdfghjklyxcvbnm",
    "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik9ol0p",
    "qazwsxedcrfvtgbyhnujmikolp",
)
"""Letters, digits and keys in order: a password inside one (either way) is no secret."""
_DECORATION = string.digits + string.punctuation + " "


@dataclass(frozen=True)
class LoginThrottle:
    """How a public server answers failed logins from one client address.

    After the n-th failure in a row the answer waits ``first_delay * 2**(n-1)``
    seconds, at most ``max_delay``; ``max_failures`` failures within ``window``
    seconds lock the address out for ``lockout`` seconds (HTTP 429, even for the
    right password). A success starts the count again. With the defaults an
    online guesser gets 10 tries per 10 minutes.
    """

    first_delay: float = 0.5
    max_delay: float = 8.0
    max_failures: int = 10
    window: float = 900.0
    lockout: float = 600.0

    def settings(self) -> dict[str, float]:
        """The policy as ``login_guard`` reads it from the server's settings."""
        return {key: float(value) for key, value in dataclasses.asdict(self).items()}


_HASH = (
    "import sys; from jupyter_server.auth import passwd; print(passwd(sys.stdin.read(), 'argon2'))"
)


def new_token() -> str:
    """A URL-safe token of 256 random bits (the issue asks for at least 128)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def check_password(password: str) -> None:
    """Refuse, in one line that says why (never what was typed), a password an online
    guesser or a cracker's first list would find."""
    reason = _weakness(password)
    if reason is not None:
        raise NotebookError(f"refused: {reason}")


def _weakness(password: str) -> str | None:
    if len(password) < MIN_PASSWORD_LENGTH:
        plural = "" if len(password) == 1 else "s"
        return (
            f"the password has {len(password)} character{plural}; "
            f"--public needs at least {MIN_PASSWORD_LENGTH}"
        )
    lowered = password.lower()
    if _is_user_name(lowered):
        return "it is your user name"
    if len(set(lowered)) == 1:
        return "it is one character repeated"
    if lowered in (lowered + lowered)[1:-1]:
        return "it is a short pattern repeated"
    if any(lowered in run or lowered in run[::-1] for run in _RUNS):
        return "it is a run of keys or letters in order"
    if _variants(lowered) & COMMON_PASSWORDS:
        return "it is one of the most common passwords"
    return None


def _variants(lowered: str) -> set[str]:
    """The password as typed, without spaces, without what ends it, and letters only:
    ``Password123!`` and ``pass word`` count as the common passwords they decorate."""
    letters = "".join(character for character in lowered if character.isalpha())
    return {lowered, lowered.replace(" ", ""), lowered.rstrip(_DECORATION), letters}


def _is_user_name(lowered: str) -> bool:
    try:
        user = getpass.getuser().lower()
    except (OSError, KeyError):
        return False
    return lowered in {user, user.replace(".", ""), user.replace(".", " ")}


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
    names, addresses = host_names()
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    write_self_signed(
        cert_path,
        key_path,
        common_name=socket.gethostname(),
        names=names,
        addresses=addresses,
        days=CERTIFICATE_DAYS,
    )
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
