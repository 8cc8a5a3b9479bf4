"""The rig's pytest plugin: --board, --profile and the OTA fixtures (rig/plugin.py)."""

pytest_plugins = ["rig.plugin"]
