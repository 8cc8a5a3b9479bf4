"""A flash no real build would write never stops the chip model: the twin does what the real
bootloader does and stays alive, so esptool can put it right. Written with the real esptool,
read back through the UART."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import pytest

from ota_rig.bench.board import reset_and_read
from ota_rig.device import firmware

from .conftest import esptool

pytestmark = pytest.mark.virtual

SW_RESET = b"rst:0x3 (SW_RESET)"
RTC_WATCHDOG = b"rst:0x10 (RTCWDT_RTC_RESET)"


def table_with(table: firmware.PartitionTable, name: str, **changes: int) -> bytes:
    return firmware.PartitionTable(tuple(dataclasses.replace(p, **changes) if p.name == name else p
                                         for p in table.partitions)).to_bytes()


def write(board, tmp_path: Path, *parts: tuple[int, bytes]) -> None:
    """esptool write-flash of `parts`; a later part at the same offset replaces an earlier one."""
    files = []
    for offset, data in dict(parts).items():
        path = tmp_path / f"part-{offset:x}.bin"
        path.write_bytes(data)
        files += [f"0x{offset:x}", str(path)]
    board.enter_bootloader()
    done = esptool(board.port, "write-flash", *files, before="no-reset", after="no-reset")
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize(("name", "changes"), [
    ("spiffs", {"size": 0x200000}),  # 0x290000 + 2 MB ends past the 4 MB chip
    ("otadata", {"offset": 0x7FF000}),  # otadata past the end of the chip
])
def test_a_partition_beyond_the_flash_is_refused_as_the_bootloader_does(pty_board, artifacts, tmp_path, name, changes):
    """esp_partition_table_verify() refuses a partition that exceeds the flash chip size and the
    bootloader resets (its error lines are compiled out of Arduino's bootloader): a SW_RESET
    loop with no app line, until a good table is written."""
    table = firmware.PartitionTable.from_bytes(artifacts.partitions.read_bytes())
    write(pty_board, tmp_path, *[(o, p.read_bytes()) for o, p in artifacts.flash_files()],
          (firmware.PARTITION_TABLE_OFFSET, table_with(table, name, **changes)))
    seen = reset_and_read(pty_board, SW_RESET, timeout=10)
    assert b"entry 0x" in seen and SW_RESET in seen and b"Firmware version" not in seen
    write(pty_board, tmp_path, (firmware.PARTITION_TABLE_OFFSET, artifacts.partitions.read_bytes()))
    assert b"Firmware version 0.1" in reset_and_read(pty_board, b"Firmware version 0.1\r\n")


def test_a_bootloader_segment_of_2_gb_ends_in_watchdog_resets_not_a_dead_chip(pty_board, artifacts, tmp_path):
    bootloader = bytearray(artifacts.bootloader.read_bytes())
    struct.pack_into("<I", bootloader, 24 + 4, 0x80000000)  # the first segment's length
    write(pty_board, tmp_path, *[(o, p.read_bytes()) for o, p in artifacts.flash_files()],
          (firmware.BOOTLOADER_OFFSET, bytes(bootloader)))
    seen = reset_and_read(pty_board, RTC_WATCHDOG, timeout=10)
    assert b"load:0x3fff0030,len:2147483648\r\n" in seen
    write(pty_board, tmp_path, (firmware.BOOTLOADER_OFFSET, artifacts.bootloader.read_bytes()))
    assert b"Firmware version 0.1" in reset_and_read(pty_board, b"Firmware version 0.1\r\n")
    assert "Traceback" not in Path(pty_board.log_path).read_text()
