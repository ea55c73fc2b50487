"""cloud.api.telemetry."""
