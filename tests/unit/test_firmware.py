"""ota_rig.device.firmware: image, descriptor, partition table and otadata formats.

The image tests hand our bytes to the real `esptool image-info`; offsets in the malformed-input
tests are computed here by walking the image, not taken from the module under test.
"""

import hashlib
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from ota_rig.device.firmware import (
    APP_OFFSET,
    DEFAULT_PARTITIONS_CSV,
    OTADATA_SECTOR,
    AppDescriptor,
    FirmwareFormatError,
    OtaEntry,
    OtaState,
    Partition,
    PartitionTable,
    active_ota_slot,
    boot_app0,
    build_app_image,
    build_bootloader_image,
    parse_image,
    select_ota_slot,
)

DESCRIPTOR = AppDescriptor(version="1.2.3", project_name="ota_https")
BIG = 1_300_000


@pytest.fixture(scope="module")
def app() -> bytes:
    return build_app_image(DESCRIPTOR)


@pytest.fixture(scope="module")
def big_app() -> bytes:
    return build_app_image(DESCRIPTOR, size=BIG)


def segment_headers(image: bytes) -> list[tuple[int, int, int]]:
    """(header offset, load address, length) of every segment, walked independently."""
    headers, pos = [], 24
    for _ in range(image[1]):
        load_addr, length = struct.unpack_from("<II", image, pos)
        headers.append((pos, load_addr, length))
        pos += 8 + length
    return headers


