"""OCPP 1.6J over the shared core (``cloud.ocpp``): ``session.Charger16`` (the charger class the
server picks for ``ocpp1.6``), ``uplink.Uplink16`` (its requests read) and ``downlink`` (its
calls). Only what 1.6 says its own way lives here."""
