"""OCPP 2.0.1 over the shared core (``cloud.ocpp``): ``session.Charger201`` (the charger class
the server picks for ``ocpp2.0.1``), ``uplink.Uplink201`` (its requests read) and ``downlink``
(its calls). Only what 2.0.1 says its own way lives here."""
