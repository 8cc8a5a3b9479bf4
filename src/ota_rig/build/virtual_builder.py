"""Virtual builds: the artifact set an arduino-cli build of the sketch writes, made without a toolchain.

The `VirtualBuilder` writes the same set as arduino-cli, with the same names, as real ESP32
images that `esptool image-info` calls valid. The sketch's configuration (`SketchConfig`) goes
where a compiled sketch keeps its constants, in the app's read-only data segment, and the
virtual board runs what it finds there. Everything else in the images is what an arduino-cli
build with the same core carries (ota_rig.device.profiles.RealBuild): the app descriptor is the
core's, not the sketch's, so the sketch's version is only in its constants.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

from ota_rig.build.artifacts import SKETCH, Artifacts
from ota_rig.device import firmware, profiles
from ota_rig.device.sketch_config import SketchConfig

log = logging.getLogger(__name__)


def virtual_app(config: SketchConfig, size: int = 0) -> bytes:
    """The app image a virtual build of the sketch with `config` holds: what an arduino-cli
    build of it with the profile's core and the default FQBN carries (ota_rig.device.profiles.
    RealBuild: the descriptor the core's libraries fill, DIO at 80 MHz, 4 MB), with the sketch's
    constants in its rodata. Real builds hold the ELF's SHA-256 in the descriptor (platform.txt
    passes elf2image --elf-sha256-offset 0xb0); a virtual build has no ELF, so it puts the
    SHA-256 of its configuration there, which is as unique to the build."""
    profile = profiles.get(config.profile)
    real = profile.build
    descriptor = firmware.AppDescriptor(
        version=real.app_version, project_name=real.project_name, time=real.time, date=real.date,
        idf_version=profile.idf_version, elf_sha256=hashlib.sha256(config.to_json()).digest(),
        min_efuse_blk_rev_full=real.min_efuse_blk_rev_full, max_efuse_blk_rev_full=real.max_efuse_blk_rev_full,
        mmu_page_size=real.mmu_page_size)
    return firmware.build_app_image(descriptor, rodata=config.to_rodata(), size=size, flash_mode=real.flash_mode,
                                    flash_size_freq=real.flash_size_freq)


def virtual_bootloader(profile_name: str) -> bytes:
    """The bootloader image an arduino-cli build with the profile's core writes (its layout; the
    code inside is synthetic)."""
    real = profiles.get(profile_name).build
    return firmware.build_bootloader_image(real.bootloader_segments, real.bootloader_entry,
                                           flash_mode=real.flash_mode, flash_size_freq=real.flash_size_freq)


class VirtualBuilder:
    """Builds artifact sets for the virtual board under `root`, one folder per build.

    `build(config)` is cached by configuration: asking twice returns the same files. `size`
    grows the app image to about that many bytes (0: a small, fast test image).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def build(self, config: SketchConfig, size: int = 0) -> Artifacts:
        folder = self.root / f"{config.version}-{config.key}{f'-{size}' if size else ''}"
        artifacts = Artifacts(
            version=config.version,
            bootloader=folder / f"{SKETCH}.ino.bootloader.bin",
            partitions=folder / f"{SKETCH}.ino.partitions.bin",
            boot_app0=folder / "boot_app0.bin",
            app=folder / f"{SKETCH}.ino.bin",
        )
        if artifacts.app.exists():
            return artifacts
        folder.mkdir(parents=True, exist_ok=True)
        artifacts.bootloader.write_bytes(virtual_bootloader(config.profile))
        artifacts.partitions.write_bytes(firmware.PartitionTable.from_csv(firmware.DEFAULT_PARTITIONS_CSV).to_bytes())
        artifacts.boot_app0.write_bytes(firmware.boot_app0())
        (folder / "ota_config.json").write_text(json.dumps(asdict(config), indent=2))
        # The app goes last: its presence marks a complete build.
        artifacts.app.write_bytes(virtual_app(config, size))
        log.info("built %s %s (%s) in %s", SKETCH, config.version, config.profile, folder)
        return artifacts
