"""What the records database knows that every bridge instance must agree on (blocking: the
sessions call it in a worker thread). A bridge's memory is its own; these facts are the
cloud's, so a charger that moves to another bridge instance, or finds its bridge restarted,
is answered the same:

* **Remote-start tokens.** A ``charging.start`` (the app's ``app-...`` tag, or an operator's
  ``id_tag``) is a command record before any bridge sees it. A token the charger presents
  that is on no card list is accepted when one of the device's last ``REMOTE_TOKENS``
  ``charging.start`` commands of the last ``REMOTE_TOKEN_TTL`` named it: the bridge that sent
  RemoteStartTransaction need not be the one that receives StartTransaction.
* **Queued commands.** A command for a charger held by no bridge reaches no subscriber (the
  bridges' sessions are clean, and subscribe per held charger): the broker drops it. Its
  record stays ``pending`` until it expires, so on every connection the bridge reads the
  charger's pending commands and runs them as if the broker had delivered them: those still
  valid are sent to the charger, those past their ``expires`` are answered ``rejected``
  (``expired``), as the contract asks of a device (4.5).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from cloud.commands.models import CommandState, DeviceCommand
from cloud.db import Database, utcnow
from firmware.core import contract

REMOTE_TOKENS = 32  # the device's latest charging.start commands whose tokens are accepted
REMOTE_TOKEN_TTL = dt.timedelta(days=1)  # a start older than this no longer vouches its token
QUEUED_LIMIT = 100  # pending commands run per connection (the oldest first)


def _ms(at: dt.datetime) -> int:
    return int(at.timestamp() * 1000)


class Records:
    """The records database as the bridge reads it."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def remote_start(self, device_id: str, token: str, now: dt.datetime | None = None) -> bool:
        """Whether the cloud recently asked ``device_id`` to start a session with ``token``
        (compared case-insensitively, as OCPP compares id tokens)."""
        since = (now or utcnow()) - REMOTE_TOKEN_TTL
        wanted = token.casefold()
        with self.database.session() as session:
            starts = session.scalars(
                select(DeviceCommand.args)
                .where(
                    DeviceCommand.device_id == device_id,
                    DeviceCommand.name == "charging.start",
                    DeviceCommand.created_at >= since,
                )
                .order_by(DeviceCommand.created_at.desc())
                .limit(REMOTE_TOKENS)
            ).all()
        return any(
            isinstance(args, dict)
            and isinstance(args.get("id_tag"), str)
            and args["id_tag"].casefold() == wanted
            for args in starts
        )

    def queued(self, device_id: str) -> list[contract.Command]:
        """The device's pending commands, oldest first, as the broker would deliver them."""
        with self.database.session() as session:
            rows = session.scalars(
                select(DeviceCommand)
                .where(
                    DeviceCommand.device_id == device_id,
                    DeviceCommand.state == CommandState.PENDING,
                )
                .order_by(DeviceCommand.created_at, DeviceCommand.id)
                .limit(QUEUED_LIMIT)
            ).all()
            return [
                contract.Command(row.id, row.name, dict(row.args or {}), _ms(row.expires_at))
                for row in rows
            ]
