"""Self-signed certificates for altus's own servers, their keys readable by the owner alone.

Two servers need one: a ``--public`` notebook (a server certificate for this
host's names) and ``altus data serve`` (one certificate that SeaweedFS uses as
server, client and the only authority it trusts, so that nobody without its
key can talk to weed's internal ports). Both are P-256 keys, made fresh, and
written 0600 with ``detached.write_private``. ``cryptography`` comes with the
extras that need it; its ``ImportError`` is the caller's to name.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from altus.detached import write_private

if TYPE_CHECKING:  # cryptography is imported only when a certificate is made
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["write_self_signed"]


def write_self_signed(
    cert_path: Path,
    key_path: Path,
    *,
    common_name: str,
    names: Sequence[str] = (),
    addresses: Sequence[str] = (),
    days: int,
    authority: bool = False,
) -> None:
    """A new key and a certificate for ``names`` and ``addresses``; ``authority`` makes it
    its own CA, good for TLS servers and clients alike (mutual TLS with one certificate)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _certificate(key, common_name, names, addresses, days, authority)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(key_path, key_pem.decode())
    write_private(cert_path, certificate.public_bytes(serialization.Encoding.PEM).decode())


def _certificate(
    key: ec.EllipticCurvePrivateKey,
    common_name: str,
    names: Sequence[str],
    addresses: Sequence[str],
    days: int,
    authority: bool,
) -> x509.Certificate:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    alternatives: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
    alternatives += [x509.IPAddress(ipaddress.ip_address(address)) for address in addresses]
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(
            x509.BasicConstraints(ca=authority, path_length=0 if authority else None),
            critical=True,
        )
    )
    if authority:
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return builder.sign(key, hashes.SHA256())
