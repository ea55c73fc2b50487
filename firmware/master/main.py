"""The master MCU: ties the board (HAL) to the I/O-free core and steps it.

``Master(board, family, device_id, fw, now_ms)`` boots one charger; ``step(now_ms)`` does one
pass and returns when it next needs to run. Nothing here blocks or sleeps and there are no
threads, so a simulator steps thousands of masters in one process, and the board's ``run``
loop (``main()`` at the bottom) sleeps between steps. One pass:

1. cloud link: clock state, incoming messages (``board.mqtt.poll``), back-off, paced replay;
2. control cycle (every ``control_ms``): read the relay's private block (CP voltage), the card
   reader, detect faults, update the IEC 61851 machine (sessions, night window), drive the CP
   PWM and the contactor command, save the session record (NVS) when it changed;
3. sampling: read the poll groups that are due, publish one sample per node;
4. slave health: ``node.offline``/``node.online`` events from the I2C client;
5. OTA: download a slice of the image, verify, switch, reboot when no session runs.

The MQTT transport calls ``on_connected``, ``on_connect_failed``, ``on_disconnected`` and
``on_message`` (see firmware/core/link.py); ``now_ms`` is optional in those and defaults to the
time of the last step.

NVS records: ``config`` (settings), ``ota`` (update state), ``session`` (the session counter and
the open session: charging.Charger.record) and ``auth`` (the local authorization list); the
factory's ``guest_keys`` (the platform's public keys for guest credentials) is only read.

Certificate renewal (docs/device-contract.md 4.10, ``firmware.core.certs``): the factory's
``client_cert`` says when the certificate expires; once inside the renewal window, with the
clock set and the link up, the master asks once per connection, with a CSR for a new key when
the board can make one (``board.make_key``; the key and CSR wait in ``cert_next_key`` and
``cert_next_csr`` until certified) or for the same key otherwise, and installs what comes back
when it certifies the key it asked for: ``client_cert`` (and ``client_key``), which the
transport reads at its next connection.

Guest credentials (``present_guest_credential``, docs/guest-credentials.md): a pass signed by
the platform, checked here with the keys from NVS and no cloud link, that authorises a session
like a card of the local list, under the guest id.
"""

import json

