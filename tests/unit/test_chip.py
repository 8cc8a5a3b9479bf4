"""ota_rig.virtual.chip and the pure helpers of ota_rig.virtual.rom: the twin's hardware, no processes.

What this proves, against values that come from outside the code under test (the esptool
protocol reference, a real chip's eFuse dump, esptool's own register traces, plain reference
loops written here):

* the factory MAC and its CRC-8 land in eFuse words exactly as a real ESP32 stores them;
* `parse_mac` refuses anything that is not six colon-separated hex bytes;
* `Flash` behaves like NOR flash kept in a file: born erased, programming only clears bits,
  erasing works on whole 4 KB sectors, contents survive a reopen, bad sizes and addresses fail;
* the DTR/RTS reset circuit follows the NodeMCU truth table, with (1,1) holding EN, so the
  line-at-a-time Classic reset esptool sends over RFC2217 lands in download mode;
* SLIP framing and the block checksum match the protocol, and the SPI controller answers RDID
  to esptool's exact register sequence.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from ota_rig.device.firmware import xor_checksum
from ota_rig.virtual.chip import (
    DEFAULT_MAC,
    EN_RELEASE_SECONDS,
    Chip,
    ChipReset,
    EFuses,
    Flash,
    ResetCircuit,
    ResetReason,
    SpiController,
    mac_crc8,
    parse_mac,
)
from ota_rig.virtual.rom import slip_decode, slip_encode

SECTOR = 0x1000  # written out here rather than imported: the test states the hardware fact
SMALL = 4 * SECTOR


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


# --- factory MAC in eFuse ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "crc"),
    [
        ("24:6f:28:7a:d8:84", 0x3E),  # a real chip's value (esptool#570)
        ("94:b9:7e:5a:6e:58", 0xE2),  # the eFuse dump in the esptool docs
    ],
)
def test_mac_crc8_matches_real_chips(text: str, crc: int) -> None:
    assert mac_crc8(mac(text)) == crc


def test_efuse_mac_words_for_the_default_mac() -> None:
    words = EFuses(mac(DEFAULT_MAC)).words
    assert DEFAULT_MAC == "24:6f:28:7a:d8:84"
    assert words[1] == 0x287AD884
    assert words[2] == 0x003E246F


def test_efuse_words_reproduce_the_real_dump_for_its_mac() -> None:
    """With the docs chip's MAC, block 0 is that chip's dump word for word."""
    assert EFuses(mac("94:b9:7e:5a:6e:58")).words == (
        0x00000000, 0x7E5A6E58, 0x00E294B9, 0x0000A200, 0x00000333, 0x00100000, 0x00000004,
    )


# --- parse_mac ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["24:6f:28:7a:d8:84", "24:6F:28:7A:D8:84", "00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff"])
def test_parse_mac_accepts_six_hex_bytes(text: str) -> None:
    assert parse_mac(text) == mac(text)


# Found while writing these tests: int(x, 16) tolerates a sign and surrounding whitespace, and
# parse_mac only checks that each part is two characters long.


@pytest.mark.parametrize(
    "text",
    [
        "",
        "24:6f:28:7a:d8",  # five bytes
        "24:6f:28:7a:d8:84:00",  # seven bytes
        "24-6f-28-7a-d8-84",  # wrong separator
        "246f287ad884",  # no separators
        "24:6f:28:7a:d8:8",  # a one-digit byte
        "24:6f:28:7a:d8:884",  # a three-digit byte
        "24:6f:28:7a:d8:8g",  # not hex
        "0x:6f:28:7a:d8:84",
        "+1:6f:28:7a:d8:84",
        "-0:6f:28:7a:d8:84",
        " 1:6f:28:7a:d8:84",
    ],
)
def test_parse_mac_rejects_anything_else_naming_the_input(text: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_mac(text)
    assert repr(text) in str(err.value)


# --- Flash -----------------------------------------------------------------------------


@pytest.fixture
def flash(tmp_path: Path):
    chip_flash = Flash(tmp_path / "flash.bin", size=SMALL)
    yield chip_flash
    chip_flash.close()


def test_new_flash_is_a_file_of_erased_bytes(tmp_path: Path) -> None:
    path = tmp_path / "flash.bin"
    chip_flash = Flash(path)
    try:
        assert chip_flash.read(0, 16) == b"\xff" * 16
    finally:
        chip_flash.close()
    content = path.read_bytes()
    assert len(content) == 4 * 1024 * 1024
    assert content == b"\xff" * len(content)


@pytest.mark.parametrize(
    ("first", "second", "result"),
    [
        (0xF0, 0x0F, 0x00),  # disjoint bits: everything ends cleared
        (0xF0, 0xFF, 0xF0),  # programming 0xFF changes nothing
        (0x00, 0xFF, 0x00),  # programming cannot set bits again
        (0xA5, 0xA5, 0xA5),
    ],
)
def test_program_only_clears_bits(flash: Flash, first: int, second: int, result: int) -> None:
    flash.program(0x10, bytes([first]))
    flash.program(0x10, bytes([second]))
    assert flash.read(0x10, 1) == bytes([result])
    assert flash.read(0x0F, 1) == flash.read(0x11, 1) == b"\xff"  # neighbours untouched


def test_program_is_bitwise_and_over_a_block(flash: Flash) -> None:
    rng = random.Random(1)
    a, b = rng.randbytes(3000), rng.randbytes(3000)
    flash.program(0x123, a)
    flash.program(0x123, b)
    assert flash.read(0x123, 3000) == bytes(x & y for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    ("addr", "length", "erased_sectors"),
    [
        (0x0000, 0x1000, [0]),
        (0x1800, 0x10, [1]),  # inside one sector: the whole sector
        (0x1FFF, 2, [1, 2]),  # straddles a boundary: both sectors
        (0x0FFF, 0x1002, [0, 1, 2]),
        (0x0000, SMALL, [0, 1, 2, 3]),
    ],
)
def test_erase_works_on_whole_sectors(flash: Flash, addr: int, length: int, erased_sectors: list[int]) -> None:
    flash.program(0, b"\x00" * SMALL)
    flash.erase(addr, length)
    for sector in range(SMALL // SECTOR):
        expected = b"\xff" if sector in erased_sectors else b"\x00"
        assert flash.read(sector * SECTOR, SECTOR) == expected * SECTOR, f"sector {sector}"


def test_erasing_nothing_erases_nothing(flash: Flash) -> None:
    flash.program(0, b"\x00" * SMALL)
    flash.erase(0x1800, 0)
    assert flash.read(0, SMALL) == b"\x00" * SMALL


def test_contents_survive_closing_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "flash.bin"
    data = random.Random(2).randbytes(5000)
    first = Flash(path, size=SMALL)
    first.program(0x2000, data)
    first.close()
    assert path.read_bytes()[0x2000:0x2000 + len(data)] == data  # on disk, not only in memory

    again = Flash(path, size=SMALL)
    try:
        assert again.read(0x2000, len(data)) == data  # reopening does not erase
        assert again.read(0, 0x2000) == b"\xff" * 0x2000
    finally:
        again.close()


def test_a_wrong_size_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "flash.bin"
    path.write_bytes(b"\x12" * 1000)
    with pytest.raises(ValueError, match="1000 bytes"):
        Flash(path, size=SMALL)
    assert path.read_bytes() == b"\x12" * 1000


@pytest.mark.parametrize(
    "access",
    [
        lambda f: f.read(SMALL - 1, 2),
        lambda f: f.read(SMALL, 1),
        lambda f: f.read(-1, 1),
        lambda f: f.read(0, -1),
        lambda f: f.program(SMALL - 2, b"\x00\x00\x00"),
        lambda f: f.erase(SMALL, 1),
        lambda f: f.erase(-SECTOR, SECTOR),
    ],
    ids=["read-past-end", "read-at-end", "read-negative-addr", "read-negative-length",
         "program-past-end", "erase-past-end", "erase-negative-addr"],
)
def test_out_of_range_access_raises(flash: Flash, access) -> None:
    with pytest.raises(ValueError, match="outside"):
        access(flash)
    assert flash.read(0, SMALL) == b"\xff" * SMALL


# --- reset circuit -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "lines", "en_low", "io0_low"),
    [
        ((0, 0), (0, 0), False, False),
        ((0, 0), (0, 1), True, False),  # RTS alone: EN low, chip in reset
        ((0, 0), (1, 0), False, True),  # DTR alone: IO0 low
        ((0, 0), (1, 1), False, False),  # (1,1) drives nothing: EN stays released...
        ((0, 1), (1, 1), False, False),  # ...and a held EN is let go (here without the RC delay)
        ((1, 0), (1, 1), False, False),
        ((0, 1), (0, 0), False, False),
        ((0, 1), (1, 0), False, True),
    ],
)
def test_reset_circuit_truth_table(before, lines, en_low: bool, io0_low: bool) -> None:
    seen: list[tuple[bool, bool]] = []
    circuit = ResetCircuit(lambda en, io0: seen.append((en, io0)), release_seconds=0)
    circuit.set_lines(dtr=bool(before[0]), rts=bool(before[1]))
    circuit.set_lines(dtr=bool(lines[0]), rts=bool(lines[1]))
    assert (circuit.en_low, circuit.io0_low) == (en_low, io0_low)
    assert seen[-1] == (en_low, io0_low)  # the chip hears every change


def test_en_rises_through_the_rc_delay_and_a_new_pull_starts_the_charge_over() -> None:
    seen: list[tuple[bool, bool]] = []
    circuit = ResetCircuit(lambda en, io0: seen.append((en, io0)), release_seconds=0.05)
    circuit.set_lines(dtr=False, rts=True)
    circuit.set_lines(dtr=True)  # (1,1): EN charging, not yet released
    assert circuit.en_low
    circuit.set_lines(dtr=False)  # (0,1) again before it got there: the capacitor empties
    time.sleep(0.1)
    assert circuit.en_low and seen[-1] == (True, False)
    circuit.set_lines(rts=False)
    time.sleep(0.1)
    assert not circuit.en_low and seen[-1] == (False, False)


# Line events as a server sees them, with the waits esptool makes between them
# (esp_pylib.serial_reset: classic_bootloader_reset, unix_tight_bootloader_reset, hard_reset;
# set_rts re-sends DTR after every RTS change). ("wait", s) sleeps.
OPEN = [("dtr", 1), ("rts", 1)]  # pyserial's rfc2217 client asserts both as it opens the port
CLASSIC = [("dtr", 0), ("rts", 1), ("dtr", 0), ("wait", 0.1), ("dtr", 1), ("rts", 0), ("dtr", 1),
           ("wait", 0.05), ("dtr", 0)]
HARD_RESET = [("rts", 1), ("dtr", 0), ("wait", 0.1), ("rts", 0), ("dtr", 0)]
CONFTEST_RESET = [("dtr", 0), ("rts", 1), ("wait", 0.1), ("rts", 0)]  # ota_rig.bench.board.reset_and_read()
# Both lines per ioctl:
UNIX_TIGHT = [((0, 0),), ((1, 1),), ((0, 1),), ("wait", 0.1), ((1, 0),), ("wait", 0.05), ((0, 0),)]
# The classic reset through a relay that takes 0.1 s per line change (pyserial's rfc2217 client
# with ?ign_set_control sleeps 0.1 s after each SET_CONTROL, serial/rfc2217.py): (1,1) lasts 0.1 s.
RELAYED_CLASSIC = [step for event in CLASSIC for step in ((event,) if event[0] == "wait" else (event, ("wait", 0.1)))]


def drive(chip: Chip, events: list) -> None:
    for event in events:
        if len(event) == 1:
            dtr, rts = event[0]
            chip.pins.set_lines(dtr=bool(dtr), rts=bool(rts))
        elif event[0] == "wait":
            time.sleep(event[1])
        else:
            line, level = event
            chip.pins.set_lines(**{line: bool(level)})
    time.sleep(3 * EN_RELEASE_SECONDS)  # EN has charged, whatever the last step left


@pytest.fixture
def chip(tmp_path: Path):
    chip_flash = Flash(tmp_path / "flash.bin", size=SMALL)
    yield Chip(chip_flash, EFuses(mac(DEFAULT_MAC)))
    chip_flash.close()


@pytest.mark.parametrize(
    ("sequence", "download"),
    [
        (OPEN + CLASSIC, True),
        (UNIX_TIGHT, True),
        (HARD_RESET, False),
        (CONFTEST_RESET, False),
        (OPEN + RELAYED_CLASSIC, False),  # espressif/esptool#383: the chip boots its app
    ],
    ids=["rfc2217-open-classic", "unix-tight", "hard-reset", "conftest-reset", "relayed-classic"],
)
def test_reset_sequences_latch_the_boot_mode(chip: Chip, sequence: list, download: bool) -> None:
    drive(chip, sequence)
    assert chip.download_strap is download
    assert not chip.in_reset
    assert chip.read_reg(0x3FF44038) == (0x03 if download else 0x13)  # GPIO_STRAP as esptool reads it


def test_hard_reset_after_download_mode_boots_flash(chip: Chip) -> None:
    drive(chip, OPEN + CLASSIC)
    assert chip.download_strap
    drive(chip, HARD_RESET)
    assert chip.download_strap is False
    assert not chip.in_reset


def test_en_reset_restarts_the_cpu_in_the_latched_mode(chip: Chip) -> None:
    """The CPU thread: the running program is unwound and starts again, as a power-on reset."""
    boots: list[tuple[ResetReason, bool]] = []
    unwound: list[ResetReason] = []

    def firmware(c: Chip, reason: ResetReason) -> None:
        boots.append((reason, c.download_strap))
        try:
            c.uart.read(1)  # blocks until a reset
        except ChipReset as reset:
            unwound.append(reset.reason)
            raise

    cpu = threading.Thread(target=chip.run, args=(firmware,), daemon=True)
    cpu.start()
    try:
        wait_for(lambda: len(boots) == 1)
        drive(chip, OPEN + CLASSIC)
        wait_for(lambda: len(boots) == 2)
    finally:
        chip.stop()
        cpu.join(timeout=2)
    assert not cpu.is_alive()
    assert boots == [(ResetReason.POWERON_RESET, False), (ResetReason.POWERON_RESET, True)]
    assert unwound == [ResetReason.POWERON_RESET]


def wait_for(condition, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("addr", "value"),
    [
        (0x40001000, 0x00F01D83),  # ROM magic
        (0x3FF5A004, 0x287AD884),  # eFuse word1
        (0x3FF5A008, 0x003E246F),  # eFuse word2
        (0x3FF5A00C, 0x0000A200),
        (0x3FF6607C, 0x96042000),  # APB_CTRL_DATE
        (0x3FF40014, 0x15B),  # UART0_CLKDIV at 115200
        (0x3FF5F06C, 0x0003EC00),  # RTC calibration
        (0x3FF48074, 0),  # anything unknown reads 0
    ],
)
def test_registers_read_as_on_a_d0wd_v3(chip: Chip, addr: int, value: int) -> None:
    assert chip.read_reg(addr) == value


# --- SLIP and checksum -------------------------------------------------------------------


def reference_slip_decode(body: bytes) -> bytes | None:
    out = bytearray()
    it = iter(body)
    for byte in it:
        if byte == 0xDB:
            nxt = next(it, None)
            if nxt == 0xDC:
                out.append(0xC0)
            elif nxt == 0xDD:
                out.append(0xDB)
            else:
                return None
        else:
            out.append(byte)
    return bytes(out)


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xc0", b"\xdb", b"\xdb\xdc", b"\xdb\xdd", b"\xc0\xdb\xc0\xdb", b"\xdc\xdd", b"plain",
     bytes(range(256))],
)
def test_slip_round_trip(payload: bytes) -> None:
    frame = slip_encode(payload)
    assert frame[0] == frame[-1] == 0xC0
    body = frame[1:-1]
    assert 0xC0 not in body
    assert slip_decode(body) == payload


def test_slip_encoding_bytes() -> None:
    assert slip_encode(b"\x01\xc0\x02\xdb\x03") == b"\xc0\x01\xdb\xdc\x02\xdb\xdd\x03\xc0"


@pytest.mark.parametrize("body", [b"\xdb", b"\xdb\x00", b"a\xdbb", b"\xdb\xdb\xdc", b"\xdb\xdb\xdd", b"\xdc\xdb"])
def test_slip_invalid_escape_is_none(body: bytes) -> None:
    assert slip_decode(body) is None


def test_slip_decode_agrees_with_a_byte_loop_on_random_bodies() -> None:
    rng = random.Random(3)
    for _ in range(2000):
        body = bytes(rng.choice(b"\xdb\xdc\xdd\x00\x55") for _ in range(rng.randrange(8)))
        assert slip_decode(body) == reference_slip_decode(body), body.hex()


@pytest.mark.parametrize("length", [0, 1, 7, 8, 1023, 16384])
def test_xor_checksum_matches_a_plain_loop(length: int) -> None:
    data = random.Random(length).randbytes(length)
    expected = 0xEF
    for byte in data:
        expected ^= byte
    assert xor_checksum(data) == expected


# --- SPI controller ------------------------------------------------------------------------

# esptool 5.6's RDID on an ESP32 (from a --trace): register offsets within SPI1 and values.
SPI_CMD, SPI_USER, SPI_USER2, SPI_MISO_DLEN, SPI_W0 = 0x00, 0x1C, 0x24, 0x2C, 0x80


def test_spi_rdid_with_esptools_register_sequence() -> None:
    spi = SpiController()
    spi.write(SPI_MISO_DLEN, 23)  # 24 bits in
    spi.write(SPI_USER, 1 << 31 | 1 << 28)  # USR_COMMAND | USR_MISO
    spi.write(SPI_USER2, 0x70000000 | 0x9F)  # 8-bit command 0x9F
    spi.write(SPI_W0, 0)
    spi.write(SPI_CMD, 1 << 18)  # SPI_USR: go
    assert spi.read(SPI_CMD) & (1 << 18) == 0  # done
    assert spi.read(SPI_W0) == 0x1640C8  # GD25Q32, 4 MB


def test_spi_rdid_through_chip_registers(chip: Chip) -> None:
    """The same, as WRITE_REG/READ_REG reach it: absolute addresses in SPI1 at 0x3FF42000."""
    base = 0x3FF42000
    for offset, value in [(SPI_MISO_DLEN, 23), (SPI_USER, 0x90000000), (SPI_USER2, 0x7000009F),
                          (SPI_W0, 0), (SPI_CMD, 0x00040000)]:
        chip.write_reg(base + offset, value)
    assert chip.read_reg(base + SPI_CMD) == 0
    assert chip.read_reg(base + SPI_W0) == 0x001640C8


# --- the clock and its time lapse ----------------------------------------------------------


def test_a_time_lapse_runs_device_waits_fast_and_counts_them_in_full(chip: Chip) -> None:
    chip.time_lapse(100, 50)
    before, started = chip.clock.now(), time.monotonic()
    for _ in range(20):
        chip.sleep(1.0)  # 20 device seconds
        time.sleep(0.002)  # the host's own slowness: no device time under a lapse
    assert time.monotonic() - started < 1.0
    assert chip.clock.now() - before == pytest.approx(20.0, abs=0.05)


def test_a_time_lapse_ends_after_its_device_seconds(chip: Chip) -> None:
    chip.time_lapse(1000, 2)
    chip.sleep(1.5)
    assert chip.clock.rate == 1000
    chip.sleep(1.0)  # crosses the end: the rest of the wait is real
    assert chip.clock.rate == 1.0
    started = time.monotonic()
    chip.sleep(0.2)
    assert time.monotonic() - started >= 0.19


def test_a_wait_that_crosses_the_lapses_end_runs_its_rest_in_real_time(chip: Chip) -> None:
    # A sketch's next check, a 10 s delay() begun with 1 s of lapse left, takes 9 s, not 10 ms.
    chip.time_lapse(1000, 1.0)
    before, started = chip.clock.now(), time.monotonic()
    chip.sleep(1.3)
    assert time.monotonic() - started >= 0.29
    assert chip.clock.now() - before == pytest.approx(1.3, abs=0.02)
    assert chip.clock.rate == 1.0


def test_a_reset_ends_a_time_lapse(chip: Chip) -> None:
    chip.time_lapse(100, 1000)
    with pytest.raises(ChipReset):
        chip.software_reset()
    assert chip.clock.rate == 1.0


def test_a_lapse_is_never_slower_than_real_time(chip: Chip) -> None:
    with pytest.raises(ValueError, match="1x or faster"):
        chip.time_lapse(0.5, 10)
