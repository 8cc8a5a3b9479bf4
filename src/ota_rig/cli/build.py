"""`rig build`: the reference sketch's image for any update server, for the twin, without Python.

    rig build --url https://ota.example.com/update --ca ca.pem --version 0.1 [--flash PORT]

It is the rig's own virtual build (ota_rig.build.virtual_builder with a SketchConfig): the four
files an arduino-cli build of sketches/ota_https writes, carrying exactly what that build
carries (the core's app descriptor, the sketch's constants where the compiled sketch keeps its
ota_config.h strings), for the twin to run. It prints each file with the offset it is flashed
at (a classic ESP32's: ota_rig.build.artifacts) and the esptool line that writes them; with
`--flash PORT` it runs that esptool itself, the real CLI, as the rig does before a scenario.

A pty (a twin's `--pty` link, or any /dev/pts port) carries no DTR/RTS, so esptool runs there
with `--before no-reset --after no-reset`: the chip must wait in its ROM loader (a twin started
with `--io0-low`, or moved there with `IO0 0`, `EN 0`, `EN 1` on its standard input), and
`IO0 1`, `EN 0`, `EN 1` boots what was written. Any other port gets esptool's own resets
through DTR/RTS, as a dev board's USB bridge has them.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509

from ota_rig.bench.flash import Esptool, connected_chip
from ota_rig.build.artifacts import Artifacts
from ota_rig.build.virtual_builder import VirtualBuilder
from ota_rig.device.sketch_config import SketchConfig
from ota_rig.errors import CommandError

BOOT_WIRES = ("IO0 1", "EN 0", "EN 1")  # a pty twin's standard input: boot the flash


def build(url: str, ca: Path, version: str, profile: str, out: Path, check_dates: bool,
          flash: str | None) -> int:
    """Build the sketch for `url`, trusting the CA bundle in `ca`, as firmware `version` of
    `profile`, into `out`; print its files and offsets and, if `flash` names a port, write them."""
    config = SketchConfig(version=version, update_url=checked_url(url), ca_bundle=ca_bundle(ca),
                          check_dates=check_dates, profile=profile)
    artifacts = VirtualBuilder(out).build(config)
    print(f"built ota_https {version} for {profile} in {artifacts.app.parent}")
    for offset, path in artifacts.flash_files():
        print(f"0x{offset:<6x} {path}")
    if flash is None:  # the line for a twin's pty, the port this command is mostly for
        line = esptool_line(artifacts, "PORT", ("no-reset", "no-reset"))
        print(f"flash it with: {shlex.join(line)}  (through a USB bridge: without --before/--after)")
        return 0
    reset = resets(flash)
    output = Esptool(flash, before=reset[0], after=reset[1]).write(artifacts.flash_files())
    chip = connected_chip(output)
    print(f"flashed {flash}" + (f" ({chip.chip}, MAC {chip.mac})" if chip else ""))
    if reset[1] == "no-reset":
        print("boot it: " + ", ".join(f"`{wire}`" for wire in BOOT_WIRES) + " on the twin's standard input "
              "(or reset the board with IO0 high)")
    return 0


def checked_url(url: str) -> str:
    """`url` if the sketch can ask it for updates: an https:// URL with a host."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise CommandError(f"{url!r} is not an https:// URL with a host; pass --url the update URL the "
                           "device asks, such as https://ota.example.com/update")
    return url


def ca_bundle(path: Path) -> str:
    """The PEM text of the CA certificates in `path`, checked to hold at least one."""
    if not path.is_file():
        raise CommandError(f"{path}: no such file; pass --ca the PEM file of the CA(s) the device trusts")
    text = path.read_text(errors="replace")
    try:
        x509.load_pem_x509_certificates(text.encode())
    except ValueError:
        raise CommandError(f"{path} holds no PEM certificate; pass --ca the CA certificate(s) in PEM "
                           "(`-----BEGIN CERTIFICATE-----`), such as rig serve's ca.pem") from None
    return text


def resets(port: str) -> tuple[str, str]:
    """esptool's --before and --after for `port`: none on a pty (no modem lines), DTR/RTS elsewhere."""
    if not port.startswith("rfc2217://") and os.path.realpath(port).startswith("/dev/pts/"):
        return "no-reset", "no-reset"
    return "default-reset", "hard-reset"


def esptool_line(artifacts: Artifacts, port: str, reset: tuple[str, str]) -> list[str]:
    """The esptool command that writes `artifacts` through `port`, as a user types it."""
    files = [str(part) for offset, path in artifacts.flash_files() for part in (f"0x{offset:x}", path)]
    return ["esptool", "--chip", artifacts.chip, "--port", port, "--before", reset[0], "--after", reset[1],
            "write-flash", *files]

