"""The app the second stage starts: the behaviour of sketches/ota_https on the twin.

For now it does what the reference sketch does first: print `Firmware version <version>`,
with the version read from the app descriptor of the image in flash, then it idles. The OTA
flow (Wi-Fi, NTP, TLS, HTTPUpdate) builds on this.
"""

from __future__ import annotations

import logging

from ..firmware import Image, Partition
from .chip import Chip

log = logging.getLogger(__name__)


def run(chip: Chip, partition: Partition, image: Image) -> None:
    descriptor = image.descriptor
    version = descriptor.version if descriptor else ""
    log.info("app %r version %r running from %s", descriptor and descriptor.project_name, version, partition.name)
    chip.uart.print(f"Firmware version {version}\r\n")
    while True:
        chip.sleep(3600)
