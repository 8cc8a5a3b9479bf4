"""What the twin prints after a reset: the ROM banner, then the flashed app or the ROM's complaint.

Each test flashes with the real esptool, then reads the UART through the same RFC2217 port a
serial monitor would use, resetting the chip through RTS as esptool's hard reset does.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import serial

from ota_rig.bench.board import read_until, reset_and_read
from ota_rig.build.virtual_builder import VirtualBuilder
from ota_rig.device import firmware
from ota_rig.device.sketch_config import SketchConfig

from ..recorded import REAL_BUILDS
from .conftest import esptool, flash_args

pytestmark = pytest.mark.virtual

BANNER = b"ets Jul 29 2019 12:21:46\r\n\r\n"


@pytest.fixture(scope="module")
def flashed_board(rfc_board, artifacts):
    done = esptool(rfc_board.port, "write-flash", *flash_args(artifacts))
    assert done.returncode == 0, done.stdout
    assert "Hard resetting via RTS pin..." in done.stdout
    return rfc_board


def rom_lines(seen: bytes) -> list[str]:
    """What the ROM printed from the flash boot's `configsip` line to its `entry` line."""
    text = seen.decode()
    start, end = text.index("configsip:"), text.index("entry 0x")
    return text[start:text.index("\r\n", end)].split("\r\n")


def test_hard_reset_boots_the_flashed_app_and_prints_its_version(flashed_board, artifacts) -> None:
    seen = reset_and_read(flashed_board, f"Firmware version {artifacts.version}\r\n".encode())
    assert seen.startswith(BANNER + b"rst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n")
    # The ROM's lines are a real 2.0.14 board's: they come from the bootloader in flash.
    assert rom_lines(seen) == REAL_BUILDS["arduino-esp32-2.0"]["boot_log"]["lines"]
    # The app's first line comes straight after the ROM's (the second stage is silent).
    assert seen.split(b"entry 0x400805f0\r\n")[1].startswith(f"Firmware version {artifacts.version}\r\n".encode())


def test_a_3x_build_boots_with_the_3x_bootloaders_lines(pty_board, tmp_path) -> None:
    """A build for the 3.x core carries its own bootloader: four segments, one ending 12 bytes
    into a 16-byte block, which makes the ROM say `ho 0 tail 12 room 4`."""
    build = VirtualBuilder(tmp_path).build(replace(SketchConfig.without_server("0.3"), profile="arduino-esp32-3"))
    pty_board.enter_bootloader()
    done = esptool(pty_board.port, "write-flash", *flash_args(build), before="no-reset", after="no-reset")
    assert done.returncode == 0, done.stdout
    seen = reset_and_read(pty_board, b"Firmware version 0.3\r\n")
    assert rom_lines(seen) == REAL_BUILDS["arduino-esp32-3"]["boot_log"]["lines"]


def test_io0_low_at_reset_enters_download_mode_silently(flashed_board) -> None:
    with serial.serial_for_url(flashed_board.port, baudrate=115200, timeout=0.2) as line:
        line.dtr = False
        line.rts = True  # EN low
        line.dtr = True  # (1,1): EN held low by the RC network
        line.rts = False  # (1,0): EN released while IO0 is low
        seen = read_until(line, b"waiting for download\r\n", 5)
        assert (
            seen
            == BANNER
            + b"rst:0x1 (POWERON_RESET),boot:0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))\r\n"
            + b"waiting for download\r\n"
        )
        line.dtr = False
        assert line.read(256) == b"", "the loader must stay silent"


def test_after_erase_flash_the_rom_loops_on_an_invalid_header(flashed_board) -> None:
    done = esptool(flashed_board.port, "erase-flash")
    assert done.returncode == 0, done.stdout
    seen = reset_and_read(flashed_board, b"rst:0x10 (RTCWDT_RTC_RESET)", timeout=10)
    first, _, _ = seen.partition(b"rst:0x10")
    assert first.startswith(BANNER + b"rst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n")
    assert first.count(b"invalid header: 0xffffffff\r\n") == 8
    assert b"Firmware version" not in seen and b"load:" not in seen


def test_an_app_that_never_confirmed_itself_is_rolled_back_at_the_next_boot(pty_board, artifacts, tmp_path) -> None:
    """otadata selects app1 in state PENDING_VERIFY: the bootloader booted it once and it never
    reached initArduino()'s confirmation (a power cut, a crash). ESP-IDF's bootloader marks that
    entry ABORTED and boots the slot the other entry selects: app0, the old firmware."""
    newer = VirtualBuilder(tmp_path).build(SketchConfig.without_server("0.2"))
    confirmed = firmware.OtaEntry(1, firmware.OtaState.VALID).to_bytes().ljust(firmware.OTADATA_SECTOR, b"\xff")
    pending = firmware.OtaEntry(2, firmware.OtaState.PENDING_VERIFY).to_bytes().ljust(firmware.OTADATA_SECTOR, b"\xff")
    (tmp_path / "otadata.bin").write_bytes(confirmed + pending)
    files = [
        arg
        for offset, path in artifacts.flash_files()
        if offset != firmware.OTADATA_OFFSET
        for arg in (f"0x{offset:x}", str(path))
    ]
    pty_board.enter_bootloader()
    done = esptool(
        pty_board.port,
        "write-flash",
        *files,
        "0x150000",
        str(newer.app),
        "0xe000",
        str(tmp_path / "otadata.bin"),
        before="no-reset",
        after="no-reset",
    )
    assert done.returncode == 0, done.stdout

    seen = reset_and_read(pty_board, b"Firmware version 0.1\r\n")
    assert b"Firmware version 0.1\r\n" in seen and b"Firmware version 0.2" not in seen
    pty_board.enter_bootloader()
    done = esptool(
        pty_board.port,
        "read-flash",
        "0xe000",
        "0x2000",
        str(tmp_path / "after.bin"),
        before="no-reset",
        after="no-reset",
    )
    assert done.returncode == 0, done.stdout
    otadata = (tmp_path / "after.bin").read_bytes()
    entries = firmware.ota_entries(otadata)
    assert entries[1].seq == 2 and entries[1].state == firmware.OtaState.ABORTED and entries[1].is_whole
    assert firmware.active_ota_slot(otadata, 2) == 0
