"""cloud.api.organizations."""
