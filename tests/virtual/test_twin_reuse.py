"""A twin process kept from board to board (TwinKeeper, ota_rig.virtual.twin): each board must
get what a fresh process gives, whatever the board before it was left doing.

Evidence: the bytes on each board's port (the ROM's power-on banner and what it boots), the real
esptool CLI's verify-flash (the flash's MD5 as the twin's stub computes it, against a fresh
twin's flash file), the process table (pids) and each board's own twin.log.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ota_rig.bench.board import TwinKeeper, VirtualBoard, read_until
from ota_rig.build.virtual_builder import VirtualBuilder
from ota_rig.scenario import OtaScenario
from ota_rig.server.faults import Fault
from ota_rig.server.pki import Pki

from .conftest import esptool, flash_args

pytestmark = pytest.mark.virtual

POWER_ON_FLASH_BOOT = b"ets Jul 29 2019 12:21:46\r\n\r\nrst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n"
ERASED = b"invalid header: 0xffffffff\r\n"  # the ROM's loop on erased flash


@pytest.fixture
def keeper() -> Iterator[TwinKeeper]:
    kept = TwinKeeper()
    yield kept
    kept.close()


@pytest.fixture(scope="module")
def fresh_flash(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The flash file of a twin started as a process of its own, never written."""
    with VirtualBoard(tmp_path_factory.mktemp("fresh"), transport="pty") as board:
        pass
    return board.flash_file


def boot_banner(board: VirtualBoard) -> bytes:
    """What the board said from power-on (a pty keeps it until a reader opens it) to its first
    invalid-header line."""
    with board.open() as line:
        return read_until(line, b"invalid header", timeout=10)


def assert_flash_is(board: VirtualBoard, expected: Path) -> None:
    """esptool's verify-flash of the whole 4 MB against `expected`: the twin's stub computes
    the MD5 of what its flash holds."""
    board.enter_bootloader()
    run = esptool(board.port, "verify-flash", "0", str(expected), before="no-reset", after="no-reset")
    assert run.returncode == 0 and "digest matched" in run.stdout, run.stdout[-2000:]


def test_two_boards_in_a_row_each_power_on_with_a_fresh_twins_flash(
        tmp_path: Path, keeper: TwinKeeper, artifacts, fresh_flash: Path) -> None:
    with VirtualBoard(tmp_path / "a", transport="pty", keeper=keeper) as first:
        assert boot_banner(first).startswith(POWER_ON_FLASH_BOOT)
        first.enter_bootloader()
        written = esptool(first.port, "write-flash", *flash_args(artifacts), before="no-reset", after="no-reset")
        assert written.returncode == 0, written.stdout[-2000:]
        pid = first.process.pid
    first_log = first.log_path.read_text()

    with VirtualBoard(tmp_path / "b", transport="pty", keeper=keeper) as second:
        assert second.process.pid == pid and second.alive  # the same process, a new board in it
        assert boot_banner(second).startswith(POWER_ON_FLASH_BOOT + ERASED)  # not the first's app
        assert_flash_is(second, fresh_flash)
        assert second.flash_file != first.flash_file and second.port != first.port

    assert first.log_path.read_text() == first_log  # the second board wrote nothing into the first's log
    second_log = second.log_path.read_text()
    assert second_log.startswith(f"rig: twin process {pid} reused")
    assert "stub running" in first_log and second_log.count("stub running") == 1  # its own esptool run only
    assert not Path(first.port).exists()  # the first board's pty link went with it


def test_a_board_left_held_in_reset_does_not_reach_the_next(tmp_path: Path, keeper: TwinKeeper,
                                                           fresh_flash: Path) -> None:
    with VirtualBoard(tmp_path / "a", transport="pty", keeper=keeper) as first:
        first.wire("IO0 0", "EN 0")  # held in reset, the boot pin low
        pid = first.process.pid
    with VirtualBoard(tmp_path / "b", transport="pty", keeper=keeper) as second:
        assert second.process.pid == pid
        assert boot_banner(second).startswith(POWER_ON_FLASH_BOOT + ERASED)  # IO0 pulled up again
        assert_flash_is(second, fresh_flash)


def test_a_twin_process_that_died_is_replaced_and_the_log_says_so(tmp_path: Path, keeper: TwinKeeper) -> None:
    with VirtualBoard(tmp_path / "a", transport="pty", keeper=keeper) as first:
        first.process.kill()  # the twin crashes under the first board
        first.process.wait()
        pid = first.process.pid
    with VirtualBoard(tmp_path / "b", transport="pty", keeper=keeper) as second:
        assert second.process.pid != pid
        assert boot_banner(second).startswith(POWER_ON_FLASH_BOOT + ERASED)
    first_line = second.log_path.read_text().splitlines()[0]
    assert first_line == f"rig: new twin process (twin process {pid} had exited (status -9))"


def test_a_board_powered_off_mid_download_leaves_nothing_to_the_next(
        tmp_path: Path, keeper: TwinKeeper, fresh_flash: Path) -> None:
    """The first board is mid-download from a server that stalls when its scenario ends; the
    next board still powers on clean, on its own flash, with a log that says which process it
    got and why."""
    pki = Pki(tmp_path / "pki", hostname="ota.local", address="127.0.0.1")
    builder = VirtualBuilder(tmp_path / "builds")
    with OtaScenario(tmp_path / "one", VirtualBoard(tmp_path / "one" / "board", transport="pty", keeper=keeper),
                     pki, builder, "arduino-esp32-2.0") as scenario:
        listener = scenario.listen(pki.dns())
        old, new = scenario.build("0.1", listener), scenario.build("0.2", listener)
        half = new.app.stat().st_size // 2
        scenario.offer(new, fault=Fault(stall_after=half))
        scenario.start(old)
        scenario.wait_for_download(half, timeout=30)
        pid = scenario.board.process.pid  # type: ignore[attr-defined]
    (request,) = scenario.server.log.requests()
    assert request.bytes_sent == half and not request.complete  # it was cut off mid-download

    with VirtualBoard(tmp_path / "b", transport="pty", keeper=keeper) as second:
        assert boot_banner(second).startswith(POWER_ON_FLASH_BOOT + ERASED)
        assert_flash_is(second, fresh_flash)
    first_line = second.log_path.read_text().splitlines()[0]
    assert first_line == (f"rig: twin process {pid} reused: a new board in it (NEW)" if second.process.pid == pid
                          else f"rig: new twin process (twin process {pid} did not power off cleanly: "
                               f"the virtual ESP32 refused 'OFF': error: the CPU did not stop within 2 s)")


def test_a_board_still_open_is_not_shared_and_the_next_says_why(tmp_path: Path, keeper: TwinKeeper) -> None:
    first = VirtualBoard(tmp_path / "a", transport="pty", keeper=keeper)  # its test has not ended
    try:
        with VirtualBoard(tmp_path / "b", transport="pty", keeper=keeper) as second:
            assert second.process.pid != first.process.pid and first.alive
        first_line = second.log_path.read_text().splitlines()[0]
        assert first_line == "rig: new twin process (the last board did not hand its twin process back)"
    finally:
        first.close()
