"""cloud.api.identity."""
