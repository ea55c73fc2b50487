"""The mail backends: the SMTP backend against a real SMTP server (aiosmtpd: STARTTLS, implicit
TLS, plain, AUTH) and the console backend pass the same contract; SMTP failures are
MailDeliveryError, never a silent downgrade."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from cloud.mail import Mail, MailAddressError, MailDeliveryError, Mailer
from cloud.mail.backends import open_mailer
from cloud.mail.console import ConsoleMailer
from cloud.mail.smtp import SmtpMailer
from cloud.settings import Settings, SettingsError
from tests.services.amqtt_broker import free_port
from tests.services.smtp import SmtpServer, body

FROM = "Ampfleet Invitations <invite@ampfleet.test>"


@dataclasses.dataclass
class Backend:
    """A mailer and what it delivered (the server's mailbox, or the console's outbox)."""

    mailer: Mailer
    delivered: Callable[[], list[EmailMessage]]


def smtp_mailer(server: SmtpServer, **overrides: object) -> SmtpMailer:
    """An SMTP backend pointed at ``server`` (its own security, login and CA)."""
    options: dict[str, object] = {
        "from_address": FROM,
        "security": server.security,
        "username": server.login[0] if server.login else "",
        "password": server.login[1] if server.login else "",
        "timeout": 20.0,
        "ca_file": str(server.ca_file),
        **overrides,
    }
    return SmtpMailer("localhost", server.port, **options)  # type: ignore[arg-type]


@pytest.fixture(params=["smtp", "console"])
def backend(request: pytest.FixtureRequest, smtp_server: SmtpServer) -> Backend:
    """Each backend in turn; the SMTP one through the session's STARTTLS + AUTH server."""
    if request.param == "console":
        console = ConsoleMailer(FROM)
        return Backend(console, lambda: list(console.outbox))
    seen = len(smtp_server.delivered)
    return Backend(
        smtp_mailer(smtp_server), lambda: [d.message for d in smtp_server.delivered[seen:]]
    )


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SmtpServer]:
    """A server of its own, shaped by the test's ``security``/``login`` parameters."""
    security, login = request.param
    with SmtpServer(tmp_path, security=security, login=login) as started:
        yield started


def test_a_message_arrives_whole_with_its_headers(backend: Backend) -> None:
    link = "https://api.example.test/api/v1/invitations/" + "a" * 32 + "/accept?secret=" + "Z" * 43
    text = f"Grüße, Jürgen — accept here:\n\n{link}\n"
    message_id = backend.mailer.send(
        Mail(to=("guest@example.test",), subject="Ladestation für Gäste", text=text)
    )
    (message,) = backend.delivered()
    assert message["Subject"] == "Ladestation für Gäste"
    assert message["To"] == "guest@example.test"
    assert message["From"].addresses[0].addr_spec == "invite@ampfleet.test"
    assert message["From"].addresses[0].display_name == "Ampfleet Invitations"
    assert message["Message-ID"] == message_id and message_id.endswith("@ampfleet.test>")
    assert message["Date"] is not None and message["Auto-Submitted"] == "auto-generated"
    # Long lines and non-ASCII survive the transfer encoding: the link is usable as sent.
    assert body(message) == text


@pytest.mark.parametrize("control", ["\x1d", "\x85", "\x0b", "\u2028", "\u2029", "\x7f"])
def test_control_characters_in_a_subject_are_sent_as_spaces(backend: Backend, control: str) -> None:
    backend.mailer.send(Mail(to=("a@example.test",), subject=f"Garage{control}left", text="x"))
    (message,) = backend.delivered()
    assert message["Subject"] == "Garage left"


def test_several_recipients_get_one_message(backend: Backend) -> None:
    backend.mailer.send(Mail(to=("a@example.test", "b@example.test"), subject="Hi", text="x"))
    (message,) = backend.delivered()
    assert message["To"] == "a@example.test, b@example.test"


@pytest.mark.parametrize(
    ("mail", "named"),
    [
        (Mail(to=("a@example.test\r\nBcc: evil@example.test",), subject="s", text="t"), "to"),
        (Mail(to=("Someone <a@example.test>",), subject="s", text="t"), "to"),
        (Mail(to=("a@example.test, b@example.test",), subject="s", text="t"), "to"),
        (Mail(to=("no-at-sign",), subject="s", text="t"), "to"),
        (Mail(to=(), subject="s", text="t"), "to"),
        (Mail(to=("a@example.test",), subject="s\nBcc: evil@example.test", text="t"), "subject"),
    ],
)
def test_unsafe_addresses_and_headers_are_refused_before_sending(
    backend: Backend, mail: Mail, named: str
) -> None:
    with pytest.raises(MailAddressError, match=named):
        backend.mailer.send(mail)
    assert backend.delivered() == []


@pytest.mark.parametrize("bad", ["", "two@a.test, three@a.test", "x@a.test\nBcc: y@a.test"])
@pytest.mark.parametrize(
    "make", [ConsoleMailer, lambda f: SmtpMailer("localhost", 25, from_address=f)]
)
def test_a_bad_from_address_is_refused_at_start(bad: str, make: Callable[[str], Mailer]) -> None:
    with pytest.raises(MailAddressError, match="from"):
        make(bad)


