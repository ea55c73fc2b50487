"""REST resources of ``cloud.commands``: commands sent to a charger and their results."""
