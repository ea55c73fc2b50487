"""cloud.api.commands."""
