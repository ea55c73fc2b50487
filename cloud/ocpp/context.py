"""What every session of one bridge shares (``SessionContext``): the broker link, the
registry's recorder, the bridge's settings, the CSR signer, the authorization memory and the
background tasks. The worker makes one; the server hands it to every session."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable
from typing import Any

from cloud.ocpp.authorization import AuthorizationMemory
from cloud.ocpp.certificates import CsrSigner
from cloud.ocpp.link import BridgeLink
from cloud.ocpp.registry import Recorder
from cloud.ocpp.uplink import DataTransferRules

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SessionContext:
    """What every session of one bridge shares."""

    link: BridgeLink
    recorder: Recorder
    heartbeat_interval: int
    call_timeout: int
    transfers: DataTransferRules
    signer: CsrSigner | None = None
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
