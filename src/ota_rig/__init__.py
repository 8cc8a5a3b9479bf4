"""esp32-ota-rig: a hardware-in-the-loop rig that proves an ESP32 updates itself securely over HTTPS."""

from importlib import metadata

__version__ = metadata.version("esp32-ota-rig")
