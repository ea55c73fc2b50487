"""REST resources: /clients, machine identities for the client_credentials grant."""

from __future__ import annotations

import secrets
from typing import Any

from flask.views import MethodView
from sqlalchemy import Select, select

from cloud.api.auth import current_principal, requires
from cloud.api.blueprint import Blueprint
from cloud.api.identity.assignments import build_assignment, describe
from cloud.api.identity.schemas import (
    ClientSchema,
    ClientUpdateSchema,
    ClientWithSecretSchema,
    OrgQuerySchema,
)
from cloud.api.identity.users import hasher
from cloud.api.records import commit
from cloud.api.scoping import get_scoped, org_clause, target_org
from cloud.audit.service import changes, record
from cloud.db import request_session
from cloud.identity.models import ApiClient
from cloud.identity.rails import check_not_duplicate

clients = Blueprint(
    "clients",
    __name__,
    url_prefix="/clients",
    description="API clients: integrations that use client_credentials.",
)


def _with_secret(client: ApiClient) -> ApiClient:
    """Give ``client`` a fresh secret; the plain value is returned once and never stored."""
    secret = secrets.token_urlsafe(32)
    client.secret_hash = hasher().hash(secret)
    client.client_secret = secret  # type: ignore[attr-defined]  # transient, for the response
    return client


@clients.route("")
class Clients(MethodView):
    @requires("clients:read")
    @clients.arguments(OrgQuerySchema, location="query")
    @clients.response(200, ClientSchema(many=True))
    @clients.paginated()
    def get(self, query: dict[str, Any]) -> Select[Any]:
        """List API clients."""
        stmt = select(ApiClient).where(org_clause(ApiClient.organization_id, "clients:read"))
        if "organization_id" in query:
            stmt = stmt.where(ApiClient.organization_id == query["organization_id"])
        return stmt.order_by(ApiClient.id)

    @requires("clients:write")
    @clients.arguments(ClientSchema)
    @clients.response(201, ClientWithSecretSchema)
    def post(self, data: dict[str, Any]) -> ApiClient:
        """Create an API client; its secret is in this response only."""
        org_id = target_org(data["organization_id"], "clients:write")
        client = _with_secret(
            ApiClient(
                client_id="afc_" + secrets.token_hex(12),
                organization_id=org_id,
                name=data["name"],
                is_active=data["is_active"],
            )
        )
        for index, spec in enumerate(data["roles"]):
            assignment = build_assignment(spec, org_id, f"roles.{index}")
            check_not_duplicate(client.assignments, assignment, f"roles.{index}.role_id")
            client.assignments.append(assignment)
        session = request_session()
        session.add(client)
        session.flush()
        record(
            session,
            current_principal(),
            "client.create",
            "client",
            client.id,
            org_id,
            {"client_id": client.client_id, "roles": [describe(a) for a in client.assignments]},
        )
        commit()
        return client


@clients.route("/<id:client_id>", endpoint="Client")
class ClientItem(MethodView):
    @requires("clients:read")
    @clients.etag
    @clients.response(200, ClientSchema)
    def get(self, client_id: int) -> ApiClient:
        """Read an API client."""
        return get_scoped(ApiClient, client_id, "clients:read", "client")

    @requires("clients:write")
    @clients.etag
    @clients.arguments(ClientUpdateSchema)
    @clients.response(200, ClientSchema)
    def patch(self, data: dict[str, Any], client_id: int) -> ApiClient:
        """Rename, enable or disable an API client."""
        client = get_scoped(ApiClient, client_id, "clients:write", "client", read="clients:read")
        clients.check_etag(client, ClientSchema)
        diff = changes(client, data)
        if diff:
            record(
                request_session(),
                current_principal(),
                "client.update",
                "client",
                client.id,
                client.organization_id,
                diff,
            )
        commit()
        return client

    @requires("clients:delete")
    @clients.etag
    @clients.response(204)
    def delete(self, client_id: int) -> None:
        """Delete an API client; its tokens stop working at once."""
        client = get_scoped(ApiClient, client_id, "clients:delete", "client", read="clients:read")
        clients.check_etag(client, ClientSchema)
        session = request_session()
        record(
            session,
            current_principal(),
            "client.delete",
            "client",
            client.id,
            client.organization_id,
            {"client_id": client.client_id},
        )
        session.delete(client)
        commit()


@clients.route("/<id:client_id>/secret", endpoint="ClientSecret")
class ClientSecret(MethodView):
    @requires("clients:write")
    @clients.response(201, ClientWithSecretSchema)
    def post(self, client_id: int) -> ApiClient:
        """Rotate the client's secret; the old one stops working now."""
        client = get_scoped(ApiClient, client_id, "clients:write", "client", read="clients:read")
        _with_secret(client)
        record(
            request_session(),
            current_principal(),
            "client.rotate_secret",
            "client",
            client.id,
            client.organization_id,
            {},
        )
        commit()
        return client
