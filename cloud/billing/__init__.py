"""cloud.billing."""