def test_the_smtp_backend_authenticates_over_starttls(smtp_server: SmtpServer) -> None:
    smtp_mailer(smtp_server).send(Mail(to=("tls@example.test",), subject="s", text="t"))
    delivered = smtp_server.wait_for(lambda d: "tls@example.test" in d.rcpt_tos)
    assert delivered.tls and delivered.authenticated_as == "ampfleet"
    assert delivered.mail_from == "invite@ampfleet.test"


@pytest.mark.parametrize(
    "server", [("ssl", None), ("none", None)], indirect=True, ids=["ssl", "plain"]
)
def test_implicit_tls_and_plain_servers(server: SmtpServer) -> None:
    smtp_mailer(server).send(Mail(to=("x@example.test",), subject="s", text="t"))
    delivered = server.wait_for(lambda d: "x@example.test" in d.rcpt_tos)
    assert delivered.tls is (server.security == "ssl")


@pytest.mark.parametrize("server", [("none", None)], indirect=True)
def test_starttls_is_never_downgraded_to_plain_text(server: SmtpServer) -> None:
    with pytest.raises(MailDeliveryError, match="STARTTLS"):
        smtp_mailer(server, security="starttls").send(
            Mail(to=("x@example.test",), subject="s", text="t")
        )
    assert server.delivered == []


def test_an_untrusted_certificate_is_refused(smtp_server: SmtpServer) -> None:
    # No ca_file: the system's CAs do not know the test server's self-signed certificate.
    with pytest.raises(MailDeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
        smtp_mailer(smtp_server, ca_file="").send(
            Mail(to=("untrusted@example.test",), subject="s", text="t")
        )
    assert smtp_server.to("untrusted@example.test") == []


def test_wrong_credentials_are_a_delivery_error(smtp_server: SmtpServer) -> None:
    with pytest.raises(MailDeliveryError, match="535"):
        smtp_mailer(smtp_server, password="wrong").send(
            Mail(to=("wrongpw@example.test",), subject="s", text="t")
        )
    assert smtp_server.to("wrongpw@example.test") == []


def test_a_refused_recipient_is_named(smtp_server: SmtpServer) -> None:
    mailer = smtp_mailer(smtp_server)
    with pytest.raises(MailDeliveryError, match=re.escape("refuse-me@example.test")):
        mailer.send(Mail(to=("refuse-me@example.test",), subject="s", text="t"))
    # Some recipients refused: an error too, naming them, although the others got it.
    with pytest.raises(MailDeliveryError, match=re.escape("refuse-you@example.test")):
        mailer.send(
            Mail(to=("refuse-you@example.test", "kept@example.test"), subject="s", text="t")
        )
    assert len(smtp_server.to("kept@example.test")) == 1


def test_nothing_listening_is_a_delivery_error() -> None:
    mailer = SmtpMailer("127.0.0.1", free_port(), from_address=FROM, security="none", timeout=20)
    with pytest.raises(MailDeliveryError, match=re.escape("SMTP 127.0.0.1")):
        mailer.send(Mail(to=("x@example.test",), subject="s", text="t"))


def test_the_console_backend_logs_the_whole_message(caplog: pytest.LogCaptureFixture) -> None:
    mailer = ConsoleMailer(FROM, keep=2)
    with caplog.at_level(logging.INFO, logger="cloud.mail.console"):
        for n in range(3):
            mailer.send(Mail(to=("x@example.test",), subject=f"n{n}", text=f"https://link/{n}"))
    assert "https://link/2" in caplog.text and "AMPFLEET_SMTP_HOST" in caplog.text
    assert [m["Subject"] for m in mailer.outbox] == ["n1", "n2"]  # bounded


def test_the_backend_follows_the_settings(tmp_path: Path) -> None:
    embedded = Settings.load(environ={})
    assert embedded.mail_backend == "console"
    assert isinstance(open_mailer(embedded), ConsoleMailer)
    production = Settings.load(
        environ={"AMPFLEET_SMTP_HOST": "smtp.example.test", "AMPFLEET_SMTP_SECURITY": "ssl"}
    )
    assert production.mail_backend == "smtp" and production.smtp_port == 465
    mailer = open_mailer(production)
    assert isinstance(mailer, SmtpMailer) and mailer.host == "smtp.example.test"
    assert Settings.load(environ={"AMPFLEET_SMTP_HOST": "h"}).smtp_port == 587
    forced = Settings.load(environ={"AMPFLEET_SMTP_HOST": "h", "AMPFLEET_MAIL_BACKEND": "console"})
    assert isinstance(open_mailer(forced), ConsoleMailer)
    with pytest.raises(SettingsError, match="AMPFLEET_SMTP_HOST"):
        Settings.load(environ={"AMPFLEET_MAIL_BACKEND": "smtp"})
    with pytest.raises(SettingsError, match="AMPFLEET_SMTP_SECURITY"):
        Settings.load(environ={"AMPFLEET_SMTP_SECURITY": "tls"})
