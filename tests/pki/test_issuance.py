"""The certificate and CRL builders (``cloud.pki.issuance``), I/O-free: validity is cut to the
issuer's, an expired issuer issues nothing, reason codes as RFC 5280 5.3.1 asks."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from cloud.pki import PkiError, issuance, normalize_serial

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def _issuer() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = issuance.root_certificate(root_key, "test", NOW)
    key = ec.generate_private_key(ec.SECP256R1())
    return issuance.issuing_certificate(key, "test", root, root_key, NOW), key


def test_validity_is_cut_to_the_issuers() -> None:
    issuer, key = _issuer()
    device = ec.generate_private_key(ec.SECP256R1()).public_key()
    long = issuance.device_certificate(device, "af-1", issuer, key, NOW, dt.timedelta(days=99999))
    assert long.not_valid_after_utc == issuer.not_valid_after_utc
    assert long.not_valid_before_utc == NOW - issuance.BACKDATE
    late = issuer.not_valid_after_utc + dt.timedelta(seconds=1)
    with pytest.raises(PkiError, match="can issue nothing more"):
        issuance.device_certificate(device, "af-1", issuer, key, late, dt.timedelta(days=1))


def test_crl_entries_carry_their_reason_but_unspecified() -> None:
    issuer, key = _issuer()
    revoked = [
        issuance.Revoked(1, NOW, "keyCompromise"),
        issuance.Revoked(2, NOW, "unspecified"),
    ]
    crl = issuance.certificate_revocation_list(issuer, key, 7, NOW, dt.timedelta(days=7), revoked)
    first = crl.get_revoked_certificate_by_serial_number(1)
    second = crl.get_revoked_certificate_by_serial_number(2)
    assert first is not None and second is not None
    assert first.extensions.get_extension_for_class(x509.CRLReason).value.reason == (
        x509.ReasonFlags.key_compromise
    )
    assert len(second.extensions) == 0
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    assert crl.next_update_utc == NOW + dt.timedelta(days=7)
    assert crl.is_signature_valid(key.public_key())


@pytest.mark.parametrize(
    ("given", "normal"),
    [("0A:1B", "a1b"), ("0x0a1b", "a1b"), (" A1B ", "a1b"), ("xyz", None), ("", None)],
)
def test_serials_are_read_in_the_usual_spellings(given: str, normal: str | None) -> None:
    assert normalize_serial(given) == normal
