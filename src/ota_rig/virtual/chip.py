"""The silicon of the virtual ESP32-D0WD-V3: flash, eFuses, SPI controller, UART, reset pins.

Everything here is hardware with no opinion about what runs on it. The ROM (rom.py) and the
boot path (boot.py) are the software; they reach the hardware through `Chip`.

Execution model: one CPU thread runs whatever the chip is executing (ROM loader, bootloader,
app). Transports run in their own threads and only touch the UART and the reset pins. When EN
is pulled low, or software restarts the chip, every blocking call of the CPU thread
(`Uart.read`, `Chip.sleep`) raises `ChipReset`, which unwinds the running program like a real
reset discards the CPU state.
"""

from __future__ import annotations

import enum
import logging
import mmap
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

CRASH_RESET_DELAY = 1.0  # seconds before the watchdog resets a chip the twin failed to model

FLASH_SIZE = 4 * 1024 * 1024
SECTOR_SIZE = 0x1000
# GigaDevice GD25Q32: manufacturer 0xC8, type 0x40, capacity 0x16 (4 MB), as RDID returns it.
FLASH_JEDEC_ID = 0x1640C8


class ResetReason(enum.IntEnum):
    """The `rst:0x..` values the ROM prints (reset reasons of the classic ESP32)."""

    POWERON_RESET = 0x1
    SW_RESET = 0x3
    SW_CPU_RESET = 0xC
    RTCWDT_RTC_RESET = 0x10


class ChipReset(Exception):
    """Unwinds the CPU thread: the chip was reset while code was running."""

    def __init__(self, reason: ResetReason) -> None:
        super().__init__(reason.name)
        self.reason = reason


class ChipStopped(Exception):
    """The twin process is shutting down: the CPU thread ends."""


