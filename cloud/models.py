"""Every record model, imported in one place so the metadata (and Alembic) sees them all."""

from cloud.access.models import (
    AuthorizationList,
    AuthorizationListRequest,
    GuestCredential,
    Invitation,
    RfidCard,
)
from cloud.audit.models import AuditEntry
from cloud.billing.models import Tariff
from cloud.charging.models import ChargingSession
from cloud.commands.models import DeviceCommand
from cloud.configuration.models import ConfigChange, DeviceConfiguration
from cloud.db import Base
from cloud.devices.credentials import DeviceCredential
from cloud.devices.models import Device, DeviceGroup, DeviceStatus, device_group_members
from cloud.identity.grants import ChargerAccess
from cloud.identity.models import (
    ApiClient,
    Permission,
    RefreshToken,
    Role,
    RoleAssignment,
    User,
    role_permissions,
)
from cloud.manufacturing.models import BatchSerial, MacPool, ProductionBatch
from cloud.ocpp.models import OcppCharger
from cloud.organizations.models import Organization, Site
from cloud.pairing.models import ChargerCodes, PairingFailure
from cloud.pki.models import DeviceCertificate, PkiAuthority, PkiCrl, PkiKey

__all__ = [
    "ApiClient",
    "AuditEntry",
    "AuthorizationList",
    "AuthorizationListRequest",
    "Base",
    "BatchSerial",
    "ChargerAccess",
    "ChargerCodes",
    "ChargingSession",
    "ConfigChange",
    "Device",
    "DeviceCertificate",
    "DeviceCommand",
    "DeviceConfiguration",
    "DeviceCredential",
    "DeviceGroup",
    "DeviceStatus",
    "GuestCredential",
    "Invitation",
    "MacPool",
    "OcppCharger",
    "Organization",
    "PairingFailure",
    "Permission",
    "PkiAuthority",
    "PkiCrl",
    "PkiKey",
    "ProductionBatch",
    "RefreshToken",
    "RfidCard",
    "Role",
    "RoleAssignment",
    "Site",
    "Tariff",
    "User",
    "device_group_members",
    "role_permissions",
]
