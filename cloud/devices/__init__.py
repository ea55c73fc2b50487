"""The device registry: chargers (native and OCPP) and device groups.

Exceptions::

    DevicesError               base of this package (nothing raises it yet: the registry's
                               refusals are field checks in the HTTP layer)
"""


class DevicesError(Exception):
    """Base of the devices package's errors."""
