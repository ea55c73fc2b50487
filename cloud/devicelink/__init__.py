"""The cloud's side of the MQTT link: service connections to the broker.

Exceptions::

    DeviceLinkError            base of this package (nothing raises it yet: a lost connection
                               is the client's to retry, a rejected message goes to the reject
                               log)
"""


class DeviceLinkError(Exception):
    """Base of the devicelink package's errors."""
