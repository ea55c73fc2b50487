"""Representations of users, roles, permissions, API clients and tokens."""

from __future__ import annotations

from typing import Any

from flask import url_for
from marshmallow import ValidationError, fields, validate, validates_schema

from cloud.api.fields import Email, Id, QueryId, Text
from cloud.api.schemas import ResourceSchema, Schema
from cloud.identity.permissions import CATALOGUE

ROLE_NAME = validate.Regexp(
    r"^[a-z0-9][a-z0-9_-]{0,63}$", error="Use lower-case letters, digits, '-' and '_'."
)


class TokenRequestSchema(Schema):
    """OAuth2 token request (RFC 6749 section 4), form-encoded."""

    grant_type = fields.String(
        required=True,
        validate=validate.OneOf(["password", "client_credentials", "refresh_token"]),
    )
    username = Text(254)
    password = Text(256)
    client_id = Text(64)
    client_secret = Text(256)
    refresh_token = Text(512)
    scope = Text(1000)  # accepted and ignored: rights come from roles, not scopes


class TokenResponseSchema(Schema):
    """OAuth2 token response (RFC 6749 section 5.1)."""

    access_token = fields.String()
    token_type = fields.String()
    expires_in = fields.Integer()
    refresh_token = fields.String()


class RevokeRequestSchema(Schema):
    """Token revocation (RFC 7009)."""

    token = Text(512, required=True)
    token_type_hint = Text(32)


class GrantSchema(Schema):
    """A permission set held in one organization, maybe narrowed."""

    organization_id = fields.Integer()
    site_id = fields.Integer(allow_none=True)
    device_group_id = fields.Integer(allow_none=True)
    permissions = fields.List(fields.String())


class MeSchema(Schema):
    """The caller."""

    kind = fields.String()
    id = fields.Integer()
    name = fields.String()
    organization_id = fields.Integer()
    grants = fields.List(fields.Nested(GrantSchema))


class PermissionSchema(Schema):
    """A permission of the catalogue."""

    name = fields.String()
    description = fields.String()


def _known_permissions(names: list[str]) -> None:
    unknown = sorted(set(names) - set(CATALOGUE))
    if unknown:
        raise ValidationError(f"Unknown permissions: {', '.join(unknown)}.")


class RoleSchema(ResourceSchema):
    """A role: an editable list of permissions."""

    id = fields.Integer(dump_only=True)
    organization_id = Id(
        load_default=None,
        metadata={"description": "Organization the role belongs to; null for system roles."},
    )
    system = fields.Function(lambda role: role.organization_id is None, dump_only=True)
    name = Text(64, required=True, validate=ROLE_NAME)
    description = Text(500, load_default="")
    permissions = fields.List(
        Text(64), required=True, validate=_known_permissions, attribute="permission_names"
    )

    def links(self, obj: Any) -> dict[str, str]:
        links = {"self": url_for("roles.Role", role_id=obj.id)}
        if obj.organization_id is not None:
            links["organization"] = url_for(
                "organizations.Organization", organization_id=obj.organization_id
            )
        return links


class RoleUpdateSchema(Schema):
    """The fields of a role that can change."""

    description = Text(500)
    permissions = fields.List(Text(64), validate=_known_permissions)


class RoleQuerySchema(Schema):
    """Filters of the role list."""

    organization_id = QueryId()
    name = Text(64)


class RoleGrantSchema(Schema):
    """A role to hold in an organization, optionally narrowed to one site or device group."""

    role_id = Id(required=True)
    organization_id = Id(
        load_default=None, metadata={"description": "Defaults to the holder's organization."}
    )
    site_id = Id(load_default=None, allow_none=True)
    device_group_id = Id(load_default=None, allow_none=True)

    @validates_schema
    def _one_narrowing(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("site_id") is not None and data.get("device_group_id") is not None:
            raise ValidationError(
                "Narrow to a site or to a device group, not both.", "device_group_id"
            )


class AssignmentSchema(ResourceSchema, RoleGrantSchema):
    """A role assignment as stored."""

    id = fields.Integer(dump_only=True)
    role = fields.Function(lambda a: a.role.name, dump_only=True)

    class Meta(RoleGrantSchema.Meta):
        exclude = ("updated_at",)  # assignments are made and removed, never updated

    def links(self, obj: Any) -> dict[str, str]:
        holder = (
            url_for("users.User", user_id=obj.user_id)
            if obj.user_id
            else url_for("clients.Client", client_id=obj.client_id)
        )
        return {"role": url_for("roles.Role", role_id=obj.role_id), "holder": holder}


class UserSchema(ResourceSchema):
    """A user."""

    id = fields.Integer(dump_only=True)
    organization_id = Id(load_default=None)
    email = Email(required=True, validate=validate.Length(max=254))
    name = Text(200, load_default="")
    # NIST SP 800-63B asks at least 8; we ask 12. The maximum bounds the KDF's work.
    password = Text(
        256,
        min_length=12,
        load_only=True,
        load_default=None,
        metadata={
            "description": "At least 12 characters. Omit for users who sign in through OIDC."
        },
    )
    is_active = fields.Boolean(load_default=True)
    last_login_at = fields.DateTime(dump_only=True, allow_none=True)
    roles = fields.List(
        fields.Nested(RoleGrantSchema),
        load_only=True,
        load_default=list,
        validate=validate.Length(max=50),
    )
    assignments = fields.List(fields.Nested(AssignmentSchema), dump_only=True)

    def links(self, obj: Any) -> dict[str, str]:
        return {
            "self": url_for("users.User", user_id=obj.id),
            "organization": url_for(
                "organizations.Organization", organization_id=obj.organization_id
            ),
            "role_assignments": url_for("users.Assignments", user_id=obj.id),
        }


class UserUpdateSchema(Schema):
    """The fields of a user that can change."""

    name = Text(200)
    password = Text(256, min_length=12)
    is_active = fields.Boolean()


class UserQuerySchema(Schema):
    """Filters of the user list."""

    organization_id = QueryId()
    email = Text(254)
    q = Text(200, metadata={"description": "Substring of the e-mail or name."})


class ClientSchema(ResourceSchema):
    """An API client (client_credentials grant)."""

    id = fields.Integer(dump_only=True)
    client_id = fields.String(dump_only=True)
    organization_id = Id(load_default=None)
    name = Text(200, min_length=1, required=True)
    is_active = fields.Boolean(load_default=True)
    roles = fields.List(
        fields.Nested(RoleGrantSchema),
        load_only=True,
        load_default=list,
        validate=validate.Length(max=50),
    )
    assignments = fields.List(fields.Nested(AssignmentSchema), dump_only=True)

    def links(self, obj: Any) -> dict[str, str]:
        return {
            "self": url_for("clients.Client", client_id=obj.id),
            "secret": url_for("clients.ClientSecret", client_id=obj.id),
            "organization": url_for(
                "organizations.Organization", organization_id=obj.organization_id
            ),
        }


class ClientWithSecretSchema(ClientSchema):
    """An API client with its secret: shown once, at creation or rotation."""

    client_secret = fields.String(dump_only=True)


class ClientUpdateSchema(Schema):
    """The fields of an API client that can change."""

    name = Text(200, min_length=1)
    is_active = fields.Boolean()


class OrgQuerySchema(Schema):
    """Filter by organization."""

    organization_id = QueryId()
