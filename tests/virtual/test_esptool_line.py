"""The board's line as the rig drives it (issue 19): esptool at 921600 with a fallback when the
bridge does not take the rate, regions already in flash left alone, the app slot checked by the
chip's MD5, and esptool in this process with the CLI's output.

Evidence: the twin's flash file (bytes esptool did not produce), esptool's own words (its
"already in flash, skipping write.", its MD5 verdict, pyserial's refusal), and the CLI's output
for the same command.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ota_rig.bench import esptool_cli
from ota_rig.bench.board import VirtualBoard
from ota_rig.bench.flash import Esptool, skipped_writes
from ota_rig.build.artifacts import Artifacts
from ota_rig.build.virtual_builder import VirtualBuilder
from ota_rig.device import firmware
from ota_rig.scenario import OtaScenario
from ota_rig.server.pki import Pki

from .conftest import TWIN_MAC, esptool, flash_image

pytestmark = pytest.mark.virtual

SCRATCH = 0x300000  # inside the spiffs partition: free for test data


def tool_for(board: VirtualBoard, **options: object) -> Esptool:
    resets = {"before": "no-reset", "after": "no-reset"} if board.wired else {"after": "no-reset"}
    return Esptool(board.port, reconnect=board.enter_bootloader, timeout=120, **resets, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("transport", ["pty", pytest.param("rfc2217", marks=pytest.mark.slow)])
@pytest.mark.parametrize("in_process", [False, True], ids=["cli", "in-process"])
def test_a_bridge_that_does_not_take_921600_gets_the_command_again_at_115200(
    tmp_path: Path, transport: str, in_process: bool
) -> None:
    with VirtualBoard(tmp_path / "twin", transport=transport, mac=TWIN_MAC, bridge_max_baud=460800) as twin:
        twin.enter_bootloader()
        tool = tool_for(twin, baud=921600, in_process=in_process)
        data = tool.read(0x1000, 0x1000)
        output = "".join(tool.output)
        assert tool.fell_back == 921600 and tool.baud == 115200
        assert "Changing baud rate to 921600" in output  # the first attempt switched, and the line failed
        if transport == "rfc2217":  # the server answered with the rate in force: pyserial's client says so
            assert "remote rejected value for option 'baudrate'" in output
        assert "did not take 921600 baud: esptool read-flash again at 115200" in output
        assert output.rstrip().endswith("Staying in bootloader.")  # the second attempt finished
    assert data == flash_image(twin)[0x1000:0x2000]


def test_a_bridge_that_takes_921600_runs_at_921600(pty_board: VirtualBoard) -> None:
    tool = tool_for(pty_board, baud=921600)
    pty_board.enter_bootloader()
    tool.read(0x1000, 0x100)
    assert tool.fell_back is None and "Changed." in tool.last_output
    assert "baud rate now 921600" in pty_board.log_path.read_text()  # the twin's UART switched


@pytest.mark.parametrize("paced", [False, True], ids=["unpaced", "paced"])
def test_a_scenario_switches_the_rate_only_on_a_line_that_has_one(tmp_path: Path, paced: bool) -> None:
    """An unpaced pty twin moves bytes at once at any rate: the scenario's esptool stays at the
    ROM's 115200 there (no switch, no 50 ms settle) and esptool.log says why; a paced twin's line
    takes its rate's time, so there esptool switches to 921600 as on a board."""
    pki = Pki(tmp_path / "pki", hostname="ota.local", address="127.0.0.1")
    builder = VirtualBuilder(tmp_path / "builds")
    with OtaScenario(tmp_path / "s", VirtualBoard(tmp_path / "s" / "board", transport="pty", pacing=paced),
                     pki, builder, "arduino-esp32-2.0", baud=921600) as scenario:
        scenario.flash(scenario.build("0.1", scenario.listen(pki.dns())))
        twin_log = scenario.board.log_path.read_text()  # type: ignore[attr-defined]
    record = (tmp_path / "s" / "esptool.log").read_text()
    assert "Hash of data verified." in record  # esptool wrote the build either way
    if paced:
        assert "Changing baud rate to 921600" in record and "baud rate now 921600" in twin_log
        assert "esptool stays at" not in record
    else:
        assert "Changing baud rate" not in record and "baud rate now" not in twin_log
        assert "[rig] esptool stays at 115200 baud: the rate of this board's line changes nothing" in record


