"""Building the MIME message both backends send: checked addresses, Date, Message-ID, UTF-8."""

from __future__ import annotations

import email.utils
from email.headerregistry import Address
from email.message import EmailMessage

from cloud.mail import Mail, MailAddressError, header_text

MAX_SUBJECT = 998 - len("Subject: ")  # RFC 5322 section 2.1.1: a line is at most 998 octets


def check_address(address: str, field: str = "address") -> str:
    """``address`` if it is one bare addr-spec (``user@host``), else MailAddressError."""
    if not address or "\r" in address or "\n" in address:
        raise MailAddressError(f"{field}: empty, or has a line break: {address!r}")
    name, spec = email.utils.parseaddr(address)
    if spec != address or name or "@" not in spec or spec.startswith("@") or spec.endswith("@"):
        raise MailAddressError(f"{field}: not a single user@host address: {address!r}")
    return address


def sender(from_address: str) -> Address:
    """The From header's address: ``Name <user@host>`` or a bare ``user@host``."""
    if "\r" in from_address or "\n" in from_address:
        raise MailAddressError(f"from: has a line break: {from_address!r}")
    name, spec = email.utils.parseaddr(from_address)
    check_address(spec, "from")
    # parseaddr keeps the first of several addresses: only one, as given, may come back.
    if from_address.strip() not in (spec, f"{name} <{spec}>", f'"{name}" <{spec}>'):
        raise MailAddressError(f"from: not one address: {from_address!r}")
    user, _, domain = spec.rpartition("@")
    return Address(display_name=name, username=user, domain=domain)


def build_message(mail: Mail, from_address: str) -> EmailMessage:
    """The message for ``mail``: refused (MailAddressError) before any connection if unsafe."""
    if not mail.to:
        raise MailAddressError("to: no recipient")
    recipients = [check_address(to, "to") for to in mail.to]
    if "\r" in mail.subject or "\n" in mail.subject or len(mail.subject) > MAX_SUBJECT:
        raise MailAddressError("subject: has a line break or is too long")
    subject = header_text(mail.subject)  # other controls, which also break the header
    source = sender(from_address)
    message = EmailMessage()
    message["From"] = source
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(usegmt=True)
    message["Message-ID"] = email.utils.make_msgid(domain=source.domain)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to us
    message.set_content(mail.text)  # utf-8, quoted-printable or base64 as needed
    return message
