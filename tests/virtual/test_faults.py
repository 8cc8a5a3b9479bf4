"""The virtual ESP32 under abuse: line noise, killed esptool runs, unknown requests, signals, bad
command lines.

What this proves, judged only by what the real esptool reports, the bytes the twin puts on its
port, and the flash file:

* noise, stray SLIP delimiters, bad escapes and half frames before a SYNC do not stop the next
  esptool run from connecting;
* an esptool killed in the middle of write-flash (pty and RFC2217) leaves the twin answering the
  next run, and a later write/read round trip is exact;
* an unknown request gets the loader's error reply at once (ROM `01 05 00 00`, stub `ff 00`);
* in loader mode the twin sends nothing but SLIP frames (a ROM banner only right after a reboot);
* SIGTERM and SIGINT stop the twin process cleanly without losing flash written before;
* `python -m ota_rig.virtual` refuses bad arguments with a usage message and announces where it
  listens in one fixed-format line.

SLIP frames are built and parsed here, not with the twin's encoder, so a shared bug cannot hide.
"""

from __future__ import annotations

import os
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from ota_rig.bench.board import VirtualBoard

from .conftest import TWIN_MAC, esptool, flash_image

pytestmark = pytest.mark.virtual

NO_RESET = {"before": "no-reset", "after": "no-reset"}

# The ROM's download-mode banner, line by line (reference 3.6). After a reboot esptool may close
# the port part-way through it, so what is left on the line can be any tail of it.
ROM_BANNER_LINES = [
    rb"ets Jul 29 2019 12:21:46",
    rb"",
    rb"rst:0x[0-9a-f]+ \([A-Z_]+\),boot:0x3 \(DOWNLOAD_BOOT\(UART0/UART1/SDIO_REI_REO_V2\)\)",
    rb"waiting for download",
]
ROM_BANNER_TAILS = [re.compile(rb"\r\n".join(ROM_BANNER_LINES[i:]) + rb"\r\n") for i in range(len(ROM_BANNER_LINES))]


def is_rom_banner_tail(text: bytes) -> bool:
    return any(tail.fullmatch(text) for tail in ROM_BANNER_TAILS)


# --- SLIP, written out independently of ota_rig.virtual.rom ---------------------------------------


def slip(payload: bytes) -> bytes:
    body = bytearray()
    for byte in payload:
        body += {0xC0: b"\xdb\xdc", 0xDB: b"\xdb\xdd"}.get(byte, bytes([byte]))
    return b"\xc0" + bytes(body) + b"\xc0"


def unslip(body: bytes) -> bytes:
    out, escaped = bytearray(), False
    for byte in body:
        if escaped:
            out.append({0xDC: 0xC0, 0xDD: 0xDB}[byte])  # KeyError: an invalid escape from the twin
            escaped = False
        elif byte == 0xDB:
            escaped = True
        else:
            out.append(byte)
    assert not escaped, "frame ends inside an escape"
    return bytes(out)


def request(op: int, data: bytes = b"", checksum: int = 0) -> bytes:
    """A host request as the protocol reference (2.2) lays it out."""
    return slip(struct.pack("<BBHI", 0x00, op, len(data), checksum) + data)


SYNC = request(0x08, b"\x07\x07\x12\x20" + b"\x55" * 32)


def split_frames(stream: bytes) -> tuple[list[bytes], bytes]:
    """(decoded SLIP frames, every byte found outside a frame) of what came off the port."""
    frames, outside, i = [], bytearray(), 0
    while i < len(stream):
        if stream[i] != 0xC0:
            outside.append(stream[i])
            i += 1
            continue
        end = stream.find(b"\xc0", i + 1)
        if end < 0:
            outside += stream[i:]  # an unterminated frame counts as junk
            break
        if end > i + 1:
            frames.append(unslip(stream[i + 1 : end]))
        i = end + 1
    return frames, bytes(outside)


def response(frame: bytes) -> tuple[int, int, int, bytes]:
    """(direction, opcode, value, data) of a response (reference 2.3)."""
    direction, op, length, value = struct.unpack_from("<BBHI", frame)
    data = frame[8:]
    assert len(data) == length, f"length field {length}, data {len(data)}: {frame.hex(' ')}"
    return direction, op, value, data


