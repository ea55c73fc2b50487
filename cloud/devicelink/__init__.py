"""The cloud's side of the MQTT link: service connections to the broker."""
