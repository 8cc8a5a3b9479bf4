"""A build's artifact set: the four files a board is flashed with and where each goes.

An arduino-cli build of ota_rig/sketches/ota_https leaves four files, flashed at fixed offsets on a
classic ESP32: the bootloader (0x1000), the partition table (0x8000), boot_app0 (0xe000, the
otadata that selects app0) and the app (0x10000).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from ota_rig.device import firmware

log = logging.getLogger(__name__)

SKETCH = "ota_https"
SKETCH_DIR = Path(__file__).resolve().parent.parent / "sketches" / SKETCH


@dataclass(frozen=True)
class Artifacts:
    """One build's files, where each goes in flash and the chip they are for (esptool's
    --chip name). The offsets default to the classic ESP32's."""

    version: str
    bootloader: Path
    partitions: Path
    boot_app0: Path
    app: Path
    bootloader_offset: int = firmware.BOOTLOADER_OFFSET
    partitions_offset: int = firmware.PARTITION_TABLE_OFFSET
    boot_app0_offset: int = firmware.OTADATA_OFFSET
    app_offset: int = firmware.APP_OFFSET
    chip: str = "esp32"

    def flash_files(self) -> list[tuple[int, Path]]:
        """(offset, file) pairs in the order esptool write-flash takes them."""
        return [
            (self.bootloader_offset, self.bootloader),
            (self.partitions_offset, self.partitions),
            (self.boot_app0_offset, self.boot_app0),
            (self.app_offset, self.app),
        ]

    def to_json(self) -> dict[str, object]:
        """The fields as JSON values (paths as text), as a build folder's artifacts.json holds them."""
        return {name: str(value) if isinstance(value, Path) else value for name, value in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict) -> "Artifacts":
        return cls(**{**data, **{name: Path(data[name]) for name in ("bootloader", "partitions", "boot_app0", "app")}})
