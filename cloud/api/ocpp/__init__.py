"""cloud.api.ocpp."""
