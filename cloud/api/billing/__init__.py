"""cloud.api.billing."""
