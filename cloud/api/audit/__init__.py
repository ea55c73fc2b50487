"""REST resources of ``cloud.audit``: the audit log."""
