"""OCPP 1.6J: the version module over the shared core (``cloud.ocpp``)."""
