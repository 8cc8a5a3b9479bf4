"""The ESP32 serial ROM loader and the flasher stub, as real esptool 5 talks to them.

Both speak the same SLIP-framed request/response protocol; the stub (uploaded by esptool into
RAM and started with MEM_END) answers with 2 status bytes instead of 4, adds erase and fast
read commands, and writes flash in larger blocks. `Loader` serves one or the other depending on
`stub`, switching when esptool starts the stub and back when the stub reboots into the ROM.

Byte-level facts (opcodes, parameter layouts, status formats, OHAI) are from
shared/reference/esptool-rom-protocol.md, sections 2, 7, 8, 10 and 11.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import zlib
from dataclasses import dataclass, field

from ota_rig.device.firmware import xor_checksum
from ota_rig.virtual.chip import SECTOR_SIZE, Chip, ResetReason

log = logging.getLogger(__name__)

SYNC_PAYLOAD = b"\x07\x07\x12\x20" + b"\x55" * 32
SYNC_VALUE = 0x20120707
OHAI = b"OHAI"
READ_FLASH_PACKET = 0x1000


class Op:
    FLASH_BEGIN = 0x02
    FLASH_DATA = 0x03
    FLASH_END = 0x04
    MEM_BEGIN = 0x05
    MEM_END = 0x06
    MEM_DATA = 0x07
    SYNC = 0x08
    WRITE_REG = 0x09
    READ_REG = 0x0A
    SPI_SET_PARAMS = 0x0B
    SPI_ATTACH = 0x0D
    READ_FLASH_SLOW = 0x0E
    CHANGE_BAUDRATE = 0x0F
    FLASH_DEFL_BEGIN = 0x10
    FLASH_DEFL_DATA = 0x11
    FLASH_DEFL_END = 0x12
    SPI_FLASH_MD5 = 0x13
    GET_SECURITY_INFO = 0x14
    ERASE_FLASH = 0xD0
    ERASE_REGION = 0xD1
    READ_FLASH = 0xD2
    RUN_USER_CODE = 0xD3


class LoaderError(Exception):
    """A request the loader refuses; `rom` and `stub` are the error codes each one reports."""

    def __init__(self, rom: int, stub: int, why: str) -> None:
        super().__init__(why)
        self.rom = rom
        self.stub = stub


class LeaveLoader(Exception):
    """The loader hands the CPU to the flash boot path without a reset."""


def invalid_message(why: str) -> LoaderError:
    return LoaderError(0x05, 0xC0, why)


def bad_checksum(why: str) -> LoaderError:
    return LoaderError(0x07, 0xC1, why)


def slip_encode(payload: bytes) -> bytes:
    return b"\xc0" + payload.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + b"\xc0"


def slip_decode(body: bytes) -> bytes | None:
    """Undo SLIP escaping; None for an invalid escape (DB not followed by DC or DD)."""
    decoded = body.replace(b"\xdb\xdc", b"\xc0")
    if decoded.count(b"\xdb") != decoded.count(b"\xdb\xdd"):
        return None
    return decoded.replace(b"\xdb\xdd", b"\xdb")


class SlipReader:
    """Frames from the UART. Bytes outside a C0...C0 frame are noise and are dropped."""

    def __init__(self, chip: Chip) -> None:
        self._uart = chip.uart
        self._buf = bytearray()

    def frame(self) -> bytes:
        while True:
            start = self._buf.find(0xC0)
            if start < 0:
                self._buf.clear()
            else:
                end = self._buf.find(0xC0, start + 1)
                if end >= 0:
                    body = bytes(self._buf[start + 1 : end])
                    del self._buf[:end]  # the closing C0 may open the next frame
                    decoded = slip_decode(body) if body else None
                    if decoded:
                        return decoded
                    continue
                del self._buf[:start]
            self._buf += self._uart.read(0x10000)


@dataclass
class FlashWrite:
    """A write in progress: FLASH_BEGIN or FLASH_DEFL_BEGIN until the last block."""

    offset: int
    size: int  # bytes that will be programmed
    compressed: bool
    written: int = 0
    erased_until: int = 0  # the stub erases lazily, sector by sector, ahead of the data
    inflater: zlib._Decompress | None = None


@dataclass
class RamLoad:
    """MEM_BEGIN/MEM_DATA: code esptool puts into RAM (the stub)."""

    addr: int
    size: int
    data: bytearray = field(default_factory=bytearray)


class Loader:
    """Serves esptool: the ROM loader, or the flasher stub once esptool has started it."""

    def __init__(self, chip: Chip) -> None:
        self.chip = chip
        self.flash = chip.flash
        self.stub = False
        self._reader = SlipReader(chip)
        self._write: FlashWrite | None = None
        self._ram: list[RamLoad] = []
        self._handlers = {
            Op.SYNC: self._sync,
            Op.READ_REG: self._read_reg,
            Op.WRITE_REG: self._write_reg,
            Op.SPI_SET_PARAMS: self._ok,
            Op.SPI_ATTACH: self._ok,
            Op.CHANGE_BAUDRATE: self._change_baudrate,
            Op.FLASH_BEGIN: self._flash_begin,
            Op.FLASH_DATA: self._flash_data,
            Op.FLASH_END: self._flash_end,
            Op.FLASH_DEFL_BEGIN: self._flash_begin,
            Op.FLASH_DEFL_DATA: self._flash_data,
            Op.FLASH_DEFL_END: self._flash_end,
            Op.SPI_FLASH_MD5: self._md5,
            Op.MEM_BEGIN: self._mem_begin,
            Op.MEM_DATA: self._mem_data,
            Op.MEM_END: self._mem_end,
        }
        self._rom_only = {Op.READ_FLASH_SLOW: self._read_flash_slow}
        self._stub_only = {
            Op.ERASE_FLASH: self._erase_flash,
            Op.ERASE_REGION: self._erase_region,
            Op.READ_FLASH: self._read_flash,
            Op.RUN_USER_CODE: self._run_user_code,
        }

    # --- framing -----------------------------------------------------------------------
    def _send(self, op: int, payload: bytes = b"", value: int = 0, error: LoaderError | None = None) -> None:
        if self.stub:
            status = bytes([error.stub, 0]) if error else b"\x00\x00"
        else:
            status = bytes([1, error.rom, 0, 0]) if error else b"\x00\x00\x00\x00"
        body = payload + status
        self.chip.uart.write(slip_encode(struct.pack("<BBHI", 1, op, len(body), value) + body))

    def _send_raw(self, data: bytes) -> None:
        self.chip.uart.write(slip_encode(data))

    def serve(self) -> None:
        """Answer requests until a reset unwinds us (or a command leaves the loader)."""
        while True:
            packet = self._reader.frame()
            if len(packet) < 8 or packet[0] != 0:
                continue  # not a request: the ROM ignores it
            _, op, length, checksum = struct.unpack_from("<BBHI", packet)
            data = packet[8:]
            if len(data) != length:
                log.debug("request 0x%02x: length field %d, data %d bytes", op, length, len(data))
                continue
            handler = self._handlers.get(op) or (self._stub_only if self.stub else self._rom_only).get(op)
            if handler is None:
                # The ROM's "invalid message" reply; the stub's "not implemented" (0xFF00).
                self._send(op, error=LoaderError(0x05, 0xFF, f"unknown command 0x{op:02x}"))
                continue
            try:
                handler(op, data, checksum)
            except LoaderError as err:
                log.info("request 0x%02x refused: %s", op, err)
                self._send(op, error=err)
            except struct.error:
                log.info("request 0x%02x: malformed parameters (%d bytes)", op, len(data))
                self._send(op, error=invalid_message("malformed parameters"))
            except ValueError as err:  # a flash access outside the chip
                log.info("request 0x%02x refused: %s", op, err)
                self._send(op, error=LoaderError(0x01, 0xC0, str(err)))

    # --- basic commands ----------------------------------------------------------------
    def _ok(self, op: int, data: bytes, checksum: int) -> None:
        self._send(op)

    def _sync(self, op: int, data: bytes, checksum: int) -> None:
        if data != SYNC_PAYLOAD:
            raise invalid_message("bad SYNC payload")
        value = 0 if self.stub else SYNC_VALUE  # value 0 tells esptool a stub is running
        for _ in range(8):
            self._send(op, value=value)

    def _read_reg(self, op: int, data: bytes, checksum: int) -> None:
        (addr,) = struct.unpack("<I", data)
        self._send(op, value=self.chip.read_reg(addr))

    def _write_reg(self, op: int, data: bytes, checksum: int) -> None:
        if not data or len(data) % 16:
            raise invalid_message("WRITE_REG takes 16-byte entries")
        for addr, value, mask, _delay in struct.iter_unpack("<IIII", data):
            self.chip.write_reg(addr, value, mask)
        self._send(op)

    def _change_baudrate(self, op: int, data: bytes, checksum: int) -> None:
        new, _old = struct.unpack("<II", data)
        if not self.stub:
            # esptool scales the ROM's value by its crystal estimate (921600 -> 921672);
            # the ROM's divider lands back on the wanted rate.
            new = round(new * 40_000_000 / (2008 * 15625 * 51 / 40))
        self._send(op)  # the reply still goes out at the old rate
        self.chip.uart.baud = new
        log.info("baud rate now %d", new)

    # --- flash writes --------------------------------------------------------------------
    def _flash_begin(self, op: int, data: bytes, checksum: int) -> None:
        if self.stub:
            size, _blocks, _block_size, offset, _encrypted = struct.unpack("<IIIII", data)
        else:
            size, _blocks, _block_size, offset = struct.unpack("<IIII", data)
        compressed = op == Op.FLASH_DEFL_BEGIN
        if offset + size > self.flash.size:
            raise LoaderError(0x01, 0xC0, f"write 0x{offset:x}+0x{size:x} past the end of flash")
        write = FlashWrite(offset, size, compressed, erased_until=offset)
        if compressed:
            write.inflater = zlib.decompressobj()
        if not self.stub:
            # The ROM erases the whole region up front; the stub erases as data arrives.
            self.flash.erase(offset, size)
            write.erased_until = offset + size
        self._write = write if size else None
        self._send(op)

    def _flash_data(self, op: int, data: bytes, checksum: int) -> None:
        length, _seq, _, _ = struct.unpack_from("<IIII", data)
        block = data[16:]
        write = self._write
        if write is None or write.compressed != (op == Op.FLASH_DEFL_DATA):
            raise LoaderError(0x05, 0xC6, "no flash write in progress")
        if length != len(block):
            raise invalid_message("block length does not match the data")
        if xor_checksum(block) != checksum:
            raise bad_checksum("block checksum mismatch")
        if write.inflater is not None:
            try:
                block = write.inflater.decompress(block)
            except zlib.error as exc:
                raise LoaderError(0x0B, 0xC7, f"inflate error: {exc}") from None
        remaining = write.size - write.written
        if write.compressed and len(block) > remaining:
            raise LoaderError(0x0B, 0xC9, "more data than announced")
        # The last uncompressed block is padded with 0xFF; only the announced bytes are programmed.
        self._program(write, block[:remaining])
        self._send(op)

    def _program(self, write: FlashWrite, data: bytes) -> None:
        addr = write.offset + write.written
        end = addr + len(data)
        if end > write.erased_until:
            self.flash.erase(write.erased_until, end - write.erased_until)
            write.erased_until = -(-end // SECTOR_SIZE) * SECTOR_SIZE
        self.flash.program(addr, data)
        write.written += len(data)

    def _flash_end(self, op: int, data: bytes, checksum: int) -> None:
        (flag,) = struct.unpack_from("<I", data) if data else (0,)
        write = self._write
        if self.stub and write is not None and write.written < write.size:
            raise LoaderError(0x06, 0xC8, "flash end before all data was written")
        self._write = None
        self._send(op)
        if flag == 0:
            # Reboot. The strapping pins stay latched, so this lands in the ROM loader again.
            self.chip.software_reset(ResetReason.SW_CPU_RESET)
        if not self.stub:
            # ROM with flag 1: leave download mode and boot from flash (esptool's `run`).
            raise LeaveLoader()

    def _md5(self, op: int, data: bytes, checksum: int) -> None:
        addr, size, _, _ = struct.unpack("<IIII", data)
        digest = hashlib.md5(self.flash.read(addr, size))
        self._send(op, digest.digest() if self.stub else digest.hexdigest().encode())

    # --- RAM download (how esptool starts the stub) --------------------------------------
    def _mem_begin(self, op: int, data: bytes, checksum: int) -> None:
        size, _blocks, _block_size, addr = struct.unpack("<IIII", data)
        self._ram.append(RamLoad(addr, size))
        self._send(op)

    def _mem_data(self, op: int, data: bytes, checksum: int) -> None:
        length, _seq, _, _ = struct.unpack_from("<IIII", data)
        block = data[16:]
        if not self._ram or length != len(block):
            raise invalid_message("MEM_DATA without MEM_BEGIN or with a wrong length")
        if xor_checksum(block) != checksum:
            raise bad_checksum("block checksum mismatch")
        self._ram[-1].data += block
        self._send(op)

    def _mem_end(self, op: int, data: bytes, checksum: int) -> None:
        flag, entry = struct.unpack("<II", data)
        self._send(op)
        jumps_into_upload = any(r.addr <= entry < r.addr + len(r.data) for r in self._ram)
        self._ram.clear()
        if flag == 0 and not self.stub and jumps_into_upload:
            # Execution moves to the uploaded stub, which greets esptool before anything else.
            self.stub = True
            self._send_raw(OHAI)
            log.info("flasher stub running")

    # --- ROM-only and stub-only commands --------------------------------------------------
    def _read_flash_slow(self, op: int, data: bytes, checksum: int) -> None:
        offset, length = struct.unpack("<II", data)
        if length > 64:
            raise LoaderError(0x0A, 0xC0, "READ_FLASH_SLOW reads at most 64 bytes")
        self._send(op, self.flash.read(offset, min(64, self.flash.size - offset)).ljust(64, b"\xff"))

    def _erase_flash(self, op: int, data: bytes, checksum: int) -> None:
        self.flash.erase(0, self.flash.size)
        self._send(op)

    def _erase_region(self, op: int, data: bytes, checksum: int) -> None:
        addr, size = struct.unpack("<II", data)
        if addr % SECTOR_SIZE or size % SECTOR_SIZE:
            raise LoaderError(0x01, 0xC0, "erase region not sector aligned")
        self.flash.erase(addr, size)
        self._send(op)

    def _read_flash(self, op: int, data: bytes, checksum: int) -> None:
        offset, length, packet_size, _in_flight = struct.unpack("<IIII", data)
        if packet_size == 0 or offset + length > self.flash.size:
            raise LoaderError(0x01, 0xC0, "bad READ_FLASH parameters")
        self._send(op)
        content = self.flash.read(offset, length)
        sent = 0
        while sent < length:
            # One packet in flight: send, then wait for the host's cumulative byte count.
            chunk = content[sent : sent + packet_size]
            self._send_raw(chunk)
            sent += len(chunk)
            ack = self._reader.frame()
            if len(ack) != 4 or struct.unpack("<I", ack)[0] != sent:
                log.info("READ_FLASH abandoned by the host at %d of %d bytes", sent, length)
                return
        self._send_raw(hashlib.md5(content).digest())

    def _run_user_code(self, op: int, data: bytes, checksum: int) -> None:
        raise LeaveLoader()  # no reply: the stub jumps to the app
