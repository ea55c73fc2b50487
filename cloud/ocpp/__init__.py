"""The OCPP bridge: third-party chargers (OCPP 1.6J and 2.0.1) as devices of the contract.

``ampfleet worker ocpp`` terminates OCPP over WebSocket (``server``: subprotocols, security
profiles 1-3, the registry as whitelist) and speaks the device contract over MQTT for every
charger it holds (``link``), so nothing behind the broker knows a charger is not native.

A shared core with one thin package per OCPP version (``v16``, ``v201``), as the ocpp library
is laid out. The protocol work is I/O-free: ``meter`` maps sampled values onto the family's
parameters, ``uplink`` turns what a charger sends into contract messages and OCPP answers,
``downlink`` turns contract commands into OCPP calls and their answers into command results,
``authorization`` judges id tokens by the charger's local authorization list; each version's
``uplink``/``downlink`` read and build what that version spells its own way. ``connection``
corrects the ocpp library's ``ChargePoint``, ``session`` is the session every version shares
and each version's ``session`` its charger class (one per connection), which ``server`` picks
by subprotocol; ``worker`` runs it all on one asyncio loop (uvloop's).

Exceptions::

    OcppBridgeError
     +-- HandshakeRefusedError      a connection is refused before the WebSocket opens
     +-- UnsupportedCommandError    a contract command has no OCPP translation for this charger
"""

from __future__ import annotations


class OcppBridgeError(Exception):
    """Base of this package's errors."""


class HandshakeRefusedError(OcppBridgeError):
    """The opening handshake is refused with HTTP ``status`` (401, 404, 400...)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


class UnsupportedCommandError(OcppBridgeError):
    """A command cannot be sent to this charger; ``reason`` goes into its ``rejected`` result
    (``unknown_command``, ``bad_args``, ``not supported by OCPP 1.6``...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
