"""Organizations (tenants) and their sites."""
