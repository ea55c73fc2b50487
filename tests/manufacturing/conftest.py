"""Fixtures of the manufacturing tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from flask import Flask
from werkzeug.serving import make_server


@pytest.fixture
def api(app: Flask, backend: str) -> Iterator[str]:
    """The API served over HTTP (the station is a separate program), SQLite only: the API's
    behaviour on MariaDB is the other tests'."""
    if backend != "sqlite":
        pytest.skip("the command's HTTP side is the same on either database")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(10)
