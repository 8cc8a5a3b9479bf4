"""Fixtures for tests that drive a virtual ESP32 process with the real esptool CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ota_rig.bench.board import VirtualBoard
from ota_rig.bench.flash import ESPTOOL
from ota_rig.build.artifacts import Artifacts
from ota_rig.build.virtual_builder import VirtualBuilder
from ota_rig.device.sketch_config import SketchConfig

TWIN_MAC = "24:6f:28:12:34:56"


def esptool(port: str, *args: str, before: str = "default-reset", after: str = "hard-reset",
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The esptool CLI exactly as a user runs it, as the rig runs it (`python -m
    ota_rig.bench.esptool_cli`: esptool's own CLI, with pyserial's RFC2217 client at line
    speed; the same arguments and output); stdout and stderr merged."""
    argv = [*ESPTOOL, "--port", port, "--before", before, "--after", after, *args]
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    return VirtualBuilder(tmp_path_factory.mktemp("firmware")).build(SketchConfig.without_server("0.1"))


@pytest.fixture(scope="module")
def rfc_board(tmp_path_factory: pytest.TempPathFactory):
    with VirtualBoard(tmp_path_factory.mktemp("rfc-board"), mac=TWIN_MAC) as board:
        yield board


@pytest.fixture(scope="module")
def pty_board(tmp_path_factory: pytest.TempPathFactory):
    """A pty twin put in its loader through its wired IO0 and EN, for esptool's no-reset runs."""
    with VirtualBoard(tmp_path_factory.mktemp("pty-board"), transport="pty", mac=TWIN_MAC) as board:
        board.enter_bootloader()
        yield board


def flash_args(artifacts: Artifacts) -> list[str]:
    return [arg for offset, path in artifacts.flash_files() for arg in (f"0x{offset:x}", str(path))]


def flash_image(board: VirtualBoard) -> bytes:
    """The twin's flash as its file holds it: evidence esptool did not produce."""
    return Path(board.flash_file).read_bytes()
