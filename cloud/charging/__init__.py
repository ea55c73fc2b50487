"""Charging sessions: started from the app, an RFID card or by a guest, built from the chargers'
``charging.*`` events (contract section 14), priced by tariff windows, reported for billing; the
cards, owners and guests who may use a charger, and its local authorization list."""
