"""A private CA and the broker's server certificate, for a first start without a real PKI.

``ensure_tls_files(directory, names)`` writes, when missing, ``ca.pem`` and ``ca.key`` (a CA
valid for ten years) and ``server.pem``/``server.key`` (signed by it, valid for two years, with
``names`` as subject alternative names: DNS names or IP addresses). Files that exist are kept, so
the one-shot that calls it on every start never changes a certificate devices already trust;
delete the server files to reissue them from the same CA. Devices (and ``mqtts://`` clients)
trust ``ca.pem``. Keys are written 0600.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CA_DAYS = 3650
SERVER_DAYS = 730
# Clocks of freshly booted devices run behind: accept a certificate issued "in the future".
BACKDATE = dt.timedelta(hours=1)


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """Paths of the generated (or kept) files."""

    ca_file: Path
    ca_key: Path
    certfile: Path
    keyfile: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


def _alt_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _make_ca(files: TlsFiles, now: dt.datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ampfleet broker CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(files.ca_key, key)
    files.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))


def _make_server(files: TlsFiles, names: Sequence[str], now: dt.datetime) -> None:
    ca = x509.load_pem_x509_certificate(files.ca_file.read_bytes())
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{files.ca_key}: expected an EC private key")
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName([_alt_name(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(files.keyfile, key)
    files.certfile.write_bytes(server.public_bytes(serialization.Encoding.PEM))


def ensure_tls_files(directory: Path, names: Sequence[str]) -> tuple[TlsFiles, list[str]]:
    """The CA and server files in ``directory``, created when missing; and what was created."""
    if not names:
        raise ValueError("the server certificate needs at least one name")
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(
        directory / "ca.pem",
        directory / "ca.key",
        directory / "server.pem",
        directory / "server.key",
    )
    now = dt.datetime.now(dt.UTC)
    created: list[str] = []
    if not (files.ca_file.exists() and files.ca_key.exists()):
        _make_ca(files, now)
        created += [str(files.ca_file), str(files.ca_key)]
    # A new CA invalidates the old server certificate: reissue it too.
    if created or not (files.certfile.exists() and files.keyfile.exists()):
        _make_server(files, names, now)
        created += [str(files.certfile), str(files.keyfile)]
    return files, created
