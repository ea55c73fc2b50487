"""cloud.api.configuration."""
