"""The CSR checks (``cloud.pki.csr``), I/O-free: one good request, then one refusal per rule,
each with a reason that names what is wrong."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from cloud.pki import CsrRejectedError
from cloud.pki.csr import accept, judge
from tests.pki.support import make_csr, rsa_key

DEVICE = "af-0123456789ab"


def tampered_signature(pem: str) -> str:
    """The CSR with the last byte of its signature changed."""
    der = bytearray(x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    body = base64.encodebytes(bytes(der)).decode()
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"


def ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def ed25519_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DEVICE)]))
        .sign(key, None)
    )
    return request.public_bytes(serialization.Encoding.PEM).decode()


def named(*attributes: tuple[x509.ObjectIdentifier, str]) -> str:
    return make_csr(DEVICE, subject=[x509.NameAttribute(oid, value) for oid, value in attributes])


REFUSED: dict[str, tuple[Callable[[], str], str]] = {
    "another CN": (lambda: make_csr("af-someone-else"), "not the device id 'af-0123456789ab'"),
    "no CN": (lambda: named((NameOID.ORGANIZATION_NAME, "ACME")), "has no CN"),
    "two CNs": (
        lambda: named((NameOID.COMMON_NAME, DEVICE), (NameOID.COMMON_NAME, DEVICE)),
        "names CN more than once",
    ),
    "an odd subject attribute": (
        lambda: named((NameOID.COMMON_NAME, DEVICE), (NameOID.EMAIL_ADDRESS, "a@b.c")),
        "1.2.840.113549.1.9.1",
    ),
    "a control character in the subject": (
        lambda: named((NameOID.COMMON_NAME, DEVICE), (NameOID.ORGANIZATION_NAME, "A\x07B")),
        "control characters",
    ),
    "RSA-1024": (lambda: make_csr(DEVICE, rsa_key(1024)), "RSA of 1024 bits; at least 2048"),
    "P-384": (
        lambda: make_csr(DEVICE, ec.generate_private_key(ec.SECP384R1())),
        "curve secp384r1; only P-256",
    ),
    "Ed25519": (ed25519_key, "not accepted: EC P-256 or RSA"),
    "a bad signature": (lambda: tampered_signature(make_csr(DEVICE)), "signature is not valid"),
    "CA:true requested": (
        lambda: make_csr(DEVICE, extensions=[x509.BasicConstraints(ca=True, path_length=None)]),
        "asks to be a CA",
    ),
    "keyCertSign requested": (
        lambda: make_csr(DEVICE, extensions=[ca_usage()]),
        "keyCertSign or cRLSign",
    ),
    "not PEM": (lambda: "MIIBIjANBgkqh", "not PEM-encoded"),
    "PEM of garbage": (
        lambda: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        "cannot be read as a PKCS#10 request",
    ),
    "huge": (lambda: "-----BEGIN " + "A" * 20_000, "larger than 16384 bytes"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_bad_csr_is_refused_with_a_reason_naming_what_is_wrong(case: str) -> None:
    make, reason = REFUSED[case]
    verdict = judge(make(), DEVICE)
    assert not verdict.accepted
    assert verdict.reason is not None and reason in verdict.reason, verdict.reason
    with pytest.raises(CsrRejectedError) as raised:
        accept(make(), DEVICE)
    assert reason in raised.value.reason


def test_good_csrs_are_accepted() -> None:
    assert judge(make_csr(DEVICE), DEVICE).accepted
    # The usual naming attributes may come with the CN (OCPP 2.0.1 A02: O is the CPO).
    full = named(
        (NameOID.COUNTRY_NAME, "DE"),
        (NameOID.ORGANIZATION_NAME, "ACME Charging"),
        (NameOID.COMMON_NAME, DEVICE),
    )
    assert judge(full, DEVICE).accepted
    # Harmless requested extensions are ignored, not refused.
    san = x509.SubjectAlternativeName([x509.DNSName("charger.example")])
    end_entity = x509.BasicConstraints(ca=False, path_length=None)
    assert judge(make_csr(DEVICE, extensions=[san, end_entity]), DEVICE).accepted
    assert judge(make_csr(DEVICE, rsa_key(2048)).encode(), DEVICE).accepted
