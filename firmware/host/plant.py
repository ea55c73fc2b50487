"""The physical side of a simulated charger: mains, contactor, pilot wire, cable and the EV,
and the sensor models that put them into the slaves' registers.

``Plant`` integrates energy over simulated time, piecewise: every change (duty, contactor, plug)
and every register access first advances the integration to "now" with the current that
flowed since the last change, so the energy the meter reports is exact for the simulated
session and does not depend on how often the master polls.
"""

from __future__ import annotations

from typing import Any

from firmware.core import charging, registers
from firmware.host.clock import SimClock

PHASE_VOLTAGES = (230.1, 229.8, 230.4)  # a slightly unbalanced grid: phases are told apart
FREQUENCY_HZ = 50.0
POWER_FACTOR = 0.99  # an on-board charger at full load
AMBIENT_C = 25.0
HEATING_C_PER_A2 = 0.008  # contact heating: 32 A -> +8 K


class SimEV:
    """An EV: plugs in, asks for current (state C) while it needs energy, then stops (B)."""

    __slots__ = (
        "cable_a",
        "full_at_ms",
        "max_current_a",
        "phases",
        "plant",
        "plugged",
        "received_wh",
        "target_wh",
        "unplug_after_ms",
        "ventilation",
    )

    def __init__(self, plant: Plant) -> None:
        self.plant = plant
        self.plugged = False
        self.target_wh = 0.0
        self.received_wh = 0.0
        self.max_current_a = 32.0
        self.phases = 3
        self.cable_a = 32
        self.ventilation = False
        self.unplug_after_ms: int | None = None
        self.full_at_ms: int | None = None

    def plug_in(
        self,
        target_wh: float = 10_000.0,
        max_current_a: float = 32.0,
        phases: int = 3,
        cable_a: int = 32,
        unplug_after_ms: int | None = None,
        ventilation: bool = False,
    ) -> None:
        """Connect the cable; the EV wants ``target_wh`` and unplugs ``unplug_after_ms`` after
        it is full (None: stays plugged until ``unplug``)."""
        if phases not in (1, 3):
            raise ValueError("an EV charges on 1 or 3 phases")
        self.plant.advance()
        self.plugged = True
        self.target_wh = float(target_wh)
        self.received_wh = 0.0
        self.max_current_a = float(max_current_a)
        self.phases = phases
        self.cable_a = cable_a
        self.ventilation = ventilation
        self.unplug_after_ms = unplug_after_ms
        self.full_at_ms = None

    def unplug(self) -> None:
        """Pull the cable."""
        self.plant.advance()
        self.plugged = False

    @property
    def full(self) -> bool:
        """True once it received its target energy."""
        return self.received_wh >= self.target_wh

    def wants(self, duty: float) -> bool:
        """True when it asks for charging: plugged, not full, and current is offered."""
        return self.plugged and not self.full and charging.current_for_duty(duty) > 0

    def draw_a(self, duty: float) -> float:
        """Current per phase it takes at this duty cycle (if the contactor is closed)."""
        return min(self.max_current_a, charging.current_for_duty(duty))

    def cp_volts(self, duty: float) -> float:
        """The pilot's high level with this EV's resistors switched in (IEC 61851-1 A.4)."""
        if not self.plugged:
            return 12.0
        if self.wants(duty):
            return 3.0 if self.ventilation else 6.0
        return 9.0


