"""Broker side: amqtt plugins (embedded) and Mosquitto dynamic-security provisioning.

Exceptions (defined in ``broker.errors``)::

    BrokerAdminError                 base of this package: keeping a broker in step with the
    │                                registry failed
    ├── BrokerUnavailable            the broker cannot be reached (or did not answer in time)
    └── BrokerCommandError           the broker refused a command (the message says which)
"""

from broker.errors import BrokerAdminError, BrokerCommandError, BrokerUnavailable

__all__ = ["BrokerAdminError", "BrokerCommandError", "BrokerUnavailable"]
