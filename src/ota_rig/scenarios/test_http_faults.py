"""What the update server answers, going wrong one way at a time: the device refuses each with
the core's code and text (shared/reference/esp32-ota-device.md, sections 3 and 4), still runs
its old firmware after a reset, and takes the next good update. Every scenario is the same
story; only the fault and the device's verdict differ."""

from __future__ import annotations

import hashlib
from typing import Callable

import pytest

from ota_rig.build.artifacts import Artifacts
from ota_rig.server.faults import Fault
from ota_rig.server.records import RequestRecord

from .evidence import BOOT_TIMEOUT, partition_table, recovers_once_fixed

Tamper = Callable[[Artifacts], dict]  # the good build -> keyword arguments for ota.offer


def refused_then_recovers(ota, pki, tamper: Tamper, code: int, text: str, *before: tuple) -> RequestRecord:
    """Offer 0.2, tampered, to a device on 0.1: it fails with `code` and `text` (after the
    events `before`). Then a reset: still 0.1; the good 0.2 offered: it updates, and esptool
    finds it in the slot otadata selects. Returns the server's record of the refused request."""
    listener = ota.listen(pki.dns())
    old, new = ota.build("0.1", listener), ota.build("0.2", listener)
    ota.offer(new, **tamper(new))

    monitor = ota.start(old)
    monitor.expect_sequence([("firmware_version", {"version": "0.1"}), *before,
                             ("update_failed", {"code": str(code), "text": text})], timeout=BOOT_TIMEOUT)
    (refused,) = ota.server_log.requests()
    recovers_once_fixed(ota, monitor, lambda: ota.offer(new), new)
    return refused


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.mark.parametrize(("status", "code", "text"), [
    (404, -102, "File Not Found (404)"),
    (403, -103, "Forbidden (403)"),
    (500, -104, "Wrong HTTP Code"),
])
def test_an_error_status_is_refused_with_the_cores_code(ota, pki, status: int, code: int, text: str) -> None:
    refused = refused_then_recovers(ota, pki, lambda new: {"fault": Fault(status=status)}, code, text)
    assert refused.status == status and refused.bytes_sent == 0


def test_a_redirect_is_not_followed_by_the_stock_core(ota, pki) -> None:
    """HTTPUpdate leaves HTTPClient's redirect following off: a 302 is a wrong code, and the
    device never asks for the Location."""
    location = ("Location", "/firmware/ota_https.ino.bin")
    refused = refused_then_recovers(ota, pki, lambda new: {"fault": Fault(status=302, headers=(location,))},
                                    -104, "Wrong HTTP Code",
                                    ("core_log", {"level": "E", "message": "HTTP Code is (302)"}))
    assert refused.status == 302 and refused.path == "/update"


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_a_body_without_content_length_is_refused_unread(ota, pki, framing: str) -> None:
    """A chunked body, or one that ends when the server closes (HTTP/1.0 style): HTTPUpdate
    needs the size first, to check it fits the slot."""
    refused = refused_then_recovers(
        ota,
        pki,
        lambda new: {"fault": Fault(framing=framing)},
        -101,
        "Server Did Not Report Size",
        ("core_log", {"level": "E", "message": "Content-Length was 0 or wasn't set by Server?!"}),
    )
    assert refused.status == 200 and refused.content_length is None


@pytest.mark.parametrize(
    ("tamper", "code", "text"),
    [
        (lambda new: {"fault": Fault(md5=md5(b"another image"))}, 7, "Update error: MD5 Check Failed"),
        (lambda new: {"fault": Fault(md5=md5(new.app.read_bytes()).upper())}, 7, "Update error: MD5 Check Failed"),
        (lambda new: {"fault": Fault(md5="0123456789abcdef")}, -105, "Wrong MD5"),
    ],
    ids=["another-image", "upper-case", "16-digits"],
)
def test_a_wrong_md5_header_is_refused(ota, pki, tamper: Tamper, code: int, text: str) -> None:
    """The core compares x-MD5 as a string with its own lower-case MD5: another image's MD5,
    and the right one in upper case, fail once the whole image is in; a length other than 32
    fails before the body is read."""
    refused = refused_then_recovers(ota, pki, tamper, code, text)
    assert refused.status == 200 and (refused.content_length or 0) > 0


def test_a_body_not_starting_with_0xe9_is_refused_before_the_download(ota, pki) -> None:
    page = b"<!DOCTYPE html><title>Login</title>" + bytes(8192)  # a captive portal, say
    refused = refused_then_recovers(
        ota,
        pki,
        lambda new: {"image": page},
        -106,
        "Verify Bin Header Failed",
        ("core_log", {"level": "E", "message": "Magic header does not start with 0xE9"}),
    )
    assert refused.status == 200 and refused.content_length == len(page)


def test_an_image_larger_than_the_next_ota_slot_is_refused_before_the_download(ota, pki) -> None:
    def too_large(new: Artifacts) -> dict:
        slot = partition_table(new).ota_slots[1].size
        return {"image": new.app.read_bytes().ljust(slot + 1, b"\xff")}

    refused = refused_then_recovers(ota, pki, too_large, -100, "Not Enough space")
    assert refused.content_length == 0x140000 + 1


def test_an_image_with_a_corrupt_hash_is_refused_at_activation_with_esp_idfs_line(ota, pki) -> None:
    """Header, segments and checksum are fine; the appended SHA-256 is not. Only ESP-IDF's
    image check in Update.end() (esp_ota_set_boot_partition) catches it; x-MD5 is the MD5 of
    what was sent, so the transfer itself is fine."""

    def corrupt_hash(new: Artifacts) -> dict:
        image = bytearray(new.app.read_bytes())
        image[-1] ^= 0xFF
        return {"image": bytes(image)}

    refused = refused_then_recovers(
        ota,
        pki,
        corrupt_hash,
        9,
        "Update error: Could Not Activate The Firmware",
        ("idf_log", {"level": "E", "tag": "esp_image", "message": "Image hash failed - image is corrupt"}),
    )
    assert refused.complete


@pytest.mark.each_profile
def test_no_content_is_an_error_on_2x_and_no_update_on_3x(ota, pki, profile) -> None:
    """A server that says "nothing for you" with 204. 2.0.14's handleUpdate() has no case for
    it: -104 "Wrong HTTP Code" after `HTTP Code is (204)`. 3.x takes it as 304 (HTTPUpdate.cpp
    at master a5f17797, arduino-esp32 #11408 of May 2025, a year before the 3.3.10 the profile
    names; that 3.3.10 carries it is unverified)."""
    listener = ota.listen(pki.dns())
    old, new = ota.build("0.1", listener), ota.build("0.2", listener)
    ota.offer(new, fault=Fault(status=204))
    monitor = ota.start(old)
    if profile == "arduino-esp32-2.0":
        monitor.expect_sequence(
            [
                ("core_log", {"level": "E", "message": "HTTP Code is (204)"}),
                ("update_failed", {"code": "-104", "text": "Wrong HTTP Code"}),
            ],
            timeout=BOOT_TIMEOUT,
        )
    else:
        monitor.expect_sequence([("firmware_version", {"version": "0.1"}), "no_updates", "retry"], timeout=BOOT_TIMEOUT)
        monitor.not_matching("update_failed")
    (answer,) = ota.server_log.requests()
    assert answer.status == 204 and answer.bytes_sent == 0
