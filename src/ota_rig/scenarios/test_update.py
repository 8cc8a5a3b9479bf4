"""The update itself: a device on an older version downloads the newer one, reboots into it and
finds nothing newer; a device already on the latest version downloads nothing."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from .evidence import BOOT_TIMEOUT, REAL_BUILDS, STOCK_HEADERS, assert_boots_slot_holding


def test_older_device_updates_reboots_and_runs_the_new_version(ota, pki) -> None:
    listener = ota.listen(pki.dns())
    old, new = ota.build("0.1", listener), ota.build("0.2", listener)
    ota.offer(new)

    monitor = ota.start(old)
    monitor.expect_sequence([
        ("firmware_version", {"version": "0.1"}),
        "update_ok",
        ("reset", {"reason": "SW_CPU_RESET"}),
        ("firmware_version", {"version": "0.2"}),
        "no_updates",
    ], timeout=2 * BOOT_TIMEOUT)

    first, second = ota.server_log.requests()
    assert first.header("x-ESP32-version") == "0.1" and first.status == 200
    assert first.complete and first.bytes_sent == new.app.stat().st_size
    assert second.header("x-ESP32-version") == "0.2" and second.status == 304
    assert len(ota.server_log.downloads()) == 1
    assert_boots_slot_holding(ota, new)


def test_device_on_the_latest_version_downloads_nothing(ota, pki) -> None:
    listener = ota.listen(pki.dns())
    current = ota.build("0.2", listener)
    ota.offer(current)

    monitor = ota.start(current)
    monitor.expect_sequence([("firmware_version", {"version": "0.2"}), "no_updates"], timeout=BOOT_TIMEOUT)
    monitor.not_matching("update_ok")

    (request,) = ota.server_log.requests()
    assert request.status == 304 and request.bytes_sent == 0
    assert ota.server_log.downloads() == []


@pytest.mark.each_profile
def test_the_request_carries_exactly_the_cores_headers(ota, pki) -> None:
    """The update server sees each core's HTTPUpdate request, header for header: the MACs as
    esptool read them from the chip, the running image's size, MD5 and SHA-256 as the build's
    file has them, the ESP-IDF version the core's libraries carry (real_builds.json). 2.0.x derives the soft-AP MAC
    from the base MAC; 3.x sends the base MAC itself and zeros for the AP, which is not up."""
    listener = ota.listen(pki.dns())
    current = ota.build("0.2", listener)
    ota.offer(current)
    monitor = ota.start(current)
    monitor.expect_sequence([("firmware_version", {"version": "0.2"}), "no_updates"], timeout=BOOT_TIMEOUT)

    (request,) = ota.server_log.requests()
    assert [name for name, _ in request.headers] == STOCK_HEADERS[ota.profile]
    mac = ota.chip_seen.mac.upper()  # esptool's "MAC:" line
    image = current.app.read_bytes()
    ap = "00:00:00:00:00:00" if ota.profile == "arduino-esp32-3" else mac[:-2] + f"{int(mac[-2:], 16) + 1:02X}"
    expected = {
        "x-ESP32-STA-MAC": mac,
        "x-ESP32-AP-MAC": ap,
        "x-ESP32-free-space": "1310720",
        "x-ESP32-sketch-size": str(len(image)),
        "x-ESP32-sketch-md5": hashlib.md5(image).hexdigest(),
        "x-ESP32-sketch-sha256": image[-32:].hex().upper(),
        "x-ESP32-chip-size": "4194304",
        "x-ESP32-sdk-version": REAL_BUILDS[ota.profile]["sdk_version"]["value"],
        "x-ESP32-mode": "sketch",
        "x-ESP32-version": "0.2",
    }
    if ota.profile == "arduino-esp32-3":
        expected["x-ESP32-BASE-MAC"] = mac
    assert {name: request.header(name) for name in expected} == expected


def test_a_static_file_server_makes_an_update_loop(ota, pki) -> None:
    """A static file server (the seed tutorial's Express `download()`, nginx serving a .bin)
    answers 200 with the image to every GET: a device already on it installs it again, at every
    check. The monitor flags the update loop; the record and the report carry the finding."""
    listener = ota.listen(pki.dns())
    new = ota.build("0.2", url=ota.server.url(listener.name, "/firmware/release.bin"))
    old = ota.build("0.1", url=ota.server.url(listener.name, "/firmware/release.bin"))
    ota.server.firmware_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(new.app, ota.server.firmware_dir / "release.bin")

    monitor = ota.start(old)
    monitor.expect_sequence([
        ("firmware_version", {"version": "0.1"}), "update_ok", ("firmware_version", {"version": "0.2"}),
        "update_ok", ("firmware_version", {"version": "0.2"}),
    ], timeout=3 * BOOT_TIMEOUT)

    first, second = ota.server_log.downloads()[:2]
    assert (first.header("x-ESP32-version"), second.header("x-ESP32-version")) == ("0.1", "0.2")
    assert first.bytes_sent == second.bytes_sent == new.app.stat().st_size
    [loop, *_] = monitor.update_loops
    assert loop.version == "0.2" and loop.event.raw == "Firmware version 0.2"
