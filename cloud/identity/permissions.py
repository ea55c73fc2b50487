"""The permission catalogue and the seeded roles.

Permissions are named strings ``<resource>:<action>``. Every API route names the one it needs;
roles are editable lists of them. The catalogue is code (routes refer to it); the database holds
a copy so roles can reference permissions with foreign keys.
"""

from __future__ import annotations

PLATFORM_ADMIN = "platform:admin"

CATALOGUE: dict[str, str] = {
    PLATFORM_ADMIN: "Act in every organization; create and delete organizations.",
    "organizations:read": "Read the organization.",
    "organizations:update": "Rename the organization.",
    "sites:read": "Read sites.",
    "sites:write": "Create and update sites.",
    "sites:delete": "Delete sites.",
    "users:read": "Read users and their role assignments.",
    "users:write": "Create and update users; assign and remove roles.",
    "users:delete": "Delete users.",
    "roles:read": "Read roles and the permission catalogue.",
    "roles:write": "Create and edit the organization's roles.",
    "roles:delete": "Delete the organization's roles.",
    "clients:read": "Read API clients (machine identities).",
    "clients:write": "Create API clients and rotate their secrets.",
    "clients:delete": "Delete API clients.",
    "devices:read": "Read devices and their state.",
    "devices:create": "Register devices.",
    "devices:update": "Update device records (name, site, lifecycle state).",
    "devices:delete": "Delete devices from the registry.",
    "devices:configure": "Change device parameters.",
    "devices:command": "Send commands to devices (reset, unlock, ...).",
    "devices:diagnostics": "Read logs and diagnostics, trigger diagnostic uploads.",
    "devices:credentials": "Issue, rotate and revoke device credentials.",
    "device-groups:read": "Read device groups.",
    "device-groups:write": "Create and edit device groups and their members.",
    "device-groups:delete": "Delete device groups.",
    "telemetry:read": "Read telemetry and device status.",
    "firmware:read": "Read firmware images and rollouts.",
    "firmware:upload": "Upload signed firmware images.",
    "firmware:deploy": "Start, pause and roll back firmware rollouts.",
    "charging:start": "Start charging sessions.",
    "charging:stop": "Stop charging sessions.",
    "sessions:read": "Read charging sessions.",
    "tariffs:write": "Set tariffs.",
    "billing:read": "Read billing reports and exports.",
    "cards:read": "Read RFID cards: one's own, or org-wide every card of the organization.",
    "cards:write": "Register, enable, disable and delete RFID cards.",
    "audit:read": "Read the audit log.",
    "manufacturing:read": "Read production batches, MAC pools, enrollments, quarantine.",
    "manufacturing:write": "Create production batches and MAC pools.",
    "manufacturing:approve": "Approve production batches (not one's own) and quarantined devices.",
    "manufacturing:enroll": "Enroll devices at a factory station: CSR signed, MAC assigned.",
    "manufacturing:release": "Print labels and release devices to market by scanning their codes.",
    "certificates:read": "Read the certificates issued to devices.",
    "certificates:revoke": "Revoke device certificates (the device is disconnected at once).",
    "devices:pair": "Pair a charger by scanning its two codes and become its owner; unpair.",
    "metrics:read": "Scrape the API's Prometheus metrics (give it to Prometheus's API client).",
}

# Fleet-wide rights: held by platform admins only (metrics count every tenant's devices).
PLATFORM_ONLY = frozenset({PLATFORM_ADMIN, "metrics:read"})
_ALL_BUT_PLATFORM = frozenset(CATALOGUE) - PLATFORM_ONLY
_READ = frozenset(p for p in CATALOGUE if p.endswith(":read")) - PLATFORM_ONLY

# The seeded roles (the seed's admin levels). Editable afterwards by platform admins.
SYSTEM_ROLES: dict[str, tuple[str, frozenset[str]]] = {
    "platform-admin": (
        "Runs the platform: every permission in every organization.",
        frozenset(CATALOGUE),
    ),
    "organization-admin": (
        "Administers one organization: everything inside it.",
        _ALL_BUT_PLATFORM,
    ),
    "operator": (
        "Runs the fleet day to day: devices, groups, sites, rollouts, sessions; "
        "cannot delete devices or manage people.",
        _READ
        | {
            "sites:write",
            "devices:create",
            "devices:update",
            "devices:configure",
            "devices:command",
            "devices:diagnostics",
            "devices:credentials",
            "device-groups:write",
            "firmware:deploy",
            "charging:start",
            "charging:stop",
            "tariffs:write",
            "cards:write",
        },
    ),
    "support": (
        "Helps customers: reads everything, runs diagnostics.",
        _READ | {"devices:diagnostics"},
    ),
    "installer": (
        "Installs and commissions chargers.",
        frozenset(
            {
                "organizations:read",
                "sites:read",
                "devices:read",
                "devices:update",
                "devices:configure",
                "devices:diagnostics",
                "telemetry:read",
                "device-groups:read",
            }
        ),
    ),
    "owner": (
        "Owns chargers: uses and configures them, sees their sessions.",
        frozenset(
            {
                "organizations:read",
                "devices:read",
                "devices:configure",
                "devices:command",
                "telemetry:read",
                "charging:start",
                "charging:stop",
                "sessions:read",
                "cards:read",
                "devices:pair",
            }
        ),
    ),
    "factory-station": (
        "A factory line's station (an API client): enrolls devices, prints labels, releases.",
        frozenset(
            {
                "manufacturing:read",
                "manufacturing:enroll",
                "manufacturing:release",
                "devices:read",
            }
        ),
    ),
    "monitoring": (
        "Prometheus's API client: scrapes /metrics, nothing else.",
        frozenset({"metrics:read"}),
    ),
    "guest": (
        "Invited to charge: starts and stops sessions on the chargers shared with them.",
        frozenset({"devices:read", "charging:start", "charging:stop", "devices:pair"}),
    ),
}

# What a system role must keep for its holders to go on administering: an edit of a system role
# may remove anything else, never these (cloud.identity.rails refuses it). Without them the
# role's holders could no longer repair their own role, and for platform-admin nobody could.
_ADMINISTER = frozenset(
    {"organizations:read", "users:read", "users:write", "roles:read", "roles:write"}
)
SYSTEM_ROLE_FLOORS: dict[str, frozenset[str]] = {
    "platform-admin": _ADMINISTER | {PLATFORM_ADMIN},
    "organization-admin": _ADMINISTER,
}
