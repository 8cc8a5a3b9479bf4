"""ESP32 flash formats: app images, app descriptors, partition tables and otadata.

All little-endian; an Arduino ESP32 flash (4 MB, DIO, 40 MHz) holds:

* **App image** (the app at 0x10000, the second-stage bootloader at 0x1000): a 24-byte header
  (magic 0xE9, segment count, SPI mode, size|speed, entry point, then WP pin, chip id, chip
  revision range, hash_appended flag); segments, each an 8-byte (load address, length) header
  plus data; zero padding so that a checksum byte (0xEF XOR all segment data) ends a 16-byte
  block; then, if hash_appended, the SHA-256 of everything before it.
* **App descriptor** (esp_app_desc_t): 256 bytes opening the first (DROM) segment at file
  offset 0x20, magic 0xABCD5432: version, project name, build time, IDF version, ELF hash.
* **Partition table** at 0x8000: 32-byte entries (magic AA 50), an MD5 row (EB EB) over them,
  0xFF up to 0xC00 bytes.
* **otadata**: two 4 KB sectors, each opening with a 32-byte esp_ota_select_entry_t; the valid
  entry with the larger sequence number picks the OTA slot the bootloader runs.

Parsers raise FirmwareFormatError naming the first malformed field and its flash offset.
"""

import hashlib
import random
import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum

from ota_rig.errors import RigError

BOOTLOADER_OFFSET = 0x1000
PARTITION_TABLE_OFFSET = 0x8000
OTADATA_OFFSET = 0xE000
APP_OFFSET = 0x10000
FLASH_SIZE = 4 * 1024 * 1024
IMAGE_MAGIC = 0xE9
APP_DESC_MAGIC = 0xABCD5432
OTADATA_SECTOR = 0x1000

_HEADER = struct.Struct("<BBBBIBBBBHBHH4sB")  # common 8 bytes + extended 16 bytes
_SEGMENT_HEADER = struct.Struct("<II")  # load address, data length
_DESCRIPTOR = struct.Struct("<II8s32s32s16s16s32s32sHHB3s72s")
_DESC_STRINGS = (  # the char arrays, in order
    ("version", 32), ("project_name", 32), ("time", 16), ("date", 16), ("idf_version", 32)
)
_ENTRY = struct.Struct("<2sBBII16sI")  # magic, type, subtype, offset, size, label, flags
_OTA_ENTRY = struct.Struct("<I20sII")  # seq, label, state, crc
_FIRST_SEGMENT_DATA = _HEADER.size + _SEGMENT_HEADER.size  # 0x20, where the descriptor sits
_MAX_SEGMENTS = 16
_WP_PIN_DISABLED = 0xEE
_CHECKSUM_SEED = 0xEF
_MMU_PAGE = 0x10000  # flash is mapped into DROM/IROM in 64 KB pages
_APP_SLOT_SIZE = 0x140000
_TABLE_SIZE = 0xC00
_ENTRY_MAGIC = b"\xaa\x50"
_MD5_MAGIC = b"\xeb\xeb"
_ERASED_SEQ = 0xFFFFFFFF


class FirmwareFormatError(RigError, ValueError):
    """One malformed field: `field` names it, `offset` is its absolute (flash) offset."""

    def __init__(self, field: str, offset: int, problem: str) -> None:
        super().__init__(f"{field} at offset 0x{offset:x}: {problem}")
        self.field, self.offset, self.problem = field, offset, problem


def _need(data: bytes, start: int, size: int, field: str, at: int) -> None:
    """Raise unless `size` bytes exist at data[start]; `at` is the offset to report."""
    left = max(len(data) - start, 0)
    if size > left:
        problem = f"runs past the end of the data (needs 0x{size:x} bytes, 0x{left:x} left)"
        raise FirmwareFormatError(field, at, problem)


def _c_string(name: str, text: str, size: int) -> bytes:
    """`text` for a NUL-terminated char[size]: at most size - 1 bytes of UTF-8."""
    raw = text.encode()
    if len(raw) >= size:
        raise ValueError(f"{name} {text!r} is {len(raw)} bytes; char[{size}] holds {size - 1}")
    return raw


