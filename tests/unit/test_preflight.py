"""Preflight: a wrong artifact set is refused before esptool writes, in one sentence."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from esptool.targets import CHIP_DEFS

from ota_rig.build import preflight
from ota_rig.build.artifacts import Artifacts
from ota_rig.build.preflight import PreflightError, check
from ota_rig.build.virtual_builder import VirtualBuilder
from ota_rig.device import firmware
from ota_rig.device.sketch_config import SketchConfig

BOARD = "ESP32-D0WD-V3 (revision v3.0)"  # what esptool says of the virtual ESP32
TABLE = "ota_https.ino.partitions.bin"
APP = "ota_https.ino.bin"
BOOTLOADER = "ota_https.ino.bootloader.bin"

# ESP-IDF's single-app scheme: components/partition_table/partitions_singleapp.csv
# (espressif/esp-idf master @102122904ade, last changed in 26800ed71e): one factory app, no otadata.
IDF_SINGLE_APP_CSV = """\
# Name,   Type, SubType, Offset,  Size, Flags
nvs,      data, nvs,     ,        0x6000,
phy_init, data, phy,     ,        0x1000,
factory,  app,  factory, ,        1M,
"""
# arduino-esp32 tools/partitions/huge_app.csv ("Huge APP (3MB No OTA/1MB SPIFFS)"): otadata and
# a single ota_0 slot.
ARDUINO_HUGE_APP_CSV = """\
# Name,   Type, SubType, Offset,  Size, Flags
nvs,      data, nvs,     0x9000,  0x5000,
otadata,  data, ota,     0xe000,  0x2000,
app0,     app,  ota_0,   0x10000, 0x300000,
spiffs,   data, spiffs,  0x310000,0xE0000,
coredump, data, coredump,0x3F0000,0x10000,
"""


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    return VirtualBuilder(tmp_path_factory.mktemp("build")).build(SketchConfig.without_server("0.1"))


def variant(good: Artifacts, folder: Path, **files: bytes) -> Artifacts:
    """The good set with some files replaced by `files` (same names, in `folder`)."""
    changes = {}
    for field, data in files.items():
        path = folder / getattr(good, field).name
        path.write_bytes(data)
        changes[field] = path
    return dataclasses.replace(good, **changes)


def table(csv: str) -> bytes:
    return firmware.PartitionTable.from_csv(csv).to_bytes()


def image(path: Path, **header: int) -> bytes:
    return dataclasses.replace(firmware.parse_image(path.read_bytes()), **header).to_bytes()


def refusal(artifacts: Artifacts, chip: str = BOARD, **options: object) -> str:
    with pytest.raises(PreflightError) as raised:
        check(artifacts, chip, **options)
    return str(raised.value)


@pytest.mark.parametrize("chip", [BOARD, "esp32", "ESP32-PICO-V3-02 (revision v3.0)"])
def test_a_good_set_passes_for_the_boards_chip(good: Artifacts, chip: str) -> None:
    check(good, chip)
    check(good, chip, flash_size="4MB")
    check(good, chip, flash_size=4 * 1024 * 1024)


@pytest.mark.parametrize("text, name, revision", [
    (BOARD, "ESP32", 300),
    ("ESP32-S0WD (revision v1.0)", "ESP32", 100),  # single-core classic ESP32, not an S chip
    ("ESP32-S3 (QFN56) (revision v0.2)", "ESP32-S3", 2),
    ("ESP32-S3-PICO-1 (LGA56) (revision v0.2)", "ESP32-S3", 2),
    ("ESP32-C3 (QFN32) (revision v0.4)", "ESP32-C3", 4),
    ("ESP8685 (QFN28) (revision v0.4)", "ESP32-C3", 4),
    ("ESP32-C61NF4R2 (revision v1.0)", "ESP32-C61", 100),  # not an ESP32-C6
    ("ESP32-C6 (QFN40) (revision v0.1)", "ESP32-C6", 1),
    ("ESP32-S3 in Secure Download Mode", "ESP32-S3", None),
    ("esp32", "ESP32", None),
    ("esp32s3", "ESP32-S3", None),
    ("esp32h2", "ESP32-H2", None),
])  # fmt: skip
def test_esptools_chip_text_names_the_chip_and_revision(text: str, name: str, revision: int | None) -> None:
    assert preflight.chip_name(preflight.chip_id_for(text)) == name
    assert preflight.chip_revision(text) == revision


def test_the_chip_ids_are_esptools_image_chip_ids() -> None:
    for name, chip_id in preflight.CHIP_IDS.items():
        assert CHIP_DEFS[name.lower().replace("-", "")].IMAGE_CHIP_ID == chip_id, name
    assert preflight.chip_name(0x0042) == "unknown chip id 0x0042"


def test_an_app_built_for_another_chip_is_refused(good: Artifacts, tmp_path: Path) -> None:
    s3_app = variant(good, tmp_path, app=image(good.app, chip_id=9))
    assert refusal(s3_app) == (
        f"{APP} is built for ESP32-S3 (image chip id 0x0009) but the board is an ESP32 ({BOARD}): "
        "rebuild for the board's chip (a board whose build.mcu is esp32)")
    assert refusal(s3_app, "esp32").startswith(
        f"{APP} is built for ESP32-S3 (image chip id 0x0009) but the board is an ESP32 (esp32)"
    )


def test_an_esp32_build_is_refused_on_an_esp32_s3_board(good: Artifacts) -> None:
    assert refusal(good, "ESP32-S3 (QFN56) (revision v0.2)") == (
        f"{APP} is built for ESP32 (image chip id 0x0000) but the board is an ESP32-S3 "
        "(ESP32-S3 (QFN56) (revision v0.2)): rebuild for the board's chip (a board whose build.mcu is esp32s3)"
    )


def test_a_bootloader_for_another_chip_is_refused(good: Artifacts, tmp_path: Path) -> None:
    c3_bootloader = variant(good, tmp_path, bootloader=image(good.bootloader, chip_id=5))
    assert refusal(c3_bootloader).startswith(
        f"{BOOTLOADER} is built for ESP32-C3 (image chip id 0x0005) but the board is an ESP32 ({BOARD})"
    )


def test_an_app_needing_a_newer_chip_revision_is_refused_when_the_revision_is_known(
    good: Artifacts, tmp_path: Path
) -> None:
    newer = variant(good, tmp_path, app=image(good.app, min_chip_rev_full=301))
    assert refusal(newer) == (
        f"{APP} needs chip revision v3.1 or later but the board is v3.0 ({BOARD}): rebuild without "
        "raising the minimum chip revision, or use a newer board"
    )
    check(newer, "esp32")  # no revision in a short name: nothing to compare
    check(variant(good, tmp_path, app=image(good.app, min_chip_rev_full=300)), BOARD)


_DEFAULT_LINES = firmware.DEFAULT_PARTITIONS_CSV.splitlines(keepends=True)
_ONE_SLOT = (
    "has no second OTA slot (app partitions: {}): build with an OTA partition scheme such as PartitionScheme=default"
)


@pytest.mark.parametrize("csv, problem", [
    pytest.param(IDF_SINGLE_APP_CSV, _ONE_SLOT.format("factory"), id="factory-only"),
    pytest.param(ARDUINO_HUGE_APP_CSV, _ONE_SLOT.format("app0 (ota_0)"), id="ota_0-only"),
    pytest.param(
        firmware.DEFAULT_PARTITIONS_CSV.replace("app1,     app,  ota_1", "app2,     app,  ota_2"),
        "has OTA slots with a gap (app partitions: app0 (ota_0), app2 (ota_2)): the bootloader counts "
        "slots from ota_0 without gaps, so name them ota_0, ota_1, ...", id="ota_0-and-ota_2"),
    pytest.param(
        "".join(line for line in _DEFAULT_LINES if not line.startswith("otadata")),
        "has no otadata partition (data, ota), so an update cannot switch slots: build with an OTA "
        "partition scheme such as PartitionScheme=default", id="no-otadata"),
    pytest.param(
        firmware.DEFAULT_PARTITIONS_CSV.replace("0xe000,  0x2000", "0xe000,  0x1000"),
        "has an otadata partition of 0x1000 bytes; the bootloader needs two 4 KB sectors (0x2000): "
        "fix its size in the partition CSV", id="one-sector-otadata"),
])  # fmt: skip
def test_a_table_an_update_cannot_use_is_refused(good: Artifacts, tmp_path: Path, csv: str, problem: str) -> None:
    assert refusal(variant(good, tmp_path, partitions=table(csv))) == f"{TABLE} {problem}"


def test_an_app_larger_than_its_smallest_slot_is_refused(good: Artifacts, tmp_path: Path) -> None:
    small_slots = """\
