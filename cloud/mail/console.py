"""The console backend (embedded mode): each message goes to the log instead of a server, so a
newcomer running ``ampfleet up`` without an SMTP relay still sees the invitation link."""

from __future__ import annotations

import collections
import logging
from email.message import EmailMessage

from cloud.mail import Mail
from cloud.mail.message import build_message, sender

log = logging.getLogger(__name__)


class ConsoleMailer:
    """Logs each message whole and keeps the latest ones in ``outbox`` (bounded)."""

    def __init__(self, from_address: str, keep: int = 100) -> None:
        sender(from_address)
        self.from_address = from_address
        # Bounded: a long-running embedded platform must not grow with every invitation.
        self.outbox: collections.deque[EmailMessage] = collections.deque(maxlen=keep)

    def send(self, mail: Mail) -> str:
        """Log ``mail`` (it is not sent anywhere) and keep it in ``outbox``."""
        message = build_message(mail, self.from_address)
        # Decoded, not as sent: quoted-printable would break the link a reader wants to copy.
        headers = "".join(f"{name}: {message[name]}\n" for name in ("From", "To", "Subject"))
        log.info(
            "mail not sent (no SMTP host is configured: set AMPFLEET_SMTP_HOST); it reads:\n%s\n%s",
            headers,
            mail.text,
        )
        self.outbox.append(message)
        return str(message["Message-ID"])
