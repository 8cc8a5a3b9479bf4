"""The twin's Update library: what it leaves in flash, read straight from the flash file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ota_rig.device import firmware
from ota_rig.virtual.chip import DEFAULT_MAC, Chip, EFuses, Flash, parse_mac
from ota_rig.virtual.updater import ERROR_ACTIVATE, ERROR_MAGIC, ERROR_MD5, Updater

TABLE = firmware.PartitionTable.from_csv(firmware.DEFAULT_PARTITIONS_CSV)
APP0, APP1 = TABLE.ota_slots[0], TABLE.ota_slots[1]


@pytest.fixture
def chip(tmp_path: Path) -> Chip:
    flash = Flash(tmp_path / "flash.bin")
    flash.program(firmware.OTADATA_OFFSET, firmware.boot_app0())
    flash.program(APP1.offset + 0x30000, b"\x00" * 16)  # stale bytes a previous firmware left
    return Chip(flash, EFuses(parse_mac(DEFAULT_MAC)))


def image(version: str = "0.2", size: int = 0) -> bytes:
    return firmware.build_app_image(firmware.AppDescriptor(version=version, project_name="ota_https"), size=size)


def stream(updater: Updater, data: bytes, piece: int = 1500) -> int:
    """Feed `data` as a network would: at most `piece` bytes a read, never more than asked."""
    rest = memoryview(data)

    def read(count: int) -> bytes:
        nonlocal rest
        chunk, rest = bytes(rest[:min(count, piece)]), rest[min(count, piece):]
        return chunk

    return updater.write_stream(read)


def otadata(chip: Chip) -> bytes:
    return chip.flash.read(firmware.OTADATA_OFFSET, 2 * firmware.OTADATA_SECTOR)


def test_a_good_image_lands_in_the_next_slot_and_otadata_selects_it(chip: Chip) -> None:
    new = image(size=300_000)
    updater = Updater(chip, TABLE, APP0)
    assert updater.begin(len(new)) and updater.set_md5(hashlib.md5(new).hexdigest())
    assert stream(updater, new) == len(new)
    assert updater.end(), updater.error_text
    assert chip.flash.read(APP1.offset, len(new)) == new  # stale bytes erased, all written
    assert firmware.active_ota_slot(otadata(chip), 2) == 1
    entry = firmware.OtaEntry.from_bytes(otadata(chip)[firmware.OTADATA_SECTOR:])
    assert (entry.seq, entry.state) == (2, firmware.OtaState.NEW)


def test_the_first_16_bytes_wait_for_end_so_a_half_written_slot_never_boots(chip: Chip) -> None:
    new = image()
    updater = Updater(chip, TABLE, APP0)
    updater.begin(len(new))
    stream(updater, new)
    assert chip.flash.read(APP1.offset, 16) == b"\xff" * 16
    assert chip.flash.read(APP1.offset + 16, len(new) - 16) == new[16:]
    assert firmware.active_ota_slot(otadata(chip), 2) == 0


def test_a_wrong_md5_is_refused_and_otadata_is_untouched(chip: Chip) -> None:
    new = image()
    updater = Updater(chip, TABLE, APP0)
    updater.begin(len(new))
    updater.set_md5("0" * 32)
    stream(updater, new)
    assert not updater.end() and updater.error == ERROR_MD5 and updater.error_text == "MD5 Check Failed"
    assert otadata(chip) == firmware.boot_app0()


def test_an_image_not_starting_with_0xe9_is_refused_at_the_first_byte(chip: Chip) -> None:
    updater = Updater(chip, TABLE, APP0)
    updater.begin(5000)
    assert stream(updater, b"<html>" + b"x" * 4994) == 0
    assert updater.error == ERROR_MAGIC and updater.error_text == "Wrong Magic Byte"


def test_a_corrupt_body_fails_esp_idf_verification_with_its_line(chip: Chip) -> None:
    new = bytearray(image())
    new[0x2000] ^= 0xFF  # inside a segment: checksum and hash no longer match
    updater = Updater(chip, TABLE, APP0)
    updater.begin(len(new))
    stream(updater, bytes(new))
    assert not updater.end() and updater.error == ERROR_ACTIVATE
    (tag, message), = updater.idf_errors
    assert tag == "esp_image" and message.startswith("Checksum failed. Calculated 0x")
    assert otadata(chip) == firmware.boot_app0()
