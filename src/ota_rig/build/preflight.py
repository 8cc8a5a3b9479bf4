"""Before esptool writes anything: would this artifact set work on this board, and keep updating?

A wrong build costs minutes on a real board and can leave one that boots but never updates
(the first OTA download has nowhere to go). `check(artifacts, chip)` reads the four files and
raises `PreflightError` for the first problem, as one sentence naming the file, what is wrong
and what to do. In order:

1. The app and bootloader images parse and were built for the board's chip (header chip_id),
   and the board's revision is not below their min_chip_rev_full.
2. The partition table parses, has OTA slots ota_0 and ota_1 and an otadata partition of two
   4 KB sectors, and ends inside the board's flash (when its size is known).
3. The app fits the smallest OTA slot, so the first OTA download of a same-sized build fits too.

Facts and where they come from:

* Chip ids (`esp_chip_id_t`): espressif/esp-idf
  components/bootloader_support/include/esp_app_format.h (master @102122904ade, July 2026; the
  older 0431e088 copy lists ESP32..ESP32-H2 with the same values). All thirteen agree with
  esptool 5.6.0's `IMAGE_CHIP_ID` per target (esptool/targets/*.py).
* What the bootloader checks: esp-idf bootloader_common_loader.c
  `bootloader_common_check_chip_validity`: chip_id must equal the firmware's, then the chip
  revision must be >= min_chip_rev_full, for the bootloader itself (bootloader_init.c) and for
  every app it loads or esp_ota_set_boot_partition activates. max_chip_rev_full is also checked
  for apps but can be overridden by an eFuse, so it is not checked here.
* OTA slots: esp-idf bootloader_utility.c files each ota_N at index N and boots index
  (seq - 1) % (number of OTA slots), so the slots must be ota_0, ota_1, ... without gaps; an
  otadata partition smaller than 2 x 4 KB is refused (`bootloader_common_read_otadata`).
* Too-large and missing slots: arduino-esp32 2.0.14 HTTPUpdate (shared/reference/
  esp32-ota-device.md sections 3 and 10): Content-Length above the next OTA slot fails with
  -100 "Not Enough space", no next OTA slot with -108 "Partition Could Not be Found".
* Board chip text: esptool's `Chip type:` line is `get_chip_description()`, e.g.
  "ESP32-D0WD-V3 (revision v3.0)", "ESP32-S3 (QFN56) (revision v0.2)", "ESP8685 (QFN28) ..."
  (an ESP32-C3), or "ESP32-S3 in Secure Download Mode"; revisions are major * 100 + minor.
* Partition schemes named in advice: arduino-esp32 tools/partitions/{default,min_spiffs}.csv
  and boards.txt `PartitionScheme` menu keys.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ota_rig.device import firmware
from ota_rig.errors import RigError

if TYPE_CHECKING:
    from ota_rig.build.artifacts import Artifacts

log = logging.getLogger(__name__)

# esp_chip_id_t (esp-idf esp_app_format.h), the value in an image header's chip_id field.
CHIP_IDS: dict[str, int] = {
    "ESP32": 0x0000,
    "ESP32-S2": 0x0002,
    "ESP32-C3": 0x0005,
    "ESP32-S3": 0x0009,
    "ESP32-C2": 0x000C,
    "ESP32-C6": 0x000D,
    "ESP32-H2": 0x0010,
    "ESP32-P4": 0x0012,
    "ESP32-C61": 0x0014,
    "ESP32-C5": 0x0017,
    "ESP32-H21": 0x0019,
    "ESP32-H4": 0x001C,
    "ESP32-S31": 0x0020,
}
# esptool descriptions that do not start with their family's name.
_OTHER_PARTS = {"ESP8684": "ESP32-C2", "ESP8685": "ESP32-C3", "ESP8686": "ESP32-C3"}
# Classic ESP32 packages as esptool names them: ESP32-D0WD(-V3), -D0WDQ6, -D0WDR2-V3, -S0WD(Q6)
# (single core), -D2WD, -U4WDH, -PICO-D4, -PICO-V3(-02).
_CLASSIC_PACKAGES = ("D0WD", "S0WD", "D2WD", "U4WDH", "PICO")
_REVISION = re.compile(r"\(revision v(\d+)\.(\d+)\)")
_FLASH_SIZE = re.compile(r"(\d+)\s*([KM])B?", re.I)
_OTA_0, _OTA_1 = 0x10, 0x11


class PreflightError(RigError):
    """The artifact set would fail on this board; str() is one sentence saying what to do."""


def _compact(text: str) -> str:
    return text.upper().replace("-", "").replace("_", "")


def chip_name(chip_id: int) -> str:
    """The chip an image header's chip_id names ("ESP32-S3"), or "unknown chip id 0x0042"."""
    for name, value in CHIP_IDS.items():
        if value == chip_id:
            return name
    return f"unknown chip id 0x{chip_id:04x}"


