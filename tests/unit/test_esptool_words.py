"""What the rig reads in esptool's output and environment (ota_rig.bench.flash): the line rate
it asks for, a line that did not take it, the regions --skip-flashed left alone. The outputs
are esptool 5.6.0's own words, as tests/virtual/test_esptool_line.py sees it print them."""

from __future__ import annotations

import pytest

from ota_rig.bench.flash import line_baud, rate_failed, skipped_writes
from ota_rig.errors import RigError


def test_the_line_rate_is_the_option_then_esptools_variable_then_921600(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ESPTOOL_BAUD", raising=False)
    assert line_baud() == 921600
    monkeypatch.setenv("ESPTOOL_BAUD", "460800")
    assert line_baud() == 460800
    assert line_baud(115200) == 115200  # an explicit --ota-baud wins, as esptool's --baud does
    monkeypatch.setenv("ESPTOOL_BAUD", "-5")
    with pytest.raises(RigError, match="is not a baud rate"):
        line_baud()


CHANGED = "Stub flasher running.\nChanging baud rate to 921600...\nChanged.\n\n"


@pytest.mark.parametrize(
    ("output", "failed"),
    [
        ("A fatal error occurred: Failed to set baud rate 921600. The driver may not support this rate.", True),
        ("ValueError: remote rejected value for option 'baudrate'", True),
        (CHANGED + "A fatal error occurred: Timed out waiting for packet header", True),
        (CHANGED + "A fatal error occurred: No more data to read from the serial port.", True),
        # Before the switch the rate is not in question: the chip did not answer at all.
        ("Connecting......\nA fatal error occurred: Failed to connect to ESP32: No serial data received.", False),
        (CHANGED + "A fatal error occurred: Verification failed.", False),
    ],
    ids=["driver-refused", "rfc2217-refused", "silent-after-change", "stream-ended", "no-sync", "verify"],
)
def test_a_rate_failure_is_told_from_other_failures(output: str, failed: bool) -> None:
    assert rate_failed(output) is failed


def test_the_regions_skip_flashed_left_alone_are_read_from_esptools_lines() -> None:
    output = (
        "'boot.bin' at 0x00001000 already in flash, skipping write.\n"
        "Wrote 1234 bytes (567 compressed) at 0x00010000 in 0.1 seconds (effective 98.7 kbit/s)...\n"
        "Input bytes at 0x0000e000 already in flash, skipping write.\n"
    )
    assert skipped_writes(output) == [0x1000, 0xE000]
