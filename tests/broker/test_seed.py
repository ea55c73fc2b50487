"""Seeding Mosquitto's dynamic-security file with device accounts before its first start (a
new broker, a restore, a load test): the devices connect, and the provisioner finds nothing to
change."""

from __future__ import annotations

import json
import secrets

from broker.admin import DeviceAccount
from broker.mosquitto.config import seed_devices, write_dynsec
from firmware.core import contract
from tests.mqtt import Mqtt
from tests.services.mosquitto import Mosquitto


def test_seeded_devices_connect_and_a_resync_changes_nothing() -> None:
    accounts = [
        DeviceAccount(f"seed-{n}", f"v{n}", enabled=n != 2, password=secrets.token_urlsafe(16))
        for n in range(3)
    ]
    server = Mosquitto()  # not started: its dynamic-security file is read at start
    try:
        document = json.loads(server.dynsec_file.read_text())
        write_dynsec(server.dynsec_file, seed_devices(document, accounts))
        server.start()
        report = server.provisioner().resync(accounts)
        assert (report.created, report.updated, report.disabled) == ([], [], [])
        first, disabled = accounts[0], accounts[2]
        with Mqtt(server.host, server.port, first.device_id, first.password).connected() as device:
            device.publish(contract.topic(first.device_id, contract.TELEMETRY), b"{}")
        refused = Mqtt(server.host, server.port, disabled.device_id, disabled.password).connect()
        assert refused.is_failure
    finally:
        server.close()
