"""REST resources of ``cloud.identity``: tokens, users, API clients, roles, permissions."""
