"""Access to chargers: RFID cards, owners and guests, invitations, local authorization lists.

Exceptions::

    AccessError                    base of this package
     +-- InvitationError           an invitation that cannot be accepted: a short reason, a
         |                         message, the field at fault if one is (``invitations``)
         +-- InvitationClosedError revoked or expired, or already accepted (its ``reason``)
         +-- AccountError          the invitee's account cannot take it: disabled, or a
                                   ``field`` (the password) given wrongly
     +-- GuestCredentialError      no guest credential can be issued (``guestpass``): its
         |                         ``reason`` in a word
         +-- NotAGuestError        the caller is not a guest of the charger
         +-- OutsideWindowError    the guest's window is closed, or too far ahead

The HTTP answers (410, 409, 422...) are chosen in ``cloud.api.errors``.
"""


class AccessError(Exception):
    """Base of the access package's errors."""
