"""Firmware builds: the artifact set a board is flashed with.

An arduino-cli build of sketches/ota_https leaves four files, flashed at fixed offsets on a
classic ESP32: the bootloader (0x1000), the partition table (0x8000), boot_app0 (0xe000, the
otadata that selects app0) and the app (0x10000). The `VirtualBuilder` writes the same set,
with the same names, as real ESP32 images that `esptool image-info` calls valid: the virtual
board runs what the image says (its version comes from the app descriptor).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from . import firmware

log = logging.getLogger(__name__)

SKETCH = "ota_https"


@dataclass(frozen=True)
class Artifacts:
    """One build's files and where each goes in flash."""

    version: str
    bootloader: Path
    partitions: Path
    boot_app0: Path
    app: Path

    def flash_files(self) -> list[tuple[int, Path]]:
        """(offset, file) pairs in the order esptool write-flash takes them."""
        return [
            (firmware.BOOTLOADER_OFFSET, self.bootloader),
            (firmware.PARTITION_TABLE_OFFSET, self.partitions),
            (firmware.OTADATA_OFFSET, self.boot_app0),
            (firmware.APP_OFFSET, self.app),
        ]


class VirtualBuilder:
    """Builds artifact sets for the virtual board under `root`, one folder per build.

    A build is cached: asking twice for the same version and size returns the same files.
    `size` grows the app image to about that many bytes (0: a small, fast test image).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def build(self, version: str, size: int = 0) -> Artifacts:
        folder = self.root / (f"{version}-{size}" if size else version)
        artifacts = Artifacts(
            version=version,
            bootloader=folder / f"{SKETCH}.ino.bootloader.bin",
            partitions=folder / f"{SKETCH}.ino.partitions.bin",
            boot_app0=folder / "boot_app0.bin",
            app=folder / f"{SKETCH}.ino.bin",
        )
        if artifacts.app.exists():
            return artifacts
        folder.mkdir(parents=True, exist_ok=True)
        descriptor = firmware.AppDescriptor(version=version, project_name=SKETCH)
        artifacts.bootloader.write_bytes(firmware.build_bootloader_image())
        artifacts.partitions.write_bytes(firmware.PartitionTable.from_csv(firmware.DEFAULT_PARTITIONS_CSV).to_bytes())
        artifacts.boot_app0.write_bytes(firmware.boot_app0())
        # The app goes last: its presence marks a complete build.
        artifacts.app.write_bytes(firmware.build_app_image(descriptor, size=size))
        log.info("built %s %s in %s", SKETCH, version, folder)
        return artifacts