def image_info(tmp_path: Path, image: bytes) -> str:
    path = tmp_path / "image.bin"
    path.write_bytes(image)
    cmd = [sys.executable, "-m", "esptool", "image-info", str(path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def assert_footer_valid(info: str) -> None:
    lines = info.splitlines()
    assert any(line.startswith("Checksum:") and line.endswith("(valid)") for line in lines), info
    assert any(line.startswith("Validation hash:") and line.endswith("(valid)") for line in lines)
    assert "invalid" not in info.lower()


# --- esptool image-info accepts what we write ------------------------------------------------


@pytest.mark.parametrize("fixture", ["app", "big_app"])
def test_esptool_image_info_accepts_app_image(
    request: pytest.FixtureRequest, tmp_path: Path, fixture: str
) -> None:
    image = request.getfixturevalue(fixture)
    info = image_info(tmp_path, image)
    assert f"Image size: {len(image)} bytes" in info
    assert "Flash size: 4MB" in info and "Flash freq: 40m" in info and "Flash mode: DIO" in info
    assert_footer_valid(info)
    application = info.split("Application Information", 1)[1]
    assert "Project name: ota_https" in application
    assert "App version: 1.2.3" in application
    assert "ESP-IDF: v4.4.6" in application
    for memory in ("DROM", "DRAM", "IRAM", "IROM"):
        assert memory in info.split("Segments Information", 1)[1]


# The 2.0.x bootloader_dio_40m's layout (ota_rig/scenarios/real_builds.json).
BOOTLOADER_SEGMENTS = ((0x3FFF0030, 0x4A0), (0x40078000, 0x33B0), (0x40080400, 0xBD4))


def test_esptool_image_info_accepts_bootloader(tmp_path: Path) -> None:
    info = image_info(tmp_path, build_bootloader_image(BOOTLOADER_SEGMENTS, 0x400805E4))
    assert_footer_valid(info)
    assert "Entry point: 0x400805e4" in info
    assert "Maximal chip revision: v655.35" in info  # elf2image's default, as Arduino builds it
    for index, (load, length) in enumerate(BOOTLOADER_SEGMENTS):
        assert f"{index:7}  {length:#07x}  {load:#010x}" in info  # esptool's table row
    assert "Application Information" not in info and "Bootloader Information" not in info


# --- building and parsing images -------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["app", "big_app"])
def test_parse_image_round_trip(request: pytest.FixtureRequest, fixture: str) -> None:
    blob = request.getfixturevalue(fixture)
    image = parse_image(blob)
    assert image.to_bytes() == blob
    assert image.length == len(blob)
    assert image.sha256 == blob[-32:] == hashlib.sha256(blob[:-32]).digest()
    assert image.descriptor == DESCRIPTOR
    assert image.rodata == b""
    assert [(s.load_addr, len(s.data)) for s in image.segments] == [
        (load, length) for _, load, length in segment_headers(blob)
    ]
    assert 0x40080000 <= image.entry < 0x40080000 + len(image.segments[2].data)
    assert (image.flash_mode, image.flash_size_freq, image.chip_id) == (2, 0x20, 0)


def test_big_app_has_the_requested_size(big_app: bytes) -> None:
    assert BIG - 64 <= len(big_app) <= BIG


def test_default_app_is_small(app: bytes) -> None:
    assert 60_000 <= len(app) <= 100_000


@pytest.mark.parametrize(
    "options", [{}, {"size": BIG}, {"rodata": b"const char *msg = 0;" * 4000}]
)
def test_flash_mapped_segments_sit_on_their_mmu_page_offset(options: dict) -> None:
    mapped = [
        (header + 8, load_addr)
        for header, load_addr, _ in segment_headers(build_app_image(DESCRIPTOR, **options))
        if 0x3F400000 <= load_addr < 0x3F800000 or 0x400D0000 <= load_addr < 0x40400000
    ]
    assert [load for _, load in mapped] == [0x3F400020, 0x400D0020]  # DROM, IROM
    for data_offset, load_addr in mapped:
        assert data_offset % 0x10000 == load_addr % 0x10000, hex(load_addr)


def test_checksum_is_last_byte_of_a_16_byte_block(app: bytes) -> None:
    checksum_at = len(app) - 33
    assert (checksum_at + 1) % 16 == 0
    expected = 0xEF
    for header, _, length in segment_headers(app):
        for byte in app[header + 8 : header + 8 + length]:
            expected ^= byte
    assert app[checksum_at] == expected


def test_rodata_round_trips_padded_to_four_bytes() -> None:
    image = parse_image(build_app_image(DESCRIPTOR, rodata=b"hello"))
    assert image.rodata == b"hello\0\0\0"
    assert image.segments[0].data[:256] == DESCRIPTOR.to_bytes()


def test_app_contents_are_deterministic_and_depend_on_the_descriptor(app: bytes) -> None:
    other = build_app_image(AppDescriptor(version="1.2.4", project_name="ota_https"))
    assert build_app_image(DESCRIPTOR) == app
    assert len(other) == len(app)
    assert parse_image(other).segments[3].data != parse_image(app).segments[3].data


@pytest.mark.parametrize("fixture", ["app", "big_app"])
def test_app_compresses_like_firmware(request: pytest.FixtureRequest, fixture: str) -> None:
    blob = request.getfixturevalue(fixture)
    assert 0.40 <= len(zlib.compress(blob, 9)) / len(blob) <= 0.80


@pytest.mark.parametrize(("size", "message"), [(0x141000, "OTA slot"), (50_000, "too small")])
def test_app_size_out_of_range_is_refused(size: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_app_image(DESCRIPTOR, size=size)


def test_bootloader_parses_without_descriptor() -> None:
    image = parse_image(build_bootloader_image(BOOTLOADER_SEGMENTS, 0x400805E4, flash_size_freq=0x2F), base=0x1000)
    assert [(s.load_addr, len(s.data)) for s in image.segments] == list(BOOTLOADER_SEGMENTS)
    assert image.entry == 0x400805E4 and image.hash_appended and image.flash_size_freq == 0x2F
    assert image.descriptor is None and image.rodata == b""


def test_trailing_flash_bytes_are_ignored(app: bytes) -> None:
    assert parse_image(app + b"\xff" * 4096).length == len(app)


# --- malformed images: one precise error each ------------------------------------------------


def flip(blob: bytes, offset: int) -> bytes:
    return blob[:offset] + bytes([blob[offset] ^ 0x01]) + blob[offset + 1 :]


def corruptions(app: bytes) -> dict[str, tuple[bytes, str, int, str]]:
    """name -> (bad image, expected field, expected offset, expected text in the message)."""
    headers = segment_headers(app)
    seg1, seg3 = headers[1][0], headers[3][0]
    checksum_at, hash_at = len(app) - 33, len(app) - 32
    return {
        "cut in header": (app[:10], "image header", 0, "needs 0x18 bytes, 0xa left"),
        "cut in segment header": (app[: seg1 + 3], "segment 1 header", seg1, "0x3 left"),
        "cut in segment data": (app[: seg1 + 8 + 5], "segment 1 length", seg1 + 4, "0x5 left"),
        "cut before checksum": (app[:checksum_at], "image checksum", checksum_at, "runs past"),
        "cut in hash": (app[:-10], "image hash", hash_at, "needs 0x20 bytes, 0x16 left"),
        "bad magic": (b"\xff" + app[1:], "image magic", 0, "expected 0xe9, found 0xff"),
        "17 segments": (app[:1] + b"\x11" + app[2:], "image segment count", 1, "17 segments"),
        "bad hash flag": (app[:23] + b"\x02" + app[24:], "image hash_appended flag", 23, "0x02"),
        "data byte flipped": (flip(app, seg3 + 100), "image checksum", checksum_at, "calculated"),
        "padding byte flipped": (flip(app, checksum_at - 1), "image hash", hash_at, "SHA-256"),
        "hash byte flipped": (flip(app, len(app) - 1), "image hash", hash_at, "SHA-256"),
    }


CORRUPTIONS = list(corruptions(build_app_image(DESCRIPTOR)))


@pytest.mark.parametrize("name", CORRUPTIONS)
@pytest.mark.parametrize("base", [0, APP_OFFSET])
def test_malformed_image_raises_one_precise_error(app: bytes, name: str, base: int) -> None:
    bad, field, offset, text = corruptions(app)[name]
    with pytest.raises(FirmwareFormatError) as caught:
        parse_image(bad, base=base)
    assert (caught.value.field, caught.value.offset) == (field, base + offset)
    assert str(caught.value).startswith(f"{field} at offset 0x{base + offset:x}: ")
    assert text in str(caught.value)


def test_checksum_error_names_both_values(app: bytes) -> None:
    checksum_at = len(app) - 33
    bad = app[:checksum_at] + bytes([app[checksum_at] ^ 0x5A]) + app[checksum_at + 1 :]
    with pytest.raises(FirmwareFormatError) as caught:
        parse_image(bad)
    stored, calculated = bad[checksum_at], app[checksum_at]
    assert caught.value.problem == f"stored 0x{stored:02x}, calculated 0x{calculated:02x}"


# --- app descriptor --------------------------------------------------------------------------


def test_descriptor_layout() -> None:
    raw = AppDescriptor("v2", "proj", elf_sha256=bytes(range(32))).to_bytes()
    assert len(raw) == 256
    assert raw[:4] == bytes.fromhex("3254cdab")
    assert raw[0x10:0x13] == b"v2\0" and raw[0x30:0x35] == b"proj\0"
    assert raw[0x50:0x58] == b"12:00:00" and raw[0x60:0x6B] == b"Nov 21 2026"
    assert raw[0x70:0x77] == b"v4.4.6\0" and raw[0x90:0xB0] == bytes(range(32))
    assert raw[0xB0:] == bytes(80)
    assert AppDescriptor.from_bytes(raw) == AppDescriptor("v2", "proj", elf_sha256=bytes(range(32)))


def test_descriptor_layout_of_esp_idf_5_4_and_later() -> None:
    """min/max_efuse_blk_rev_full (u16 each) and mmu_page_size (u8, log2) follow the ELF
    SHA-256, as esptool 5 reads them ("<II8s32s32s16s16s32s32sHHB3s72s")."""
    described = AppDescriptor("v2", "proj", min_efuse_blk_rev_full=1, max_efuse_blk_rev_full=99, mmu_page_size=16)
    raw = described.to_bytes()
    assert raw[0xB0:0xB5] == bytes([1, 0, 99, 0, 16]) and raw[0xB5:] == bytes(256 - 0xB5)
    assert AppDescriptor.from_bytes(raw) == described


@pytest.mark.parametrize(("field", "value"), [("version", "x" * 32), ("time", "y" * 16)])
def test_descriptor_string_that_does_not_fit_is_refused(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=field):
        AppDescriptor(**{"version": "1", "project_name": "p", field: value}).to_bytes()
    AppDescriptor(**{"version": "1", "project_name": "p", field: value[:-1]}).to_bytes()


def test_descriptor_bad_magic_and_short_data() -> None:
    raw = DESCRIPTOR.to_bytes()
    with pytest.raises(FirmwareFormatError) as caught:
        AppDescriptor.from_bytes(bytes(4) + raw[4:], offset=0x10020)
    assert str(caught.value) == (
        "app descriptor magic at offset 0x10020: expected 0xabcd5432, found 0x00000000"
    )
    with pytest.raises(FirmwareFormatError, match="app descriptor at offset 0x20: runs past"):
        AppDescriptor.from_bytes(raw[:100], offset=0x20)


# --- partition table -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_table() -> PartitionTable:
    return PartitionTable.from_csv(DEFAULT_PARTITIONS_CSV)


def test_default_csv_encodes_like_gen_esp32part(default_table: PartitionTable) -> None:
    raw = default_table.to_bytes()
    assert len(raw) == 0xC00
    nvs = bytes.fromhex("aa50 01 02 00900000 00500000") + b"nvs".ljust(16, b"\0") + bytes(4)
    assert raw[:32] == nvs
    assert raw[0xC0:0xE0] == bytes.fromhex("ebeb" + "ff" * 14 + "972dae2ff872a0142d60bad124c0666b")
    assert raw[0xE0:] == b"\xff" * (0xC00 - 0xE0)


def test_default_table_layout(default_table: PartitionTable) -> None:
    assert PartitionTable.from_bytes(default_table.to_bytes()) == default_table
    assert [(p.name, p.offset, p.size) for p in default_table.ota_slots] == [
        ("app0", 0x10000, 0x140000), ("app1", 0x150000, 0x140000)
    ]
    assert default_table.otadata == Partition("otadata", 0x01, 0x00, 0xE000, 0x2000)
    assert default_table.find("coredump") == Partition("coredump", 0x01, 0x03, 0x3F0000, 0x10000)
    with pytest.raises(KeyError, match="no partition named 'factory'"):
        default_table.find("factory")


def test_csv_with_empty_offsets_and_suffixes() -> None:
    table = PartitionTable.from_csv(
        "# Name, Type, SubType, Offset, Size, Flags\n"
        "nvs,      data, nvs,      ,        24K,\n"
        "otadata,  data, ota,      ,        8K,\n"
        "app0,     app,  ota_0,    ,        1M,\n"
        "app1,     app,  ota_1,    ,        1M,  # comment\n"
        "\n"
        "factory,  app,  factory,  ,        0x100000\n"
        "custom,   0x40, 0x01,     0x3F0000, 64K, encrypted\n"
    )
    assert [(p.name, p.type, p.subtype, p.offset, p.size, p.flags) for p in table.partitions] == [
        ("nvs", 0x01, 0x02, 0x9000, 0x6000, 0),
        ("otadata", 0x01, 0x00, 0xF000, 0x2000, 0),
        ("app0", 0x00, 0x10, 0x20000, 0x100000, 0),
        ("app1", 0x00, 0x11, 0x120000, 0x100000, 0),
        ("factory", 0x00, 0x00, 0x220000, 0x100000, 0),
        ("custom", 0x40, 0x01, 0x3F0000, 0x10000, 1),
    ]
    assert [p.name for p in table.ota_slots] == ["app0", "app1"]
    assert PartitionTable.from_bytes(table.to_bytes(), base=0) == table


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("app0, app, ota_0, 0x8000, 1M", "overlaps"),
        ("app0, app, ota_0, 0x11000, 1M", "aligned"),
        ("data0, data, spifs, , 4K", "spifs"),
        ("data0, data, spiffs", "expected name"),
    ],
)
def test_bad_csv_line_is_refused(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"line 2 .*{message}"):
        PartitionTable.from_csv("# header\n" + line)


def test_partition_entry_changed_breaks_the_md5(default_table: PartitionTable) -> None:
    raw = bytearray(default_table.to_bytes())
    raw[0x0A] ^= 0x10  # nvs size
    with pytest.raises(FirmwareFormatError) as caught:
        PartitionTable.from_bytes(bytes(raw))
    assert str(caught.value) == "partition table MD5 at offset 0x80d0: does not match the entries"


def test_partition_entry_bad_magic(default_table: PartitionTable) -> None:
    raw = bytearray(default_table.to_bytes())
    raw[0x40] = 0x00
    with pytest.raises(FirmwareFormatError) as caught:
        PartitionTable.from_bytes(bytes(raw), base=0)
    assert (caught.value.field, caught.value.offset) == ("partition entry 2 magic", 0x40)
    assert caught.value.problem == "expected aa 50, found 00 50"


def test_erased_and_truncated_tables() -> None:
    assert PartitionTable.from_bytes(b"\xff" * 0xC00).partitions == ()
    raw = PartitionTable.from_csv(DEFAULT_PARTITIONS_CSV).to_bytes()
    with pytest.raises(FirmwareFormatError, match="^partition entry 2 at offset 0x8040: runs past"):
        PartitionTable.from_bytes(raw[:0x50])


# --- otadata ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seq", "crc"), [(1, 0x4743989A), (2, 0x55F63774), (3, 0xED4A5011), (0, 0xFFFFFFFF)]
)
def test_otadata_crc_worked_values(seq: int, crc: int) -> None:
    raw = OtaEntry(seq, OtaState.NEW).to_bytes()
    assert raw == struct.pack("<I", seq) + b"\xff" * 20 + bytes(4) + struct.pack("<I", crc)
    assert OtaEntry.from_bytes(raw) == OtaEntry(seq, OtaState.NEW, crc)
    assert OtaEntry.from_bytes(raw).is_valid


