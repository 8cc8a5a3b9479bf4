"""Fixtures for tests that drive a virtual ESP32 process with the real esptool CLI."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from rig.board import VirtualBoard
from rig.build import Artifacts, VirtualBuilder

TWIN_MAC = "24:6f:28:12:34:56"


def esptool(port: str, *args: str, before: str = "default-reset", after: str = "hard-reset",
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The esptool CLI exactly as a user runs it; stdout and stderr merged."""
    argv = [sys.executable, "-m", "esptool", "--port", port, "--before", before, "--after", after, *args]
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)


def reset_and_read(port: str, until: bytes, timeout: float = 10.0) -> bytes:
    """Pulse EN through RTS like esptool's hard reset, then read the UART until `until` shows."""
    with serial.serial_for_url(port, baudrate=115200, timeout=0.2) as line:
        line.dtr = False
        line.rts = True  # EN low: chip in reset
        time.sleep(0.1)
        line.reset_input_buffer()  # what the chip said before this reset is not this boot
        line.rts = False  # EN released with IO0 high: boot from flash
        return read_until(line, until, timeout)


def read_until(line: serial.SerialBase, until: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while until not in seen and time.monotonic() < deadline:
        seen += line.read(4096)
    return seen


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    return VirtualBuilder(tmp_path_factory.mktemp("firmware")).build("0.1")


@pytest.fixture(scope="module")
def rfc_board(tmp_path_factory: pytest.TempPathFactory):
    with VirtualBoard(tmp_path_factory.mktemp("rfc-board"), mac=TWIN_MAC) as board:
        yield board


@pytest.fixture(scope="module")
def pty_board(tmp_path_factory: pytest.TempPathFactory):
    with VirtualBoard(tmp_path_factory.mktemp("pty-board"), transport="pty", mac=TWIN_MAC) as board:
        yield board


def flash_args(artifacts: Artifacts) -> list[str]:
    return [arg for offset, path in artifacts.flash_files() for arg in (f"0x{offset:x}", str(path))]


def flash_image(board: VirtualBoard) -> bytes:
    """The twin's flash as its file holds it: evidence esptool did not produce."""
    return Path(board.flash_file).read_bytes()
