"""What the OTA scenarios assert on. Every verdict rests on evidence the device under test
did not write about itself: its UART (the monitor), the server's record, and flash read back
with esptool."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ota_rig.bench.monitor import Monitor
from ota_rig.build.artifacts import Artifacts
from ota_rig.device import firmware
from ota_rig.scenario import OtaScenario
from ota_rig.server.records import TlsRecord

# What real arduino-cli builds with each core carry, recorded by hand from public sources.
REAL_BUILDS = json.loads((Path(__file__).parent / "real_builds.json").read_text())

BOOT_TIMEOUT = 10  # seconds from reset to the first check's result, with a margin for slow CI

# The headers stock HTTPUpdate sends on each core, in wire order: 2.0.14 as the reference has
# them (shared/reference/esp32-ota-device.md, 2); 3.x adds x-ESP32-BASE-MAC after Cache-Control
# (arduino-esp32 HTTPUpdate.cpp at a5f17797, master: its first release is unverified).
_STA_ON = ["x-ESP32-STA-MAC", "x-ESP32-AP-MAC", "x-ESP32-free-space", "x-ESP32-sketch-size", "x-ESP32-sketch-md5",
           "x-ESP32-sketch-sha256", "x-ESP32-chip-size", "x-ESP32-sdk-version", "x-ESP32-mode", "x-ESP32-version"]
STOCK_HEADERS = {
    "arduino-esp32-2.0": ["Host", "User-Agent", "Connection", "Cache-Control", *_STA_ON],
    "arduino-esp32-3": ["Host", "User-Agent", "Connection", "Cache-Control", "x-ESP32-BASE-MAC", *_STA_ON],
}


def partition_table(artifacts: Artifacts) -> firmware.PartitionTable:
    """The partition table the build was flashed with."""
    return firmware.PartitionTable.from_bytes(artifacts.partitions.read_bytes())


def read_otadata(ota: OtaScenario, artifacts: Artifacts) -> bytes:
    """Both otadata sectors, read back with esptool."""
    otadata = partition_table(artifacts).otadata
    assert otadata is not None, "the build's partition table has no otadata partition"
    return ota.read_flash(otadata.offset, 2 * firmware.OTADATA_SECTOR)


def assert_boots_slot_holding(ota: OtaScenario, artifacts: Artifacts,
                              state: firmware.OtaState = firmware.OtaState.VALID) -> None:
    """Read otadata back with esptool and check the slot it selects, in one esptool session:
    both otadata entries are whole (erased or with a matching CRC, never half-written), the
    selected one is in rollback `state` (VALID: the app confirmed itself at boot), and its slot
    holds the served image (the chip's MD5 of the slot against the image's: `esptool verify-flash`)."""
    table = partition_table(artifacts)
    otadata_partition = table.otadata
    assert otadata_partition is not None, "the build's partition table has no otadata partition"
    with ota.reading_flash("otadata and the slot it selects") as flash:
        otadata = flash.read(otadata_partition.offset, 2 * firmware.OTADATA_SECTOR)
        entries = firmware.ota_entries(otadata)
        assert all(entry.is_whole for entry in entries), f"otadata is half-written: {entries}"
        sector = firmware.active_sector(entries)
        assert sector is not None, "otadata selects no slot"
        assert entries[sector].state == state, f"the selected otadata entry is {entries[sector]}, not {state.name}"
        slot = firmware.active_ota_slot(otadata, len(table.ota_slots))
        assert slot is not None, "otadata selects no OTA slot"
        offset = table.ota_slots[slot].offset
        assert flash.holds(offset, artifacts.app), (
            f"ota_{slot} at 0x{offset:x} does not hold the served image {artifacts.app.name} (esptool verify-flash)"
        )


def refused_before_any_request(ota: OtaScenario) -> TlsRecord:
    """The server's view of a refused TLS handshake (its TLS record): one failed handshake, no HTTP request."""
    log = ota.server_log
    assert log.requests() == [], "the device sent an HTTP request over a connection it should have refused"
    failures = log.handshake_failures()
    assert len(failures) == 1, f"expected one refused handshake, the server saw {len(failures)}"
    tls = failures[0].tls
    assert tls is not None, "the failed handshake has no TLS record"
    return tls


def recovers_once_fixed(ota: OtaScenario, monitor: Monitor, fix: Callable[[], None], new: Artifacts,
                        old_version: str = "0.1") -> None:
    """After a refused update: `fix()` puts the server right, a reset finds the device still on
    `old_version`, it takes `new` at once, and esptool finds `new` in the slot otadata selects."""
    fix()
    ota.reset()
    monitor.expect_sequence([("reset", {"reason": "POWERON_RESET"}), ("firmware_version", {"version": old_version}),
                             "update_ok", ("reset", {"reason": "SW_CPU_RESET"}),
                             ("firmware_version", {"version": new.version})], timeout=2 * BOOT_TIMEOUT)
    assert_boots_slot_holding(ota, new)
