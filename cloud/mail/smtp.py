"""The SMTP backend: one connection per message, STARTTLS or implicit TLS, optional AUTH.

A connection per message keeps the backend stateless and thread-safe under gunicorn's threads;
invitations are a few messages a day, not a newsletter. TLS is never downgraded: with
``starttls`` a server that does not offer it is an error, not a plain-text fallback.
"""

from __future__ import annotations

import logging
import smtplib
import ssl

from cloud.mail import Mail, MailDeliveryError
from cloud.mail.message import build_message, sender
from cloud.settings import Settings

log = logging.getLogger(__name__)

SECURITY = ("starttls", "ssl", "none")


class SmtpMailer:
    """Sends each message through an SMTP server (a relay, a provider's submission port)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        from_address: str,
        security: str = "starttls",
        username: str = "",
        password: str = "",
        timeout: float = 10.0,
        ca_file: str = "",
    ) -> None:
        if security not in SECURITY:
            raise ValueError(f"security must be one of {', '.join(SECURITY)}, not {security!r}")
        sender(from_address)  # refuse a bad From at start-up, not at the first invitation
        self.host, self.port, self.security = host, port, security
        self.from_address = from_address
        self.username, self.password = username, password
        self.timeout = timeout
        self.ca_file = ca_file

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpMailer:
        """The backend the ``smtp_*`` and ``mail_from`` settings describe."""
        return cls(
            settings.smtp_host,
            settings.smtp_port,
            from_address=settings.mail_from,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=settings.smtp_password,
            timeout=settings.smtp_timeout,
            ca_file=settings.smtp_tls_ca_file,
        )

    def _tls(self) -> ssl.SSLContext:
        # Certificate and host name are checked (create_default_context), against the given
        # CA bundle or the system's.
        return ssl.create_default_context(cafile=self.ca_file or None)

    def _connect(self) -> smtplib.SMTP:
        if self.security == "ssl":
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self._tls())
        smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            if self.security == "starttls":
                smtp.starttls(context=self._tls())
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(self, mail: Mail) -> str:
        """Deliver ``mail`` to the server; MailDeliveryError if any recipient is refused."""
        message = build_message(mail, self.from_address)
        where = f"{self.host}:{self.port}"
        try:
            with self._connect() as smtp:
                if self.username:
                    smtp.login(self.username, self.password)
                refused = smtp.send_message(message)
        except (smtplib.SMTPException, OSError) as exc:
            # OSError covers refused connections, timeouts and ssl.SSLError.
            raise MailDeliveryError(f"SMTP {where}: {exc}") from exc
        if refused:
            raise MailDeliveryError(f"SMTP {where} refused {', '.join(sorted(refused))}")
        log.info("mail %r sent to %d recipient(s) through %s", mail.subject, len(mail.to), where)
        return str(message["Message-ID"])
