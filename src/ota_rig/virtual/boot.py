"""From reset to the app: the ROM banner, the ROM's flash boot, and the second-stage bootloader.

What the serial port shows is what an ESP32-D0WD-V3 with an arduino-esp32 build shows
(shared/reference/esp32-ota-device.md, section 12): the ROM prints its banner with the reset
reason and strapping value, then either waits for download or loads the bootloader from 0x1000,
printing its flash mode and clock divider from the bootloader's header and one `load:` line per
segment, so the lines follow the bootloader the build wrote (each core's differs:
ota_rig.device.profiles.RealBuild). The second stage is built with log level NONE (2.0.14's
sdkconfig, and the 3.0.x libs'; 3.3.x unverified), so it is silent: it reads the partition
table, picks the OTA slot from otadata, verifies the image and starts it. When nothing bootable
is found it resets (SW_RESET) and tries again, forever, like the real one.
"""

from __future__ import annotations

import logging
import struct

from ota_rig.device import firmware
from ota_rig.device.firmware import FirmwareFormatError, PartitionTable
from ota_rig.virtual import app, otadata
from ota_rig.virtual.chip import Chip, ResetReason
from ota_rig.virtual.rom import LeaveLoader, Loader

log = logging.getLogger(__name__)

ROM_DATE = "ets Jul 29 2019 12:21:46"  # revision v3 ROM; v0/v1 print "ets Jun  8 2016 00:22:57"
DOWNLOAD_BOOT = "boot:0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))"
FLASH_BOOT = "boot:0x13 (SPI_FAST_FLASH_BOOT)"
INVALID_HEADER_LINES = 8  # per watchdog cycle, as public logs show
INVALID_HEADER_PERIOD = 0.1  # seconds between lines: a rate limit, not a measured figure
BOOT_RETRY_PERIOD = 0.5  # seconds before the bootloader's reset when nothing is bootable

SPI_MODES = {0: "QIO", 1: "QOUT", 2: "DIO", 3: "DOUT"}
CLOCK_DIVIDERS = {0xF: 1, 0x0: 2, 0x1: 3, 0x2: 4}  # 80, 40, 26, 20 MHz


def power_up(chip: Chip, reason: ResetReason) -> None:
    """Everything the chip does after a reset: the CPU thread's program."""
    rom_banner(chip, reason)
    if chip.download_strap:
        chip.uart.print("waiting for download\r\n")
        try:
            Loader(chip).serve()
        except LeaveLoader:
            pass  # `run`: the ROM boots from flash without a reset (and without a new banner)
    boot_from_flash(chip)


def rom_banner(chip: Chip, reason: ResetReason) -> None:
    chip.uart.baud = 115200  # the ROM talks at 115200 after any reset
    strap = DOWNLOAD_BOOT if chip.download_strap else FLASH_BOOT
    chip.uart.print(f"{ROM_DATE}\r\n\r\nrst:0x{reason.value:x} ({reason.name}),{strap}\r\n")


def boot_from_flash(chip: Chip) -> None:
    """The ROM's SPI boot: load the bootloader at 0x1000, then the second stage takes over."""
    header = chip.flash.read(firmware.BOOTLOADER_OFFSET, 24)
    if header[0] != firmware.IMAGE_MAGIC:
        invalid_header_loop(chip, struct.unpack_from("<I", header)[0])
    mode = SPI_MODES.get(header[2], "DIO")
    divider = CLOCK_DIVIDERS.get(header[3] & 0xF, 2)
    chip.uart.print(
        "configsip: 0, SPIWP:0xee\r\n"
        "clk_drv:0x00,q_drv:0x00,d_drv:0x00,cs0_drv:0x00,hd_drv:0x00,wp_drv:0x00\r\n"
        f"mode:{mode}, clock div:{divider}\r\n"
    )
    offset = firmware.BOOTLOADER_OFFSET + 24
    for index in range(header[1]):
        if offset + 8 > chip.flash.size:
            rom_crash(chip, f"bootloader segment {index} header at 0x{offset:x} is past the end of flash")
        load_addr, length = struct.unpack("<II", chip.flash.read(offset, 8))
        chip.uart.print(f"load:0x{load_addr:08x},len:{length}\r\n")
        offset += 8 + length
        if offset > chip.flash.size:
            rom_crash(chip, f"bootloader segment {index} ({length} bytes) runs past the end of flash")
        tail = block_tail_line(offset - firmware.BOOTLOADER_OFFSET, length)
        if tail and index < header[1] - 1:
            chip.uart.print(tail)
    chip.uart.print(f"entry 0x{struct.unpack_from('<I', header, 4)[0]:08x}\r\n")
    second_stage(chip)


