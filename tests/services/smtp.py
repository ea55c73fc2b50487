"""A real SMTP server for tests: aiosmtpd on a free 127.0.0.1 port, in its own thread and event
loop, collecting what it is sent::

    with SmtpServer(tmp_path, security="starttls", login=("user", "pw")) as server:
        server.port, server.ca_file          # where it listens; the CA its certificate is from
        server.wait_for(lambda m: ...)       # the first delivered message that matches

``security``: ``none`` (plain SMTP), ``starttls`` (offers and requires STARTTLS) or ``ssl``
(implicit TLS). With ``login``, AUTH is required; aiosmtpd offers it after STARTTLS only (it
does not count an implicit-TLS socket as TLS), so ``ssl`` servers take no ``login``. Recipients
starting with ``refuse-`` are refused with 550, like a relay that knows no such mailbox.

The certificate is self-signed for ``localhost`` and 127.0.0.1, made per server: clients trust
it through ``ca_file`` (the ``smtp_tls_ca_file`` setting), never by turning verification off.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email
import email.policy
import ipaddress
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask

from cloud.mail.backends import EXTENSION, open_mailer
from cloud.settings import Settings
from tests.services.amqtt_broker import free_port

WAIT = 20.0  # seconds: generous, tests must pass under heavy load


@dataclasses.dataclass(frozen=True)
class Delivered:
    """One message as the server received it: the envelope and the parsed message."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    authenticated_as: str | None
    tls: bool


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1 (its own CA) and its key: (cert, key) paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.startswith("refuse-"):
            return "550 5.1.1 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        data = session.auth_data
        login = data.login.decode() if isinstance(data, LoginPassword) else None
        self.server._deliver(
            Delivered(
                str(envelope.mail_from),
                tuple(envelope.rcpt_tos),
                message,
                login,
                session.ssl is not None
                or server.transport.get_extra_info("ssl_object") is not None,
            )
        )
        return "250 2.0.0 accepted"


class SmtpServer:
    """aiosmtpd in a thread; ``delivered`` collects every accepted message."""

    def __init__(
        self,
        directory: Path,
        *,
        security: str = "none",
        login: tuple[str, str] | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.security = security
        self.login = login
        self.ca_file, self._key_file = self_signed(directory / f"smtp-{self.port}")
        self.delivered: list[Delivered] = []
        self._changed = threading.Condition()
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(self.ca_file, self._key_file)
        kwargs: dict[str, Any] = {"ready_timeout": WAIT, "server_hostname": "localhost"}
        if security == "starttls":
            kwargs.update(tls_context=tls, require_starttls=True)
        elif security == "ssl":
            kwargs.update(ssl_context=tls)
        if login is not None:
            kwargs.update(authenticator=self._authenticate, auth_required=True)
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port, **kwargs)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and self.login is not None
            and (data.login.decode(), data.password.decode()) == self.login
        )
        # handled=False: aiosmtpd then answers 535 itself (True would leave the client waiting).
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    def _deliver(self, delivered: Delivered) -> None:
        with self._changed:
            self.delivered.append(delivered)
            self._changed.notify_all()

    def start(self) -> SmtpServer:
        """Listen; returns once the server answers."""
        self._controller.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        self._controller.stop()

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def wait_for(self, matches: Callable[[Delivered], bool], timeout: float = WAIT) -> Delivered:
        """The first delivered message that ``matches``, waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((d for d in self.delivered if matches(d)), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                assert left > 0, f"no matching message in {timeout} s: {self.delivered!r}"
                self._changed.wait(left)

    def to(self, address: str) -> list[Delivered]:
        """Every message delivered to ``address`` so far."""
        with self._changed:
            return [d for d in self.delivered if address in d.rcpt_tos]


def body(message: EmailMessage) -> str:
    """The text of a message (decoded from its transfer encoding, with SMTP's CRLF as LF)."""
    part = message.get_body(("plain",))
    assert part is not None and isinstance(part, EmailMessage)
    return str(part.get_content()).replace("\r\n", "\n")


LOGIN = ("ampfleet", "smtp-secret")


@pytest.fixture(scope="session")
def smtp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpServer]:
    """One real SMTP server (STARTTLS required, AUTH required) for the session; tests tell
    their messages apart by recipient."""
    with SmtpServer(tmp_path_factory.mktemp("smtp"), security="starttls", login=LOGIN) as server:
        yield server


def mail_settings(server: SmtpServer) -> Settings:
    """Settings whose mail goes to ``server`` (SMTP backend, its security, login and CA)."""
    return Settings.load(
        {
            "smtp_host": "localhost",
            "smtp_port": server.port,
            "smtp_security": server.security,
            "smtp_username": server.login[0] if server.login else "",
            "smtp_password": server.login[1] if server.login else "",
            "smtp_tls_ca_file": str(server.ca_file),
            "smtp_timeout": int(WAIT),
            "mail_from": "ampfleet <no-reply@ampfleet.test>",
        },
        environ={},
    )


@pytest.fixture
def api_smtp(app: Flask, smtp_server: SmtpServer) -> Iterator[SmtpServer]:
    """For one test, the API's mail goes through ``smtp_server`` (the SMTP backend, chosen by
    the settings as in production)."""
    previous = app.extensions[EXTENSION]
    app.extensions[EXTENSION] = open_mailer(mail_settings(smtp_server))
    yield smtp_server
    app.extensions[EXTENSION] = previous
