"""Power cuts while an update is under way: at 10 %, 50 % and 99 % of the download, and just
after the image was written and otadata switched. On the twin the process is killed and
started again on its flash (a real board has EN pulled instead); one case pulls EN on the twin
too. Whatever the moment, the device boots a valid firmware, otadata is whole (each sector
erased or holding an entry with its CRC), and the next update completes: esptool reads it back.

Why (docs/scenarios.md): Update holds the image's first 16 bytes back until Update.end(), so a
half-written slot never looks like an image; esp_ota_set_boot_partition() writes the new
otadata entry into the sector that is not active, erase first, so a cut there leaves the old
entry in charge; once the entry is written the new slot boots (NEW, then PENDING_VERIFY until
the app confirms itself as VALID; a cut in that last gap rolls back to the old slot).
"""

from __future__ import annotations

import pytest

from ota_rig.server.faults import Fault

from .evidence import BOOT_TIMEOUT, assert_boots_slot_holding


@pytest.mark.parametrize(("percent", "cut"), [(10, "power"), (50, "power"), (99, "power"), (50, "EN")],
                         ids=["10%-power", "50%-power", "99%-power", "50%-EN"])
def test_a_power_cut_during_the_download_leaves_the_old_firmware_then_the_update_completes(
        ota, pki, percent: int, cut: str) -> None:
    listener = ota.listen(pki.dns())
    old, new = ota.build("0.1", listener), ota.build("0.2", listener)
    at = new.app.stat().st_size * percent // 100
    ota.offer(new, fault=Fault(stall_after=at))  # the download halts there, so the cut lands there

    monitor = ota.start(old)
    ota.wait_for_download(at, timeout=BOOT_TIMEOUT)
    ota.offer(new)  # once the power is back the server is fine
    monitor.cursor = monitor.mark()
    how = ota.power_cut() if cut == "power" else (ota.reset() or "EN")
    monitor.expect_sequence([("reset", {"reason": "POWERON_RESET"}), ("firmware_version", {"version": "0.1"}),
                             "update_ok", ("reset", {"reason": "SW_CPU_RESET"}),
                             ("firmware_version", {"version": "0.2"}), "no_updates"], timeout=2 * BOOT_TIMEOUT)

    cut_short, complete, latest = ota.server_log.requests()
    assert (cut_short.bytes_sent, cut_short.complete) == (at, False), how
    assert complete.complete and complete.header("x-ESP32-version") == "0.1"
    assert latest.status == 304 and latest.header("x-ESP32-version") == "0.2"
    assert_boots_slot_holding(ota, new)


def test_a_power_cut_right_after_the_image_is_written_ends_on_the_new_firmware(ota, pki) -> None:
    """The cut lands as the device announces HTTP_UPDATE_OK, with otadata already switched,
    and the device restarting by itself within milliseconds. Either it had not yet started
    0.2 (or 0.2 had confirmed itself): 0.2 boots. Or the cut fell between the bootloader's
    PENDING_VERIFY and the app's confirmation: the bootloader marks 0.2 ABORTED, 0.1 boots
    and downloads it again. Both are what ESP-IDF does; either way 0.2 ends up running."""
    listener = ota.listen(pki.dns())
    old, new = ota.build("0.1", listener), ota.build("0.2", listener)
    ota.offer(new)

    monitor = ota.start(old)
    monitor.expect("update_ok", timeout=BOOT_TIMEOUT)  # Update.end() has switched otadata
    monitor.cursor = monitor.mark()
    ota.power_cut()
    monitor.expect("reset", timeout=BOOT_TIMEOUT, reason="POWERON_RESET")
    first = monitor.expect("firmware_version", timeout=BOOT_TIMEOUT).fields["version"]
    assert first in ("0.1", "0.2")
    monitor.expect_sequence([("firmware_version", {"version": "0.2"}), "no_updates"] if first == "0.1"
                            else ["no_updates"], timeout=2 * BOOT_TIMEOUT)
    assert len(ota.server_log.downloads()) == (2 if first == "0.1" else 1)
    assert_boots_slot_holding(ota, new)
