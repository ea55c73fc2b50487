"""REST resources of ``cloud.telemetry``: telemetry history, latest values, fleet status."""
