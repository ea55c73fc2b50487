"""Outgoing e-mail: one ``Mailer`` interface, an SMTP backend for production and a console
backend for the embedded mode, chosen by the ``mail_backend`` setting (console when no SMTP host
is set) and kept in ``app.extensions["ampfleet.mailer"]``.

Exceptions::

    MailError                  base of this package
    +-- MailAddressError       an address or header that cannot be sent (caught before any I/O)
    +-- MailDeliveryError      the server could not be reached, refused us or the recipients
"""

from __future__ import annotations

import dataclasses
import unicodedata
from typing import Protocol


class MailError(Exception):
    """Base of the mail package's errors."""


class MailAddressError(MailError):
    """An address or subject that cannot go into a message (empty, CR/LF injection, no '@')."""


class MailDeliveryError(MailError):
    """The message was not handed over: connection, TLS, authentication or recipient refused."""


@dataclasses.dataclass(frozen=True)
class Mail:
    """One plain-text message to one or more recipients."""

    to: tuple[str, ...]
    subject: str
    text: str


class Mailer(Protocol):
    """Sends mail; the SMTP and the console backend pass the same contract tests."""

    def send(self, mail: Mail) -> str:
        """Hand ``mail`` over and return its Message-ID; MailError when it cannot be."""
        ...


def header_text(text: str) -> str:
    """``text`` fit for a header: every control character (C0, DEL, C1) and the line and
    paragraph separators U+2028/U+2029, which Python's email package takes for line breaks,
    replaced by a space. For data (a charger's name) that goes into a subject."""
    return "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)
