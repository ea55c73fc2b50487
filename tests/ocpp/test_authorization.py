"""RFID cards at OCPP chargers (contract 4.9 and 14): the cloud's retained local authorization
list reaches the charger as SendLocalList, the bridge answers the charger's tokens from it
(Accepted, Invalid, Expired), a new version is sent again, a reconnect re-syncs, and the
tokens of the starts the cloud asked for are accepted. OCPP 1.6 and 2.0.1, on both brokers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from cloud.ocpp.worker import OcppWorker
from firmware.core import contract
from tests.link import Link
from tests.mqtt import Mqtt
from tests.ocpp.chargers import basic, connected
from tests.ocpp.conftest import Dial
from tests.ocpp.support import Published, eventually
from tests.ocpp.test_ocpp16 import now, publish_auth_list, url

versions = pytest.mark.parametrize("version", ["1.6", "2.0.1"])
WAIT = 20.0  # seconds a charger waits for a call of the bridge (a loaded machine is slow)


def ms(offset_s: float) -> int:
    """The wall clock in ms, ``offset_s`` from now."""
    return int((time.time() + offset_s) * 1000)


async def authorize(cp: Any, version: str, token: str) -> dict[str, Any]:
    """The idTagInfo / idTokenInfo the bridge answers an Authorize of ``token`` with."""
    if version == "1.6":
        answer = await cp.call(call16.Authorize(id_tag=token), suppress=False)
        info: dict[str, Any] = answer.id_tag_info
    else:
        answer = await cp.call(
            call201.Authorize(id_token={"id_token": token, "type": "ISO14443"}), suppress=False
        )
        info = answer.id_token_info
    return info


async def start(cp: Any, version: str, token: str, transaction: str) -> dict[str, Any]:
    """The token's status in the answer to a transaction start (1.6 StartTransaction, 2.0.1
    TransactionEvent Started)."""
    if version == "1.6":
        answer = await cp.call(
            call16.StartTransaction(connector_id=1, id_tag=token, meter_start=0, timestamp=now()),
            suppress=False,
        )
        assert isinstance(answer.transaction_id, int)  # the session runs until the charger stops
        info: dict[str, Any] = answer.id_tag_info
        return info
    answer = await cp.call(
        call201.TransactionEvent(
            event_type="Started",
            timestamp=now(),
            trigger_reason="Authorized",
            seq_no=0,
            transaction_info={"transaction_id": transaction},
            evse={"id": 1, "connector_id": 1},
            id_token={"id_token": token, "type": "ISO14443" if "app-" not in token else "Central"},
        ),
        suppress=False,
    )
    info = answer.id_token_info
    return info


def listed(cp: Any, sent: dict[str, Any], version: str) -> tuple[int, dict[str, dict[str, Any]]]:
    """(version, {token: info}) of a SendLocalList the charger received."""
    if version == "1.6":
        entries = sent.get("local_authorization_list") or []
        return sent["list_version"], {e["id_tag"]: e["id_tag_info"] for e in entries}
    entries = sent.get("local_authorization_list") or []
    for entry in entries:  # the cards on the list are RFID cards
        assert entry["id_token"]["type"] == "ISO14443"
    return sent["version_number"], {e["id_token"]["id_token"]: e["id_token_info"] for e in entries}


@versions
def test_the_list_reaches_the_charger_and_answers_its_tokens(
    link: Link, bridge: OcppWorker, observer: Mqtt, ocpp_charger: Any, version: str
) -> None:
    charger_id, password = ocpp_charger()
    published = Published(observer)
    guest_until, expired_at = ms(3600), ms(-3600)
    publish_auth_list(
        link, charger_id, 3, {"CARD-OK": None, "CARD-GUEST": guest_until, "CARD-OLD": expired_at}
    )
    expiry_key = "expiry_date" if version == "1.6" else "cache_expiry_date_time"

    async def scenario() -> None:
        async with connected(
            url(bridge), charger_id, version, headers=basic(charger_id, password)
        ) as cp:
            # On connecting, the bridge asks which list the charger holds (none: 0), then
            # sends the cloud's, whole, with the contract's version.
            await cp.asked.next_call("GetLocalListVersion", WAIT)
            sent = await cp.asked.next_call("SendLocalList", WAIT)
            assert sent["update_type"] == "Full"
            number, cards = listed(cp, sent, version)
            assert number == 3 and sorted(cards) == ["CARD-GUEST", "CARD-OK", "CARD-OLD"]
            assert cards["CARD-OK"] == {"status": "Accepted"}
            assert cards["CARD-GUEST"]["status"] == "Accepted"
            assert cards["CARD-GUEST"][expiry_key].startswith(time.strftime("%Y-", time.gmtime()))
            applied = await published.event(charger_id, "auth.list_applied")
            assert applied["data"] == {"version": 3, "tokens": 3}

            assert (await authorize(cp, version, "CARD-OK")) == {"status": "Accepted"}
            assert (await authorize(cp, version, "card-ok"))["status"] == "Accepted"  # CiString
            # A guest's card is valid until the end of the guest's window.
            guest = await authorize(cp, version, "CARD-GUEST")
            assert guest["status"] == "Accepted"
            assert guest[expiry_key] == cards["CARD-GUEST"][expiry_key]
            assert (await authorize(cp, version, "CARD-NOPE"))["status"] == "Invalid"
            assert (await authorize(cp, version, "CARD-OLD"))["status"] == "Expired"
            refused = await eventually(
                lambda: (
                    len(published.events(charger_id, "authorization.refused")) == 2
                    and published.events(charger_id, "authorization.refused")
                ),
                "two refusals",
            )
            assert [e["data"] for e in refused] == [
                {"id_tag": "CARD-NOPE", "reason": "unknown"},
                {"id_tag": "CARD-OLD", "reason": "expired"},
            ]
            assert all(e["severity"] == "warning" for e in refused)

            # A start with a card not on the list is answered Invalid (the charger then stops);
            # one on the list Accepted.
            assert (await start(cp, version, "CARD-NOPE", "tx-1"))["status"] == "Invalid"
            assert (await start(cp, version, "CARD-OK", "tx-2"))["status"] == "Accepted"

            # The cloud publishes a new version: it is sent again, and answers change with it.
            publish_auth_list(link, charger_id, 4, {"CARD-NEW": None})
            number, cards = listed(cp, await cp.asked.next_call("SendLocalList", WAIT), version)
            assert (number, list(cards)) == (4, ["CARD-NEW"])
            assert cp.list_version == 4
            assert (await authorize(cp, version, "CARD-OK"))["status"] == "Invalid"
            assert (await authorize(cp, version, "CARD-NEW"))["status"] == "Accepted"

            # The same version again (a retained copy re-published) is not sent: the next
            # SendLocalList the charger receives is the next version's.
            publish_auth_list(link, charger_id, 4, {"CARD-NEW": None})
            publish_auth_list(link, charger_id, 5, {})
            number, cards = listed(cp, await cp.asked.next_call("SendLocalList", WAIT), version)
            assert (number, cards) == (5, {})
            assert [name for name, _ in cp.asked.calls] == []

    asyncio.run(scenario())
    publish_auth_list(link, charger_id, None, {})


@versions
def test_a_reconnecting_charger_is_asked_its_version_and_resynced(
    link: Link, bridge: OcppWorker, observer: Mqtt, ocpp_charger: Any, version: str
) -> None:
    charger_id, password = ocpp_charger()
    published = Published(observer)
    publish_auth_list(link, charger_id, 2, {"CARD-A": None})

    def dial() -> Any:
        return connected(url(bridge), charger_id, version, headers=basic(charger_id, password))

    async def scenario() -> None:
        async with dial() as cp:
            number, _cards = listed(cp, await cp.asked.next_call("SendLocalList", WAIT), version)
            assert number == 2
            await published.event(charger_id, "auth.list_applied")

        # Back with the list it had: asked, in step, nothing sent. A new version while it is
        # connected is sent; that it is the next SendLocalList shows none came before it.
        async with dial() as cp:
            cp.list_version = 2
            assert (await cp.asked.next_call("GetLocalListVersion", WAIT)) == {}
            publish_auth_list(link, charger_id, 3, {"CARD-A": None, "CARD-B": None})
            number, cards = listed(cp, await cp.asked.next_call("SendLocalList", WAIT), version)
            assert (number, sorted(cards)) == (3, ["CARD-A", "CARD-B"])

        # The list changed while the charger was away: it gets the new one on its return.
        publish_auth_list(link, charger_id, 4, {"CARD-B": None})
        async with dial() as cp:
            cp.list_version = 3
            await cp.asked.next_call("GetLocalListVersion", WAIT)
            number, cards = listed(cp, await cp.asked.next_call("SendLocalList", WAIT), version)
            assert (number, list(cards)) == (4, ["CARD-B"])
            assert (await authorize(cp, version, "CARD-A"))["status"] == "Invalid"

        # A charger that lost its list (a factory reset: version 0) gets it again.
        async with dial() as cp:
            number, cards = listed(cp, await cp.asked.next_call("SendLocalList", WAIT), version)
            assert (number, list(cards)) == (4, ["CARD-B"])

    asyncio.run(scenario())
    publish_auth_list(link, charger_id, None, {})


@versions
def test_the_token_of_a_start_the_cloud_asked_for_is_accepted(
    link: Link, bridge: OcppWorker, ocpp_charger: Any, version: str
) -> None:
    charger_id, password = ocpp_charger()
    publish_auth_list(link, charger_id, 1, {"CARD-A": None})
    tag = "app-k3j5h2g7f9d1"  # the cloud's id tag for an app start (contract 14)

    async def scenario() -> None:
        async with connected(
            url(bridge), charger_id, version, headers=basic(charger_id, password)
        ) as cp:
            await cp.asked.next_call("SendLocalList", WAIT)
            with link.service() as cloud:
                payload = contract.encode_command(
                    "c-1", "charging.start", {"connector": 1, "id_tag": tag}
                )
                cloud.client.publish(
                    contract.topic(charger_id, contract.CMD), payload, 1
                ).wait_for_publish(20)
            if version == "1.6":
                assert (await cp.asked.next_call("RemoteStartTransaction", WAIT))["id_tag"] == tag
            else:
                asked = await cp.asked.next_call("RequestStartTransaction", WAIT)
                assert asked["id_token"] == {"id_token": tag, "type": "Central"}
            # The charger may authorize it first (1.6 AuthorizeRemoteTxRequests), then starts.
            assert (await authorize(cp, version, tag))["status"] == "Accepted"
            assert (await start(cp, version, tag, "tx-app"))["status"] == "Accepted"
            assert (await authorize(cp, version, "app-000000000000"))["status"] == "Invalid"

    asyncio.run(scenario())
    publish_auth_list(link, charger_id, None, {})


def test_a_charger_without_a_local_list_is_still_answered_from_the_cloud_list(
    link: Link, bridge: OcppWorker, observer: Mqtt, ocpp_charger: Any
) -> None:
    charger_id, password = ocpp_charger()
    published = Published(observer)
    publish_auth_list(link, charger_id, 1, {"CARD-A": None})

    async def scenario() -> None:
        async with connected(url(bridge), charger_id, headers=basic(charger_id, password)) as cp:
            cp.list_version = -1  # 1.6 5.9: local lists not supported
            await cp.asked.next_call("GetLocalListVersion", WAIT)
            failed = await published.event(charger_id, "auth.list_failed")
            assert failed["data"] == {"version": 1, "reason": "NotSupported"}
            assert (await authorize(cp, "1.6", "CARD-A"))["status"] == "Accepted"
            assert (await authorize(cp, "1.6", "CARD-B"))["status"] == "Invalid"
            # A new version changes the answers, and is not offered to it on this connection.
            publish_auth_list(link, charger_id, 2, {"CARD-B": None})
            async with asyncio.timeout(20):
                while (await authorize(cp, "1.6", "CARD-B"))["status"] != "Accepted":
                    await asyncio.sleep(0.05)
            assert (await authorize(cp, "1.6", "CARD-A"))["status"] == "Invalid"
            assert [name for name, _ in cp.asked.calls] == []

        async with connected(url(bridge), charger_id, headers=basic(charger_id, password)) as cp:
            cp.list_status = "Failed"  # it keeps lists, but this one failed: reported
            await cp.asked.next_call("SendLocalList", WAIT)
            await eventually(
                lambda: len(published.events(charger_id, "auth.list_failed")) >= 2,
                "the failure reported",
            )
            assert published.events(charger_id, "auth.list_failed")[1]["data"] == {
                "version": 2,
                "reason": "Failed",
            }

    asyncio.run(scenario())
    publish_auth_list(link, charger_id, None, {})


def test_without_a_list_no_card_is_accepted(
    link: Link, bridge: OcppWorker, observer: Mqtt, ocpp_charger: Any
) -> None:
    charger_id, password = ocpp_charger()
    published = Published(observer)

    async def scenario() -> None:
        async with connected(
            url(bridge), charger_id, "2.0.1", headers=basic(charger_id, password)
        ) as cp:
            assert (await authorize(cp, "2.0.1", "CARD-A"))["status"] == "Invalid"
            refused = await published.event(charger_id, "authorization.refused")
            assert refused["data"] == {"id_tag": "CARD-A", "reason": "unknown"}
            assert cp.asked.calls == []  # no list: nothing to send

    asyncio.run(scenario())


def test_the_list_reaches_the_charger_on_every_security_profile(
    link: Link, dial: Dial, ocpp_charger: Any
) -> None:
    charger_id, password = ocpp_charger()
    publish_auth_list(link, charger_id, 7, {"CARD-A": None})

    async def scenario() -> None:
        async with dial.connect(charger_id, password, "2.0.1") as cp:
            number, cards = listed(cp, await cp.asked.next_call("SendLocalList", WAIT), "2.0.1")
            assert (number, list(cards)) == (7, ["CARD-A"])
            assert (await authorize(cp, "2.0.1", "CARD-A"))["status"] == "Accepted"
            assert (await authorize(cp, "2.0.1", "CARD-B"))["status"] == "Invalid"

    asyncio.run(scenario())
    publish_auth_list(link, charger_id, None, {})
