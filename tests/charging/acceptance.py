"""The rig of issue 7's end-to-end tests: the API, the config and charging workers on a real
broker (the ``link`` fixture: embedded amqtt and Mosquitto), real mail through a local SMTP
server, an organization tariff, and the owner of a charger invited by e-mail as a user would be.
The chargers themselves are added by the tests: a simulated native charger (the fleet
simulator running the firmware core over MQTT) or OCPP charge points through the bridge."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import queue
import secrets
from collections.abc import Callable, Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from cloud.access import outbox
from cloud.commands.publisher import MqttCommandPublisher
from cloud.configuration.publisher import MqttPublisher
from cloud.db import get_database
from cloud.devices.status_worker import StatusWorker
from cloud.mail.backends import EXTENSION as MAILER
from cloud.mail.backends import open_mailer
from firmware.core import contract
from tests.charging import test_worker
from tests.charging.test_invitations import accept, anonymous, invite, mailed_link
from tests.charging.test_worker import running_charging_worker
from tests.helpers import PASSWORD, Client
from tests.link import Link, running_config_worker, running_worker
from tests.mqtt import Mqtt
from tests.services.smtp import SmtpServer, mail_settings

TIMEOUT = 30.0
PRICE = "12.5000"  # per kWh: the few Wh of a short simulated session still cost whole cents
PUBLISHERS = {
    "ampfleet.command_publisher": MqttCommandPublisher,
    "ampfleet.config_publisher": MqttPublisher,
}


# The one polling helper of the charging tests, with room for a charger's reconnect back-off.
wait_for = functools.partial(test_worker.wait_for, timeout=TIMEOUT)


def expected_cost(energy_wh: float, price: str = PRICE) -> int:
    """Whole cents of ``energy_wh`` at one price (the tariff has no windows)."""
    cents = Decimal(repr(energy_wh)) / 1000 * Decimal(price) * 100
    return int(cents.quantize(Decimal(1), rounding=ROUND_HALF_UP))


class Events:
    """Every event the chargers of one test published, as the cloud's service account sees
    them (a subscriber of its own, so the checks compare the records with what was said)."""

    def __init__(self, observer: Mqtt) -> None:
        self.observer = observer
        self.seen: list[tuple[str, contract.Event]] = []
        assert not observer.subscribe(contract.topic_filter(contract.EVENTS)).is_failure

    def _drain(self) -> None:
        while True:
            try:
                message = self.observer.messages.get_nowait()
            except queue.Empty:
                return
            device_id, _ = contract.parse_topic(message.topic)
            self.seen.append((device_id, contract.decode_event(message.payload, None)))

    def of(self, device_id: str, kind: str) -> list[contract.Event]:
        """The events of one type one charger published so far."""
        self._drain()
        return [e for d, e in self.seen if d == device_id and e.type == kind]

    def wait(self, device_id: str, kind: str, count: int = 1) -> list[contract.Event]:
        """The events of one type, once there are at least ``count`` of them."""
        found: list[contract.Event] = wait_for(
            lambda: len(self.of(device_id, kind)) >= count and self.of(device_id, kind),
            f"{count} {kind} of {device_id}",
        )
        return found


@dataclasses.dataclass
class Rig:
    """The platform under test and the people who use it."""

    link: Link
    smtp: SmtpServer
    events: Events
    tariff: dict[str, Any]

    @property
    def admin(self) -> Client:
        return self.link.tenant.admin

    def owner_of(self, device_id: str) -> tuple[dict[str, Any], Client]:
        """A new user invited by mail as the charger's owner, signed in: (user, client)."""
        return self.invited(self.admin, device_id, "owner")

    def invited(
        self, inviter: Client, device_id: str, level: str, **window: Any
    ) -> tuple[dict[str, Any], Client]:
        """A new address invited by ``inviter``, who accepts with a new account."""
        email = f"{level}-{secrets.token_hex(5)}@{self.link.tenant.slug}.test"
        invitation = invite(inviter, device_id, email, level, **window)
        invitation_id, secret, _ = mailed_link(self.smtp, email)
        assert invitation_id == invitation["id"]
        done = accept(anonymous(self.admin), invitation_id, secret=secret, password=PASSWORD)
        assert done.status_code == 200, done.get_json()
        client = anonymous(self.admin).signed_in(email, PASSWORD)
        me = client.get("/auth/me")
        assert me.status_code == 200, me.get_json()
        return me.get_json(), client

    def card(self, user_id: int, uid: str | None = None) -> dict[str, Any]:
        """An enabled card registered to ``user_id`` by the organization's admin."""
        uid = uid or secrets.token_hex(4).upper()
        body = {"uid": uid, "user_id": user_id, "organization_id": self.link.tenant.id}
        created = self.admin.created("/cards", body)
        self.lists_published()
        return created

    def lists_published(self) -> None:
        """Wait until the charging worker has published the lists the API asked for (the API
        returns before they are on the broker)."""

        def done() -> bool:
            with get_database(self.link.app).transaction() as session:
                return outbox.pending(session) == 0

        wait_for(done, "the requested authorization lists published")

    def online(self, device_id: str) -> bool:
        """Whether the cloud sees the charger online."""
        response = self.admin.get(f"/devices/{device_id}/status")
        assert response.status_code == 200, response.get_json()
        return bool(response.get_json()["online"])

    def session(self, client: Client, session_id: str) -> dict[str, Any]:
        """One session through the API."""
        response = client.get(f"/sessions/{session_id}")
        assert response.status_code == 200, response.get_json()
        body: dict[str, Any] = response.get_json()
        return body

    def sessions(self, device_id: str) -> list[dict[str, Any]]:
        """Every session of a charger, through the API (the admin sees them all)."""
        response = self.admin.get(f"/devices/{device_id}/sessions?page_size=100")
        assert response.status_code == 200, response.get_json()
        found: list[dict[str, Any]] = response.get_json()
        return found

    def wait_session(
        self, device_id: str, condition: Callable[[dict[str, Any]], bool], what: str
    ) -> dict[str, Any]:
        """The charger's first session that meets ``condition``, once there is one."""
        found: dict[str, Any] = wait_for(
            lambda: next((s for s in self.sessions(device_id) if condition(s)), None), what
        )
        return found

    def completed(self, device_id: str, charger_session_id: str) -> dict[str, Any]:
        """The record of one session of the charger, once it is complete."""
        return self.wait_session(
            device_id,
            lambda s: s["charger_session_id"] == charger_session_id and s["state"] == "completed",
            f"session {charger_session_id} of {device_id} completed",
        )


@contextlib.contextmanager
def rig(link: Link, smtp: SmtpServer, data_dir: Path) -> Iterator[Rig]:
    """The platform of one test: publishers and mail on ``link``'s broker and ``smtp``, the
    config and charging workers running, a tariff for the organization."""
    app = link.app
    saved = {key: app.extensions.get(key) for key in (*PUBLISHERS, MAILER)}
    for key, publisher in PUBLISHERS.items():
        app.extensions[key] = publisher(link.endpoint())
    app.extensions[MAILER] = open_mailer(mail_settings(smtp))
    tariff = link.tenant.admin.created(
        "/tariffs",
        {"organization_id": link.tenant.id, "name": "Flat", "price_per_kwh": PRICE},
    )
    try:
        with (
            running_worker(link, StatusWorker, "status", data_dir / "status"),
            running_config_worker(link, data_dir / "config"),
            running_charging_worker(link, data_dir / "charging"),
            link.service() as observer,
        ):
            yield Rig(link, smtp, Events(observer), tariff)
    finally:
        app.extensions.update(saved)
        link.tenant.admin.delete(f"/tariffs/{tariff['id']}")