def test_skip_flashed_writes_only_the_region_that_changed(tmp_path: Path, artifacts: Artifacts) -> None:
    with VirtualBoard(tmp_path / "twin", transport="pty", mac=TWIN_MAC) as twin:
        tool = tool_for(twin, baud=921600)
        twin.enter_bootloader()
        first = tool.write(artifacts.flash_files(), skip_flashed=True)
        assert skipped_writes(first) == [] and first.count("Hash of data verified.") == 4
        app = bytearray(artifacts.app.read_bytes())
        app[-1] ^= 0xFF  # another app image: only its last byte differs
        changed = tmp_path / "changed.bin"
        changed.write_bytes(app)
        files = [(offset, changed if path == artifacts.app else path) for offset, path in artifacts.flash_files()]
        twin.enter_bootloader()
        second = tool.write(files, skip_flashed=True)
    written = [offset for offset, _ in artifacts.flash_files() if offset != firmware.APP_OFFSET]
    assert skipped_writes(second) == written  # esptool's own "already in flash, skipping write."
    assert re.findall(r"Wrote \d+ bytes .* at (0x[0-9a-f]+)", second) == [f"0x{firmware.APP_OFFSET:08x}"]
    flash = flash_image(twin)
    assert flash[firmware.APP_OFFSET : firmware.APP_OFFSET + len(app)] == bytes(app)


def test_the_slot_check_by_md5_finds_a_corrupted_byte(tmp_path: Path, artifacts: Artifacts) -> None:
    with VirtualBoard(tmp_path / "twin", transport="pty", mac=TWIN_MAC) as twin:
        tool = tool_for(twin, baud=921600, in_process=True)
        twin.enter_bootloader()
        tool.write(artifacts.flash_files())
        sector = firmware.APP_OFFSET + 0x2000
        original = flash_image(twin)[sector : sector + 0x1000]
        corrupt = tmp_path / "corrupt.bin"
        corrupt.write_bytes(bytes([original[0] ^ 0x01]) + original[1:])
        twin.enter_bootloader()
        before = len(tool.output)
        with tool.session():
            assert tool.holds(firmware.APP_OFFSET, artifacts.app)
            tool.write([(sector, corrupt)])  # one bit of the slot flipped, through the same session
            assert not tool.holds(firmware.APP_OFFSET, artifacts.app)
        output = "".join(tool.output[before:])
    assert "Verification successful (digest matched)." in output and "Verification failed (digest mismatch)." in output
    assert output.count("Uploading stub flasher...") == 1  # one session: one connection, one stub upload


def test_esptool_in_process_prints_what_the_cli_prints(pty_board: VirtualBoard) -> None:
    pty_board.enter_bootloader()
    cli = esptool(pty_board.port, "--chip", "esp32", "--baud", "921600", "read-mac", before="no-reset",
                  after="no-reset").stdout
    pty_board.enter_bootloader()
    here = Esptool(pty_board.port, baud=921600, before="no-reset", after="no-reset", in_process=True).run("read-mac")

    def lines(text: str) -> list[str]:  # the port path aside, esptool's lines in order
        return [line.strip() for line in text.splitlines() if line.strip() and "NOTE" not in line]

    assert lines(here) == lines(cli)
    assert set(re.findall(r"^MAC:\s+(\S+)$", here, re.M)) == {TWIN_MAC}


def test_esptool_in_process_dumps_packets_only_for_a_trace_asked_for(pty_board: VirtualBoard) -> None:
    """esptool 5.6 formats a hex dump of every packet even without --trace (esptool_trace_fix):
    the rig's runs skip that work, and a run with --trace still gets esptool's own dumps."""
    argv = ["--chip", "esp32", "--port", pty_board.port, "--before", "no-reset", "--after", "no-reset", "read-mac"]
    pty_board.enter_bootloader()
    status, traced = esptool_cli.in_process(["--trace", *argv])
    assert status == 0, traced
    # the SYNC command esptool sends first, SLIP-framed, as its HexFormatter dumps it
    assert re.search(r"Write 46 bytes:\s+\n\s+c000082400000000 0007071220555555 ", traced), traced[:2000]
    pty_board.enter_bootloader()
    status, quiet = esptool_cli.in_process(argv)
    assert status == 0 and "TRACE" not in quiet and set(re.findall(r"^MAC:\s+(\S+)$", quiet, re.M)) == {TWIN_MAC}
