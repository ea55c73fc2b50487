"""REST resources: /organizations and /sites."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from sqlalchemy import Select, func, select

from cloud.api.auth import current_principal, requires
from cloud.api.blueprint import Blueprint
from cloud.api.errors import field_error, forbidden, not_found
from cloud.api.organizations.schemas import (
    OrganizationSchema,
    OrganizationUpdateSchema,
    SiteQuerySchema,
    SiteSchema,
    SiteUpdateSchema,
)
from cloud.api.records import commit, ensure_unique
from cloud.api.scoping import get_scoped, org_clause, target_org
from cloud.audit.service import changes, record
from cloud.db import request_session
from cloud.devices.models import Device
from cloud.identity.permissions import PLATFORM_ADMIN
from cloud.identity.rails import keep_a_platform_admin
from cloud.organizations.models import PLATFORM_SLUG, Organization, Site

organizations = Blueprint(
    "organizations", __name__, url_prefix="/organizations", description="Organizations (tenants)."
)
sites = Blueprint("sites", __name__, url_prefix="/sites", description="Sites of an organization.")


@organizations.route("")
class Organizations(MethodView):
    @requires("organizations:read")
    @organizations.response(200, OrganizationSchema(many=True))
    @organizations.paginated()
    def get(self) -> Select[Any]:
        """List the organizations the caller can see."""
        return (
            select(Organization)
            .where(org_clause(Organization.id, "organizations:read"))
            .order_by(Organization.id)
        )

    @requires(PLATFORM_ADMIN)
    @organizations.arguments(OrganizationSchema)
    @organizations.response(201, OrganizationSchema)
    def post(self, data: dict[str, Any]) -> Organization:
        """Create an organization."""
        ensure_unique(Organization, "slug", data["slug"])
        org = Organization(**data)
        session = request_session()
        session.add(org)
        session.flush()
        record(
            session,
            current_principal(),
            "organization.create",
            "organization",
            org.id,
            org.id,
            data,
        )
        commit()
        return org


@organizations.route("/<id:organization_id>", endpoint="Organization")
class OrganizationItem(MethodView):
    @requires("organizations:read")
    @organizations.etag
    @organizations.response(200, OrganizationSchema)
    def get(self, organization_id: int) -> Organization:
        """Read an organization."""
        return get_scoped_org(organization_id, "organizations:read")

    @requires("organizations:update")
    @organizations.etag
    @organizations.arguments(OrganizationUpdateSchema)
    @organizations.response(200, OrganizationSchema)
    def patch(self, data: dict[str, Any], organization_id: int) -> Organization:
        """Rename an organization."""
        org = get_scoped_org(organization_id, "organizations:update")
        organizations.check_etag(org, OrganizationSchema)
        diff = changes(org, data)
        if diff:
            record(
                request_session(),
                current_principal(),
                "organization.update",
                "organization",
                org.id,
                org.id,
                diff,
            )
        commit()
        return org

    @requires(PLATFORM_ADMIN)
    @organizations.etag
    @organizations.response(204)
    def delete(self, organization_id: int) -> None:
        """Delete an organization with everything in it; refused while it has devices."""
        org = get_scoped_org(organization_id, PLATFORM_ADMIN)
        organizations.check_etag(org, OrganizationSchema)
        session = request_session()
        if org.slug == PLATFORM_SLUG:
            field_error(
                "organization_id",
                "the platform organization cannot be deleted",
                status=409,
                location="path",
            )
        if session.scalar(select(func.count()).where(Device.organization_id == org.id)):
            field_error(
                "organization_id",
                "the organization still has devices; move or delete them first",
                status=409,
                location="path",
            )
        record(
            session,
            current_principal(),
            "organization.delete",
            "organization",
            org.id,
            None,
            {"slug": org.slug, "name": org.name},
        )
        session.delete(org)
        # Its role assignments go with it, and one of them may be a platform admin's only grant.
        keep_a_platform_admin(session, f"deleting the organization {org.slug}")
        commit()


def get_scoped_org(organization_id: int, permission: str) -> Organization:
    """An organization where ``permission`` holds: 404 if unseen, 403 if seen but not allowed."""
    org = request_session().get(Organization, organization_id)
    principal = current_principal()
    if org is None or not principal.may_in(permission, organization_id):
        if org is not None and principal.may_in("organizations:read", organization_id):
            forbidden(permission)
        not_found("organization")
    return org


@sites.route("")
class Sites(MethodView):
    @requires("sites:read")
    @sites.arguments(SiteQuerySchema, location="query")
    @sites.response(200, SiteSchema(many=True))
    @sites.paginated()
    def get(self, query: dict[str, Any]) -> Select[Any]:
        """List sites, optionally of one organization or by name."""
        stmt = select(Site).where(org_clause(Site.organization_id, "sites:read"))
        if "organization_id" in query:
            stmt = stmt.where(Site.organization_id == query["organization_id"])
        if "name" in query:
            stmt = stmt.where(Site.name == query["name"])
        return stmt.order_by(Site.id)

    @requires("sites:write")
    @sites.arguments(SiteSchema)
    @sites.response(201, SiteSchema)
    def post(self, data: dict[str, Any]) -> Site:
        """Create a site."""
        data["organization_id"] = target_org(data["organization_id"], "sites:write")
        ensure_unique(Site, "name", data["name"], organization_id=data["organization_id"])
        site = Site(**data)
        session = request_session()
        session.add(site)
        session.flush()
        record(
            session,
            current_principal(),
            "site.create",
            "site",
            site.id,
            site.organization_id,
            {"name": site.name},
        )
        commit()
        return site


@sites.route("/<id:site_id>", endpoint="Site")
class SiteItem(MethodView):
    @requires("sites:read")
    @sites.etag
    @sites.response(200, SiteSchema)
    def get(self, site_id: int) -> Site:
        """Read a site."""
        return get_scoped(Site, site_id, "sites:read", "site")

    @requires("sites:write")
    @sites.etag
    @sites.arguments(SiteUpdateSchema)
    @sites.response(200, SiteSchema)
    def patch(self, data: dict[str, Any], site_id: int) -> Site:
        """Update a site."""
        site = get_scoped(Site, site_id, "sites:write", "site", read="sites:read")
        sites.check_etag(site, SiteSchema)
        if "name" in data:
            ensure_unique(
                Site, "name", data["name"], exclude=site, organization_id=site.organization_id
            )
        diff = changes(site, data)
        if diff:
            record(
                request_session(),
                current_principal(),
                "site.update",
                "site",
                site.id,
                site.organization_id,
                diff,
            )
        commit()
        return site

    @requires("sites:delete")
    @sites.etag
    @sites.response(204)
    def delete(self, site_id: int) -> None:
        """Delete a site; its devices stay, without a site."""
        site = get_scoped(Site, site_id, "sites:delete", "site", read="sites:read")
        sites.check_etag(site, SiteSchema)
        session = request_session()
        record(
            session,
            current_principal(),
            "site.delete",
            "site",
            site.id,
            site.organization_id,
            {"name": site.name},
        )
        session.delete(site)
        commit()