class Flash:
    """SPI NOR flash backed by a file, so its contents survive a restart of the twin.

    NOR semantics: erasing sets a whole 4 KB sector to 0xFF, programming can only clear bits
    (new = old AND data). Writing 0xFF padding therefore never changes anything, exactly as on
    the chip. The file is memory-mapped (shared): a write is in the page cache at once, so it
    survives a killed twin and any reader of the file sees it. Nothing forces it to disk (msync
    cost 10-25 ms a call and a twin's flash need not outlive the machine). `path` None is a
    flash in memory only (a device client that runs one check: ota_rig.virtual.device_client).
    """

    def __init__(self, path: Path | None, size: int = FLASH_SIZE) -> None:
        self.size = size
        self.path: Path | None = None
        if path is None:
            self._map = mmap.mmap(-1, size)
            self._map[:] = b"\xff" * size
            return
        self.path = Path(path)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            current = os.fstat(fd).st_size
            if current == 0:  # a new chip comes with its flash erased (one write: no page faults)
                if os.pwrite(fd, b"\xff" * size, 0) != size:
                    raise OSError(f"could not write {size} bytes to the flash file {self.path}")
            elif current != size:
                raise ValueError(f"flash file {self.path} holds {current} bytes, expected {size}")
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)

    def _check(self, addr: int, length: int) -> None:
        if addr < 0 or length < 0 or addr + length > self.size:
            raise ValueError(f"flash access 0x{addr:x}+0x{length:x} is outside the {self.size >> 20} MB chip")

    def read(self, addr: int, length: int) -> bytes:
        self._check(addr, length)
        return self._map[addr : addr + length]

    def erase(self, addr: int, length: int) -> None:
        """Erase every sector that [addr, addr+length) touches."""
        self._check(addr, length)
        if length == 0:
            return
        start = addr - addr % SECTOR_SIZE
        end = -(-(addr + length) // SECTOR_SIZE) * SECTOR_SIZE
        self._map[start:end] = b"\xff" * (end - start)

    def program(self, addr: int, data: bytes) -> None:
        """Program bytes: each bit can only go from 1 to 0."""
        self._check(addr, len(data))
        old = int.from_bytes(self._map[addr : addr + len(data)], "little")
        new = old & int.from_bytes(data, "little")
        self._map[addr : addr + len(data)] = new.to_bytes(len(data), "little")

    def close(self) -> None:
        self._map.close()


def mac_crc8(mac: bytes) -> int:
    """The CRC the ESP32 stores beside its factory MAC in eFuse (reflected CRC-8, poly 0x8C)."""
    crc = 0
    for byte in mac:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8C if crc & 1 else crc >> 1
    return crc


def parse_mac(text: str) -> bytes:
    """'24:6f:28:7a:d8:84' -> 6 bytes; ValueError naming the problem otherwise."""
    if not re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", text):
        raise ValueError(f"MAC {text!r} is not six colon-separated hex bytes")
    return bytes.fromhex(text.replace(":", ""))


DEFAULT_MAC = "24:6f:28:7a:d8:84"


@dataclass(frozen=True)
class EFuses:
    """eFuse block 0 of a real ESP32-D0WD-V3 (rev v3.0), with a configurable factory MAC.

    Word values come from a real chip's dump in the esptool docs; words 1 and 2 carry the MAC
    and its CRC-8, which espefuse checks.
    """

    mac: bytes

    @property
    def words(self) -> tuple[int, ...]:
        m = self.mac
        word1 = m[2] << 24 | m[3] << 16 | m[4] << 8 | m[5]
        word2 = mac_crc8(m) << 16 | m[0] << 8 | m[1]
        return (0x00000000, word1, word2, 0x0000A200, 0x00000333, 0x00100000, 0x00000004)


class SpiController:
    """SPI1, the controller esptool drives to send raw commands to the flash chip.

    esptool writes USER/USER1/USER2/ADDR/length registers, then sets bit 18 of CMD; the
    command executes at once, its reply lands in W0 and the bit clears.
    """

    BASE = 0x3FF42000
    CMD, ADDR, USER, USER1, USER2, MOSI_DLEN, MISO_DLEN, W0 = 0x00, 0x04, 0x1C, 0x20, 0x24, 0x28, 0x2C, 0x80
    USR_BIT = 1 << 18

    def __init__(self) -> None:
        self.regs: dict[int, int] = {}

    def read(self, offset: int) -> int:
        return self.regs.get(offset, 0)

    def write(self, offset: int, value: int) -> None:
        self.regs[offset] = value
        if offset == self.CMD and value & self.USR_BIT:
            self.regs[self.W0] = self._execute()
            self.regs[self.CMD] = value & ~self.USR_BIT

    def _execute(self) -> int:
        user = self.read(self.USER)
        opcode = self.read(self.USER2) & 0xFF
        addr_bits = (self.read(self.USER1) >> 26) + 1
        addr = self.read(self.ADDR) >> (32 - addr_bits) if user & (1 << 30) else 0
        miso_bits = self.read(self.MISO_DLEN) + 1 if user & (1 << 28) else 0
        if opcode == 0x9F:  # RDID
            reply = FLASH_JEDEC_ID
        elif opcode == 0x5A:  # RDSFDP: "SFDP" signature at 0, the vendor byte at 0x10
            reply = int.from_bytes(b"SFDP", "little") if addr == 0 else FLASH_JEDEC_ID & 0xFF
        else:  # status registers read 0; write-enable, reset and friends return nothing
            reply = 0
        return reply & ((1 << miso_bits) - 1) if miso_bits else 0


# The RC network on EN (CHIP_PU) of a dev board: 10 kOhm pull-up, 1 uF to GND. Espressif's
# hardware design guidelines (ESP32 schematic checklist, "Chip Power-up and Reset Timing"):
# "The recommended setting for the RC delay circuit is usually R = 10 kOhm and C = 1 uF"; esptool's
# docs (advanced-topics/boot-mode-selection.rst, "Automatic Bootloader") say a board with the
# two-transistor circuit needs a capacitor between EN and GND "in the 1uF-10uF range" for the
# reset to work reliably. Time constant R*C = 10 ms.
EN_RC_SECONDS = 10e3 * 1e-6
# UNVERIFIED: the level at which a rising CHIP_PU releases the chip is not in the sources read
# (the datasheet's t_RST only says CHIP_PU must stay below V_IL_nRST for 50 us to reset). The twin
# releases EN one time constant after the circuit stops pulling it low (EN at 63 % of VDD). The
# choice does not decide either case the twin must show: esptool's own sequence leaves EN
# undriven with IO0 high for one line write (far below 10 ms), a relay for 50-100 ms (5-10 time
# constants, EN above 99 % of VDD).
EN_RELEASE_SECONDS = EN_RC_SECONDS


class ResetCircuit:
    """The two-transistor auto-reset circuit of a dev board: DTR and RTS drive EN and IO0.

    DTR and RTS are active low (True = pin at 0 V, esptool boot-mode-selection.rst). One NPN pulls
    EN low while RTS is asserted and DTR is not; the other pulls IO0 low while DTR is asserted and
    RTS is not. So (DTR, RTS) = (0, 1) holds the chip in reset; (1, 0) pulls IO0 low; (0, 0) and
    (1, 1) drive neither: IO0 is high at once (pull-up), and EN charges through the RC network.

    Pulling EN low is immediate (the transistor shorts the capacitor; the chip needs it low only
    50 us, t_RST). Letting it go is not: the chip leaves reset `release_seconds` after the circuit
    stopped pulling EN, and latches IO0 as it is then, in whatever line state the host has set
    meanwhile. esptool's classic reset passes from (0, 1) through (1, 1) to (1, 0) in two
    writes: EN starts charging at (1, 1) and crosses while IO0 is already low, download mode.
    A relay that holds (1, 1) longer than the charge time (issue espressif/esptool#383) releases
    the chip with IO0 high: it boots its app, as a real board does.

    `release_seconds=0` releases EN at once (the truth table without the RC).
    """

    def __init__(self, on_change: Callable[[bool, bool], None], release_seconds: float = EN_RELEASE_SECONDS) -> None:
        self._on_change = on_change
        self._release_seconds = release_seconds
        self._lock = threading.RLock()
        self._charging = 0  # the generation of the charge under way; 0 for none
        self._generation = 0
        self.dtr = False
        self.rts = False
        self.en_low = False
        self.io0_low = False

    def set_lines(self, dtr: bool | None = None, rts: bool | None = None) -> None:
        with self._lock:
            self.dtr = self.dtr if dtr is None else dtr
            self.rts = self.rts if rts is None else rts
            self.io0_low = self.dtr and not self.rts
            if not self.dtr and self.rts:
                self._charging = 0  # EN shorted to GND: the capacitor empties, a charge starts over
                self.en_low = True
            elif self.en_low and not self._charging:
                self._start_charging()
            self._on_change(self.en_low, self.io0_low)

    def _start_charging(self) -> None:
        self._generation += 1
        self._charging = generation = self._generation
        if self._release_seconds <= 0:
            self._charged(generation, report=False)
            return
        timer = threading.Timer(self._release_seconds, self._charged, args=(generation,))
        timer.daemon = True
        timer.name = "EN RC"
        timer.start()

    def _charged(self, generation: int, report: bool = True) -> None:
        with self._lock:
            if self._charging != generation:
                return  # EN was pulled low again before it got there
            self._charging = 0
            self.en_low = False
            if report:
                self._on_change(self.en_low, self.io0_low)

    def drive(self, en_low: bool | None = None, io0_low: bool | None = None) -> None:
        """EN and IO0 driven directly, as on a board whose pins are wired to the test host's
        GPIOs or relays instead of to a USB bridge's DTR/RTS: no RC delay."""
        with self._lock:
            self._charging = 0
            self.en_low = self.en_low if en_low is None else en_low
            self.io0_low = self.io0_low if io0_low is None else io0_low
            self._on_change(self.en_low, self.io0_low)


class Uart:
    """UART0 as the CPU sees it: a receive FIFO filled by the transport, a transmit line.

    With `pacing` on, bytes take the time they take on a wire at the current baud rate (10 bits a
    byte) in both directions; off, the line is as fast as the host machine. The rate is the
    one the ROM starts at (115200) and esptool's CHANGE_BAUDRATE sets (ota_rig.virtual.rom), so a
    paced line runs at the negotiated rate as a real UART does.

    `bridge_max_baud` is the fastest rate the USB bridge in front of the chip takes: while the
    chip's UART runs faster, nothing crosses the line either way (the bridge cannot sample the
    chip's bits nor send at its rate: esptool then finds no answer after "Changed.", as in
    espressif/esptool#255 and #435). UNVERIFIED: a real bridge delivers garbage bytes rather
    than nothing; esptool fails either way ("Timed out waiting for packet header" or "Invalid
    head of packet").
    """

    def __init__(self, chip: Chip, pacing: bool = False) -> None:
        self._chip = chip
        self._rx = bytearray()
        self._sink: Callable[[bytes], None] | None = None
        self._sink_lock = threading.Lock()
        self.pacing = pacing
        self.baud = 115200
        self.bridge_max_baud: int | None = None
        self._tx_busy_until = 0.0
        self._rx_busy_until = 0.0

    def connect(self, sink: Callable[[bytes], None] | None) -> None:
        """Attach (or detach, with None) whatever listens on the TX line."""
        with self._sink_lock:
            self._sink = sink

    def _pace(self, busy_until: float, nbytes: int) -> float:
        start = max(time.monotonic(), busy_until)
        return start + nbytes * 10 / self.baud

    # --- host side (transport threads) ---
    def _beyond_bridge(self) -> bool:
        return self.bridge_max_baud is not None and self.baud > self.bridge_max_baud

    def feed(self, data: bytes) -> None:
        """Bytes arriving from the host; lost while the chip is held in reset, or while it runs
        faster than the bridge takes."""
        if self._beyond_bridge():
            return
        if self.pacing:
            self._rx_busy_until = self._pace(self._rx_busy_until, len(data))
            time.sleep(max(0.0, self._rx_busy_until - time.monotonic()))
        with self._chip.cond:
            if self._chip.in_reset:
                return
            self._rx += data
            self._chip.cond.notify_all()

    def discard_input(self) -> None:
        with self._chip.cond:
            self._rx.clear()

    # --- CPU side ---
    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Whatever is in the FIFO (at least one byte); b'' on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._chip.cond:
            while not self._rx:
                self._chip.check_reset()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return b""
                self._chip.cond.wait(remaining)
            self._chip.check_reset()
            data = bytes(self._rx[:max_bytes])
            del self._rx[:max_bytes]
            return data

    def write(self, data: bytes) -> None:
        self._chip.check_reset()
        if self.pacing:
            self._tx_busy_until = self._pace(self._tx_busy_until, len(data))
            self._chip.sleep(self._tx_busy_until - time.monotonic())
        with self._sink_lock:
            sink = self._sink
        if sink is not None and not self._beyond_bridge():
            sink(data)

    def print(self, text: str) -> None:
        """Serial.print: text as the chip sends it (callers include the \\r\\n)."""
        self.write(text.encode())

    @property
    def clkdiv(self) -> int:
        """UART0_CLKDIV as esptool reads it to estimate the crystal (40 MHz reference clock)."""
        return round(40_000_000 / self.baud) & 0xFFFFF


class Clock:
    """The chip's time base: seconds of device time since the twin started.

    Device time normally passes as real time. A rig may speed it up for a while (a time
    lapse), as simulators do: then device time moves only through the device's own waits —
    delay(), Stream and TLS timeouts — each counted in full while it takes 1/rate of its
    length in real time, and the host's own slowness counts for nothing. The device does
    exactly what it would do, only sooner: that is how a scenario shows the 331 s
    arduino-esp32 2.0.14 takes to give up on a stalled download in a few seconds. A lapse is
    bounded in device seconds and ends by itself, or at the next reset, so a device never
    runs fast for longer than the rig asked. Only the CPU thread waits on device time.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._real0 = time.monotonic()
        self._device0 = 0.0
        self._rate = 1.0
        self._lapse_ends = 0.0  # device time at which a lapse falls back to real time

    def now(self) -> float:
        with self._lock:
            return self._now()

    def _now(self) -> float:
        if self._rate != 1.0:
            return self._device0
        return self._device0 + time.monotonic() - self._real0

    @property
    def rate(self) -> float:
        with self._lock:
            return self._rate

    def lapse(self, rate: float, device_seconds: float) -> None:
        """Run `rate` times faster for the next `device_seconds` of device time."""
        if rate < 1:
            raise ValueError(f"a time lapse runs at 1x or faster, not {rate:g}x")
        with self._lock:
            now = self._now()
            self._device0, self._rate, self._lapse_ends = now, float(rate), now + device_seconds

    def end_lapse(self) -> None:
        """Back to real time at once (a reset ends whatever the lapse was for)."""
        with self._lock:
            self._device0, self._real0, self._rate = self._now(), time.monotonic(), 1.0

    def real_seconds(self, device_seconds: float) -> float:
        """How long a wait of `device_seconds` takes in real time: the part the lapse still
        covers at its rate, the rest as it comes (a wait never runs fast past the lapse's end)."""
        device_seconds = max(0.0, device_seconds)
        with self._lock:
            if self._rate == 1.0:
                return device_seconds
            fast = min(device_seconds, self._lapse_left())
            return fast / self._rate + device_seconds - fast

    def _lapse_left(self) -> float:
        return max(0.0, self._lapse_ends - self._device0)

    def waiting(self) -> tuple[float, float]:
        """Call as a wait starts; hand the result to `waited`."""
        with self._lock:
            return time.monotonic(), self._rate

    def waited(self, started: tuple[float, float], at_most: float) -> None:
        """A wait that started at `started` is over: under a lapse, device time moves by the
        real time it took times the rate while the lapse lasted, then by the real time, up to
        the wait's own length `at_most`."""
        real_start, rate = started
        with self._lock:
            if rate == 1.0 or self._rate == 1.0:
                return  # real time carried it
            real = time.monotonic() - real_start
            left = self._lapse_left()
            passed = real * rate if real * rate <= left else left + real - left / rate
            self._device0 += min(passed, at_most)
            if self._device0 >= self._lapse_ends:
                self._real0, self._rate = time.monotonic(), 1.0


class Chip:
    """The ESP32-D0WD-V3: its parts, its registers, and the reset and strapping logic."""

    ROM_MAGIC_ADDR = 0x40001000
    ROM_MAGIC = 0x00F01D83
    EFUSE_BASE = 0x3FF5A000
    UART0_CLKDIV = 0x3FF40014
    APB_CTRL_DATE = 0x3FF6607C
    RTC_CALI = 0x3FF5F06C
    GPIO_STRAP = 0x3FF44038

    def __init__(self, flash: Flash, efuses: EFuses, pacing: bool = False) -> None:
        self.flash = flash
        self.efuses = efuses
        self.spi = SpiController()
        self.cond = threading.Condition()
        self.uart = Uart(self, pacing=pacing)
        self.pins = ResetCircuit(self._pins_changed)
        self.in_reset = False
        self.download_strap = False  # IO0 low when power came up or EN was last released
        self._pending: ResetReason | None = None
        self._stopping = False
        self.boot_count = 0
        self.clock = Clock()

    # --- registers -------------------------------------------------------------------
    def read_reg(self, addr: int) -> int:
        """Registers esptool reads; everything unknown reads 0, and a read never fails."""
        if addr == self.ROM_MAGIC_ADDR:
            return self.ROM_MAGIC
        if self.EFUSE_BASE <= addr < self.EFUSE_BASE + 4 * len(self.efuses.words):
            return self.efuses.words[(addr - self.EFUSE_BASE) // 4]
        if SpiController.BASE <= addr < SpiController.BASE + 0x100:
            return self.spi.read(addr - SpiController.BASE)
        fixed = {
            self.UART0_CLKDIV: self.uart.clkdiv,
            self.APB_CTRL_DATE: 0x96042000,
            self.RTC_CALI: 2008 << 7,
            self.GPIO_STRAP: 0x03 if self.download_strap else 0x13,
        }
        return fixed.get(addr, 0)

    def write_reg(self, addr: int, value: int, mask: int = 0xFFFFFFFF) -> None:
        if SpiController.BASE <= addr < SpiController.BASE + 0x100:
            offset = addr - SpiController.BASE
            self.spi.write(offset, (self.spi.read(offset) & ~mask) | (value & mask))

    # --- reset and execution ----------------------------------------------------------
    def _pins_changed(self, en_low: bool, io0_low: bool) -> None:
        with self.cond:
            if en_low and not self.in_reset:
                self.in_reset = True
                self.clock.end_lapse()
                self._pending = ResetReason.POWERON_RESET  # EN reset reads as power-on
                log.info("EN low: chip held in reset")
            elif not en_low and self.in_reset:
                self.in_reset = False
                self.download_strap = io0_low
                self.uart.discard_input()  # whatever arrived before the reset is gone
                log.info("EN released with IO0 %s", "low (download)" if io0_low else "high (flash boot)")
            self.cond.notify_all()

    def check_reset(self) -> None:
        """Raise if the running program must stop: reset pending or twin shutting down."""
        if self._stopping:
            raise ChipStopped()
        if self._pending is not None:
            raise ChipReset(self._pending)

    def sleep(self, seconds: float) -> None:
        """delay(), in device time: interrupted by a reset like everything the CPU does, and
        shortened at once when a time lapse starts."""
        deadline = self.clock.now() + seconds
        with self.cond:
            while True:
                self.check_reset()
                remaining = deadline - self.clock.now()
                if remaining <= 0:
                    return
                started = self.clock.waiting()
                self.cond.wait(self.clock.real_seconds(remaining))
                self.clock.waited(started, remaining)

    def time_lapse(self, rate: float, device_seconds: float) -> None:
        """Run device time `rate` times faster for `device_seconds` (see Clock)."""
        with self.cond:
            self.clock.lapse(rate, device_seconds)
            self.cond.notify_all()

    def software_reset(self, reason: ResetReason = ResetReason.SW_CPU_RESET) -> None:
        """esp_restart() and friends: a reset that keeps the latched strapping pins."""
        with self.cond:
            self._pending = reason
            self.clock.end_lapse()
        raise ChipReset(reason)

    def run(self, firmware: Callable[[Chip, ResetReason], None]) -> None:
        """The CPU thread: run `firmware` after every reset until the twin stops."""
        reason = ResetReason.POWERON_RESET
        while True:
            with self.cond:
                while self.in_reset and not self._stopping:
                    self.cond.wait()
                if self._stopping:
                    return
                reason = self._pending or reason
                self._pending = None
            self.boot_count += 1
            try:
                firmware(self, reason)
                # The program returned: a real CPU would spin forever; wait for the next reset.
                with self.cond:
                    while self._pending is None and not self._stopping:
                        self.cond.wait()
            except ChipReset:
                pass
            except ChipStopped:
                return
            except Exception:  # a twin bug must not silence the chip for good
                # The twin met a state it does not model (its log has the traceback): the chip
                # behaves as one that crashed, and the RTC watchdog resets it.
                log.exception("the twin's CPU failed; the chip resets as after a crash")
                with self.cond:
                    self.cond.wait_for(lambda: self._stopping or self._pending is not None, timeout=CRASH_RESET_DELAY)
                    self._pending = self._pending or ResetReason.RTCWDT_RTC_RESET

    def stop(self) -> None:
        with self.cond:
            self._stopping = True
            self.cond.notify_all()
