"""A download that stops halfway: the server drops the connection, or keeps it open and sends
nothing more. HTTPUpdate's writeStream() gives up after 300 empty reads, each followed by a
100 ms delay (Update error 6, "Stream Read Timeout"), so how long a device waits depends on
how long one empty readBytes() takes: 1 s on arduino-esp32 2.0.14 (Stream's timedRead() waits
out Stream's default 1000 ms timeout, dropped connection or not), nothing on 3.x, whose
NetworkClient::readBytes() stops when the secure client's read() has nothing
(docs/scenarios.md has the sources).

On the twin the wait runs as a time lapse, so 331 s of device time pass in under a second; the
device's own millis() stamps on its log line show the full span. A real board takes the
full time.
"""

from __future__ import annotations

import time

import pytest

from ota_rig.server.faults import Fault

from .evidence import BOOT_TIMEOUT, recovers_once_fixed

# Device seconds from the last body byte to the failure: the last partial readBytes(), then
# 300 empty ones with 299 delays of 100 ms between them.
GIVE_UP = {"arduino-esp32-2.0": 1 + 300 * 1.0 + 299 * 0.1, "arduino-esp32-3": 299 * 0.1}
LAPSE = 1000  # how much faster the twin's clock runs while the device waits


@pytest.mark.each_profile
@pytest.mark.parametrize("stop", ["drop_after", "stall_after"], ids=["dropped", "stalled"])
def test_a_download_that_stops_halfway_is_given_up_after_the_cores_timeout(ota, pki, profile, stop) -> None:
    listener = ota.listen(pki.dns())
    old, new = ota.build("0.1", listener), ota.build("0.2", listener)
    half = new.app.stat().st_size // 2
    ota.offer(new, fault=Fault(**{stop: half}))

    monitor = ota.start(old)
    ota.wait_for_download(half, timeout=BOOT_TIMEOUT)
    stopped = time.monotonic()  # the server stopped sending at most one poll (10 ms) ago
    give_up = GIVE_UP[profile]
    rate = ota.time_lapse(LAPSE, give_up + 1)
    write_failed, _ = monitor.expect_sequence([
        ("core_log", {"level": "E", "function": "runUpdate",
                      "message": "Update.writeStream failed! (Stream Read Timeout)"}),
        ("update_failed", {"code": "6", "text": "Update error: Stream Read Timeout"}),
    ], timeout=give_up / rate + BOOT_TIMEOUT)
    # The device's own clock: the failure comes the computed time after the stop, not sooner
    # and not much later (a core waiting 8 s a byte, as the twin once modelled, would take 40
    # minutes). When the stop came on that clock is the host's time from the app's first line
    # to the stop (the clock runs as the host's until the lapse): a second after the app's start
    # here, several on a loaded runner or a real board, and no part of the core's wait.
    failed_at = int(write_failed.fields["ms"]) / 1000
    [started] = [e for e in monitor.events if e.name == "firmware_version" and e.fields["version"] == "0.1"][:1]
    assert give_up <= failed_at and failed_at - (stopped - started.t) <= give_up + 2

    (request,) = ota.server_log.requests()
    assert request.bytes_sent == half and not request.complete
    recovers_once_fixed(ota, monitor, lambda: ota.offer(new), new)