def chip_id_for(name: str) -> int:
    """esp_chip_id_t for a board chip as esptool names it: a `Chip type:` description
    ("ESP32-D0WD-V3 (revision v3.0)", "ESP32-C3 (QFN32) (revision v0.4)") or a --chip name
    ("esp32", "esp32s3"). ValueError for anything else.

    Matching is on the first word: ESP32-S0WD is a single-core classic ESP32, not an S-series
    chip, and ESP32-C61 is not an ESP32-C6, so family names must end at a non-digit."""
    words = name.strip().split()
    if words and words[0].lower() == "unknown":  # esptool's "Unknown ESP32-S3 (revision ...)"
        words = words[1:]
    token = _compact(words[0]) if words else ""
    for part, family in _OTHER_PARTS.items():
        if token.startswith(part):
            return CHIP_IDS[family]
    for family, chip_id in sorted(CHIP_IDS.items(), key=lambda item: -len(item[0])):
        compact = _compact(family)
        if family != "ESP32" and token.startswith(compact) and not token[len(compact):][:1].isdigit():
            return chip_id
    if token == "ESP32" or any(token.startswith("ESP32" + package) for package in _CLASSIC_PACKAGES):
        return CHIP_IDS["ESP32"]
    raise ValueError(f"{name!r} is not a chip preflight knows ({', '.join(CHIP_IDS)})")


def chip_revision(chip: str) -> int | None:
    """The revision in esptool's chip text as major * 100 + minor ("revision v3.0" -> 300),
    None when the text has none (a short name like "esp32")."""
    found = _REVISION.search(chip)
    return int(found[1]) * 100 + int(found[2]) if found else None


def parse_flash_size(size: int | str) -> int:
    """Bytes in a flash size: an int as is, or esptool's text ("4MB", "16MB", "512KB")."""
    if isinstance(size, int):
        return size
    found = _FLASH_SIZE.fullmatch(size.strip())
    if not found:
        raise ValueError(f"flash size {size!r} is not like 4MB")
    return int(found[1]) * (1024 if found[2].upper() == "K" else 1024 * 1024)


def _size(value: int) -> str:
    """A flash size as people say it: 4MB, 512KB, else hex bytes."""
    for unit, scale in (("MB", 1024 * 1024), ("KB", 1024)):
        if value and value % scale == 0:
            return f"{value // scale}{unit}"
    return f"0x{value:x} bytes"


def _slot(partition: firmware.Partition) -> str:
    """'app0 (ota_0)', or just 'factory' when the label is the subtype's name."""
    kind = {0x00: "factory", 0x20: "test"}.get(partition.subtype)
    if kind is None:
        kind = f"ota_{partition.subtype - 0x10}" if 0x10 <= partition.subtype <= 0x1F else f"0x{partition.subtype:02x}"
    return partition.name if partition.name == kind else f"{partition.name} ({kind})"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PreflightError(f"{path.name} is missing (no {path}): build the sketch first") from None


def _image(path: Path, what: str, board_id: int, board: str, revision: int | None) -> firmware.Image:
    """Parse one image and hold it against the board. The ROM and bootloader refuse an image
    for another chip (`mismatch chip ID`) or one needing a newer chip revision: the board
    would never boot it, or, for an OTA download, Update.end() fails with error 9."""
    try:
        image = firmware.parse_image(_read(path))
    except firmware.FirmwareFormatError as exc:
        raise PreflightError(f"{path.name} is not a valid {what} image ({exc}): rebuild the sketch, "
                             f"the file is damaged or is not an ESP32 image") from None
    if image.chip_id != board_id:
        short = _compact(chip_name(board_id)).lower()
        raise PreflightError(
            f"{path.name} is built for {chip_name(image.chip_id)} (image chip id 0x{image.chip_id:04x}) "
            f"but the board is an {chip_name(board_id)} ({board}): rebuild for the board's chip "
            f"(a board whose build.mcu is {short})")
    needed = image.min_chip_rev_full
    if revision is not None and needed > revision:
        raise PreflightError(
            f"{path.name} needs chip revision v{needed // 100}.{needed % 100} or later but the board "
            f"is v{revision // 100}.{revision % 100} ({board}): rebuild without raising the minimum "
            f"chip revision, or use a newer board")
    return image


