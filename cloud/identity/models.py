"""Users, API clients, roles, permissions, role assignments and refresh tokens."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import CheckConstraint, Column, ForeignKey, String, Table, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cloud.db import Base, utcnow


class Permission(Base):
    """A named right such as ``devices:read``; the catalogue lives in code (permissions.py)."""

    __tablename__ = "permissions"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(String(500), default="")


role_permissions = Table(
    "role_permissions",
    Base.metadata,
    Column("role_id", ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True),
    Column("permission", ForeignKey("permissions.name", ondelete="CASCADE"), primary_key=True),
)


class Role(Base):
    """An editable list of permissions. System roles (no organization) are seeded for everyone."""

    __tablename__ = "roles"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # NULL: a system role, visible to every organization, editable by platform admins only.
    organization_id: Mapped[int | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    permissions: Mapped[list[Permission]] = relationship(
        secondary=role_permissions, lazy="selectin", order_by=Permission.name
    )

    @property
    def permission_names(self) -> list[str]:
        """The names of this role's permissions, sorted."""
        return [p.name for p in self.permissions]


class User(Base):
    """A person who signs in. Belongs to one organization; acts through role assignments."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    email: Mapped[str] = mapped_column(String(254), unique=True)  # stored lower-case
    name: Mapped[str] = mapped_column(String(200), default="")
    # NULL for users who only sign in through the external OpenID Connect issuer.
    password_hash: Mapped[str | None] = mapped_column(String(256))
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    last_login_at: Mapped[dt.datetime | None]

    assignments: Mapped[list[RoleAssignment]] = relationship(
        back_populates="user", lazy="selectin", cascade="all, delete-orphan"
    )


class ApiClient(Base):
    """A machine identity for the OAuth2 client_credentials grant (integrations, services)."""

    __tablename__ = "api_clients"

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(256))
    name: Mapped[str] = mapped_column(String(200))
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    assignments: Mapped[list[RoleAssignment]] = relationship(
        back_populates="client", lazy="selectin", cascade="all, delete-orphan"
    )


class RoleAssignment(Base):
    """A user or client holds a role in an organization, optionally narrowed to a site or group."""

    __tablename__ = "role_assignments"
    __table_args__ = (
        CheckConstraint("(user_id IS NULL) <> (client_id IS NULL)", name="exactly_one_holder"),
        CheckConstraint("site_id IS NULL OR device_group_id IS NULL", name="one_narrowing_at_most"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    client_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_clients.id", ondelete="CASCADE"), index=True
    )
    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"), index=True)
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    device_group_id: Mapped[int | None] = mapped_column(
        ForeignKey("device_groups.id", ondelete="CASCADE")
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    role: Mapped[Role] = relationship(lazy="selectin")
    user: Mapped[User | None] = relationship(back_populates="assignments")
    client: Mapped[ApiClient | None] = relationship(back_populates="assignments")


class RefreshToken(Base):
    """A refresh token, rotated on every use. A reused (already rotated) token revokes its family:
    it means the token was stolen (OAuth 2.0 Security BCP, RFC 9700 section 4.14)."""

    __tablename__ = "refresh_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # public part of the token
    family_id: Mapped[str] = mapped_column(String(32), index=True)
    secret_hash: Mapped[str] = mapped_column(String(256))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]


class LoginFailures(Base):
    """Failed password logins counted under one key: an account from one address, an address,
    or an account from anywhere (cloud.identity.throttle). In the database rather than in
    process memory so that every API worker process counts the same failures; the key is a hash,
    so neither addresses nor guessed e-mails are kept here, and rows whose failures left the
    window are deleted, so the table does not grow without bound."""

    __tablename__ = "login_failures"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex of kind+value
    failures: Mapped[int]
    last_failed_at: Mapped[dt.datetime] = mapped_column(index=True)
    # Set once ``failures`` reaches the key's limit: no password is checked under it till then.
    blocked_until: Mapped[dt.datetime | None]
