"""The broker accounts of the cloud itself: the service account, the OCPP bridge's account and
the Mosquitto admin.

Their passwords come from settings; an empty setting means "generate one on first use and keep
it in the data directory" (mode 0600), so every process of one installation (API, workers,
embedded broker, provisioner) finds the same value without anyone choosing it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from pathlib import Path

from cloud.settings import Settings

# File names in the data directory (the names of secrets, not secrets).
SERVICE_PASSWORD_FILE = "broker-service-password"  # noqa: S105
ADMIN_PASSWORD_FILE = "broker-admin-password"  # noqa: S105
BRIDGE_PASSWORD_FILE = "broker-bridge-password"  # noqa: S105


def service_password(settings: Settings) -> str:
    """The service account's password (``broker_service_password`` or the generated one)."""
    configured = settings.broker_service_password
    return configured or load_or_create_secret(settings.data_path / SERVICE_PASSWORD_FILE)


def bridge_password(settings: Settings) -> str:
    """The OCPP bridge's account password (``broker_bridge_password`` or the generated one)."""
    configured = settings.broker_bridge_password
    return configured or load_or_create_secret(settings.data_path / BRIDGE_PASSWORD_FILE)


def admin_password(settings: Settings) -> str:
    """The Mosquitto dynamic-security admin's password (setting or generated)."""
    configured = settings.broker_admin_password
    return configured or load_or_create_secret(settings.data_path / ADMIN_PASSWORD_FILE)


def load_or_create_secret(path: Path) -> str:
    """The secret kept in ``path``, created (0600, 256 random bits) when missing.

    O_EXCL makes creation atomic: when two processes start at once, one writes and the other
    reads what it wrote.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path)
    secret = secrets.token_urlsafe(32)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secret + "\n")
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    return secret


def _read(path: Path) -> str:
    # The creator may still be writing: wait briefly for a complete line.
    for _ in range(50):
        text = path.read_text()
        if text.endswith("\n") and text.strip():
            return text.strip()
        time.sleep(0.01)
    raise RuntimeError(f"{path} is empty or incomplete; delete it to generate a new secret")
