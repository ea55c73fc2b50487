"""The device's certificate, I/O-free: when it expires, whose key it certifies, and when to ask
for the next one (docs/device-contract.md 4.10).

MicroPython has no X.509 parser and no public-key crypto, but renewal needs only two facts of
a certificate, both plain DER: ``notAfter`` (when to ask) and the SubjectPublicKeyInfo (is the
certificate that came back for the key we hold, or for the new key we asked for?). A CSR's
SubjectPublicKeyInfo is read the same way. A small DER walker does both; nothing is verified
here (the broker's TLS handshake does that at the next connection).

``Renewal`` decides when to ask: once the clock is set, the link is up and expiry is at most
``window_ms`` away; at most once per connection; not again for ``retry_ms`` after a refusal
or an answer that changed nothing.

MicroPython: imports only ``binascii``; no typing at run time; annotations are strings.

Exceptions::

    ValueError
     +-- CertificateError   a PEM or DER that cannot be read
"""

import binascii

DAY_MS = 86400000
RENEW_BEFORE_MS = 30 * DAY_MS  # the cloud's AMPFLEET_PKI_RENEW_BEFORE_DAYS default
RETRY_MS = DAY_MS  # after a refusal, or an answer that did not move the expiry

# NVS records (firmware/tools/station.py writes the first two at the factory).
NVS_CERT = "client_cert"  # the device certificate and its issuers, PEM
NVS_KEY = "client_key"  # the private key, PEM, when the station or the board made one
NVS_NEXT_KEY = "cert_next_key"  # a new key asked for and not yet certified
NVS_NEXT_CSR = "cert_next_csr"  # its CSR: sent again until an answer comes
NVS_RETRY = "cert_retry"  # ms (decimal) before which not to ask again: a refusal survives a reboot


class CertificateError(ValueError):
    """A certificate or CSR that cannot be read."""


def _der(pem: "bytes | str", label: str) -> bytes:
    """The DER of the first ``-----BEGIN <label>-----`` block of ``pem``."""
    text = pem.decode() if isinstance(pem, (bytes, bytearray)) else pem
    head = "-----BEGIN " + label + "-----"
    start = text.find(head)
    if start < 0:
        raise CertificateError("no " + label + " in PEM")
    start += len(head)
    end = text.find("-----END " + label + "-----", start)
    if end < 0:
        raise CertificateError("unterminated " + label)
    body = "".join(text[start:end].split())
    try:
        return binascii.a2b_base64(body)
    except (ValueError, binascii.Error):
        raise CertificateError("bad base64 in " + label) from None


def _item(der: bytes, at: int) -> "tuple[int, int, int]":
    """(tag, start of content, end of content) of the DER item at ``at``."""
    if at + 2 > len(der):
        raise CertificateError("truncated DER")
    tag = der[at]
    length = der[at + 1]
    at += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or at + count > len(der):
            raise CertificateError("bad DER length")
        length = 0
        for _ in range(count):
            length = (length << 8) | der[at]
            at += 1
    if at + length > len(der):
        raise CertificateError("truncated DER")
    return tag, at, at + length


def _children(der: bytes, start: int, end: int) -> "list[tuple[int, int, int, int]]":
    """(tag, item start, content start, content end) of each item inside a constructed one."""
    found = []
    at = start
    while at < end:
        tag, body, after = _item(der, at)
        found.append((tag, at, body, after))
        at = after
    return found


