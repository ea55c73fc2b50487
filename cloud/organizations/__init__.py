"""Organizations (tenants) and their sites.

Exceptions::

    OrganizationsError         base of this package (nothing raises it yet: the HTTP layer
                               checks an organization's and a site's fields itself)
"""


class OrganizationsError(Exception):
    """Base of the organizations package's errors."""
