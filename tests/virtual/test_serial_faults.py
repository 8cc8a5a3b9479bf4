"""Serial faults between the board and the rig: garbage on the line, very long lines, a board
that goes silent, a port that disappears. The real monitor reads a twin through pyserial; the
twin's `NOISE` wire puts bytes on the line the chip never sent, as a flaky cable, a floating TX
pin or a baud-rate mismatch would.

What each test proves, judged by the bytes it injected and by serial.log on disk: the monitor
never crashes (an exception escaping its thread fails the test, see `pytestmark`), the log keeps
every byte, the device's own lines are still recognised after the fault, and a wait that fails
says in one sentence what was missing and why, then quotes the last lines.
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import pytest

from ota_rig.bench.board import VirtualBoard
from ota_rig.bench.flash import Esptool
from ota_rig.bench.monitor import MAX_LINE, ExpectTimeout, Monitor

pytestmark = [pytest.mark.virtual,
              pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")]

REOPEN_WINDOW = 2.0  # seconds a vanished port gets to come back (the rig gives a real board 10 s)
BOOT = [("reset", {"reason": "POWERON_RESET"}), ("firmware_version", {"version": "0.1"}), "retry"]


def at_wrong_baud(data: bytes, sent: int, read: int) -> bytes:
    """What a UART reading at `read` baud makes of `data` sent at `sent` baud (8N1): it finds a
    start bit at a falling edge and samples each of the next bits in its middle, on its own clock."""
    bits = [1] * 10 + [bit for byte in data for bit in (0, *((byte >> i) & 1 for i in range(8)), 1)] + [1] * 10

    def level(t: float) -> int:
        return bits[min(int(t * sent), len(bits) - 1)]

    got, t, bit = bytearray(), 0.0, 1 / read
    while t < len(bits) / sent:
        if level(t):
            t += bit / 16  # idle: look for the start bit, as a UART does, at 16 times the baud rate
            continue
        got.append(sum(level(t + (1.5 + i) * bit) << i for i in range(8)))
        t += 9.5 * bit  # the middle of the stop bit, right or wrong: hunt for the next start
    return bytes(got)


GARBAGE = {
    "random bytes": random.Random(5).randbytes(2000),
    "NULs and lone CRs": b"\x00\x00\rhalf a line\r\x00written over\r\r\n\x00",
    "ANSI escapes": b"\x1b[0;31mE (312) boot: red\x1b[0m\x1b[2J\x1b[H\x1b]0;title\x07",
    "lines sent at 74880 baud": at_wrong_baud(b"Firmware version 9.9\r\nHTTP_UPDATE_OK\r\n", sent=74880, read=115200),
}


@pytest.fixture
def twin(tmp_path: Path, artifacts):
    """A fresh pty twin with the reference sketch flashed (its update checks go nowhere)."""
    with VirtualBoard(tmp_path / "board", transport="pty") as board:
        board.enter_bootloader()
        Esptool(board.port, before="no-reset", after="no-reset").write(artifacts.flash_files())
        yield board


@pytest.fixture
def monitor(twin: VirtualBoard, tmp_path: Path):
    """The monitor on the twin's port, reopening a vanished port as the rig does, once the sketch
    has booted and checked for an update: it then says nothing for 10 s."""
    ports = [twin.open()]

    def reopen():
        ports.append(twin.open(reappear=REOPEN_WINDOW))
        return ports[-1]

    twin.reset(ports[0], discard_pending=True)
    running = Monitor(ports[0], tmp_path / "serial.log", reopen=reopen).start()
    running.expect_sequence(BOOT, timeout=5)
    yield running
    running.stop()
    for port in ports:
        port.close()


def noise(twin: VirtualBoard, data: bytes) -> None:
    twin.wire(f"NOISE {data.hex()}")


def reboot(twin: VirtualBoard, monitor: Monitor) -> None:
    """Pulse EN and wait for the board's own lines: reset reason, version, first update check."""
    twin.reset(monitor.port)
    monitor.expect_sequence(BOOT, timeout=3)


def logged_lines(tmp_path: Path) -> list[str]:
    """serial.log's lines as any reader sees them (universal newlines)."""
    return (tmp_path / "serial.log").read_text(encoding="utf-8").splitlines()


def logged_bytes(tmp_path: Path) -> bytes:
    """serial.log read back to the bytes the port sent, by its documented format: each `\\xNN`
    is that byte, the rest is UTF-8, each line ended with LF (the CRs before it are not kept)."""
    parts = re.split(r"\\x([0-9a-f]{2})", (tmp_path / "serial.log").read_bytes().decode("utf-8"))
    return b"".join(bytes.fromhex(part) if index % 2 else part.encode() for index, part in enumerate(parts))


def wait_until(condition, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:g} s"
        time.sleep(0.01)


def test_garbage_on_the_line_is_logged_byte_for_byte_and_the_device_lines_after_it_are_recognised(
        twin: VirtualBoard, monitor: Monitor, tmp_path: Path) -> None:
    for garbage in GARBAGE.values():
        noise(twin, garbage)  # none ends with a newline: the ROM banner after it is glued to it
        reboot(twin, monitor)

    versions = [event.fields["version"] for event in monitor.events if event.name == "firmware_version"]
    assert versions == ["0.1"] * (1 + len(GARBAGE)), f"the garbage passed for a device line: {versions}"
    assert logged_lines(tmp_path) == monitor.lines, "serial.log does not read back as the lines the monitor saw"
    received = logged_bytes(tmp_path)
    for kind, garbage in GARBAGE.items():
        assert re.sub(rb"\r*\n", b"\n", garbage) in received, f"serial.log lost or changed bytes of the {kind}"