def exchange(port: str, frame: bytes, op: int, timeout: float = 1.0) -> list[bytes]:
    """Send one request with pyserial; return the frames read until the reply to `op` shows."""
    seen = b""
    with serial.Serial(port, 115200, timeout=0.05) as line:
        line.write(frame)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen += line.read(4096)
            frames, _ = split_frames(seen)
            if any(f[:2] == bytes([1, op]) for f in frames):
                return frames
    pytest.fail(f"no reply to request 0x{op:02x} within {timeout} s; the port said {seen!r}")


def read_raw(fd: int, seconds: float) -> bytes:
    data = b""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], remaining)[0]:
            data += os.read(fd, 65536)
    return data


def esptool_ok(port: str, *args: str, **kw: str) -> str:
    done = esptool(port, *args, **kw)
    assert done.returncode == 0, done.stdout
    return done.stdout


def to_rom_loader(port: str) -> None:
    """Leave the pty twin in its ROM loader, whatever ran before (reference 12: the stub reboots)."""
    assert f"MAC:                {TWIN_MAC}" in esptool_ok(port, "chip-id", **NO_RESET)


# --- line noise ---------------------------------------------------------------------------------

_rng = random.Random(20240611)
NOISE = {
    "random-bytes": _rng.randbytes(4000) + b"\xc0\xdb\xc0\xc0\xdb\xdb\xc0",
    "half-frame": b"\xc0\x00\x03\x10\x40\x00\x00\x00\x00" + _rng.randbytes(300).replace(b"\xc0", b"\x00"),
    "dangling-escape": _rng.randbytes(100) + b"\xc0\x00\x08\x24\x00\xdb",
    "invalid-escape-frame": b"\xc0\x00\x08\x24\x00\x00\x00\x00\x00\xdb\x07\x12\x20\xc0" + b"\xc0\xc0\xc0",
    "text": b"hello esp32\r\n" * 20 + b"\xc0",
}


@pytest.mark.parametrize("noise", NOISE.values(), ids=NOISE.keys())
def test_noise_before_sync_is_ignored(pty_board, noise: bytes) -> None:
    with serial.Serial(pty_board.port, 115200) as line:
        line.write(noise)
        line.flush()
    output = esptool_ok(pty_board.port, "chip-id", **NO_RESET)
    assert f"MAC:                {TWIN_MAC}" in output


# --- killed esptool runs ------------------------------------------------------------------------


def output_until(proc: subprocess.Popen, marker: bytes, timeout: float) -> bytes:
    """What a process printed until `marker` shows, it closes its output, or `timeout` passes."""
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen and time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.05)[0]:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            seen += chunk
    return seen


