"""arduino-esp32's Update library over ESP-IDF's OTA operations: an image streamed into the
next OTA slot of the flash, checked, and made the boot partition.

Behaviour of 2.0.14 (shared/reference/esp32-ota-device.md, section 10): writes go through a
4096-byte buffer; a 64 KB block is erased when the offset is block-aligned and at least 64 KB
remain, otherwise a 4 KB sector; all-0xFF buffers are not written; the first byte must be 0xE9
and the first 16 bytes are held back until `end()`, so a half-written slot never boots. `end()`
checks the MD5, writes the held-back bytes, then ESP-IDF verifies the whole image before it
switches otadata (section 13.3) to the new slot.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable

from ota_rig.device import firmware
from ota_rig.device.firmware import FirmwareFormatError, Partition, PartitionTable
from ota_rig.virtual import otadata
from ota_rig.virtual.chip import Chip

log = logging.getLogger(__name__)

SECTOR = 4096
ESP32_CHIP_ID = 0  # esp_image_header_t.chip_id of a classic ESP32 image (reference section 13.4)
BLOCK = 0x10000
HELD_BACK = 16

# Update error codes and their printError() texts (section 10).
ERROR_TEXT = {
    0: "No Error", 1: "Flash Write Failed", 2: "Flash Erase Failed", 3: "Flash Read Failed",
    4: "Not Enough Space", 5: "Bad Size Given", 6: "Stream Read Timeout", 7: "MD5 Check Failed",
    8: "Wrong Magic Byte", 9: "Could Not Activate The Firmware", 10: "Partition Could Not be Found",
    11: "Bad Argument", 12: "Aborted",
}
ERROR_SPACE, ERROR_SIZE, ERROR_STREAM, ERROR_MD5, ERROR_MAGIC, ERROR_ACTIVATE, ERROR_NO_PARTITION, ERROR_ABORT = (
    4, 5, 6, 7, 8, 9, 10, 12)

STREAM_EMPTY_READS = 300  # writeStream gives up after this many empty reads...
STREAM_EMPTY_PAUSE = 0.1  # ...with this pause after each


def next_update_partition(table: PartitionTable, running: Partition) -> Partition | None:
    """esp_ota_get_next_update_partition(NULL): the OTA slot after the running one."""
    slots = list(table.ota_slots)
    if not slots:
        return None
    index = next((i for i, slot in enumerate(slots) if slot.offset == running.offset), -1)
    return slots[(index + 1) % len(slots)]


class Updater:
    """One `Update` session: begin(size) → write_stream(read) → end(). `error` holds the last
    Update error code (0: none); `idf_errors` the ESP-IDF log lines verification produced."""

    def __init__(self, chip: Chip, table: PartitionTable, running: Partition) -> None:
        self.chip = chip
        self.table = table
        self.running = running
        self.error = 0
        self.idf_errors: list[tuple[str, str]] = []  # (tag, message)
        self.target: Partition | None = None
        self.size = 0
        self.progress = 0
        self._buffer = bytearray()
        self._held_back = b""
        self._md5_expected: str | None = None
        self._md5 = hashlib.md5()

    @property
    def error_text(self) -> str:
        return ERROR_TEXT.get(self.error, "UNKNOWN")

    def _fail(self, code: int) -> bool:
        self.error = code
        log.info("Update error %d (%s) at %d/%d bytes", code, self.error_text, self.progress, self.size)
        return False

    def begin(self, size: int) -> bool:
        self.target = next_update_partition(self.table, self.running)
        if size <= 0:
            return self._fail(ERROR_SIZE)
        if self.target is None:
            return self._fail(ERROR_NO_PARTITION)
        if size > self.target.size:
            return self._fail(ERROR_SIZE)
        self.size = size
        log.info("Update: writing %d bytes into %s at 0x%x", size, self.target.name, self.target.offset)
        return True

    def set_md5(self, expected: str) -> bool:
        if len(expected) != 32:
            return False
        self._md5_expected = expected
        return True

    def write_stream(self, read: Callable[[int], bytes]) -> int:
        """Pull the image from `read(n)` (which returns b"" when nothing came in time) until
        `size` bytes arrived; after 300 empty reads in a row the update fails (error 6)."""
        empty = 0
        while self.progress < self.size:
            self.chip.check_reset()
            chunk = read(min(SECTOR - len(self._buffer), self.size - self.progress))
            if not chunk:
                empty += 1
                if empty >= STREAM_EMPTY_READS:
                    self._fail(ERROR_STREAM)
                    return self.progress
                self.chip.sleep(STREAM_EMPTY_PAUSE)
                continue
            empty = 0
            if self.write(chunk) != len(chunk):
                return self.progress
        return self.progress

    def write(self, data: bytes) -> int:
        """Update.write(): take `data` into the 4096-byte buffer, programming each full one;
        more than begin() announced fails with error 4, a first byte other than 0xE9 with
        error 8. Returns the bytes taken (0 once the session has an error)."""
        if self.error or self.target is None:
            return 0
        if len(data) > self.size - self.progress:
            self._fail(ERROR_SPACE)
            return 0
        if self.progress == 0 and data and data[0] != firmware.IMAGE_MAGIC:
            self._fail(ERROR_MAGIC)
            return 0
        chunk = data
        while chunk:
            room = SECTOR - len(self._buffer)
            piece, chunk = chunk[:room], chunk[room:]
            self._md5.update(piece)
            self._buffer += piece
            self.progress += len(piece)
            if len(self._buffer) == SECTOR or self.progress == self.size:
                self._flush_buffer()
        return len(data)

    def abort(self) -> None:
        """Update.abort(): the session ends with error 12 (Aborted). otadata is not touched, and
        the slot's first 16 bytes were never programmed, so nothing written can boot."""
        self._fail(ERROR_ABORT)
        self._buffer.clear()

    def _flush_buffer(self) -> None:
        """Erase what this buffer lands on (a 64 KB block when block-aligned with a block's
        worth of image still to come, otherwise its 4 KB sector unless that block was erased
        whole), then program it, holding back the first 16 bytes."""
        assert self.target is not None
        offset = self.progress - len(self._buffer)
        block_start = offset - offset % BLOCK
        if self.size - block_start >= BLOCK:
            if offset == block_start:
                self.chip.flash.erase(self.target.offset + offset, BLOCK)
        else:
            self.chip.flash.erase(self.target.offset + offset, SECTOR)
        data = bytes(self._buffer)
        if offset == 0:
            self._held_back, data = data[:HELD_BACK], b"\xff" * HELD_BACK + data[HELD_BACK:]
        if data.strip(b"\xff"):
            self.chip.flash.program(self.target.offset + offset, data)
        self._buffer.clear()

    def end(self) -> bool:
        """Check, finish and activate: MD5, the held-back bytes, ESP-IDF's image verification,
        then otadata points at the new slot (state NEW: see otadata.py)."""
        assert self.target is not None
        if self.progress < self.size:
            return self._fail(ERROR_ABORT)
        if self._md5_expected is not None and self._md5.hexdigest() != self._md5_expected:
            return self._fail(ERROR_MD5)
        self.chip.flash.program(self.target.offset, self._held_back)
        image = self.chip.flash.read(self.target.offset, self.size)
        try:
            parsed = firmware.parse_image(image, base=self.target.offset)
        except FirmwareFormatError as err:
            self.idf_errors.append(("esp_image", idf_image_error(err)))
            return self._fail(ERROR_ACTIVATE)
        if parsed.chip_id != ESP32_CHIP_ID:
            # bootloader_common_check_chip_validity(), part of the same verification (reference
            # section 10: "header, <= 16 segments, checksum, SHA-256, chip id"); its line as a
            # public ESP32 log shows it: "boot_comm: mismatch chip ID, expected 0, found 65535".
            # UNVERIFIED: that public line is a bootloader's; that the app's own verification at
            # Update.end() prints the same line (ESP-IDF logs at ERROR in the core's libraries) is
            # inferred, not seen in a log.
            self.idf_errors.append(("boot_comm", f"mismatch chip ID, expected {ESP32_CHIP_ID}, found {parsed.chip_id}"))
            return self._fail(ERROR_ACTIVATE)
        otadata.select(self.chip, self.table, self.target)
        return True

def idf_image_error(err: FirmwareFormatError) -> str:
    """The esp_image line ESP-IDF logs for an image that fails verification (the reference's
    texts for a bad hash and a bad checksum; other faults are named as the rig found them)."""
    if err.field == "image hash":
        return "Image hash failed - image is corrupt"
    if err.field == "image checksum":
        stored, calculated = re.findall(r"0x([0-9a-f]+)", err.problem)
        return f"Checksum failed. Calculated 0x{int(calculated, 16):x} read 0x{int(stored, 16):x}"
    return f"{err.field} at 0x{err.offset:x}: {err.problem}"
