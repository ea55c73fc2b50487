"""The slave MCU application (ESP32-C3): serves its register map over I2C."""
