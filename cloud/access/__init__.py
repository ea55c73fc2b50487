"""cloud.access."""
