"""Security profiles 2 (TLS + Basic auth) and 3 (mutual TLS, the certificate's CN bound to the
charger id of the URL), with certificates made here; and the bridge signing a charger's CSR."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ocpp.v201 import call

from cloud.db import get_database
from cloud.ocpp.worker import OcppWorker
from cloud.pki import authorities, service
from tests.link import Link
from tests.mqtt import Mqtt
from tests.ocpp.chargers import basic, connected
from tests.ocpp.pki import Authority
from tests.ocpp.support import Published, eventually, status_of

pytestmark = pytest.mark.parametrize("link", ["embedded"], indirect=True)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    """A server CA with the bridge's certificate, and a CA of chargers."""
    servers = Authority(tmp_path, "servers")
    chargers = Authority(tmp_path, "chargers")
    cert, key = servers.issue("127.0.0.1", server=True)
    return {"servers": servers, "chargers": chargers, "cert": cert, "key": key}


def client_context(pki: dict[str, Any], cert: tuple[str, str] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki["servers"].cert_file)
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


def wss(bridge: OcppWorker) -> str:
    return f"wss://127.0.0.1:{bridge.port}"


def test_profile_2_is_tls_with_basic_auth(
    link: Link, make_bridge: Any, effects: None, ocpp_charger: Any, pki: dict[str, Any]
) -> None:
    bridge = make_bridge(
        ocpp_security_profile=2, ocpp_tls_cert_file=pki["cert"], ocpp_tls_key_file=pki["key"]
    )
    charger_id, password = ocpp_charger()
    context = client_context(pki)

    async def scenario() -> None:
        with pytest.raises(websockets.InvalidStatus) as caught:
            async with connected(
                wss(bridge), charger_id, headers=basic(charger_id, "x"), ssl_context=context
            ):
                pass
        assert caught.value.response.status_code == 401
        # Plain WebSocket on the TLS port: no handshake at all.
        with pytest.raises((OSError, websockets.InvalidMessage)):
            async with connected(
                f"ws://127.0.0.1:{bridge.port}", charger_id, headers=basic(charger_id, password)
            ):
                pass
        async with connected(
            wss(bridge),
            charger_id,
            "2.0.1",
            headers=basic(charger_id, password),
            ssl_context=context,
        ) as cp:
            beat = await cp.call(call.Heartbeat(), suppress=False)
            assert beat.current_time
            await eventually(lambda: status_of(link.admin, charger_id)["online"], "online")

    asyncio.run(scenario())


def test_profile_3_binds_the_certificate_cn_to_the_charger_id(
    link: Link, make_bridge: Any, effects: None, ocpp_charger: Any, pki: dict[str, Any]
) -> None:
    chargers: Authority = pki["chargers"]
    bridge = make_bridge(
        ocpp_security_profile=3,
        ocpp_tls_cert_file=pki["cert"],
        ocpp_tls_key_file=pki["key"],
        ocpp_tls_client_ca_file=chargers.cert_file,
    )
    charger_id, _ = ocpp_charger()
    other_id, _ = ocpp_charger()
    own = client_context(pki, chargers.issue(charger_id))
    others = client_context(pki, chargers.issue(other_id))
    stranger = Authority(Path(chargers.directory), "strangers")
    forged = client_context(pki, stranger.issue(charger_id))

    async def scenario() -> None:
        # Another charger's (valid) certificate: its CN is not the id in the URL.
        with pytest.raises(websockets.InvalidStatus) as caught:
            async with connected(wss(bridge), charger_id, ssl_context=others):
                pass
        assert caught.value.response.status_code == 401
        # No client certificate, or one from a CA the bridge does not trust: TLS fails.
        for context in (client_context(pki), forged):
            with pytest.raises(
                (OSError, ssl.SSLError, websockets.InvalidMessage, websockets.ConnectionClosed)
            ):
                async with connected(wss(bridge), charger_id, ssl_context=context) as cp:
                    await cp.call(call.Heartbeat(), suppress=False)
        async with connected(wss(bridge), charger_id, "2.0.1", ssl_context=own) as cp:
            beat = await cp.call(call.Heartbeat(), suppress=False)
            assert beat.current_time
            await eventually(lambda: status_of(link.admin, charger_id)["online"], "online")

    asyncio.run(scenario())


def test_the_bridge_signs_a_chargers_csr_with_the_platform_pki(
    link: Link, make_bridge: Any, observer: Mqtt, ocpp_charger: Any
) -> None:
    bridge = make_bridge()  # ocpp_sign_csr is on by default
    charger_id, password = ocpp_charger()
    published = Published(observer)

    def csr(common_name: str) -> str:
        key = ec.generate_private_key(ec.SECP256R1())
        return (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
            .decode()
        )

    async def scenario() -> None:
        async with connected(
            f"ws://127.0.0.1:{bridge.port}",
            charger_id,
            "2.0.1",
            headers=basic(charger_id, password),
        ) as cp:
            # Another charger's CN: refused with the PKI's reason, nothing signed.
            answer = await cp.call(call.SignCertificate(csr=csr("someone-else")), suppress=False)
            assert answer.status == "Accepted"
            refused = await published.event(charger_id, "certificate.refused")
            assert "not the device id" in refused["data"]["reason"]
            answer = await cp.call(call.SignCertificate(csr=csr(charger_id)), suppress=False)
            assert answer.status == "Accepted"
            chain = (await cp.asked.next_call("CertificateSigned"))["certificate_chain"]
            issued = x509.load_pem_x509_certificates(chain.encode())
            assert issued[0].subject.rfc4514_string() == f"CN={charger_id}"
            with get_database(link.app).transaction() as session:
                devices_ca = authorities.existing(session)
                assert devices_ca is not None
                assert service.current_certificate(session, charger_id) is not None
            issued[0].verify_directly_issued_by(devices_ca.devices.certificate)
            assert issued[1] == devices_ca.devices.certificate
            installed = await published.event(charger_id, "certificate.installed")
            assert installed["data"] == {"status": "ok"}

    asyncio.run(scenario())