def block_tail_line(end: int, length: int) -> str:
    """The line the ROM prints after a segment whose data ends 12 bytes into a 16-byte block of
    the image (`end`: offset in the image just past the segment), so that the next 8-byte
    segment header does not fit the 4 bytes left: `ho <start in block> tail <bytes in block>
    room 4`; otherwise nothing. The rule is inferred, not read from the ROM: it matches every
    public log checked (2.0.x's len:13220 -> "ho 0 tail 12 room 4"; ESP-IDF 5's 4-byte segment
    at block offset 8 -> "ho 8 tail 4 room 4"; no line for 2.0.14's qio_80m bootloader)."""
    if end % 16 != 12:
        return ""
    head = max(12 - length, 0)
    return f"ho {head} tail {12 - head} room 4\r\n"


def rom_crash(chip: Chip, problem: str) -> None:
    """A bootloader the ROM cannot load (a segment past the end of flash): the ROM has no error
    line for it and no public log shows what follows; the twin takes it for a crash the RTC
    watchdog ends, as after its invalid-header loop (UNVERIFIED on a chip)."""
    log.info("ROM: %s", problem)
    chip.sleep(INVALID_HEADER_PERIOD)
    chip.software_reset(ResetReason.RTCWDT_RTC_RESET)


def invalid_header_loop(chip: Chip, word: int) -> None:
    """No bootloader: the ROM complains until the RTC watchdog resets the chip."""
    for _ in range(INVALID_HEADER_LINES):
        chip.uart.print(f"invalid header: 0x{word:08x}\r\n")
        chip.sleep(INVALID_HEADER_PERIOD)
    chip.software_reset(ResetReason.RTCWDT_RTC_RESET)


def second_stage(chip: Chip) -> None:
    """The silent 2.0.x bootloader: find a valid app and start it, or reset and retry."""
    try:
        table = PartitionTable.from_bytes(
            chip.flash.read(firmware.PARTITION_TABLE_OFFSET, 0xC00), firmware.PARTITION_TABLE_OFFSET
        )
    except FirmwareFormatError as err:
        log.info("bootloader: no valid partition table (%s)", err)
        give_up(chip)
        return
    beyond = [p for p in table.partitions if p.offset > chip.flash.size or p.offset + p.size > chip.flash.size]
    if beyond:
        # esp_partition_table_verify() (ESP-IDF flash_partitions.c): "partition %d invalid - offset
        # 0x%x size 0x%x exceeds flash chip size 0x%x", then "boot: Failed to verify partition
        # table" and a reset; both lines are compiled out at the Arduino bootloader's log level.
        log.info("bootloader: partition %s (0x%x+0x%x) exceeds the flash", beyond[0].name, beyond[0].offset,
                 beyond[0].size)
        give_up(chip)
        return
    otadata.bootloader_rollback_step(chip, table)
    for partition in boot_candidates(chip, table):
        image_bytes = chip.flash.read(partition.offset, partition.size)
        try:
            image = firmware.parse_image(image_bytes, base=partition.offset)
        except FirmwareFormatError as err:
            log.info("bootloader: %s is not bootable (%s)", partition.name, err)
            continue
        otadata.mark_booting(chip, table, partition)
        log.info("bootloader: starting %s at 0x%x", partition.name, partition.offset)
        app.run(chip, table, partition, image)
        return
    log.info("bootloader: no bootable app partition")
    give_up(chip)


def boot_candidates(chip: Chip, table: PartitionTable) -> list[firmware.Partition]:
    """The slot otadata selects first, then the other app slots, like ESP-IDF's fallback."""
    slots = list(table.ota_slots)
    factory = [p for p in table.partitions if p.type == 0 and p.subtype == 0x00]
    chosen = None
    if table.otadata is not None and slots:
        chosen = firmware.active_ota_slot(otadata.read(chip, table), len(slots))
    if chosen is None:
        return factory + slots
    return [slots[chosen]] + [s for i, s in enumerate(slots) if i != chosen][::-1] + factory


def give_up(chip: Chip) -> None:
    """bootloader_reset(): a software system reset, after which the ROM boots again."""
    chip.sleep(BOOT_RETRY_PERIOD)
    chip.software_reset(ResetReason.SW_RESET)
