"""REST resources of ``cloud.configuration``: a device's or group's parameters."""
