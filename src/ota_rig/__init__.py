"""esp32-ota-rig: a hardware-in-the-loop rig that proves an ESP32 updates itself securely over HTTPS."""


def __getattr__(name: str) -> str:
    """`__version__`, the installed distribution's, looked up on first use: importlib.metadata
    costs about 65 ms, and every esptool run the rig starts imports this package."""
    if name == "__version__":
        from importlib import metadata

        return metadata.version("esp32-ota-rig")
    raise AttributeError(f"module 'ota_rig' has no attribute {name!r}")
