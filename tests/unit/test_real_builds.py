"""The virtual builder writes what a real arduino-cli build of the sketch carries, per core.

Each build is read back by the real `esptool image-info` (not by the rig's parser) and held
against ota_rig/scenarios/real_builds.json: facts recorded by hand from public dumps of real
builds, the cores' platform.txt/boards.txt and real boot logs, each with its source (3.x's are
marked unverified: no 3.3.x release could be read).
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from ota_rig.build.virtual_builder import VirtualBuilder
from ota_rig.device import firmware
from ota_rig.device.profiles import PROFILES
from ota_rig.device.sketch_config import SketchConfig
from ota_rig.virtual.boot import block_tail_line
from ota_rig.virtual.verified_update import compare_versions

from ..recorded import REAL_BUILDS as RECORDED


def image_info(path: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "esptool", "image-info", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def fields(info: str) -> dict[str, str]:
    """esptool's `Name: value` lines."""
    return dict(re.findall(r"^([A-Z][\w -]+): (.+)$", info, re.M))


@pytest.fixture(scope="module", params=sorted(PROFILES))
def build(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    config = replace(SketchConfig.without_server("0.7"), profile=request.param)
    return request.param, VirtualBuilder(tmp_path_factory.mktemp(request.param)).build(config)


def test_the_app_carries_what_a_real_build_with_that_core_carries(build) -> None:
    profile, artifacts = build
    wanted = {k: v for k, v in RECORDED[profile]["app_image_info"].items() if not k.startswith("_") and k != "verified"}
    seen = fields(image_info(artifacts.app))
    assert {name: seen.get(name) for name in wanted} == wanted
    elf = seen["ELF file SHA256"]
    assert (elf != "0" * 64) == RECORDED[profile]["elf_sha256_filled"]["value"]


def test_the_bootloader_has_the_layout_the_real_one_boots_with(build) -> None:
    """The segments and entry esptool finds in the bootloader are those the real ROM prints
    while loading the real one."""
    profile, artifacts = build
    lines = RECORDED[profile]["boot_log"]["lines"]
    loads = [
        (int(address, 16), int(length))
        for address, length in (
            re.fullmatch(r"load:0x([0-9a-f]+),len:(\d+)", line).groups() for line in lines if line.startswith("load:")
        )
    ]
    info = image_info(artifacts.bootloader)
    rows = re.findall(r"^\s+\d+\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x[0-9a-f]+\s", info, re.M)
    assert [(int(load, 16), int(length, 16)) for length, load in rows] == loads
    assert f"Entry point: 0x{lines[-1].split()[-1][2:]}" in info
    assert (fields(info)["Flash mode"], fields(info)["Flash freq"]) == ("DIO", "80m")


def test_the_app_descriptor_is_the_cores_not_the_sketchs(build, tmp_path: Path) -> None:
    """Every build with one core carries the same descriptor version, whatever the sketch's
    version: so a sketch that compared it (the rig's reference sketch once did) compares the
    lib-builder's. On 2.0.x that reads as 0.4.6, so a device on 0.2 would take a validly signed
    0.1; on 3.x as 0, so a device would refuse every signed update."""
    profile, artifacts = build
    other = VirtualBuilder(tmp_path).build(replace(SketchConfig.without_server("0.2"), profile=profile))
    descriptors = [firmware.parse_image(a.app.read_bytes()).descriptor for a in (artifacts, other)]
    assert descriptors[0].version == descriptors[1].version == RECORDED[profile]["app_image_info"]["App version"]
    assert descriptors[0].elf_sha256 != descriptors[1].elf_sha256  # the ELF differs, as it would
    read_as_older = compare_versions(descriptors[0].version, "0.2") < 0
    assert read_as_older == (profile == "arduino-esp32-3")


def test_the_twin_finds_the_profile_in_what_the_build_carries(build) -> None:
    profile, artifacts = build
    config = SketchConfig.from_image(firmware.parse_image(artifacts.app.read_bytes()))
    assert config.profile == profile and config.version == "0.7"
    assert b'"profile"' not in artifacts.app.read_bytes()  # not written among the sketch's constants


@pytest.mark.parametrize(
    ("end", "length", "line"),
    [
        (
            0x386C,
            13220,
            "ho 0 tail 12 room 4",
        ),  # a 2.0.x bootloader's len:13220 (FluidNC's public boot log, SDK v4.4.4)
        (0x3FDC, 4, "ho 8 tail 4 room 4"),  # ESP-IDF 5's 4-byte segment at block offset 8 (public IDF boot logs)
        (0x3BF4, 13964, ""),  # 2.0.14's qio_80m segment 1: no line in its public boot logs
        (0x560, 1344, ""),
    ],
)
def test_the_rom_says_ho_tail_room_where_real_boot_logs_show_it(end: int, length: int, line: str) -> None:
    assert block_tail_line(end, length).strip() == line
