"""What every session of one bridge shares (``SessionContext``): the broker link, the
registry's recorder and records, the bridge's settings, the CSR signer, the authorization
memory, the answers given to commands and the background tasks. The worker makes one; the
server hands it to every session."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from collections.abc import Awaitable
from typing import Any

from cloud.ocpp.authorization import AuthorizationMemory
from cloud.ocpp.certificates import CsrSigner
from cloud.ocpp.link import BridgeLink
from cloud.ocpp.records import Records
from cloud.ocpp.registry import Recorder
from cloud.ocpp.uplink import DataTransferRules

log = logging.getLogger(__name__)

ANSWERS_KEPT = 10_000  # command answers remembered per bridge (the oldest go first)


class Answers:
    """The result payloads of the commands this bridge answered, across connections: a
    command delivered again (QoS 1 is at least once; a queued command read from the records
    while its answer is still on its way to them) gets its answer again and does not run
    twice (contract 4.5)."""

    def __init__(self, limit: int = ANSWERS_KEPT) -> None:
        self.limit = limit
        self._by_key: collections.OrderedDict[tuple[str, str], bytes] = collections.OrderedDict()

    def get(self, device_id: str, command_id: str) -> bytes | None:
        """The stored answer, if any."""
        return self._by_key.get((device_id, command_id))

    def keep(self, device_id: str, command_id: str, payload: bytes) -> None:
        """Remember an answer."""
        self._by_key[(device_id, command_id)] = payload
        self._by_key.move_to_end((device_id, command_id))
        while len(self._by_key) > self.limit:
            self._by_key.popitem(last=False)


@dataclasses.dataclass
class SessionContext:
    """What every session of one bridge shares."""

    link: BridgeLink
    recorder: Recorder
    heartbeat_interval: int
    call_timeout: int
    transfers: DataTransferRules
    signer: CsrSigner | None = None
    records: Records | None = None  # None: a bridge without the database (unit tests)
    answers: Answers = dataclasses.field(default_factory=Answers)
    background: set[asyncio.Task[Any]] = dataclasses.field(default_factory=set)
    authorizations: AuthorizationMemory = dataclasses.field(default_factory=AuthorizationMemory)

    def spawn(self, work: Awaitable[Any]) -> None:
        """Run ``work`` in the background, keeping a reference until it ends."""
        task = asyncio.ensure_future(work)
        self.background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background work failed", exc_info=task.exception())
