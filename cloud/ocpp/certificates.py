"""Signing a charger's CSR (SignCertificate, OCPP 2.0.1 A02/A03, the 1.6 security extension)
with the platform's PKI (``cloud.pki``): the same checks and the same device CA as every other
device certificate. The CSR's CN must be the charger id (A02.FR.05: the CSMS verifies the
request before it signs); the certificate is recorded and audited like any other."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cloud.db import Database
from cloud.pki import service
from cloud.settings import Settings


class CsrSigner:
    """Signs charging-station certificates with the platform PKI's device CA."""

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings

    def sign(self, csr_pem: str, charger_id: str) -> str:
        """The PEM chain (certificate, then the device CA) for ``csr_pem``, recorded in its own
        transaction; ``cloud.pki.PkiError`` (CsrRejectedError with its reason) when refused.
        Blocking (the records): the bridge calls it from a thread."""
        with self.database.transaction() as session:
            issued = service.issue_for_device(
                session, self.settings, charger_id, csr_pem, actor=None
            )
        # A02: the chain may carry the sub-CA; the root is the charger's own trust anchor
        # (InstallCertificate), not sent with its certificate.
        leaf, issuing, *_root = x509.load_pem_x509_certificates(issued.chain_pem.encode())
        return b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in (leaf, issuing)
        ).decode()
