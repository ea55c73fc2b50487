"""ampfleet firmware: MicroPython code for the ESP32-C3 master and slave MCUs, and simulators."""

# The version `ampfleet firmware build` stamps on a bundle unless given --version.
__version__ = "0.1.0"
