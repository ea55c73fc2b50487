"""Swagger UI's Authorize dialog signs in by itself: the OpenAPI document declares OAuth2's
password flow, and the token endpoint takes exactly what Swagger UI posts."""

from __future__ import annotations

import base64
from urllib.parse import urlencode

from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, API, Client


def _swagger_ui_login(client: Client, token_url: str, *, basic: bool) -> dict[str, object]:
    """POST what Swagger UI 5 (authorizePassword) sends with the client id and secret left
    empty: the form without empty fields, the empty client either as HTTP Basic ``:`` (the
    dialog's default) or left out of the body."""
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Accept": "application/json, text/plain, */*",
        "X-Requested-With": "XMLHttpRequest",
    }
    if basic:
        headers["Authorization"] = "Basic " + base64.b64encode(b":").decode()
    body = urlencode(
        {"grant_type": "password", "username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    )
    response = client.http.post(token_url, data=body, headers=headers)
    assert response.status_code == 200, response.get_json()
    answer: dict[str, object] = response.get_json()
    return answer


def test_the_document_declares_the_password_flow_and_its_token_url_works(client: Client) -> None:
    spec = client.get("/openapi.json").get_json()
    scheme = spec["components"]["securitySchemes"]["oauth2"]
    assert scheme["type"] == "oauth2"
    token_url = scheme["flows"]["password"]["tokenUrl"]
    assert token_url == f"{API}/auth/token"
    assert "post" in spec["paths"][token_url]
    # Every protected operation accepts the token the flow yields.
    devices = spec["paths"][f"{API}/devices"]["get"]
    assert {"oauth2": []} in devices["security"] and {"bearerAuth": []} in devices["security"]

    for basic in (True, False):
        tokens = _swagger_ui_login(client, token_url, basic=basic)
        assert str(tokens["token_type"]).lower() == "bearer"
        # Swagger UI then sends "Authorization: Bearer <access_token>".
        me = client.get("/auth/me", token=str(tokens["access_token"]))
        assert me.status_code == 200 and me.get_json()["name"] == ADMIN_EMAIL


def test_the_swagger_ui_page_still_loads(client: Client) -> None:
    page = client.get(f"{API}/docs")
    assert page.status_code == 200 and b"swagger" in page.data.lower()
