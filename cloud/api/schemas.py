"""Base schemas shared by every resource."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields

from cloud.api.fields import Links


class Schema(ma.Schema):
    """Unknown fields are refused (marshmallow's RAISE), naming the field."""

    class Meta:
        unknown = ma.RAISE


class ResourceSchema(Schema):
    """A resource representation with hypermedia links."""

    links_ = Links()
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)

    def links(self, obj: Any) -> dict[str, str]:
        """Relations of ``obj``: at least ``self``."""
        raise NotImplementedError


class DeletedSchema(Schema):
    """Nothing: 204 bodies."""
