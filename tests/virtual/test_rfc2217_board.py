"""The OTA scenarios also run on a board reset through DTR/RTS, as through a USB bridge or
ser2net: the twin on RFC2217 stands in for it (`--ota-board virtual-rfc2217`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.virtual, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_a_scenario_passes_on_a_board_reset_through_dtr_and_rts(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "src" / "ota_rig" / "scenarios" / "test_update.py"), "-k", "latest",
         "--ota-board", "virtual-rfc2217", "--ota-out", str(tmp_path), "-p", "no:cacheprovider", "-q", "-rA"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert "1 passed" in done.stdout, done.stdout
    (folder,) = [path for path in tmp_path.iterdir() if path.is_dir()]  # beside it: the session's claim
    esptool_log = (folder / "esptool.log").read_text()
    # esptool reset the chip into its loader through DTR/RTS over RFC2217 itself, wrote the
    # four files, and left it there: the firmware first ran when the rig reset it.
    assert "Connected to ESP32 on rfc2217://127.0.0.1:" in esptool_log
    assert esptool_log.count("Hash of data verified.") == 4 and "Hard resetting" not in esptool_log
    serial_log = (folder / "serial.log").read_text()
    assert serial_log.count("rst:0x1 (POWERON_RESET)") == 1 and "HTTP_UPDATE_NO_UPDATES" in serial_log
