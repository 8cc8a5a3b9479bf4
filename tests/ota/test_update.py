"""The update itself: a device on an older version downloads the newer one, reboots into it and
finds nothing newer; a device already on the latest version downloads nothing."""

from __future__ import annotations

from .conftest import BOOT_TIMEOUT, assert_boots_slot_holding


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
