"""What the device link raises. One root, so a caller can catch the link as a whole::

LinkError
 +-- CredentialsRefusedError  the broker refused the account (CONNACK 4 or 5): retrying
 |                            only hammers the broker, so the client stops trying
 +-- NotConnectedError        no connection to the broker right now (or it was lost
 |                            before the broker acknowledged)
 +-- LinkTimeoutError         the broker did not answer in time
"""

from __future__ import annotations


class LinkError(Exception):
    """Something between a cloud service and the broker went wrong."""


class CredentialsRefusedError(LinkError, ConnectionError):
    """The broker refused the account's credentials (MQTT 3.1.1 CONNACK 4 or 5)."""


class NotConnectedError(LinkError, ConnectionError):
    """There is no connection to the broker (or it was lost before an acknowledgement)."""


class LinkTimeoutError(LinkError, TimeoutError):
    """The broker did not answer in time."""
