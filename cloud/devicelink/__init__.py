"""The cloud's MQTT transport, and nothing else: one client library for every cloud service.

``client.Link`` (gmqtt on asyncio) with its ``subscriptions`` registry; ``threaded`` for
threaded callers (``ThreadedLink``, ``publish_batch``, ``end_session``); ``publisher`` under the
domain publishers; ``endpoint`` (where and as whom), ``errors`` (``LinkError`` and its tree),
``accounts`` (the service accounts' secrets), ``rejects`` and ``metrics`` (what every worker
shares). ``wire`` holds the gmqtt internals the client relies on. No domain imports.

Exceptions::

    LinkError
     +-- CredentialsRefusedError  the broker refused the account (CONNACK 4 or 5)
     +-- NotConnectedError        no connection to the broker right now
     +-- LinkTimeoutError         the broker did not answer in time
"""

from cloud.devicelink.errors import LinkError

__all__ = ["LinkError"]