def test_boot_app0_bytes() -> None:
    raw = boot_app0()
    assert len(raw) == 8192
    assert raw[:32] == bytes.fromhex("01000000") + b"\xff" * 24 + bytes.fromhex("9a984347")
    assert raw[32:OTADATA_SECTOR] == b"\xff" * (OTADATA_SECTOR - 32)
    assert raw[OTADATA_SECTOR:] == bytes(4) + b"\xff" * (OTADATA_SECTOR - 4)


def test_active_slot_of_boot_app0_and_of_erased_otadata() -> None:
    assert active_ota_slot(boot_app0(), 2) == 0
    assert active_ota_slot(b"\xff" * 8192, 2) is None


def write(otadata: bytes, sector: int, entry: bytes) -> bytes:
    """Erase one otadata sector and program an entry into it."""
    start = sector * OTADATA_SECTOR
    sector_bytes = entry.ljust(OTADATA_SECTOR, b"\xff")
    return otadata[:start] + sector_bytes + otadata[start + OTADATA_SECTOR :]


def test_select_alternates_sectors_and_counts_up() -> None:
    otadata = boot_app0()
    steps = []
    for slot in (1, 0, 1):
        sector, entry = select_ota_slot(otadata, slot, 2)
        otadata = write(otadata, sector, entry)
        steps.append((sector, OtaEntry.from_bytes(entry), active_ota_slot(otadata, 2)))
    assert steps == [
        (1, OtaEntry(2, OtaState.NEW), 1),
        (0, OtaEntry(3, OtaState.NEW), 0),
        (1, OtaEntry(4, OtaState.NEW), 1),
    ]


