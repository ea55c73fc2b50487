"""What the PKI tests share: a records database (SQLite, tables made from the models: fast),
settings with a KEK, devices, and CSRs made here with ``cryptography``."""

from __future__ import annotations

import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID
from sqlalchemy.orm import Session

from cloud.db import Database
from cloud.devices.models import Device, LifecycleState, Protocol
from cloud.models import Base
from cloud.organizations.models import Organization
from cloud.pki.kek import new_kek_text
from cloud.settings import Settings

# One KEK for the tests of this package (tests/helpers.settings_for holds the API's).
KEK = new_kek_text()


def pki_settings(data_dir: Path, database_url: str, **overrides: object) -> Settings:
    """Settings of a PKI test: files under ``data_dir``, the test KEK."""
    return Settings.load(
        {
            "data_dir": data_dir,
            "database_url": database_url,
            "testing": True,
            "password_kdf": "insecure-fast-for-tests",
            "pki_kek": KEK,
            **overrides,
        }
    )


def fresh_database(directory: Path) -> Database:
    """An empty SQLite records database with every table."""
    directory.mkdir(parents=True, exist_ok=True)
    database = Database(f"sqlite:///{directory / 'ampfleet.db'}")
    Base.metadata.create_all(database.engine)
    return database


def add_device(session: Session, state: LifecycleState = LifecycleState.MANUFACTURED) -> Device:
    """A device of a fresh organization."""
    slug = "o-" + secrets.token_hex(4)
    organization = Organization(slug=slug, name=slug)
    session.add(organization)
    session.flush()
    device = Device(
        id="af-" + secrets.token_hex(6),
        serial="SN-" + secrets.token_hex(6),
        hardware_family="ac22-3p",
        protocol=Protocol.NATIVE,
        state=state,
        organization_id=organization.id,
    )
    session.add(device)
    session.flush()
    return device


def make_csr(
    common_name: str,
    key: CertificateIssuerPrivateKeyTypes | None = None,
    extensions: list[x509.ExtensionType] = (),  # type: ignore[assignment]
    subject: list[x509.NameAttribute] | None = None,
) -> str:
    """A PEM CSR for ``common_name`` signed by ``key`` (a fresh P-256 key by default)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = (
        subject if subject is not None else [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(name))
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    request = builder.sign(key, hashes.SHA256())
    return request.public_bytes(serialization.Encoding.PEM).decode()


def rsa_key(bits: int) -> rsa.RSAPrivateKey:
    """An RSA key (1024 is refused by the checks; kept small for speed where that is all)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)
