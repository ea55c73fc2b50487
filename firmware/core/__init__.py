"""The I/O-free core shared by the firmware, the simulators and the cloud (MicroPython-safe)."""
