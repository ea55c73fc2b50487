"""Signing a charger's CSR (SignCertificate, OCPP 2.0.1 A02/A03) with the bridge's CA, when one
is configured: the certificate's CN must be the charger id (A02.FR.05: the CSMS verifies the
request before it signs)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

VALIDITY = dt.timedelta(days=365)


class CsrSigner:
    """A CA that signs charging-station certificates."""

    def __init__(self, ca_cert_file: str, ca_key_file: str) -> None:
        self.ca = x509.load_pem_x509_certificate(Path(ca_cert_file).read_bytes())
        key = serialization.load_pem_private_key(Path(ca_key_file).read_bytes(), password=None)
        self.key: CertificateIssuerPrivateKeyTypes = key  # type: ignore[assignment]

    def sign(self, csr_pem: str, charger_id: str) -> str:
        """The PEM chain (certificate, then the CA) for ``csr_pem``; ValueError when the CSR
        is unreadable, badly signed, or names another charger."""
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        if not csr.is_signature_valid:
            raise ValueError("the CSR's signature is not valid")
        names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if [n.value for n in names] != [charger_id]:
            raise ValueError("the CSR's CN is not the charger id")
        now = dt.datetime.now(dt.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.ca.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.OID_CLIENT_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        pem = certificate.public_bytes(serialization.Encoding.PEM)
        return (pem + self.ca.public_bytes(serialization.Encoding.PEM)).decode()
