"""ESP-IDF's otadata on the chip's flash: which OTA slot boots, and the app rollback states
(shared/reference/esp32-ota-device.md, sections 12.3 and 13.3). Rollback is enabled in every
arduino-esp32 build, so an entry moves NEW -> PENDING_VERIFY -> VALID, or to ABORTED:

- `Update.end()` (esp_ota_set_boot_partition) writes the new slot's entry as NEW into the
  sector that is not active;
- the bootloader marks every PENDING_VERIFY entry ABORTED (an app that never confirmed
  itself), then, if the entry it boots is NEW, writes it back as PENDING_VERIFY;
- the core's initArduino(), before setup(), confirms a PENDING_VERIFY app as VALID
  (verifyOta() returns true unless the sketch says otherwise).

Every write erases the 4 KB sector first, then programs the 32-byte entry, so a power cut in
between leaves that sector erased (invalid) and the other sector decides: the old slot.
"""

from __future__ import annotations

import logging

from ota_rig.device import firmware
from ota_rig.device.firmware import OtaState, Partition, PartitionTable
from ota_rig.virtual.chip import Chip

log = logging.getLogger(__name__)


def read(chip: Chip, table: PartitionTable) -> bytes:
    assert table.otadata is not None
    return chip.flash.read(table.otadata.offset, 2 * firmware.OTADATA_SECTOR)


def write_entry(chip: Chip, table: PartitionTable, sector: int, entry: bytes) -> None:
    """Erase otadata sector `sector`, then program `entry` at its start."""
    assert table.otadata is not None
    address = table.otadata.offset + sector * firmware.OTADATA_SECTOR
    chip.flash.erase(address, firmware.OTADATA_SECTOR)
    chip.flash.program(address, entry)


def select(chip: Chip, table: PartitionTable, slot: Partition) -> None:
    """esp_ota_set_boot_partition(): `slot` boots next, in state NEW."""
    index = next(i for i, candidate in enumerate(table.ota_slots) if candidate.offset == slot.offset)
    sector, entry = firmware.select_ota_slot(read(chip, table), index, len(table.ota_slots), OtaState.NEW)
    write_entry(chip, table, sector, entry)
    log.info("otadata sector %d now boots %s (NEW)", sector, slot.name)


def _has_ota(table: PartitionTable) -> bool:
    return table.otadata is not None and bool(table.ota_slots)


def bootloader_rollback_step(chip: Chip, table: PartitionTable) -> None:
    """Before choosing a slot: PENDING_VERIFY entries become ABORTED; afterwards the chosen
    entry, if NEW, becomes PENDING_VERIFY (see `mark_booting`). Nothing without otadata."""
    if not _has_ota(table):
        return
    data = read(chip, table)
    for sector, entry in enumerate(firmware.ota_entries(data)):
        if entry.is_valid and entry.state == OtaState.PENDING_VERIFY:
            log.info("bootloader: otadata sector %d was never confirmed: ABORTED", sector)
            write_entry(chip, table, sector, firmware.restate(data, sector, OtaState.ABORTED))


def _active(chip: Chip, table: PartitionTable, slot: Partition) -> tuple[bytes, int] | None:
    """otadata and its active sector, if that sector selects `slot`."""
    data = read(chip, table)
    sector = firmware.active_sector(firmware.ota_entries(data))
    slots = list(table.ota_slots)
    if sector is None or firmware.active_ota_slot(data, len(slots)) != slots.index(slot):
        return None
    return data, sector


def _move(chip: Chip, table: PartitionTable, slot: Partition, before: OtaState, after: OtaState) -> None:
    active = _active(chip, table, slot)
    if active is None:
        return
    data, sector = active
    if firmware.ota_entries(data)[sector].state == before:
        write_entry(chip, table, sector, firmware.restate(data, sector, after))
        log.info("otadata sector %d: %s %s -> %s", sector, slot.name, before.name, after.name)


def mark_booting(chip: Chip, table: PartitionTable, slot: Partition) -> None:
    """The bootloader, about to start `slot`: a NEW entry becomes PENDING_VERIFY."""
    if _has_ota(table) and slot in table.ota_slots:
        _move(chip, table, slot, OtaState.NEW, OtaState.PENDING_VERIFY)


def mark_valid(chip: Chip, table: PartitionTable, slot: Partition) -> None:
    """initArduino(): esp_ota_mark_app_valid_cancel_rollback() for a PENDING_VERIFY app."""
    if _has_ota(table) and slot in table.ota_slots:
        _move(chip, table, slot, OtaState.PENDING_VERIFY, OtaState.VALID)
