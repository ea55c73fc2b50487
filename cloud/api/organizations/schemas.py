"""Organization and site representations."""

from __future__ import annotations

import zoneinfo
from typing import Any

from flask import url_for
from marshmallow import ValidationError, fields, validate

from cloud.api.fields import Id, Number, QueryId, Text
from cloud.api.schemas import ResourceSchema, Schema

SLUG = validate.Regexp(
    r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$",
    error="Use lower-case letters, digits and inner dashes.",
)


class OrganizationSchema(ResourceSchema):
    """An organization (tenant)."""

    id = fields.Integer(dump_only=True)
    slug = Text(64, min_length=1, required=True, validate=SLUG)
    name = Text(200, min_length=1, required=True)

    def links(self, obj: Any) -> dict[str, str]:
        return {
            "self": url_for("organizations.Organization", organization_id=obj.id),
            "sites": url_for("sites.Sites", organization_id=obj.id),
            "devices": url_for("devices.Devices", organization_id=obj.id),
            "users": url_for("users.Users", organization_id=obj.id),
        }


class OrganizationUpdateSchema(Schema):
    """The fields of an organization that can change."""

    name = Text(200, min_length=1)


def _valid_zone(name: str) -> None:
    try:
        zoneinfo.ZoneInfo(name)
    # OSError: a name the file system refuses (ENAMETOOLONG and the like).
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValidationError("Not an IANA time zone, e.g. Europe/Berlin.") from exc


class SiteSchema(ResourceSchema):
    """A site."""

    id = fields.Integer(dump_only=True)
    organization_id = Id(load_default=None)
    name = Text(200, min_length=1, required=True)
    address = Text(500, load_default="")
    timezone = Text(64, load_default="UTC", validate=_valid_zone)
    latitude = Number(allow_none=True, load_default=None, validate=validate.Range(min=-90, max=90))
    longitude = Number(
        allow_none=True, load_default=None, validate=validate.Range(min=-180, max=180)
    )

    def links(self, obj: Any) -> dict[str, str]:
        return {
            "self": url_for("sites.Site", site_id=obj.id),
            "organization": url_for(
                "organizations.Organization", organization_id=obj.organization_id
            ),
            "devices": url_for("devices.Devices", site_id=obj.id),
        }


class SiteUpdateSchema(Schema):
    """The fields of a site that can change."""

    name = Text(200, min_length=1)
    address = Text(500)
    timezone = Text(64, validate=_valid_zone)
    latitude = Number(allow_none=True, validate=validate.Range(min=-90, max=90))
    longitude = Number(allow_none=True, validate=validate.Range(min=-180, max=180))


class SiteQuerySchema(Schema):
    """Filters of the site list."""

    organization_id = QueryId()
    name = Text(200)
