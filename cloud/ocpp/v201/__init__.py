"""OCPP 2.0.1: the version module over the shared core (``cloud.ocpp``)."""
