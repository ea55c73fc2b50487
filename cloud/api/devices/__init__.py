"""cloud.api.devices."""