from firmware.core import (
    authlist,
    certs,
    charging,
    guestpass,
    i2cproto,
    link,
    ota,
    params,
    registers,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CONTROL_MS = 500  # control cycle: CP read, machine, PWM, contactor watchdog refresh
OTA_BYTES_PER_STEP = 16384  # one step never stalls charging control for long
OVERTEMP_C = 80.0  # relay temperature above which charging stops (a fault)
CONTACTOR_MISMATCH_MS = 2000  # feedback disagreeing with the command this long: welded/stuck

# Parameter ids with a meaning to the firmware (the same id means the same thing in every
# family: parameters/README.md).
ENERGY = "energy_wh"
PP = "pp_current_a"
CONTACTOR = "contactor_closed"
TEMPERATURE = "temperature_c"
MAX_CURRENT = "max_current_a"
RFID = "rfid_required"
HEARTBEAT = "heartbeat_period_s"
NIGHT_START = "night_window_start_s"
NIGHT_END = "night_window_end_s"

NVS_CONFIG = "config"
NVS_OTA = "ota"
NVS_SESSION = "session"
NVS_AUTH = "auth"
NVS_GUEST_KEYS = guestpass.NVS_KEY
# The id tag of a refused credential whose signature did not hold: it names nobody.
UNVERIFIED_GUEST = "gst-unverified"

# What a session is billed from: before the clock is set (contract 8: no events without a
# ts) these wait, a few, and go out stamped with the first time the clock knows.
SESSION_EVENTS = ("charging.started", "charging.stopped", "authorization.refused")
MAX_UNSENT = 8


class Master:
    """One charger's master MCU."""

    __slots__ = (
        "auth",
        "board",
        "boot_ms",
        "charger",
        "client",
        "connections",
        "contactor_cmd",
        "control_due",
        "control_ms",
        "duty",
        "family",
        "fw",
        "guest_reader",
        "link",
        "load_limit_a",
        "meter",
        "mismatch_since",
        "night_only",
        "now",
        "ota",
        "ota_stream",
        "reader",
        "reboot_pending",
        "relay",
        "renewal",
        "sampler",
        "settings",
        "unsent",
        "utc_offset_s",
    )

    def __init__(
        self,
        board: "Any",
        family: "Any",
        device_id: str,
        fw: str,
        now_ms: int,
        require_signature: bool = False,
        verify_signature: "Any" = None,
        retry: "Any" = None,
        outbox: "Any" = None,
        control_ms: int = CONTROL_MS,
        night_only: bool = False,
        utc_offset_s: int = 0,
        renew_before_ms: int = certs.RENEW_BEFORE_MS,
    ) -> None:
        """``retry``: an i2cproto.RetryPolicy; ``outbox``: an Outbox (its capacity);
        ``control_ms``: the control cycle (keep it under the relay's 3 s watchdog);
        ``night_only``: charge only inside the night window (settings ``night_window_start_s``
        and ``night_window_end_s``, seconds since local midnight, local = UTC +
        ``utc_offset_s``); ``renew_before_ms``: how long before its certificate expires the
        master asks for the next one."""
        if not 0 < control_ms < registers.CONTACTOR_WATCHDOG_MS:
            raise ValueError("control_ms must be shorter than the contactor watchdog")
        self.board = board
        self.control_ms = control_ms
        self.family = family
        self.fw = fw
        self.now = now_ms
        self.boot_ms = now_ms
        self.settings = params.Settings(family)
        self.settings.restore(board.storage.get(NVS_CONFIG))
        self.sampler = params.Sampler(family, now_ms, board.rand)
        self.client = i2cproto.Client(board.i2c, retry)
        for node, address, _ in family.slaves():
            self.client.add(node, address)
        # Slaves by role (None when the family has none: an OCPP or io-board family).
        self.meter = _address_of_role(family, "meter")
        self.relay = _address_of_role(family, "relay")
        self.charger = charging.Charger()
        # A session left open in flash was cut by a power loss: closed here (power_loss).
        self.charger.restore(_json_record(board.storage.get(NVS_SESSION)), now_ms)
        self.unsent = []  # type: list  # session events waiting for the clock
        self.auth = authlist.LocalList()
        self.auth.restore(board.storage.get(NVS_AUTH))
        self.reader = getattr(board, "rfid", None)
        self.guest_reader = getattr(board, "guest", None)
        self.night_only = night_only
        self.utc_offset_s = utc_offset_s
        self.duty = None  # type: float | None  # last duty sent to the CP generator
        self.contactor_cmd = False
        self.mismatch_since = None  # type: int | None
        self.control_due = now_ms
        self.load_limit_a = None  # type: float | None  # site load management, None: no limit
        self.reboot_pending = None  # type: str | None  # why, once a reboot was asked for
        self.ota = ota.Updater(
            fw, board.storage.ota_max_size(), require_signature, verify_signature
        )
        self.ota_stream = None  # type: Any
        self.ota.boot(_json_record(board.storage.get(NVS_OTA)), now_ms)
        self._save_ota_record()
        self.link = link.Link(
            device_id, fw, family.schema, board.mqtt, self.settings, self, board.rand, outbox
        )
        self.link.hw = self._hardware(now_ms)
        self.connections = 0  # CONNACKs since boot: a certificate is asked for once per one
        self.renewal = certs.Renewal(self._certificate_expiry(), renew_before_ms)
        retry = board.storage.get(certs.NVS_RETRY)
        if retry:
            try:
                self.renewal.retry_at = int(retry)
            except ValueError:
                board.storage.delete(certs.NVS_RETRY)
        board.mqtt.attach(self)

    # --- the loop -----------------------------------------------------------------------------

    def step(self, now_ms: int) -> int:
        """One pass of the firmware at ``now_ms``; returns when the next pass is due."""
        self.now = now_ms
        link_ = self.link
        link_.clock_set = self.board.clock.synced()
        self.board.mqtt.poll()
        link_.tick(now_ms)
        if link_.up and link_.clock_set and self.renewal.due(now_ms, self.connections):
            self._ask_certificate()
        if self.unsent and link_.clock_set:
            unsent = self.unsent
            self.unsent = []
            for type_, severity, data in unsent:
                link_.send_event(now_ms, type_, severity, data)
        if now_ms >= self.control_due:
            self.control_due = now_ms + self.control_ms
            self._control(now_ms)
        self._sample(now_ms)
        self._report_slaves(now_ms)
        self._ota_step(now_ms)
        self._publish_ota_statuses()
        self._maybe_reboot(now_ms)
        wake = min(self.control_due, self.sampler.next_due_ms())
        link_wake = link_.next_wakeup_ms()
        if link_wake is not None:
            wake = min(wake, link_wake)
        if self.ota.state == ota.DOWNLOADING:
            wake = now_ms  # keep downloading
        return max(wake, now_ms)

    def _control(self, now: int) -> None:
        charger = self.charger
        values = self.sampler.values
        cp_high = cp_low = None
        fault = None
        if self.relay is not None and self.client.ready(self.relay, now):
            base, length = registers.RELAY_BLOCK
            try:
                block = self.client.read(self.relay, base, length, now)
                cp_high = registers.unpack(block, base, registers.RELAY[registers.CP_HIGH_DV]) / 10
                cp_low = registers.unpack(block, base, registers.RELAY[registers.CP_LOW_DV]) / 10
            except i2cproto.I2CError:
                pass
        if self.relay is not None and not self.client.slaves[self.relay].online:
            fault = "relay_offline"
        elif self.meter is not None and not self.client.slaves[self.meter].online:
            fault = "meter_offline"  # no metering, no charging: a session must be billable
        elif (self.sampler.number(TEMPERATURE) or 0.0) > OVERTEMP_C:
            fault = "overtemp"
        elif self._contactor_stuck(now, values.get(CONTACTOR)):
            fault = "contactor_feedback"
        charger.set_fault(fault)
        reader = self.reader
        if reader is not None:
            uid = reader.read()
            if uid:
                # The local list decides, offline too; the cloud confirms later (contract 4.9).
                charger.present_card(uid, self.auth.refusal(uid, now), now)
        if self.guest_reader is not None:
            credential = self.guest_reader.read()
            if credential:
                self.present_guest_credential(credential, now)
        charger.update(
            now,
            cp_high,
            self.sampler.number(PP),
            self.settings.get(MAX_CURRENT) if MAX_CURRENT in self.family.params else 32,
            self.sampler.number(ENERGY),
            self.load_limit_a,
            not self.settings.get(RFID) if RFID in self.family.params else True,
            cp_low,
            self._window(now),
        )
        if charger.duty != self.duty:
            self.board.cp.set_duty(charger.duty)
            self.duty = charger.duty
        self.contactor_cmd = charger.contactor
        if self.relay is not None and self.client.slaves[self.relay].online:
            # Written every cycle: it also feeds the relay's watchdog (registers.py). When it
            # fails, the watchdog opens the contactor and the fault follows next cycle.
            self._command_contactor(charger.contactor, now)
        self._flush_charger_events(now)
        if charger.save_due(now):
            self._save_session(now)

    def _window(self, now: int) -> "bool | None":
        """Night-only charging: whether ``now`` is inside the night window; None when there is
        no schedule, or no clock to tell the time of day by (then charging is not held back)."""
        params_ = self.family.params
        if not (self.night_only and NIGHT_START in params_ and NIGHT_END in params_):
            return None
        if not self.link.clock_set:
            return None
        start = self.settings.get(NIGHT_START)
        end = self.settings.get(NIGHT_END)
        return charging.in_window(now, int(start), int(end), self.utc_offset_s)

    def _flush_charger_events(self, now: int) -> None:
        events = self.charger.events
        if not events:
            return
        self.charger.events = []
        for type_, severity, data in events:
            if not self.link.clock_set and type_ in SESSION_EVENTS:
                self.unsent.append((type_, severity, data))
                if len(self.unsent) > MAX_UNSENT:
                    self.unsent.pop(0)
                    self.link.unclocked += 1
                continue
            self.link.send_event(now, type_, severity, data)

    def _save_session(self, now: int) -> None:
        self.board.storage.put(NVS_SESSION, _json_bytes(self.charger.record()))
        self.charger.saved(now)

    def _contactor_stuck(self, now: int, feedback: "Any") -> bool:
        if feedback is None or feedback == self.contactor_cmd:
            self.mismatch_since = None
            return False
        if self.mismatch_since is None:
            self.mismatch_since = now
        return now - self.mismatch_since >= CONTACTOR_MISMATCH_MS

    def _sample(self, now: int) -> None:
        sampler = self.sampler
        groups = sampler.due(now)
        if not groups:
            return
        failed = []  # nodes that did not answer in this pass: skip their other groups
        for group in groups:
            address = self.family.address_of(group.node)
            if address is None:  # the master's own values
                for param in group.params:
                    value = self._internal(param.id, now)
                    if value is not None:
                        sampler.put(param, value)
                continue
            if group.node in failed or not self.client.ready(address, now):
                sampler.forget(group.node)
                continue
            try:
                for block in group.blocks:
                    sampler.store(
                        block, self.client.read(address, block.register, block.length, now)
                    )
            except i2cproto.I2CError:
                failed.append(group.node)
                sampler.forget(group.node)
        heartbeat = (
            self.settings.get(HEARTBEAT) * 1000 if HEARTBEAT in self.family.params else 60000
        )
        for node, values in sampler.collect(groups, now, heartbeat):
            self.link.send_telemetry(now, node, values)

    def _internal(self, parameter_id: str, now: int) -> "Any":
        """Values the master itself measures (binding ``internal`` with a period)."""
        charger = self.charger
        if parameter_id == "uptime_s":
            return (now - self.boot_ms) // 1000
        if parameter_id == "wifi_rssi_dbm":
            return self.board.rssi()
        if parameter_id == "session_energy_wh":
            return float(charger.session_energy_wh()) if charger.in_session else None
        if parameter_id == "session_s":
            return charger.session_s(now) if charger.in_session else None
        if parameter_id == "firmware_version":
            return self.fw
        return None

    def _hardware(self, now: int) -> "dict | None":
        """The hardware IDs found at boot: the chip's own and each slave's that answers (one
        that does not is left out, and the cloud sees it missing). None without a chip id."""
        read_chip = getattr(self.board, "chip_id", None)  # boards older than the contract's hw
        chip = read_chip() if read_chip is not None else None
        if chip is None:
            return None
        register, length = registers.IDENTITY_BLOCK
        slaves = {}
        for node, address, _ in self.family.slaves():
            try:
                data = self.client.read(address, register, length, now)
            except i2cproto.I2CError:
                continue  # no answer: reported missing
            slaves[node] = registers.hex_id(data)
        return {"chip": chip, "slaves": slaves}

    def _report_slaves(self, now: int) -> None:
        transitions = self.client.transitions
        if not transitions:
            return
        self.client.transitions = []
        for node, online, code in transitions:
            address = self.family.address_of(node)
            if online:
                self.link.send_event(now, "node.online", "info", {"address": address}, node)
            else:
                data = {"address": address, "error": code}
                self.link.send_event(now, "node.offline", "error", data, node)

    # --- OTA ----------------------------------------------------------------------------------

    def _ota_step(self, now: int) -> None:
        updater = self.ota
        if updater.state == ota.DOWNLOADING and self.ota_stream is not None:
            self._ota_download()
        elif updater.tick(now):
            # The new image never reached the cloud: boot the previous one. Like any reboot
            # it waits for a running session to end; the image charges fine meanwhile.
            self._save_ota_record()
            self.board.storage.ota_rollback()
            self.reboot_pending = "ota_rollback"
        if updater.state == ota.REBOOTING and self.reboot_pending is None:
            self.reboot_pending = "ota"

    def _ota_download(self) -> None:
        """Move up to OTA_BYTES_PER_STEP from the download into the inactive partition."""
        updater = self.ota
        storage = self.board.storage
        budget = OTA_BYTES_PER_STEP
        while budget > 0:
            failure = ota.DOWNLOAD_FAILED
            try:
                chunk = self.ota_stream.read(min(4096, budget))
                if not chunk:
                    self._close_stream()
                    if updater.finish():
                        failure = ota.SWITCH_FAILED
                        storage.ota_switch()
                        updater.switched()
                        self._save_ota_record()
                    return
                if not updater.feed(chunk):
                    self._close_stream()
                    return
                failure = ota.WRITE_FAILED
                storage.ota_write(chunk)
            except OSError:
                self._close_stream()
                updater.abort(failure)
                return
            budget -= len(chunk)

    def _close_stream(self) -> None:
        stream = self.ota_stream
        self.ota_stream = None
        if stream is not None:
            stream.close()  # Downloader streams never raise on close (hal/interface.py)

    def _save_ota_record(self) -> None:
        record = self.ota.record
        if record is None:
            self.board.storage.delete(NVS_OTA)
        else:
            self.board.storage.put(NVS_OTA, _json_bytes(record))

    def _publish_ota_statuses(self) -> None:
        statuses = self.ota.statuses
        if statuses:
            self.ota.statuses = []
            for version, state, progress, reason in statuses:
                self.link.send_ota_status(version, state, progress, reason)

    # --- certificate renewal ---------------------------------------------------------------

    def _certificate_expiry(self) -> "int | None":
        """The certificate's notAfter (None: no certificate, or unreadable: nothing to renew).
        A new key whose certificate was stored but not the key itself (power lost in between,
        ``on_certificate``) is put in place first."""
        storage = self.board.storage
        try:
            current = storage.get(certs.NVS_CERT)
            pending = storage.get(certs.NVS_NEXT_CSR)
            if current and pending and certs.certificate_key(current) == certs.request_key(pending):
                storage.put(certs.NVS_KEY, storage.get(certs.NVS_NEXT_KEY))
                self._forget_next_key()
            return certs.not_after_ms(current)
        except certs.CertificateError:
            return None

    def _forget_next_key(self) -> None:
        self.board.storage.delete(certs.NVS_NEXT_KEY)
        self.board.storage.delete(certs.NVS_NEXT_CSR)

    def _ask_certificate(self) -> None:
        """Ask for the next certificate: the pending CSR again, a new one, or the same key."""
        storage = self.board.storage
        csr = storage.get(certs.NVS_NEXT_CSR)
        if csr is None:
            make_key = getattr(self.board, "make_key", None)  # boards that cannot: none
            made = make_key(self.link.device_id) if make_key is not None else None
            if made is not None:
                key_pem, csr_text = made
                csr = csr_text.encode()
                storage.put(certs.NVS_NEXT_KEY, key_pem)
                storage.put(certs.NVS_NEXT_CSR, csr)
        if self.link.request_certificate(None if csr is None else csr.decode()):
            self.renewal.asked(self.connections)

    def on_certificate(self, reply: "Any", now_ms: int) -> None:
        """The cloud's answer (link): install a certificate of the key asked for; it is used
        from the next connection on."""
        if not reply.ok:
            self._certificate_refused(reply.error, now_ms)
            return
        storage = self.board.storage
        try:
            got = certs.certificate_key(reply.certificate)
            not_after = certs.not_after_ms(reply.certificate)
            pending = storage.get(certs.NVS_NEXT_CSR)
            current = storage.get(certs.NVS_CERT)
            new_key = pending is not None and certs.request_key(pending) == got
            same_key = not new_key and current is not None and certs.certificate_key(current) == got
        except certs.CertificateError as exc:
            self._certificate_refused("unreadable certificate: " + str(exc), now_ms)
            return
        if not (new_key or same_key):
            self._certificate_refused("the certificate is for another key", now_ms)
            return
        # The certificate first, then its key: after a power cut in between, the boot finds
        # a certificate of the pending key and finishes (``_certificate_expiry``).
        storage.put(certs.NVS_CERT, reply.chain.encode())
        if new_key:
            storage.put(certs.NVS_KEY, storage.get(certs.NVS_NEXT_KEY))
            self._forget_next_key()
        self.renewal.installed(not_after, now_ms)
        data = {"serial": reply.serial, "not_after": not_after}
        self.link.send_event(now_ms, "certificate.renewed", "info", data)

    def _certificate_refused(self, error: str, now_ms: int) -> None:
        self.renewal.refused(now_ms)
        self.board.storage.put(certs.NVS_RETRY, str(self.renewal.retry_at).encode())
        self.link.send_event(now_ms, "certificate.refused", "warning", {"error": error[:200]})

    # --- reboot -------------------------------------------------------------------------------

    def _maybe_reboot(self, now: int) -> None:
        # Never in the middle of a charging session: an update or a setting can wait.
        if self.reboot_pending is not None and not self.charger.in_session:
            self.reboot(self.reboot_pending, now)

    def reboot(self, reason: str, now_ms: "int | None" = None, force: bool = False) -> None:
        """Leave cleanly (status offline, DISCONNECT) and reset the board."""
        now = self.now if now_ms is None else now_ms
        if self.charger.in_session and not force:
            self.reboot_pending = reason
            return
        # Forced in a session: it ends as a reboot during a session does (contract 14).
        self.charger.stop(now, "power_loss")
        self.board.cp.set_duty(charging.DUTY_OFF)
        self._command_contactor(False, now)
        self._flush_charger_events(now)
        if self.charger.save_due(now):
            self._save_session(now)
        self.link.send_event(now, "reboot", "info", {"reason": reason})
        self._publish_ota_statuses()
        self.link.close(now)
        self.board.reset()

    def _command_contactor(self, closed: bool, now: int) -> bool:
        """Write the relay's contactor command; False when it did not get through (the client
        counted it, and the relay's watchdog opens the contactor on its own)."""
        if self.relay is None:
            return False
        register = registers.RELAY[registers.CONTACTOR_CMD][0]
        try:
            self.client.write(self.relay, register, b"\x01" if closed else b"\x00", now)
        except i2cproto.I2CError:
            return False
        return True

    # --- link handler -------------------------------------------------------------------------

    def on_connected(self, now_ms: "int | None" = None) -> None:
        """CONNACK: the link announces itself; a pending OTA image has proven itself."""
        self.connections += 1
        self.link.on_connected(now_ms)
        if self.link.up and self.ota.healthy():
            self.board.storage.ota_mark_valid()
            self._save_ota_record()
            self._publish_ota_statuses()

    def on_connect_failed(self, refused: bool = False, now_ms: "int | None" = None) -> None:
        """The connection attempt failed (``refused``: bad credentials)."""
        self.link.on_connect_failed(refused, now_ms)

    def on_disconnected(self, now_ms: "int | None" = None) -> None:
        """The connection dropped."""
        self.link.on_disconnected(now_ms)

    def on_message(self, topic: "Any", payload: "Any", now_ms: "int | None" = None) -> None:
        """A downlink message."""
        self.link.on_message(topic, payload, now_ms)
        self._publish_ota_statuses()

    def on_config(self, changed: list, reboot: bool, now_ms: int) -> None:
        """Settings changed (link): persist them; a reboot-only setting reboots when idle."""
        self.board.storage.put(NVS_CONFIG, self.settings.dump())
        if reboot and self.reboot_pending is None:
            self.reboot_pending = "config"

    def on_auth_list(self, auth_list: "Any", now_ms: int) -> None:
        """The cloud's local authorization list: kept (NVS) when its version is new."""
        if not self.auth.apply(auth_list):
            return
        self.board.storage.put(NVS_AUTH, self.auth.dump())
        data = {"version": auth_list.version, "tokens": len(self.auth)}
        self.link.send_event(now_ms, "auth.list_applied", "info", data)

    def present_guest_credential(self, credential: "Any", now_ms: "int | None" = None) -> "Any":
        """A guest credential shown at the charger: checked offline (signature with the keys
        in NVS, this charger, the window against the clock); accepted, it acts as a card of
        the local list under the guest id (its own guest again stops the session). None when
        accepted, else the reason (``guestpass.REASONS``, or ``busy``), also reported as
        ``authorization.refused``."""
        now = self.now if now_ms is None else now_ms
        # Read at each use, not at boot: a credential is rare, and NVS is then always current.
        keys = guestpass.keys_from_nvs(self.board.storage.get(NVS_GUEST_KEYS))
        verifier = guestpass.Verifier(self.link.device_id, keys)
        guest, reason = verifier.check(credential, now if self.link.clock_set else None)
        charger = self.charger
        tag = guest or UNVERIFIED_GUEST
        busy = charger.in_session and tag != charger.session_tag
        charger.present_card(tag, reason, now)
        return "busy" if busy else reason

    def on_ota(self, offer: "Any", now_ms: int) -> None:
        """An OTA offer (None: cleared)."""
        if offer is None or not self.ota.consider(offer):
            return
        self._close_stream()
        try:
            self.board.storage.ota_begin(offer.size)
        except OSError:
            self.ota.abort(ota.WRITE_FAILED)
            return
        try:
            self.ota_stream = self.board.downloader.open(offer.url)
        except OSError:
            self.ota.abort(ota.DOWNLOAD_FAILED)

    def run_command(self, command: "Any", now_ms: int) -> tuple:
        """A schema-valid command: (status, result, reason)."""
        name = command.name
        if name == "reboot":
            self.reboot_pending = "command"
            return "ok", None, None
        if name == "charging.start":
            # The app's or guest's token: charging.started reports it (contract 14).
            id_tag = command.args.get("id_tag")
            if id_tag == "":
                return "rejected", {"args": {"id_tag": "empty"}}, "bad_args"
            if self.charger.in_session:
                return "rejected", None, "session running"
            if not self.charger.authorise(id_tag):
                return "rejected", None, "no EV connected"
            return "ok", None, None
        if name == "charging.stop":
            if not self.charger.stop(now_ms, "remote"):
                return "rejected", None, "no session"
            return "ok", None, None
        param = self.family.params[name]
        if param.on_i2c:  # a command register on a slave (connector.unlock): write 1 to it
            try:
                self.client.write(param.address, param.register, param.encode(1), now_ms)
            except i2cproto.I2CError as exc:
                return "error", None, exc.code
            return "ok", None, None
        return "rejected", None, "not_supported"

    # --- for simulators and tests -------------------------------------------------------------

    def stats(self) -> dict:
        """Counters worth watching: link, outbox, I2C errors per slave, flagged values."""
        return {
            "link": self.link.state,
            "outbox": len(self.link.outbox),
            "dropped": self.link.outbox.dropped,
            "session_dropped": self.link.outbox.session_dropped,
            "rejected": self.link.rejected,
            "errors": self.link.errors,
            "flagged": self.sampler.flagged,
            "slaves": {
                slave.node: {"online": slave.online, "errors": dict(slave.errors or {})}
                for slave in self.client.slaves.values()
            },
        }


def _address_of_role(family: "Any", role: str) -> "int | None":
    node = family.node_of_role(role)
    return None if node is None else family.address_of(node)


def _json_record(data: "bytes | None") -> "dict | None":
    if not data:
        return None
    try:
        record = json.loads(data)
    except ValueError:
        return None
    return record if type(record) is dict else None


def _json_bytes(record: dict) -> bytes:
    return json.dumps(record).encode()


def main() -> None:  # pragma: no cover - the board's entry point (boot.py: import main)
    """Run the master on the ESP32-C3: load the board and the schema, then step forever."""
    import time

    from firmware.hal import esp32 as hal

    config = hal.load_config()
    board = hal.MasterBoard(config)
    family = params.load_file(config["schema_file"])
    master = Master(
        board,
        family,
        config["device_id"],
        config["fw"],
        board.clock.now_ms(),
        night_only=config.get("night_only", False),
        utc_offset_s=config.get("utc_offset_s", 0),
    )
    while True:
        now = board.clock.now_ms()
        wake = master.step(now)
        pause = wake - board.clock.now_ms()
        if pause > 0:
            # Short naps: MQTT input is polled (umqtt), not pushed. sleep_ms is MicroPython's.
            time.sleep_ms(min(pause, 100))  # type: ignore[attr-defined]