def _text(raw: bytes) -> str:
    """A C string field: the bytes before the first NUL."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


@dataclass(frozen=True)
class AppDescriptor:
    """esp_app_desc_t (256 bytes).

    magic u32, secure_version u32, 8 reserved bytes, then char arrays version[32],
    project_name[32], time[16], date[16], idf_ver[32], the 32-byte ELF SHA-256 (descriptor
    offset 0x90, file offset 0xB0), then min_efuse_blk_rev_full u16, max_efuse_blk_rev_full
    u16, mmu_page_size u8 (log2) and reserved zeros. Before ESP-IDF 5.4 those three fields are
    reserved zeros too (IDF 4.4, 5.1 and 5.3 headers; esptool 5's app-descriptor format).
    esptool image-info prints it as "Application Information".

    In an arduino-cli build, the core's precompiled libraries fill it, not the sketch
    (ota_rig.device.profiles.RealBuild has what each core writes).
    """

    version: str
    project_name: str
    time: str = "12:00:00"
    date: str = "Nov 21 2026"
    idf_version: str = "v4.4.6"
    secure_version: int = 0
    elf_sha256: bytes = bytes(32)
    min_efuse_blk_rev_full: int = 0
    max_efuse_blk_rev_full: int = 0
    mmu_page_size: int = 0

    def to_bytes(self) -> bytes:
        if len(self.elf_sha256) != 32:
            raise ValueError(f"elf_sha256 must be 32 bytes, got {len(self.elf_sha256)}")
        strings = [_c_string(name, getattr(self, name), size) for name, size in _DESC_STRINGS]
        return _DESCRIPTOR.pack(
            APP_DESC_MAGIC, self.secure_version, bytes(8), *strings, self.elf_sha256,
            self.min_efuse_blk_rev_full, self.max_efuse_blk_rev_full, self.mmu_page_size, bytes(3), bytes(72),
        )

    @classmethod
    def from_bytes(cls, raw: bytes, offset: int = 0) -> "AppDescriptor":
        """Decode raw[0:256]; `offset` (where raw starts in flash) only labels errors."""
        _need(raw, 0, _DESCRIPTOR.size, "app descriptor", offset)
        magic, secure, _, *strings, sha, min_blk, max_blk, mmu_page, _, _ = _DESCRIPTOR.unpack_from(raw)
        if magic != APP_DESC_MAGIC:
            problem = f"expected 0x{APP_DESC_MAGIC:08x}, found 0x{magic:08x}"
            raise FirmwareFormatError("app descriptor magic", offset, problem)
        version, project_name, time, date, idf_version = map(_text, strings)  # the five of _DESC_STRINGS
        return cls(version, project_name, time, date, idf_version, secure_version=secure, elf_sha256=sha,
                   min_efuse_blk_rev_full=min_blk, max_efuse_blk_rev_full=max_blk, mmu_page_size=mmu_page)


@dataclass(frozen=True)
class Segment:
    """Data the bootloader copies to RAM, or maps from flash, at `load_addr`."""

    load_addr: int
    data: bytes

    def __repr__(self) -> str:
        return f"Segment(load_addr=0x{self.load_addr:08x}, {len(self.data)} bytes)"


def xor_checksum(data: bytes, seed: int = _CHECKSUM_SEED) -> int:
    """The ESP checksum: `seed` (0xEF) XOR every byte. Images and the serial loader's data
    blocks both use it. Folds the data, read as one integer, in halves down to one byte."""
    value, width = int.from_bytes(data, "little"), len(data)
    while width > 1:
        width = (width + 1) // 2
        value = (value >> (8 * width)) ^ (value & ((1 << (8 * width)) - 1))
    return seed ^ value


def _checksum(segments: tuple[Segment, ...]) -> int:
    """The image checksum: 0xEF XOR every byte of segment data (not headers or padding)."""
    result = _CHECKSUM_SEED
    for segment in segments:
        result = xor_checksum(segment.data, result)
    return result


def _checksum_position(end_of_segments: int) -> int:
    """The checksum byte follows zero padding so that it is the last byte of a 16-byte block."""
    return end_of_segments + (15 - end_of_segments) % 16


@dataclass(frozen=True)
class Image:
    """An ESP32 app or bootloader image (esp_image_header_t plus segments).

    flash_mode: QIO 0, QOUT 1, DIO 2, DOUT 3. flash_size_freq (header byte 3): size in the
    high nibble (1MB 0x0, 2MB 0x1, 4MB 0x2, ...), speed in the low one (40m 0x0, 80m 0xF).
    Chip revisions are major * 100 + minor; 0xFFFF (esptool elf2image's default, what Arduino
    app images carry) means "no upper limit". `length` and `sha256` are filled in by
    parse_image and do not take part in comparisons.
    """

    segments: tuple[Segment, ...]
    entry: int
    flash_mode: int = 2
    flash_size_freq: int = 0x20
    chip_id: int = 0
    min_chip_rev_full: int = 0
    max_chip_rev_full: int = 0xFFFF
    hash_appended: bool = True
    length: int = field(default=0, compare=False)
    sha256: bytes = field(default=b"", compare=False, repr=False)

    def to_bytes(self) -> bytes:
        if len(self.segments) > _MAX_SEGMENTS:
            raise ValueError(f"{len(self.segments)} segments, at most {_MAX_SEGMENTS} allowed")
        header = _HEADER.pack(
            IMAGE_MAGIC, len(self.segments), self.flash_mode, self.flash_size_freq, self.entry,
            _WP_PIN_DISABLED, 0, 0, 0, self.chip_id, self.min_chip_rev_full // 100,
            self.min_chip_rev_full, self.max_chip_rev_full, bytes(4), int(self.hash_appended),
        )  # fmt: skip
        body = header + b"".join(
            _SEGMENT_HEADER.pack(s.load_addr, len(s.data)) + s.data for s in self.segments
        )
        padding = bytes(_checksum_position(len(body)) - len(body))
        image = body + padding + bytes([_checksum(self.segments)])
        return image + hashlib.sha256(image).digest() if self.hash_appended else image

    @property
    def descriptor(self) -> AppDescriptor | None:
        """The app descriptor opening the first segment, if that starts with its magic."""
        if not self.segments or self.segments[0].data[:4] != struct.pack("<I", APP_DESC_MAGIC):
            return None
        return AppDescriptor.from_bytes(self.segments[0].data, _FIRST_SEGMENT_DATA)

    @property
    def rodata(self) -> bytes:
        """The first segment after the descriptor (including build_app_image's 4-byte padding)."""
        return self.segments[0].data[_DESCRIPTOR.size :] if self.descriptor else b""


def parse_image(data: bytes, base: int = 0) -> Image:
    """Parse and verify the image at data[0]; bytes after it are ignored (flash reads include
    them) and `base` (its flash address) is added to every offset in error messages.

    Checks, in order: header length, magic, segment count <= 16, hash_appended in (0, 1), each
    segment header and data inside `data`, checksum, appended SHA-256 (if hash_appended)."""
    data = bytes(data)
    _need(data, 0, _HEADER.size, "image header", base)
    (magic, count, mode, size_freq, entry, _, _, _, _, chip_id, _, min_rev, max_rev, _, hashed) = (
        _HEADER.unpack_from(data)
    )
    if magic != IMAGE_MAGIC:
        problem = f"expected 0x{IMAGE_MAGIC:02x}, found 0x{magic:02x}"
        raise FirmwareFormatError("image magic", base, problem)
    if count > _MAX_SEGMENTS:
        problem = f"{count} segments, at most {_MAX_SEGMENTS} allowed"
        raise FirmwareFormatError("image segment count", base + 1, problem)
    if hashed not in (0, 1):
        problem = f"expected 0 or 1, found 0x{hashed:02x}"
        raise FirmwareFormatError("image hash_appended flag", base + _HEADER.size - 1, problem)
    segments, pos = [], _HEADER.size
    for index in range(count):
        _need(data, pos, _SEGMENT_HEADER.size, f"segment {index} header", base + pos)
        load_addr, size = _SEGMENT_HEADER.unpack_from(data, pos)
        pos += _SEGMENT_HEADER.size
        _need(data, pos, size, f"segment {index} length", base + pos - 4)
        segments.append(Segment(load_addr, data[pos : pos + size]))
        pos += size
    checksum_at = _checksum_position(pos)
    _need(data, pos, checksum_at + 1 - pos, "image checksum", base + checksum_at)
    calculated = _checksum(tuple(segments))
    if data[checksum_at] != calculated:
        problem = f"stored 0x{data[checksum_at]:02x}, calculated 0x{calculated:02x}"
        raise FirmwareFormatError("image checksum", base + checksum_at, problem)
    end, digest = checksum_at + 1, b""
    if hashed:
        _need(data, end, 32, "image hash", base + end)
        digest = data[end : end + 32]
        if hashlib.sha256(data[:end]).digest() != digest:
            raise FirmwareFormatError("image hash", base + end, "SHA-256 does not match the image")
        end += 32
    fields = (entry, mode, size_freq, chip_id, min_rev, max_rev, bool(hashed), end, digest)
    return Image(tuple(segments), *fields)


def _zipf_table(alphabet: bytes) -> bytes:
    """A bytes.translate table sending uniform random bytes to `alphabet`, earlier symbols
    far more often (weight 1/rank^1.2), so the output has the low entropy of machine code."""
    weights = [1 / (rank + 1) ** 1.2 for rank in range(len(alphabet))]
    scale = 256 / sum(weights)
    table = b"".join(bytes([s]) * max(1, round(w * scale)) for s, w in zip(alphabet, weights, strict=True))
    return table[:256].ljust(256, alphabet[:1])


# Per-byte-lane alphabets: Xtensa 24-bit instructions (op0/op1 byte, register nibbles,
# immediates) and 32-bit data words (low bytes vary, high bytes are 0x00 or 0x3F/0x40 pointers).
_CODE_LANES = tuple(map(_zipf_table, (
    bytes([0x22, 0x32, 0x0C, 0x81, 0xE0, 0x65, 0xA5, 0x25, 0x1C, 0x42, 0x52, 0x62, 0x38, 0x28])
    + bytes(range(0x16, 0xC0, 0x10)) + bytes(range(0x20, 0xA0, 0x10)),
    bytes(range(0x11, 0xFF, 0x11)) + bytes([0x21, 0x31, 0x41, 0x12, 0x13, 0x23, 0x24, 0x1A, 0xA1]),
    bytes([0, 1, 2, 4, 8, 0x10, 0x20, 0x40, 0x80, 0xFF, 0xFE, 0xFC, 0xF0, 0x0C, 0x18, 0x1C, 0x24])
    + bytes(range(0x81, 0xFF, 7)),
)))  # fmt: skip
_DATA_LANES = tuple(map(_zipf_table, (
    bytes(range(0, 256, 4)) + bytes(range(1, 256, 4)),
    bytes([0, 0x10, 0x20, 0x01, 0x02, 0x80, 0xFF, 0x0D, 0x0E]) + bytes(range(0x30, 0xF0, 3)),
    bytes([0x00, 0x40, 0x0D, 0xFB, 0x08, 0xF4, 0x01, 0xFF, 0x42, 0x0E]),
    bytes([0x00, 0x3F, 0x40, 0xFF, 0x01]),
)))  # fmt: skip
_ENTRY_A1_32, _RETW_N = b"\x36\x41\x00", b"\x1d\xf0"


def _lanes(rng: random.Random, length: int, lanes: tuple[bytes, ...]) -> bytearray:
    """`length` bytes whose i-th byte is drawn through lanes[i % len(lanes)]."""
    count = -(-length // len(lanes))
    out = bytearray(count * len(lanes))
    for lane, table in enumerate(lanes):
        out[lane :: len(lanes)] = rng.randbytes(count).translate(table)
    return out[:length]


def _pseudo_code(rng: random.Random, length: int) -> bytes:
    """Code-like filler: functions of 48-400 bytes, each `entry a1, 32` ... `retw.n`."""
    code, pos = _lanes(rng, length, _CODE_LANES), 0
    while pos + 400 <= length:
        step = rng.randrange(48, 400) & ~3
        code[pos : pos + 3] = _ENTRY_A1_32
        code[pos + step - 4 : pos + step] = _RETW_N + bytes(2)
        pos += step
    return bytes(code)


def _pseudo_data(rng: random.Random, length: int) -> bytes:
    """Data-like filler: 32-bit words of small numbers and RAM/flash pointers."""
    return bytes(_lanes(rng, length, _DATA_LANES))


_DROM_ADDR, _DRAM_ADDR, _IRAM_ADDR, _IROM_ADDR = 0x3F400020, 0x3FFB0000, 0x40080000, 0x400D0020
_APP_ENTRY = _IRAM_ADDR + 0x1000
_MIN_RAM = 0x2000  # keeps the entry point inside the IRAM segment
_DEFAULT_CODE = 0x6000


def _code_length(code_at: int, size: int) -> int:
    """IROM data length so the image (code from file offset `code_at`, padding, checksum,
    SHA-256) ends within 16 bytes below `size`; the default when size is 0."""
    if not size:
        return _DEFAULT_CODE
    length = (size - 32 - code_at) // 16 * 16 - 4  # 3 padding bytes + checksum end the block
    if length < _DEFAULT_CODE:
        raise ValueError(f"size {size} is too small: the code segment starts at 0x{code_at:x}")
    return length


def build_app_image(descriptor: AppDescriptor, rodata: bytes = b"", size: int = 0, *,
                    flash_mode: int = 2, flash_size_freq: int = 0x20) -> bytes:
    """A realistic Arduino-style app image, laid out the way esptool elf2image does it.

    Segment 0 (DROM, 0x3F400020) = descriptor + rodata padded to 4. DRAM (0x3FFB0000) and IRAM
    (0x40080000) segments follow, sized to fill the file up to the IROM code segment
    (0x400D0020): the bootloader maps flash in 64 KB MMU pages, so that segment's data must
    sit at a file offset congruent to its load address modulo 0x10000. Contents are
    deterministic code/data-like bytes seeded by the descriptor and compress with zlib to
    about 60%. size > 0 grows the code so the image is within 16 bytes below `size`;
    ValueError if the image would not fit the 0x140000-byte OTA slot. The header's flash mode
    and size/frequency byte are elf2image's --flash_mode/--flash_freq/--flash_size."""
    header = descriptor.to_bytes()
    rng = random.Random(hashlib.sha256(header + rodata).digest())
    drom = header + rodata + bytes(-len(rodata) % 4)
    ram_at = _FIRST_SEGMENT_DATA + len(drom)
    gap = (_IROM_ADDR - ram_at - 3 * _SEGMENT_HEADER.size) % _MMU_PAGE
    gap += _MMU_PAGE if gap < _MIN_RAM else 0
    dram = gap // 4 & ~3
    code_at = ram_at + 3 * _SEGMENT_HEADER.size + gap
    segments = (
        Segment(_DROM_ADDR, drom),
        Segment(_DRAM_ADDR, _pseudo_data(rng, dram)),
        Segment(_IRAM_ADDR, _pseudo_code(rng, gap - dram)),
        Segment(_IROM_ADDR, _pseudo_code(rng, _code_length(code_at, size))),
    )
    image = Image(segments, entry=_APP_ENTRY, flash_mode=flash_mode, flash_size_freq=flash_size_freq).to_bytes()
    if len(image) > _APP_SLOT_SIZE:
        raise ValueError(f"app image is {len(image)} bytes; the OTA slot holds {_APP_SLOT_SIZE}")
    return image


def build_bootloader_image(segments: tuple[tuple[int, int], ...], entry: int, *, flash_mode: int = 2,
                           flash_size_freq: int = 0x20) -> bytes:
    """A second-stage bootloader image with segments of these (load address, length) and this
    entry point, SHA-256 appended and no descriptor: what elf2image makes of a bootloader ELF.
    The first segment is data (DRAM), the others code; their contents are synthetic but fixed,
    so only the layout (what the ROM prints while loading it) is the real one's."""
    rng = random.Random(repr((segments, entry)).encode())
    made = tuple(Segment(address, (_pseudo_data if index == 0 else _pseudo_code)(rng, length))
                 for index, (address, length) in enumerate(segments))
    return Image(made, entry=entry, flash_mode=flash_mode, flash_size_freq=flash_size_freq).to_bytes()


@dataclass(frozen=True)
class Partition:
    """One partition table entry. type: app 0x00, data 0x01; flags bit 0 = encrypted."""

    name: str
    type: int
    subtype: int
    offset: int
    size: int
    flags: int = 0


DEFAULT_PARTITIONS_CSV = """\
# Name,   Type, SubType, Offset,  Size, Flags
nvs,      data, nvs,     0x9000,  0x5000,
otadata,  data, ota,     0xe000,  0x2000,
app0,     app,  ota_0,   0x10000, 0x140000,
app1,     app,  ota_1,   0x150000,0x140000,
spiffs,   data, spiffs,  0x290000,0x160000,
coredump, data, coredump,0x3F0000,0x10000,
"""

_TYPES = {"app": 0x00, "data": 0x01}
_SUBTYPES = {
    0x00: {"factory": 0x00, "test": 0x20} | {f"ota_{n}": 0x10 + n for n in range(16)},
    0x01: {"ota": 0x00, "phy": 0x01, "nvs": 0x02, "coredump": 0x03, "nvs_keys": 0x04,
           "efuse": 0x05, "undefined": 0x06, "fat": 0x81, "spiffs": 0x82, "littlefs": 0x83},
}  # fmt: skip
_FLAGS = {"encrypted": 0x01, "readonly": 0x02}


def _csv_int(text: str, words: dict[str, int]) -> int:
    """A CSV value as gen_esp32part reads it: a keyword, 0x-hex or decimal, K/M suffix."""
    text = text.strip().lower()
    if text in words:
        return words[text]
    for suffix, scale in (("k", 1024), ("m", 1024 * 1024)):
        if text.endswith(suffix):
            return _csv_int(text[:-1], {}) * scale
    return int(text, 0)


@dataclass(frozen=True)
class PartitionTable:
    """The partition table at 0x8000: what gen_esp32part writes and the bootloader reads."""

    partitions: tuple[Partition, ...]

    @classmethod
    def from_csv(cls, text: str) -> "PartitionTable":
        """Parse `name, type, subtype, offset, size[, flags]` lines ('#' starts a comment).
        An empty offset means the next free one (data aligned to 4 KB, app to 64 KB), the
        first being 0x9000, right after the table's own 4 KB sector."""
        partitions: list[Partition] = []
        next_free = PARTITION_TABLE_OFFSET + 0x1000
        for number, line in enumerate(text.splitlines(), 1):
            fields = [f.strip() for f in line.split("#", 1)[0].split(",")]
            if fields == [""]:
                continue
            try:
                if len(fields) < 5:
                    raise ValueError("expected name, type, subtype, offset, size[, flags]")
                name, kind, sub, offset_text, size_text, flag_text = (fields + [""])[:6]
                ptype = _csv_int(kind, _TYPES)
                align = _MMU_PAGE if ptype == _TYPES["app"] else 0x1000
                auto = -(-next_free // align) * align
                offset = _csv_int(offset_text, {}) if offset_text else auto
                if offset < next_free:
                    raise ValueError(f"offset 0x{offset:x} overlaps the partition before")
                if offset % align:
                    raise ValueError(f"offset 0x{offset:x} is not 0x{align:x}-aligned")
                flags = sum(_FLAGS[word.strip()] for word in flag_text.split(":") if word.strip())
                size = _csv_int(size_text, {})
                subtype = _csv_int(sub, _SUBTYPES.get(ptype, {}))
            except (ValueError, KeyError) as exc:
                raise ValueError(f"partition CSV line {number} ({line.strip()!r}): {exc}") from exc
            partitions.append(Partition(name, ptype, subtype, offset, size, flags))
            next_free = offset + size
        return cls(tuple(partitions))

    def to_bytes(self) -> bytes:
        """32-byte entries, the MD5 row (EB EB, 14 x FF, MD5 of the entries), FF to 0xC00."""
        for p in self.partitions:
            _c_string("partition name", p.name, 17)
        entries = b"".join(
            _ENTRY.pack(_ENTRY_MAGIC, p.type, p.subtype, p.offset, p.size, p.name.encode(), p.flags)
            for p in self.partitions
        )
        table = entries + _MD5_MAGIC + b"\xff" * 14 + hashlib.md5(entries).digest()
        if len(table) >= _TABLE_SIZE:  # the bootloader needs an erased row to end the table
            raise ValueError(f"{len(self.partitions)} partitions do not fit in the table")
        return table.ljust(_TABLE_SIZE, b"\xff")

    @classmethod
    def from_bytes(cls, data: bytes, base: int = PARTITION_TABLE_OFFSET) -> "PartitionTable":
        """Read entries the way the IDF bootloader does, up to the first erased row (magic,
        type and subtype all 0xFF); an MD5 row must match all bytes before it."""
        partitions: list[Partition] = []
        for pos in range(0, _TABLE_SIZE, _ENTRY.size):
            name = f"partition entry {len(partitions)}"
            _need(data, pos, _ENTRY.size, name, base + pos)
            magic, ptype, subtype, offset, size, label, flags = _ENTRY.unpack_from(data, pos)
            if magic == b"\xff\xff" and ptype == subtype == 0xFF:
                return cls(tuple(partitions))
            if magic == _MD5_MAGIC:
                if data[pos + 16 : pos + 32] != hashlib.md5(data[:pos]).digest():
                    problem = "does not match the entries"
                    raise FirmwareFormatError("partition table MD5", base + pos + 16, problem)
                continue
            if magic != _ENTRY_MAGIC:
                problem = f"expected aa 50, found {magic.hex(' ')}"
                raise FirmwareFormatError(f"{name} magic", base + pos, problem)
            partitions.append(Partition(_text(label), ptype, subtype, offset, size, flags))
        raise FirmwareFormatError(
            "partition table", base + _TABLE_SIZE, "no terminating 0xFF row within 0xc00 bytes"
        )

    def find(self, name: str) -> Partition:
        for partition in self.partitions:
            if partition.name == name:
                return partition
        known = ", ".join(p.name for p in self.partitions) or "none"
        raise KeyError(f"no partition named {name!r} (the table has: {known})")

    @property
    def ota_slots(self) -> tuple[Partition, ...]:
        """App partitions ota_0..ota_15 (subtypes 0x10-0x1F), in subtype order."""
        slots = (p for p in self.partitions if p.type == 0x00 and 0x10 <= p.subtype <= 0x1F)
        return tuple(sorted(slots, key=lambda p: p.subtype))

    @property
    def otadata(self) -> Partition | None:
        """The data/ota partition holding the two otadata sectors, if any."""
        return next((p for p in self.partitions if (p.type, p.subtype) == (0x01, 0x00)), None)


class OtaState(IntEnum):
    """esp_ota_img_states_t: rollback state of the app an otadata entry selects."""

    NEW = 0
    PENDING_VERIFY = 1
    VALID = 2
    INVALID = 3
    ABORTED = 4
    UNDEFINED = 0xFFFFFFFF


def _ota_crc(seq: int) -> int:
    """The entry CRC: CRC-32 of the 4 seq bytes only, started at 0xFFFFFFFF (ROM crc32_le)."""
    return zlib.crc32(struct.pack("<I", seq), 0xFFFFFFFF)


@dataclass(frozen=True)
class OtaEntry:
    """esp_ota_select_entry_t (32 bytes): seq u32, label[20] (unused, 0xFF), state u32, crc u32.

    The bootloader boots OTA slot (seq - 1) mod slot count. `state` is a plain int when
    flash holds a value outside OtaState; crc None is replaced by the correct CRC."""

    seq: int
    state: OtaState | int = OtaState.UNDEFINED
    crc: int | None = None

    def __post_init__(self) -> None:
        if self.crc is None:
            object.__setattr__(self, "crc", _ota_crc(self.seq))

    def to_bytes(self) -> bytes:
        return _OTA_ENTRY.pack(self.seq, b"\xff" * 20, self.state, self.crc)

    @classmethod
    def from_bytes(cls, raw: bytes) -> "OtaEntry":
        _need(raw, 0, _OTA_ENTRY.size, "otadata entry", 0)
        seq, _, state, crc = _OTA_ENTRY.unpack_from(raw)
        try:
            return cls(seq, OtaState(state), crc)
        except ValueError:
            return cls(seq, state, crc)

    @property
    def is_whole(self) -> bool:
        """Erased, or a seq with its CRC: not an entry a power cut left half-programmed."""
        return self.to_bytes() == b"\xff" * _OTA_ENTRY.size or self.crc == _ota_crc(self.seq)

    @property
    def is_valid(self) -> bool:
        """What the bootloader accepts: seq written, state not INVALID/ABORTED, CRC right."""
        return (
            self.seq != _ERASED_SEQ
            and self.state not in (OtaState.INVALID, OtaState.ABORTED)
            and self.crc == _ota_crc(self.seq)
        )


def _sector(entry: OtaEntry) -> bytes:
    return entry.to_bytes().ljust(OTADATA_SECTOR, b"\xff")


def boot_app0() -> bytes:
    """boot_app0.bin (8192 bytes), flashed at 0xe000 by Arduino uploads: seq 1 (boot ota_0)
    in sector 0; seq 0 with CRC 0xFFFFFFFF, otherwise erased, in sector 1."""
    return _sector(OtaEntry(1)) + _sector(OtaEntry(0))


def ota_entries(otadata: bytes) -> tuple[OtaEntry, OtaEntry]:
    """The entries opening the two otadata sectors."""
    if len(otadata) < 2 * OTADATA_SECTOR:
        raise ValueError(f"otadata is two 4 KB sectors (0x2000 bytes), got 0x{len(otadata):x}")
    return OtaEntry.from_bytes(otadata), OtaEntry.from_bytes(otadata[OTADATA_SECTOR:])


def active_sector(entries: tuple[OtaEntry, OtaEntry]) -> int | None:
    """The sector whose valid entry has the larger seq (sector 0 on a tie), None if neither."""
    valid = [index for index, entry in enumerate(entries) if entry.is_valid]
    return max(valid, key=lambda index: entries[index].seq) if valid else None


def active_ota_slot(otadata: bytes, slot_count: int) -> int | None:
    """Which OTA slot the bootloader boots: from the two sectors (8192 bytes), the valid entry
    with the larger seq wins; slot = (seq - 1) % slot_count in uint32 arithmetic, as in IDF;
    None when neither entry is valid."""
    if slot_count < 1:
        raise ValueError("slot_count must be at least 1")
    entries = ota_entries(otadata)
    sector = active_sector(entries)
    return None if sector is None else ((entries[sector].seq - 1) & 0xFFFFFFFF) % slot_count


def select_ota_slot(
    otadata: bytes, slot: int, slot_count: int, state: OtaState = OtaState.NEW
) -> tuple[int, bytes]:
    """What esp_ota_set_boot_partition writes to make `slot` the boot target: returns (sector
    index 0 or 1, 32-byte entry). It goes into the sector that is NOT currently active (if
    neither is valid: sector 0 with seq slot + 1), with the smallest seq >= the active seq that
    maps to `slot` -- as in IDF, re-selecting the running slot rewrites the same seq."""
    if not 0 <= slot < slot_count:
        raise ValueError(f"slot {slot} out of range for {slot_count} OTA slots")
    entries = ota_entries(otadata)
    sector = active_sector(entries)
    if sector is None:
        return 0, OtaEntry(slot + 1, state).to_bytes()
    current, seq = entries[sector].seq, (slot + 1) % slot_count
    seq += -(-max(current - seq, 0) // slot_count) * slot_count
    return 1 - sector, OtaEntry(seq, state).to_bytes()


def restate(otadata: bytes, sector: int, state: OtaState) -> bytes:
    """The entry of `sector` rewritten with `state`, same seq and CRC: what the bootloader
    (NEW -> PENDING_VERIFY, PENDING_VERIFY -> ABORTED) and esp_ota_mark_app_valid_cancel_rollback()
    (-> VALID) write back into that sector, after erasing it."""
    entry = ota_entries(otadata)[sector]
    return OtaEntry(entry.seq, state, entry.crc).to_bytes()
