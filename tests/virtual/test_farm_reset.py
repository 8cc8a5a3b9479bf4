"""Resets on a farm (issue 17, espressif/esptool#383): esptool's DTR/RTS reset through a relay
that delays each line change leaves DTR and RTS both asserted for two latencies; the board's
auto-reset circuit lets EN rise with IO0 high and the chip boots its app. Run on the board's
host, as esptool's esp_rfc2217_server does, the same reset enters the loader.

The relay's latency stays below half of esptool's SYNC timeout (0.1 s, `sync_timeout` in its
configuration file; esptool/loader.py): at 0.05 s one way the ROM's answer to each SYNC arrives
just after esptool gave up on it, and esptool reports "Download mode successfully detected, but
getting no sync reply" although the reset worked. A farm link with a round trip near 0.1 s
needs a larger `sync_timeout`. Even with no latency at all, the plain relay fails: pyserial's
client waits >= 50 ms for each line change's answer.

Evidence: esptool's own output (it reads the ROM's boot message the twin prints) and what the
chip says on its UART afterwards; real processes throughout (the twin, the relay, esptool).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import TWIN_MAC, esptool

pytestmark = [pytest.mark.virtual, pytest.mark.slow]

RELAY = Path(__file__).with_name("rfc2217_relay.py")
LATENCY = 0.02  # one way; see the module docstring for why not more


@contextlib.contextmanager
def process(argv: list[str], pattern: str):
    """A real process; yields the word after `pattern` on its first stdout line."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert pattern in line, line
        yield line.split(pattern, 1)[1].split()[0]
    finally:
        proc.kill()
        proc.wait(timeout=5)


@pytest.fixture(params=["esp", "plain"])
def farm(request, tmp_path: Path):
    """(mode, the board host's URL, the URL through the relay): the twin serving its port as
    esp_rfc2217_server does ("esp", its default) or as a plain line relay, ser2net-like ("plain")."""
    argv = [sys.executable, "-m", "ota_rig.virtual", "--flash", str(tmp_path / "flash.bin"), "--rfc2217", "0",
            "--mac", TWIN_MAC, *(["--plain-rfc2217"] if request.param == "plain" else [])]
    with process(argv, "listening on ") as url, \
            process([sys.executable, str(RELAY), url.removeprefix("rfc2217://"), "--latency", str(LATENCY)],
                    "relay on ") as port:
        yield request.param, url, f"rfc2217://127.0.0.1:{port}"


def test_esptool_reset_over_the_network(farm) -> None:
    mode, direct, relayed = farm
    for url in (direct, relayed):
        done = esptool(url, "--connect-attempts", "2", "chip-id", after="no-reset")
        if mode == "esp":  # the reset ran on the board's host: the loader answers
            assert done.returncode == 0, done.stdout
            assert "Connected to ESP32 on rfc2217://127.0.0.1:" in done.stdout
        else:  # DTR and RTS both asserted >= 50 ms: EN rose with IO0 high, the ROM booted flash
            assert done.returncode != 0, done.stdout
            assert "Wrong boot mode detected (0x13)! The chip needs to be in download mode." in done.stdout
