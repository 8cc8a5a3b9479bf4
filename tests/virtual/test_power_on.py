"""A twin on a pty at power-on, with nothing written on its wires: the ROM reads IO0 as power
comes up. A dev board pulls IO0 up, so the chip boots what its flash holds (reference 12.1:
`rst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)`); `--io0-low` holds it low, as the
BOOT button held at power-on does, and the ROM waits for esptool (`boot:0x3`, `waiting for
download`). A power cut of a VirtualBoard is the same power-on: the app boots by itself.

Evidence: the bytes on the port, read with pyserial, and the real esptool CLI's own report.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ota_rig.bench.board import SerialBoard, VirtualBoard, read_until
from ota_rig.bench.flash import Esptool

from .conftest import esptool

pytestmark = pytest.mark.virtual

POWER_ON = b"ets Jul 29 2019 12:21:46\r\n\r\nrst:0x1 (POWERON_RESET),"
FLASH_BOOT = POWER_ON + b"boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n"
DOWNLOAD_BOOT = POWER_ON + b"boot:0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))\r\nwaiting for download\r\n"
APP_STARTS = b"entry 0x400805f0\r\nFirmware version 0.1\r\n"  # 2.0.14's bootloader; its second stage is silent


@pytest.fixture(scope="module")
def bootable(tmp_path_factory: pytest.TempPathFactory, artifacts) -> Path:
    """A flash file holding the reference sketch 0.1, written into a twin by the real esptool."""
    with VirtualBoard(tmp_path_factory.mktemp("bootable"), transport="pty") as board:
        board.enter_bootloader()
        Esptool(board.port, before="no-reset", after="no-reset").write(artifacts.flash_files())
    return board.flash_file


@pytest.fixture
def flash(tmp_path: Path, bootable: Path) -> Path:
    return Path(shutil.copy(bootable, tmp_path / "flash.bin"))


@contextmanager
def twin(tmp_path: Path, flash: Path, *options: str) -> Iterator[Path]:
    """`python -m ota_rig.virtual --pty` as a user starts it; its standard input (the wires) stays
    open and silent. Yields the port's path once the twin says it listens."""
    link = tmp_path / "ttyESP32"
    process = subprocess.Popen([sys.executable, "-m", "ota_rig.virtual", "--flash", str(flash), "--pty", str(link),
                                *options], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert process.stdout.readline().startswith(b"virtual ESP32 ")
        yield link
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def first_bytes(port: Path | str, until: bytes, timeout: float = 10.0) -> bytes:
    """What the port holds from power-on until `until` shows (the rig's open keeps what the chip
    said before it)."""
    with SerialBoard(str(port)).open() as line:
        return read_until(line, until, timeout)


def test_a_twin_powers_up_into_its_app_with_io0_pulled_up(tmp_path: Path, flash: Path) -> None:
    with twin(tmp_path, flash) as port:
        seen = first_bytes(port, APP_STARTS)
    assert seen.startswith(FLASH_BOOT + b"configsip: 0, SPIWP:0xee\r\n"), seen
    assert APP_STARTS in seen and b"waiting for download" not in seen


def test_a_twin_on_erased_flash_powers_up_into_the_roms_invalid_header_loop(tmp_path: Path) -> None:
    with twin(tmp_path, tmp_path / "new.bin") as port:
        seen = first_bytes(port, b"rst:0x10 (RTCWDT_RTC_RESET)")
    assert seen.startswith(FLASH_BOOT + b"invalid header: 0xffffffff\r\n" * 8), seen


def test_with_io0_held_low_the_twin_waits_for_esptool(tmp_path: Path, flash: Path) -> None:
    with twin(tmp_path, flash, "--io0-low") as port:
        seen = first_bytes(port, b"waiting for download\r\n", timeout=5)
        assert seen == DOWNLOAD_BOOT
        done = esptool(str(port), "chip-id", before="no-reset", after="no-reset")
    assert done.returncode == 0, done.stdout
    assert "Chip type:          ESP32-D0WD-V3 (revision v3.0)" in done.stdout


def test_without_io0_held_low_esptool_finds_no_loader(tmp_path: Path, flash: Path) -> None:
    with twin(tmp_path, flash) as port:
        done = esptool(str(port), "--connect-attempts", "1", "chip-id", before="no-reset", after="no-reset")
    assert done.returncode != 0
    assert "Failed to connect to Espressif device: No serial data received." in done.stdout, done.stdout


def test_after_a_power_cut_a_virtual_board_boots_its_app_by_itself(tmp_path: Path, flash: Path) -> None:
    with VirtualBoard(tmp_path / "board", transport="pty", flash=flash) as board:
        board.power_cycle()
        seen = first_bytes(board.port, APP_STARTS)
    assert seen.startswith(FLASH_BOOT), seen
    assert APP_STARTS in seen and b"waiting for download" not in seen
