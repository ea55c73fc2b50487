"""REST resources of the platform PKI: certificates issued to devices, their signing and
revocation, and the public CA chain and CRL."""
