#!/usr/bin/env python3
"""Give Prometheus its API client and its configuration (docker-compose.yml's `prometheus-init`).

The API's /metrics needs `metrics:read`: Prometheus signs in with the client_credentials grant
of an API client holding the system role `monitoring`. This one-shot, run after the API is
healthy, signs in as the platform admin (AMPFLEET_ADMIN_EMAIL / AMPFLEET_ADMIN_PASSWORD),
creates that client once, and writes into OUT:

* `ampfleet-client-secret`: the client's secret (Prometheus's `client_secret_file`);
* `prometheus.yml`: TEMPLATE with `@AMPFLEET_CLIENT_ID@` replaced by the client's id
  (Prometheus has no `client_id_file` and does not expand variables in its configuration).

Idempotent: when OUT already holds a secret that the API still accepts, only prometheus.yml is
rewritten (so a changed template takes effect); otherwise a new client is created. Standard
library only: it runs in the ampfleet image and on a bare host alike.

    prometheus_init.py --api http://api:8080 --template prometheus.yml \
        --out /etc/prometheus/ampfleet
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

PLACEHOLDER = "@AMPFLEET_CLIENT_ID@"
CLIENT_NAME = "prometheus"


class InitError(Exception):
    """The API refused or could not be reached; the message says which request."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status; None: no answer


def _call(
    method: str,
    url: str,
    *,
    token: str = "",
    form: dict[str, str] | None = None,
    body: Any = None,
    basic: tuple[str, str] | None = None,
) -> Any:
    headers = {"Accept": "application/json"}
    data: bytes | None = None
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if basic is not None:
        pair = base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {pair}"
    # http(s) only: main() checks --api's scheme.
    request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - our API
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise InitError(f"{method} {url}: {exc.code} {detail}", exc.code) from exc
    except OSError as exc:
        raise InitError(f"{method} {url}: {exc}") from exc


def _client_works(api: str, client_id: str, secret: str) -> bool:
    try:
        _call(
            "POST",
            f"{api}/api/v1/auth/token",
            form={"grant_type": "client_credentials"},
            basic=(client_id, secret),
        )
    except InitError:
        return False
    return True


def _create_client(api: str, email: str, password: str) -> tuple[str, str]:
    tokens = _call(
        "POST",
        f"{api}/api/v1/auth/token",
        form={"grant_type": "password", "username": email, "password": password},
    )
    token = tokens["access_token"]
    me = _call("GET", f"{api}/api/v1/auth/me", token=token)
    roles = _call("GET", f"{api}/api/v1/roles?page_size=100", token=token)
    monitoring = [r["id"] for r in roles if r["name"] == "monitoring"]
    if not monitoring:
        raise InitError("the API has no `monitoring` role: run `ampfleet db upgrade`")
    client = _call(
        "POST",
        f"{api}/api/v1/clients",
        token=token,
        body={
            "name": CLIENT_NAME,
            "organization_id": me["organization_id"],
            "roles": [{"role_id": monitoring[0]}],
        },
    )
    return client["client_id"], client["client_secret"]


def _write(path: Path, text: str) -> None:
    # Prometheus runs as another user (nobody in its image): the files must be readable by it.
    # Only Prometheus and this one-shot mount the directory.
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    temporary.chmod(0o644)
    temporary.replace(path)


def init(api: str, template: Path, out: Path, email: str, password: str) -> str:
    """Ensure the client and write OUT's files; return what was done."""
    out.mkdir(parents=True, exist_ok=True)
    id_file, secret_file = out / "ampfleet-client-id", out / "ampfleet-client-secret"
    done = "kept"
    if not (
        id_file.exists()
        and secret_file.exists()
        and _client_works(api, id_file.read_text().strip(), secret_file.read_text().strip())
    ):
        if not password:
            raise InitError("AMPFLEET_ADMIN_PASSWORD is empty: set it in .env")
        client_id, secret = _create_client(api, email, password)
        _write(secret_file, secret + "\n")
        _write(id_file, client_id + "\n")
        done = "created"
    client_id = id_file.read_text().strip()
    _write(out / "prometheus.yml", template.read_text().replace(PLACEHOLDER, client_id))
    return f"{done} the API client {client_id}; wrote {out / 'prometheus.yml'}"


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, wait for the API, run ``init``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", required=True, help="Base URL of the API.")
    parser.add_argument("--template", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--wait", type=float, default=120, help="Seconds to wait for the API.")
    args = parser.parse_args(argv)
    if urllib.parse.urlsplit(args.api).scheme not in ("http", "https"):
        parser.error("--api: expected an http:// or https:// URL")
    email = os.environ.get("AMPFLEET_ADMIN_EMAIL", "admin@ampfleet.local")
    password = os.environ.get("AMPFLEET_ADMIN_PASSWORD", "")
    deadline = time.monotonic() + args.wait
    while True:
        try:
            print(init(args.api.rstrip("/"), args.template, args.out, email, password))
            return 0
        except InitError as exc:
            # Not up yet: wait. Refused (4xx: a wrong password...): waiting will not help.
            refused = exc.status is not None and exc.status < 500
            if refused or time.monotonic() >= deadline:
                print(f"prometheus-init: {exc}", file=sys.stderr)
                return 1
        time.sleep(2)


if __name__ == "__main__":
    sys.exit(main())
