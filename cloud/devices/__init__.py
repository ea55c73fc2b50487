"""The device registry: chargers (native and OCPP) and device groups."""
