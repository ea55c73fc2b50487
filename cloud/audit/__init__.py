"""The audit log: who did what to which object, when and from where.

Exceptions::

    AuditError                 base of this package (nothing raises it yet: recording an
                               entry only adds a row to the caller's transaction)
"""


class AuditError(Exception):
    """Base of the audit package's errors."""
