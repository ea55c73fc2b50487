"""Choosing the backend from the settings, and the app's mailer."""

from __future__ import annotations

from flask import current_app

from cloud.mail import Mailer
from cloud.mail.console import ConsoleMailer
from cloud.mail.smtp import SmtpMailer
from cloud.settings import Settings

EXTENSION = "ampfleet.mailer"  # where an app keeps its mailer (tests may swap it)


def open_mailer(settings: Settings) -> Mailer:
    """The backend ``mail_backend`` names: ``smtp`` or ``console``."""
    if settings.mail_backend == "smtp":
        return SmtpMailer.from_settings(settings)
    return ConsoleMailer(settings.mail_from)


def app_mailer() -> Mailer:
    """The current app's mailer."""
    mailer: Mailer = current_app.extensions[EXTENSION]
    return mailer
