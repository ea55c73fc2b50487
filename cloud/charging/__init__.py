"""Charging sessions: started from the app, an RFID card or by a guest, built from the chargers'
``charging.*`` events (contract section 14), priced by tariff windows, reported for billing; the
cards, owners and guests who may use a charger, and its local authorization list.

Exceptions::

    ChargingError                base of this package
    ├── MalformedEventError      a charging event whose data breaks contract 14 (``events``)
    ├── ConcurrentChangeError    another transaction changed the session first: apply again
    │                            (``sessions``)
    └── SessionNotActiveError    a stop asked of a session that is not running (``sessions``)
"""


class ChargingError(Exception):
    """Base of the charging package's errors."""