nvs,      data, nvs,     0x9000,  0x5000,
otadata,  data, ota,     0xe000,  0x2000,
app0,     app,  ota_0,   0x10000, 0x20000,
app1,     app,  ota_1,   0x30000, 0x10000,
"""
    size = good.app.stat().st_size
    assert size > 0x10000
    assert refusal(variant(good, tmp_path, partitions=table(small_slots))) == (
        f"{APP} is {size} bytes (0x{size:x}) but OTA slot app1 (ota_1) holds 65536 (0x10000): choose "
        "a partition scheme with larger app slots such as PartitionScheme=min_spiffs, or make the sketch smaller"
    )


def test_a_table_reaching_beyond_the_flash_is_refused(good: Artifacts) -> None:
    assert refusal(good, flash_size="2MB") == (
        f"{TABLE} reaches 0x400000 (coredump ends there) but the board's flash is 2MB (0x200000): "
        "build for the board's flash size with a partition scheme that fits it"
    )
    assert "the board's flash is 2MB" in refusal(good, flash_size=2 * 1024 * 1024)


def test_a_corrupt_partition_table_is_refused(good: Artifacts, tmp_path: Path) -> None:
    data = bytearray(good.partitions.read_bytes())
    data[0x0C] ^= 0x01  # nvs's size: the MD5 row no longer matches
    assert refusal(variant(good, tmp_path, partitions=bytes(data))) == (
        f"{TABLE} is not a valid partition table (partition table MD5 at offset 0x80d0: does not match "
        "the entries): rebuild the sketch, the file is damaged or is not a partition table"
    )
    assert "(partition entry 0 magic at offset 0x8000: expected aa 50, found e9 04)" in refusal(
        variant(good, tmp_path, partitions=good.app.read_bytes())
    )


def test_a_corrupt_app_is_refused(good: Artifacts, tmp_path: Path) -> None:
    data = bytearray(good.app.read_bytes())
    data[0x200] ^= 0xFF  # inside the first segment: the checksum no longer matches
    message = refusal(variant(good, tmp_path, app=bytes(data)))
    assert message.startswith(f"{APP} is not a valid app image (image checksum at offset 0x")
    assert message.endswith("): rebuild the sketch, the file is damaged or is not an ESP32 image")
    assert refusal(variant(good, tmp_path, app=b"\xff" * 64)) == (
        f"{APP} is not a valid app image (image magic at offset 0x0: expected 0xe9, found 0xff): "
        "rebuild the sketch, the file is damaged or is not an ESP32 image"
    )


def test_a_missing_file_is_refused(good: Artifacts, tmp_path: Path) -> None:
    missing = dataclasses.replace(good, bootloader=tmp_path / BOOTLOADER)
    assert refusal(missing) == f"{BOOTLOADER} is missing (no {tmp_path / BOOTLOADER}): build the sketch first"


def test_a_board_preflight_does_not_know_is_refused(good: Artifacts) -> None:
    assert refusal(good, "auto").startswith("board chip 'auto' is not a chip preflight knows (ESP32, ESP32-S2,")
    assert refusal(good, flash_size="lots") == (
        "board flash size 'lots' is not like 4MB: pass bytes or esptool's text such as 4MB"
    )
