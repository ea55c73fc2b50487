"""Test helpers: an API client that carries a token, and a tenant factory."""

from __future__ import annotations

import dataclasses
import secrets
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from cloud.db import get_database
from cloud.devices.models import Device
from parameters import known_families

ADMIN_EMAIL = "admin@ampfleet.test"
ADMIN_PASSWORD = "admin-password-for-tests"
PASSWORD = "a-long-enough-password"
API = "/api/v1"
# The PKI's key-encryption key of every test app: explicit, so that no test makes the embedded
# default under ~/.config.
PKI_KEK = "dGVzdC1vbmx5LWtlay1mb3ItYW1wZmxlZXQtdGVzdHM="


def settings_for(data_dir: Path, database_url: str, **overrides: Any) -> dict[str, Any]:
    """Settings of a test app or broker: fast KDF, files in ``data_dir``."""
    return {
        "data_dir": data_dir,
        "database_url": database_url,
        "testing": True,
        "password_kdf": "insecure-fast-for-tests",
        "log_level": "WARNING",
        # A device registered through POST /devices is approved by it, on either broker: the
        # factory whitelist (cloud.manufacturing) is tested on its own, with "whitelist".
        "device_approval": "registration",
        # Devices log in with passwords on either broker unless a test says otherwise (off is
        # production's default with an external broker: tests/broker/test_mtls_mosquitto.py).
        "broker_device_passwords": "true",
        "pki_kek": PKI_KEK,
        **overrides,
    }


class Client:
    """Thin wrapper over Flask's test client: JSON in, JSON out, bearer token attached."""

    def __init__(self, http: FlaskClient, token: str | None = None) -> None:
        self.http = http
        self.token = token

    def signed_in(self, email: str, password: str) -> Client:
        """A client holding a fresh access token for ``email``."""
        response = self.http.post(
            f"{API}/auth/token",
            data={"grant_type": "password", "username": email, "password": password},
        )
        assert response.status_code == 200, response.get_json()
        return Client(self.http, response.get_json()["access_token"])

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> TestResponse:
        """Send a request to /api/v1``path`` (paths already under /api/ are sent as they are)."""
        headers = dict(headers or {})
        token = token or self.token
        if token and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {token}"
        url = (
            path
            if path.startswith(("/api/", "/.well-known/", "/healthz", "/metrics"))
            else API + path
        )
        return self.http.open(url, method=method, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> TestResponse:
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> TestResponse:
        """PATCH with the current ETag in If-Match (fetched first), as a careful client does."""
        return self._with_etag("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> TestResponse:
        """DELETE with the current ETag in If-Match."""
        return self._with_etag("DELETE", path, **kwargs)

    def _with_etag(self, method: str, path: str, **kwargs: Any) -> TestResponse:
        headers = dict(kwargs.pop("headers", None) or {})
        if "If-Match" not in headers:
            current = self.get(path, token=kwargs.get("token"))
            if current.status_code == 200 and current.headers.get("ETag"):
                headers["If-Match"] = current.headers["ETag"]
        return self.request(method, path, headers=headers, **kwargs)

    def created(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` and return the created resource (asserting 201)."""
        response = self.post(path, json=body)
        assert response.status_code == 201, response.get_json()
        data: dict[str, Any] = response.get_json()
        return data


def role_id(client: Client, name: str) -> int:
    """The id of the system role ``name``."""
    roles = client.get("/roles", query_string={"name": name}).get_json()
    system = [r for r in roles if r["system"]]
    assert system, f"no system role {name}"
    return int(system[0]["id"])


@dataclasses.dataclass
class Tenant:
    """An organization made for one test, with ways to add users and devices to it."""

    admin: Client
    id: int
    slug: str

    @classmethod
    def create(cls, admin: Client) -> Tenant:
        slug = "t-" + secrets.token_hex(5)
        org = admin.created("/organizations", {"slug": slug, "name": f"Tenant {slug}"})
        return cls(admin, org["id"], slug)

    def user(self, role: str | None = None, **extra: Any) -> tuple[dict[str, Any], Client]:
        """A user of this organization holding ``role``; returns it and a signed-in client."""
        email = f"{secrets.token_hex(5)}@{self.slug}.test"
        roles = [{"role_id": role_id(self.admin, role), **extra}] if role else []
        user = self.admin.created(
            "/users",
            {"email": email, "password": PASSWORD, "organization_id": self.id, "roles": roles},
        )
        return user, Client(self.admin.http).signed_in(email, PASSWORD)

    def device(self, **fields: Any) -> dict[str, Any]:
        """A device of this organization.

        A ``hardware_family`` with no shipped schema (which the API refuses) is written behind
        the API: a device registered before families were checked, or whose family was retired.
        """
        body = {
            "serial": "SN-" + secrets.token_hex(6),
            "hardware_family": "ac22-3p",
            "organization_id": self.id,
            **fields,
        }
        family = body["hardware_family"]
        if family in known_families():
            return self.admin.created("/devices", body)
        device = self.admin.created("/devices", {**body, "hardware_family": "ac22-3p"})
        with get_database(self.admin.http.application).transaction() as session:
            stored = session.get(Device, device["id"])
            assert stored is not None
            stored.hardware_family = family
        return {**device, "hardware_family": family}