def _tbs(der: bytes) -> "list[tuple[int, int, int, int]]":
    """The fields of a certificate's TBSCertificate (or a CSR's CertificationRequestInfo)."""
    tag, body, end = _item(der, 0)
    if tag != 0x30:
        raise CertificateError("not a DER SEQUENCE")
    fields = _children(der, body, end)
    if not fields or fields[0][0] != 0x30:
        raise CertificateError("no TBS SEQUENCE")
    return _children(der, fields[0][2], fields[0][3])


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _time_ms(tag: int, text: bytes) -> int:
    """A UTCTime (0x17, YYMMDDHHMMSSZ) or GeneralizedTime (0x18, YYYYMMDDHHMMSSZ) in ms."""
    try:
        value = text.decode()
        if tag == 0x17 and len(value) == 13:
            year = int(value[0:2])
            year += 2000 if year < 50 else 1900  # RFC 5280 4.1.2.5.1
            rest = value[2:]
        elif tag == 0x18 and len(value) == 15:
            year = int(value[0:4])
            rest = value[4:]
        else:
            raise CertificateError("unsupported time format")
        if rest[-1] != "Z":
            raise CertificateError("time not in UTC")
        month, day = int(rest[0:2]), int(rest[2:4])
        hour, minute, second = int(rest[4:6]), int(rest[6:8]), int(rest[8:10])
    except (ValueError, IndexError, UnicodeError):
        raise CertificateError("bad time") from None
    days = _days_from_civil(year, month, day)
    return ((days * 24 + hour) * 60 + minute) * 60000 + second * 1000


def _tbs_fields(pem: "bytes | str") -> "tuple[bytes, list[tuple[int, int, int, int]]]":
    der = _der(pem, "CERTIFICATE")
    fields = _tbs(der)
    if fields and fields[0][0] == 0xA0:  # [0] EXPLICIT version
        fields = fields[1:]
    # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
    if len(fields) < 6:
        raise CertificateError("short TBSCertificate")
    return der, fields


def not_after_ms(pem: "bytes | str | None") -> "int | None":
    """When the (first) certificate of ``pem`` expires, ms since the epoch; None for None or
    an empty record (a board without a certificate), CertificateError when unreadable."""
    if not pem:
        return None
    der, fields = _tbs_fields(pem)
    validity = _children(der, fields[3][2], fields[3][3])
    if len(validity) != 2:
        raise CertificateError("bad validity")
    tag, _, start, end = validity[1]
    return _time_ms(tag, der[start:end])


def certificate_key(pem: "bytes | str") -> bytes:
    """The SubjectPublicKeyInfo (DER) of the first certificate of ``pem``."""
    der, fields = _tbs_fields(pem)
    _, at, _, end = fields[5]
    return der[at:end]


def request_key(pem: "bytes | str") -> bytes:
    """The SubjectPublicKeyInfo (DER) of a CSR (version, subject, subjectPKInfo)."""
    der = _der(pem, "CERTIFICATE REQUEST")
    fields = _tbs(der)
    if len(fields) < 3:
        raise CertificateError("short CertificationRequestInfo")
    _, at, _, end = fields[2]
    return der[at:end]


class Renewal:
    """When to ask for the next certificate; all times are device-clock ms."""

    __slots__ = ("asked_on", "not_after", "retry_at", "retry_ms", "window_ms")

    def __init__(
        self,
        not_after: "int | None",
        window_ms: int = RENEW_BEFORE_MS,
        retry_ms: int = RETRY_MS,
    ) -> None:
        self.not_after = not_after  # None: no certificate, nothing to renew
        self.window_ms = window_ms
        self.retry_ms = retry_ms
        self.asked_on = -1  # the connection the last request went out on
        self.retry_at = 0

    def due(self, now_ms: int, connection: int) -> bool:
        """Whether to ask now, on connection number ``connection`` (the caller knows the link
        is up and the clock set)."""
        return (
            self.not_after is not None
            and now_ms >= self.not_after - self.window_ms
            and connection != self.asked_on
            and now_ms >= self.retry_at
        )

    def asked(self, connection: int) -> None:
        """A request went out on ``connection``: not again on it."""
        self.asked_on = connection

    def refused(self, now_ms: int) -> None:
        """The cloud said no: wait ``retry_ms`` before asking again."""
        self.retry_at = now_ms + self.retry_ms

    def installed(self, not_after: int, now_ms: int) -> None:
        """A certificate was installed; one that does not expire later changed nothing (the
        cloud's window is narrower than ours): wait before asking again."""
        if self.not_after is not None and not_after <= self.not_after:
            self.retry_at = now_ms + self.retry_ms
        self.not_after = not_after
