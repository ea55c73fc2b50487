"""``ampfleet worker config``: what devices report about their configuration and commands.

Follows ``af/+/config/reported`` (the retained document a device publishes after every connect
and every change, docs/device-contract.md 4.4) and ``af/+/cmd/result`` (answers to commands,
4.6), stores the reported documents and resolves the pending changes
(``cloud.configuration.service``) and the commands sent through the commands API
(``cloud.commands.service``): a result's id is either a change's or a command's. A sweep,
every ``sweep_interval`` seconds, re-sends the changes and commands the API could not hand to
the broker and times out those left unanswered.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from pathlib import Path

from cloud.commands import service as commands
from cloud.commands.publisher import ConnectionCommandPublisher
from cloud.configuration import service
from cloud.configuration.models import DeviceConfiguration
from cloud.configuration.publisher import ConnectionPublisher
from cloud.db import Database
from cloud.devicelink.endpoint import Endpoint, shared
from cloud.devicelink.rejects import Rejected, RejectLog
from cloud.devicelink.subscriptions import Message
from cloud.devicelink.threaded import ThreadedLink
from firmware.core import contract

log = logging.getLogger(__name__)

# How long a device has to answer a change before it is timed_out: a device that is offline
# longer still gets the retained desired document when it returns, and its report is stored;
# only the change's bookkeeping gives up.
DEFAULT_TIMEOUT = dt.timedelta(minutes=5)
DEFAULT_SWEEP_INTERVAL = 30.0
GROUP = "config"


class ConfigWorker:
    """Keeps reported configuration documents and change states equal to what devices say."""

    def __init__(
        self,
        database: Database,
        endpoint: Endpoint,
        client_id: str,
        data_dir: Path,
        shared_subscriptions: bool,
        timeout: dt.timedelta = DEFAULT_TIMEOUT,
        sweep_interval: float = DEFAULT_SWEEP_INTERVAL,
        max_payload_bytes: int = contract.MAX_PAYLOAD_BYTES,
    ) -> None:
        self.database = database
        self.timeout = timeout
        self.sweep_interval = sweep_interval
        self.max_payload_bytes = max_payload_bytes
        self.rejects = RejectLog(data_dir / "rejected.jsonl")
        self.connection = ThreadedLink(endpoint, client_id, clean_session=False)
        for channel in (contract.CONFIG_REPORTED, contract.CMD_RESULT):
            topic_filter = shared(contract.topic_filter(channel), GROUP, shared_subscriptions)
            self.connection.subscribe(topic_filter, self._on_message)
        self.publisher = ConnectionPublisher(self.connection)
        self.command_publisher = ConnectionCommandPublisher(self.connection)
        self.reports = 0
        self.results = 0
        # One message at a time per worker: the link's thread and the sweep both write changes.
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    def start(self) -> None:
        """Connect, follow reports and results, and sweep in the background."""
        self._stop.clear()
        self.connection.start()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="config-sweep", daemon=True)
        self._sweeper.start()

    def stop(self) -> None:
        """Stop sweeping and disconnect."""
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout=10)
        self.connection.stop()
        self.rejects.close()

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.sweep_interval):
            try:
                self.sweep()
            except Exception:  # the next round retries; a dead sweeper would never
                log.exception("configuration sweep failed")

    def sweep(self, now: dt.datetime | None = None) -> list[str]:
        """Re-send unsent changes and commands, then time out stale ones; the ids timed out."""
        self.resend()
        self.resend_commands(now)
        with self._lock, self.database.transaction() as session:
            return service.sweep(session, self.timeout, now) + commands.sweep(session, now)

    def resend_commands(self, now: dt.datetime | None = None) -> list[str]:
        """Send every pending command the broker never got and that has not expired yet."""
        with self._lock, self.database.transaction() as session:
            plan = [
                (c.id, c.device_id, c.name, dict(c.args), commands.expires_ms(c))
                for c in commands.unsent(session, now)
            ]
        sent = [
            command_id
            for command_id, device_id, name, args, expires in plan
            if self.command_publisher.send_command(device_id, command_id, name, args, expires)
        ]
        if sent:
            with self._lock, self.database.transaction() as session:
                commands.mark_sent(session, sent)
        return sent

    def resend(self) -> list[str]:
        """Send the current desired document for every pending change the broker never got."""
        with self._lock, self.database.transaction() as session:
            todo = [
                (change.id, change.device_id, session.get(DeviceConfiguration, change.device_id))
                for change in service.unsent(session)
            ]
            plan = [
                (change_id, device_id, config.desired_version, dict(config.desired))
                for change_id, device_id, config in todo
                if config is not None
            ]
        sent = [
            change_id
            for change_id, device_id, version, values in plan
            if self.publisher.send(device_id, version, values, change_id)
        ]
        if sent:
            with self._lock, self.database.transaction() as session:
                service.mark_sent(session, sent)
        return sent

    def _on_message(self, message: Message) -> None:
        payload = message.payload
        if not payload:
            return  # a retained report being cleared (the device was deleted)
        try:
            device_id, channel = contract.parse_topic(message.topic)
            if channel == contract.CONFIG_REPORTED:
                reported = contract.decode_config(payload, max_bytes=self.max_payload_bytes)
            elif channel == contract.CMD_RESULT:
                result = contract.decode_command_result(payload, max_bytes=self.max_payload_bytes)
            else:
                return
        except contract.ContractError as exc:
            why = Rejected(exc.reason, exc.field, exc.detail or "")
            self.rejects.reject("config", message.topic, payload, why)
            return
        with self._lock, self.database.transaction() as session:
            if channel == contract.CONFIG_REPORTED:
                resolved = service.record_reported(session, device_id, reported)
                self.reports += 1
                log.debug(
                    "%s reported v%s; %d changes resolved",
                    device_id,
                    reported.version,
                    len(resolved),
                )
            else:
                if service.record_result(session, device_id, result) is None:
                    commands.record_result(session, device_id, result)
                self.results += 1
