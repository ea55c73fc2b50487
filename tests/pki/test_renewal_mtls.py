"""Renewal over mutual TLS, everything real: a simulated charger (the firmware core) connects to
Mosquitto's mutual-TLS listener with a certificate of the platform PKI that expires in 10 days,
asks on ``cert/request``, the renewal worker (service account, plain listener) has the PKI issue
the next one, the charger installs it and presents it at its next connection."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cloud.db import get_database
from cloud.devicelink.endpoint import Endpoint
from cloud.devicelink.threaded import end_session
from cloud.pki import service
from cloud.pki.renewal import RenewalWorker
from firmware.core import certs
from firmware.host.boards import ClientTls
from firmware.host.fleet import Fleet
from firmware.host.storage import MemoryStorage
from tests.broker.test_mtls_mosquitto import Setup, setup  # noqa: F401 - the module's fixture
from tests.link import app_settings
from tests.pki.support import make_csr


async def until(condition: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def test_a_charger_renews_over_mutual_tls_and_presents_the_new_certificate(
    setup: Setup,  # noqa: F811 - the fixture imported above
) -> None:
    device_id = setup.tenant.device(state="active")["id"]
    key = ec.generate_private_key(ec.SECP256R1())
    settings = app_settings(setup.app)
    with get_database(setup.app).transaction() as session:
        first = service.issue_for_device(
            session,
            dataclasses.replace(settings, pki_certificate_days=10),
            device_id,
            make_csr(device_id, key),
            actor=None,
        )
    setup.approve(device_id)  # approved, with a certificate in force: its broker account
    storage = MemoryStorage("1.0.0")
    storage.put(certs.NVS_CERT, first.chain_pem.encode())
    storage.put(
        certs.NVS_KEY,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    tls = ClientTls(storage, str(setup.server_ca))
    server = setup.server
    endpoint = Endpoint(
        server.host, server.port, False, server.service_user, server.service_password
    )
    client_id = "certs-" + secrets.token_hex(4)
    worker = RenewalWorker(
        get_database(setup.app),
        endpoint,
        client_id,
        setup.directory / client_id,
        shared_subscriptions=True,
        settings=settings,
        min_interval=0,
    )
    worker.start()
    try:
        worker.connection.wait_connected(20)
        fleet = Fleet(
            [(device_id, None)],
            server.host,
            server.mtls_port,
            contexts=[tls],
            storages=[storage],
            seed=88,  # a short power-on wait
            tick_ms=50,
            idle_step_ms=500,
            boot_rate=1000,
        )

        async def scenario() -> None:
            stop = asyncio.Event()
            running = asyncio.create_task(fleet.run(stop))
            try:
                await until(lambda: fleet.chargers and fleet.chargers[0].master.link.up, "online")
                link = fleet.chargers[0].master.link
                await until(
                    lambda: storage.get(certs.NVS_CERT) != first.chain_pem.encode(), "renewal"
                )
                fleet.transports[0].set_network(False)
                await until(lambda: not link.up, "the link down")
                fleet.transports[0].set_network(True)
                await until(lambda: fleet.chargers[0].master.link.up, "back with the new one")
            finally:
                stop.set()
                await running

        asyncio.run(scenario())
    finally:
        worker.stop()
        end_session(endpoint, client_id)
    installed = x509.load_pem_x509_certificates(storage.get(certs.NVS_CERT) or b"")[0]
    serial = format(installed.serial_number, "x")
    with get_database(setup.app).transaction() as session:
        assert service.current_certificate(session, device_id).serial == serial  # type: ignore[union-attr]
    assert tls._made_from == (storage.get(certs.NVS_CERT), storage.get(certs.NVS_KEY))
    assert worker.outcomes == {"issued": 1}