def test_a_1_mb_run_without_a_newline_and_a_100_kb_line_are_cut_at_max_line_and_kept_whole(
        twin: VirtualBoard, monitor: Monitor, tmp_path: Path) -> None:
    endless = random.Random(6).randbytes(1 << 19).hex().encode()  # 1 MB of text, never a newline
    long_line = b"L" * 100_000 + b"\r\n"

    noise(twin, endless)
    reboot(twin, monitor)
    noise(twin, long_line)
    reboot(twin, monitor)

    longest = max(len(line.encode()) for line in monitor.lines)
    assert longest <= MAX_LINE, f"the monitor holds a line of {longest} bytes, more than MAX_LINE ({MAX_LINE})"
    pieces = logged_lines(tmp_path)
    assert max(len(piece) for piece in pieces) == MAX_LINE, "serial.log's longest line is not one MAX_LINE piece"
    joined = "".join(pieces)
    assert endless.decode() in joined and "L" * 100_000 in joined, "serial.log lost bytes of a long line"


def test_a_board_held_in_reset_fails_the_wait_in_time_naming_the_event_and_the_silence(
        twin: VirtualBoard, monitor: Monitor, tmp_path: Path) -> None:
    twin.wire("EN 0")
    started = time.monotonic()
    with pytest.raises(ExpectTimeout) as failure:
        monitor.expect("firmware_version", timeout=1, version="0.1")
    assert 1 <= time.monotonic() - started < 2
    message = str(failure.value)
    assert re.match(r"event 'firmware_version' \(version='0.1'\) did not come within 1 s, and the port has sent "
                    r"nothing for \d+\.\d s; the last 15 lines received:\n", message), message
    assert message.endswith("] Update: next check in 10 s"), message  # the board's last line

    twin.wire("EN 1")  # the board talks again: the same monitor hears it
    monitor.expect_sequence(BOOT, timeout=3)
    assert logged_lines(tmp_path).count("Firmware version 0.1") == 2


def test_a_port_that_goes_away_for_good_fails_the_wait_saying_so_and_the_log_keeps_what_came(
        twin: VirtualBoard, monitor: Monitor, tmp_path: Path) -> None:
    read = monitor.bytes_read
    noise(twin, b"half a li")  # a line in flight when the cable is pulled
    wait_until(lambda: monitor.bytes_read == read + 9, "the monitor reading the half line")
    twin.unplug()

    started = time.monotonic()
    with pytest.raises(ExpectTimeout) as failure:
        monitor.expect("update_ok", timeout=10)
    assert time.monotonic() - started < 5  # it fails when the port is given up, not at the 10 s timeout
    message = str(failure.value)
    assert re.match(
        r"Waiting for event 'update_ok', the serial port went away at \d+\.\d{3} s \(\w+: .+\), and did "
        rf"not come back \(BoardError: cannot open the board's port {re.escape(twin.port)} "
        rf"\(waited {REOPEN_WINDOW:g} s for it to "
        r"come back\): .+\); the last 15 lines received:\n",
        message,
    ), message
    last, half = message.splitlines()[-2:]  # the board's last line, then the half line
    assert last.endswith("] Update: next check in 10 s") and half.endswith("] half a li"), message
    with pytest.raises(ExpectTimeout, match=r"ended 0\.000 s into it: the serial port went away"):
        monitor.not_matching("update_ok", within=1)

    lines = logged_lines(tmp_path)  # on disk before the monitor stops
    assert lines == monitor.lines and lines[-2:] == ["Update: next check in 10 s", "half a li"], lines[-3:]


def test_a_wait_that_ends_while_the_port_is_away_says_so_and_the_monitor_follows_a_late_replug(
    twin: VirtualBoard, monitor: Monitor, tmp_path: Path
) -> None:
    read = monitor.bytes_read
    noise(twin, b"half a li")
    wait_until(lambda: monitor.bytes_read == read + 9, "the monitor reading the half line")
    twin.unplug()

    with pytest.raises(ExpectTimeout) as failure:
        monitor.expect("firmware_version", timeout=0.3)
    assert re.match(
        r"event 'firmware_version' did not come within 0.3 s: the serial port went away at \d+\.\d{3} s "
        r"\(\w+: .+\) and has not come back yet; the last 15 lines received:\n",
        str(failure.value),
    ), str(failure.value)

    twin.plug()  # within the reopen window, after the wait gave up
    wait_until(lambda: monitor.reopened == 1, "the monitor reopening the port", REOPEN_WINDOW)
    reboot(twin, monitor)
    assert monitor.error is None
    # The half line ended when the port went away: the ROM banner after the replug is a line of its own.
    banners = [event.raw for event in monitor.events if event.name == "rom_banner"]
    assert len(banners) == 2, f"the ROM banner after the replug was not recognised: {monitor.lines[-12:]}"
    lines = logged_lines(tmp_path)
    assert lines == monitor.lines and "half a li" in lines and lines.count("Firmware version 0.1") == 2
