"""REST resources of ``cloud.access``: RFID cards, owners and guests of a charger, invitations."""
