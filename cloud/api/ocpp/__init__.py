"""REST resources of ``cloud.ocpp``: the OCPP chargers the bridge knows."""
