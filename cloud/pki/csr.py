"""Checking a certificate signing request before the platform signs it: I/O-free, a PEM and
the device id in, a verdict out (``judge``), like the house's protocol cores.

What a CSR must be (docs/pki.md; the SteVe #2027 list, OCPP 2.0.1 A02.FR.05 "the CSMS verifies
the request before it signs"):

* one PEM-encoded PKCS#10 request, at most ``MAX_CSR_BYTES``;
* its signature valid (proof that the requester holds the private key), made with SHA-256 or
  stronger;
* its key EC P-256 (secp256r1) or RSA of at least 2048 bits. Other curves, P-384 included,
  are refused: the device CA and the chargers' TLS stacks (mbedTLS on the ESP32-C3) are built
  around P-256, and one curve is one thing fewer to get wrong;
* its subject sane: exactly one CN, equal to the device id it is enrolled as; besides the CN
  only the usual naming attributes (C, ST, L, O, OU, serialNumber), each once, short and
  printable;
* no CA rights requested: no BasicConstraints with CA:true, no KeyUsage keyCertSign or
  cRLSign. Other requested extensions are ignored: the platform sets the certificate's
  extensions itself (``cloud.pki.issuance``).
"""

from __future__ import annotations

import dataclasses

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from cloud.pki import CsrRejectedError

MAX_CSR_BYTES = 16_384
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192  # past this a key only costs the broker time at every handshake
MAX_ATTRIBUTE_LENGTH = 64  # RFC 5280's upper bound for CN, O and OU

# Subject attributes a device's request may carry besides its CN (each at most once).
ACCEPTED_ATTRIBUTES = {
    NameOID.COMMON_NAME: "CN",
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.SERIAL_NUMBER: "serialNumber",
}
ACCEPTED_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The outcome of ``judge``: the parsed request when accepted, else the reason."""

    request: x509.CertificateSigningRequest | None
    reason: str | None = None

    @property
    def accepted(self) -> bool:
        """True when the request may be signed."""
        return self.request is not None


def judge(csr_pem: str | bytes, device_id: str) -> Verdict:
    """Whether ``csr_pem`` may be signed for ``device_id``, and if not, why."""
    try:
        return Verdict(accept(csr_pem, device_id))
    except CsrRejectedError as exc:
        return Verdict(None, exc.reason)


def accept(csr_pem: str | bytes, device_id: str) -> x509.CertificateSigningRequest:
    """The parsed request, when it may be signed for ``device_id``; CsrRejectedError naming
    what is wrong otherwise."""
    data = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
    if len(data) > MAX_CSR_BYTES:
        raise CsrRejectedError(f"the CSR is larger than {MAX_CSR_BYTES} bytes")
    if b"-----BEGIN" not in data:
        raise CsrRejectedError("the CSR is not PEM-encoded (-----BEGIN CERTIFICATE REQUEST-----)")
    try:
        request = x509.load_pem_x509_csr(data)
    except ValueError as exc:
        raise CsrRejectedError(f"the CSR cannot be read as a PKCS#10 request: {exc}") from exc
    _check_key(request)
    _check_signature(request)
    _check_subject(request, device_id)
    _check_extensions(request)
    return request


def _check_signature(request: x509.CertificateSigningRequest) -> None:
    try:
        valid = request.is_signature_valid
        algorithm = request.signature_hash_algorithm
    except Exception as exc:  # an algorithm the library cannot verify: no proof of possession
        raise CsrRejectedError(f"the CSR's signature cannot be verified: {exc}") from exc
    if not valid:
        raise CsrRejectedError(
            "the CSR's signature is not valid: it was not signed by the key it carries, or "
            "it was changed after signing"
        )
    if not isinstance(algorithm, ACCEPTED_HASHES):
        name = algorithm.name if algorithm is not None else "no hash"
        raise CsrRejectedError(f"the CSR is signed with {name}; SHA-256 or stronger is needed")


def _check_key(request: x509.CertificateSigningRequest) -> None:
    try:
        key = request.public_key()
    except Exception as exc:  # an unsupported or broken key
        raise CsrRejectedError(f"the CSR's public key cannot be read: {exc}") from exc
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise CsrRejectedError(
                f"the CSR's key is on the curve {key.curve.name}; only P-256 (secp256r1) "
                "is accepted"
            )
        return
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise CsrRejectedError(
                f"the CSR's key is RSA of {key.key_size} bits; at least {MIN_RSA_BITS} bits "
                "are needed"
            )
        if key.key_size > MAX_RSA_BITS:
            raise CsrRejectedError(
                f"the CSR's key is RSA of {key.key_size} bits; at most {MAX_RSA_BITS} bits"
            )
        return
    raise CsrRejectedError(
        f"the CSR's key is {type(key).__name__.removesuffix('PublicKey') or 'of a kind'} "
        "and not accepted: EC P-256 or RSA of at least 2048 bits"
    )


def _check_subject(request: x509.CertificateSigningRequest, device_id: str) -> None:
    seen: set[str] = set()
    for rdn in request.subject.rdns:
        if len(rdn) != 1:
            raise CsrRejectedError("the CSR's subject has a multi-valued name component")
        for attribute in rdn:
            label = ACCEPTED_ATTRIBUTES.get(attribute.oid)
            if label is None:
                known = getattr(attribute.oid, "_name", "unknown")
                accepted = ", ".join(ACCEPTED_ATTRIBUTES.values())
                raise CsrRejectedError(
                    f"the CSR's subject has the attribute {attribute.oid.dotted_string} "
                    f"({known}); only {accepted} are accepted"
                )
            if label in seen:
                raise CsrRejectedError(f"the CSR's subject names {label} more than once")
            seen.add(label)
            value = attribute.value
            if not isinstance(value, str) or not value:
                raise CsrRejectedError(f"the CSR's subject {label} is empty")
            if len(value) > MAX_ATTRIBUTE_LENGTH:
                raise CsrRejectedError(
                    f"the CSR's subject {label} is longer than {MAX_ATTRIBUTE_LENGTH} characters"
                )
            if not value.isprintable():
                raise CsrRejectedError(f"the CSR's subject {label} holds control characters")
    names = request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise CsrRejectedError(f"the CSR's subject has no CN; it must be the device id {device_id}")
    if names[0].value != device_id:
        raise CsrRejectedError(
            f"the CSR's CN is {str(names[0].value)!r}, not the device id {device_id!r} it is "
            "enrolled as"
        )


def _check_extensions(request: x509.CertificateSigningRequest) -> None:
    try:
        extensions = list(request.extensions)
    except Exception as exc:  # malformed or duplicated extensions
        raise CsrRejectedError(f"the CSR's requested extensions cannot be read: {exc}") from exc
    for extension in extensions:
        value = extension.value
        if isinstance(value, x509.BasicConstraints) and value.ca:
            raise CsrRejectedError(
                "the CSR asks to be a CA (BasicConstraints CA:true); devices get end-entity "
                "certificates"
            )
        if isinstance(value, x509.KeyUsage) and (value.key_cert_sign or value.crl_sign):
            raise CsrRejectedError(
                "the CSR asks for the CA key usages keyCertSign or cRLSign; devices get "
                "digitalSignature only"
            )
