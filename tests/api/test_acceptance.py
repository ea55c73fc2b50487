"""The spine's acceptance story: admin, organization, operator, device, isolation."""

from __future__ import annotations

from cloud.api.auth import SECURITY
from tests.helpers import Client, Tenant


def test_admin_sets_up_an_organization_with_an_operator_and_a_device(
    admin: Client, tenant: Tenant, other_tenant: Tenant
) -> None:
    _, operator = tenant.user("operator")
    device = tenant.device(mac="24:0a:c4:00:00:01")
    assert device["mac"] == "24:0A:C4:00:00:01"
    path = device["_links"]["self"]["href"]

    read = operator.get(path)
    assert read.status_code == 200
    assert read.get_json()["serial"] == device["serial"]

    refused = operator.delete(path)
    assert refused.status_code == 403
    assert refused.get_json()["errors"] == {"permission": ["devices:delete"]}
    assert admin.get(path).status_code == 200  # still there

    _, stranger = other_tenant.user("organization-admin")
    for method in ("get", "patch", "delete"):
        response = getattr(stranger, method)(
            path, **({"json": {"name": "x"}} if method == "patch" else {})
        )
        assert response.status_code == 404, method
        assert response.get_json()["message"] == "device not found"
    assert device["id"] not in [d["id"] for d in stranger.get("/devices").get_json()]


def test_every_route_of_the_spine_is_in_the_openapi_document(client: Client) -> None:
    spec = client.get("/openapi.json").get_json()
    paths = set(spec["paths"])
    for resource in (
        "auth/token",
        "users",
        "roles",
        "permissions",
        "organizations",
        "sites",
        "devices",
        "device-groups",
        "audit-log",
    ):
        assert f"/api/v1/{resource}" in paths, resource
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    docs = client.get("/docs")
    assert docs.status_code == 200 and b"swagger" in docs.data.lower()


PUBLIC = {
    ("post", "/api/v1/auth/token"),
    ("post", "/api/v1/auth/revoke"),
    ("get", "/api/v1/auth/jwks"),
    # The invitation's secret (from the e-mailed link) is the credential of these two.
    ("get", "/api/v1/invitations/{invitation_id}/accept"),
    ("post", "/api/v1/invitations/{invitation_id}/accept"),
    # The PKI's public files: what brokers and devices fetch to verify certificates.
    ("get", "/api/v1/pki/ca.pem"),
    ("get", "/api/v1/pki/crl"),
    ("get", "/api/v1/pki/crl.pem"),
}
AUTHENTICATED_ONLY = {("get", "/api/v1/auth/me")}


def test_every_route_names_the_permission_it_checks(client: Client) -> None:
    spec = client.get("/openapi.json").get_json()
    unnamed = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method == "parameters" or (method, path) in PUBLIC | AUTHENTICATED_ONLY:
                continue
            permission = operation.get("x-required-permission")
            if not permission or operation.get("security") != SECURITY:
                unnamed.append(f"{method.upper()} {path}")
            else:
                assert f"`{permission}`" in operation["description"]
                assert {"401", "403"} <= set(operation["responses"])
    assert unnamed == []
