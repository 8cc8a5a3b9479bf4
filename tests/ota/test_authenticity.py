"""Firmware authenticity: protect the firmware, not only the connection. The device is built
with a P-256 public key and installs only images signed with its private half (the signed-image
format of arduino-esp32 3.x, rig/signing.py), and never an older version than it runs.

Every refused image is refused before anything is activated: the sketch checks the signature
before Update.end(). Then the server is put right: a reset finds the device still on 0.1, it
takes the good signed update, and esptool finds that in the slot otadata selects, with otadata
switched once in all: the refused image was never the boot partition, not even for a moment.
Every scenario is that story; only the image served and the device's refusal differ.
"""

from __future__ import annotations

import pytest

from rig import firmware
from rig.build import Artifacts
from rig.server import RequestRecord
from rig.signing import SIGNATURE_SIZE, KeyPair, reseal, sign

from .conftest import BOOT_TIMEOUT, assert_boots_slot_holding, partition_table, read_otadata, recovers_once_fixed


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return KeyPair.load_or_create(tmp_path_factory.mktemp("signing-key"))


@pytest.fixture(scope="session")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return KeyPair.load_or_create(tmp_path_factory.mktemp("another-signing-key"))


def signed_builds(ota, pki, keys: KeyPair, *versions: str) -> list[Artifacts]:
    """The sketch at each version, built with `keys`' public half, checking one listener."""
    listener = ota.listen(pki.dns())
    return [ota.build(version, listener, signing_key=keys.public_pem) for version in versions]


def refused_then_recovers(ota, keys: KeyPair, old: Artifacts, new: Artifacts, served: bytes,
                          refusal: tuple[str, dict], rate: float | None = None) -> RequestRecord:
    """A device on `old` is offered `new` as `served` (at `rate` bytes per second): it refuses
    with `refusal`. Then the good signed `new` is offered, a reset finds the device still on
    `old`, it updates, and esptool finds `new` in the slot otadata selects, with otadata switched
    once only. Returns the server's record of the refused request."""
    ota.offer(new, image=served, rate=rate)
    monitor = ota.start(old)
    monitor.expect_sequence([("firmware_version", {"version": old.version}), "signature_required", refusal],
                            timeout=BOOT_TIMEOUT)
    (refused,) = ota.server_log.requests()
    good = sign(new.app.read_bytes(), keys)
    recovers_once_fixed(ota, monitor, lambda: ota.offer(new, image=good), new, old_version=old.version)
    assert boot_partition_switches(ota, new) == 1  # the good update's: the refused image never was
    return refused


def boot_partition_switches(ota, artifacts: Artifacts) -> int:
    """How often the boot partition was switched since esptool wrote boot_app0, from otadata
    read back with esptool: boot_app0 leaves sequence number 1 (ota_0), and every switch,
    however brief, writes the next number. So a refused image that was activated even for a
    moment, and then undone, would leave its mark."""
    entries = firmware.ota_entries(read_otadata(ota, artifacts))
    return max(entry.seq for entry in entries if entry.is_valid) - 1


def reseal_with_one_byte_changed(signed: bytes) -> bytes:
    """One byte of the code changed, the image checksum and SHA-256 made right again, the
    original trailer kept: ESP-IDF's image check passes, only the signature can tell."""
    image = bytearray(signed[:-SIGNATURE_SIZE])
    image[len(image) - 32 - 16 - 100] ^= 0x01  # inside the last (code) segment's data
    tampered = reseal(bytes(image))
    firmware.parse_image(tampered)
    return tampered + signed[-SIGNATURE_SIZE:]


