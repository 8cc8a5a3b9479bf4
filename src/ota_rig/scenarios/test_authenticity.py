"""Firmware authenticity: protect the firmware, not only the connection. The device is built
with a P-256 public key and installs only releases signed with its private half: a manifest
(version, image size, image SHA-256) signed with the key, then the image (ota_rig/device/signing.py). It
never installs an older version than it runs, even a validly signed one: the version it
compares is the signed manifest's, which the sketch controls, not the app descriptor's, which a
real arduino-cli build fills with the lib-builder's version.

Every refused release is refused before anything is activated. Then the server is put right: a
reset finds the device still on its version, it takes the good signed update, and esptool finds
that in the slot otadata selects, with otadata switched once in all: the refused image was
never the boot partition, not even for a moment. Every scenario is that story, on both cores;
only the release served and the device's refusal differ.
"""

from __future__ import annotations

import pytest

from ota_rig.build.artifacts import Artifacts
from ota_rig.device import firmware
from ota_rig.device.signing import MANIFEST_SIZE, VERSION_AT, VERSION_SIZE, KeyPair, reseal, sign
from ota_rig.server.records import RequestRecord

from .evidence import (
    BOOT_TIMEOUT,
    STOCK_HEADERS,
    assert_boots_slot_holding,
    partition_table,
    read_otadata,
    recovers_once_fixed,
)

pytestmark = pytest.mark.each_profile
LINK_RATE = 200_000  # bytes per second: on loopback the kernel would take a whole body at once


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


def release(artifacts: Artifacts, keys: KeyPair) -> bytes:
    """The build signed as what it was built as: its manifest, then its app image."""
    return sign(artifacts.app.read_bytes(), artifacts.version, keys)


def refused_then_recovers(ota, keys: KeyPair, old: Artifacts, new: Artifacts, served: bytes,
                          refusal: tuple[str, dict]) -> RequestRecord:
    """A device on `old` is offered `new` as `served`, at a link's pace: it refuses with
    `refusal`. Then the good release of `new` is offered, a reset finds the device still on
    `old`, it updates, and esptool finds `new` in the slot otadata selects, with otadata switched
    once only. Returns the server's record of the refused request."""
    ota.offer(new, image=served, rate=LINK_RATE)
    monitor = ota.start(old)
    monitor.expect_sequence([("firmware_version", {"version": old.version}), "signature_required", refusal],
                            timeout=BOOT_TIMEOUT)
    (refused,) = ota.server_log.requests()
    recovers_once_fixed(ota, monitor, lambda: ota.offer(new, image=release(new, keys)), new,
                        old_version=old.version)
    assert boot_partition_switches(ota, new) == 1  # the good update's: the refused image never was
    return refused


def refused_at_the_manifest(refused: RequestRecord, served: bytes) -> None:
    """The server's record of a release refused from its manifest: the answer was 200, and the
    device hung up long before the image was through."""
    assert refused.status == 200 and not refused.complete and refused.bytes_sent < len(served) // 4


def boot_partition_switches(ota, artifacts: Artifacts) -> int:
    """How often the boot partition was switched since esptool wrote boot_app0, from otadata
    read back with esptool: boot_app0 leaves sequence number 1 (ota_0), and every switch,
    however brief, writes the next number. So a refused image that was activated even for a
    moment, and then undone, would leave its mark."""
    entries = firmware.ota_entries(read_otadata(ota, artifacts))
    return max(entry.seq for entry in entries if entry.is_valid) - 1


