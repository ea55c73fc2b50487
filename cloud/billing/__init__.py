"""Billing: tariffs, their time-of-day prices and the cost of a charging session.

Exceptions::

    BillingError               base of this package
     +-- TariffError           tariff values that cannot be used; names every field at fault
                               (``tariffs``)
"""


class BillingError(Exception):
    """Base of the billing package's errors."""
