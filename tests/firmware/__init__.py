"""Tests of the firmware package and its I/O-free core."""
