"""The real esptool CLI against a twin process, over RFC2217 (default reset) and a pty (no reset).

Evidence comes from outside the code under test: esptool's own verdicts ("Hash of data
verified", the MD5 it compares), the bytes esptool reads back, and the twin's flash file.
Over RFC2217 esptool runs as the rig runs it, with pyserial's client fixed (issue 17: pyserial
3.5 renegotiates the line on every timeout change, ~0.2 s a command; tests/virtual/test_rfc2217_speed.py).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from ota_rig.build.virtual_builder import VirtualBuilder
from ota_rig.device import firmware
from ota_rig.device.sketch_config import SketchConfig

from .conftest import TWIN_MAC, esptool, flash_args, flash_image

pytestmark = pytest.mark.virtual

SCRATCH = 0x300000  # inside the spiffs partition: free for test data


@pytest.fixture(scope="module", params=[pytest.param("rfc2217", marks=pytest.mark.slow), "pty"])
def board(request: pytest.FixtureRequest):
    """A twin with the reset options its transport needs."""
    board = request.getfixturevalue("rfc_board" if request.param == "rfc2217" else "pty_board")
    resets = {} if request.param == "rfc2217" else {"before": "no-reset", "after": "no-reset"}
    return board, resets


def run_ok(board_and_resets, *args: str, timeout: float = 180) -> str:
    board, resets = board_and_resets
    done = esptool(board.port, *args, timeout=timeout, **resets)
    assert done.returncode == 0, done.stdout
    return done.stdout


def test_chip_id_reports_a_d0wd_v3_with_a_40mhz_crystal(board) -> None:
    out = run_ok(board, "chip-id")
    assert re.search(r"Chip type:\s+ESP32-D0WD-V3 \(revision v3\.0\)", out)
    assert re.search(
        r"Features:\s+Wi-Fi, BT, Dual Core \+ LP Core, 240MHz, Vref calibration in eFuse, Coding Scheme None", out
    )
    assert re.search(r"Crystal frequency:\s+40MHz", out)
    assert "Stub flasher running." in out


def test_read_mac_equals_the_twins_efuse_mac(board) -> None:
    macs = re.findall(r"^MAC:\s+(\S+)$", run_ok(board, "read-mac"), re.M)
    assert macs and set(macs) == {TWIN_MAC}


def test_flash_id_reports_a_4mb_gigadevice_chip(board) -> None:
    out = run_ok(board, "flash-id")
    assert re.search(r"Manufacturer:\s+c8", out)
    assert re.search(r"Device:\s+4016", out)
    assert re.search(r"Detected flash size:\s+4MB", out)


WRITE_VARIANTS = {  # (global options, write-flash options)
    "stub-compressed": ([], []),
    "stub-no-compress": ([], ["--no-compress"]),
    "rom-uncompressed": (["--no-stub"], []),
    "rom-compressed": (["--no-stub"], ["--compress"]),
}


@pytest.mark.parametrize("variant", WRITE_VARIANTS)
def test_write_flash_of_a_full_artifact_set(board, variant: str, tmp_path: Path) -> None:
    # Each variant writes its own version, so the flash really changes under every write.
    artifacts = VirtualBuilder(tmp_path).build(SketchConfig.without_server(f"9.{list(WRITE_VARIANTS).index(variant)}"))
    global_args, write_args = WRITE_VARIANTS[variant]
    out = run_ok(board, *global_args, "write-flash", *write_args, *flash_args(artifacts))
    assert out.count("Hash of data verified.") == 4
    flash = flash_image(board[0])
    for offset, path in artifacts.flash_files():
        data = path.read_bytes()
        assert flash[offset : offset + len(data)] == data, f"{path.name} at 0x{offset:x}"
    app = firmware.parse_image(flash[firmware.APP_OFFSET :], base=firmware.APP_OFFSET)
    assert SketchConfig.from_image(app).version == artifacts.version  # the sketch's constant, not the descriptor's


@pytest.fixture
def scratch_file(tmp_path: Path) -> Path:
    path = tmp_path / "scratch.bin"
    path.write_bytes(os.urandom(0x2000))
    return path


@pytest.fixture(scope="module")
def written_scratch(board, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 KB of random data written once per board, for the tests that only read it."""
    path = tmp_path_factory.mktemp("scratch") / "scratch.bin"
    path.write_bytes(os.urandom(0x2000))
    run_ok(board, "write-flash", f"0x{SCRATCH:x}", str(path))
    return path


