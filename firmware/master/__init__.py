"""The master MCU application (ESP32-C3): cloud link, charging control, slaves, OTA."""
