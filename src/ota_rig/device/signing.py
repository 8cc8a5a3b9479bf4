"""Signed firmware releases, as the reference sketch checks them before it writes a byte.

The device must refuse an older release even when it is validly signed, so the version it
compares must be one the sketch controls and the signature covers. The app descriptor's version
is neither: an arduino-cli build carries the lib-builder's version there, the same for every
sketch (shared/reference/esp32-ota-device.md, 13.6). So a release carries a signed manifest,
sent before the image:

    signed release = manifest (256 bytes) + app image
    manifest       = statement (128 bytes) + signature area (128 bytes)
    statement      = magic "OTA-MANIFEST-V1\\0" (16 bytes)
                     version      char[32], NUL-terminated: the firmware version the image was
                                  built as (the sketch's OTA_FIRMWARE_VERSION)
                     image_size   u32, little-endian: the app image's length in bytes
                     image_sha256 32 bytes: SHA-256 of the app image
                     reserved     zeros up to 128 bytes (signed too)
    signature area = ECDSA P-256 over SHA-256(statement), DER-encoded
                     (SEQUENCE { INTEGER r, INTEGER s }, 70 to 72 bytes), then zeros

The device reads the manifest first: no manifest, no signature or one that does not verify with
the key built into the sketch, or an older version, and it hangs up before Update.begin(), so
nothing is written to flash. Otherwise it streams the image into the next OTA slot while hashing
it, and lets Update.end() make that slot bootable only if the hash is the signed one.

The version comes from the build (Artifacts.version), so a release is signed as what it was
built as:

    keys = KeyPair.load_or_create(folder)        # folder/private.pem, folder/public.pem
    config = SketchConfig(..., signing_key=keys.public_pem)
    server_file = sign(app_bytes, artifacts.version, keys)

This is the rig's own format, not arduino-esp32 3.x's `Update.installSignature()` one (a 512-byte
signature after the image, tools/bin_signing.py): that signs the image alone, whose only version
field is the lib-builder's, and is read only after the whole image is written.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ota_rig.device import firmware

MANIFEST_MAGIC = b"OTA-MANIFEST-V1\0"
MANIFEST_SIZE = 256
STATEMENT_SIZE = 128  # the signed part; the signature area follows it
VERSION_SIZE = 32  # char[32]: at most 31 bytes of version and a NUL
_STATEMENT = struct.Struct(f"<{len(MANIFEST_MAGIC)}s{VERSION_SIZE}sI32s")
VERSION_AT = len(MANIFEST_MAGIC)
IMAGE_SIZE_AT = VERSION_AT + VERSION_SIZE
IMAGE_SHA256_AT = IMAGE_SIZE_AT + 4
PRIVATE_PEM, PUBLIC_PEM = "private.pem", "public.pem"


@dataclass(frozen=True)
class KeyPair:
    """A P-256 signing key and its public half as PEM text (SubjectPublicKeyInfo, the form
    mbedtls_pk_parse_public_key reads)."""

    private_key: ec.EllipticCurvePrivateKey
    public_pem: str

    @classmethod
    def load_or_create(cls, folder: Path) -> "KeyPair":
        """The pair kept in `folder` as private.pem (PKCS#8, unencrypted) and public.pem; made
        and written there first if the folder holds none."""
        folder = Path(folder)
        private = folder / PRIVATE_PEM
        if not private.exists():
            folder.mkdir(parents=True, exist_ok=True)
            key = ec.generate_private_key(ec.SECP256R1())
            private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
            (folder / PUBLIC_PEM).write_bytes(_public_pem(key))
        loaded = serialization.load_pem_private_key(private.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey) or loaded.curve.name != "secp256r1":
            raise ValueError(f"{private} is not a P-256 private key")
        return cls(loaded, _public_pem(loaded).decode())


def _public_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def check_public_key(pem: str) -> None:
    """ValueError unless `pem` is a P-256 public key in PEM (what the sketch can verify with)."""
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("the signing key is not a P-256 public key")


def statement(image: bytes, version: str) -> bytes:
    """The 128 signed bytes naming `image` as release `version`."""
    raw = version.encode()
    if not raw or len(raw) >= VERSION_SIZE or b"\0" in raw:
        raise ValueError(f"version {version!r} must be 1 to {VERSION_SIZE - 1} bytes without NUL")
    packed = _STATEMENT.pack(MANIFEST_MAGIC, raw, len(image), hashlib.sha256(image).digest())
    return packed.ljust(STATEMENT_SIZE, b"\0")


def sign(image: bytes, version: str, keys: KeyPair) -> bytes:
    """The signed release: the manifest for `image` as `version`, then `image`."""
    signed = statement(image, version)
    signature = keys.private_key.sign(signed, ec.ECDSA(hashes.SHA256()))
    return signed + signature.ljust(MANIFEST_SIZE - STATEMENT_SIZE, b"\0") + image


def reseal(image: bytes) -> bytes:
    """An app image whose segment data was edited, with its checksum and appended SHA-256 made
    right again, as esptool elf2image would have written them. ESP-IDF's image check then
    passes (ota_rig.device.firmware.parse_image agrees): only the signed hash can tell the edit.

    The checksum is 0xEF XOR every segment data byte, in the last byte of a 16-byte block after
    the segments; the SHA-256 (if header byte 23 says one is appended) covers everything up to
    and including the checksum."""
    data = bytearray(image)
    position, checksum = 24, 0xEF  # the segments follow the 24-byte image header
    for _ in range(data[1]):  # header byte 1: the segment count
        length = int.from_bytes(data[position + 4 : position + 8], "little")
        checksum = firmware.xor_checksum(bytes(data[position + 8 : position + 8 + length]), checksum)
        position += 8 + length
    position += (15 - position) % 16
    data[position] = checksum
    if data[23]:
        data[position + 1 : position + 33] = hashlib.sha256(data[: position + 1]).digest()
    return bytes(data)
