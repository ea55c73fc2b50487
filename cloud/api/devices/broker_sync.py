"""Telling the broker, after a commit, what the registry now says of a device.

The registry is the truth; the broker follows (``broker.admin.BrokerAdmin``). Every route that
changes what a device may do on the broker (credentials, certificates, approval, lifecycle)
commits first, then pushes here. When the broker cannot be reached the request still succeeds:
the failure is logged and ``ampfleet broker resync`` applies the change (the embedded broker
reads the registry itself).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import current_app

from broker.admin import BrokerAdmin, broker_admin
from broker.errors import BrokerUnavailable
from broker.registry import account_of
from cloud.db import get_database
from cloud.settings import Settings

log = logging.getLogger(__name__)


def _settings() -> Settings:
    settings: Settings = current_app.extensions["ampfleet.settings"]
    return settings


def app_broker_admin() -> BrokerAdmin:
    """The app's broker admin (chosen by ``settings.broker``), made on first use."""
    admin: BrokerAdmin | None = current_app.extensions.get("ampfleet.broker_admin")
    if admin is None:
        admin = broker_admin(_settings())
        current_app.extensions["ampfleet.broker_admin"] = admin
    return admin


def push(what: str, device_id: str, change: Callable[[BrokerAdmin], None]) -> bool:
    """Apply a committed change to the broker; False (logged) when that failed."""
    try:
        change(app_broker_admin())
    except BrokerUnavailable as exc:
        # Expected while the broker restarts: one line, no traceback.
        log.warning(
            "broker not updated after the %s of %s (%s); `ampfleet broker resync` applies it",
            what,
            device_id,
            exc,
        )
        return False
    except Exception:
        # The registry already holds the change: the request succeeds, resync catches up.
        log.exception(
            "broker not updated after the %s of %s; `ampfleet broker resync` applies it",
            what,
            device_id,
        )
        return False
    return True


def refresh_broker(what: str, device_id: str, *, kick: bool = False) -> bool:
    """Give the broker the device's account as the registry has it now
    (``BrokerAdmin.refresh_device``): after a certificate is issued or revoked, a quarantine
    put or released, an approval, a lifecycle change. ``kick`` disconnects the device too.
    False (logged) when the broker could not be told."""
    settings = _settings()

    def change(admin: BrokerAdmin) -> None:
        database = get_database(current_app)
        account = account_of(database, device_id, passwords=settings.device_passwords)
        admin.refresh_device(device_id, account, kick=kick)

    return push(what, device_id, change)
