"""ampfleet cloud: the platform's REST API, domain services, records, workers and CLI."""

__version__ = "0.1.0"
