"""Signed firmware, as the reference sketch checks it before it lets an image boot.

The format is arduino-esp32 3.x's (tools/bin_signing.py; shared/reference/esp32-ota-device.md,
section 11), so the same server file also suits the 3.x core's own `Update.installSignature()`:

    signed image = app image + trailer (512 bytes)
    trailer      = signature + zero bytes up to 512
    signature    = ECDSA P-256 over SHA-256(app image), DER-encoded:
                   SEQUENCE { INTEGER r, INTEGER s }, 70 to 72 bytes

The device streams the app image into the next OTA slot while hashing it, then reads the
trailer: no DER SEQUENCE followed by zeros only means unsigned; otherwise the signature must
verify with the public key built into the sketch (`SketchConfig.signing_key`, PEM).

    keys = KeyPair.load_or_create(folder)        # folder/private.pem, folder/public.pem
    config = SketchConfig(..., signing_key=keys.public_pem)
    server_file = sign(app_bytes, keys)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from . import firmware

SIGNATURE_SIZE = 512  # bin_signing.py pads every signature to this (an RSA-4096 signature's size)
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
        key = serialization.load_pem_private_key(private.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError(f"{private} is not a P-256 private key")
        return cls(key, _public_pem(key).decode())


def _public_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def check_public_key(pem: str) -> None:
    """ValueError unless `pem` is a P-256 public key in PEM (what the sketch can verify with)."""
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("the signing key is not a P-256 public key")


def sign(image: bytes, keys: KeyPair) -> bytes:
    """`image` followed by its trailer: the DER signature, zero-padded to 512 bytes."""
    signature = keys.private_key.sign(image, ec.ECDSA(hashes.SHA256()))
    return image + signature.ljust(SIGNATURE_SIZE, b"\0")


def reseal(image: bytes) -> bytes:
    """An app image whose segment data was edited, with its checksum and appended SHA-256 made
    right again, as esptool elf2image would have written them. ESP-IDF's image check then
    passes (rig.firmware.parse_image agrees): only a signature can tell the edit.

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
