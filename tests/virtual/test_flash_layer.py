"""ota_rig.bench.flash.Esptool against a twin: what the rig reports matches what the board holds, and each
failure a rig meets comes back as one sentence that names it.

Evidence: the twin's factory MAC (set on its command line), the build's files, the twin's flash
file, and the bytes esptool itself prints. The pty twin waits in its loader, so every call uses
--before/--after no-reset and stays fast.
"""

from __future__ import annotations

import os
import re
import tty

import pytest
import serial

from ota_rig.bench.flash import ChipInfo, Esptool, FlashError

from .conftest import TWIN_MAC, flash_image

pytestmark = pytest.mark.virtual

APP_OFFSET = 0x10000  # where arduino-esp32 puts the app on a classic ESP32


@pytest.fixture(scope="module")
def tool(pty_board) -> Esptool:
    return Esptool(pty_board.port, before="no-reset", after="no-reset", timeout=60)


# --- what the rig reads and writes -------------------------------------------------------------


def test_chip_info(tool: Esptool) -> None:
    assert tool.chip_info() == ChipInfo(
        chip="ESP32-D0WD-V3 (revision v3.0)",
        features="Wi-Fi, BT, Dual Core + LP Core, 240MHz, Vref calibration in eFuse, Coding Scheme None",
        crystal="40MHz",
        mac=TWIN_MAC,
    )


def test_read_mac(tool: Esptool) -> None:
    assert tool.read_mac() == TWIN_MAC


def test_write_then_read_back_the_app(tool: Esptool, pty_board, artifacts) -> None:
    output = tool.write(artifacts.flash_files())
    assert output.count("Hash of data verified.") == len(artifacts.flash_files())

    app = artifacts.app.read_bytes()
    assert tool.read(APP_OFFSET, len(app)) == app
    image = flash_image(pty_board)
    for offset, path in artifacts.flash_files():
        assert image[offset : offset + path.stat().st_size] == path.read_bytes(), path.name


def test_erase_region_reads_back_erased(tool: Esptool, pty_board, artifacts) -> None:
    tool.write([(APP_OFFSET, artifacts.app)])
    app = artifacts.app.read_bytes()
    assert len(app) > 0x3000

    tool.erase_region(APP_OFFSET + 0x1000, 0x1000)

    assert tool.read(APP_OFFSET, 0x3000) == app[:0x1000] + b"\xff" * 0x1000 + app[0x2000:0x3000]
    assert flash_image(pty_board)[APP_OFFSET + 0x1000 : APP_OFFSET + 0x2000] == b"\xff" * 0x1000


# --- failures as one sentence ---------------------------------------------------------------


def failure(tool: Esptool) -> FlashError:
    with pytest.raises(FlashError) as caught:
        tool.chip_info()
    err = caught.value
    assert "\n" not in str(err), str(err)
    assert "esptool v5" in err.output and "A fatal error occurred" in err.output  # esptool's whole text
    return err


# src/ota_rig/bench/flash.py checks the busy patterns before the not-found ones, and esptool 5.6 says
# "Could not open PORT, the port is busy or doesn't exist." for a missing port too.
@pytest.mark.parametrize("port", ["/dev/does-not-exist", "rfc2217://127.0.0.1:1"], ids=["path", "rfc2217"])
def test_missing_port(port: str) -> None:
    err = failure(Esptool(port, before="no-reset", after="no-reset", timeout=60))
    assert str(err).startswith("port not found")
    assert port in str(err)


def test_port_busy(pty_board) -> None:
    with serial.Serial(pty_board.port, exclusive=True):
        err = failure(Esptool(pty_board.port, before="no-reset", after="no-reset", timeout=60))
    assert str(err).startswith("port busy")
    assert "Could not exclusively lock port" in err.output


def test_wrong_chip(pty_board) -> None:
    err = failure(Esptool(pty_board.port, chip="esp32s3", before="no-reset", after="no-reset", timeout=60))
    assert str(err).startswith("wrong chip")
    assert "This chip is ESP32, not ESP32-S3" in err.output


@pytest.mark.slow  # esptool's 7 connect attempts: ~5 s
def test_no_sync_on_a_silent_port() -> None:
    master, slave = os.openpty()
    try:
        tty.setraw(slave)
        port = os.ttyname(slave)
        err = failure(Esptool(port, before="no-reset", after="no-reset", timeout=60))
    finally:
        os.close(master)
        os.close(slave)
    assert str(err).startswith("no sync")
    assert re.search(r"Failed to connect to ESP32: No serial data received", err.output)
