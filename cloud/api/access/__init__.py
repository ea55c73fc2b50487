"""cloud.api.access."""
