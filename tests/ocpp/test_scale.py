"""Several bridge instances share the chargers with no routing table: each follows the topics
of the chargers it holds, so the broker routes each command to the instance that holds its
charger; a charger that shows up at another instance is let go by the first."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.link import Link
from tests.ocpp.chargers import basic, connected
from tests.ocpp.support import command, eventually, final, status_of
from tests.ocpp.test_ocpp16 import url


def test_commands_reach_the_instance_that_holds_the_charger(
    link: Link, make_bridge: Any, effects: None, ocpp_charger: Any
) -> None:
    first, second = make_bridge(), make_bridge()
    x_id, x_password = ocpp_charger()
    y_id, y_password = ocpp_charger()
    admin = link.admin

    async def scenario() -> None:
        async with (
            connected(url(first), x_id, headers=basic(x_id, x_password)) as x,
            connected(url(second), y_id, "2.0.1", headers=basic(y_id, y_password)) as y,
        ):
            await eventually(lambda: first.link.held == {x_id}, "x held by the first")
            await eventually(lambda: second.link.held == {y_id}, "y held by the second")
            sent_x = command(admin, x_id, "reboot")
            sent_y = command(admin, y_id, "reboot")
            assert (await x.asked.next_call("Reset")) == {"type": "Soft"}
            assert (await y.asked.next_call("Reset")) == {"type": "OnIdle"}
            for device_id, sent in ((x_id, sent_x), (y_id, sent_y)):
                done = await eventually(
                    lambda d=device_id, s=sent: final(admin, d, s["id"]), "done"
                )
                assert done["state"] == "succeeded"

            # x shows up at the second instance while its old socket at the first lingers (a
            # half-open TCP connection): the first lets it go when the second announces it.
            async with connected(url(second), x_id, headers=basic(x_id, x_password)) as moved:
                async with asyncio.timeout(10):
                    await x._connection.wait_closed()
                await eventually(lambda: first.link.held == set(), "x released by the first")
                assert second.link.held == {x_id, y_id}
                sent = command(admin, x_id, "connector.unlock", connector=1)
                assert (await moved.asked.next_call("UnlockConnector")) == {"connector_id": 1}
                done = await eventually(lambda: final(admin, x_id, sent["id"]), "unlock done")
                assert done["state"] == "succeeded"
                assert status_of(admin, x_id)["online"] is True
                assert x.asked.calls == []

    asyncio.run(scenario())