def kill_mid_write(port: str, image: Path, *, before: str, after: str, timeout: float) -> str:
    """Start `write-flash --no-compress 0x100000 image`, SIGKILL it once it is writing."""
    argv = [sys.executable, "-m", "esptool", "--port", port, "--before", before, "--after", after,
            "write-flash", "--no-compress", "0x100000", str(image)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    try:
        seen = output_until(proc, b"Writing at", timeout)
    finally:
        proc.kill()
        proc.wait()
    seen += proc.stdout.read()
    proc.stdout.close()
    text = seen.decode(errors="replace")
    assert proc.returncode == -signal.SIGKILL, f"esptool was not killed mid-write:\n{text}"
    assert "Writing at" in text and "Wrote " not in text, text
    return text


def test_killed_write_on_pty_leaves_the_twin_answering(pty_board, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(random.Random(1).randbytes(1024 * 1024))
    kill_mid_write(pty_board.port, big, timeout=20, **NO_RESET)

    assert f"MAC:                {TWIN_MAC}" in esptool_ok(pty_board.port, "chip-id", **NO_RESET)

    small = tmp_path / "small.bin"
    small.write_bytes(random.Random(2).randbytes(5000))
    back = tmp_path / "back.bin"
    esptool_ok(pty_board.port, "write-flash", "0x200000", str(small), **NO_RESET)
    esptool_ok(pty_board.port, "read-flash", "0x200000", "5000", str(back), **NO_RESET)
    assert back.read_bytes() == small.read_bytes()
    assert flash_image(pty_board)[0x200000:0x200000 + 5000] == small.read_bytes()


@pytest.mark.slow
def test_killed_write_over_rfc2217_leaves_the_twin_answering(rfc_board, tmp_path: Path) -> None:
    image = tmp_path / "image.bin"
    image.write_bytes(random.Random(3).randbytes(128 * 1024))  # 8 stub blocks: ~1.6 s of writing
    kill_mid_write(rfc_board.port, image, before="default-reset", after="hard-reset", timeout=90)

    output = esptool_ok(rfc_board.port, "chip-id")
    assert f"MAC:                {TWIN_MAC}" in output


# --- requests the loader does not know ------------------------------------------------------


@pytest.mark.parametrize(
    ("after", "status"),
    [("no-reset", b"\x01\x05\x00\x00"), ("no-reset-stub", b"\xff\x00")],
    ids=["rom", "stub"],
)
def test_unknown_command_gets_an_error_reply(pty_board, after: str, status: bytes) -> None:
    esptool_ok(pty_board.port, "chip-id", before="no-reset", after=after)
    try:
        frames = exchange(pty_board.port, request(0x77, b"\x01\x02\x03"), op=0x77)
    finally:
        to_rom_loader(pty_board.port)
    replies = [response(f) for f in frames if f[:2] == b"\x01\x77"]
    assert len(replies) == 1
    assert replies[0][3] == status


def test_md5_past_the_end_of_flash_does_not_kill_the_loader(tmp_path: Path) -> None:
    """What `esptool verify-flash 0x3ff000 <8 KB file>` asks for; the loader must keep answering."""
    with VirtualBoard(tmp_path, transport="pty", mac=TWIN_MAC) as board:
        board.enter_bootloader()
        exchange(board.port, request(0x13, struct.pack("<IIII", 0x3FF000, 0x2000, 0, 0)), op=0x13)
        frames = exchange(board.port, request(0x0A, struct.pack("<I", 0x40001000)), op=0x0A)
        assert any(response(f)[1:3] == (0x0A, 0x00F01D83) for f in frames)


# --- nothing but SLIP in loader mode --------------------------------------------------------------


@pytest.mark.parametrize(
    ("after", "sync_value", "status"),
    [("no-reset-stub", 0, b"\x00\x00"), ("no-reset", 0x20120707, b"\x00\x00\x00\x00")],
    ids=["stub-stays", "stub-reboots-to-rom"],
)
def test_loader_sends_only_slip_frames(pty_board, after: str, sync_value: int, status: bytes) -> None:
    esptool_ok(pty_board.port, "chip-id", before="no-reset", after=after)
    # os.open, not pyserial: pyserial flushes the input on open and would hide stray text.
    fd = os.open(pty_board.port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        idle = read_raw(fd, 0.5)
        os.write(fd, SYNC)
        answer = read_raw(fd, 0.5)
    finally:
        os.close(fd)
        to_rom_loader(pty_board.port)

    idle_frames, idle_text = split_frames(idle)
    assert idle_frames == []
    if after == "no-reset":  # the stub rebooted into the ROM, which prints its banner once
        assert idle_text == b"" or is_rom_banner_tail(idle_text), idle_text
    else:
        assert idle_text == b""

    frames, text = split_frames(answer)
    assert text == b""
    replies = [response(f) for f in frames]
    assert len(replies) == 8  # SYNC is answered eight times
    assert all(r == (1, 0x08, sync_value, status) for r in replies), replies


# --- the twin process ----------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_the_twin_and_keeps_its_flash(tmp_path: Path, signum: int) -> None:
    flash = tmp_path / "flash.bin"
    data = tmp_path / "data.bin"
    data.write_bytes(random.Random(signum).randbytes(6000))

    board = VirtualBoard(tmp_path / "first", transport="pty", flash=flash, mac=TWIN_MAC)
    try:
        board.enter_bootloader()
        esptool_ok(board.port, "write-flash", "0x3000", str(data), **NO_RESET)
        board.process.send_signal(signum)
        assert board.process.wait(timeout=2) == 0
    finally:
        board.close()
    assert flash.read_bytes()[0x3000:0x3000 + 6000] == data.read_bytes()

    back = tmp_path / "back.bin"
    with VirtualBoard(tmp_path / "second", transport="pty", flash=flash, mac=TWIN_MAC) as again:
        again.enter_bootloader()
        esptool_ok(again.port, "read-flash", "0x3000", "6000", str(back), **NO_RESET)
    assert back.read_bytes() == data.read_bytes()


def twin(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ota_rig.virtual", *args], capture_output=True, text=True, timeout=20)


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        ([], "the following arguments are required: --flash"),
        (["--flash", "{flash}"], "one of the arguments --rfc2217 --pty is required"),
        (["--flash", "{flash}", "--rfc2217", "0", "--pty", "{link}"], "not allowed with argument"),
        (["--flash", "{flash}", "--pty", "{link}", "--mac", "24:6f:28:7a:d8"], "is not six colon-separated hex bytes"),
        (
            ["--flash", "{flash}", "--pty", "{link}", "--mac", "zz:6f:28:7a:d8:84"],
            "is not six colon-separated hex bytes",
        ),
        (["--flash", "{flash}", "--rfc2217", "port"], "invalid int value"),
    ],
    ids=["no-flash", "no-transport", "both-transports", "short-mac", "non-hex-mac", "bad-port"],
)
def test_bad_arguments_exit_with_usage(tmp_path: Path, args: list[str], complaint: str) -> None:
    flash, link = tmp_path / "flash.bin", tmp_path / "tty"
    done = twin(*(a.format(flash=flash, link=link) for a in args))
    assert done.returncode != 0
    assert done.stderr.startswith("usage: python -m ota_rig.virtual")
    assert complaint in done.stderr
    assert done.stdout == ""
    assert not flash.exists() and not link.is_symlink()  # refused before touching anything


def test_wrong_size_flash_file_is_refused(tmp_path: Path) -> None:
    flash = tmp_path / "flash.bin"
    flash.write_bytes(b"\x00" * 1000)
    done = twin("--flash", str(flash), "--pty", str(tmp_path / "tty"))
    assert done.returncode != 0
    assert done.stderr.startswith(f"error: cannot use {flash} as flash")
    assert len(done.stderr.strip().splitlines()) == 1
    assert flash.read_bytes() == b"\x00" * 1000


def first_line(proc: subprocess.Popen, timeout: float = 10.0) -> str:
    return output_until(proc, b"\n", timeout).decode()


@pytest.mark.parametrize("transport", ["pty", "rfc2217"])
def test_listening_line(tmp_path: Path, transport: str) -> None:
    link = tmp_path / "ttyESP32"
    where = ["--pty", str(link)] if transport == "pty" else ["--rfc2217", "0"]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ota_rig.virtual",
            "--flash",
            str(tmp_path / "flash.bin"),
            *where,
            "--mac",
            "24:6F:28:AB:CD:EF",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        line = first_line(proc)
        url = re.escape(str(link)) if transport == "pty" else r"rfc2217://127\.0\.0\.1:(\d+)"
        match = re.fullmatch(rf"virtual ESP32 24:6f:28:ab:cd:ef listening on {url}\n", line)
        assert match, line
        if transport == "pty":
            assert os.path.realpath(link).startswith("/dev/pts/")
        else:  # something speaks RFC2217 there: pyserial's negotiation completes
            serial.serial_for_url(f"rfc2217://127.0.0.1:{match.group(1)}", timeout=1).close()
    finally:
        proc.terminate()
        try:
            code = proc.wait(timeout=5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
    assert code == 0


# --- clients that go away at once -------------------------------------------------------------


def abort_connection(url: str) -> None:
    """Connect to an rfc2217:// URL and reset the connection at once, as a crashed client does."""
    host, port = url.removeprefix("rfc2217://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=2)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
    sock.close()


def test_rfc2217_port_survives_an_aborted_connection(tmp_path: Path) -> None:
    with VirtualBoard(tmp_path, mac=TWIN_MAC) as board:
        abort_connection(board.port)
        time.sleep(0.2)
        # pyserial completes its telnet negotiation only if the twin serves this client.
        serial.serial_for_url(board.port, timeout=1).close()


def test_sigterm_right_after_an_aborted_connection_stops_the_twin(tmp_path: Path) -> None:
    for attempt in range(5):  # the race is lost about 3 times in 4: five tries make it certain
        board = VirtualBoard(tmp_path / f"try{attempt}", mac=TWIN_MAC)
        try:
            abort_connection(board.port)
            board.process.send_signal(signal.SIGTERM)
            assert board.process.wait(timeout=2) == 0, f"attempt {attempt}"
        finally:
            if board.alive:
                board.process.kill()
            board.close()
