"""ota_rig.device.signing writes the signed-release format the sketch checks (a signed manifest, then the
image), and what the device reads back (the twin's mirror of the sketch, on Mbed TLS) agrees
with what cryptography wrote."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from ota_rig.build.artifacts import SKETCH_DIR
from ota_rig.device import firmware
from ota_rig.device.signing import (
    IMAGE_SHA256_AT,
    IMAGE_SIZE_AT,
    MANIFEST_MAGIC,
    MANIFEST_SIZE,
    PRIVATE_PEM,
    PUBLIC_PEM,
    STATEMENT_SIZE,
    VERSION_AT,
    VERSION_SIZE,
    KeyPair,
    check_public_key,
    reseal,
    sign,
    statement,
)
from ota_rig.device.sketch_config import SketchConfig
from ota_rig.virtual.verified_update import compare_versions, manifest_version, signature_length, signature_valid

IMAGE = firmware.build_app_image(firmware.AppDescriptor(version="0.2", project_name="ota_https"))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return KeyPair.load_or_create(tmp_path_factory.mktemp("keys"))


def der_length(area: bytes) -> int:
    """A P-256 signature's DER length: SEQUENCE tag, one length byte (short form), contents."""
    return 2 + area[1]


def test_a_key_pair_is_written_once_and_read_back(tmp_path: Path) -> None:
    made = KeyPair.load_or_create(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [PRIVATE_PEM, PUBLIC_PEM]
    assert (tmp_path / PUBLIC_PEM).read_text() == made.public_pem
    assert made.public_pem.startswith("-----BEGIN PUBLIC KEY-----\n")
    again = KeyPair.load_or_create(tmp_path)
    assert again.public_pem == made.public_pem
    assert again.private_key.private_numbers() == made.private_key.private_numbers()


def test_a_release_is_a_signed_manifest_then_the_image(keys: KeyPair) -> None:
    signed = sign(IMAGE, "0.2", keys)
    assert len(signed) == MANIFEST_SIZE + len(IMAGE) and signed[MANIFEST_SIZE:] == IMAGE
    manifest = signed[:MANIFEST_SIZE]
    assert manifest[:16] == b"OTA-MANIFEST-V1\0"
    assert manifest[16:48] == b"0.2".ljust(32, b"\0")
    assert int.from_bytes(manifest[48:52], "little") == len(IMAGE)
    assert manifest[52:84] == hashlib.sha256(IMAGE).digest()
    assert manifest[84:STATEMENT_SIZE] == bytes(STATEMENT_SIZE - 84)
    area = manifest[STATEMENT_SIZE:]
    length = der_length(area)
    assert area[0] == 0x30 and 70 <= length <= 72 and area[length:] == bytes(len(area) - length)
    decode_dss_signature(area[:length])  # SEQUENCE { INTEGER r, INTEGER s }, nothing left over
    public = serialization.load_pem_public_key(keys.public_pem.encode())
    public.verify(area[:length], manifest[:STATEMENT_SIZE], ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        public.verify(area[:length], statement(IMAGE, "0.3"), ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize("version", ["", "x" * 32, "0.1\0"])
def test_a_version_that_does_not_fit_the_manifest_is_refused(keys: KeyPair, version: str) -> None:
    with pytest.raises(ValueError, match="must be 1 to 31 bytes"):
        sign(IMAGE, version, keys)


def test_the_device_reads_the_manifest_and_verifies_it(keys: KeyPair, tmp_path: Path) -> None:
    """The twin's check (test_sketch_manifest.py runs the sketch's own C++ on real Mbed TLS)."""
    manifest = sign(IMAGE, "0.2", keys)[:MANIFEST_SIZE]
    area = manifest[STATEMENT_SIZE:]
    assert signature_length(area) == der_length(area)
    assert manifest_version(manifest) == "0.2"
    assert signature_valid(keys.public_pem, manifest[:STATEMENT_SIZE], area[: signature_length(area)])
    other = sign(IMAGE, "0.2", KeyPair.load_or_create(tmp_path))[STATEMENT_SIZE:MANIFEST_SIZE]
    assert not signature_valid(keys.public_pem, manifest[:STATEMENT_SIZE], other[: signature_length(other)])


AREA = MANIFEST_SIZE - STATEMENT_SIZE


@pytest.mark.parametrize("area", [
    IMAGE[:AREA],  # an unsigned image's own first bytes
    bytes(AREA),  # zeros
    b"\x30\x45" + bytes(0x45) + b"\x01" + bytes(AREA - 0x48),  # something after the padding starts
    b"\x30\x81\x80" + bytes(AREA - 3),  # a length past the area
    b"\x30\x85" + bytes(AREA - 2),  # a 5-byte length form, which Mbed TLS refuses
], ids=["image-bytes", "zeros", "not-zero-padded", "too-long", "length-form"])
def test_an_area_without_a_padded_der_sequence_is_unsigned(area: bytes) -> None:
    assert signature_length(area) == 0


def test_a_long_form_length_is_read_as_mbed_tls_reads_it() -> None:
    assert signature_length(b"\x30\x81\x46" + bytes(0x46) + bytes(AREA - 0x49)) == 0x49


def test_the_sketch_reads_the_manifest_where_signing_writes_it() -> None:
    """The sketch's constants (C) and ota_rig.device.signing's (Python) describe one format."""
    source = (SKETCH_DIR / "ota_https.ino").read_text()
    constants = dict(re.findall(r"static const \w+ (\w+) = (\d+);", source))
    assert {name: int(constants[name]) for name in ("MANIFEST_SIZE", "STATEMENT_SIZE", "VERSION_AT", "VERSION_SIZE",
                                                    "IMAGE_SIZE_AT", "IMAGE_SHA256_AT")} == {
        "MANIFEST_SIZE": MANIFEST_SIZE, "STATEMENT_SIZE": STATEMENT_SIZE, "VERSION_AT": VERSION_AT,
        "VERSION_SIZE": VERSION_SIZE, "IMAGE_SIZE_AT": IMAGE_SIZE_AT, "IMAGE_SHA256_AT": IMAGE_SHA256_AT}
    magic = re.search(r'static const char MANIFEST_MAGIC\[\] = "([^"]*)";', source).group(1)
    assert magic.encode() + b"\0" == MANIFEST_MAGIC


def test_reseal_makes_an_edited_image_pass_esp_idfs_check_again() -> None:
    edited = bytearray(IMAGE)
    at = len(IMAGE) - 32 - 16 - 100  # in the last segment's data
    edited[at] ^= 0x01
    with pytest.raises(firmware.FirmwareFormatError, match="image checksum"):
        firmware.parse_image(bytes(edited))
    resealed = reseal(bytes(edited))
    parsed = firmware.parse_image(resealed)
    assert parsed.length == len(IMAGE) and parsed.descriptor.version == "0.2"
    changed = [i for i, (a, b) in enumerate(zip(IMAGE, resealed, strict=True)) if a != b]
    assert changed[0] == at and all(i >= len(IMAGE) - 33 for i in changed[1:])  # then checksum and hash only
    assert reseal(IMAGE) == IMAGE


def test_only_a_p256_public_key_is_built_in(keys: KeyPair) -> None:
    check_public_key(keys.public_pem)
    config = SketchConfig(
        version="0.1", update_url="https://ota.local/update", ca_bundle="", signing_key=keys.public_pem
    )
    assert '#define OTA_SIGNING_KEY "-----BEGIN PUBLIC KEY-----\\n' in config.header()
    p384 = (
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    private = keys.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    for wrong in (p384, private, "not a key"):
        with pytest.raises(ValueError):
            SketchConfig(version="0.1", update_url="https://ota.local/update", ca_bundle="", signing_key=wrong)


@pytest.mark.parametrize(
    ("a", "b", "order"),
    [
        ("0.1", "0.2", -1),
        ("0.10", "0.9", 1),
        ("1.0", "1", 0),
        ("1.0.0", "1.0", 0),
        ("2", "1.99", 1),
        ("1.2-rc1", "1.2", 0),
        ("", "0.1", -1),
        ("0.2", "0.2", 0),
    ],
)
def test_the_device_compares_versions_as_dotted_numbers(a: str, b: str, order: int) -> None:
    assert compare_versions(a, b) == order and compare_versions(b, a) == -order
