"""rig.signing writes arduino-esp32 3.x's signed-image format, and what the device reads back
(the twin's mirror of the sketch, on Mbed TLS) agrees with what cryptography wrote."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from mbedtls import pk

from rig import firmware
from rig.build import SketchConfig
from rig.signing import PRIVATE_PEM, PUBLIC_PEM, SIGNATURE_SIZE, KeyPair, check_public_key, reseal, sign
from rig.virtual.verified_update import compare_versions, signature_length

IMAGE = firmware.build_app_image(firmware.AppDescriptor(version="0.2", project_name="ota_https"))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return KeyPair.load_or_create(tmp_path_factory.mktemp("keys"))


def der_length(trailer: bytes) -> int:
    """A P-256 signature's DER length: SEQUENCE tag, one length byte (short form), contents."""
    return 2 + trailer[1]


def test_a_key_pair_is_written_once_and_read_back(tmp_path: Path) -> None:
    made = KeyPair.load_or_create(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [PRIVATE_PEM, PUBLIC_PEM]
    assert (tmp_path / PUBLIC_PEM).read_text() == made.public_pem
    assert made.public_pem.startswith("-----BEGIN PUBLIC KEY-----\n")
    again = KeyPair.load_or_create(tmp_path)
    assert again.public_pem == made.public_pem
    assert again.private_key.private_numbers() == made.private_key.private_numbers()


def test_the_signed_image_is_the_image_then_a_der_signature_zero_padded_to_512_bytes(keys: KeyPair) -> None:
    signed = sign(IMAGE, keys)
    assert len(signed) == len(IMAGE) + SIGNATURE_SIZE and signed[: len(IMAGE)] == IMAGE
    trailer = signed[len(IMAGE) :]
    length = der_length(trailer)
    assert trailer[0] == 0x30 and 70 <= length <= 72 and trailer[length:] == bytes(SIGNATURE_SIZE - length)
    decode_dss_signature(trailer[:length])  # SEQUENCE { INTEGER r, INTEGER s }, nothing left over
    public = serialization.load_pem_public_key(keys.public_pem.encode())
    public.verify(trailer[:length], IMAGE, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        public.verify(trailer[:length], IMAGE + b"\0", ec.ECDSA(hashes.SHA256()))


def test_the_device_finds_the_signature_and_mbed_tls_verifies_it(keys: KeyPair, tmp_path: Path) -> None:
    trailer = sign(IMAGE, keys)[len(IMAGE) :]
    assert signature_length(trailer) == der_length(trailer)
    key = pk.ECC.from_buffer(keys.public_pem.encode())
    assert key.verify(IMAGE, trailer[: signature_length(trailer)], "sha256")
    other = sign(IMAGE, KeyPair.load_or_create(tmp_path))[len(IMAGE) :]
    assert not key.verify(IMAGE, other[: signature_length(other)], "sha256")


@pytest.mark.parametrize("trailer", [
    IMAGE[-SIGNATURE_SIZE:],  # an unsigned image's own last 512 bytes
    bytes(SIGNATURE_SIZE),  # zeros
    b"\x30\x45" + bytes(0x45) + b"\x01" + bytes(SIGNATURE_SIZE - 0x48),  # something after the padding starts
    b"\x30\x82\x02\x00" + bytes(SIGNATURE_SIZE - 4),  # a length past the trailer
    b"\x30\x85" + bytes(SIGNATURE_SIZE - 2),  # a 5-byte length form, which Mbed TLS refuses
], ids=["image-bytes", "zeros", "not-zero-padded", "too-long", "length-form"])
def test_a_trailer_without_a_padded_der_sequence_is_unsigned(trailer: bytes) -> None:
    assert signature_length(trailer) == 0


def test_a_long_form_length_is_read_as_mbed_tls_reads_it() -> None:
    assert signature_length(b"\x30\x81\x46" + bytes(0x46) + bytes(SIGNATURE_SIZE - 0x49)) == 0x49


def test_reseal_makes_an_edited_image_pass_esp_idfs_check_again() -> None:
    edited = bytearray(IMAGE)
    at = len(IMAGE) - 32 - 16 - 100  # in the last segment's data
    edited[at] ^= 0x01
    with pytest.raises(firmware.FirmwareFormatError, match="image checksum"):
        firmware.parse_image(bytes(edited))
    resealed = reseal(bytes(edited))
    parsed = firmware.parse_image(resealed)
    assert parsed.length == len(IMAGE) and parsed.descriptor.version == "0.2"
    changed = [i for i, (a, b) in enumerate(zip(IMAGE, resealed)) if a != b]
    assert changed[0] == at and all(i >= len(IMAGE) - 33 for i in changed[1:])  # then checksum and hash only
    assert reseal(IMAGE) == IMAGE


def test_only_a_p256_public_key_is_built_in(keys: KeyPair) -> None:
    check_public_key(keys.public_pem)
    config = SketchConfig(version="0.1", update_url="https://ota.local/update", ca_bundle="", signing_key=keys.public_pem)
    assert '#define OTA_SIGNING_KEY "-----BEGIN PUBLIC KEY-----\\n' in config.header()
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    private = keys.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()).decode()
    for wrong in (p384, private, "not a key"):
        with pytest.raises(ValueError):
            SketchConfig(version="0.1", update_url="https://ota.local/update", ca_bundle="", signing_key=wrong)


@pytest.mark.parametrize(("a", "b", "order"), [
    ("0.1", "0.2", -1), ("0.10", "0.9", 1), ("1.0", "1", 0), ("1.0.0", "1.0", 0), ("2", "1.99", 1),
    ("1.2-rc1", "1.2", 0), ("", "0.1", -1), ("0.2", "0.2", 0),
])
def test_the_device_compares_versions_as_dotted_numbers(a: str, b: str, order: int) -> None:
    assert compare_versions(a, b) == order and compare_versions(b, a) == -order
