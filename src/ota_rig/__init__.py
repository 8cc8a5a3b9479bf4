"""A hardware-in-the-loop rig that proves an ESP32 updates itself securely over HTTPS."""

__version__ = "0.2.0"
