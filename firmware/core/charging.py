"""IEC 61851-1 control pilot: CP states, the PWM duty for a current, contactor and sessions.

I/O-free. The master feeds ``Charger.update`` with what it measured (CP voltage read by the
relay slave, cable rating from the proximity pilot, energy from the meter) and applies what the
machine decided: ``duty`` (to the CP PWM) and ``contactor`` (to the relay slave). Everything
that happened is appended to ``events`` as (type, severity, data) for the device's events
channel.

CP states from the high level of the pilot (IEC 61851-1 Table A.4, +-1 V)::

    +12 V  A  no EV                 +6 V  C  charging requested      0 V  E  short / error
     +9 V  B  EV connected          +3 V  D  charging, ventilation  -12 V  F  EVSE unavailable

Duty cycle for a current (IEC 61851-1 Table A.7): 6-51 A: duty = I / 0.6 %; 51-80 A:
duty = I / 2.5 + 64 %. A steady +12 V (duty 100) offers no current; a steady -12 V (duty 0) is
state F.

Contactor: closed only in C (or D, when the site has ventilation), with the session authorised,
current offered, no fault, the EVSE available and (night-only charging) inside the window;
opened at once on A, E, F and faults. When the offer is withdrawn (stop, limit below 6 A) the
EV gets ``STOP_GRACE_MS`` to go back to B and stop drawing current before the contactor opens
under load (IEC 61851-1 A.3.3 allows it 3 s).

Sessions (docs/device-contract.md 14): one starts when an authorised EV is connected and the
meter's energy is known, under the ``id_tag`` that authorised it (a card, an app or guest
token; none for plug-and-charge). Each gets a number that is never reused: the counter lives in
``record()``, which the master keeps in NVS with the open session, so that a session cut by a
power loss is closed at the next boot (``restore``: reason ``power_loss``, with the last meter
reading saved). ``charging.started``/``charging.stopped`` carry the session, the connector, the
id_tag and the meter readings; the stop reasons are the contract's (``STOP_REASONS``). Faults
and state E suspend a session; a fault that lasts ``FAULT_END_MS`` ends it (``fault``).

Cards (``present_card``): the master checks the local authorization list and passes the
verdict; the same card during its own session stops it (``local``), another card is ignored
(``authorization.ignored``), a refused one is reported (``authorization.refused``). A card shown
before the cable is plugged in waits ``CARD_WAIT_MS`` for the EV.
"""

A, B, C, D, E, F = "A", "B", "C", "D", "E", "F"
STATES = (A, B, C, D, E, F)
LEVELS = ((A, 12.0), (B, 9.0), (C, 6.0), (D, 3.0), (E, 0.0), (F, -12.0))
TOLERANCE_V = 1.0

MIN_CURRENT_A = 6.0  # below it IEC 61851 cannot offer a charge
MAX_CURRENT_A = 80.0
DUTY_OFF = 100.0  # steady +12 V: EV connected, no current offered
DUTY_F = 0.0  # steady -12 V: state F
STOP_GRACE_MS = 3000
CP_LOW_MIN_V = -13.0  # with PWM running the low level is -12 V; higher means no EV diode
CP_LOW_MAX_V = -11.0

CONNECTOR = 1  # a native charger has one connector (the families' charging.start: max 1)
# charging.stopped reasons (docs/device-contract.md 14); anything else is reported as "other".
STOP_REASONS = (
    "remote",
    "local",
    "ev_disconnected",
    "schedule_end",
    "fault",
    "power_loss",
    "deauthorized",
    "other",
)
# A fault that outlives a slave's probe cycles (5 s) and a short overtemperature is not a
# glitch: the session ends, so that a broken charger does not keep a session open for hours.
FAULT_END_MS = 60000
# A card shown before the cable is in waits this long for the EV (OCPP's ConnectionTimeOut).
CARD_WAIT_MS = 60000
# While a session runs its record (last meter reading) is saved at most this often: what a
# power loss costs the bill, traded against flash wear (NVS is log-structured, wear-levelled).
SAVE_MS = 60000
DAY_S = 86400


def cp_state(volts: "float | None") -> str:
    """The CP state of a measured high level; E for anything outside every band."""
    if volts is None:
        return E
    for state, level in LEVELS:
        if level - TOLERANCE_V <= volts <= level + TOLERANCE_V:
            return state
    return E


def duty_for_current(amps: float) -> float:
    """The PWM duty cycle (percent) that offers ``amps``; DUTY_OFF below 6 A."""
    if amps < MIN_CURRENT_A:
        return DUTY_OFF
    amps = min(amps, MAX_CURRENT_A)
    if amps <= 51.0:
        return round(amps / 0.6, 2)
    return round(amps / 2.5 + 64.0, 2)