def test_select_on_erased_otadata_writes_sector_zero() -> None:
    sector, entry = select_ota_slot(b"\xff" * 8192, 1, 2, OtaState.UNDEFINED)
    assert (sector, OtaEntry.from_bytes(entry)) == (0, OtaEntry(2))
    assert active_ota_slot(write(b"\xff" * 8192, sector, entry), 2) == 1


def test_reselecting_the_running_slot_keeps_its_seq_like_idf() -> None:
    sector, entry = select_ota_slot(boot_app0(), 0, 2)
    assert (sector, OtaEntry.from_bytes(entry).seq) == (1, 1)


@pytest.mark.parametrize(
    "newer",
    [
        OtaEntry(2, OtaState.VALID, crc=0x12345678),
        OtaEntry(2, OtaState.INVALID),
        OtaEntry(2, OtaState.ABORTED),
        OtaEntry(0xFFFFFFFF, OtaState.VALID),
    ],
    ids=["bad crc", "invalid", "aborted", "erased seq"],
)
def test_invalid_newer_entry_is_ignored(newer: OtaEntry) -> None:
    otadata = write(boot_app0(), 1, newer.to_bytes())
    assert not OtaEntry.from_bytes(otadata[OTADATA_SECTOR:]).is_valid
    assert active_ota_slot(otadata, 2) == 0
    assert select_ota_slot(otadata, 1, 2)[0] == 1  # sector 0 is still the active one


@pytest.mark.parametrize(
    "state", [OtaState.NEW, OtaState.PENDING_VERIFY, OtaState.VALID, OtaState.UNDEFINED]
)
def test_usable_states_keep_the_newer_entry(state: OtaState) -> None:
    otadata = write(boot_app0(), 1, OtaEntry(2, state).to_bytes())
    assert active_ota_slot(otadata, 2) == 1


def test_unknown_state_value_survives_parsing() -> None:
    entry = OtaEntry.from_bytes(struct.pack("<I20sII", 5, b"\xff" * 20, 0x77, 0x12345678))
    assert (entry.seq, entry.state, entry.crc) == (5, 0x77, 0x12345678)