class Plant:
    """Mains, contactor, pilot and EV of one charger, integrated over simulated time."""

    __slots__ = (
        "clock",
        "contactor",
        "contactor_cmd_ms",
        "duty",
        "energy_wh",
        "ev",
        "last_ms",
        "temperature_override",
        "unlocks",
    )

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.ev = SimEV(self)
        self.duty = charging.DUTY_OFF
        self.contactor = False
        self.contactor_cmd_ms = clock.now_ms()
        self.energy_wh = 0.0
        self.last_ms = clock.now_ms()
        self.temperature_override: float | None = None
        self.unlocks = 0

    # --- what flows -------------------------------------------------------------------------

    def phase_currents(self) -> tuple[float, float, float]:
        """Current on L1, L2, L3 now."""
        ev = self.ev
        if not (self.contactor and ev.wants(self.duty)):
            return 0.0, 0.0, 0.0
        amps = ev.draw_a(self.duty)
        return (amps, amps, amps) if ev.phases == 3 else (amps, 0.0, 0.0)

    def power_w(self) -> float:
        """Active power now."""
        currents = self.phase_currents()
        return sum(v * i for v, i in zip(PHASE_VOLTAGES, currents, strict=True)) * POWER_FACTOR

    def advance(self, now_ms: int | None = None) -> None:
        """Integrate energy up to ``now_ms`` (default: the clock), applying the relay's
        watchdog and the EV's own decisions (full, unplug) at the moment they happen."""
        now = self.clock.now_ms() if now_ms is None else now_ms
        while self.last_ms < now:
            until = now
            watchdog = self.contactor_cmd_ms + registers.CONTACTOR_WATCHDOG_MS
            if self.contactor and watchdog < until:
                until = max(watchdog, self.last_ms)
            power = self.power_w()
            ev = self.ev
            if power > 0:
                needed_ms = (ev.target_wh - ev.received_wh) * 3_600_000 / power
                until = min(until, self.last_ms + max(1, int(needed_ms + 0.999)))
                energy = min(
                    power * (until - self.last_ms) / 3_600_000, ev.target_wh - ev.received_wh
                )
                self.energy_wh += energy
                ev.received_wh += energy
                if ev.full and ev.full_at_ms is None:
                    ev.full_at_ms = until
            self.last_ms = until
            if self.contactor and until >= watchdog:
                self.contactor = False  # no command from the master for too long
            if (
                ev.plugged
                and ev.full_at_ms is not None
                and ev.unplug_after_ms is not None
                and until >= ev.full_at_ms + ev.unplug_after_ms
            ):
                ev.plugged = False

    # --- what the master and the relay do to it ---------------------------------------------

    def set_duty(self, duty: float) -> None:
        """The master's CP generator changed its duty cycle."""
        self.advance()
        self.duty = duty

    def command_contactor(self, closed: bool, now_ms: int) -> None:
        """The relay slave drives the contactor coil (a command also feeds the watchdog)."""
        self.advance(now_ms)
        self.contactor = closed
        self.contactor_cmd_ms = now_ms

    # --- what the sensors see ---------------------------------------------------------------

    def cp_high_volts(self) -> float:
        """The high level of the pilot: -12 V when the EVSE drives state F."""
        if self.duty <= charging.DUTY_F:
            return -12.0
        return self.ev.cp_volts(self.duty)

    def cp_low_volts(self) -> float:
        """The low level: -12 V while the PWM runs (the EV's diode passes it), else the high."""
        if charging.DUTY_F < self.duty < charging.DUTY_OFF:
            return -12.0
        return self.cp_high_volts()

    def pp_a(self) -> int:
        """The cable rating coded by the proximity pilot resistor; 0 without a cable."""
        return self.ev.cable_a if self.ev.plugged else 0

    def temperature_c(self) -> float:
        """Relay temperature: ambient plus contact heating (or the injected value)."""
        if self.temperature_override is not None:
            return self.temperature_override
        current = max(self.phase_currents())
        return round(AMBIENT_C + HEATING_C_PER_A2 * current * current, 1)


class MeterSensors:
    """The meter slave's measuring front end: writes the plant's readings into its registers."""

    __slots__ = ("plant",)

    def __init__(self, plant: Plant) -> None:
        self.plant = plant

    def readings(self) -> dict[str, Any]:
        """Engineering values by parameter id (ids of the ac22-3p meter)."""
        plant = self.plant
        currents = plant.phase_currents()
        values: dict[str, Any] = {
            "energy_wh": plant.energy_wh,
            "power_w": round(plant.power_w(), 1),
            "frequency_hz": FREQUENCY_HZ,
            "power_factor": POWER_FACTOR if any(currents) else 1.0,
        }
        for index in range(3):
            values[f"current_l{index + 1}_a"] = currents[index]
            values[f"voltage_l{index + 1}_v"] = PHASE_VOLTAGES[index]
        return values

    def refresh(self, slave: Any, now_ms: int) -> None:
        """Before a read: bring the registers up to date."""
        self.plant.advance(now_ms)
        params = slave.family.params
        for parameter_id, value in self.readings().items():
            param = params.get(parameter_id)
            if param is not None and param.node == slave.node and param.on_i2c:
                slave.set(parameter_id, value)

    def written(self, slave: Any, register: int, data: bytes, now_ms: int) -> None:
        """The meter has nothing the master writes."""


class RelaySensors:
    """The relay slave's I/O: contactor coil and feedback, pilot and proximity, temperature."""

    __slots__ = ("cmd_register", "plant", "unlock_register")

    def __init__(self, plant: Plant, family: Any = None) -> None:
        self.plant = plant
        self.cmd_register = registers.RELAY[registers.CONTACTOR_CMD][0]
        unlock = family.params.get("connector.unlock") if family is not None else None
        self.unlock_register = unlock.register if unlock is not None and unlock.on_i2c else None

    def refresh(self, slave: Any, now_ms: int) -> None:
        """Before a read: measure."""
        plant = self.plant
        plant.advance(now_ms)
        high = plant.cp_high_volts()
        params = slave.family.params
        for parameter_id, value in (
            ("contactor_closed", plant.contactor),
            ("temperature_c", plant.temperature_c()),
            ("cp_state", charging.cp_state(high)),
            ("pp_current_a", plant.pp_a()),
        ):
            if parameter_id in params and params[parameter_id].node == slave.node:
                slave.set(parameter_id, value)
        slave.set_private(registers.CP_HIGH_DV, round(high * 10))
        slave.set_private(registers.CP_LOW_DV, round(plant.cp_low_volts() * 10))

    def written(self, slave: Any, register: int, data: bytes, now_ms: int) -> None:
        """After a write: drive the contactor, or unlock the connector."""
        if register == self.cmd_register:
            self.plant.command_contactor(data[0] == 1, now_ms)
        elif register == self.unlock_register and data[0]:
            self.plant.unlocks += 1
            slave.memory[register] = 0  # a command register reads back as done