def current_for_duty(duty: float) -> float:
    """What an EV may draw for a duty cycle (Table A.8, the EV's side); 0 when none offered."""
    if duty < 8.0 or duty > 97.0:
        return 0.0  # 3-7 % asks for digital communication; 100 % offers nothing
    if duty < 10.0:
        return MIN_CURRENT_A
    if duty <= 85.0:
        return round(duty * 0.6, 2)
    return round(min((duty - 64.0) * 2.5, MAX_CURRENT_A), 2)


def in_window(now_ms: int, start_s: int, end_s: int, utc_offset_s: int = 0) -> bool:
    """Whether the local time of day at ``now_ms`` lies in [start_s, end_s) (seconds since
    local midnight, local = UTC + ``utc_offset_s``). A window whose end comes before its start
    runs over midnight (22h to 6h); start == end is the whole day."""
    second = (now_ms // 1000 + utc_offset_s) % DAY_S
    if start_s == end_s:
        return True
    if start_s < end_s:
        return start_s <= second < end_s
    return second >= start_s or second < end_s


def _number(value: "object") -> bool:
    return type(value) is int or type(value) is float


class Charger:
    """The EVSE side of one connector. Call ``update`` every control cycle."""

    __slots__ = (
        "auth_tag",
        "auth_until_ms",
        "authorised",
        "available",
        "changed",
        "contactor",
        "duty",
        "events",
        "fault",
        "fault_since_ms",
        "limit_a",
        "saved_ms",
        "saved_wh",
        "session",
        "session_end_wh",
        "session_last_ms",
        "session_start_ms",
        "session_start_wh",
        "session_tag",
        "sessions",
        "state",
        "stop_deadline_ms",
        "ventilation",
        "window",
    )

    def __init__(self, ventilation: bool = True) -> None:
        self.ventilation = ventilation  # a site that can vent may charge in D
        self.state = A
        self.authorised = False
        self.auth_tag = None  # type: str | None  # the id_tag the authorisation came with
        self.auth_until_ms = None  # type: int | None  # a card waiting for the EV, until then
        self.available = True
        self.fault = None  # type: str | None
        self.fault_since_ms = None  # type: int | None
        self.duty = DUTY_OFF
        self.contactor = False
        self.limit_a = 0.0
        self.sessions = 0  # the number of the last session started (record(): never reused)
        self.session = None  # type: str | None  # the running session's id
        self.session_tag = None  # type: str | None
        self.session_start_ms = None  # type: int | None
        self.session_start_wh = None  # type: float | None
        self.session_end_wh = None  # type: float | None  # last energy seen in the session
        self.session_last_ms = None  # type: int | None  # when it was seen
        self.stop_deadline_ms = None  # type: int | None
        self.window = None  # type: bool | None  # the night window last cycle (None: no schedule)
        self.changed = False  # record() changed: save it now
        self.saved_ms = 0
        self.saved_wh = None  # type: float | None
        self.events = []  # type: list[tuple[str, str, dict[str, object]]]

    @property
    def in_session(self) -> bool:
        """True between charging.started and charging.stopped."""
        return self.session_start_ms is not None

    def authorise(self, id_tag: "str | None" = None) -> bool:
        """Allow charging (charging.start, or no RFID required) under ``id_tag``; False without
        an EV (an authorisation left waiting would serve whoever plugs in next) or while a
        session runs (its id_tag is fixed at the start)."""
        if self.state not in (B, C, D) or self.in_session:
            return False
        self.authorised = True
        self.auth_tag = id_tag
        self.auth_until_ms = None
        return True

    def present_card(self, uid: str, refusal: "str | None", now_ms: int) -> None:
        """A card at the reader. ``refusal``: None when the local list accepts it, else the
        contract's reason (``unknown``, ``expired``)."""
        if self.in_session:
            if uid == self.session_tag:
                # Its own card ends the session, even if the card expired meanwhile.
                self.stop(now_ms, "local")
            else:
                data = {
                    "id_tag": uid,
                    "connector": CONNECTOR,
                    "session": self.session,
                    "reason": "busy",
                }
                self.events.append(("authorization.ignored", "info", data))
            return
        if refusal is not None:
            data = {"id_tag": uid, "connector": CONNECTOR, "reason": refusal}
            self.events.append(("authorization.refused", "warning", data))
            return
        self.authorised = True
        self.auth_tag = uid
        # Shown before the cable is in: the driver is at the charger, give the EV a minute.
        self.auth_until_ms = None if self.state in (B, C, D) else now_ms + CARD_WAIT_MS

    def stop(self, now_ms: int, reason: str = "remote") -> bool:
        """Withdraw authorisation and end the session; False when there was none."""
        was = self.in_session or self.authorised
        self._deauthorise()
        self._end_session(now_ms, reason)
        return was

    def set_fault(self, reason: "str | None") -> None:
        """Set (reason) or clear (None) a fault: overtemperature, a silent slave..."""
        if reason == self.fault:
            return
        if reason is not None:
            self.events.append(("charging.fault", "error", {"reason": reason}))
        else:
            self.events.append(("charging.fault_cleared", "info", {"reason": self.fault}))
        self.fault = reason

    def set_available(self, available: bool) -> None:
        """Make the connector unavailable (state F) or available again."""
        self.available = available

    def session_energy_wh(self) -> float:
        """Energy delivered in the current (or last) session so far."""
        if self.session_start_wh is None or self.session_end_wh is None:
            return 0.0
        return max(0.0, round(self.session_end_wh - self.session_start_wh, 3))

    def session_s(self, now_ms: int) -> int:
        """Seconds since the session started (0 without a session)."""
        if self.session_start_ms is None:
            return 0
        return max(0, (now_ms - self.session_start_ms) // 1000)

    # --- what survives a reboot -------------------------------------------------------------

    def record(self) -> "dict[str, object]":
        """The NVS record: the last session number and the open session, if any."""
        record = {"n": self.sessions}  # type: dict[str, object]
        if self.in_session:
            record["open"] = {
                "session": self.session,
                "id_tag": self.session_tag,
                "start_ms": self.session_start_ms,
                "start_wh": self.session_start_wh,
                "wh": self.session_end_wh,
                "ms": self.session_last_ms,
            }
        return record

    def restore(self, record: object, now_ms: int) -> None:
        """At boot: go on numbering from ``record``; a session it holds open was cut by a power
        loss or a reset: close it (``power_loss``) with the last meter reading saved."""
        if type(record) is not dict:
            return
        number = record.get("n")
        if type(number) is int and number > self.sessions:
            self.sessions = number
        found = record.get("open")
        if type(found) is not dict:
            return
        start_ms, start_wh = found.get("start_ms"), found.get("start_wh")
        last_ms, last_wh = found.get("ms"), found.get("wh")
        session, tag = found.get("session"), found.get("id_tag")
        if not (
            type(session) is str
            and type(start_ms) is int
            and type(last_ms) is int
            and _number(start_wh)
            and _number(last_wh)
            and (tag is None or type(tag) is str)
        ):
            return  # a torn record: nothing billable can be made of it
        self.session = session
        self.session_tag = tag
        self.session_start_ms = start_ms
        self.session_start_wh = start_wh
        self.session_end_wh = last_wh
        self.session_last_ms = last_ms
        self._end_session(now_ms, "power_loss", last_ms)

    def save_due(self, now_ms: int) -> bool:
        """Whether ``record()`` should be written now: it changed (a session started or ended),
        or the running session's meter reading moved and the last save is SAVE_MS old."""
        if self.changed:
            return True
        return (
            self.in_session
            and now_ms - self.saved_ms >= SAVE_MS
            and self.session_end_wh != self.saved_wh
        )

    def saved(self, now_ms: int) -> None:
        """``record()`` was written at ``now_ms``."""
        self.changed = False
        self.saved_ms = now_ms
        self.saved_wh = self.session_end_wh

    # --- the control cycle ------------------------------------------------------------------

    def update(
        self,
        now_ms: int,
        cp_volts: "float | None",
        pp_a: "float | None",
        max_current_a: float,
        energy_wh: "float | None",
        load_limit_a: "float | None" = None,
        auto_authorise: bool = False,
        cp_low_volts: "float | None" = None,
        window: "bool | None" = None,
    ) -> None:
        """One control cycle: new CP state, current offered (``duty``), ``contactor``.

        ``cp_volts``: the pilot's high level, None when it could not be read (state kept);

        ``pp_a``: the cable's rating from the proximity pilot (None or 0: no cable, nothing
        offered); ``load_limit_a``: the site's load management, None for no limit;
        ``window``: night-only charging, whether now is inside the night window (None: no
        schedule). A session runs on outside it without current, and ends (``schedule_end``)
        when the window closes.
        """
        # Unknown (the relay did not answer): keep the last state; the master sets a fault.
        state = self.state if cp_volts is None else cp_state(cp_volts)
        # With PWM running the pilot must swing to -12 V: if it does not, the EV's diode is
        # missing or the pilot is shorted (IEC 61851-1 A.2.2 b): treat as E.
        if (
            cp_low_volts is not None
            and DUTY_F < self.duty < DUTY_OFF
            and state in (B, C, D)
            and not CP_LOW_MIN_V <= cp_low_volts <= CP_LOW_MAX_V
        ):
            state = E
        # The reading of this cycle still belongs to a session that ends in it.
        if energy_wh is not None and self.in_session:
            self.session_end_wh = energy_wh
            self.session_last_ms = now_ms
        previous = self.state
        if state != previous:
            severity = "error" if state == E else "info"
            self.events.append(("charging.state", severity, {"from": previous, "to": state}))
            self.state = state
            if state == B and previous == A and auto_authorise and not self.authorised:
                self.authorised = True
                self.auth_tag = None
        if state == A:
            self._end_session(now_ms, "ev_disconnected")
            # Unplugged: the authorisation goes with the EV (but a card shown while no EV
            # was there waits its minute).
            if previous != A or self.auth_until_ms is None:
                self._deauthorise()
        if self.auth_until_ms is not None:
            if state in (B, C, D):
                self.auth_until_ms = None  # the EV came in time: the card holds now
            elif now_ms >= self.auth_until_ms:
                self._deauthorise()
        if self.fault is None:
            self.fault_since_ms = None
        elif self.fault_since_ms is None:
            self.fault_since_ms = now_ms
        elif self.in_session and now_ms - self.fault_since_ms >= FAULT_END_MS:
            self._deauthorise()
            self._end_session(now_ms, "fault")
        if window is False and self.window is True and self.in_session:
            self._deauthorise()
            self._end_session(now_ms, "schedule_end")
        self.window = window
        plugged = state in (B, C, D)
        if plugged and self.authorised and not self.in_session and energy_wh is not None:
            self._start_session(now_ms, energy_wh)
        limit = min(pp_a or 0.0, max_current_a)
        if load_limit_a is not None:
            limit = min(limit, load_limit_a)
        self.limit_a = float(limit)
        offering = (
            self.available
            and self.fault is None
            and self.authorised
            and plugged
            and self.in_session
            and window is not False
            and limit >= MIN_CURRENT_A
        )
        if not self.available or self.fault is not None:
            self.duty = DUTY_F
        elif offering:
            self.duty = duty_for_current(limit)
        else:
            self.duty = DUTY_OFF
        drawing = state == C or (state == D and self.ventilation)
        if offering and drawing:
            self.contactor = True
            self.stop_deadline_ms = None
        elif self.contactor:
            self._open(now_ms, drawing and self.fault is None and self.available)

    def _open(self, now_ms: int, grace: bool) -> None:
        # Still drawing when the offer went: give the EV its grace period to stop first.
        if grace:
            if self.stop_deadline_ms is None:
                self.stop_deadline_ms = now_ms + STOP_GRACE_MS
            if now_ms < self.stop_deadline_ms:
                return
        self.contactor = False
        self.stop_deadline_ms = None

    def _deauthorise(self) -> None:
        self.authorised = False
        self.auth_tag = None
        self.auth_until_ms = None

    def _start_session(self, now_ms: int, energy_wh: float) -> None:
        self.sessions += 1
        self.session = str(self.sessions)
        self.session_tag = self.auth_tag
        self.auth_until_ms = None
        self.session_start_ms = now_ms
        self.session_start_wh = energy_wh
        self.session_end_wh = energy_wh
        self.session_last_ms = now_ms
        self.changed = True
        data = {"session": self.session, "connector": CONNECTOR, "meter_start_wh": energy_wh}
        if self.session_tag is not None:
            data["id_tag"] = self.session_tag
        self.events.append(("charging.started", "info", data))

    def _end_session(self, now_ms: int, reason: str, end_ms: "int | None" = None) -> None:
        if self.session_start_ms is None:
            return
        if reason not in STOP_REASONS:
            reason = "other"
        data = {  # type: dict[str, object]
            "session": self.session,
            "connector": CONNECTOR,
            "meter_stop_wh": self.session_end_wh,
            "energy_wh": self.session_energy_wh(),
            "duration_s": self.session_s(now_ms if end_ms is None else end_ms),
            "reason": reason,
        }
        if self.session_tag is not None:
            data["id_tag"] = self.session_tag
        self.events.append(("charging.stopped", "info", data))
        self.session_start_ms = None
        self.session = None
        self.session_tag = None
        self.changed = True
