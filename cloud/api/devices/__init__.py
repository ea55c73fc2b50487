"""REST resources of ``cloud.devices``: the registry, device groups, MQTT credentials."""
