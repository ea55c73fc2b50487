"""``ampfleet labels``: a factory station prints a sheet and releases by scanning, against the API
behind a real HTTP server."""

from __future__ import annotations

import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask
from werkzeug.serving import make_server

from cloud.cli import main
from tests.helpers import Client, Tenant
from tests.pairing.test_codes import pdf_qr_texts
from tests.pairing.test_pairing_api import split


@pytest.fixture
def api_url(app: Flask) -> Iterator[str]:
    """The app behind a real threaded HTTP server on a free port."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(10)


def test_a_station_prints_a_sheet_then_releases_by_scanning(
    client: Client, tenant: Tenant, api_url: str, tmp_path: Path
) -> None:
    _, station = tenant.user("factory-station")
    device = tenant.device(state="provisioned")
    sheet = tmp_path / "sheet.pdf"
    env = {"AMPFLEET_API_URL": api_url, "AMPFLEET_TOKEN": str(station.token)}
    runner = CliRunner()

    printed = runner.invoke(
        main, ["labels", "print", "--device", device["id"], "--out", str(sheet)], env=env
    )
    assert printed.exit_code == 0, printed.output
    assert stat.S_IMODE(sheet.stat().st_mode) == 0o600  # it holds the box code in clear
    _, found = pdf_qr_texts(sheet.read_bytes())
    charger, box = split(found)

    wrong_box = box[:-1] + ("0" if box[-1] != "0" else "1")  # a typo the check character sees
    scans = f"{charger}\n{wrong_box}\n{charger}\n{box}\n"
    released = runner.invoke(main, ["labels", "release"], input=scans, env=env)
    assert released.exit_code == 1  # one pair refused
    assert "REFUSED" in released.output and "box_code" in released.output
    assert f"released {device['id']}" in released.output
    assert station.get(f"/devices/{device['id']}").get_json()["state"] == "released"
