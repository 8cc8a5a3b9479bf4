"""Checks of the bench itself, before a release run trusts its verdicts: the board on the given
port answers esptool as the chip the build is for, and a reset runs what was flashed, with the
serial port followed through the reset (a board on native USB leaves the bus and comes back).
They need a real board (`--ota-board /dev/ttyUSB0`, `mac:...`, `rfc2217://...`) and skip without.
"""

from __future__ import annotations

import re

import pytest

from ota_rig.bench.flash import Esptool
from ota_rig.build import preflight

pytestmark = pytest.mark.hardware

BOOT_TIMEOUT = 10  # seconds as on the twin; the monitor scales them for a real board


def test_the_board_answers_esptool_as_the_chip_the_build_is_for(ota, pki, board) -> None:
    artifacts = ota.build("0.1", ota.listen(pki.dns()))
    info = Esptool(board.port, chip="auto", before=board.esptool_reset[0], after="no-reset").chip_info()
    assert re.fullmatch(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}", info.mac), f"esptool named no MAC: {info}"
    preflight.check(artifacts, info.chip)  # raises with one sentence on a mismatch


def test_a_reset_runs_the_flashed_firmware_again(ota, pki) -> None:
    listener = ota.listen(pki.dns())
    current = ota.build("0.3", listener)
    ota.offer(current)
    monitor = ota.start(current)
    monitor.expect_sequence([("firmware_version", {"version": "0.3"}), "no_updates"], timeout=BOOT_TIMEOUT)
    ota.reset()
    monitor.expect_sequence([("reset", {"reason": re.compile(r"POWERON_RESET|RTCWDT_RTC_RESET")}),
                             ("firmware_version", {"version": "0.3"}), "no_updates"], timeout=BOOT_TIMEOUT)
    assert [request.status for request in ota.server_log.requests()] == [304, 304]