def test_a_validly_signed_release_is_installed_without_its_manifest(ota, pki, keys) -> None:
    """The server sends manifest + image; the device checks the manifest, installs the image
    and writes none of the manifest into the slot. It asks with exactly the headers stock
    HTTPUpdate sends on its core, so the same server serves either kind of device. The body
    arrives differently on the two cores (2.0.x's readBytes() waits for bytes, 3.x's returns
    what is buffered, and the sketch reads on)."""
    old, new = signed_builds(ota, pki, keys, "0.1", "0.2")
    signed = release(new, keys)
    ota.offer(new, image=signed)

    monitor = ota.start(old)
    monitor.expect_sequence([("firmware_version", {"version": "0.1"}), "signature_required", "signature_valid",
                             "update_ok", ("reset", {"reason": "SW_CPU_RESET"}),
                             ("firmware_version", {"version": "0.2"}), "no_updates"], timeout=2 * BOOT_TIMEOUT)

    download, again = ota.server_log.requests()
    assert [name for name, _ in download.headers] == STOCK_HEADERS[ota.profile]
    assert download.version == "HTTP/1.0" and download.header("User-Agent") == "ESP32-http-Update"
    assert download.complete and download.bytes_sent == len(signed)
    assert again.header("x-ESP32-version") == "0.2" and again.status == 304
    assert_boots_slot_holding(ota, new)
    image = new.app.read_bytes()
    slot = partition_table(new).ota_slots[1].offset
    assert ota.read_flash(slot + len(image), MANIFEST_SIZE) == b"\xff" * MANIFEST_SIZE


def test_a_validly_signed_older_release_is_refused_before_anything_is_written(ota, pki, keys) -> None:
    """A compromised server offers a real earlier build, signed with the right key (a
    known-vulnerable version, say). The rig's server never offers a version that is not newer,
    so it is made to call the release 0.3 while its signed manifest says 0.1: a device on 0.2
    reads that in the manifest and hangs up."""
    older, old, new = signed_builds(ota, pki, keys, "0.1", "0.2", "0.3")
    served = release(older, keys)
    refused = refused_then_recovers(ota, keys, old, new, served,
                                    ("downgrade_refused", {"version": "0.1", "current": "0.2"}))
    refused_at_the_manifest(refused, served)


def test_a_manifest_whose_version_was_edited_after_signing_is_refused(ota, pki, keys) -> None:
    """The older release again, its manifest's version rewritten to 0.9 to get past the
    downgrade check: the signature no longer verifies."""
    older, old, new = signed_builds(ota, pki, keys, "0.1", "0.2", "0.3")
    signed = release(older, keys)
    served = signed[:VERSION_AT] + b"0.9".ljust(VERSION_SIZE, b"\0") + signed[VERSION_AT + VERSION_SIZE:]
    refused = refused_then_recovers(ota, keys, old, new, served, ("signature_invalid", {}))
    refused_at_the_manifest(refused, served)


def test_an_image_changed_after_signing_is_refused(ota, pki, keys) -> None:
    """One byte of the code changed, the image checksum and SHA-256 made right again (ESP-IDF's
    image check passes), the manifest kept: only the signed hash can tell, once the whole image
    is in."""
    old, new = signed_builds(ota, pki, keys, "0.1", "0.2")
    signed = bytearray(release(new, keys))
    signed[len(signed) - 32 - 16 - 100] ^= 0x01  # inside the last (code) segment's data
    tampered = bytes(signed[:MANIFEST_SIZE]) + reseal(bytes(signed[MANIFEST_SIZE:]))
    firmware.parse_image(tampered[MANIFEST_SIZE:])
    refused = refused_then_recovers(ota, keys, old, new, tampered, ("image_mismatch", {}))
    assert refused.status == 200 and refused.complete  # the whole body came: the hash is checked last


def test_a_release_signed_with_another_key_is_refused(ota, pki, keys, other_keys) -> None:
    old, new = signed_builds(ota, pki, keys, "0.1", "0.2")
    served = release(new, other_keys)
    refused = refused_then_recovers(ota, keys, old, new, served, ("signature_invalid", {}))
    refused_at_the_manifest(refused, served)


def test_an_unsigned_image_is_refused(ota, pki, keys) -> None:
    """The image alone, as a stock server holds it: it opens with 0xE9, not a manifest."""
    old, new = signed_builds(ota, pki, keys, "0.1", "0.2")
    served = new.app.read_bytes()
    refused = refused_then_recovers(ota, keys, old, new, served, ("signature_missing", {}))
    refused_at_the_manifest(refused, served)
