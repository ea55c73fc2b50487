"""Remote configuration: desired/reported parameter documents per device, obeying the schema.

The cloud keeps, per device, the *desired* document (what it wants, versioned) and the last
*reported* one (what the device says is in force); their difference is the *delta*. Every
accepted change is a ``ConfigChange`` row whose id is the correlation id of the ``config.apply``
command sent with the retained desired document (docs/device-contract.md 4.4, 4.5).

Exceptions::

    ConfigurationError

``UnknownFamilyError`` (the device's hardware_family has no schema) is raised by
``parameters.family_of`` and belongs to parameters' tree (ParameterSchemaError); it is
re-exported here, the same class, for the catchers that import it from this package.
"""

from parameters.errors import UnknownFamilyError

__all__ = ["ConfigurationError", "UnknownFamilyError"]


class ConfigurationError(Exception):
    """Base of this package's errors."""