def _table(path: Path, flash_size: int | None) -> firmware.PartitionTable:
    """Parse the partition table and check what OTA needs from it: ota_0 and ota_1 (a build
    with one app slot boots fine and fails its first update with -108, "Partition Could Not be
    Found") and an otadata partition of two sectors (where esp_ota_set_boot_partition records
    the new slot); and that it ends inside the flash (a table for a bigger flash, the classic
    wrong-FQBN mistake, points partitions at addresses that do not exist)."""
    try:
        table = firmware.PartitionTable.from_bytes(_read(path))
    except firmware.FirmwareFormatError as exc:
        raise PreflightError(f"{path.name} is not a valid partition table ({exc}): rebuild the sketch, "
                             f"the file is damaged or is not a partition table") from None
    apps = ", ".join(_slot(p) for p in table.partitions if p.type == 0x00) or "none"
    subtypes = {p.subtype for p in table.ota_slots}
    if len(subtypes) < 2:
        raise PreflightError(f"{path.name} has no second OTA slot (app partitions: {apps}): build with "
                             f"an OTA partition scheme such as PartitionScheme=default")
    if not {_OTA_0, _OTA_1} <= subtypes:
        raise PreflightError(f"{path.name} has OTA slots with a gap (app partitions: {apps}): the "
                             f"bootloader counts slots from ota_0 without gaps, so name them ota_0, ota_1, ...")
    otadata = table.otadata
    if otadata is None:
        raise PreflightError(f"{path.name} has no otadata partition (data, ota), so an update cannot "
                             f"switch slots: build with an OTA partition scheme such as PartitionScheme=default")
    if otadata.size < 2 * firmware.OTADATA_SECTOR:
        raise PreflightError(f"{path.name} has an otadata partition of 0x{otadata.size:x} bytes; the "
                             f"bootloader needs two 4 KB sectors (0x2000): fix its size in the partition CSV")
    if flash_size is not None and table.partitions:
        last = max(table.partitions, key=lambda p: p.offset + p.size)
        end = last.offset + last.size
        if end > flash_size:
            raise PreflightError(
                f"{path.name} reaches 0x{end:x} ({last.name} ends there) but the board's flash is "
                f"{_size(flash_size)} (0x{flash_size:x}): build for the board's flash size with a "
                f"partition scheme that fits it")
    return table


def _fits(path: Path, table: firmware.PartitionTable) -> None:
    """The app must fit the smallest OTA slot: esptool would write past ota_0 otherwise, and
    the update server sends this same file size (HTTPUpdate refuses a Content-Length above the
    next slot with -100, "Not Enough space")."""
    size = path.stat().st_size
    smallest = min(table.ota_slots, key=lambda p: p.size)
    if size > smallest.size:
        raise PreflightError(
            f"{path.name} is {size} bytes (0x{size:x}) but OTA slot {_slot(smallest)} holds "
            f"{smallest.size} (0x{smallest.size:x}): choose a partition scheme with larger app "
            f"slots such as PartitionScheme=min_spiffs, or make the sketch smaller")


def check(artifacts: Artifacts, chip: str, *, flash_size: int | str | None = None) -> None:
    """Raise PreflightError for the first thing in `artifacts` that would fail on a board with
    `chip` (esptool's `Chip type:` text or a --chip name) and, when known, `flash_size` (bytes,
    or esptool's text such as "4MB"). Reads only artifacts.app, .bootloader and .partitions."""
    try:
        board_id = chip_id_for(chip)
    except ValueError as exc:
        raise PreflightError(
            f"board chip {exc}: pass esptool's Chip type text or a --chip name such as esp32"
        ) from None
    try:
        size = None if flash_size is None else parse_flash_size(flash_size)
    except ValueError as exc:
        raise PreflightError(f"board {exc}: pass bytes or esptool's text such as 4MB") from None
    revision = chip_revision(chip)
    app = Path(artifacts.app)
    _image(app, "app", board_id, chip, revision)
    _image(Path(artifacts.bootloader), "bootloader", board_id, chip, revision)
    table = _table(Path(artifacts.partitions), size)
    _fits(app, table)
    log.info(
        "preflight: %s, %s and %s fit %s%s",
        app.name,
        Path(artifacts.bootloader).name,
        Path(artifacts.partitions).name,
        chip,
        f" with {_size(size)} flash" if size else "",
    )