def test_verify_flash_matches_what_was_written_and_catches_a_difference(board, written_scratch: Path) -> None:
    out = run_ok(board, "verify-flash", f"0x{SCRATCH:x}", str(written_scratch))
    assert "Verification successful (digest matched)." in out
    changed = written_scratch.with_name("changed.bin")
    changed.write_bytes(bytes([written_scratch.read_bytes()[0] ^ 1]) + written_scratch.read_bytes()[1:])
    done = esptool(board[0].port, "verify-flash", f"0x{SCRATCH:x}", str(changed), **board[1])
    assert done.returncode != 0 and "Verification failed (digest mismatch)." in done.stdout


@pytest.mark.parametrize("loader", ["stub", "rom"])
def test_read_flash_returns_the_written_bytes(board, loader: str, written_scratch: Path, tmp_path: Path) -> None:
    # The ROM reads 64 bytes a command: keep its read short, above all over RFC2217.
    size = 0x2000 if loader == "stub" else 0x100
    back = tmp_path / "back.bin"
    run_ok(board, *(["--no-stub"] if loader == "rom" else []), "read-flash", f"0x{SCRATCH:x}", f"0x{size:x}", str(back))
    assert back.read_bytes() == written_scratch.read_bytes()[:size]


@pytest.mark.parametrize("loader", ["stub", "rom"])
def test_erase_region_erases_exactly_the_region(board, loader: str, scratch_file: Path) -> None:
    run_ok(board, "write-flash", f"0x{SCRATCH:x}", str(scratch_file))
    run_ok(board, *(["--no-stub"] if loader == "rom" else []), "erase-region", f"0x{SCRATCH:x}", "0x1000")
    flash = flash_image(board[0])
    assert flash[SCRATCH : SCRATCH + 0x1000] == b"\xff" * 0x1000
    assert flash[SCRATCH + 0x1000 : SCRATCH + 0x2000] == scratch_file.read_bytes()[0x1000:]


def test_write_at_high_baud_changes_the_rate_and_verifies(board, scratch_file: Path) -> None:
    out = run_ok(board, "--baud", "921600", "write-flash", f"0x{SCRATCH:x}", str(scratch_file))
    assert "Changing baud rate to 921600" in out and "Changed." in out
    assert "Hash of data verified." in out
    assert "WARNING" not in out.replace("WARNING: Chip was NOT reset", "")


def test_stub_padding_never_clobbers_the_next_sector(pty_board, tmp_path: Path) -> None:
    board = (pty_board, {"before": "no-reset", "after": "no-reset"})
    # A 100-byte stub write is padded to 0x4000 on the wire; the sector after it must survive.
    neighbour = tmp_path / "neighbour.bin"
    neighbour.write_bytes(os.urandom(0x1000))
    run_ok(board, "write-flash", f"0x{SCRATCH + 0x1000:x}", str(neighbour))
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(100))
    run_ok(board, "write-flash", "--no-compress", f"0x{SCRATCH:x}", str(small))
    flash = flash_image(board[0])
    assert flash[SCRATCH : SCRATCH + 100] == small.read_bytes()
    assert flash[SCRATCH + 0x1000 : SCRATCH + 0x2000] == neighbour.read_bytes()


def test_erase_flash_leaves_every_byte_erased(board) -> None:
    out = run_ok(board, "erase-flash")
    assert "Flash memory erased successfully" in out or "Chip erase completed successfully" in out
    assert flash_image(board[0]) == b"\xff" * firmware.FLASH_SIZE


def test_erase_flash_is_refused_by_the_rom(board) -> None:
    done = esptool(board[0].port, "--no-stub", "erase-flash", **board[1])
    assert done.returncode != 0
    assert "ESP32 ROM does not support function erase_flash" in done.stdout
