"""Remote configuration: desired/reported parameter documents per device, obeying the schema.

The cloud keeps, per device, the *desired* document (what it wants, versioned) and the last
*reported* one (what the device says is in force); their difference is the *delta*. Every
accepted change is a ``ConfigChange`` row whose id is the correlation id of the ``config.apply``
command sent with the retained desired document (docs/device-contract.md 4.4, 4.5).

Exceptions::

    ConfigurationError
     +-- UnknownFamilyError        the device's hardware_family has no schema
"""


class ConfigurationError(Exception):
    """Base of this package's errors."""


class UnknownFamilyError(ConfigurationError):
    """The device's ``hardware_family`` names no shipped parameter schema."""

    def __init__(self, family_id: str) -> None:
        super().__init__(f"no parameter schema for hardware family {family_id!r}")
        self.family_id = family_id
