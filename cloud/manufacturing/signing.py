"""The platform PKI behind enrollment's ``CsrSigner``: ``cloud.pki`` signs, this adapts.

The PKI's ``CsrRejectedError`` becomes an ``EnrollmentError`` on the field ``csr`` with the
PKI's reason, raised before the enrollment's transaction commits (nothing is written).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from cloud.identity.principal import Principal
from cloud.manufacturing import EnrollmentError
from cloud.manufacturing.enrollment import CsrSigner, Signed
from cloud.pki import CsrRejectedError
from cloud.pki import service as pki
from cloud.settings import Settings


class PkiSigner:
    """Signs device CSRs with ``cloud.pki.service.issue_for_device``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def sign(self, session: Session, device_id: str, csr_pem: str, actor: Principal) -> Signed:
        """Issue the device's certificate; EnrollmentError (field ``csr``) when refused."""
        try:
            issued = pki.issue_for_device(session, self.settings, device_id, csr_pem, actor=actor)
        except CsrRejectedError as exc:
            raise EnrollmentError(f"CSR refused: {exc.reason}", "csr", "bad_csr") from exc
        return Signed(issued.serial, issued.certificate_pem, issued.chain_pem, issued.not_after)

    def ca_chain(self, session: Session) -> str:
        """The platform's CA chain (PEM): the device CA, then the root."""
        return pki.ca_chain_pem(session, self.settings)


def pki_signer(settings: Settings) -> CsrSigner:
    """The platform PKI as a CsrSigner."""
    return PkiSigner(settings)
