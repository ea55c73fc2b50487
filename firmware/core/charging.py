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
current offered, no fault and the EVSE available; opened at once on A, E, F and faults. When
the offer is withdrawn (stop, limit below 6 A) the EV gets ``STOP_GRACE_MS`` to go back to B
and stop drawing current before the contactor opens under load (IEC 61851-1 A.3.3 allows it 3 s).

Sessions: one starts when an authorised EV is connected and the meter's energy is known; it
ends when the EV is unplugged or ``stop`` is called (``charging.started``/``charging.stopped``
events, with energy and duration). Faults and state E suspend it without ending it.
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


class Charger:
    """The EVSE side of one connector. Call ``update`` every control cycle."""

    __slots__ = (
        "authorised",
        "available",
        "contactor",
        "duty",
        "events",
        "fault",
        "limit_a",
        "session_end_wh",
        "session_start_ms",
        "session_start_wh",
        "state",
        "stop_deadline_ms",
        "ventilation",
    )

    def __init__(self, ventilation: bool = True) -> None:
        self.ventilation = ventilation  # a site that can vent may charge in D
        self.state = A
        self.authorised = False
        self.available = True
        self.fault = None  # type: str | None
        self.duty = DUTY_OFF
        self.contactor = False
        self.limit_a = 0.0
        self.session_start_ms = None  # type: int | None
        self.session_start_wh = None  # type: float | None
        self.session_end_wh = None  # type: float | None  # last energy seen in the session
        self.stop_deadline_ms = None  # type: int | None
        self.events = []  # type: list

    @property
    def in_session(self) -> bool:
        """True between charging.started and charging.stopped."""
        return self.session_start_ms is not None

    def authorise(self) -> bool:
        """Allow charging (charging.start, RFID, or no RFID required); False without an EV:
        an authorisation left waiting would be used by whoever plugs in next."""
        if self.state not in (B, C, D):
            return False
        self.authorised = True
        return True

    def stop(self, now_ms: int, reason: str = "stopped") -> bool:
        """Withdraw authorisation and end the session; False when there was none."""
        was = self.in_session or self.authorised
        self.authorised = False
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
    ) -> None:
        """One control cycle: new CP state, current offered (``duty``), ``contactor``.

        ``cp_volts``: the pilot's high level, None when it could not be read (state kept);

        ``pp_a``: the cable's rating from the proximity pilot (None or 0: no cable, nothing
        offered); ``load_limit_a``: the site's load management, None for no limit.
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
        previous = self.state
        if state != previous:
            severity = "error" if state == E else "info"
            self.events.append(("charging.state", severity, {"from": previous, "to": state}))
            self.state = state
            if state == B and previous == A and auto_authorise:
                self.authorised = True
        if state == A:
            self.authorised = False
            self._end_session(now_ms, "ev_disconnected")
        plugged = state in (B, C, D)
        if plugged and self.authorised and not self.in_session and energy_wh is not None:
            self.session_start_ms = now_ms
            self.session_start_wh = energy_wh
            self.session_end_wh = energy_wh
            self.events.append(("charging.started", "info", {"energy_wh": energy_wh}))
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

    def _end_session(self, now_ms: int, reason: str) -> None:
        if self.session_start_ms is None:
            return
        data = {
            "reason": reason,
            "energy_wh": self.session_energy_wh(),
            "duration_s": self.session_s(now_ms),
        }
        self.events.append(("charging.stopped", "info", data))
        self.session_start_ms = None