@pytest.mark.each_profile
def test_a_validly_signed_image_is_installed_without_its_trailer(ota, pki, keys) -> None:
    """The server sends image + 512-byte trailer; the device checks the signature, installs the
    image and writes none of the trailer into the slot. It asks with exactly the headers stock
    HTTPUpdate sends, so the same server serves either kind of device. Run on both profiles: the
    verdict is the same, but the body arrives differently (2.0.x's readBytes() waits for bytes,
    3.x's returns what is buffered, and the sketch reads on)."""
    old, new = signed_builds(ota, pki, keys, "0.1", "0.2")
    signed = sign(new.app.read_bytes(), keys)
    ota.offer(new, image=signed)

    monitor = ota.start(old)
    monitor.expect_sequence([("firmware_version", {"version": "0.1"}), "signature_required", "signature_valid",
                             "update_ok", ("reset", {"reason": "SW_CPU_RESET"}),
                             ("firmware_version", {"version": "0.2"}), "no_updates"], timeout=2 * BOOT_TIMEOUT)

    download, again = ota.server_log.requests()
    assert [name for name, _ in download.headers] == [
        "Host", "User-Agent", "Connection", "Cache-Control", "x-ESP32-STA-MAC", "x-ESP32-AP-MAC",
        "x-ESP32-free-space", "x-ESP32-sketch-size", "x-ESP32-sketch-md5", "x-ESP32-sketch-sha256",
        "x-ESP32-chip-size", "x-ESP32-sdk-version", "x-ESP32-mode", "x-ESP32-version"]
    assert download.version == "HTTP/1.0" and download.header("User-Agent") == "ESP32-http-Update"
    assert download.complete and download.bytes_sent == len(signed)
    assert again.header("x-ESP32-version") == "0.2" and again.status == 304
    assert_boots_slot_holding(ota, new)
    image = new.app.read_bytes()
    assert ota.read_flash(partition_table(new).ota_slots[1].offset + len(image), SIGNATURE_SIZE) == b"\xff" * SIGNATURE_SIZE


def test_an_image_changed_after_signing_is_refused(ota, pki, keys) -> None:
    old, new = signed_builds(ota, pki, keys, "0.1", "0.2")
    tampered = reseal_with_one_byte_changed(sign(new.app.read_bytes(), keys))
    refused = refused_then_recovers(ota, keys, old, new, tampered, ("signature_invalid", {}))
    assert refused.status == 200 and refused.complete  # the whole body came: the signature is last


def test_an_image_signed_with_another_key_is_refused(ota, pki, keys, other_keys) -> None:
    old, new = signed_builds(ota, pki, keys, "0.1", "0.2")
    refused = refused_then_recovers(ota, keys, old, new, sign(new.app.read_bytes(), other_keys),
                                    ("signature_invalid", {}))
    assert refused.status == 200 and refused.complete


def test_an_unsigned_image_is_refused(ota, pki, keys) -> None:
    """The image alone, as a stock server holds it: the device takes its last 512 bytes for the
    trailer, and they are no DER signature padded with zeros."""
    old, new = signed_builds(ota, pki, keys, "0.1", "0.2")
    refused = refused_then_recovers(ota, keys, old, new, new.app.read_bytes(), ("signature_missing", {}))
    assert refused.status == 200 and refused.complete


def test_an_older_validly_signed_image_is_refused_after_its_first_chunk(ota, pki, keys) -> None:
    """A compromised server offers an old, validly signed image (a known-vulnerable version,
    say). The rig's server never offers a version that is not newer, so it is made to call the
    image 0.3 while the image's app descriptor says 0.1: a device on 0.2 reads that version in
    the first 1024 bytes and hangs up."""
    older, old, new = signed_builds(ota, pki, keys, "0.1", "0.2", "0.3")
    served = sign(older.app.read_bytes(), keys)
    refused = refused_then_recovers(ota, keys, old, new, served,
                                    ("downgrade_refused", {"version": "0.1", "current": "0.2"}), rate=200_000)
    # At a link's pace (on loopback the kernel would take the whole 90 KB at once), the server
    # finds the connection closed a few kilobytes in.
    assert refused.status == 200 and not refused.complete and refused.bytes_sent < len(served) // 4
