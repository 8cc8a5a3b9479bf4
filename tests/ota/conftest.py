"""Helpers shared by the OTA scenarios. Every verdict rests on evidence the device under test
did not write about itself: its UART (the monitor), the server's record, and flash read back
with esptool."""

from __future__ import annotations

from rig import firmware
from rig.build import Artifacts
from rig.ota import OtaScenario
from rig.server import ConnectionRecord

BOOT_TIMEOUT = 10  # seconds from reset to the first check's result, with a margin for slow CI


def assert_boots_slot_holding(ota: OtaScenario, artifacts: Artifacts) -> None:
    """Read otadata and the slot it selects back with esptool: they hold the served image."""
    table = firmware.PartitionTable.from_bytes(artifacts.partitions.read_bytes())
    otadata = ota.read_flash(table.otadata.offset, 2 * firmware.OTADATA_SECTOR)
    slot = firmware.active_ota_slot(otadata, len(table.ota_slots))
    assert slot is not None, "otadata selects no slot"
    image = artifacts.app.read_bytes()
    assert ota.read_flash(table.ota_slots[slot].offset, len(image)) == image


def refused_before_any_request(ota: OtaScenario) -> ConnectionRecord:
    """The server's view of a refused TLS handshake: one failed handshake, no HTTP request."""
    log = ota.server_log
    assert log.requests() == [], "the device sent an HTTP request over a connection it should have refused"
    failures = log.handshake_failures()
    assert len(failures) == 1, f"expected one refused handshake, the server saw {len(failures)}"
    return failures[0]
